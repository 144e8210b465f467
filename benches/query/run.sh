#!/usr/bin/env bash
# Interactive queries on the parking job against the real broker: query
# latency while the job runs at a fixed rate, and the job's throughput
# with and without a query load, in one run.
#
#   ./dev bench-queries                (builds weir, starts Kafka, then runs this)
#   bash benches/query/run.sh          (Kafka up, WEIR_BOOTSTRAP set, $WEIR_BIN built)
#
# Two `weir run --query-addr` instances of topology/parking.yaml (all of
# it, with `free-now-by-region`; its own application id and topics,
# exactly_once, 1 s commits) share a 3-partition input topic.
#
# 1. Latency. `weir simulate --rate R` feeds the input for WARMUP + SECONDS
#    (default 10,000 records/s for 10 + 50 s); meanwhile benches/query/load.py
#    sends Q point lookups per second (default 200; three lots for one
#    region), sending each to one of the two instances at random, and reports p50/p90/
#    p99/max of the answers the instance asked read itself ("local") and of
#    those it forwarded to the other ("forwarded"), after the warm-up, with
#    the count of each HTTP status (503: a partition restoring or moving).
# 2. Throughput. N records (default 300,000) of the feed are produced first;
#    two fresh instances (new application id) process them, timed from their
#    start until every input partition's lag is 0 (from their /metrics);
#    then the same on new instances while load.py sends QT lookups per
#    second (default 1,000) at them. records/s = N / seconds; the ratio
#    is the cost of the queries. The load generator runs on the same two
#    cores, so part of the cost is its own CPU; the figure is an upper
#    bound of what serving queries takes from the job.
#
# Knobs (environment): WEIR_BENCH_Q_RATE (10000), WEIR_BENCH_Q_SECONDS (50),
# WEIR_BENCH_Q_WARMUP (10), WEIR_BENCH_Q_QPS (200), WEIR_BENCH_Q_RECORDS
# (300000), WEIR_BENCH_Q_THROUGHPUT_QPS (1000), WEIR_BENCH_Q_DIR (work dir,
# default under $TMPDIR), WEIR_BENCH_Q_KEEP=1 (keep the topics).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

weir="${WEIR_BIN:?WEIR_BIN: the weir binary}"
bootstrap="${WEIR_BOOTSTRAP:?WEIR_BOOTSTRAP: the broker}"
rate="${WEIR_BENCH_Q_RATE:-10000}"
seconds="${WEIR_BENCH_Q_SECONDS:-50}"
warmup="${WEIR_BENCH_Q_WARMUP:-10}"
qps="${WEIR_BENCH_Q_QPS:-200}"
records="${WEIR_BENCH_Q_RECORDS:-300000}"
tqps="${WEIR_BENCH_Q_THROUGHPUT_QPS:-1000}"
work="${WEIR_BENCH_Q_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-queries.XXXXXX")}"
wait_s=600
[[ -x "$weir" ]] || die "no weir binary at $weir"
require_tools python3
mkdir -p "$work"
run_id="bq$(date +%s)"
bench_on_exit "${WEIR_BENCH_Q_KEEP:-0}" "$run_id" "$run_id-*"

# topology/parking.yaml under APP's names, reading INPUT.
topology() { # APP INPUT OUT
  sed -e "s/^application_id: parking-hourly\$/application_id: $1/" \
    -e "s/parking_status_dlq/$1-dlq/g" -e "s/parking_status/$2/g" \
    -e "s/parking_hourly_avg/$1-hourly/g" -e "s/parking_lot_status/$1-lots/g" \
    -e "s/parking_free_now/$1-free-now/g" -e "s/parking_hotspots/$1-hotspots/g" \
    "$ROOT/topology/parking.yaml" >"$3"
  grep -q "queryable: true" "$3" || die "topology/parking.yaml changed shape: no queryable table in $3"
  grep -q "topic: $1-hotspots" "$3" || die "topology/parking.yaml changed shape: no hotspot table in $3"
  # Its global table, loaded before any instance starts.
  "$weir" ingest hotspots --bootstrap "$bootstrap" --topic "$1-hotspots" >/dev/null 2>&1 \
    || die "weir ingest hotspots --topic $1-hotspots failed"
  "$weir" validate "$3" >/dev/null
}

