import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;
import java.util.*;
import java.util.stream.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Helpers for benches/broker/run.sh, run on Kafka's own jars (compiled by run.sh with javac).
 *
 * <pre>
 * BenchTools watch BOOTSTRAP GROUP INPUT SLACK INTERVAL_MS TIMEOUT_S
 *     prints "ready ..." and then "input_done EPOCH_MS" once GROUP has committed the end offset of every
 *     INPUT partition (polled every INTERVAL_MS by one Admin client; a JVM per poll would cost a core), then
 *     "all_done EPOCH_MS" once every partition of every other topic the group commits (its repartition
 *     topics) is committed up to its end offset less SLACK (1 under exactly-once: the last transaction's
 *     commit marker is never consumed).
 * BenchTools maxts BOOTSTRAP TOPIC
 *     prints the largest record timestamp of TOPIC (epoch ms).
 * BenchTools dump BOOTSTRAP TOPIC
 *     prints every committed record of TOPIC (read_committed, from the beginning to the end offsets) as
 *     "KEY\tVALUE" lines (UTF-8; tabs and newlines inside are not expected in these JSON values).
 * BenchTools count BOOTSTRAP TOPIC
 *     prints how many committed records TOPIC holds (read_committed, from the beginning to the end offsets).
 * BenchTools assigned BOOTSTRAP GROUP INPUT TIMEOUT_S
 *     prints "assigned EPOCH_MS" once GROUP is stable and its members' assignments cover every INPUT partition.
 * BenchTools latency BOOTSTRAP INPUT VALUES RATE SECONDS WARMUP_S DRAIN_S OUTPUT_TOPIC...
 *     end-to-end latency at a fixed offered rate (run.sh --latency). A read_committed consumer is assigned every
 *     partition of the OUTPUT_TOPICs (fresh topics, read from the beginning); then RATE records/s are produced to
 *     INPUT for SECONDS s, cycling through VALUES ("KEY\tJSON" lines, e.g. a few sweeps of `weir simulate`), each
 *     stamped with the wall clock at its send() (the record timestamp, so the job's event time), and, for a
 *     real-time ("Y") lot, its LAST_UPDATE rewritten to that second in KST so every lot's LAST_UPDATE only grows
 *     (the lot table takes every record). Per output record read: now - its timestamp. Records stamped in the
 *     first WARMUP_S s are discarded; "in" = the "Y" records produced after that (each yields one output record
 *     per OUTPUT_TOPIC; for an OUTPUT_TOPIC given as "all:TOPIC", every record produced after that, the "N" ones too:
 *     a passthrough's output), "out" = output records read whose timestamp is in that span. Reading stops when every
 *     topic has all of them, or DRAIN_S s after the last send. Prints "gen ..." and one "result TOPIC ..." line
 *     per topic; a percentile that falls on a record never read prints as "inf". Then, for the log, per topic a
 *     "series" line: per second of input time since the start, "SECOND:COUNT/MEDIAN_MS/MAX_MS".
 * </pre>
 */
public class BenchTools {
    public static void main(String[] a) throws Exception {
        switch (a[0]) {
            case "watch" -> watch(a[1], a[2], a[3], Long.parseLong(a[4]), Long.parseLong(a[5]), Long.parseLong(a[6]));
            case "dump" -> dump(a[1], a[2]);
            case "count" -> count(a[1], a[2]);
            case "maxts" -> maxts(a[1], a[2]);
            case "assigned" -> assigned(a[1], a[2], a[3], Long.parseLong(a[4]));
            case "latency" -> latency(a[1], a[2], a[3], Integer.parseInt(a[4]), Integer.parseInt(a[5]),
                Integer.parseInt(a[6]), Integer.parseInt(a[7]), Arrays.copyOfRange(a, 8, a.length));
            default -> throw new IllegalArgumentException(a[0]);
        }
    }

    static Properties admin(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "20000");
        return p;
    }

    static void watch(String bootstrap, String group, String input, long slack, long interval, long timeoutS)
            throws Exception {
        long deadline = System.currentTimeMillis() + timeoutS * 1000;
        try (Admin admin = Admin.create(admin(bootstrap))) {
            TopicDescription d = admin.describeTopics(List.of(input)).allTopicNames().get().get(input);
            List<TopicPartition> tps = d.partitions().stream().map(i -> new TopicPartition(input, i.partition()))
                .collect(Collectors.toList());
            Map<TopicPartition, OffsetSpec> q = new HashMap<>();
            for (TopicPartition tp : tps) q.put(tp, OffsetSpec.latest());
            Map<TopicPartition, Long> end = new HashMap<>();
            admin.listOffsets(q).all().get().forEach((k, v) -> end.put(k, v.offset()));
            committed(admin, group);
            System.out.println("ready " + System.currentTimeMillis() + " input_end "
                + end.values().stream().mapToLong(Long::longValue).sum());
            long lastProgress = 0;
            while (System.currentTimeMillis() < deadline) {
                Map<TopicPartition, OffsetAndMetadata> c = committed(admin, group);
                long t = System.currentTimeMillis();
                boolean done = true;
                long at = 0;
                for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
                    OffsetAndMetadata m = c.get(e.getKey());
                    long o = m == null ? 0 : m.offset();
                    at += o;
                    if (o < e.getValue()) done = false;
                }
                if (done) {
                    System.out.println("input_done " + t);
                    drained(admin, group, input, slack, interval, deadline);
                    return;
                }
                if (t - lastProgress >= 5000) {
                    System.out.println("progress " + t + " input_committed " + at);
                    lastProgress = t;
                }
                Thread.sleep(interval);
            }
            System.out.println("timeout " + System.currentTimeMillis());
            System.exit(2);
        }
    }

    static void drained(Admin admin, String group, String input, long slack, long interval, long deadline)
            throws Exception {
        while (System.currentTimeMillis() < deadline) {
            Map<TopicPartition, OffsetAndMetadata> c = committed(admin, group);
            long t = System.currentTimeMillis();
            Set<String> topics = c.keySet().stream().map(TopicPartition::topic).filter(x -> !x.equals(input))
                .collect(Collectors.toSet());
            if (!topics.isEmpty()) {
                Map<TopicPartition, OffsetSpec> q = new HashMap<>();
                admin.describeTopics(topics).allTopicNames().get().forEach((name, d) ->
                    d.partitions().forEach(i -> q.put(new TopicPartition(name, i.partition()), OffsetSpec.latest())));
                boolean done = true;
                for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e
                        : admin.listOffsets(q).all().get().entrySet()) {
                    long end = e.getValue().offset();
                    OffsetAndMetadata m = c.get(e.getKey());
                    long at = m == null ? 0 : m.offset();
                    if (end > 0 && at < end - slack) done = false;
                }
                if (done) {
                    System.out.println("all_done " + t + " topics " + topics);
                    return;
                }
            }
            Thread.sleep(interval);
        }
        System.out.println("timeout " + System.currentTimeMillis());
        System.exit(2);
    }

    static void maxts(String bootstrap, String topic) throws Exception {
        try (Admin admin = Admin.create(admin(bootstrap))) {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            Map<TopicPartition, OffsetSpec> q = new HashMap<>();
            d.partitions().forEach(i -> q.put(new TopicPartition(topic, i.partition()), OffsetSpec.maxTimestamp()));
            long max = -1;
            for (ListOffsetsResult.ListOffsetsResultInfo r : admin.listOffsets(q).all().get().values()) {
                max = Math.max(max, r.timestamp());
            }
            System.out.println(max);
        }
    }

    static Map<TopicPartition, OffsetAndMetadata> committed(Admin admin, String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
            .forEach((k, v) -> { if (v != null) out.put(k, v); });
        return out;
    }

    static void dump(String bootstrap, String topic) throws Exception {
        StringBuilder b = new StringBuilder();
        read(bootstrap, topic, r -> {
            b.setLength(0);
            b.append(r.key() == null ? "" : new String(r.key(), StandardCharsets.UTF_8)).append('\t')
                .append(r.value() == null ? "" : new String(r.value(), StandardCharsets.UTF_8));
            System.out.println(b);
        });
    }

    static void count(String bootstrap, String topic) throws Exception {
        long[] n = {0};
        read(bootstrap, topic, r -> n[0]++);
        System.out.println(n[0]);
    }

    /** Every committed record of TOPIC, from the beginning to the end offsets (read_committed), for 2 min at most. */
    static void read(String bootstrap, String topic,
            java.util.function.Consumer<ConsumerRecord<byte[], byte[]>> each) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("isolation.level", "read_committed");
        p.put("enable.auto.commit", "false");
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = c.partitionsFor(topic, Duration.ofSeconds(20)).stream()
                .map(i -> new TopicPartition(topic, i.partition())).collect(Collectors.toList());
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps); // last stable offsets under read_committed
            long deadline = System.currentTimeMillis() + 120_000;
            while (System.currentTimeMillis() < deadline) {
                boolean done = true;
                for (TopicPartition tp : tps) if (c.position(tp) < end.get(tp)) done = false;
                if (done) return;
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) each.accept(r);
            }
            // Not all within 2 min: what was read (the caller's check fails on it).
        }
    }

    static void assigned(String bootstrap, String group, String input, long timeoutS) throws Exception {
        long deadline = System.currentTimeMillis() + timeoutS * 1000;
        try (Admin admin = Admin.create(admin(bootstrap))) {
            int n = admin.describeTopics(List.of(input)).allTopicNames().get().get(input).partitions().size();
            while (System.currentTimeMillis() < deadline) {
                try {
                    ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
                    Set<Integer> got = new HashSet<>();
                    for (MemberDescription m : d.members()) {
                        for (TopicPartition tp : m.assignment().topicPartitions()) {
                            if (tp.topic().equals(input)) got.add(tp.partition());
                        }
                    }
                    if (d.groupState() == GroupState.STABLE && got.size() == n) {
                        System.out.println("assigned " + System.currentTimeMillis());
                        return;
                    }
                } catch (Exception e) {
                    // the group does not exist yet
                }
                Thread.sleep(200);
            }
            System.out.println("timeout " + System.currentTimeMillis());
            System.exit(2);
        }
    }

    /** A growable long[]. */
    static final class Longs {
        long[] a = new long[1 << 16];
        int n;

        void add(long v) {
            if (n == a.length) a = Arrays.copyOf(a, n * 2);
            a[n++] = v;
        }
    }

    static void latency(String bootstrap, String input, String valuesFile, int rate, int seconds, int warmupS,
            int drainS, String[] outArgs) throws Exception {
        String[] outs = new String[outArgs.length];
        boolean[] every = new boolean[outArgs.length]; // every record comes out there, not just the "Y" ones
        for (int i = 0; i < outArgs.length; i++) {
            every[i] = outArgs[i].startsWith("all:");
            outs[i] = every[i] ? outArgs[i].substring(4) : outArgs[i];
        }
        List<byte[]> keys = new ArrayList<>();
        List<String> values = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(valuesFile), StandardCharsets.UTF_8)) {
            int t = line.indexOf('\t');
            if (t < 0) continue;
            keys.add(line.substring(0, t).getBytes(StandardCharsets.UTF_8));
            values.add(line.substring(t + 1));
        }
        if (keys.isEmpty()) throw new IllegalArgumentException("no values in " + valuesFile);
        String marker = "\"LAST_UPDATE\":\"";
        boolean[] realtime = new boolean[values.size()];
        String[] head = new String[values.size()];
        String[] tail = new String[values.size()];
        for (int i = 0; i < values.size(); i++) {
            String v = values.get(i);
            realtime[i] = v.contains("\"IS_REALTIME_STATUS_PROVIDED\":\"Y\"");
            int s = v.indexOf(marker);
            if (realtime[i] && s >= 0) {
                int e = v.indexOf('"', s + marker.length());
                head[i] = v.substring(0, s + marker.length());
                tail[i] = v.substring(e);
            }
        }
        Map<String, Integer> topicIndex = new HashMap<>();
        for (int i = 0; i < outs.length; i++) topicIndex.put(outs[i], i);

        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("isolation.level", "read_committed");
        c.put("enable.auto.commit", "false");
        c.put("fetch.max.wait.ms", "100");
        c.put("key.deserializer", ByteArrayDeserializer.class.getName());
        c.put("value.deserializer", ByteArrayDeserializer.class.getName());
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c);
        List<TopicPartition> tps = new ArrayList<>();
        for (String t : outs) {
            consumer.partitionsFor(t, Duration.ofSeconds(20)).forEach(i -> tps.add(new TopicPartition(t, i.partition())));
        }
        consumer.assign(tps);
        consumer.seekToBeginning(tps);
        for (TopicPartition tp : tps) consumer.position(tp);

        // Written by the generator before it starts / after it ends; read by the reader.
        long[] window = {Long.MAX_VALUE, Long.MAX_VALUE}; // [from, to] record timestamps measured
        Longs[] ts = new Longs[outs.length];
        Longs[] lat = new Longs[outs.length];
        for (int i = 0; i < outs.length; i++) {
            ts[i] = new Longs();
            lat[i] = new Longs();
        }
        AtomicBoolean stop = new AtomicBoolean();
        long[] counted = new long[outs.length]; // guarded by ts
        Thread reader = new Thread(() -> {
            while (!stop.get()) {
                ConsumerRecords<byte[], byte[]> rs = consumer.poll(Duration.ofMillis(100));
                long now = System.currentTimeMillis();
                if (rs.isEmpty()) continue;
                synchronized (ts) {
                    for (ConsumerRecord<byte[], byte[]> r : rs) {
                        int i = topicIndex.get(r.topic());
                        ts[i].add(r.timestamp());
                        lat[i].add(now - r.timestamp());
                        if (r.timestamp() >= window[0] && r.timestamp() <= window[1]) counted[i]++;
                    }
                }
            }
            consumer.close(Duration.ofSeconds(5));
        }, "reader");
        reader.start();
        System.out.println("ready " + System.currentTimeMillis());

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("linger.ms", "0");
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        DateTimeFormatter kst = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss").withZone(ZoneOffset.ofHours(9));
        long total = (long) rate * seconds;
        long sent = 0, inMeasured = 0, allMeasured = 0, maxBehindNs = 0, errors[] = {0};
        long t0ms, t0ns, lastTs = 0;
        String stamp = "";
        long stampSec = -1;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            producer.partitionsFor(input); // metadata before the clock starts
            t0ns = System.nanoTime();
            t0ms = System.currentTimeMillis();
            long cutoff = t0ms + warmupS * 1000L;
            synchronized (ts) {
                window[0] = cutoff;
            }
            Callback cb = (md, e) -> { if (e != null) synchronized (errors) { errors[0]++; } };
            while (sent < total) {
                long now = System.nanoTime();
                long due = Math.min(total, (now - t0ns) * rate / 1_000_000_000L + 1);
                if (due > sent) maxBehindNs = Math.max(maxBehindNs, now - t0ns - (sent * 1_000_000_000L / rate));
                while (sent < due) {
                    int i = (int) (sent % keys.size());
                    long t = System.currentTimeMillis();
                    String v = values.get(i);
                    if (head[i] != null) {
                        if (t / 1000 != stampSec) {
                            stampSec = t / 1000;
                            stamp = kst.format(Instant.ofEpochMilli(t));
                        }
                        v = head[i] + stamp + tail[i];
                    }
                    producer.send(new ProducerRecord<>(input, null, t, keys.get(i), v.getBytes(StandardCharsets.UTF_8)), cb);
                    if (realtime[i] && t >= cutoff) inMeasured++;
                    if (t >= cutoff) allMeasured++;
                    lastTs = t;
                    sent++;
                }
                long next = t0ns + sent * 1_000_000_000L / rate;
                long wait = next - System.nanoTime();
                if (wait > 0) LockSupport.parkNanos(Math.max(wait, 200_000));
            }
            producer.flush();
        }
        long endMs = System.currentTimeMillis();
        synchronized (ts) {
            window[1] = lastTs;
            for (int i = 0; i < outs.length; i++) {
                counted[i] = 0;
                for (int j = 0; j < ts[i].n; j++) if (ts[i].a[j] >= window[0] && ts[i].a[j] <= window[1]) counted[i]++;
            }
        }
        System.out.printf("gen sent %d seconds %.3f rate %.1f in_measured %d warmup_s %d max_behind_ms %.1f errors %d%n",
            sent, (endMs - t0ms) / 1000.0, sent * 1000.0 / Math.max(1, endMs - t0ms), inMeasured, warmupS,
            maxBehindNs / 1e6, errors[0]);
        long[] expected = new long[outs.length];
        for (int i = 0; i < outs.length; i++) expected[i] = every[i] ? allMeasured : inMeasured;
        long drainDeadline = endMs + drainS * 1000L;
        while (System.currentTimeMillis() < drainDeadline) {
            boolean all = true;
            synchronized (ts) {
                for (int i = 0; i < outs.length; i++) if (counted[i] < expected[i]) all = false;
            }
            if (all) break;
            Thread.sleep(20);
        }
        stop.set(true);
        reader.join();
        long stopMs = System.currentTimeMillis();
        // A time series for the log: per second of input time, the count, median and max latency.
        for (int i = 0; i < outs.length; i++) {
            TreeMap<Long, Longs> bySec = new TreeMap<>();
            for (int j = 0; j < ts[i].n; j++) {
                bySec.computeIfAbsent((ts[i].a[j] - t0ms) / 1000, k -> new Longs()).add(lat[i].a[j]);
            }
            StringBuilder b = new StringBuilder("series " + outs[i]);
            bySec.forEach((sec, l) -> {
                long[] v = Arrays.copyOf(l.a, l.n);
                Arrays.sort(v);
                b.append(' ').append(sec).append(':').append(v.length).append('/').append(v[v.length / 2])
                    .append('/').append(v[v.length - 1]);
            });
            System.out.println(b);
        }
        for (int i = 0; i < outs.length; i++) {
            Longs l = new Longs();
            for (int j = 0; j < ts[i].n; j++) if (ts[i].a[j] >= window[0] && ts[i].a[j] <= window[1]) l.add(lat[i].a[j]);
            long[] v = Arrays.copyOf(l.a, l.n);
            Arrays.sort(v);
            long in = expected[i];
            long n = Math.max(in, v.length);
            System.out.printf("result %s in %d out %d p50 %s p99 %s p999 %s max %s read_all %s drained_after_ms %d%n",
                outs[i], in, v.length, pct(v, n, 0.50), pct(v, n, 0.99), pct(v, n, 0.999),
                v.length < in ? "inf" : (v.length == 0 ? "-" : Long.toString(v[v.length - 1])),
                v.length >= in, stopMs - endMs);
        }
    }

    /** The q-quantile (nearest rank) of n latencies of which the sorted v were read, the rest never. */
    static String pct(long[] v, long n, double q) {
        if (n == 0) return "-";
        long rank = (long) Math.ceil(q * n) - 1;
        return rank < v.length ? Long.toString(v[(int) Math.max(0, rank)]) : "inf";
    }
}
