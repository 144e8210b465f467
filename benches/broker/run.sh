#!/usr/bin/env bash
# weir against its peers on the real broker: the parking job, same input,
# same machine, one system at a time.
#
#   ./dev bench [--records N] [--partitions P] [--only LIST] [--commit-ms MS]
#   ./dev bench --latency [--rate R] [--seconds S] [--warmup W] [--partitions P] [--only LIST] [--commit-ms MS]
#   bash benches/broker/run.sh ...   (Kafka up; WEIR_BIN built)
#
# Every system gets its own fresh P-partition input topic (default 3)
# holding the same N seeded simulated records (default 1,000,000; `weir
# simulate --seed 7` from a fixed start, with the poll interval chosen so the
# N records span at most 23 h of event time), and runs from offset 0 with a
# fresh consumer group, fresh state and fresh output topics, one after
# another:
#   consumer-perf  Kafka's ConsumerPerformance (fetch only: the ceiling)
#   passthrough-alos  examples/passthrough.rs: consumes the input and
#                  produces every record unchanged to an output topic (same
#                  partition), on weir run's librdkafka settings, no decoding,
#                  no state: the client library's floor; at_least_once
#   passthrough-eos   the same, exactly_once (a transaction per commit)
#   weir-alos      weir run, at_least_once
#   weir-eos       weir run, exactly_once
#   ks-alos        Kafka Streams 4.4 (a real KafkaStreams app,
#                  benches/peer/kafka-streams ParkingStreamsApp), at_least_once
#   ks-eos         the same, exactly_once_v2
#   quix-alos      Quix Streams (pip, venv under .cache/quix-venv), at-least-once
#   quix-eos       the same, exactly-once
# Every stream processor: one processing thread, commit interval 1 s (--commit-ms), the
# same topology (filter real-time, AVAILABLE_SPOTS, repartition by region, 1 h
# tumbling windows, final results only, latest status per lot), event time =
# record timestamp, each system's own defaults for what the lot table sends
# (weir: the shipped `emit: on_commit`, and Kafka Streams: its default record
# cache, both the newest status per lot at each commit; Quix Streams has no
# such cache and sends every update), grace 1 d (weir's close_idle_after too). The grace is
# longer than the input's event-time span on purpose: input partitions are
# consumed at different paces (Kafka Streams and Quix may process one input
# partition hours of event time ahead of another), so with the shipped 1 min
# grace which records are late, and so the outputs, would depend on the run.
#
# Measured per system: seconds from starting the process until its group has
# committed the end offset of every input partition ("caught up"; process
# start, group join and topic creation included, nothing subtracted),
# records/s = N / those seconds; CPU seconds (utime + stime from
# /proc/PID/stat at that moment) and peak RSS (VmHWM); for ConsumerPerformance,
# which exits by itself after N records, wall time to exit and its rusage
# (/usr/bin/time); and the 1-minute load average when the run started (the
# machine's other work). The passthrough computes nothing: after it caught up
# it is stopped (SIGTERM) and its output topic must hold N records
# (read_committed), its only check. Then, for the stream processors, unmeasured: the bench waits until the group has also
# committed its repartition topic, appends one sweep of every lot stamped
# 1 d + 2 h after the newest record (which closes every window of the data
# and nothing else), waits again, stops the process (SIGTERM) and reads the
# hourly output topic (read_committed). Every system's hourly windows must
# equal weir at_least_once's: the same windows, the same samples, averages
# within 1e-9. A mismatch fails the bench (exit 1) after the table is printed.
#
# Knobs (environment): WEIR_BOOTSTRAP (127.0.0.1:9092), WEIR_BIN
# ($CARGO_TARGET_DIR/debug/weir; copy it somewhere private when other builds
# share the target dir), WEIR_PASSTHROUGH_BIN
# ($CARGO_TARGET_DIR/debug/examples/passthrough, the same), KAFKA_LIBS ($repo/.cache/kafka/libs, what ./dev up
# fetches), QUIX_VENV ($repo/.cache/quix-venv), WEIR_BENCH_QUIX_SPEC
# (quixstreams==3.28.1), WEIR_BENCH_TIMEOUT (1800 s per wait), WEIR_BENCH_DIR (work dir),
# WEIR_BENCH_KEEP=1 (keep topics and state).
#
# --latency: end-to-end latency at a fixed offered rate instead (issue 13),
# for floor, passthrough-alos, passthrough-eos, weir-alos, weir-eos, ks-alos,
# ks-eos (--only picks among them), one at a time. `floor` runs no
# processor: the reader reads the input topic itself, so its figures are
# what the generator, the broker, the reader and the machine cost alone, the
# part of every other row no processor can remove (its "records out" counts
# every input record, also the ones the job filters out, so it exceeds
# "records in"). `passthrough-*` (the client library's floor: one more
# consume and produce on weir run's settings, the same commit interval) is read
# on its output topic, which gets every input record with its timestamp
# (so its "records in" counts every input record); weir's lot-status p99
# over the passthrough's at the same guarantee is printed after the table
# (issue 21: at most 2× at-least-once). The others run each with
# fresh P-partition topics (input and outputs created up front) and a fresh
# group and state. The job is the same parking topology
# with the hourly window and the lot table emitting every update (weir:
# `emit: on_update` for both; Kafka Streams: no suppress, record cache off,
# statestore.cache.max.bytes=0, its defaults otherwise), the shipped grace (1 min) and close_idle_after (2
# min), commit interval 1 s (--commit-ms: Kafka Streams' exactly-once default
# is 100), one processing thread. Once the system's group
# is stable with every input partition assigned (Kafka Streams: also
# RUNNING), `BenchTools latency` assigns a read_committed consumer to both
# output topics (hourly and lot status), then produces R records/s (default
# 10,000) for S s (default 60), cycling through 4 sweeps of `weir simulate
# --seed 7` (527 lots), each record stamped with the wall clock at its send()
# (record timestamp = event time, so the windows are the current hours; a
# real-time lot's LAST_UPDATE is rewritten to that second in KST, so the lot
# table takes every record). Per output record read: now - record timestamp.
# The first W s (default 10) are warm-up and discarded; it reads until every
# measured record has come out of both topics or for 30 s after the last
# send (WEIR_BENCH_DRAIN). The lot-status record is 1:1 with an input record
# and carries its timestamp in both systems (weir forwards it; Kafka Streams'
# reduce takes max(old, new), which is the new one: a lot's records arrive in
# order); that is the headline figure. The hourly record carries the largest
# input timestamp of its window (both systems), which can be a record other
# than the one that triggered it, and it goes through the repartition topic.
# Printed per system and output: offered and achieved rate, records in the
# measured span, records out, p50/p99/p99.9/max in ms (a percentile that
# falls on a record never read is "inf": the system did not keep up), the
# system's CPU seconds during the run and the load average before it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
n=1000000
partitions=3
only=""
latency=0
rate=10000
lat_seconds=60
warmup=10
commit_ms=1000
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit "${1:-0}"
}
while (($#)); do
  case "$1" in
    --records) n="$2"; shift 2 ;;
    --records=*) n="${1#*=}"; shift ;;
    --partitions) partitions="$2"; shift 2 ;;
    --partitions=*) partitions="${1#*=}"; shift ;;
    --only) only="$2"; shift 2 ;;
    --only=*) only="${1#*=}"; shift ;;
    --latency) latency=1; shift ;;
    --rate) rate="${2%/s}"; shift 2 ;;
    --rate=*) rate="${1#*=}"; rate="${rate%/s}"; shift ;;
    --seconds) lat_seconds="$2"; shift 2 ;;
    --seconds=*) lat_seconds="${1#*=}"; shift ;;
    --warmup) warmup="$2"; shift 2 ;;
    --warmup=*) warmup="${1#*=}"; shift ;;
    --commit-ms) commit_ms="$2"; shift 2 ;;
    --commit-ms=*) commit_ms="${1#*=}"; shift ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2 >&2 ;;
  esac
