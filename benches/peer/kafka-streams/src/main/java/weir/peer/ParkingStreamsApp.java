package weir.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The parking job (topology/parking.yaml without free-now-by-region and the hotspot join) as a real {@link KafkaStreams} application against a broker, for
 * benches/broker/run.sh. Same steps as {@link ParkingPeer#build()}: filter real-time, AVAILABLE_SPOTS, dead
 * letters, repartition by region, 1 h tumbling windows with final results only (suppress until the window
 * closes, evaluated on every record, so the last closed windows are emitted too), latest status per lot.
 *
 * <p>Usage: {@code ParkingStreamsApp BOOTSTRAP APPLICATION_ID INPUT HOURLY LOTS DLQ GUARANTEE GRACE_SECONDS
 * COMMIT_INTERVAL_MS STATE_DIR [EMIT]}; GUARANTEE is {@code at_least_once} or {@code exactly_once_v2}; EMIT is
 * {@code final} (the default: the above) or {@code update} (run.sh --latency, weir's {@code emit: on_update}: no
 * suppress, so every update of a window goes out, and the record cache off, {@code statestore.cache.max.bytes=0},
 * so it goes out when it is made and not at the next commit). One stream thread, default RocksDB stores and,
 * with {@code final}, the default record cache. Output topics must exist (created by run.sh); Kafka Streams
 * creates its own repartition and changelog topics. Runs until SIGTERM.
 */
public final class ParkingStreamsApp {
    static Topology build(String in, String hourly, String lots, String dlq, Duration grace, boolean finalOnly) {
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, JsonNode> src = b.stream(in, Consumed.with(Serdes.String(), ParkingPeer.JSON)
            .withName("parking"));
        KStream<String, JsonNode> mapped = src
            .filter((k, v) -> v != null && "Y".equals(ParkingPeer.text(v, "IS_REALTIME_STATUS_PROVIDED")),
                Named.as("realtime-only"))
            .mapValues(ParkingPeer::available, Named.as("available"));
        Map<String, KStream<String, JsonNode>> br = mapped.split(Named.as("available-"))
            .branch((k, v) -> v.has(ParkingPeer.ERR), Branched.as("dlq"))
            .defaultBranch(Branched.as("ok"));
        br.get("available-dlq").to(dlq, Produced.with(Serdes.String(), ParkingPeer.JSON));
        KStream<String, JsonNode> ok = br.get("available-ok");

        KTable<Windowed<String>, ParkingPeer.Agg> windows = ok.groupBy((k, v) -> ParkingPeer.text(v, "REGION_CODE") + ParkingPeer.SEP + ParkingPeer.text(v, "REGION"),
                Grouped.with("hourly-by-region", Serdes.String(), ParkingPeer.JSON))
            .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofHours(1), grace))
            .aggregate(ParkingPeer.Agg::new, (k, v, a) -> {
                a.sum += v.get("AVAILABLE_SPOTS").asLong();
                a.count += 1;
                return a;
            }, Named.as("hourly-by-region-aggregate"),
                Materialized.<String, ParkingPeer.Agg, WindowStore<Bytes, byte[]>>as("hourly-by-region")
                    .withKeySerde(Serdes.String()).withValueSerde(ParkingPeer.AGG));
        if (finalOnly) {
            windows = windows.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded())
                .withName("hourly-by-region-final"));
        }
        windows.toStream(Named.as("hourly-by-region-stream"))
            .map((wk, a) -> {
                String g = wk.key();
                int i = g.indexOf(ParkingPeer.SEP);
                String code = g.substring(0, i);
                String start = ParkingPeer.RFC3339.format(Instant.ofEpochMilli(wk.window().start()));
                ObjectNode o = ParkingPeer.M.createObjectNode();
                o.put("region_code", code);
                o.put("region", g.substring(i + 1));
                o.put("window_start", start);
                o.put("window_end", ParkingPeer.RFC3339.format(Instant.ofEpochMilli(wk.window().end())));
                o.put("avg_available_spots", a.count == 0 ? 0.0 : (double) a.sum / a.count);
                o.put("samples", a.count);
                return KeyValue.pair(code + "@" + start, (JsonNode) o);
            }, Named.as("hourly-by-region-result"))
            .to(hourly, Produced.with(Serdes.String(), ParkingPeer.JSON));

        ok.groupByKey(Grouped.with("latest-per-lot", Serdes.String(), ParkingPeer.JSON))
            .reduce((old, nv) -> ParkingPeer.text(nv, "LAST_UPDATE").compareTo(ParkingPeer.text(old, "LAST_UPDATE")) >= 0
                    ? nv : old,
                Named.as("latest-per-lot-reduce"),
                Materialized.<String, JsonNode, KeyValueStore<Bytes, byte[]>>as("latest-per-lot")
                    .withKeySerde(Serdes.String()).withValueSerde(ParkingPeer.JSON))
            .toStream(Named.as("latest-per-lot-stream"))
            .to(lots, Produced.with(Serdes.String(), ParkingPeer.JSON));
        return b.build();
    }

    public static void main(String[] a) throws Exception {
        if (a.length != 10 && !(a.length == 11 && (a[10].equals("final") || a[10].equals("update")))) {
            System.err.println("usage: ParkingStreamsApp BOOTSTRAP APPLICATION_ID INPUT HOURLY LOTS DLQ GUARANTEE"
                + " GRACE_SECONDS COMMIT_INTERVAL_MS STATE_DIR [final|update]");
            System.exit(2);
        }
        boolean finalOnly = a.length == 10 || a[10].equals("final");
        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a[0]);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a[1]);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a[6]);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(a[8]));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a[9]);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        if (!finalOnly) {
            p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
        }
        Topology t = build(a[2], a[3], a[4], a[5], Duration.ofSeconds(Long.parseLong(a[7])), finalOnly);
        KafkaStreams ks = new KafkaStreams(t, p);
        CountDownLatch done = new CountDownLatch(1);
        ks.setStateListener((nu, old) -> {
            System.out.println("state " + old + " -> " + nu + " " + System.currentTimeMillis());
            if (nu == KafkaStreams.State.ERROR || nu == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            ks.close(Duration.ofSeconds(30));
            done.countDown();
        }));
        ks.start();
        done.await();
    }
}
