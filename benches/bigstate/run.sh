#!/usr/bin/env bash
# Big state (issue 21): weir against Kafka Streams 4.4 on a table of millions
# of keys plus a windowed aggregation, same input, same machine, one system
# at a time; then the restore of that state, three ways, same run.
#
#   ./dev bench --state big [--keys K] [--records N] [--partitions P] [--only LIST] [--no-restore]
#   bash benches/bigstate/run.sh ...   (Kafka up; WEIR_BIN built)
#
# Input: a P-partition topic (default 3) per row, APP-in, each written by
# `BigState gen` (deterministic: the same records for every row) (BigState.java, compiled with
# broker/BenchTools.java on Kafka's jars at each run): N records (default
# N = K = 2,000,000) of the parking feed's JSON (the real-time lots of 4
# sweeps of `weir simulate --seed 7`), record i keyed "LOT@dDDDDDD" with key
# number i mod K (a lot x day key space: every one of the K keys at least
# once, so the table holds K keys), its LAST_UPDATE the record's timestamp
# (spread evenly over 23 h, ending 1 d 4 h ago) and OCCUPIED_SPOTS drawn
# from [0, CAPACITY] (values differ from key to key; ~400 bytes). Once a
# row has caught up (unmeasured), one sweep of the L lots keyed by their
# code, stamped 1 d + 2 h after the data, closes every hourly window (as
# broker/run.sh's flush: in the input from the start, it would make the
# records of a partition a system reads later than another late).
#
# The job (both systems): topology/parking.yaml's (as benches/broker): filter
# real-time, AVAILABLE_SPOTS, the latest status per key in a table that
# keeps the whole record (weir `table: {key: key, queryable: true,
# newest_by: value.LAST_UPDATE, emit: on_commit}`, its `ttl` removed: Kafka
# Streams has none; Kafka Streams `groupByKey().reduce()` materialized in a
# RocksDB store, the same bytes) written to APP-lots, and the hourly average
# of AVAILABLE_SPOTS per region (1 h tumbling windows, grace 1 d, final
# results only) written to APP-hourly. One processing thread, commit
# interval 1 s, state in RocksDB with the same memory on both sides: weir
# `--state-memory 128MiB` (one LRU block cache shared by all stores, index
# and filter blocks in it, memtables charged to it, flushed at half) and
# Kafka Streams the same via a RocksDBConfigSetter (BigStateStreamsApp:
# Kafka Streams' documented BoundedMemoryRocksDBConfig, 128 MiB, write
# buffer manager at 64 MiB, 4 MiB memtables). Record cache: weir's table
# holds at most 10,000 keys per task between commits (~4 MB of these
# values); Kafka Streams' statestore.cache.max.bytes is set to P x 10,000 x
# 500 bytes (15 MB at P = 3). Kafka Streams' JVM: its defaults.
#
# Rows (--only, all by default): weir-alos, weir-eos, ks-alos, ks-eos
# (throughput), restore, crash, scale (the restore parts: on the -eos rows'
# state and changelogs, weir and, when ks-eos ran, Kafka Streams).
# --no-restore drops restore, crash and scale.
#
# Throughput, per row: seconds from starting the process until its group has
# committed the end offset of every input partition (BenchTools watch,
# polled every 100 ms), records/s = (N + L) / that; CPU seconds (utime +
# stime) and peak RSS (VmHWM) at that moment; then (unmeasured) until the
# repartition topic is committed too, 2 s more, and a stop (weir: SIGUSR1,
# which leaves the group, so the next instance of the app does not wait for
# a session timeout; Kafka Streams: SIGTERM, close() leaves it). RocksDB size
# = `du -sb` of the state directory after the stop (no manual compaction:
# what RocksDB's own compactions left). Outputs, cross-checked (a mismatch
# fails the bench after the tables): the hourly windows with
# benches/broker/report.py (same windows, samples, averages within 1e-9 as
# the first weir row), and the table's output: the last value per key of
# APP-lots (BigState digest: JSON parsed and written back with sorted
# fields, hashed), which must be equal for every key, and hold K + L keys.
#
# restore (1, full restore): the -eos app's state directory deleted, a
# trigger batch (1,000 newer records) appended to the input, a new instance
# started; seconds = process start until the group committed the input's
# new end offsets (restore, group join and the batch included, for both
# systems alike); records/s = the changelog records (what the fetch-only
# reader reads from the same changelog topics afterwards: compacted
# changelogs hold fewer records than their end offsets) / those seconds.
# Also shown: weir's own restore wall time (first "restoring store" to last
# "restore done" log line) and Kafka Streams' REBALANCING -> RUNNING time.
# Fetch only: `BigState fetch`, one read_committed Java consumer on every
# partition of the same changelogs, as benches/eos/run.sh's FetchOnly "one".
#
# crash (2): a backlog of K/4 newer records appended; the -eos instance
# started on its state directory; once it has committed a fifth of the
# backlog, SIGKILL and an immediate restart on the same state directory.
# "Processing again" = the first sample (BigState offsets, every 100 ms)
# after the restart whose committed input offsets exceed those at the kill;
# also the time to catch up. weir: static membership (--instance-id auto,
# from the state directory), its RocksDB is never ahead of a commit, so it
# replays the changelog's tail. Kafka Streams, twice: its defaults (under
# exactly_once_v2 a crash wipes the state: a full restore), and with
# enable.transactional.statestores=true (KIP-892, in Kafka Streams 4.4's
# StreamsConfig: "Whether to enable transactional state stores"), killed
# and restarted with it. Kafka Streams runs as a static member
# (group.instance.id named after its state directory, BigStateStreamsApp),
# as weir does by default, so neither waits for the killed instance's
# session to expire; both times are shown for it (restart -> RUNNING,
# restart -> processing). Before each restart 1,000 more records are
# appended (so there is input to process even when a small backlog was
# all committed before the kill).
#
# scale (3): a backlog of N/2 newer records; the -eos instance started on its
# state directory; once it has committed a tenth of the backlog a second
# instance with its own, empty, state directory joins. Per partition of the input and repartition topics, from
# the join until caught up: the longest time its committed offset did not
# move while it had lag ("stall", sampled every 100 ms; the commit
# interval, 1 s, is the floor), and whether it moved to the new instance
# (its owner at the end differs from its owner before the join). Kafka
# Streams the same when ks-eos ran (its assignor moves a task only once a
# warm-up replica has caught up, so it may move none within the run).
#
# Targets (issue 21; ratios in one run; printed reached or missed, never
# tuned to reach): records/s >= 3x Kafka Streams' and CPU-s per record <=
# 1/4 at each guarantee, peak RSS <= 1/4; full restore >= 3x Kafka Streams'
# rate and >= 1/2 the fetch-only rate; crash: processing again <= 10 s after
# the restart; scale: the partitions that stay do not pause (longest stall
# <= 2 commit intervals), the moved ones resume within their restore time.
#
# Knobs (environment): WEIR_BOOTSTRAP (127.0.0.1:9092), WEIR_BIN
# ($CARGO_TARGET_DIR/debug/weir; a private copy), KAFKA_LIBS,
# WEIR_BENCH_TIMEOUT (3600 s per wait), WEIR_BENCH_DIR (work dir),
# WEIR_BENCH_KEEP=1 (keep topics and state).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
keys=2000000
n=""
partitions=3
only=""
restore=1
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit "${1:-0}"
}
while (($#)); do
  case "$1" in
    --keys) keys="$2"; shift 2 ;;
    --keys=*) keys="${1#*=}"; shift ;;
    --records) n="$2"; shift 2 ;;
    --records=*) n="${1#*=}"; shift ;;
    --partitions) partitions="$2"; shift 2 ;;
    --partitions=*) partitions="${1#*=}"; shift ;;
    --only) only="$2"; shift 2 ;;
    --only=*) only="${1#*=}"; shift ;;
    --no-restore) restore=0; shift ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2 >&2 ;;
  esac
