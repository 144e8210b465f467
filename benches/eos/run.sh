#!/usr/bin/env bash
# exactly_once vs at_least_once on the parking job against the real broker,
# same machine, same run, same input; and the cost of a crash under
# exactly_once (changelog tail vs full restore).
#
#   ./dev bench-eos            (builds weir, starts Kafka, then runs this)
#   bash benches/eos/run.sh    (Kafka up and $CARGO_TARGET_DIR/debug/weir built)
#
# 1. Throughput. A fresh 3-partition input topic gets N records of the
#    simulated Seoul feed (seed 7, event time from 36 hours ago). Then, for
#    exactly_once, at_least_once, exactly_once, at_least_once (alternating),
#    `weir run` processes it with a copy of topology/parking.yaml: its own
#    application_id, output and dead-letter topics and --state-dir, `grace: 1d`
#    and `close_idle_after: 1d` so nothing is late and every window stays open
#    in the store. Seconds = from starting the process until the consumer
#    group (= application_id) has committed the end offset of every input
#    partition; records/s = N / seconds, nothing subtracted (process start,
#    topic setup, group join and the first transaction are included). The
#    time until the repartition topic is committed too is shown beside it.
#    Offsets are polled every 100 ms by one small Admin-client program
#    (GroupWatch, written below, run on Kafka's own jars) started before the
#    clock: a kafka-consumer-groups JVM per poll costs ~1 s of one of the two
#    cores, about as long as the run itself.
# 2. Restore. The second exactly_once instance, finished, is killed with
#    SIGKILL and (a) restarted on its state directory: RocksDB holds the
#    changelog offsets it reached, so only the tail is replayed; (b) killed
#    again, its state directory deleted, restarted: the whole changelog is
#    replayed (what Kafka Streams does after every crash under EOS). Records
#    and time come from weir's `restore done` / `task restored` log lines.
#    weir restores a task's stores when its partition is assigned, on a
#    thread of its own; before each restart a small batch of newer records
#    (WEIR_BENCH_EOS_TRIGGER_RECORDS, two sweeps of every lot) is appended
#    to the input topic so the restarted instance also processes.
#
# 3. With WEIR_BENCH_EOS_DISTINCT_KEYS=1 the input's keys are made distinct
#    (the simulated lot code + "#partition:offset", same value, timestamp and
#    partition; copied by the small Rekey program below): the lot table then
#    holds one key per real-time record and its changelog grows with N (a
#    1M-record input gives a table of ~900k keys), which makes the full
#    restore long enough to measure. WEIR_BENCH_EOS_ONLY=restore runs one
#    exactly_once throughput run (the victim) instead of four.
#    WEIR_BENCH_EOS_FULL_RESTORES=K repeats the full restore K times;
#    WEIR_BENCH_EOS_COMPARE_BIN=PATH alternates WEIR_BIN and that binary
#    (e.g. the build before a change) on the same changelog: A B A B ...
#    Each full restore's wall time runs from the first "restoring store" line
#    to the last "restore done" line (the stores restore in parallel, up to
#    weir's restore slots), records/s = records replayed / that. Then the
#    fetch-only ceiling on the same changelogs: FetchOnly (below; Kafka's
#    Java consumer, read_committed, from the start until the position
#    reaches the end offset read before it started, as weir's restore ends)
#    reads them without writing anything, twice with one consumer for every
#    partition and twice with one consumer and thread per partition, all at
#    once (weir restores up to four partitions at once).
#
# Knobs (environment): WEIR_BENCH_EOS_RECORDS (200000),
# WEIR_BENCH_EOS_SESSION_TIMEOUT (10s: a killed instance's partitions move
# after this long; passed to every run alike), WEIR_BENCH_EOS_TIMEOUT (1800 s
# per wait), WEIR_BENCH_EOS_DRAIN_TIMEOUT (300 s: from the input committed to
# the repartition topic committed), WEIR_BENCH_EOS_DIR (work dir: logs,
# state; default under $TMPDIR), WEIR_BENCH_EOS_TRIGGER_RECORDS (1000),
# WEIR_BENCH_EOS_DISTINCT_KEYS (0), WEIR_BENCH_EOS_ONLY (all, or restore),
# WEIR_BENCH_EOS_FULL_RESTORES (1), WEIR_BENCH_EOS_COMPARE_BIN,
# WEIR_BENCH_EOS_KEEP=1 (keep topics and
# state), WEIR_BIN, WEIR_BOOTSTRAP (127.0.0.1:9092).
set -euo pipefail

# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
STOP_WAIT_S=30
n="${WEIR_BENCH_EOS_RECORDS:-200000}"
partitions=3
seed=7
session="${WEIR_BENCH_EOS_SESSION_TIMEOUT:-10s}"
wait_s="${WEIR_BENCH_EOS_TIMEOUT:-1800}"
drain_s="${WEIR_BENCH_EOS_DRAIN_TIMEOUT:-300}"
trigger_n="${WEIR_BENCH_EOS_TRIGGER_RECORDS:-1000}"
distinct="${WEIR_BENCH_EOS_DISTINCT_KEYS:-0}"
only="${WEIR_BENCH_EOS_ONLY:-all}"
full_restores="${WEIR_BENCH_EOS_FULL_RESTORES:-1}"
compare_bin="${WEIR_BENCH_EOS_COMPARE_BIN:-}"
bootstrap="${WEIR_BOOTSTRAP:-127.0.0.1:9092}"
weir_bin="${WEIR_BIN:-$CARGO_TARGET_DIR/debug/weir}"
run_id="$(date +%Y%m%d%H%M%S)"
prefix="bench-eos-$run_id"
work="${WEIR_BENCH_EOS_DIR:-${TMPDIR:-/tmp}/weir-bench-eos-$run_id}"
input="$prefix-status"

