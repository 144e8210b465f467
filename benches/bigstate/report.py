"""Helpers and report of benches/bigstate/run.sh.

    report.py committed INPUT                  < one `BigState offsets` line: the group's committed offsets of INPUT, summed
    report.py first-above INPUT C T_MS         < `BigState offsets` lines: the first sample at or after T_MS whose
                                                 committed offsets of INPUT sum to more than C (epoch ms), or "-"
    report.py caught-up INPUT T_MS             < `BigState offsets` lines: the first sample at or after T_MS with every
                                                 partition of INPUT committed up to its end offset, or "-"
    report.py stalls T_JOIN T_DONE             < `BigState offsets` lines: per partition, "TP moved|stayed STALL_S
                                                 OWNER_BEFORE OWNER_AFTER": the longest time in [T_JOIN, T_DONE] its
                                                 committed offset did not move while it had lag (> 1: a transaction's
                                                 commit marker is never consumed)
    report.py report WORK TOTAL KEYS LOTS      the tables after broker/report.py's: state size and the table output
                                                 cross-check, the restores, the crashes, the scale-out, and the targets
                                                 of issue 21 reached or missed. Exit 1 when the table outputs differ.
"""

import sys


def parse(line):
    """'T tp=end/committed/owner ...' -> (t, {tp: (end, committed, owner)})"""
    w = line.split()
    if not w:
        return None
    parts = {}
    for x in w[1:]:
        tp, _, rest = x.partition("=")
        end, committed, owner = rest.split("/", 2)
        parts[tp] = (int(end), int(committed), owner)
    return int(w[0]), parts


def of_topic(parts, topic):
    return {tp: v for tp, v in parts.items() if tp.rsplit("-", 1)[0] == topic}


def committed_sum(parts, topic):
    return sum(max(v[1], 0) for v in of_topic(parts, topic).values())


def stalls(t_join, t_done, lines):
    samples = [s for s in (parse(x) for x in lines) if s]
    before = {}
    for t, parts in samples:
        if t < t_join:
            for tp, v in parts.items():
                before[tp] = v[2]
    window = [(t, p) for t, p in samples if t_join <= t <= t_done]
    if not window:
        return []
    out = []
    for tp in sorted(window[0][1]):
        longest, since, prev = 0, window[0][0], None
        for t, parts in window:
            end, c, _ = parts.get(tp, (0, -1, "-"))
            if prev is None or c != prev[1] or prev[0] - max(prev[1], 0) <= 1:
                # moved, or had no lag at the previous sample: a stall (re)starts here
                if prev is not None and c != prev[1]:
                    longest = max(longest, t - since)
                since = t
            prev = (end, c)
        if prev is not None and prev[0] - max(prev[1], 0) > 1:
            longest = max(longest, window[-1][0] - since)
        after = window[-1][1].get(tp, (0, 0, "-"))[2]
        b = before.get(tp, "-")
        moved = "moved" if after != "-" and b != "-" and after != b else "stayed"
        out.append(f"{tp} {moved} {longest / 1000:.2f} {b} {after}")
    return out


