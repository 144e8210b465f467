package weir.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.NullNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.function.Supplier;

import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.common.utils.Utils;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.GlobalKTable;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KeyValueMapper;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.ValueJoiner;
import org.apache.kafka.streams.kstream.Joined;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.TimestampedKeyValueStore;
import org.apache.kafka.streams.state.ValueAndTimestamp;
import org.apache.kafka.streams.test.TestRecord;

/**
 * The Kafka Streams side of weir's semantic comparison (tests/kstreams_semantics.rs): each scenario is the
 * Kafka Streams program a user would write for one weir topology of that test, run under
 * TopologyTestDriver, which commits after every record, as {@code weir test} does.
 *
 * <p>Usage: {@code Semantics SCENARIO IN.jsonl}. The input is weir test's input format, one JSON object per
 * line: {@code {"topic","partition","timestamp","key","value"}}, {@code value} the raw payload text or null (a
 * tombstone). Each input partition is its own task (its own driver: its own stores and stream time), fed in
 * file order, as weir test does. Output on stdout, weir test's output format: one line per record written to
 * an output topic, {@code {"topic","partition","timestamp","key","value"}}, {@code value} the parsed JSON
 * (null for a tombstone), {@code partition} where Kafka's producer puts the key in a topic with as many
 * partitions as the input (murmur2, {@code BuiltInPartitioner.partitionForKey}).
 *
 * <p>Record caches are off ({@code statestore.cache.max.bytes=0}), so every update is forwarded, as weir's
 * {@code emit: on_update} tables do.
 *
 * <p>Scenarios (the weir topology of each is in tests/kstreams_semantics.rs):
 * <ul>
 *   <li>{@code newest-by}: weir's {@code table: {key: key, newest_by: value.V}}. Kafka Streams has no such
 *       operator: a Processor API processor over a key-value store, forwarding accepted records only.</li>
 *   <li>{@code ttl}: weir's {@code table: {key: key, ttl: 10s}}. Kafka Streams has no TTL for tables
 *       (KIP-1225): a processor that, after each record, deletes the keys stream time has left ttl behind and
 *       forwards their tombstones, as users write it.</li>
 *   <li>{@code newest-by-ttl}: weir's {@code table: {key: key, newest_by: value.V, ttl: 10s}}: the same
 *       processor ordering by V.</li>
 *   <li>{@code table-agg}: weir's {@code table: {key: key}} then {@code table_aggregate} grouped by
 *       {@code value.G}: a versioned table (KIP-914: an update older than the key's latest is not forwarded,
 *       weir's default {@code newest_by}, the event time), {@code groupBy(...).aggregate(init, add, subtract)}.
 *       </li>
 *   <li>{@code table-agg-2}: the same grouped by {@code value.G} and {@code value.H}.</li>
 *   <li>{@code table-agg-ttl}: the same aggregation over the {@code ttl} processor's output made a table:
 *       an expired key retracts its row.</li>
 *   <li>{@code table-agg-newest-by}, {@code table-agg-newest-by-ttl}: the same aggregation over the
 *       {@code newest-by} and {@code newest-by-ttl} processors' outputs made tables.</li>
 *   <li>{@code join-left}, {@code join-inner}: weir's {@code join} with a global table (topic
 *       {@code regions}): a {@code GlobalKTable}, {@code KStream.leftJoin} / {@code join}.</li>
 *   <li>{@code table-join-left}, {@code table-join-inner} and their {@code -rekeyed} and {@code -ttl} forms:
 *       weir's {@code join} with a table step over topic {@code tab} (co-partitioned: a {@code tab} record
 *       goes to the task of its partition, as an {@code in} record does), see {@link #tableJoin}.</li>
 * </ul>
 */
public final class Semantics {
    static final ObjectMapper M = new ObjectMapper();
    static final String APP = "weir-semantics";
    static final String IN = "in";
    static final String OUT = "out";
    static final String OUT_BY_GROUP = "out-by-group";
    static final Duration TTL = Duration.ofSeconds(10);

    private Semantics() { }