require_tools java javac awk sed grep
require_weir_and_kafka "$weir_bin"
[[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || die "WEIR_BENCH_EOS_RECORDS must be a positive integer"
[[ "$only" == all || "$only" == restore ]] || die "WEIR_BENCH_EOS_ONLY must be all or restore"
[[ "$full_restores" =~ ^[0-9]+$ && "$full_restores" -gt 0 ]] || die "WEIR_BENCH_EOS_FULL_RESTORES must be a positive integer"
[[ -z "$compare_bin" || -x "$compare_bin" ]] || die "WEIR_BENCH_EOS_COMPARE_BIN: no executable at $compare_bin"

bench_on_exit "${WEIR_BENCH_EOS_KEEP:-0}" "$prefix-" "$prefix-*"

mkdir -p "$work"

# ---------------------------------------------------------------------------
# GroupWatch: prints "ready", then "input_done <epoch ms>" once the group has
# committed the end offset of every input partition, then "all_done <epoch
# ms>" once the repartition topic is committed too (less SLACK per partition:
# under exactly_once the last transaction's commit marker sits after the last
# record and is never consumed).
# ---------------------------------------------------------------------------
cat >"$work/GroupWatch.java" <<'JAVA'
import java.util.*;
import java.util.stream.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.*;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;

public class GroupWatch {
    // GroupWatch BOOTSTRAP GROUP INPUT_TOPIC REPARTITION_TOPIC SLACK INTERVAL_MS TIMEOUT_S
    public static void main(String[] a) throws Exception {
        String group = a[1], input = a[2], rep = a[3];
        long slack = Long.parseLong(a[4]), interval = Long.parseLong(a[5]);
        long deadline = System.currentTimeMillis() + Long.parseLong(a[6]) * 1000;
        Properties p = new Properties();
        p.put("bootstrap.servers", a[0]);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "20000");
        try (Admin admin = Admin.create(p)) {
            Map<TopicPartition, Long> inEnd = ends(admin, parts(admin, input));
            committed(admin, group); // warm the code path before the clock starts
            System.out.println("ready " + System.currentTimeMillis() + " input_end " + sum(inEnd.values()));
            List<TopicPartition> repParts = null;
            boolean inputDone = false;
            long lastProgress = 0;
            while (System.currentTimeMillis() < deadline) {
                Map<TopicPartition, OffsetAndMetadata> c = committed(admin, group);
                long t = System.currentTimeMillis();
                if (!inputDone && caughtUp(c, inEnd, 0)) {
                    inputDone = true;
                    System.out.println("input_done " + t);
                }
                Map<TopicPartition, Long> repEnd = null;
                if (inputDone) {
                    if (repParts == null) repParts = parts(admin, rep);
                    if (repParts != null) repEnd = ends(admin, repParts);
                    if (repEnd != null && caughtUp(c, repEnd, slack)) {
                        System.out.println("all_done " + t);
                        return;
                    }
                }
                if (t - lastProgress >= 5000) {
                    StringBuilder b = new StringBuilder("progress " + t + " input_committed " + at(c, inEnd.keySet()) + " of " + sum(inEnd.values()));
                    if (repEnd != null) {
                        for (TopicPartition tp : repEnd.keySet()) {
                            b.append(" repartition-" + tp.partition() + " " + at(c, List.of(tp)) + "/" + repEnd.get(tp));
                        }
                    }
                    System.out.println(b);
                    lastProgress = t;
                }
                Thread.sleep(interval);
            }
            System.out.println("timeout " + System.currentTimeMillis());
            System.exit(2);
        }
    }

    static long sum(Collection<Long> v) { return v.stream().mapToLong(Long::longValue).sum(); }

    static long at(Map<TopicPartition, OffsetAndMetadata> c, Collection<TopicPartition> tps) {
        return tps.stream().mapToLong(tp -> c.containsKey(tp) ? c.get(tp).offset() : 0).sum();
    }

    static boolean caughtUp(Map<TopicPartition, OffsetAndMetadata> c, Map<TopicPartition, Long> end, long slack) {
        for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
            OffsetAndMetadata m = c.get(e.getKey());
            long at = m == null ? 0 : m.offset();
            if (at < e.getValue() - slack) return false;
        }
        return true;
    }

    static Map<TopicPartition, OffsetAndMetadata> committed(Admin admin, String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> m = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        m.forEach((k, v) -> { if (v != null) out.put(k, v); });
        return out;
    }

    /** The topic's partitions, or null while it does not exist. */
    static List<TopicPartition> parts(Admin admin, String topic) throws Exception {
        try {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            return d.partitions().stream().map(i -> new TopicPartition(topic, i.partition())).collect(Collectors.toList());
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof UnknownTopicOrPartitionException) return null;
            throw e;
        }
    }

    static Map<TopicPartition, Long> ends(Admin admin, List<TopicPartition> tps) throws Exception {
        Map<TopicPartition, OffsetSpec> q = new HashMap<>();
        for (TopicPartition tp : tps) q.put(tp, OffsetSpec.latest());
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> r =
            admin.listOffsets(q, new ListOffsetsOptions(IsolationLevel.READ_COMMITTED)).all().get();
        Map<TopicPartition, Long> out = new HashMap<>();
        r.forEach((k, v) -> out.put(k, v.offset()));
        return out;
    }
}
JAVA
# ---------------------------------------------------------------------------
# Rekey (WEIR_BENCH_EOS_DISTINCT_KEYS=1): copies FROM to TO, each record to
# its own partition with its timestamp and value, its key made distinct.
# Prints "copied N".
# ---------------------------------------------------------------------------
cat >"$work/Rekey.java" <<'JAVA'
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.*;