done
[[ -n "$only" ]] || only="weir-alos,weir-eos,ks-alos,ks-eos,restore,crash,scale"
((restore)) || only="$(tr ',' '\n' <<<"$only" | grep -vxE 'restore|crash|scale' | paste -sd, -)"
for x in ${only//,/ }; do
  [[ "$x" =~ ^(weir-alos|weir-eos|ks-alos|ks-eos|restore|crash|scale)$ ]] ||
    { echo "run.sh: rows are weir-alos, weir-eos, ks-alos, ks-eos, restore, crash, scale; not $x" >&2; exit 2; }
done
[[ -n "$n" ]] || n="$keys"
[[ "$keys" =~ ^[0-9]+$ && "$keys" -gt 0 ]] || die "--keys must be a positive integer"
[[ "$n" =~ ^[0-9]+$ && "$n" -ge "$keys" ]] || die "--records must be an integer >= --keys"
[[ "$partitions" =~ ^[0-9]+$ && "$partitions" -gt 0 ]] || die "--partitions must be a positive integer"
want() { [[ ",$only," == *",$1,"* ]]; }
if want restore || want crash || want scale; then
  want weir-eos || die "restore, crash and scale run on weir-eos's state: --only must include weir-eos"
fi

seed=7
commit_ms=1000
grace_s=86400
state_mb=128
ks_cache=$((partitions * 10000 * 500))
wait_s="${WEIR_BENCH_TIMEOUT:-3600}"
bootstrap="${WEIR_BOOTSTRAP:-127.0.0.1:9092}"
weir_bin="${WEIR_BIN:-$CARGO_TARGET_DIR/debug/weir}"
ks_dir="$ROOT/benches/peer/kafka-streams"
run_id="$(date +%Y%m%d%H%M%S)"
prefix="bigstate-$run_id"
work="${WEIR_BENCH_DIR:-${TMPDIR:-/tmp}/weir-bigstate-$run_id}"
clk_tck="$(getconf CLK_TCK)"

require_tools java javac awk sed grep python3 du
require_weir_and_kafka "$weir_bin"
bench_on_exit "${WEIR_BENCH_KEEP:-0}" "$prefix" "*$prefix*"
mkdir -p "$work"
: >"$work/results"
: >"$work/extra"

javac -nowarn -cp "$KAFKA_LIBS/*" -d "$work/classes" "$here/../broker/BenchTools.java" "$here/BigState.java" \
  2>"$work/javac.log" || { cat "$work/javac.log" >&2; die "BenchTools/BigState did not compile"; }
bench_tool() { java -Xmx256m -XX:+UseSerialGC -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
  -cp "$work/classes:$KAFKA_LIBS/*" BenchTools "$@"; }
# The same in the background ("... &"): exec, so that $! is the JVM's pid
# (stop_pid stops it, not a subshell around it).
bench_tool_bg() { exec java -Xmx256m -XX:+UseSerialGC -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
  -cp "$work/classes:$KAFKA_LIBS/*" BenchTools "$@"; }
big_tool() { # HEAP ARGS...
  local heap="$1"
  shift
  java "-Xmx$heap" -XX:+UseParallelGC -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
    -cp "$work/classes:$KAFKA_LIBS/*" BigState "$@"
}
big_tool_bg() { # HEAP ARGS... (in the background: exec, as bench_tool_bg)
  local heap="$1"
  shift
  exec java "-Xmx$heap" -XX:+UseParallelGC -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
    -cp "$work/classes:$KAFKA_LIBS/*" BigState "$@"
}
# The digest keeps every key's last value: ~1 KiB of heap per key.
digest_heap="$((keys / 1000 + 512))m"

ks_version=""
if want ks-alos || want ks-eos; then
  say "building the Kafka Streams peer (mvn package in $ks_dir)"
  if ! (cd "$ks_dir" && { mvn -q -B -o package >"$work/mvn.log" 2>&1 || mvn -q -B package >"$work/mvn.log" 2>&1; }); then
    tail -n 30 "$work/mvn.log" >&2
    die "Kafka Streams peer did not build (see $work/mvn.log)"
  fi
  ks_version="$(find "$ks_dir/target/lib" -name 'kafka-streams-[0-9]*.jar' | sed -E 's/.*kafka-streams-(.*)\.jar/\1/')"
fi

# "CPU_SECONDS PEAK_RSS_KB" of a live process (its threads included).
proc_usage() {
  local cpu rss
  cpu="$(sed -E 's/^.*\) //' "/proc/$1/stat" | awk -v hz="$clk_tck" '{ printf "%.2f", ($12 + $13) / hz }')"
  rss="$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status")"
  echo "$cpu $rss"
}
end_sum() { # TOPIC: the sum of its end offsets
  kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$bootstrap" --topic "$1" 2>/dev/null |
    awk -F: '{ s += $NF } END { printf "%d\n", s }'
}
changelogs() { kafka_topics_matching "$bootstrap" -E "^$1-.*-changelog\$" | tr ',' ' '; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------
say "work dir $work; topics *$prefix*; weir $weir_bin; bootstrap $bootstrap"
NO_COLOR=1 "$weir_bin" simulate --count 2108 --seed "$seed" --output - 2>"$work/simulate.log" |
  python3 -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["key"] + "\t" + r["value"])' >"$work/templates.tsv" || die "weir simulate --output failed"