    // ---------------------------------------------------------------- JSON

    static JsonNode parse(String text) {
        try {
            return M.readTree(text);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static JsonNode field(JsonNode v, String name) {
        JsonNode f = v.get(name);
        if (f == null) {
            // weir: an evaluation error, the record goes to the dead-letter topic. Not in the inputs.
            throw new IllegalArgumentException("no field " + name + " in " + v);
        }
        return f;
    }

    // ---------------------------------------------------------------- newest-by

    /**
     * weir's order for {@code newest_by}: numbers by value, text by its bytes (Rust's string order), booleans
     * false before true. Other pairs cannot be compared (weir dead-letters the record; not in the inputs).
     */
    static int compareNewest(JsonNode a, JsonNode b) {
        if (a.isNumber() && b.isNumber()) {
            double x = a.asDouble();
            double y = b.asDouble();
            return x < y ? -1 : x > y ? 1 : 0;
        }
        if (a.isTextual() && b.isTextual()) {
            return Arrays.compareUnsigned(a.textValue().getBytes(StandardCharsets.UTF_8),
                b.textValue().getBytes(StandardCharsets.UTF_8));
        }
        if (a.isBoolean() && b.isBoolean()) {
            return Boolean.compare(a.booleanValue(), b.booleanValue());
        }
        throw new IllegalArgumentException("cannot compare " + a + " with " + b);
    }

    /**
     * Latest value per key by {@code value.V}: a record replaces the stored one when its V is not older (so a
     * tie goes to the later record) and is forwarded; an older one is dropped without output. A null value (a
     * tombstone) deletes the key and is forwarded, as a KTable does (weir dead-letters it instead: the test
     * asserts that difference on its own).
     */
    static final class NewestBy implements Processor<String, String, String, String> {
        private ProcessorContext<String, String> ctx;
        private KeyValueStore<String, String> store;

        @Override
        public void init(ProcessorContext<String, String> context) {
            ctx = context;
            store = context.getStateStore("latest");
        }

        @Override
        public void process(Record<String, String> r) {
            if (r.value() == null) {
                store.delete(r.key());
                ctx.forward(r);
                return;
            }
            String old = store.get(r.key());
            if (old != null && compareNewest(field(parse(r.value()), "V"), field(parse(old), "V")) < 0) {
                return;
            }
            store.put(r.key(), r.value());
            ctx.forward(r);
        }
    }

    static Topology newestBy() {
        Topology t = new Topology();
        t.addSource("s", new StringDeserializer(), new StringDeserializer(), IN);
        t.addProcessor("latest", NewestBy::new, "s");
        t.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore("latest"), Serdes.String(),
            Serdes.String()), "latest");
        t.addSink("latest-to", OUT, new StringSerializer(), new StringSerializer(), "latest");
        return t;
    }

    // ---------------------------------------------------------------- ttl

    /**
     * Latest value per key (by event time: an update older than the key's last one is dropped, ties go to the
     * later record), forgetting keys not updated for {@code ttl} of stream time. This emulates weir's
     * documented {@code ttl} (docs/topology.md, {@code table}), which Kafka Streams does not have (KIP-1225 is
     * under discussion), the way users write it: after each record, every key whose last update is
     * {@code ttl} or more behind stream time ({@code lastUpdate + ttl <= streamTime}) is deleted and its
     * tombstone forwarded with timestamp {@code lastUpdate + ttl}, oldest first, ties in key byte order. The
     * scan runs after the record is stored, so a record already ttl behind goes in and out at once.
     *
     * <p>With {@code newestBy}, that field orders the records instead (as {@link NewestBy}); a key's last
     * update is still the timestamp of its last accepted record.
     */
    static final class TtlTable implements Processor<String, String, String, String> {
        private final long ttlMs;
        private final String newestBy;
        private ProcessorContext<String, String> ctx;
        private TimestampedKeyValueStore<String, String> store;

        TtlTable(Duration ttl) {
            this(ttl, null);
        }

        TtlTable(Duration ttl, String newestBy) {
            this(ttl, newestBy, false);
        }

