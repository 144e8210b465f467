#!/usr/bin/env bash
# Same-machine, same-run comparison of weir's engine hot path with Kafka
# Streams on the parking job (topology/parking.yaml), both on one core.
#
#   bash benches/peer/run.sh
#
# Kafka Streams: benches/peer/kafka-streams (Maven, Kafka Streams 4.4.0 since the broker bench; 4.1.2 before,
# TopologyTestDriver, no broker). weir: benches/peer/weir_peer.rs (the same
# records through both sub-topologies with weir's Task). Both read the same
# 765-record poll, forced real-time, 1 s apart, cycled; see those files.
#
# Knobs (environment): PEER_CPU (core to pin, 0), PEER_RECORDS (100000),
# PEER_RUNS (5), PEER_WARMUPS (3), PEER_WARMUP_RECORDS (20000),
# PEER_ROCKS_RECORDS (20000: Kafka Streams' RocksDB modes are slow under the
# driver), PEER_ROCKS_RUNS (3), PEER_STATE_ROOT (state directories; /dev/shm
# when writable), PEER_LOG (where the raw lines go).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
cpu="${PEER_CPU:-0}"
n="${PEER_RECORDS:-100000}"
runs="${PEER_RUNS:-5}"
warmups="${PEER_WARMUPS:-3}"
warm_n="${PEER_WARMUP_RECORDS:-20000}"
rocks_n="${PEER_ROCKS_RECORDS:-20000}"
rocks_runs="${PEER_ROCKS_RUNS:-3}"
if [[ -z "${PEER_STATE_ROOT:-}" ]]; then
  if [[ -d /dev/shm && -w /dev/shm ]]; then PEER_STATE_ROOT=/dev/shm; else PEER_STATE_ROOT="${TMPDIR:-/tmp}"; fi
fi
log="${PEER_LOG:-${TMPDIR:-/tmp}/weir-peer-$(date +%Y%m%d-%H%M%S).log}"
poll="$ROOT/data/citydata_parking_poll.jsonl"

require_tools java mvn cargo taskset python3

say "building Kafka Streams peer (mvn)"
(cd "$here/kafka-streams" && { mvn -q -B -o package 2>/dev/null || mvn -q -B package; }) >&2

say "building weir_peer (cargo bench --profile dev --no-run)"
weir_bin="$(cd "$ROOT" && cargo bench "${CARGO_FEATURES[@]}" --profile dev --bench weir_peer --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "weir_peer" and m.get("executable"):
        print(m["executable"])' | tail -1)"
if [[ -z "$weir_bin" || ! -x "$weir_bin" ]]; then
  die "weir_peer did not build; run: cargo bench ${CARGO_FEATURES[*]} --profile dev --bench weir_peer --no-run"
fi

ks() { # MODE RECORDS RUNS WARMUPS WARMUP_RECORDS
  taskset -c "$cpu" java -Dweir.peer.stateRoot="$PEER_STATE_ROOT" \
    -cp "$here/kafka-streams/target/classes:$here/kafka-streams/target/lib/*" \
    weir.peer.ParkingPeer "$poll" "$@" | tee -a "$log"
}
weir() { # MODE RECORDS RUNS WARMUPS WARMUP_RECORDS
  WEIR_PEER_STATE_ROOT="$PEER_STATE_ROOT" taskset -c "$cpu" "$weir_bin" "$@" | tee -a "$log"
}

say "raw lines also in $log (cpu $cpu, state under $PEER_STATE_ROOT)"
: >"$log"
weir mem-commit-each "$n" "$runs" "$warmups" "$warm_n"
weir mem-commit-end "$n" "$runs" "$warmups" "$warm_n"
weir rocks-commit-each "$n" "$runs" 1 "$warm_n"
ks inmem "$n" "$runs" "$warmups" "$warm_n"
ks inmem-nocache "$n" "$runs" "$warmups" "$warm_n"
ks floor "$n" "$runs" "$warmups" "$warm_n"
ks rocksdb-noflush "$rocks_n" "$rocks_runs" 1 "$warm_n"
# The untouched defaults: ~2 ms per record under the driver (a RocksDB
# memtable flush per commit), so only a short run.
ks rocksdb 2000 1 1 1000

python3 - "$log" <<'EOF'
import re, sys

rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    parts = line.split()
    if not parts:
        continue
    kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    rows[(parts[0], kv.get("mode"))] = kv

def rate(engine, mode):
    return float(rows[(engine, mode)]["records_per_sec"])

def rss(engine, mode):
    return rows[(engine, mode)]["peak_rss_mb"]

# Kafka Streams with the driver's own cost taken out: per-record time of the
# parking topology minus that of source -> repartition -> sink.
ks_est = 1.0 / (1.0 / rate("kafka-streams", "inmem") - 1.0 / rate("kafka-streams", "floor"))

pairs = [
    ("like for like (commit per record, in-memory stores)", "mem-commit-each", "inmem", None),
    ("... KS without record cache", "mem-commit-each", "inmem-nocache", None),
    ("... KS processors only (inmem minus driver floor, estimate)", "mem-commit-each", None, ks_est),
    ("RocksDB stores, commit per record (KS: store flush skipped)", "rocks-commit-each", "rocksdb-noflush", None),
    ("RocksDB, KS untouched defaults under the driver", "rocks-commit-each", "rocksdb", None),
    ("weir commit at end (engine.rs) vs KS inmem", "mem-commit-end", "inmem", None),
]
print()
print("| comparison | weir config | weir records/s (1 core) | weir peak RSS | KS config | KS records/s (1 core) | KS peak RSS | weir/KS |")
print("|---|---|---:|---:|---|---:|---:|---:|")
for label, wm, km, est in pairs:
    w = rate("weir", wm)
    if est is not None:
        k, kname, krss = est, "inmem - floor", "-"
    else:
        k, kname, krss = rate("kafka-streams", km), km, rss("kafka-streams", km) + " MB"
    print(f"| {label} | {wm} | {w:,.0f} | {rss('weir', wm)} MB | {kname} | {k:,.0f} | {krss} | {w / k:.2f}x |")
print(f"| driver floor (source -> repartition -> sink, no state) | | | | floor | {rate('kafka-streams', 'floor'):,.0f} | {rss('kafka-streams', 'floor')} MB | |")

# Loose correctness: same input, same emitted results.
w = rows[("weir-check", "mem-commit-each")]
k = rows[("kafka-streams-check", "inmem")]
checks = [
    ("input bytes of the cycled poll", w["poll_bytes"], k["poll_bytes"]),
    ("hourly results (windows closed)", w["hourly"], k["hourly"]),
    ("samples in hourly results", w["hourly_samples"], k["hourly_samples"]),
    ("sum of hourly averages", w["hourly_avg_sum"], k["hourly_avg_sum"]),
    ("dead letters", w["dlq"], k["dlq"]),
    ("lot-status records (weir lot + stale = KS lot)", str(int(w["lot"]) + int(w["stale"])), k["lot"]),
]
print()
print(f"records={w['records']}: weir lot={w['lot']} stale-dropped={w['stale']}; KS lot={k['lot']} (the DSL reduce re-emits the kept value for a stale record)")
for name, a, b in checks:
    print(f"check {name}: weir={a} KS={b} {'OK' if a == b else 'DIFFERENT'}")
EOF