start_ms=$((($(date +%s) - 2 * 86400 - 3 * 3600) * 1000))
span_ms=$((23 * 3600 * 1000))
flush_ms=$((start_ms + span_ms + grace_s * 1000 + 2 * 3600 * 1000))
lots=""
# The input of one system: TOPIC created, the N records written (the same
# for every system: BigState gen is deterministic).
preload() { # TOPIC
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$1" \
    --partitions "$partitions" --replication-factor 1 >/dev/null || die "could not create $1"
  local t line
  t="$(now_ms)"
  line="$(big_tool 512m gen "$bootstrap" "$1" "$keys" "$n" "$work/templates.tsv" "$start_ms" "$span_ms" 0 \
    2>"$work/gen.err")" || { tail -n 20 "$work/gen.err" >&2; die "BigState gen failed"; }
  lots="$(awk '{ print $4 }' <<<"$line")"
  [[ "$(end_sum "$1")" == "$n" ]] || die "$1 holds $(end_sum "$1") records, expected $n"
  say "$1: written in $(secs "$t" "$(now_ms)") s: $line"
}
# One sweep of every lot stamped 1 d + 2 h after the data: closes every
# hourly window of the data (and no other) once the input is processed.
flush() { # TOPIC
  big_tool 512m gen "$bootstrap" "$1" 1 0 "$work/templates.tsv" "$start_ms" "$span_ms" "$flush_ms" \
    >"$work/flush.out" 2>"$work/flush.err" || { tail -n 20 "$work/flush.err" >&2; die "the closing sweep failed"; }
}
# Newer records for the restore parts: RECORDS records (keys 0..RECORDS-1,
# then a sweep), stamped after everything before.
batch_no=0
append_batch() { # TOPIC RECORDS
  batch_no=$((batch_no + 1))
  local s=$((flush_ms + batch_no * 600 * 1000))
  big_tool 512m gen "$bootstrap" "$1" "$2" "$2" "$work/templates.tsv" "$s" 300000 $((s + 360000)) \
    >"$work/batch-$batch_no.out" 2>"$work/batch-$batch_no.err" || { tail -n 20 "$work/batch-$batch_no.err" >&2; die "batch $batch_no failed"; }
}