public class Rekey {
    // Rekey BOOTSTRAP FROM TO
    public static void main(String[] a) throws Exception {
        Properties c = new Properties();
        c.put("bootstrap.servers", a[0]);
        c.put("key.deserializer", ByteArrayDeserializer.class.getName());
        c.put("value.deserializer", ByteArrayDeserializer.class.getName());
        c.put("max.poll.records", "5000");
        Properties p = new Properties();
        p.put("bootstrap.servers", a[0]);
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        p.put("linger.ms", "20");
        p.put("batch.size", "524288");
        p.put("compression.type", "lz4");
        long n = 0;
        try (KafkaConsumer<byte[], byte[]> in = new KafkaConsumer<>(c); KafkaProducer<byte[], byte[]> out = new KafkaProducer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo i : in.partitionsFor(a[1])) tps.add(new TopicPartition(a[1], i.partition()));
            in.assign(tps);
            in.seekToBeginning(tps);
            Map<TopicPartition, Long> end = in.endOffsets(tps);
            while (tps.stream().anyMatch(tp -> in.position(tp) < end.get(tp))) {
                for (ConsumerRecord<byte[], byte[]> r : in.poll(Duration.ofMillis(500))) {
                    byte[] key = (new String(r.key(), StandardCharsets.UTF_8) + "#" + r.partition() + ":" + r.offset()).getBytes(StandardCharsets.UTF_8);
                    out.send(new ProducerRecord<>(a[2], r.partition(), r.timestamp(), key, r.value()));
                    n++;
                }
            }
            out.flush();
        }
        System.out.println("copied " + n);
    }
}
JAVA

# ---------------------------------------------------------------------------
# FetchOnly: the fetch-only ceiling of a restore. Reads TOPIC... from the
# start, read_committed, every partition assigned, until each position
# reaches the end offset (high watermark) read before it started; prints
# "fetched RECORDS BYTES SECONDS".
# ---------------------------------------------------------------------------
cat >"$work/FetchOnly.java" <<'JAVA'
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.*;

public class FetchOnly {
    // FetchOnly BOOTSTRAP one|each TOPIC...: one consumer for every
    // partition, or one consumer (and thread) per partition, all at once.
    public static void main(String[] a) throws Exception {
        List<TopicPartition> tps = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> c = consumer(a[0])) {
            for (int t = 2; t < a.length; t++)
                for (PartitionInfo i : c.partitionsFor(a[t])) tps.add(new TopicPartition(a[t], i.partition()));
        }
        List<List<TopicPartition>> groups = new ArrayList<>();
        if (a[1].equals("each")) for (TopicPartition tp : tps) groups.add(List.of(tp));
        else groups.add(tps);
        ExecutorService pool = Executors.newFixedThreadPool(groups.size());
        List<KafkaConsumer<byte[], byte[]>> cs = new ArrayList<>();
        List<Map<TopicPartition, Long>> ends = new ArrayList<>();
        for (List<TopicPartition> g : groups) {
            KafkaConsumer<byte[], byte[]> c = consumer(a[0]);
            c.assign(g);
            ends.add(c.endOffsets(g));
            c.seekToBeginning(g);
            for (TopicPartition tp : g) c.position(tp);
            cs.add(c);
        }
        long t0 = System.nanoTime();
        List<Future<long[]>> fs = new ArrayList<>();
        for (int k = 0; k < groups.size(); k++) {
            final int n = k;
            fs.add(pool.submit(() -> read(cs.get(n), groups.get(n), ends.get(n))));
        }
        long records = 0, bytes = 0;
        for (Future<long[]> f : fs) { long[] r = f.get(); records += r[0]; bytes += r[1]; }
        double secs = (System.nanoTime() - t0) / 1e9;
        pool.shutdown();
        for (KafkaConsumer<byte[], byte[]> c : cs) c.close();
        System.out.printf("fetched %d %d %.3f%n", records, bytes, secs);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("key.deserializer", ByteArrayDeserializer.class.getName());
        c.put("value.deserializer", ByteArrayDeserializer.class.getName());
        c.put("isolation.level", "read_committed");
        c.put("max.poll.records", "10000");
        return new KafkaConsumer<>(c);
    }

    static long[] read(KafkaConsumer<byte[], byte[]> in, List<TopicPartition> tps, Map<TopicPartition, Long> end) {
        long n = 0, bytes = 0;
        while (tps.stream().anyMatch(tp -> in.position(tp) < end.get(tp))) {
            for (ConsumerRecord<byte[], byte[]> r : in.poll(Duration.ofMillis(50))) {
                n++;
                bytes += (r.key() == null ? 0 : r.key().length) + (r.value() == null ? 0 : r.value().length);
            }
        }
        return new long[] {n, bytes};
    }
}
JAVA
javac -nowarn -cp "$KAFKA_LIBS/*" -d "$work/classes" "$work/GroupWatch.java" "$work/Rekey.java" "$work/FetchOnly.java" 2>"$work/javac.log" ||
  { cat "$work/javac.log" >&2; die "GroupWatch did not compile"; }

