package weir.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.EmitStrategy;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.BuiltInDslStoreSuppliers;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Kafka Streams equivalent of weir's topology/parking.yaml (without its free-now-by-region step and hotspot join), driven by
 * TopologyTestDriver (no broker) on the same records as weir's
 * benches/engine.rs and benches/peer/weir_peer.rs.
 *
 * <p>Usage: {@code ParkingPeer POLL.jsonl [mode] [records] [runs] [warmups] [warmupRecords]}, mode one of
 * {@code rocksdb} (Kafka Streams defaults: RocksDB stores, 10 MB record cache), {@code rocksdb-noflush} (the
 * same, but store flushes on commit are skipped: see {@link NoFlushRocksDBSuppliers}), {@code inmem} (in-memory
 * stores via {@code dsl.store.suppliers.class}, default cache) or {@code inmem-nocache} (in-memory stores,
 * {@code statestore.cache.max.bytes=0}) or {@code floor} (the driver alone: see {@link #buildFloor()}).
 */
public final class ParkingPeer {
    static final ObjectMapper M = new ObjectMapper();
    static final long BASE_TS = 1_742_448_360_000L;
    static final String APP = "parking-hourly";
    static final String IN = "parking_status";
    static final String HOURLY = "parking_hourly_avg";
    static final String LOT = "parking_lot_status";
    static final String DLQ = "parking_status_dlq";
    static final String ERR = "__weir_peer_error";
    static final ZoneId SEOUL = ZoneId.of("Asia/Seoul");
    static final DateTimeFormatter RFC3339 = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ssXXX").withZone(SEOUL);
    static final char SEP = '\u001f';
    /**
     * State directory root. TopologyTestDriver commits and writes the task checkpoint file (with fsync)
     * after every record, which on a disk makes the run I/O-bound; run.sh points this at tmpfs
     * (/dev/shm) so the measurement is CPU work, as a production commit interval would make it.
     */
    static final Path STATE_ROOT = Path.of(System.getProperty("weir.peer.stateRoot",
        System.getProperty("java.io.tmpdir")));

    // ---------------------------------------------------------------- serdes

    static final Serde<JsonNode> JSON = Serdes.serdeFrom(
        (Serializer<JsonNode>) (topic, v) -> {
            if (v == null) {
                return null;
            }
            try {
                return M.writeValueAsBytes(v);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        },
        (Deserializer<JsonNode>) (topic, b) -> {
            if (b == null) {
                return null;
            }
            try {
                return M.readTree(b);
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        });

    /** Running (sum, count, newest timestamp) of one window. */
    static final class Agg {
        long sum;
        long count;
    }

    static final Serde<Agg> AGG = Serdes.serdeFrom(
        (Serializer<Agg>) (topic, a) -> a == null ? null
            : ByteBuffer.allocate(16).putLong(a.sum).putLong(a.count).array(),
        (Deserializer<Agg>) (topic, b) -> {
            if (b == null) {
                return null;
            }
            ByteBuffer bb = ByteBuffer.wrap(b);
            Agg a = new Agg();
            a.sum = bb.getLong();
            a.count = bb.getLong();
            return a;
        });

    // ---------------------------------------------------------------- topology

    /** weir's num(value, "FIELD", 0): missing, null or blank → 0; other text must parse. */
    static double num(JsonNode v, String field) {
        JsonNode f = v.get(field);
        if (f == null || f.isNull()) {
            return 0;
        }
        if (f.isNumber()) {
            return f.asDouble();
        }
        String s = f.asText().trim();
        if (s.isEmpty()) {
            return 0;
        }
        return Double.parseDouble(s); // NumberFormatException → dead letter
    }

    static JsonNode available(JsonNode v) {
        ObjectNode o = (ObjectNode) v;
        try {
            double a = Math.max(num(v, "CAPACITY") - num(v, "OCCUPIED_SPOTS"), 0);
            o.put("AVAILABLE_SPOTS", (long) a);
        } catch (NumberFormatException e) {
            o.put(ERR, "not a number");
        }
        return o;
    }

    static String text(JsonNode v, String field) {
        JsonNode f = v.get(field);
        return f == null || f.isNull() ? "" : f.asText();
    }

    static Topology build() {
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, JsonNode> src = b.stream(IN, Consumed.with(Serdes.String(), JSON).withName("parking"));
        KStream<String, JsonNode> mapped = src
            .filter((k, v) -> "Y".equals(text(v, "IS_REALTIME_STATUS_PROVIDED")), Named.as("realtime-only"))
            .mapValues(ParkingPeer::available, Named.as("available"));
        Map<String, KStream<String, JsonNode>> br = mapped.split(Named.as("available-"))
            .branch((k, v) -> v.has(ERR), Branched.as("dlq"))
            .defaultBranch(Branched.as("ok"));
        br.get("available-dlq").to(DLQ, Produced.with(Serdes.String(), JSON));
        KStream<String, JsonNode> ok = br.get("available-ok");

        // Branch 1: hourly average of available spots per region.
        ok.groupBy((k, v) -> text(v, "REGION_CODE") + SEP + text(v, "REGION"),
                Grouped.with("hourly-by-region", Serdes.String(), JSON))
            .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofHours(1), Duration.ofMinutes(1)))
            .emitStrategy(EmitStrategy.onWindowClose())
            .aggregate(Agg::new, (k, v, a) -> {
                a.sum += v.get("AVAILABLE_SPOTS").asLong();
                a.count += 1;
                return a;
            }, Named.as("hourly-by-region-aggregate"),
                Materialized.<String, Agg, WindowStore<Bytes, byte[]>>as("hourly-by-region")
                    .withKeySerde(Serdes.String()).withValueSerde(AGG))
            .toStream(Named.as("hourly-by-region-stream"))
            .map((wk, a) -> {
                String g = wk.key();
                int i = g.indexOf(SEP);
                String code = g.substring(0, i);
                String start = RFC3339.format(Instant.ofEpochMilli(wk.window().start()));
                ObjectNode o = M.createObjectNode();
                o.put("region_code", code);
                o.put("region", g.substring(i + 1));
                o.put("window_start", start);
                o.put("window_end", RFC3339.format(Instant.ofEpochMilli(wk.window().end())));
                o.put("avg_available_spots", a.count == 0 ? 0.0 : (double) a.sum / a.count);
                o.put("samples", a.count);
                return KeyValue.pair(code + "@" + start, (JsonNode) o);
            }, Named.as("hourly-by-region-result"))
            .to(HOURLY, Produced.with(Serdes.String(), JSON));

        // Branch 2: latest status per lot (newest LAST_UPDATE wins; ties go to the later record).
        ok.groupByKey(Grouped.with("latest-per-lot", Serdes.String(), JSON))
            .reduce((old, nv) -> text(nv, "LAST_UPDATE").compareTo(text(old, "LAST_UPDATE")) >= 0 ? nv : old,
                Named.as("latest-per-lot-reduce"),
                Materialized.<String, JsonNode, KeyValueStore<Bytes, byte[]>>as("latest-per-lot")
                    .withKeySerde(Serdes.String()).withValueSerde(JSON))
            .toStream(Named.as("latest-per-lot-stream"))
            .to(LOT, Produced.with(Serdes.String(), JSON));
        return b.build();
    }

    /**
     * The driver's own cost: source → repartition topic → sink, no state, no JSON. Per input record it goes
     * through the same two pipe/process/commit cycles as the parking topology (which repartitions every
     * record), so (parking time − floor time) estimates the time spent in the processors themselves.
     */
    static Topology buildFloor() {
        StreamsBuilder b = new StreamsBuilder();
        b.stream(IN, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()).withName("parking"))
            .repartition(Repartitioned.<byte[], byte[]>as("floor").withKeySerde(Serdes.ByteArray())
                .withValueSerde(Serdes.ByteArray()))
            .to(LOT, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        return b.build();
    }

    // ---------------------------------------------------------------- input

    /** Same records as weir's benches/engine.rs: every one real-time, empty LAST_UPDATE filled. */
    static List<byte[][]> records(Path poll) throws IOException {
        List<byte[][]> out = new ArrayList<>();
        for (String line : Files.readAllLines(poll, StandardCharsets.UTF_8)) {
            JsonNode v;
            try {
                v = M.readTree(line);
            } catch (IOException e) {
                continue;
            }
            if (v == null || !v.isObject() || !text(v, "REGION_CODE").startsWith("POI")) {
                continue;
            }
            ObjectNode o = (ObjectNode) v;
            o.put("IS_REALTIME_STATUS_PROVIDED", "Y");
            if (text(o, "LAST_UPDATE").isEmpty()) {
                o.put("LAST_UPDATE", "2025-03-20 14:26:00");
            }
            out.add(new byte[][] {
                text(o, "PARKING_CODE").getBytes(StandardCharsets.UTF_8), M.writeValueAsBytes(o)});
        }
        return out;
    }

    // ---------------------------------------------------------------- driver

    static Properties props(String mode, Path stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, APP);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "dummy:9092");
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
        // TopologyTestDriver already sets this (putIfAbsent); the default (1 s of wall clock, which the
        // driver mocks and never advances) would emit closed windows only once.
        p.put(StreamsConfig.InternalConfig.EMIT_INTERVAL_MS_KSTREAMS_WINDOWED_AGGREGATION, 0L);
        switch (mode) {
            case "rocksdb", "floor" -> { }
            case "rocksdb-noflush" -> p.put(StreamsConfig.DSL_STORE_SUPPLIERS_CLASS_CONFIG,
                NoFlushRocksDBSuppliers.class);
            case "inmem" -> p.put(StreamsConfig.DSL_STORE_SUPPLIERS_CLASS_CONFIG,
                BuiltInDslStoreSuppliers.InMemoryDslStoreSuppliers.class);
            case "inmem-nocache" -> {
                p.put(StreamsConfig.DSL_STORE_SUPPLIERS_CLASS_CONFIG,
                    BuiltInDslStoreSuppliers.InMemoryDslStoreSuppliers.class);
                p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
            }
            default -> throw new IllegalArgumentException(
                "mode: rocksdb | rocksdb-noflush | inmem | inmem-nocache | floor, not " + mode);
        }
        return p;
    }

    static final class Counts {
        final TreeMap<String, Long> perTopic = new TreeMap<>();
        long samples;
        double avgSum;
    }

    /** Read (and so free) everything the driver captured: outputs, repartition and changelog records. */
    static void drain(TopologyTestDriver d, Map<String, TestOutputTopic<byte[], byte[]>> topics, Counts c)
            throws IOException {
        for (String t : d.producedTopicNames()) {
            TestOutputTopic<byte[], byte[]> out = topics.computeIfAbsent(t,
                n -> d.createOutputTopic(n, new ByteArrayDeserializer(), new ByteArrayDeserializer()));
            if (out.isEmpty()) {
                continue;
            }
            List<byte[]> vals = out.readValuesToList();
            c.perTopic.merge(t, (long) vals.size(), Long::sum);
            if (t.equals(HOURLY)) {
                for (byte[] v : vals) {
                    JsonNode j = M.readTree(v);
                    c.samples += j.get("samples").asLong();
                    c.avgSum += j.get("avg_available_spots").asDouble();
                }
            }
        }
    }

    record Run(double seconds, Counts counts, String stores, long heapLiveMb) { }

    static Run run(Topology topo, String mode, List<byte[][]> recs, int n, boolean inspect) throws IOException {
        Path dir = Files.createTempDirectory(STATE_ROOT, "weir-peer-ks-");
        try (TopologyTestDriver d = new TopologyTestDriver(topo, props(mode, dir))) {
            TestInputTopic<byte[], byte[]> in = d.createInputTopic(IN, new ByteArraySerializer(),
                new ByteArraySerializer());
            Map<String, TestOutputTopic<byte[], byte[]>> topics = new HashMap<>();
            Counts c = new Counts();
            long t0 = System.nanoTime();
            for (int i = 0; i < n; i++) {
                byte[][] r = recs.get(i % recs.size());
                in.pipeInput(r[0], r[1], BASE_TS + i * 1000L);
                if ((i & 1023) == 1023) {
                    drain(d, topics, c);
                }
            }
            drain(d, topics, c);
            double s = (System.nanoTime() - t0) / 1e9;
            String stores = "";
            long live = -1;
            if (inspect && !mode.equals("floor")) {
                stores = "hourly-by-region=" + d.getTimestampedWindowStore("hourly-by-region").getClass().getSimpleName()
                    + ",latest-per-lot=" + d.getTimestampedKeyValueStore("latest-per-lot").getClass().getSimpleName();
                System.gc();
                Runtime rt = Runtime.getRuntime();
                live = (rt.totalMemory() - rt.freeMemory()) >> 20;
            }
            return new Run(s, c, stores, live);
        } finally {
            deleteTree(dir);
        }
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var w = Files.walk(p)) {
            w.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
    }

    static long vmHwmMb() throws IOException {
        for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (l.startsWith("VmHWM:")) {
                return Long.parseLong(l.replaceAll("[^0-9]", "")) >> 10;
            }
        }
        return -1;
    }

    static long heapPeakMb() {
        long sum = 0;
        for (MemoryPoolMXBean p : ManagementFactory.getMemoryPoolMXBeans()) {
            if (p.getType() == MemoryType.HEAP && p.getPeakUsage() != null) {
                sum += p.getPeakUsage().getUsed();
            }
        }
        return sum >> 20;
    }

    public static void main(String[] args) throws Exception {
        Path poll = Path.of(args.length > 0 ? args[0] : "data/citydata_parking_poll.jsonl");
        String mode = args.length > 1 ? args[1] : "rocksdb";
        int n = args.length > 2 ? Integer.parseInt(args[2]) : 100_000;
        int runs = args.length > 3 ? Integer.parseInt(args[3]) : 5;
        int warmups = args.length > 4 ? Integer.parseInt(args[4]) : 3;
        int warmN = args.length > 5 ? Integer.parseInt(args[5]) : 20_000;

        List<byte[][]> recs = records(poll);
        long inputBytes = 0;
        for (byte[][] r : recs) {
            inputBytes += r[0].length + r[1].length;
        }
        Topology topo = mode.equals("floor") ? buildFloor() : build();
        for (int i = 0; i < warmups; i++) {
            run(topo, mode, recs, warmN, false);
        }
        double[] rates = new double[runs];
        Run last = null;
        for (int i = 0; i < runs; i++) {
            last = run(topo, mode, recs, n, i == runs - 1);
            rates[i] = n / last.seconds();
        }
        Arrays.sort(rates);
        double median = runs % 2 == 1 ? rates[runs / 2] : (rates[runs / 2 - 1] + rates[runs / 2]) / 2;
        Counts c = last.counts();
        String internal = c.perTopic.entrySet().stream()
            .filter(e -> e.getKey().startsWith(APP + "-"))
            .map(e -> e.getKey().substring(APP.length() + 1) + "=" + e.getValue())
            .reduce((a, b) -> a + "," + b).orElse("");
        System.out.printf("kafka-streams-check mode=%s records=%d poll_records=%d poll_bytes=%d hourly=%d lot=%d dlq=%d"
                + " hourly_samples=%d hourly_avg_sum=%.4f internal=%s stores=%s%n",
            mode, n, recs.size(), inputBytes, c.perTopic.getOrDefault(HOURLY, 0L),
            c.perTopic.getOrDefault(LOT, 0L), c.perTopic.getOrDefault(DLQ, 0L), c.samples, c.avgSum, internal,
            last.stores());
        System.out.printf("kafka-streams mode=%s records=%d runs=%d records_per_sec=%.0f min=%.0f max=%.0f"
                + " heap_used_mb=%d heap_peak_mb=%d peak_rss_mb=%d cpus=%d%n",
            mode, n, runs, median, rates[0], rates[runs - 1], last.heapLiveMb(), heapPeakMb(), vmHwmMb(),
            Runtime.getRuntime().availableProcessors());
    }
}