done
[[ "$commit_ms" =~ ^[0-9]+$ ]] && ((commit_ms > 0)) || { echo "run.sh: --commit-ms takes a whole number of ms > 0" >&2; exit 2; }
if [[ -z "$only" ]]; then
  if ((latency)); then only="floor,passthrough-alos,passthrough-eos,weir-alos,weir-eos,ks-alos,ks-eos"
  else only="consumer-perf,passthrough-alos,passthrough-eos,weir-alos,weir-eos,ks-alos,ks-eos,quix-alos,quix-eos"; fi
fi
if ((latency)); then
  for x in ${only//,/ }; do
    [[ "$x" =~ ^(floor|passthrough-alos|passthrough-eos|weir-alos|weir-eos|ks-alos|ks-eos)$ ]] ||
      { echo "run.sh: --latency runs floor, passthrough-alos, passthrough-eos, weir-alos, weir-eos, ks-alos, ks-eos; not $x" >&2; exit 2; }
  done
  for x in "$rate" "$lat_seconds" "$warmup"; do
    [[ "$x" =~ ^[0-9]+$ ]] || { echo "run.sh: --rate, --seconds and --warmup take whole numbers" >&2; exit 2; }
  done
  ((rate > 0 && lat_seconds > warmup)) || { echo "run.sh: --rate must be > 0 and --seconds > --warmup" >&2; exit 2; }
else
  for x in ${only//,/ }; do
    [[ "$x" =~ ^(consumer-perf|passthrough-alos|passthrough-eos|weir-alos|weir-eos|ks-alos|ks-eos|quix-alos|quix-eos)$ ]] ||
      { echo "run.sh: runs consumer-perf, passthrough-alos, passthrough-eos, weir-alos, weir-eos, ks-alos, ks-eos, quix-alos, quix-eos; not $x" >&2; exit 2; }
  done
fi
seed=7
grace=1d
wait_s="${WEIR_BENCH_TIMEOUT:-1800}"
bootstrap="${WEIR_BOOTSTRAP:-127.0.0.1:9092}"
weir_bin="${WEIR_BIN:-$CARGO_TARGET_DIR/debug/weir}"
passthrough_bin="${WEIR_PASSTHROUGH_BIN:-$CARGO_TARGET_DIR/debug/examples/passthrough}"
quix_venv="${QUIX_VENV:-$CACHE/quix-venv}"
quix_spec="${WEIR_BENCH_QUIX_SPEC:-quixstreams==3.28.1}"
ks_dir="$ROOT/benches/peer/kafka-streams"
run_id="$(date +%Y%m%d%H%M%S)"
prefix="bench-$run_id"
work="${WEIR_BENCH_DIR:-${TMPDIR:-/tmp}/weir-bench-$run_id}"

loud() { printf '\n!!!!!!!! %s\n\n' "$*" >&2; }

to_secs() { # 90s | 15m | 1h | 1d -> seconds
  case "$1" in
    *d) echo $((${1%d} * 86400)) ;; *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;;
  esac
}
grace_s="$(to_secs "$grace")"
[[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || die "--records must be a positive integer"
[[ "$partitions" =~ ^[0-9]+$ && "$partitions" -gt 0 ]] || die "--partitions must be a positive integer"
require_tools java javac awk sed grep python3 /usr/bin/time
require_weir_and_kafka "$weir_bin"
want() { [[ ",$only," == *",$1,"* ]]; }
if want passthrough-alos || want passthrough-eos; then
  [[ -x "$passthrough_bin" ]] ||
    die "no passthrough at $passthrough_bin (cargo build --features integration --example passthrough)"
fi
clk_tck="$(getconf CLK_TCK)"

bench_tool() { # watch|dump ARGS...
  java -Xmx256m -XX:+UseSerialGC -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
    -cp "$work/classes:$KAFKA_LIBS/*" BenchTools "$@"
}
create_topics() { # TOPIC...
  local t
  for t in "$@"; do
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$t" \
      --partitions "$partitions" --replication-factor 1 >/dev/null || die "could not create topic $t"
  done
}

# weir's copy of topology/parking.yaml for one run (parking_topology, benches/lib.sh),
# with the commit interval and the partitions too:
# NAME APP INPUT GUARANTEE SED_SCRIPT [LINE...]: every LINE must be in it.
weir_topology() {
  local name="$1" app="$2" input="$3" g="$4" extra="$5"
  shift 5
  parking_topology "$weir_bin" "$app" "$input" "$g" "$work/$name/parking.yaml" \
    "s/^commit_interval:.*/commit_interval: ${commit_ms}ms/" "s/partitions: 3\$/partitions: $partitions/" "$extra" \
    -- "commit_interval: ${commit_ms}ms" "$@" || die "weir's topology for $name"
}

# "CPU_SECONDS PEAK_RSS_KB" of a live process (its threads included).
proc_usage() {
  local cpu rss
  cpu="$(sed -E 's/^.*\) //' "/proc/$1/stat" | awk -v hz="$clk_tck" '{ printf "%.2f", ($12 + $13) / hz }')"
  rss="$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status")"
  echo "$cpu $rss"
}

bench_on_exit "${WEIR_BENCH_KEEP:-0}" "$prefix" "*$prefix*"
mkdir -p "$work"
: >"$work/results"

javac -nowarn -cp "$KAFKA_LIBS/*" -d "$work/classes" "$here/BenchTools.java" 2>"$work/javac.log" ||
  { cat "$work/javac.log" >&2; die "BenchTools did not compile"; }

# ---------------------------------------------------------------------------
# Peers: build what is wanted, loudly skip what cannot be had.
# ---------------------------------------------------------------------------
SKIPPED=()
if want ks-alos || want ks-eos; then
  say "building the Kafka Streams peer (mvn package in $ks_dir)"
  if ! (cd "$ks_dir" && { mvn -q -B -o package >"$work/mvn.log" 2>&1 || mvn -q -B package >"$work/mvn.log" 2>&1; }); then
    tail -n 30 "$work/mvn.log" >&2
    die "Kafka Streams peer did not build (see $work/mvn.log)"
  fi
  ks_version="$(find "$ks_dir/target/lib" -name 'kafka-streams-[0-9]*.jar' | sed -E 's/.*kafka-streams-(.*)\.jar/\1/')"
fi
quix_ok=0
if want quix-alos || want quix-eos; then
  if [[ ! -x "$quix_venv/bin/python" ]] || ! "$quix_venv/bin/python" -c 'import quixstreams' 2>/dev/null; then
    say "installing $quix_spec into $quix_venv (pip)"
    if python3 -m venv "$quix_venv" >"$work/pip.log" 2>&1 &&
      "$quix_venv/bin/pip" install -q "$quix_spec" >>"$work/pip.log" 2>&1; then
      :
    else
      tail -n 20 "$work/pip.log" >&2
    fi
  fi
  if "$quix_venv/bin/python" -c 'import quixstreams' 2>/dev/null; then
    quix_ok=1
    quix_version="$("$quix_venv/bin/python" -c 'import quixstreams; print(quixstreams.__version__)')"
  else
    loud "QUIX STREAMS SKIPPED: pip install of $quix_spec into $quix_venv failed (log: $work/pip.log)"
    SKIPPED+=(quix-alos quix-eos)
  fi
fi

# ---------------------------------------------------------------------------
# --latency: a fixed offered rate, wall-clock timestamps, emit every update
# ---------------------------------------------------------------------------
if ((latency)); then
  drain_s="${WEIR_BENCH_DRAIN:-30}"
  say "work dir $work; topics *$prefix*; weir $weir_bin; bootstrap $bootstrap"
  lots="$(NO_COLOR=1 "$weir_bin" simulate --count 1 --seed "$seed" --output - 2>&1 >/dev/null |
    sed -nE 's/.*lots=([0-9]+).*/\1/p' | head -n1)"
  [[ "$lots" =~ ^[0-9]+$ ]] || die "could not read the simulator's lot count"
  # The values the generator cycles through: 4 sweeps of every lot, "KEY\tJSON".
  NO_COLOR=1 "$weir_bin" simulate --count $((4 * lots)) --seed "$seed" --output - 2>"$work/simulate.log" |
    python3 -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["key"] + "\t" + r["value"])' >"$work/values.tsv" || die "weir simulate --output failed"
  lat_run() { # NAME GUARANTEE APP OUTPUTS [CMD...]; OUTPUTS: the topics read, comma-separated; without CMD no processor (floor)
    local name="$1" g="$2" app="$3" dir="$work/$1" pid="" outs
    IFS=, read -r -a outs <<<"$4"
    shift 4
    if (($#)); then
      BENCH_GROUPS+=("$app")
      say "$name: $*"
      "$@" >"$dir/run.log" 2>&1 </dev/null &
      pid=$!
      PIDS+=("$pid")
      if ! bench_tool assigned "$bootstrap" "$app" "$app-in" 120 >"$dir/assigned.out" 2>"$dir/assigned.err"; then
        tail -n 20 "$dir/run.log" >&2
        stop_pid "$pid"; FAILED+=("$name"); loud "$name FAILED: its group never got the input assigned (log: $dir/run.log)"
        return 0
      fi
      if [[ "$name" == ks-* ]]; then
        local i
        for ((i = 0; i < 600; i++)); do grep -q -- '-> RUNNING' "$dir/run.log" && break; sleep 0.1; done
      fi
      sleep 1
    fi
    local load u0="0 0" u1="0 0"
    load="$(cut -d' ' -f1 /proc/loadavg)"
    [[ -n "$pid" ]] && u0="$(proc_usage "$pid")"
    say "$name: $rate records/s for $lat_seconds s (first $warmup s discarded)"
    if ! bench_tool latency "$bootstrap" "$app-in" "$work/values.tsv" "$rate" "$lat_seconds" "$warmup" "$drain_s" \
        "${outs[@]}" >"$dir/latency.out" 2>"$dir/latency.err"; then
      tail -n 20 "$dir/latency.err" >&2
      FAILED+=("$name"); loud "$name: the latency tool failed"
    fi
    if [[ -n "$pid" ]]; then
      pid_alive "$pid" || { FAILED+=("$name"); loud "$name exited during the run (log: $dir/run.log)"; }
      u1="$(proc_usage "$pid" 2>/dev/null || echo "$u0")"
      stop_pid "$pid" TERM
    fi
    local cpu="-"
    [[ -n "$pid" ]] && cpu="$(awk -v a="${u0%% *}" -v b="${u1%% *}" 'BEGIN { printf "%.1f", b - a }')"
    local gen
    gen="$(grep -m1 '^gen ' "$dir/latency.out" || true)"
    grep '^result ' "$dir/latency.out" | while read -r _ topic rest; do
      local out=lots
      [[ "$topic" == *-hourly ]] && out=hourly
      [[ "$topic" == *-in ]] && out=in
      [[ "$topic" == *-out ]] && out=out
      echo "$name|$g|$out|$rate|$gen|$rest|$cpu|$load|$dir/latency.out" >>"$work/results"
    done
    say "$name: $(grep '^result ' "$dir/latency.out" | sed "s/^result $app-//" | paste -sd';' -)"
    sleep 2
  }
  for name in floor passthrough-alos passthrough-eos weir-alos weir-eos ks-alos ks-eos; do
    want "$name" || continue
    app="$prefix-$name"
    mkdir -p "$work/$name"
    case "$name" in
      floor)
        create_topics "$app-in"
        lat_run floor none "$app" "$app-in"
        continue ;;
      passthrough-*)
        g=at_least_once; [[ "$name" == passthrough-eos ]] && g=exactly_once
        create_topics "$app-in" "$app-out"
        RUST_BACKTRACE=0 lat_run "$name" "$g" "$app" "all:$app-out" \
          "$passthrough_bin" "$bootstrap" "$app" "$app-in" "$app-out" "$g" "$commit_ms"
        continue ;;
    esac
    create_topics "$app-in" "$app-hourly" "$app-lots" "$app-dlq"
    case "$name" in
      weir-alos | weir-eos)
        g=at_least_once; [[ "$name" == weir-eos ]] && g=exactly_once
        weir_topology "$name" "$app" "$app-in" "$g" \
          "s/emit: on_window_close\$/emit: on_update/; s/emit: on_commit\$/emit: on_update/" \
          "topic: $app-lots" "emit: on_update"
        ! grep -q "emit: on_commit" "$work/$name/parking.yaml" || die "$name: the lot table still emits on commit"
        NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" lat_run "$name" "$g" "$app" "$app-lots,$app-hourly" \
          "$weir_bin" run "$work/$name/parking.yaml" --bootstrap "$bootstrap" --state-dir "$work/$name/state" ;;
      ks-alos | ks-eos)
        g=at_least_once; [[ "$name" == ks-eos ]] && g=exactly_once_v2
        lat_run "$name" "$g" "$app" "$app-lots,$app-hourly" \
          java -cp "$ks_dir/target/classes:$ks_dir/target/lib/*" weir.peer.ParkingStreamsApp "$bootstrap" "$app" \
          "$app-in" "$app-hourly" "$app-lots" "$app-dlq" "$g" 60 "$commit_ms" "$work/$name/state" update ;;
    esac
  done
  echo
  echo "End-to-end latency on the broker at $bootstrap: the parking job with every window update emitted, offered"
  echo "$rate records/s for $lat_seconds s (first $warmup s discarded), $partitions input partitions, commit interval ${commit_ms} ms,"
  echo "one processing thread each, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)."
  echo "weir $("$weir_bin" --version 2>/dev/null | head -n1); Kafka Streams ${ks_version:-n/a}; $(java -version 2>&1 | head -n1)."
  echo "Latency = the moment a read_committed consumer reads the output record - its timestamp (the produce time)."
  echo
  rc=0
  python3 "$here/report.py" --latency --commit-ms "$commit_ms" "$work/results" || rc=1
  for f in "${FAILED[@]}"; do echo "FAILED: $f (logs in $work/$f)"; rc=1; done
  exit "$rc"