# Sum and count of a topic's end offsets: "SUM PARTITIONS".
end_offsets() {
  kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$bootstrap" --topic "$1" 2>/dev/null |
    awk -F: '{ s += $NF; n++ } END { printf "%d %d\n", s, n }'
}

# The run's topology: topology/parking.yaml with the app's own names
# (parking_topology, benches/lib.sh) and a grace of a day.
write_topology() { # APP GUARANTEE FILE
  parking_topology "$weir_bin" "$1" "$input" "$2" "$3" \
    "s/grace: 1m\$/grace: 1d/" "s/close_idle_after: 2m\$/close_idle_after: 1d/" \
    -- "grace: 1d" "close_idle_after: 1d" || die "weir's topology for $1"
}

run_args=()
if "$weir_bin" run --help 2>/dev/null | grep -q -- '--session-timeout'; then
  run_args+=(--session-timeout "$session")
else
  echo "run.sh: warning: this weir has no 'run --session-timeout' (the exactly-once engine is not in this build); restarts wait for the default session timeout" >&2
fi

WEIR_PID=""
start_weir() { # APP LOG
  local app="$1" log="$2"
  NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$weir_bin" run "$work/$app/parking.yaml" --bootstrap "$bootstrap" \
    --state-dir "$work/$app/state" "${run_args[@]}" >"$log" 2>&1 </dev/null &
  WEIR_PID=$!
  PIDS+=("$WEIR_PID")
}

# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------
say "work dir $work; topics $prefix-*; weir $weir_bin"
say "creating $input ($partitions partitions) and simulating $n records (seed $seed)"
kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$input" \
  --partitions "$partitions" --replication-factor 1 >/dev/null
# 36 hours ago, or earlier when N records (527 lots each polled every 5
# minutes of simulated time) span more than a day and a half: the broker
# refuses timestamps ahead of its clock.
start_h=$((n * 5 / 527 / 60 + 12))
((start_h < 36)) && start_h=36
start="$(date -u -d "-$start_h hours" +%Y-%m-%dT%H:%M:%SZ)"
t="$(now_ms)"
sim_topic="$input"
((distinct)) && sim_topic="$prefix-simulated"
"$weir_bin" simulate --count "$n" --partitions "$partitions" --topic "$sim_topic" --start "$start" --seed "$seed" \
  --bootstrap "$bootstrap" >"$work/simulate.log" 2>&1 || { tail -n 20 "$work/simulate.log" >&2; die "weir simulate failed"; }