        /**
         * {@code ttl} null: keys are never forgotten, and a tombstone deletes its key (and is forwarded), as a
         * KTable does. {@code everyRecord}: the expiry also runs after records of other topics of the task (a
         * stream-time punctuation), as weir's runs after every record of the task.
         */
        TtlTable(Duration ttl, String newestBy, boolean everyRecord) {
            this.ttlMs = ttl == null ? -1 : ttl.toMillis();
            this.newestBy = newestBy;
            this.everyRecord = everyRecord;
        }

        private final boolean everyRecord;

        private boolean accepts(Record<String, String> r, ValueAndTimestamp<String> old) {
            if (old == null) {
                return true;
            }
            if (newestBy == null) {
                return r.timestamp() >= old.timestamp();
            }
            return compareNewest(field(parse(r.value()), newestBy), field(parse(old.value()), newestBy)) >= 0;
        }

        @Override
        public void init(ProcessorContext<String, String> context) {
            ctx = context;
            store = context.getStateStore("latest");
            if (everyRecord && ttlMs >= 0) {
                context.schedule(Duration.ofMillis(1), PunctuationType.STREAM_TIME,
                    at -> expire(ctx.currentStreamTimeMs()));
            }
        }

        @Override
        public void process(Record<String, String> r) {
            if (r.value() == null) {
                if (ttlMs >= 0) {
                    throw new IllegalArgumentException("a tombstone: not in the ttl scenarios' inputs");
                }
                store.delete(r.key());
                ctx.forward(r);
                return;
            }
            ValueAndTimestamp<String> old = store.get(r.key());
            if (accepts(r, old)) {
                store.put(r.key(), ValueAndTimestamp.make(r.value(), r.timestamp()));
                ctx.forward(r);
            }
            expire(ctx.currentStreamTimeMs());
        }

        private void expire(long streamTime) {
            if (ttlMs < 0) {
                return;
            }
            List<KeyValue<String, Long>> due = new ArrayList<>();
            try (KeyValueIterator<String, ValueAndTimestamp<String>> it = store.all()) {
                while (it.hasNext()) {
                    KeyValue<String, ValueAndTimestamp<String>> kv = it.next();
                    if (kv.value.timestamp() + ttlMs <= streamTime) {
                        due.add(KeyValue.pair(kv.key, kv.value.timestamp()));
                    }
                }
            }
            due.sort(Comparator.<KeyValue<String, Long>>comparingLong(kv -> kv.value)
                .thenComparing((x, y) -> Arrays.compareUnsigned(x.key.getBytes(StandardCharsets.UTF_8),
                    y.key.getBytes(StandardCharsets.UTF_8))));
            for (KeyValue<String, Long> kv : due) {
                store.delete(kv.key);
                ctx.forward(new Record<String, String>(kv.key, null, kv.value + ttlMs));
            }
        }
    }

    static void addTtlStore(StreamsBuilder b) {
        b.addStateStore(Stores.timestampedKeyValueStoreBuilder(Stores.persistentTimestampedKeyValueStore("latest"),
            Serdes.String(), Serdes.String()));
    }

    static Topology ttl(String newestBy) {
        StreamsBuilder b = new StreamsBuilder();
        addTtlStore(b);
        b.stream(IN, Consumed.with(Serdes.String(), Serdes.String()).withName("s"))
            .process(() -> new TtlTable(TTL, newestBy), Named.as("latest"), "latest")
            .to(OUT, Produced.with(Serdes.String(), Serdes.String()).withName("latest-to"));
        return b.build();
    }

    // ---------------------------------------------------------------- table aggregation

    /**
     * The running aggregate of one group: weir's {@code {total: sum(N), rows: count(), mean: avg(N),
     * n_count: count(N)}}, with the group fields for the output value. {@code total} is the sum of the group's
     * current rows' N: an integer while every one of them is an integer ("sums of integers stay integers",
     * docs/topology.md), else a double; integers and fractions are summed apart so that taking a row back out
     * is exact for the integers.
     */
    static final class Agg {
        public Map<String, JsonNode> groups = new TreeMap<>();
        public long rows;
        public long nCount;
        public long sum;
        public double fractions;
        public long nonIntegers;
        public double meanSum;

