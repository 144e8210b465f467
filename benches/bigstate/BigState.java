import java.io.BufferedWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.*;
import java.util.stream.*;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.*;

/**
 * Helpers of benches/bigstate/run.sh beside BenchTools (compiled with it on Kafka's own jars).
 *
 * <pre>
 * BigState gen BOOTSTRAP TOPIC KEYS RECORDS TEMPLATES START_MS SPAN_MS FLUSH_MS
 *     produces RECORDS records (at least KEYS) to TOPIC (existing; default partitioner, so a key always goes
 *     to the same partition): record i has key number k = i mod KEYS, "LOT@dDDDDD" (LOT the k mod L-th
 *     template's lot, DDDDDD = k / L: a lot x day key space, every key at least once), the value of the
 *     template of that lot from sweep (i / KEYS) mod S (TEMPLATES: "KEY\tJSON" lines, L real-time lots per
 *     sweep, S sweeps) with LAST_UPDATE set to the record's timestamp START_MS + i * SPAN_MS / RECORDS (in KST)
 *     and OCCUPIED_SPOTS drawn from [0, CAPACITY] by i, so values differ from key to key. Then one more sweep
 *     (L records, keyed by the plain lot code) stamped FLUSH_MS (none when FLUSH_MS is 0; RECORDS 0 and FLUSH_MS:
 *     the sweep alone): it closes every hourly window of the data. Prints "produced N lots L sweeps S".
 * BigState digest BOOTSTRAP TOPIC OUT_FILE
 *     reads TOPIC (read_committed, from the beginning to the end offsets), keeps the last value per key,
 *     writes "KEY\tHASH" lines sorted by key to OUT_FILE (HASH: of the value parsed as JSON and written back
 *     with sorted fields, so field order and number spelling do not matter; a tombstone is "null"), and
 *     prints "digest KEYS RECORDS XOR_OF_HASHES".
 * BigState fetch BOOTSTRAP TOPIC...
 *     the fetch-only ceiling of a restore: one read_committed consumer assigned every partition, from the
 *     start until each position reaches the end offset read before it started; prints "fetched RECORDS BYTES
 *     SECONDS" (the same as benches/eos/run.sh's FetchOnly "one").
 * BigState offsets BOOTSTRAP GROUP INTERVAL_MS TOPIC...
 *     until killed, every INTERVAL_MS: "EPOCH_MS TOPIC-P=END/COMMITTED/OWNER ..." for every partition of the
 *     TOPICs (waits until they all exist): END its last stable offset, COMMITTED GROUP's committed offset (-1:
 *     none), OWNER the group.instance.id (else client id/host) of the member it is assigned to ("-": none).
 * </pre>
 */
public class BigState {
    public static void main(String[] a) throws Exception {
        switch (a[0]) {
            case "gen" -> gen(a[1], a[2], Integer.parseInt(a[3]), Long.parseLong(a[4]), a[5], Long.parseLong(a[6]),
                Long.parseLong(a[7]), Long.parseLong(a[8]));
            case "digest" -> digest(a[1], a[2], a[3]);
            case "fetch" -> fetch(a[1], Arrays.copyOfRange(a, 2, a.length));
            case "offsets" -> offsets(a[1], a[2], Long.parseLong(a[3]), Arrays.copyOfRange(a, 4, a.length));
            default -> throw new IllegalArgumentException(a[0]);
        }
    }