if ((distinct)); then
  say "copying $sim_topic to $input with distinct keys"
  java -Xmx512m -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$work/classes:$KAFKA_LIBS/*" \
    Rekey "$bootstrap" "$sim_topic" "$input" >"$work/rekey.out" 2>"$work/rekey.err" </dev/null ||
    { tail -n 20 "$work/rekey.err" >&2; die "Rekey failed"; }
fi
read -r in_sum in_parts < <(end_offsets "$input")
say "simulated in $(secs "$t" "$(now_ms)") s; $input end offsets: $in_sum over $in_parts partitions"
[[ "$in_sum" == "$n" ]] || die "$input holds $in_sum records, expected $n"

# ---------------------------------------------------------------------------
# 1. Throughput
# ---------------------------------------------------------------------------
RESULTS=() # "guarantee run seconds_input seconds_all"
VICTIM=""
throughput_run() { # GUARANTEE RUN CRASH(0/1)
  local g="$1" r="$2" crash="$3" short slack
  case "$g" in exactly_once) short=eos slack=1 ;; *) short=alos slack=0 ;; esac
  local app="$prefix-$short-$r"
  BENCH_GROUPS+=("$app")
  mkdir -p "$work/$app"
  write_topology "$app" "$g" "$work/$app/parking.yaml"
  local watch="$work/$app/watch.out"
  java -Xmx128m -XX:+UseSerialGC -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$work/classes:$KAFKA_LIBS/*" \
    GroupWatch "$bootstrap" "$app" "$input" "$app-hourly-by-region-repartition" "$slack" 100 "$wait_s" \
    >"$watch" 2>"$work/$app/watch.err" </dev/null &
  local wpid=$!
  PIDS+=("$wpid")
  wait_line "$watch" ready "$wpid" "$app watcher" >/dev/null
  say "$g run $r: weir run ($app)"
  local t0 line t_in t_all
  t0="$(now_ms)"
  start_weir "$app" "$work/$app/run.log"
  line="$(wait_line "$watch" input_done "$WEIR_PID" "$app")"
  t_in="${line#input_done }"
  line="$(wait_line "$watch" all_done "$WEIR_PID" "$app: repartition topic not drained" "$drain_s")"
  t_all="${line#all_done }"
  stop_pid "$wpid" TERM
  RESULTS+=("$g $r $(secs "$t0" "$t_in") $(secs "$t0" "$t_all")")
  say "$g run $r: input committed after $(secs "$t0" "$t_in") s, repartition after $(secs "$t0" "$t_all") s"
  if ((crash)); then
    # Finished: two more commit intervals so nothing is left in flight, then
    # the crash.
    sleep 2
    say "SIGKILL $app (pid $WEIR_PID)"
    stop_pid "$WEIR_PID" KILL
    VICTIM="$app"
  else
    stop_pid "$WEIR_PID" TERM
  fi
  sleep 1
}

if [[ "$only" == restore ]]; then
  throughput_run exactly_once 2 1
else
  throughput_run exactly_once 1 0
  throughput_run at_least_once 1 0
  throughput_run exactly_once 2 1
  throughput_run at_least_once 2 0
fi

# ---------------------------------------------------------------------------
# 2. Restore after a crash under exactly_once
# ---------------------------------------------------------------------------
read -r cl_win cl_win_parts < <(end_offsets "$VICTIM-hourly-by-region-changelog")
read -r cl_lot cl_lot_parts < <(end_offsets "$VICTIM-latest-per-lot-changelog")
read -r out_hourly _ < <(end_offsets "$VICTIM-hourly")
stores=$((cl_win_parts + cl_lot_parts))
say "changelog end offsets: $VICTIM-hourly-by-region-changelog $cl_win, $VICTIM-latest-per-lot-changelog $cl_lot ($stores store partitions)"
((stores > 0)) || die "no changelog partitions found for $VICTIM"

RESTORES=() # "label records seconds_sum wall_seconds full_count task_records restore_wall_seconds"
restore_run() { # LABEL MINUTES_AGO SEED [WEIR_BIN]: a trigger batch, then the victim again until every store is restored
  local label="$1" log="$work/$VICTIM/restart-$1.log" t0 t_ready deadline=$((SECONDS + wait_s)) done_n
  local weir_bin="${4:-$weir_bin}"
  "$weir_bin" simulate --count "$trigger_n" --partitions "$partitions" --topic "$input" --seed "$3" \
    --start "$(date -u -d "-$2 minutes" +%Y-%m-%dT%H:%M:%SZ)" --bootstrap "$bootstrap" >"$work/simulate-$label.log" 2>&1 ||
    { tail -n 20 "$work/simulate-$label.log" >&2; die "weir simulate (trigger batch) failed"; }
  t0="$(now_ms)"
  start_weir "$VICTIM" "$log"
  while :; do
    done_n="$(grep -cE 'restore done|nothing to restore' "$log" 2>/dev/null || true)"
    ((done_n >= stores)) && break
    pid_alive "$WEIR_PID" || { tail -n 20 "$log" >&2; die "$VICTIM exited during the $label restore; see $log"; }
    ((SECONDS < deadline)) || die "$label restore: $done_n of $stores stores after ${wait_s}s; see $log"
    sleep 0.05
  done
  t_ready="$(now_ms)"
  sleep 1 # the last 'task restored' line follows its store's 'restore done'
  local stats
  stats="$(awk '
    /restore done/ {
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^records=/) { sub(/^records=/, "", $i); r += $i }
        if ($i ~ /^elapsed_ms=/) { sub(/^elapsed_ms=/, "", $i); ms += $i }
        if ($i == "full=true") f++
      }
    }
    /task restored/ { for (i = 1; i <= NF; i++) if ($i ~ /^records=/) { sub(/^records=/, "", $i); tr += $i } }
    # Wall time of the restores: the first "restoring store" line to the
    # last "restore done" (RFC 3339 timestamps of one day; a midnight in
    # between adds a day).
    function t(s) { return substr(s, 12, 2) * 3600 + substr(s, 15, 2) * 60 + substr(s, 18, 9) }
    /restoring store from changelog/ && first == "" { first = t($1) }
    /restore done/ { last = t($1) }
    END {
      w = (first == "" || last == "") ? 0 : last - first
      if (w < 0) w += 86400
      printf "%d %.3f %d %d %.3f\n", r, ms / 1000, f, tr, w
    }' "$log")"
  local records rsecs full task_records rwall
  read -r records rsecs full task_records rwall <<<"$stats"
  RESTORES+=("$label $records $rsecs $(secs "$t0" "$t_ready") $full $task_records $rwall")
  say "$label restore ($weir_bin): $records records replayed in $rwall s wall ($rsecs s sum of elapsed_ms; $full of $stores stores full; 'task restored' records $task_records); process start to all stores ready $(secs "$t0" "$t_ready") s"
}

say "restart $VICTIM on its state directory (tail restore)"
restore_run tail 40 8
sleep 3
# Full restores: WEIR_BIN, or WEIR_BIN and the compare binary alternately.
full_bins=("$weir_bin")
[[ -n "$compare_bin" ]] && full_bins+=("$compare_bin")
FULL_BINS=() # the binary of each full restore, in order
for ((k = 1; k <= full_restores; k++)); do
  for b in "${full_bins[@]}"; do
    label=full
    ((${#full_bins[@]} > 1 || full_restores > 1)) && label="full-$((${#FULL_BINS[@]} + 1))"
    say "SIGKILL $VICTIM (pid $WEIR_PID), delete $work/$VICTIM/state, restart with $b ($label restore)"
    stop_pid "$WEIR_PID" KILL
    rm -rf "$work/$VICTIM/state"
    FULL_BINS+=("$b")
    restore_run "$label" $((25 - ${#FULL_BINS[@]} % 20)) $((8 + ${#FULL_BINS[@]})) "$b"
    sleep 2
  done
done
stop_pid "$WEIR_PID" TERM

# The fetch-only ceiling on the same changelogs (Kafka's Java consumer
# with its default fetch sizes: fetch.max.bytes 50 MiB,
# max.partition.fetch.bytes 1 MiB).
FETCHES=() # "mode records bytes seconds"
for mode in one each one each; do
  line="$(java -Xmx512m -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$work/classes:$KAFKA_LIBS/*" \
    FetchOnly "$bootstrap" "$mode" "$VICTIM-hourly-by-region-changelog" "$VICTIM-latest-per-lot-changelog" \
    2>"$work/fetch-only.err" </dev/null | grep '^fetched ')" || { tail -n 20 "$work/fetch-only.err" >&2; die "FetchOnly failed"; }
  FETCHES+=("$mode ${line#fetched }")
  say "fetch only ($mode): ${line#fetched } (records bytes seconds)"
done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
echo
echo "weir exactly_once vs at_least_once, parking topology, N=$n records, $partitions input partitions,"
echo "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ). Seconds: process start until the group committed every"
echo "input partition's end offset (nothing subtracted); records/s = N / seconds."
echo
echo "| guarantee | run | seconds (input committed) | records/s | seconds (repartition committed too) |"
echo "|---|---:|---:|---:|---:|"
for row in "${RESULTS[@]}"; do
  read -r g r s s_all <<<"$row"
  printf '| %s | %s | %s | %s | %s |\n' "$g" "$r" "$s" "$(awk -v n="$n" -v s="$s" 'BEGIN { printf "%.0f", n / s }')" "$s_all"
done
[[ "$only" == restore ]] || printf '%s\n' "${RESULTS[@]}" | awk -v n="$n" '
  $1 == "exactly_once" { es += $3; ec++; ea += $4; e[$2] = $3 }
  $1 == "at_least_once" { as += $3; ac++; aa += $4; a[$2] = $3 }
  END {
    printf "| **EOS/ALOS** (records/s, mean seconds) | | %.2f / %.2f s | **%.2f×** | %.2f× |\n",
      es / ec, as / ac, (as / ac) / (es / ec), (aa / ac) / (ea / ec)
    for (r = 1; r in e; r++) if (r in a) printf "| EOS/ALOS run %d | | | %.2f× | |\n", r, a[r] / e[r]
  }'
echo
echo "Restore of $VICTIM after SIGKILL (exactly_once; stores: hourly-by-region window + latest-per-lot table,"
echo "$stores partitions). Changelog end offsets (records + transaction markers): hourly-by-region $cl_win,"
echo "latest-per-lot $cl_lot, total $((cl_win + cl_lot)). Hourly windows closed and emitted before the crash"
echo "(output topic end offsets, records + markers): $out_hourly. Each restart is preceded by $trigger_n new input records"
echo "(so the restarted instance processes after its restore)."
echo
echo "| restore | weir | records replayed | seconds (first restore start → last restore done) | records/s | seconds (sum of restore elapsed_ms) | process start → all stores ready (s) |"
echo "|---|---|---:|---:|---:|---:|---:|"
fi_=0
for row in "${RESTORES[@]}"; do
  read -r label records rsecs wall full task_records rwall <<<"$row"
  bin="$weir_bin"
  case "$label" in
    tail) label="tail (same state dir)" ;;
    full*) bin="${FULL_BINS[$fi_]}"; fi_=$((fi_ + 1)); label="$label (state dir deleted)" ;;
  esac
  rate="$(awk -v r="$records" -v w="$rwall" 'BEGIN { if (w > 0) printf "%.0f", r / w; else printf "-" }')"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$bin" "$records" "$rwall" "$rate" "$rsecs" "$wall"
done
echo "(start → ready includes the group join: the killed member holds its partitions for the session timeout, $session)"
echo
echo "Fetch only (FetchOnly: Kafka's Java consumer, read_committed, default fetch sizes, the same changelogs"
echo "after the restores; one: one consumer for every partition; each: a consumer and thread per partition, all at once):"
echo
echo "| consumers | records | MB (keys + values) | seconds | records/s |"
echo "|---|---:|---:|---:|---:|"
for row in "${FETCHES[@]}"; do
  read -r mode records bytes fsecs <<<"$row"
  printf '| %s | %s | %s | %s | %s |\n' "$mode" "$records" "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')" "$fsecs" \
    "$(awk -v r="$records" -v w="$fsecs" 'BEGIN { printf "%.0f", r / w }')"
done

# Anything odd in weir's logs.
echo
echo "weir log lines at WARN/ERROR (count, message without timestamp), all runs:"
odd="$(for f in "$work"/*/run.log "$work"/*/restart-*.log; do
  [[ -f "$f" ]] || continue
  { grep -E '\b(WARN|ERROR)\b' "$f" || true; } | sed -E 's/^[0-9TZ:.+-]+ +//; s/[0-9]{4,}/N/g' |
    sed "s|^|$(basename "$(dirname "$f")")/$(basename "$f"): |"
done | sed -E "s/$prefix-//g" | sort | uniq -c | sort -rn | head -40)" || true
if [[ -n "$odd" ]]; then echo "$odd"; else echo "  none"; fi
aborts="$(cat "$work"/*/run.log "$work"/*/restart-*.log 2>/dev/null | grep -ci 'abort')" || true
echo "lines mentioning 'abort': $aborts"
echo "logs: $work"