        void add(JsonNode n) {
            rows++;
            if (!n.isNull()) {
                number(n);
                nCount++;
                meanSum += n.doubleValue();
                if (n.isIntegralNumber()) {
                    sum += n.longValue();
                } else {
                    fractions += n.doubleValue();
                    nonIntegers++;
                }
            }
        }

        void remove(JsonNode n) {
            rows--;
            if (!n.isNull()) {
                nCount--;
                meanSum -= n.doubleValue();
                if (n.isIntegralNumber()) {
                    sum -= n.longValue();
                } else {
                    fractions -= n.doubleValue();
                    nonIntegers--;
                }
            }
        }

        static void number(JsonNode n) {
            if (!n.isNumber() || n.isBigInteger()) {
                // weir dead-letters a row whose sum or avg argument is not a number. Not in the inputs.
                throw new IllegalArgumentException("N is not a number: " + n);
            }
        }
    }

    static final Serde<Agg> AGG = Serdes.serdeFrom(
        (Serializer<Agg>) (topic, a) -> {
            try {
                return a == null ? null : M.writeValueAsBytes(a);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        },
        (Deserializer<Agg>) (topic, b) -> {
            try {
                return b == null ? null : M.readValue(b, Agg.class);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        });

    /**
     * {@code groupBy} and {@code aggregate} over {@code table}, grouped by the named fields (weir's
     * {@code group_by: {g: value.G, ...}}): output key the group values as text joined by {@code |}, value the
     * group fields then the aggregates. The subtractor returns null when a group has no row left, which deletes
     * it and forwards a tombstone.
     */
    static void aggregate(KTable<String, String> table, List<String[]> groupBy) {
        table
            .groupBy((k, v) -> {
                JsonNode j = parse(v);
                StringBuilder key = new StringBuilder();
                for (String[] g : groupBy) {
                    if (key.length() > 0) {
                        key.append('|');
                    }
                    key.append(field(j, g[1]).asText());
                }
                return KeyValue.pair(key.toString(), v);
            }, Grouped.with("by-group", Serdes.String(), Serdes.String()))
            .aggregate(Agg::new,
                (k, v, agg) -> {
                    JsonNode j = parse(v);
                    for (String[] g : groupBy) {
                        agg.groups.put(g[0], field(j, g[1]));
                    }
                    agg.add(field(j, "N"));
                    return agg;
                },
                (k, v, agg) -> {
                    agg.remove(field(parse(v), "N"));
                    return agg.rows == 0 ? null : agg;
                },
                Named.as("by-group-aggregate"),
                Materialized.<String, Agg, KeyValueStore<Bytes, byte[]>>as("by-group")
                    .withKeySerde(Serdes.String()).withValueSerde(AGG))
            .toStream(Named.as("by-group-stream"))
            .mapValues((k, agg) -> {
                if (agg == null) {
                    return null;
                }
                ObjectNode o = M.createObjectNode();
                for (String[] g : groupBy) {
                    o.set(g[0], agg.groups.get(g[0]));
                }
                if (agg.nonIntegers == 0) {
                    o.put("total", agg.sum);
                } else {
                    o.put("total", agg.sum + agg.fractions);
                }
                o.put("rows", agg.rows);
                if (agg.nCount == 0) {
                    o.putNull("mean");
                } else {
                    o.put("mean", agg.meanSum / agg.nCount);
                }
                o.put("n_count", agg.nCount);
                return o.toString();
            }, Named.as("by-group-value"))
            .to(OUT_BY_GROUP, Produced.with(Serdes.String(), Serdes.String()).withName("by-group-to"));
    }

    /** A table keeping per key the record with the newest timestamp: a versioned store (KIP-914). */
    static KTable<String, String> versionedTable(StreamsBuilder b) {
        return b.table(IN, Consumed.with(Serdes.String(), Serdes.String()).withName("s"),
            Materialized.<String, String>as(Stores.persistentVersionedKeyValueStore("latest",
                    Duration.ofDays(3650)))
                .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()));
    }

    static Topology tableAgg(List<String[]> groupBy) {
        StreamsBuilder b = new StreamsBuilder();
        aggregate(versionedTable(b), groupBy);
        return b.build();
    }

    static Topology tableAggTtl(String newestBy) {
        StreamsBuilder b = new StreamsBuilder();
        addTtlStore(b);
        KTable<String, String> table = b.stream(IN, Consumed.with(Serdes.String(), Serdes.String()).withName("s"))
            .process(() -> new TtlTable(TTL, newestBy), Named.as("latest"), "latest")
            .toTable(Named.as("latest-table"), Materialized.with(Serdes.String(), Serdes.String()));
        aggregate(table, List.<String[]>of(new String[] {"g", "G"}));
        return b.build();
    }

    static Topology tableAggNewestBy() {
        StreamsBuilder b = new StreamsBuilder();
        b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore("latest"), Serdes.String(),
            Serdes.String()));
        KTable<String, String> table = b.stream(IN, Consumed.with(Serdes.String(), Serdes.String()).withName("s"))
            .process(NewestBy::new, Named.as("latest"), "latest")
            .toTable(Named.as("latest-table"), Materialized.with(Serdes.String(), Serdes.String()));
        aggregate(table, List.<String[]>of(new String[] {"g", "G"}));
        return b.build();
    }

    // ---------------------------------------------------------------- join with a global table

    static final String REGIONS = "regions";

    /**
     * weir's {@code join: {global: regions, key: value.R, how: left|inner, fields: {RNAME: name}}}: a
     * {@code GlobalKTable} and {@code KStream.leftJoin}/{@code join} with a key selector; the row's field is set
     * on the record's value ({@code null} where the row lacks it or, left, where there is no row).
     */
    static Topology join(boolean left) {
        StreamsBuilder b = new StreamsBuilder();
        GlobalKTable<String, String> regions = b.globalTable(REGIONS,
            Consumed.with(Serdes.String(), Serdes.String()).withName("regions"));
        KStream<String, String> s = b.stream(IN, Consumed.with(Serdes.String(), Serdes.String()).withName("s"));
        KeyValueMapper<String, String, String> key = (k, v) -> field(parse(v), "R").asText();
        ValueJoiner<String, String, String> joiner = (v, row) -> {
            ObjectNode o = (ObjectNode) parse(v);
            JsonNode name = row == null ? null : parse(row).get("name");
            o.set("RNAME", name == null ? NullNode.getInstance() : name);
            return o.toString();
        };
        KStream<String, String> joined = left
            ? s.leftJoin(regions, key, joiner, Named.as("joined"))
            : s.join(regions, key, joiner, Named.as("joined"));
        joined.to(OUT, Produced.with(Serdes.String(), Serdes.String()).withName("joined-to"));
        return b.build();
    }

    // ---------------------------------------------------------------- join with a table

    static final String TAB = "tab";

    /**
     * weir's {@code table: {key: key, ttl?}} over topic {@code tab}, joined by {@code join: {table: rows, key:
     * key | value.LOT, how: left|inner, fields: {LOT_NAME: name, CAP: capacity}}} from the stream {@code in}:
     * the table is the {@link TtlTable} processor's output made a KTable (weir's table keeps the newest record
     * by event time; a plain {@code builder.table} would take the last to arrive), the stream re-keyed with
     * {@code selectKey} when weir repartitions it, and {@code KStream.join}/{@code leftJoin(KTable)}.
     */
    static Topology tableJoin(boolean left, boolean rekeyed, Duration ttl) {
        StreamsBuilder b = new StreamsBuilder();
        addTtlStore(b);
        KTable<String, String> rows = b.stream(TAB, Consumed.with(Serdes.String(), Serdes.String()).withName("t"))
            .process(() -> new TtlTable(ttl, null, true), Named.as("rows"), "latest")
            .toTable(Named.as("rows-table"), Materialized.with(Serdes.String(), Serdes.String()));
        KStream<String, String> s = b.stream(IN, Consumed.with(Serdes.String(), Serdes.String()).withName("s"));
        if (rekeyed) {
            s = s.selectKey((k, v) -> field(parse(v), "LOT").asText(), Named.as("by-lot"));
        }
        ValueJoiner<String, String, String> joiner = (v, row) -> {
            ObjectNode o = (ObjectNode) parse(v);
            JsonNode r = row == null ? null : parse(row);
            for (String[] f : new String[][] {{"LOT_NAME", "name"}, {"CAP", "capacity"}}) {
                JsonNode x = r == null ? null : r.get(f[1]);
                o.set(f[0], x == null ? NullNode.getInstance() : x);
            }
            return o.toString();
        };
        Joined<String, String, String> joined = Joined.<String, String, String>with(Serdes.String(),
            Serdes.String(), Serdes.String()).withName("joined");
        (left ? s.leftJoin(rows, joiner, joined) : s.join(rows, joiner, joined))
            .to(OUT, Produced.with(Serdes.String(), Serdes.String()).withName("joined-to"));
        return b.build();
    }

    // ---------------------------------------------------------------- driver

    record Scenario(Supplier<Topology> topology, boolean repartitions) { }

    static Scenario scenario(String name) {
        return switch (name) {
            case "newest-by" -> new Scenario(Semantics::newestBy, false);
            case "ttl" -> new Scenario(() -> ttl(null), false);
            case "newest-by-ttl" -> new Scenario(() -> ttl("V"), false);
            case "table-agg" -> new Scenario(() -> tableAgg(List.<String[]>of(new String[] {"g", "G"})), true);
            case "table-agg-2" -> new Scenario(
                () -> tableAgg(List.of(new String[] {"g", "G"}, new String[] {"h", "H"})), true);
            case "table-agg-ttl" -> new Scenario(() -> tableAggTtl(null), true);
            case "table-agg-newest-by-ttl" -> new Scenario(() -> tableAggTtl("V"), true);
            case "join-left" -> new Scenario(() -> join(true), false);
            case "join-inner" -> new Scenario(() -> join(false), false);
            case "table-agg-newest-by" -> new Scenario(Semantics::tableAggNewestBy, true);
            case "table-join-left" -> new Scenario(() -> tableJoin(true, false, null), false);
            case "table-join-inner" -> new Scenario(() -> tableJoin(false, false, null), false);
            case "table-join-left-rekeyed" -> new Scenario(() -> tableJoin(true, true, null), true);
            case "table-join-inner-rekeyed" -> new Scenario(() -> tableJoin(false, true, null), true);
            case "table-join-left-ttl" -> new Scenario(() -> tableJoin(true, false, TTL), false);
            case "table-join-inner-ttl" -> new Scenario(() -> tableJoin(false, false, TTL), false);
            default -> throw new IllegalArgumentException(
                "scenario: newest-by | ttl | newest-by-ttl | table-agg | table-agg-2 | table-agg-ttl"
                    + " | table-agg-newest-by | table-agg-newest-by-ttl | join-left | join-inner"
                    + " | table-join-{left,inner}[-rekeyed|-ttl], not "
                    + name);
        };
    }

    /** One task: a driver with its own state directory, and its output topics. */
    static final class Task implements AutoCloseable {
        final Path stateDir;
        final TopologyTestDriver driver;
        final TestInputTopic<String, String> in;
        final Map<String, TestOutputTopic<String, String>> outs = new TreeMap<>();
        final Map<String, TestInputTopic<String, String>> globals = new TreeMap<>();

        Task(Topology topo) throws IOException {
            stateDir = Files.createTempDirectory("weir-semantics-");
            Properties p = new Properties();
            p.put(StreamsConfig.APPLICATION_ID_CONFIG, APP);
            p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "dummy:9092");
            p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
            // Every update visible, as weir's on_update tables show them.
            p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
            driver = new TopologyTestDriver(topo, p);
            in = driver.createInputTopic(IN, new StringSerializer(), new StringSerializer());
        }

        TestInputTopic<String, String> input(String topic) {
            return topic.equals(IN) ? in
                : globals.computeIfAbsent(topic,
                    t -> driver.createInputTopic(t, new StringSerializer(), new StringSerializer()));
        }

        /** What the driver wrote to output topics (not the internal ones) since the last call. */
        List<String[]> drain() {
            List<String[]> got = new ArrayList<>();
            for (String t : driver.producedTopicNames()) {
                if (t.startsWith(APP + "-")) {
                    continue;
                }
                TestOutputTopic<String, String> out = outs.computeIfAbsent(t,
                    n -> driver.createOutputTopic(n, new StringDeserializer(), new StringDeserializer()));
                for (TestRecord<String, String> r : out.readRecordsToList()) {
                    got.add(new String[] {t, r.key(), r.value(), Long.toString(r.timestamp())});
                }
            }
            return got;
        }

        @Override
        public void close() throws IOException {
            driver.close();
            try (var w = Files.walk(stateDir)) {
                w.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
            }
        }
    }

    static void pipe(Task task, JsonNode r) {
        JsonNode v = r.get("value");
        JsonNode k = r.get("key");
        task.input(r.get("topic").asText()).pipeInput(k == null || k.isNull() ? null : k.asText(),
            v == null || v.isNull() ? null : v.asText(), r.get("timestamp").asLong());
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Semantics SCENARIO IN.jsonl");
            System.exit(2);
        }
        Scenario sc = scenario(args[0]);
        List<JsonNode> input = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[1]), StandardCharsets.UTF_8)) {
            if (!line.isBlank()) {
                input.add(M.readTree(line));
            }
        }
        int partitions = 1;
        for (JsonNode r : input) {
            partitions = Math.max(partitions, r.path("partition").asInt(0) + 1);
            String topic = r.path("topic").asText();
            if (!IN.equals(topic) && !REGIONS.equals(topic) && !TAB.equals(topic)) {
                throw new IllegalArgumentException("input topic must be " + IN + ", " + TAB + " or " + REGIONS
                    + ": " + r);
            }
        }
        if (sc.repartitions() && partitions > 1) {
            // One driver is one task: a groupBy spread over several input partitions would need the
            // repartition topic's tasks, which TopologyTestDriver does not have.
            throw new IllegalArgumentException(args[0] + " takes input on partition 0 only");
        }
        Topology topo = sc.topology().get();
        Map<Integer, Task> tasks = new TreeMap<>();
        BufferedWriter w = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
        try {
            // A global table's records go to every task (each driver holds its own copy, as each Kafka
            // Streams instance does), in input order; a task created later reads those before it.
            List<JsonNode> globalSoFar = new ArrayList<>();
            for (JsonNode r : input) {
                if (REGIONS.equals(r.path("topic").asText())) {
                    for (Task t : tasks.values()) {
                        pipe(t, r);
                        t.drain();
                    }
                    globalSoFar.add(r);
                    continue;
                }
                int partition = r.path("partition").asInt(0);
                Task task = tasks.get(partition);
                if (task == null) {
                    task = new Task(topo);
                    tasks.put(partition, task);
                    for (JsonNode g : globalSoFar) {
                        pipe(task, g);
                    }
                    task.drain();
                }
                pipe(task, r);
                for (String[] o : task.drain()) {
                    ObjectNode line = M.createObjectNode();
                    line.put("topic", o[0]);
                    line.put("partition", o[1] == null ? 0
                        : Utils.toPositive(Utils.murmur2(o[1].getBytes(StandardCharsets.UTF_8))) % partitions);
                    line.put("timestamp", Long.parseLong(o[3]));
                    line.put("key", o[1]);
                    line.set("value", o[2] == null ? NullNode.getInstance() : parse(o[2]));
                    w.write(M.writeValueAsString(line));
                    w.write('\n');
                }
            }
        } finally {
            w.flush();
            for (Task t : tasks.values()) {
                t.close();
            }
        }
    }
}
