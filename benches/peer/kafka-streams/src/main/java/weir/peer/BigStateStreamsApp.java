package weir.peer;

import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.RocksDBConfigSetter;
import org.rocksdb.BlockBasedTableConfig;
import org.rocksdb.Cache;
import org.rocksdb.LRUCache;
import org.rocksdb.Options;
import org.rocksdb.WriteBufferManager;

/**
 * The big-state bench's Kafka Streams side (benches/bigstate/run.sh): {@link ParkingStreamsApp}'s topology
 * (final hourly windows per region, the latest status per key in a RocksDB key-value store that keeps the whole
 * record, as {@code toTable}/{@code reduce} with {@code Materialized.as}) on weir's memory settings:
 *
 * <ul>
 *   <li>RocksDB bounded as weir's {@code --state-memory} (Kafka Streams' documented
 *       {@code BoundedMemoryRocksDBConfig}): one LRU block cache of STATE_MEMORY_MB shared by every store of
 *       the instance, index and filter blocks cached in it at high priority, the memtables charged to it
 *       through one write buffer manager of half its size, 4 MiB memtables (weir's);</li>
 *   <li>the record cache, {@code statestore.cache.max.bytes}, CACHE_BYTES (weir's table holds at most 10,000
 *       keys per task between commits; run.sh says what it passes).</li>
 * </ul>
 *
 * <p>Usage: {@code BigStateStreamsApp BOOTSTRAP APPLICATION_ID INPUT HOURLY LOTS DLQ GUARANTEE GRACE_SECONDS
 * COMMIT_INTERVAL_MS STATE_DIR STATE_MEMORY_MB CACHE_BYTES TRANSACTIONAL_STORES}; TRANSACTIONAL_STORES
 * {@code true} sets {@code enable.transactional.statestores} (KIP-892, Kafka Streams 4.4: under exactly-once a
 * crashed instance keeps its state instead of wiping it). One stream thread. Prints "state OLD -> NEW
 * EPOCH_MS" on each state change. A static member of its group (group.instance.id APPLICATION_ID-hash of
 * STATE_DIR), as weir is by default: a restart on the same state directory gets its tasks back at once instead
 * of waiting for the session timeout. Runs until SIGTERM.
 */
public final class BigStateStreamsApp {
    /** weir's --state-memory for Kafka Streams, shared by every store of the process. */
    public static final class BoundedMemory implements RocksDBConfigSetter {
        static final long BYTES = Long.getLong("weir.state.memory.mb", 128L) << 20;
        static final Cache CACHE = new LRUCache(BYTES, -1, false, 0.1);
        static final WriteBufferManager WBM = new WriteBufferManager(BYTES / 2, CACHE);

        @Override
        public void setConfig(String storeName, Options options, Map<String, Object> configs) {
            BlockBasedTableConfig t = (BlockBasedTableConfig) options.tableFormatConfig();
            t.setBlockCache(CACHE);
            t.setCacheIndexAndFilterBlocks(true);
            t.setCacheIndexAndFilterBlocksWithHighPriority(true);
            t.setPinTopLevelIndexAndFilter(true);
            options.setWriteBufferManager(WBM);
            options.setWriteBufferSize(4L << 20);
            options.setTableFormatConfig(t);
        }

        @Override
        public void close(String storeName, Options options) {
            // the cache and the write buffer manager are shared: never closed
        }
    }

    public static void main(String[] a) throws Exception {
        if (a.length != 13) {
            System.err.println("usage: BigStateStreamsApp BOOTSTRAP APPLICATION_ID INPUT HOURLY LOTS DLQ GUARANTEE"
                + " GRACE_SECONDS COMMIT_INTERVAL_MS STATE_DIR STATE_MEMORY_MB CACHE_BYTES TRANSACTIONAL_STORES");
            System.exit(2);
        }
        System.setProperty("weir.state.memory.mb", a[10]);
        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a[0]);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a[1]);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, a[6]);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(a[8]));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a[9]);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, Long.parseLong(a[11]));
        p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedMemory.class);
        p.put("enable.transactional.statestores", Boolean.parseBoolean(a[12]));
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // Static membership, as weir's default (--instance-id auto): named after the state directory, so a
        // restart on the same directory gets its tasks back without waiting for the session timeout.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG),
            a[1] + "-" + Integer.toHexString(java.nio.file.Path.of(a[9]).toAbsolutePath().normalize().toString().hashCode()));
        Topology t = ParkingStreamsApp.build(a[2], a[3], a[4], a[5], Duration.ofSeconds(Long.parseLong(a[7])), true);
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