# ---------------------------------------------------------------------------
# The systems
# ---------------------------------------------------------------------------
weir_topology() { # NAME GUARANTEE
  local name="$1" g="$2" app="$prefix-$1"
  mkdir -p "$work/$name"
  parking_topology "$weir_bin" "$app" "$app-in" "$g" "$work/$name/topology.yaml" \
    "s/^commit_interval:.*/commit_interval: ${commit_ms}ms/" "s/partitions: 3\$/partitions: $partitions/" \
    "s/grace: 1m\$/grace: ${grace_s}s/; s/close_idle_after: 2m\$/close_idle_after: ${grace_s}s/" \
    '/^      ttl: 1d$/d' \
    -- "commit_interval: ${commit_ms}ms" "grace: ${grace_s}s" "queryable: true" "emit: on_commit" "key: key" ||
    die "weir's topology for $name"
  ! grep -qE '^ +ttl:' "$work/$name/topology.yaml" || die "$name: the table still has a ttl"
}
# The command line of system NAME (weir-*/ks-*) on state directory DIR;
# KS_TXN true: Kafka Streams with transactional state stores.
CMD=()
system_cmd() { # NAME DIR [KS_TXN]
  local name="$1" dir="$2" app="$prefix-$1"
  case "$name" in
    weir-*) CMD=(env NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$weir_bin" run "$work/$name/topology.yaml"
      --bootstrap "$bootstrap" --state-dir "$dir" --state-memory "${state_mb}MiB") ;;
    ks-*)
      local g=at_least_once
      [[ "$name" == ks-eos ]] && g=exactly_once_v2
      CMD=(java -cp "$ks_dir/target/classes:$ks_dir/target/lib/*" weir.peer.BigStateStreamsApp "$bootstrap" "$app"
        "$app-in" "$app-hourly" "$app-lots" "$app-dlq" "$g" "$grace_s" "$commit_ms" "$dir" "$state_mb" "$ks_cache"
        "${3:-false}") ;;
  esac
}
stop_system() { # NAME PID: weir leaves the group (SIGUSR1), Kafka Streams closes (SIGTERM)
  case "$1" in weir-*) stop_pid "$2" USR1 ;; *) stop_pid "$2" TERM ;; esac
}
# A watcher (BenchTools watch) of GROUP (its input: GROUP-in): FILE gets
# "ready", "input_done", "all_done". Sets WPID.
WPID=""
start_watch() { # GROUP SLACK FILE
  bench_tool_bg watch "$bootstrap" "$1" "$1-in" "$2" 100 "$wait_s" >"$3" 2>"$3.err" </dev/null &
  WPID=$!
  PIDS+=("$WPID")
  wait_line "$3" ready "$WPID" "watcher of $1" >/dev/null || die "watcher of $1 did not start"
}