fi

# ---------------------------------------------------------------------------
# Input: the same N records for every system, each in a topic of its own
# ---------------------------------------------------------------------------
say "work dir $work; topics *$prefix*; weir $weir_bin; bootstrap $bootstrap"
lots="$(NO_COLOR=1 "$weir_bin" simulate --count 1 --seed "$seed" --output - 2>&1 >/dev/null |
  sed -nE 's/.*lots=([0-9]+).*/\1/p' | head -n1)"
[[ "$lots" =~ ^[0-9]+$ ]] || die "could not read the simulator's lot count"
# N records are N / lots sweeps; they span at most 23 h of event time.
poll_s=$((23 * 3600 * lots / n))
((poll_s >= 1)) || die "--records $n: more than $((23 * 3600 * lots)) records would need a poll interval under 1 s"
((poll_s <= 3600)) || poll_s=3600
start_s=$(($(date +%s) - 2 * 86400 - 3 * 3600))
start="$(date -u -d "@$start_s" +%Y-%m-%dT%H:%M:%SZ)"
preload() { # TOPIC
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$1" \
    --partitions "$partitions" --replication-factor 1 >/dev/null
  "$weir_bin" simulate --count "$n" --partitions "$partitions" --topic "$1" --seed "$seed" --start "$start" \
    --poll-interval "${poll_s}s" --bootstrap "$bootstrap" >"$work/simulate-$1.log" 2>&1 ||
    { tail -n 20 "$work/simulate-$1.log" >&2; die "weir simulate failed"; }
  local offs
  offs="$(kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$bootstrap" --topic "$1" 2>/dev/null |
    sed "s/^$1://" | sort -n | paste -sd' ' -)"
  [[ -n "$offs" ]] || die "no offsets for $1"
  if [[ -z "${INPUT_OFFSETS:-}" ]]; then
    INPUT_OFFSETS="$offs"
    say "input: $n records (seed $seed, $lots lots, poll interval ${poll_s}s, from $start), partition:end $offs"
    [[ "$(tr ' ' '\n' <<<"$offs" | awk -F: '{ s += $2 } END { print s }')" == "$n" ]] || die "$1 holds $offs, expected $n records"
  else
    [[ "$offs" == "$INPUT_OFFSETS" ]] || die "$1 holds $offs, the first input $INPUT_OFFSETS"
  fi
}
# One sweep of every lot, stamped 1 d + 2 h after the newest input record:
# closes every window of the data (and no other) once the input is processed.
flush() { # TOPIC
  local max_ts
  max_ts="$(bench_tool maxts "$bootstrap" "$1" 2>"$work/maxts.err")" || { cat "$work/maxts.err" >&2; die "maxts failed"; }
  "$weir_bin" simulate --count "$lots" --partitions "$partitions" --topic "$1" --seed 8 \
    --start "$(date -u -d "@$((max_ts / 1000 + grace_s + 7200))" +%Y-%m-%dT%H:%M:%SZ)" --poll-interval 1m \
    --bootstrap "$bootstrap" >"$work/flush-$1.log" 2>&1 || { tail -n 20 "$work/flush-$1.log" >&2; die "flush of $1 failed"; }
}

# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------
FAILED=()
# Runs one stream processor: "$@" is its command line, GROUP its consumer group.
# HOURLY_TOPIC `passthrough:TOPIC`: the passthrough, which computes nothing:
# stopped once caught up; TOPIC, its output, must hold every input record.
stream_run() { # NAME GUARANTEE GROUP INPUT HOURLY_TOPIC SLACK CMD...
  local name="$1" g="$2" group="$3" input="$4" hourly="$5" slack="$6"
  shift 6
  BENCH_GROUPS+=("$group")
  preload "$input"
  local dir="$work/$name" watch
  watch="$dir/watch.out"
  bench_tool watch "$bootstrap" "$group" "$input" "$slack" 100 "$wait_s" >"$watch" 2>"$dir/watch.err" </dev/null &
  local wpid=$!
  PIDS+=("$wpid")
  wait_line "$watch" ready "$wpid" "$name watcher" >/dev/null || { FAILED+=("$name"); return 0; }
  say "$name: $*"
  local t0 pid line t_in usage t_all="" load
  load="$(cut -d' ' -f1 /proc/loadavg)" # the machine's other work, for the reader
  t0="$(now_ms)"
  "$@" >"$dir/run.log" 2>&1 </dev/null &
  pid=$!
  PIDS+=("$pid")
  if ! line="$(wait_line "$watch" input_done "$pid" "$name")"; then
    tail -n 20 "$dir/run.log" >&2
    stop_pid "$wpid"; stop_pid "$pid"
    FAILED+=("$name")
    loud "$name FAILED (log: $dir/run.log)"
    return 0
  fi
  usage="$(proc_usage "$pid")"
  t_in="${line#input_done }"
  if [[ "$hourly" == passthrough:* ]]; then
    stop_pid "$wpid"
    stop_pid "$pid" TERM
    local out count
    out="${hourly#passthrough:}"
    count="$(bench_tool count "$bootstrap" "$out" 2>"$dir/count.err")" || { cat "$dir/count.err" >&2; count=""; }
    if [[ "$count" != "$n" ]]; then
      FAILED+=("$name")
      loud "$name: its output $out holds ${count:-?} committed records, not the $n it read"
    fi
    echo "$name|$g|$(secs "$t0" "$t_in")||$usage|out:${count:-?}|$load" >>"$work/results"
    say "$name: caught up after $(secs "$t0" "$t_in") s (cpu_s rss_kb: $usage); $out holds ${count:-?} records"
    sleep 1
    return 0
  fi
  if line="$(wait_line "$watch" all_done "$pid" "$name: repartition topic not drained")"; then
    line="${line#all_done }"
    t_all="${line%% *}"
  else
    FAILED+=("$name")
  fi
  stop_pid "$wpid"
  # Unmeasured: close every window, wait until that is processed too.
  flush "$input"
  bench_tool watch "$bootstrap" "$group" "$input" "$slack" 100 "$wait_s" >"$watch.flush" 2>>"$dir/watch.err" </dev/null &
  wpid=$!
  PIDS+=("$wpid")
  wait_line "$watch.flush" all_done "$pid" "$name: flush not processed" >/dev/null || FAILED+=("$name")
  stop_pid "$wpid"
  sleep 2 # a commit interval and then some: whatever was produced is committed
  stop_pid "$pid" TERM
  bench_tool dump "$bootstrap" "$hourly" >"$dir/hourly.tsv" 2>"$dir/dump.err" ||
    { FAILED+=("$name"); loud "$name: could not read $hourly"; }
  echo "$name|$g|$(secs "$t0" "$t_in")|${t_all:+$(secs "$t0" "$t_all")}|$usage|$dir/hourly.tsv|$load" >>"$work/results"
  say "$name: caught up after $(secs "$t0" "$t_in") s (cpu_s rss_kb: $usage)"
  sleep 1
}