def rows(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def verdict(ok):
    return "**reached**" if ok else "**missed**"


def report(work, total, keys, lots):
    ok = True
    results = {}
    with open(f"{work}/results", encoding="utf-8") as f:
        for line in f:
            name, g, s_in, _, usage, _, load = line.rstrip("\n").split("|")
            cpu, rss = usage.split()
            results[name] = dict(g=g, s=float(s_in), cpu=float(cpu), rss=int(rss), load=load)
    extra = {r[0]: dict(bytes=int(r[1]), keys=int(r[2]), records=int(r[3]), digest=r[4]) for r in rows(f"{work}/extra")}
    ref = next((x for x in ("weir-alos", "weir-eos") if x in extra), None)

    print()
    print(f"State and the table's output (APP-lots: the last value per key, JSON fields sorted, hashed; "
          f"{keys} keys + {lots} of the closing sweep expected):")
    print()
    print("| system | RocksDB on disk (du of the state dir after the stop) | keys in the table output | records in it "
          f"| digest | vs {ref} |")
    print("|---|---:|---:|---:|---|---|")
    for name, e in extra.items():
        check = "reference"
        if name != ref and ref is not None:
            if e["digest"] == extra[ref]["digest"] and e["keys"] == extra[ref]["keys"]:
                check = "equal"
            else:
                check = "MISMATCH"
                ok = False
                a = dict(x.split("\t") for x in open(f"{work}/{ref}/lots.digest", encoding="utf-8").read().splitlines())
                b = dict(x.split("\t") for x in open(f"{work}/{name}/lots.digest", encoding="utf-8").read().splitlines())
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                print(f"!!!!!!!! {name}: table output differs from {ref}'s on {len(diff)} keys, e.g. {diff[:5]}",
                      file=sys.stderr)
        if e["keys"] != keys + lots:
            check += f" (NOT {keys + lots} keys)"
            ok = False
        print(f"| {name} | {e['bytes'] / 2**20:,.0f} MiB | {e['keys']:,} | {e['records']:,} | {e['digest']} | {check} |")

    targets = []
    for g in ("alos", "eos"):
        w, k = results.get(f"weir-{g}"), results.get(f"ks-{g}")
        if w and k:
            r = k["s"] / w["s"]
            c = w["cpu"] / k["cpu"]
            m = w["rss"] / k["rss"]
            targets.append((f"{g}: records/s >= 3x Kafka Streams'", f"{r:.2f}x", r >= 3))
            targets.append((f"{g}: CPU-s per record <= 1/4 of Kafka Streams'", f"{c:.2f} (1/{1 / c:.1f})", c <= 0.25))
            targets.append((f"{g}: peak RSS <= 1/4 of Kafka Streams'", f"{m:.2f} (1/{1 / m:.1f})", m <= 0.25))

    restores = {r[0]: r for r in rows(f"{work}/restores")}
    if restores:
        print()
        print("Restore 1: a new instance, empty state directory, the whole changelog (seconds: process start until "
              "the group committed a trigger batch appended before the start; records: what the fetch-only reader "
              "reads from the same changelog topics):")
        print()
        print("| system | s to processing | restore alone (s) | changelog records | MB | records/s (to processing) "
              "| records/s (restore alone) | fetch only s | fetch only records/s | CPU-s | peak RSS MiB | "
              "RocksDB after (MiB) | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        rate = {}
        for name, r in restores.items():
            _, s, own, rec, byt, fs, cpu, rss, load, sb = r
            s, rec, fs = float(s), int(rec), float(fs)
            own_rate = f"{rec / float(own):,.0f}" if own != "-" and float(own) > 0 else "-"
            rate[name] = (rec / s, rec / fs if fs > 0 else 0)
            print(f"| {name} | {s:.2f} | {own} | {rec:,} | {int(byt) / 1e6:,.0f} | {rec / s:,.0f} | {own_rate} | "
                  f"{fs:.2f} | {rec / fs if fs > 0 else 0:,.0f} | {float(cpu):.1f} | {int(rss) / 1024:,.0f} | "
                  f"{int(sb) / 2**20:,.0f} | {load} |")
        print("(restore alone: weir, first 'restoring store' to last 'restore done' log line; Kafka Streams, "
              "process start to its REBALANCING -> RUNNING)")
        if "weir-eos" in rate and "ks-eos" in rate:
            x = rate["weir-eos"][0] / rate["ks-eos"][0]
            targets.append(("full restore >= 3x Kafka Streams' rate", f"{x:.2f}x", x >= 3))
        if "weir-eos" in rate and rate["weir-eos"][1] > 0:
            x = rate["weir-eos"][0] / rate["weir-eos"][1]
            targets.append(("full restore >= 1/2 the fetch-only rate", f"{x:.2f} of it", x >= 0.5))

    crashes = rows(f"{work}/crashes")
    if crashes:
        print()
        print("Restore 2: SIGKILL under exactly-once once a fifth of a backlog is committed, immediate restart on "
              "the same state directory (processing again: first sample, every 100 ms, with the committed input "
              "offsets past those at the kill):")
        print()
        print("| run | system | transactional state stores (KS) | kill -> restart s | restart -> processing again s "
              "| restart -> RUNNING s (KS) | restart -> caught up s | changelog records replayed (weir) | backlog |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for r in crashes:
            r = r + ["-"] * (9 - len(r))
            label, name, txn, kr, rp, rr, rd, rep, bl = r[:9]
            print(f"| {label} | {name} | {txn if name.startswith('ks') else 'n/a'} | {kr} | {rp} | {rr} | {rd} | "
                  f"{rep} | {bl} |")
            if name.startswith("weir"):
                targets.append(("crash under exactly-once: processing again <= 10 s after the restart", f"{rp} s",
                                rp != "-" and float(rp) <= 10))

    scales = rows(f"{work}/scales")
    if scales:
        print()
        print("Restore 3: a second instance joins a running instance with a backlog (per partition of the input and "
              "repartition topics, from the join to caught up: the longest time its committed offset did not move "
              "while it had lag; commit interval 1 s):")
        print()
        print("| system | partition | moved? | longest stall s | owner before | owner after | new instance's "
              "restore s (weir) | join -> caught up s |")
        print("|---|---|---|---:|---|---|---:|---:|")
        by = {}
        labels = {}  # an instance's member name -> "first" (the one running before the join) or "second"
        for r in scales:
            labels.setdefault(r[0], {}).setdefault(r[6], "first" if r[6] != "-" else "-")
        for r in scales:
            for o in (r[6], r[7]):
                labels[r[0]].setdefault(o, "second" if o != "-" else "-")
        for r in scales:
            name, own2, total_s, tp, moved, stall, b, a = r[:8]
            if moved == "early":
                print(f"| {name} | all | caught up before the second instance joined (backlog too small) | | | | | |")
                continue
            b, a = labels[name][b], labels[name][a]
            print(f"| {name} | {tp} | {moved} | {stall} | {b} | {a} | {own2} | {total_s} |")
            by.setdefault(name, []).append((moved, float(stall), own2))
        for name, ps in by.items():
            if not name.startswith("weir"):
                continue
            stay = [s for m, s, _ in ps if m == "stayed"]
            mv = [s for m, s, _ in ps if m == "moved"]
            own2 = ps[0][2]
            if stay:
                targets.append(("scale-out: the partitions that stay do not pause (longest stall <= 2 s)",
                                f"{max(stay):.2f} s", max(stay) <= 2))
            if mv and own2 != "-":
                targets.append(("scale-out: moved partitions resume within their restore (+ 1 commit interval)",
                                f"{max(mv):.2f} s vs restore {own2} s", max(mv) <= float(own2) + 1))
            elif not mv:
                targets.append(("scale-out: a partition moved to the new instance", "none moved", False))

    if targets:
        print()
        print("Targets (issue 21), this run:")
        print()
        print("| target | this run | |")
        print("|---|---:|---|")
        for t, v, good in targets:
            print(f"| {t} | {v} | {verdict(good)} |")
    if not ok:
        print("\nTABLE OUTPUTS DISAGREE (details above on stderr)")
        return 1
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "committed":
        line = sys.stdin.read().strip().splitlines()
        s = parse(line[-1]) if line else None
        print(committed_sum(s[1], sys.argv[2]) if s else 0)
    elif cmd == "first-above":
        topic, c, t0 = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        for line in sys.stdin:
            s = parse(line)
            if s and s[0] >= t0 and committed_sum(s[1], topic) > c:
                print(s[0])
                return 0
        print("-")
    elif cmd == "caught-up":
        topic, t0 = sys.argv[2], int(sys.argv[3])
        for line in sys.stdin:
            s = parse(line)
            if s and s[0] >= t0:
                ps = of_topic(s[1], topic)
                if ps and all(c >= end for end, c, _ in ps.values()):
                    print(s[0])
                    return 0
        print("-")
    elif cmd == "stalls":
        for x in stalls(int(sys.argv[2]), int(sys.argv[3]), sys.stdin.read().splitlines()):
            print(x)
    elif cmd == "report":
        return report(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