FAILED=()
throughput_run() { # NAME
  local name="$1" app="$prefix-$1" dir="$work/$1" slack=0 pid line t0 t_in t_all="" usage load
  [[ "$name" == *-eos ]] && slack=1
  mkdir -p "$dir"
  BENCH_GROUPS+=("$app")
  preload "$app-in"
  case "$name" in
    weir-*) weir_topology "$name" "$([[ "$name" == *-eos ]] && echo exactly_once || echo at_least_once)" ;;
    ks-*) kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$app-hourly" \
        --partitions "$partitions" --replication-factor 1 >/dev/null
      kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$app-lots" \
        --partitions "$partitions" --replication-factor 1 >/dev/null
      kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$app-dlq" \
        --partitions "$partitions" --replication-factor 1 >/dev/null ;;
  esac
  system_cmd "$name" "$dir/state"
  start_watch "$app" "$slack" "$dir/watch.out"
  say "$name: ${CMD[*]}"
  load="$(loadavg)"
  t0="$(now_ms)"
  "${CMD[@]}" >"$dir/run.log" 2>&1 </dev/null &
  pid=$!
  PIDS+=("$pid")
  if ! line="$(wait_line "$dir/watch.out" input_done "$pid" "$name")"; then
    tail -n 20 "$dir/run.log" >&2
    stop_pid "$WPID"; stop_pid "$pid"
    FAILED+=("$name"); printf '\n!!!!!!!! %s FAILED (log: %s)\n\n' "$name" "$dir/run.log" >&2
    return 0
  fi
  usage="$(proc_usage "$pid")"
  t_in="${line#input_done }"
  if line="$(wait_line "$dir/watch.out" all_done "$pid" "$name: repartition topic not drained")"; then
    line="${line#all_done }"
    t_all="${line%% *}"
  else
    FAILED+=("$name")
  fi
  stop_pid "$WPID"
  # Unmeasured: close every window, wait until that is processed too.
  flush "$app-in"
  start_watch "$app" "$slack" "$dir/watch-flush.out"
  wait_line "$dir/watch-flush.out" all_done "$pid" "$name: the closing sweep not processed" >/dev/null || FAILED+=("$name")
  stop_pid "$WPID"
  sleep 2
  stop_system "$name" "$pid"
  local bytes
  bytes="$(du -sb "$dir/state" | cut -f1)"
  bench_tool dump "$bootstrap" "$app-hourly" >"$dir/hourly.tsv" 2>"$dir/dump.err" ||
    { FAILED+=("$name"); echo "run.sh: $name: could not read $app-hourly" >&2; }
  line="$(big_tool "$digest_heap" digest "$bootstrap" "$app-lots" "$dir/lots.digest" 2>"$dir/digest.err")" ||
    { cat "$dir/digest.err" >&2; FAILED+=("$name"); line="digest 0 0 -"; }
  local g=at_least_once
  [[ "$name" == weir-eos ]] && g=exactly_once
  [[ "$name" == ks-eos ]] && g=exactly_once_v2
  echo "$name|$g|$(secs "$t0" "$t_in")|${t_all:+$(secs "$t0" "$t_all")}|$usage|$dir/hourly.tsv|$load" >>"$work/results"
  echo "$name $bytes ${line#digest }" >>"$work/extra"
  say "$name: caught up after $(secs "$t0" "$t_in") s (cpu_s rss_kb: $usage); state $bytes bytes; lots ${line#digest }"
  sleep 1
}