if want consumer-perf; then
  name=consumer-perf
  mkdir -p "$work/$name"
  BENCH_GROUPS+=("$prefix-perf")
  input="$prefix-$name-in"
  preload "$input"
  say "$name: ConsumerPerformance --num-records $n"
  load="$(cut -d' ' -f1 /proc/loadavg)"
  t0="$(now_ms)"
  # The JVM options of Kafka's kafka-consumer-perf-test.sh / kafka-run-class.sh.
  if /usr/bin/time -f '%U %S %M' -o "$work/$name/time" java -Xmx512M -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.ConsumerPerformance \
    --bootstrap-server "$bootstrap" --topic "$input" --num-records "$n" --group "$prefix-perf" --timeout 60000 \
    >"$work/$name/run.log" 2>&1; then
    t1="$(now_ms)"
    read -r u s m <"$work/$name/time"
    echo "$name|fetch only|$(secs "$t0" "$t1")||$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }') $m||$load" >>"$work/results"
    say "$name: $(secs "$t0" "$t1") s"
  else
    cat "$work/$name/run.log" >&2
    FAILED+=("$name")
    loud "$name FAILED"
  fi
fi

weir_run() { # NAME GUARANTEE SLACK
  local name="$1" g="$2" app="$prefix-$1" input="$prefix-$1-in"
  mkdir -p "$work/$name"
  weir_topology "$name" "$app" "$input" "$g" \
    "s/grace: 1m\$/grace: ${grace_s}s/; s/close_idle_after: 2m\$/close_idle_after: ${grace_s}s/" \
    "grace: ${grace_s}s" "close_idle_after: ${grace_s}s"
  NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" stream_run "$name" "$g" "$app" "$input" "$app-hourly" "$3" \
    "$weir_bin" run "$work/$name/parking.yaml" --bootstrap "$bootstrap" --state-dir "$work/$name/state"
}
passthrough_run() { # NAME GUARANTEE
  local name="$1" g="$2" app="$prefix-$1" input="$prefix-$1-in"
  mkdir -p "$work/$name"
  create_topics "$app-out"
  RUST_BACKTRACE=0 stream_run "$name" "$g" "$app" "$input" "passthrough:$app-out" 0 \
    "$passthrough_bin" "$bootstrap" "$app" "$input" "$app-out" "$g" "$commit_ms"
}
want passthrough-alos && passthrough_run passthrough-alos at_least_once
want passthrough-eos && passthrough_run passthrough-eos exactly_once