    static void gen(String bootstrap, String topic, int keys, long records, String templates, long startMs,
            long spanMs, long flushMs) throws Exception {
        ObjectMapper m = new ObjectMapper();
        // Per lot (in file order), its values over the sweeps; real-time lots only, so every key reaches the table.
        LinkedHashMap<String, List<com.fasterxml.jackson.databind.node.ObjectNode>> byLot = new LinkedHashMap<>();
        for (String line : Files.readAllLines(Path.of(templates), StandardCharsets.UTF_8)) {
            int t = line.indexOf('\t');
            if (t < 0) continue;
            String lot = line.substring(0, t), json = line.substring(t + 1);
            JsonNode v = m.readTree(json);
            if (!"Y".equals(v.path("IS_REALTIME_STATUS_PROVIDED").asText())) continue;
            byLot.computeIfAbsent(lot, x -> new ArrayList<>()).add((com.fasterxml.jackson.databind.node.ObjectNode) v);
        }
        List<String> lots = new ArrayList<>(byLot.keySet());
        int l = lots.size();
        int sweeps = byLot.values().stream().mapToInt(List::size).min().orElse(0);
        if (l == 0 || sweeps == 0) throw new IllegalStateException("no real-time lot in " + templates);
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        p.put("linger.ms", "20");
        p.put("batch.size", "524288");
        p.put("compression.type", "lz4");
        p.put("acks", "1");
        long n = 0;
        try (KafkaProducer<byte[], byte[]> out = new KafkaProducer<>(p)) {
            for (long i = 0; i < records; i++) {
                int k = (int) (i % keys);
                int lot = k % l;
                String key = lots.get(lot) + "@d" + String.format("%06d", k / l);
                long ts = startMs + i * spanMs / records;
                byte[] v = value(m, byLot.get(lots.get(lot)).get((int) ((i / keys) % sweeps)), ts, i);
                out.send(new ProducerRecord<>(topic, null, ts, key.getBytes(StandardCharsets.UTF_8), v));
                n++;
            }
            for (String lot : flushMs > 0 ? lots : List.<String>of()) {
                out.send(new ProducerRecord<>(topic, null, flushMs, lot.getBytes(StandardCharsets.UTF_8),
                    value(m, byLot.get(lot).get(0), flushMs, n)));
                n++;
            }
            out.flush();
        }
        System.out.println("produced " + n + " lots " + l + " sweeps " + sweeps);
    }

    static final java.time.format.DateTimeFormatter KST = java.time.format.DateTimeFormatter
        .ofPattern("yyyy-MM-dd HH:mm:ss").withZone(java.time.ZoneId.of("Asia/Seoul"));

    /** The template with LAST_UPDATE = TS in KST (as the simulator writes it) and OCCUPIED_SPOTS drawn from
     * [0, CAPACITY] by the record's number: each key's value differs, as a real poll's would. */
    static byte[] value(ObjectMapper m, com.fasterxml.jackson.databind.node.ObjectNode t, long ts, long i)
            throws Exception {
        com.fasterxml.jackson.databind.node.ObjectNode v = t.deepCopy();
        v.put("LAST_UPDATE", KST.format(java.time.Instant.ofEpochMilli(ts)));
        long cap = 0;
        try { cap = Long.parseLong(v.path("CAPACITY").asText()); } catch (NumberFormatException e) { cap = 0; }
        long x = hash64(Long.toString(i));
        v.put("OCCUPIED_SPOTS", Long.toString(cap <= 0 ? 0 : Math.floorMod(x, cap + 1)));
        return m.writeValueAsBytes(v);
    }

    static KafkaConsumer<byte[], byte[]> consumer(String bootstrap) {
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("key.deserializer", ByteArrayDeserializer.class.getName());
        c.put("value.deserializer", ByteArrayDeserializer.class.getName());
        c.put("isolation.level", "read_committed");
        c.put("enable.auto.commit", "false");
        c.put("max.poll.records", "10000");
        return new KafkaConsumer<>(c);
    }

    static List<TopicPartition> partitions(KafkaConsumer<?, ?> c, String topic) {
        return c.partitionsFor(topic, Duration.ofSeconds(20)).stream()
            .map(i -> new TopicPartition(topic, i.partition())).collect(Collectors.toList());
    }