for name in weir-alos weir-eos ks-alos ks-eos; do
  want "$name" && throughput_run "$name"
done

# ---------------------------------------------------------------------------
# Restore 1: full restore into an empty state directory
# ---------------------------------------------------------------------------
restore_systems=()
want weir-eos && restore_systems+=(weir-eos)
want ks-eos && restore_systems+=(ks-eos)
: >"$work/restores"
if want restore; then
  for name in "${restore_systems[@]}"; do
    app="$prefix-$name" dir="$work/$name"
    rm -rf "$dir/state"
    append_batch "$app-in" 1000
    system_cmd "$name" "$dir/state"
    start_watch "$app" 1 "$dir/watch-restore.out"
    say "restore: $name from its changelogs into an empty state directory"
    load="$(loadavg)"
    t0="$(now_ms)"
    "${CMD[@]}" >"$dir/restore.log" 2>&1 </dev/null &
    pid=$!
    PIDS+=("$pid")
    if ! line="$(wait_line "$dir/watch-restore.out" input_done "$pid" "$name restore")"; then
      tail -n 20 "$dir/restore.log" >&2
      stop_pid "$WPID"; stop_pid "$pid"; FAILED+=("restore-$name"); continue
    fi
    t1="${line#input_done }"
    usage="$(proc_usage "$pid")"
    stop_pid "$WPID"
    sleep 2
    stop_pid "$pid" TERM # the crash part restarts it on this state directory
    # The system's own view: weir's restore lines, Kafka Streams' REBALANCING -> RUNNING.
    own="-"
    case "$name" in
      weir-*) own="$(awk 'function t(s) { return substr(s, 12, 2) * 3600 + substr(s, 15, 2) * 60 + substr(s, 18, 9) }
        /restoring store from changelog/ && f == "" { f = t($1) } /restore done/ { l = t($1) }
        END { if (f != "" && l != "") { w = l - f; if (w < 0) w += 86400; printf "%.2f", w } else print "-" }' "$dir/restore.log")" ;;
      ks-*) own="$(awk -v t0="$t0" '/-> RUNNING/ { printf "%.2f", ($NF - t0) / 1000; exit }' "$dir/restore.log")" ;;
    esac
    # shellcheck disable=SC2046 # one argument per topic
    fetch="$(big_tool 1g fetch "$bootstrap" $(changelogs "$app") 2>"$dir/fetch.err" | grep '^fetched ')" ||
      { tail -n 20 "$dir/fetch.err" >&2; fetch="fetched 0 0 0"; }
    echo "$name $(secs "$t0" "$t1") ${own:--} ${fetch#fetched } $usage $load $(du -sb "$dir/state" | cut -f1)" >>"$work/restores"
    say "restore $name: $(secs "$t0" "$t1") s to processing (own: ${own:--} s); changelogs $fetch"
  done
fi