want weir-alos && weir_run weir-alos at_least_once 0
want weir-eos && weir_run weir-eos exactly_once 1

ks_run() { # NAME GUARANTEE SLACK
  local name="$1" g="$2" app="$prefix-$1" input="$prefix-$1-in"
  mkdir -p "$work/$name"
  create_topics "$app-hourly" "$app-lots" "$app-dlq"
  stream_run "$name" "$g" "$app" "$input" "$app-hourly" "$3" \
    java -cp "$ks_dir/target/classes:$ks_dir/target/lib/*" weir.peer.ParkingStreamsApp "$bootstrap" "$app" \
    "$input" "$app-hourly" "$app-lots" "$app-dlq" "$g" "$grace_s" "$commit_ms" "$work/$name/state"
}
want ks-alos && ks_run ks-alos at_least_once 0
want ks-eos && ks_run ks-eos exactly_once_v2 1

quix_run() { # NAME GUARANTEE SLACK
  local name="$1" g="$2" app="$prefix-$1" input="$prefix-$1-in"
  mkdir -p "$work/$name"
  stream_run "$name" "$g" "$app" "$input" "$app-hourly" "$3" \
    "$quix_venv/bin/python" "$here/quix_app.py" "$bootstrap" "$app" "$input" "$app-hourly" "$app-lots" "$g" \
    "$grace_s" "$(awk -v m="$commit_ms" 'BEGIN { print m / 1000 }')" "$work/$name/state"
}
if ((quix_ok)); then
  want quix-alos && quix_run quix-alos at-least-once 0
  want quix-eos && quix_run quix-eos exactly-once 1
fi

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
echo
echo "Parking job on the broker at $bootstrap: N=$n records, $partitions input partitions, commit interval"
echo "${commit_ms} ms, one processing thread each, grace $grace, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg),"
echo "$(date -u +%Y-%m-%dT%H:%MZ). weir $("$weir_bin" --version 2>/dev/null | head -n1); Kafka Streams ${ks_version:-n/a};"
echo "Quix Streams ${quix_version:-n/a}; $(java -version 2>&1 | head -n1)."
echo
rc=0
python3 "$here/report.py" --records "$n" --reference weir-alos "$work/results" || rc=1
for s in "${SKIPPED[@]}"; do echo "SKIPPED: $s (see above)"; done
for f in "${FAILED[@]}"; do echo "FAILED: $f (logs in $work/$f)"; rc=1; done
((${#SKIPPED[@]} == 0)) || rc=1
exit "$rc"
