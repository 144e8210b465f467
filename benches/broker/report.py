"""Table and output check for benches/broker/run.sh.

    report.py --records N --reference NAME RESULTS

RESULTS: one line per run, "name|guarantee|seconds_caught_up|seconds_drained|cpu_s rss_kb|hourly.tsv|load".
Each hourly.tsv holds "KEY\\tJSON" lines of a system's hourly output topic (every window of the input
closed). Every system must emit exactly the reference's windows: the same windows, the same samples,
averages within 1e-9. Exit 1 on any mismatch.
"""

import argparse
import json
import sys
from datetime import datetime

TOL = 1e-9


def load(path):
    """(region_code, window_start_ms) -> (avg, samples); a key seen twice with different values is an error."""
    out, conflicts, dups = {}, [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            _, _, value = line.partition("\t")
            v = json.loads(value)
            start = int(datetime.fromisoformat(v["window_start"]).timestamp() * 1000)
            k = (v["region_code"], start)
            val = (float(v["avg_available_spots"]), int(v["samples"]))
            if k in out:
                dups += 1
                if out[k][1] != val[1] or abs(out[k][0] - val[0]) > TOL:
                    conflicts.append((k, out[k], val))
            out[k] = val
    return out, conflicts, dups


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("results")
    a = ap.parse_args()

    rows = []
    with open(a.results, encoding="utf-8") as f:
        for line in f:
            name, g, s_in, s_all, usage, hourly, loadavg = line.rstrip("\n").split("|")
            cpu, rss = usage.split()
            rows.append(dict(name=name, g=g, s_in=float(s_in), s_all=s_all, cpu=float(cpu), rss_kb=int(rss),
                             hourly=hourly, load=loadavg))

    ref = next((r for r in rows if r["name"] == a.reference), None)
    ok = True
    ref_out = None
    if ref is None:
        print(f"no {a.reference} run: hourly outputs not compared", file=sys.stderr)
    else:
        ref_out, conflicts, _ = load(ref["hourly"])
        if not ref_out:
            print(f"NO WINDOW in {a.reference}'s output: nothing to compare", file=sys.stderr)
            ok = False
    for r in rows:
        r["check"] = "n/a"
        if not r["hourly"] or ref_out is None:
            continue
        out, conflicts, dups = load(r["hourly"])
        probs = []
        if conflicts:
            probs.append(f"{len(conflicts)} windows emitted twice with different values, e.g. {conflicts[0]}")
        missing = sorted(set(ref_out) - set(out))
        extra = sorted(set(out) - set(ref_out))
        if missing:
            probs.append(f"{len(missing)} windows missing, e.g. {missing[:3]}")
        if extra:
            probs.append(f"{len(extra)} windows the reference lacks, e.g. {extra[:3]}")
        diff = [(k, ref_out[k], out[k]) for k in sorted(set(ref_out) & set(out))
                if ref_out[k][1] != out[k][1] or abs(ref_out[k][0] - out[k][0]) > TOL]
        if diff:
            probs.append(f"{len(diff)} windows differ (reference, this), e.g. {diff[:3]}")
        n_cmp = len(set(ref_out) & set(out))
        r["windows"] = len(out)
        r["dups"] = dups
        if probs:
            ok = False
            r["check"] = "MISMATCH"
            print(f"!!!!!!!! {r['name']}: hourly output differs from {a.reference}'s:", file=sys.stderr)
            for p in probs:
                print(f"    {p}", file=sys.stderr)
        else:
            r["check"] = f"equal ({n_cmp} windows)"

    perf = next((r for r in rows if r["name"] == "consumer-perf"), None)
    n = a.records
    print("| system | guarantee | records/s (to caught up) | s to caught up | s to drained | CPU-s | CPU-s per 1M "
          "| peak RSS MiB | hourly output vs weir-alos | load avg at start |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['g']} | {n / r['s_in']:,.0f} | {r['s_in']:.2f} | {r['s_all'] or '-'} | "
              f"{r['cpu']:.1f} | {r['cpu'] / n * 1e6:.1f} | {r['rss_kb'] / 1024:.0f} | {r['check']} | {r['load']} |")
    print()
    by = {r["name"]: r for r in rows}
    pairs = [("weir-alos", "ks-alos"), ("weir-eos", "ks-eos"), ("weir-alos", "quix-alos"), ("weir-eos", "quix-eos")]
    for w, p in pairs:
        if w in by and p in by:
            W, P = by[w], by[p]
            print(f"{w} vs {p}: records/s {P['s_in'] / W['s_in']:.2f}x, CPU-s {W['cpu'] / P['cpu']:.2f} of theirs "
                  f"(1/{P['cpu'] / W['cpu']:.1f}), peak RSS {W['rss_kb'] / P['rss_kb']:.2f} of theirs "
                  f"(1/{P['rss_kb'] / W['rss_kb']:.1f})")
    if perf:
        for w in ("weir-alos", "weir-eos"):
            if w in by:
                print(f"{w} CPU-s / consumer-perf CPU-s: {by[w]['cpu'] / perf['cpu']:.2f}x")
    if not ok:
        print("\nHOURLY OUTPUTS DISAGREE (details above on stderr)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