# Starts two instances of APP; sets ADDRS (query) and METRICS.
ADDRS=() METRICS=()
start_pair() { # APP TOPOLOGY
  local n q m
  ADDRS=() METRICS=()
  for n in 0 1; do
    q="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    m="127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "$weir" run "$2" --bootstrap "$bootstrap" --state-dir "$work/$1/state-$n" --instance-id none \
      --query-addr "$q" --metrics-addr "$m" >"$work/$1-run-$n.log" 2>&1 &
    PIDS+=("$!")
    ADDRS+=("$q") METRICS+=("$m")
  done
}

stop_all() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p" TERM; done
}

# 1. Latency at a fixed offered rate.
app="$run_id-lat"
mkdir -p "$work/$app"
topology "$app" "$app-in" "$work/$app.yaml"
kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$app-in" \
  --partitions 3 --replication-factor 1 >/dev/null
start_pair "$app" "$work/$app.yaml"
say "latency: ${rate} records/s for $((warmup + seconds)) s, ${qps} lookups/s (${ADDRS[*]})"
"$weir" simulate --bootstrap "$bootstrap" --topic "$app-in" --rate "$rate" --duration "$((warmup + seconds + 5))s" \
  --seed 7 >"$work/$app-simulate.log" 2>&1 &
sim=$!
PIDS+=("$sim")
sleep 3
python3 "$here/load.py" queries "$seconds" "$qps" "$warmup" "${ADDRS[@]}" >"$work/latency.out"
wait "$sim" || die "weir simulate failed: $work/$app-simulate.log"
forget_pid "$sim"
stop_all

# 2. Throughput of a backlog, without and with queries.
input="$run_id-backlog"
kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$input" \
  --partitions 3 --replication-factor 1 >/dev/null
say "throughput: producing $records records"
"$weir" simulate --bootstrap "$bootstrap" --topic "$input" --count "$records" --seed 7 >"$work/backlog-simulate.log" 2>&1
for mode in none "$tqps" none "$tqps"; do
  app="$run_id-t$((${#PIDS[@]} + RANDOM))"
  topology "$app" "$input" "$work/$app.yaml"
  start_pair "$app" "$work/$app.yaml"
  ql=""
  if [[ "$mode" != none ]]; then
    python3 "$here/load.py" queries 100000 "$mode" 0 "${ADDRS[@]}" >"$work/$app-queries.out" 2>&1 &
    ql=$!
    PIDS+=("$ql")
  fi
  line="$(python3 "$here/load.py" caught-up "$records" "$input" "$wait_s" "${METRICS[@]}")" \
    || die "$app did not catch up: $work/$app-run-*.log"
  secs_taken="${line#caught_up }"
  echo "throughput $mode $secs_taken" >>"$work/throughput.out"
  say "queries/s $mode: caught up in $secs_taken s"
  [[ -n "$ql" ]] && stop_pid "$ql" TERM
  stop_all
done

echo "Interactive queries on the parking job ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, broker $bootstrap)"
echo
echo "Latency at ${rate} records/s offered, ${qps} lookups/s, after ${warmup} s, for ${seconds} s:"
printf '%-10s %8s %8s %8s %8s %8s\n' answer count p50_ms p90_ms p99_ms max_ms
awk '$1 == "result" { printf "%-10s %8s %8s %8s %8s %8s\n", $2, $3, $4, $5, $6, $7 }' "$work/latency.out"
awk '$1 == "status" { printf "%s lookups, HTTP %s: %s\n", $2, $3, $4 } $1 == "skipped" && $2 > 0 { printf "lookups skipped (sent over 1 s late): %s\n", $2 }' "$work/latency.out"
echo
echo "Throughput of a ${records}-record backlog, two instances (records/s):"
awk -v n="$records" '$1 == "throughput" { r = n / $3; if ($2 == "none") { a += r; na++ } else { b += r; nb++; q = $2 }
    printf "  %-22s %8.0f  (%s s)\n", ($2 == "none" ? "no queries" : $2 " lookups/s"), r, $3 }
  END { if (na && nb) printf "  with queries / without: %.2f (means of %d runs each)\n", (b / nb) / (a / na), na }' "$work/throughput.out"