# ---------------------------------------------------------------------------
# Restore 2: SIGKILL under exactly-once, restart on the same state directory
# ---------------------------------------------------------------------------
: >"$work/crashes"
crash_run() { # NAME LABEL KS_TXN
  local name="$1" label="$2" txn="$3" app="$prefix-$1" dir="$work/$1" backlog=$((keys / 4)) c0 c_kill t_kill t_re
  ((backlog >= 1000)) || backlog=1000
  append_batch "$app-in" "$backlog"
  system_cmd "$name" "$dir/state" "$txn"
  local log="$dir/offsets-$label.log"
  big_tool_bg 128m offsets "$bootstrap" "$app" 100 "$app-in" >"$log" 2>"$dir/offsets-$label.err" </dev/null &
  local opid=$!
  PIDS+=("$opid")
  wait_line "$log" "[0-9]*" "$opid" "offsets of $app" 60 >/dev/null || die "BigState offsets did not start"
  c0="$(tail -n1 "$log" | python3 "$here/report.py" committed "$app-in")"
  say "crash $label: $name on its state directory, $backlog records of backlog (committed $c0)"
  "${CMD[@]}" >"$dir/crash-$label-1.log" 2>&1 </dev/null &
  local pid=$! deadline=$((SECONDS + wait_s))
  PIDS+=("$pid")
  # A fifth of the backlog committed: SIGKILL.
  while :; do
    c_kill="$(tail -n1 "$log" | python3 "$here/report.py" committed "$app-in")"
    ((c_kill >= c0 + backlog / 5)) && break
    pid_alive "$pid" || { tail -n 20 "$dir/crash-$label-1.log" >&2; FAILED+=("crash-$label"); stop_pid "$opid"; return 0; }
    ((SECONDS < deadline)) || { FAILED+=("crash-$label"); stop_pid "$pid"; stop_pid "$opid"; return 0; }
    sleep 0.1
  done
  t_kill="$(now_ms)"
  stop_pid "$pid" KILL
  # More input (in case the backlog was all committed before the kill, at
  # small sizes), then the restart.
  append_batch "$app-in" 1000
  c_kill="$(tail -n1 "$log" | python3 "$here/report.py" committed "$app-in")"
  t_re="$(now_ms)"
  "${CMD[@]}" >"$dir/crash-$label-2.log" 2>&1 </dev/null &
  pid=$!
  PIDS+=("$pid")
  local t_done="-"
  while :; do
    t_done="$(python3 "$here/report.py" caught-up "$app-in" "$t_re" <"$log")"
    [[ "$t_done" != - ]] && break
    pid_alive "$pid" || { tail -n 20 "$dir/crash-$label-2.log" >&2; FAILED+=("crash-$label"); break; }
    ((SECONDS < deadline)) || { FAILED+=("crash-$label"); break; }
    sleep 0.5
  done
  stop_pid "$opid"
  sleep 1
  stop_pid "$pid" TERM
  local t_proc t_run="-"
  t_proc="$(python3 "$here/report.py" first-above "$app-in" "$c_kill" "$t_re" <"$log")"
  [[ "$name" == ks-* ]] && t_run="$(awk -v t0="$t_re" '/-> RUNNING/ { printf "%.2f", ($NF - t0) / 1000; exit }' "$dir/crash-$label-2.log")"
  local replayed="-"
  [[ "$name" == weir-* ]] && replayed="$(awk '/restore done/ { for (i = 1; i <= NF; i++) if ($i ~ /^records=/) { sub(/^records=/, "", $i); r += $i } } END { print r + 0 }' "$dir/crash-$label-2.log")"
  ms() { awk -v a="$t_re" -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.2f", (b - a) / 1000 }'; }
  echo "$label $name $txn $(secs "$t_kill" "$t_re") $(ms "$t_proc") ${t_run:--} $(ms "$t_done") $replayed $backlog" >>"$work/crashes"
  say "crash $label: processing again $(ms "$t_proc") s after the restart, caught up after $(ms "$t_done") s"
}
if want crash; then
  for name in "${restore_systems[@]}"; do
    case "$name" in
      weir-eos) crash_run weir-eos weir false ;;
      ks-eos) crash_run ks-eos ks-default false; crash_run ks-eos ks-txn true ;;
    esac
  done
fi