    static void digest(String bootstrap, String topic, String outFile) throws Exception {
        ObjectMapper m = new ObjectMapper().configure(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS, true);
        HashMap<String, byte[]> last = new HashMap<>();
        long records = 0;
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
            List<TopicPartition> tps = partitions(c, topic);
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            while (tps.stream().anyMatch(tp -> c.position(tp) < end.get(tp))) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    last.put(new String(r.key(), StandardCharsets.UTF_8), r.value());
                    records++;
                }
            }
        }
        TreeMap<String, Long> hashes = new TreeMap<>();
        long xor = 0;
        for (Map.Entry<String, byte[]> e : last.entrySet()) {
            String canon = "null";
            if (e.getValue() != null) {
                Object v = m.readValue(e.getValue(), Object.class); // maps, then written with sorted keys
                canon = m.writeValueAsString(v);
            }
            long h = hash64(e.getKey() + "\t" + canon);
            hashes.put(e.getKey(), h);
            xor ^= h;
        }
        try (BufferedWriter w = Files.newBufferedWriter(Path.of(outFile), StandardCharsets.UTF_8)) {
            for (Map.Entry<String, Long> e : hashes.entrySet()) {
                w.write(e.getKey());
                w.write('\t');
                w.write(Long.toHexString(e.getValue()));
                w.write('\n');
            }
        }
        System.out.println("digest " + last.size() + " " + records + " " + Long.toHexString(xor));
    }

    /** FNV-1a 64 over the UTF-8 bytes, then a final mix. */
    static long hash64(String s) {
        long h = 0xcbf29ce484222325L;
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            h ^= (b & 0xff);
            h *= 0x100000001b3L;
        }
        h ^= h >>> 33;
        h *= 0xff51afd7ed558ccdL;
        h ^= h >>> 33;
        return h;
    }

    static void fetch(String bootstrap, String[] topics) throws Exception {
        try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (String t : topics) tps.addAll(partitions(c, t));
            c.assign(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            c.seekToBeginning(tps);
            for (TopicPartition tp : tps) c.position(tp);
            long t0 = System.nanoTime(), n = 0, bytes = 0;
            while (tps.stream().anyMatch(tp -> c.position(tp) < end.get(tp))) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(50))) {
                    n++;
                    bytes += (r.key() == null ? 0 : r.key().length) + (r.value() == null ? 0 : r.value().length);
                }
            }
            System.out.printf("fetched %d %d %.3f%n", n, bytes, (System.nanoTime() - t0) / 1e9);
        }
    }

    static void offsets(String bootstrap, String group, long interval, String[] topics) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "20000");
        try (Admin admin = Admin.create(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            while (System.out != null) {
                if (tps.isEmpty()) { // the topics exist (repartition topics: once the job created them)
                    try {
                        admin.describeTopics(List.of(topics)).allTopicNames().get().forEach((name, d) ->
                            d.partitions().forEach(i -> tps.add(new TopicPartition(name, i.partition()))));
                        tps.sort(Comparator.comparing(TopicPartition::toString));
                    } catch (Exception e) {
                        tps.clear();
                        Thread.sleep(interval);
                        continue;
                    }
                }
                Map<TopicPartition, OffsetSpec> q = new HashMap<>();
                for (TopicPartition tp : tps) q.put(tp, OffsetSpec.latest());
                Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends = admin.listOffsets(q,
                    new ListOffsetsOptions(IsolationLevel.READ_COMMITTED)).all().get();
                Map<TopicPartition, OffsetAndMetadata> c = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get();
                Map<TopicPartition, String> owner = new HashMap<>();
                try {
                    ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
                    for (MemberDescription m : d.members()) {
                        String who = m.groupInstanceId().orElse(m.clientId() + "/" + m.host());
                        for (TopicPartition tp : m.assignment().topicPartitions()) owner.put(tp, who.replace(' ', '_'));
                    }
                } catch (Exception e) {
                    // no group yet
                }
                long t = System.currentTimeMillis();
                StringBuilder b = new StringBuilder(Long.toString(t));
                for (TopicPartition tp : tps) {
                    OffsetAndMetadata m = c.get(tp);
                    b.append(' ').append(tp).append('=').append(ends.get(tp).offset()).append('/')
                        .append(m == null ? -1 : m.offset()).append('/').append(owner.getOrDefault(tp, "-"));
                }
                System.out.println(b);
                System.out.flush();
                Thread.sleep(interval);
            }
        }
    }
}