# ---------------------------------------------------------------------------
# Restore 3: a second instance joins while the job runs
# ---------------------------------------------------------------------------
: >"$work/scales"
scale_run() { # NAME
  local name="$1" app="$prefix-$1" dir="$work/$1" backlog=$((n / 2))
  ((backlog >= 2000)) || backlog=2000
  append_batch "$app-in" "$backlog"
  local rep="$app-hourly-by-region-repartition" c0 c
  big_tool_bg 128m offsets "$bootstrap" "$app" 100 "$app-in" "$rep" >"$dir/offsets-scale.log" 2>"$dir/offsets-scale.err" </dev/null &
  local opid=$!
  PIDS+=("$opid")
  start_watch "$app" 1 "$dir/watch-scale.out"
  wait_line "$dir/offsets-scale.log" "[0-9]*" "$opid" "offsets of $app" 60 >/dev/null || die "BigState offsets did not start"
  c0="$(tail -n1 "$dir/offsets-scale.log" | python3 "$here/report.py" committed "$app-in")"
  system_cmd "$name" "$dir/state"
  say "scale: $name on its state directory, $backlog records of backlog"
  "${CMD[@]}" >"$dir/scale-1.log" 2>&1 </dev/null &
  local p1=$!
  PIDS+=("$p1")
  # The second instance joins once the first has committed a tenth of the backlog.
  while :; do
    c="$(tail -n1 "$dir/offsets-scale.log" | python3 "$here/report.py" committed "$app-in")"
    ((c >= c0 + backlog / 10)) && break
    pid_alive "$p1" || die "scale: $name exited; see $dir/scale-1.log"
    sleep 0.1
  done
  # weir names the instance after its state directory; Kafka Streams needs its own directory too.
  system_cmd "$name" "$dir/state2"
  local t_join
  t_join="$(now_ms)"
  say "scale: a second $name instance joins (state directory $dir/state2)"
  "${CMD[@]}" >"$dir/scale-2.log" 2>&1 </dev/null &
  local p2=$!
  PIDS+=("$p2")
  local line t_done=""
  if grep -q '^all_done ' "$dir/watch-scale.out"; then
    echo "$name - - - early 0 - -" >>"$work/scales"
    say "scale: $name caught up before the second instance joined (a backlog of $backlog records is too small)"
    stop_pid "$WPID"; stop_pid "$opid"; stop_pid "$p2" TERM; stop_pid "$p1" TERM
    return 0
  fi
  if line="$(wait_line "$dir/watch-scale.out" all_done "$p1" "scale $name")"; then
    line="${line#all_done }"
    t_done="${line%% *}"
  else
    FAILED+=("scale-$name")
    t_done="$(now_ms)"
  fi
  stop_pid "$WPID"
  sleep 1
  stop_pid "$opid"
  stop_pid "$p2" TERM
  stop_pid "$p1" TERM
  local own2="-"
  rm -rf "$dir/state2" # (bench_cleanup deletes */state)
  [[ "$name" == weir-* ]] && own2="$(awk 'function t(s) { return substr(s, 12, 2) * 3600 + substr(s, 15, 2) * 60 + substr(s, 18, 9) }
    /restoring store from changelog/ && f == "" { f = t($1) } /restore done/ { l = t($1) }
    END { if (f != "" && l != "") { w = l - f; if (w < 0) w += 86400; printf "%.2f", w } else print "-" }' "$dir/scale-2.log")"
  python3 "$here/report.py" stalls "$t_join" "$t_done" <"$dir/offsets-scale.log" |
    sed "s/^/$name $own2 $(secs "$t_join" "$t_done") /" >>"$work/scales"
}
if want scale; then
  for name in "${restore_systems[@]}"; do scale_run "$name"; done
fi

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
echo
echo "Big state on the broker at $bootstrap: $keys keys, N=$n records (then, unmeasured, $lots closing the windows), $partitions"
echo "input partitions, commit interval ${commit_ms} ms, one processing thread each, RocksDB memory ${state_mb} MiB each,"
echo "Kafka Streams statestore.cache.max.bytes $ks_cache, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg),"
echo "$(date -u +%Y-%m-%dT%H:%MZ). weir $("$weir_bin" --version 2>/dev/null | head -n1); Kafka Streams ${ks_version:-n/a}; $(java -version 2>&1 | head -n1)."
echo
rc=0
ref="$(awk -F'|' '$1 ~ /^weir-/ { print $1; exit }' "$work/results")"
if [[ -s "$work/results" ]]; then
  python3 "$here/../broker/report.py" --records "$n" --reference "${ref:-weir-alos}" "$work/results" || rc=1
fi
python3 "$here/report.py" report "$work" "$n" "$keys" "$lots" || rc=1
for f in "${FAILED[@]}"; do echo "FAILED: $f (logs in $work)"; rc=1; done
exit "$rc"
