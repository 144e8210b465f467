package weir.peer;

import java.util.List;

import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.state.BuiltInDslStoreSuppliers;
import org.apache.kafka.streams.state.DslKeyValueParams;
import org.apache.kafka.streams.state.DslWindowParams;
import org.apache.kafka.streams.state.KeyValueBytesStoreSupplier;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.TimestampedBytesStore;
import org.apache.kafka.streams.state.WindowBytesStoreSupplier;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.streams.state.WindowStoreIterator;
import org.apache.kafka.streams.state.internals.WrappedStateStore;

/**
 * Kafka Streams' default RocksDB stores, except that {@code flush()} (called on every commit) does nothing.
 *
 * <p>TopologyTestDriver commits after every input record, and a RocksDB store's flush forces its memtable
 * into a new SST file (plus compactions): ~2 ms per record, a harness artifact. With the default
 * {@code commit.interval.ms} (30 s at-least-once) a real application flushes a few times per 100,000
 * records. Writes still go through the record cache into RocksDB's memtable (no WAL, as Kafka Streams
 * configures it), which RocksDB flushes itself when it is full. What remains of the driver's per-record
 * commit: the task checkpoint file and one position file per store, written (tmp file, fsync, rename) on
 * every commit — put the state directory on tmpfs to keep that cheap.
 */
public class NoFlushRocksDBSuppliers extends BuiltInDslStoreSuppliers.RocksDBDslStoreSuppliers {

    @Override
    public KeyValueBytesStoreSupplier keyValueStore(final DslKeyValueParams params) {
        final KeyValueBytesStoreSupplier inner = super.keyValueStore(params);
        return new KeyValueBytesStoreSupplier() {
            @Override
            public String name() {
                return inner.name();
            }

            @Override
            public KeyValueStore<Bytes, byte[]> get() {
                final KeyValueStore<Bytes, byte[]> s = inner.get();
                return s instanceof TimestampedBytesStore ? new TsKv(s) : new Kv(s);
            }

            @Override
            public String metricsScope() {
                return inner.metricsScope();
            }
        };
    }

    @Override
    public WindowBytesStoreSupplier windowStore(final DslWindowParams params) {
        final WindowBytesStoreSupplier inner = super.windowStore(params);
        return new WindowBytesStoreSupplier() {
            @Override
            public String name() {
                return inner.name();
            }

            @Override
            public WindowStore<Bytes, byte[]> get() {
                final WindowStore<Bytes, byte[]> s = inner.get();
                return s instanceof TimestampedBytesStore ? new TsWin(s) : new Win(s);
            }

            @Override
            public String metricsScope() {
                return inner.metricsScope();
            }

            @Override
            public long segmentIntervalMs() {
                return inner.segmentIntervalMs();
            }

            @Override
            public long windowSize() {
                return inner.windowSize();
            }

            @Override
            public boolean retainDuplicates() {
                return inner.retainDuplicates();
            }

            @Override
            public long retentionPeriod() {
                return inner.retentionPeriod();
            }
        };
    }

    static class Kv extends WrappedStateStore<KeyValueStore<Bytes, byte[]>, Bytes, byte[]>
            implements KeyValueStore<Bytes, byte[]> {
        Kv(final KeyValueStore<Bytes, byte[]> inner) {
            super(inner);
        }

        @Override
        public void flush() { }

        @Override
        public void put(final Bytes k, final byte[] v) {
            wrapped().put(k, v);
        }

        @Override
        public byte[] putIfAbsent(final Bytes k, final byte[] v) {
            return wrapped().putIfAbsent(k, v);
        }

        @Override
        public void putAll(final List<KeyValue<Bytes, byte[]>> entries) {
            wrapped().putAll(entries);
        }

        @Override
        public byte[] delete(final Bytes k) {
            return wrapped().delete(k);
        }

        @Override
        public byte[] get(final Bytes k) {
            return wrapped().get(k);
        }

        @Override
        public KeyValueIterator<Bytes, byte[]> range(final Bytes from, final Bytes to) {
            return wrapped().range(from, to);
        }

        @Override
        public KeyValueIterator<Bytes, byte[]> reverseRange(final Bytes from, final Bytes to) {
            return wrapped().reverseRange(from, to);
        }

        @Override
        public KeyValueIterator<Bytes, byte[]> all() {
            return wrapped().all();
        }

        @Override
        public KeyValueIterator<Bytes, byte[]> reverseAll() {
            return wrapped().reverseAll();
        }

        @Override
        public <PS extends org.apache.kafka.common.serialization.Serializer<P>, P> KeyValueIterator<Bytes, byte[]>
                prefixScan(final P prefix, final PS ser) {
            return wrapped().prefixScan(prefix, ser);
        }

        @Override
        public long approximateNumEntries() {
            return wrapped().approximateNumEntries();
        }
    }

    static final class TsKv extends Kv implements TimestampedBytesStore {
        TsKv(final KeyValueStore<Bytes, byte[]> inner) {
            super(inner);
        }
    }

    static class Win extends WrappedStateStore<WindowStore<Bytes, byte[]>, Bytes, byte[]>
            implements WindowStore<Bytes, byte[]> {
        Win(final WindowStore<Bytes, byte[]> inner) {
            super(inner);
        }

        @Override
        public void flush() { }

        @Override
        public void put(final Bytes k, final byte[] v, final long ts) {
            wrapped().put(k, v, ts);
        }

        @Override
        public byte[] fetch(final Bytes k, final long ts) {
            return wrapped().fetch(k, ts);
        }

        @Override
        public WindowStoreIterator<byte[]> fetch(final Bytes k, final long from, final long to) {
            return wrapped().fetch(k, from, to);
        }

        @Override
        public WindowStoreIterator<byte[]> backwardFetch(final Bytes k, final long from, final long to) {
            return wrapped().backwardFetch(k, from, to);
        }

        @Override
        public KeyValueIterator<Windowed<Bytes>, byte[]> fetch(final Bytes kf, final Bytes kt, final long from,
                final long to) {
            return wrapped().fetch(kf, kt, from, to);
        }

        @Override
        public KeyValueIterator<Windowed<Bytes>, byte[]> backwardFetch(final Bytes kf, final Bytes kt,
                final long from, final long to) {
            return wrapped().backwardFetch(kf, kt, from, to);
        }

        @Override
        public KeyValueIterator<Windowed<Bytes>, byte[]> fetchAll(final long from, final long to) {
            return wrapped().fetchAll(from, to);
        }

        @Override
        public KeyValueIterator<Windowed<Bytes>, byte[]> backwardFetchAll(final long from, final long to) {
            return wrapped().backwardFetchAll(from, to);
        }

        @Override
        public KeyValueIterator<Windowed<Bytes>, byte[]> all() {
            return wrapped().all();
        }

        @Override
        public KeyValueIterator<Windowed<Bytes>, byte[]> backwardAll() {
            return wrapped().backwardAll();
        }
    }

    static final class TsWin extends Win implements TimestampedBytesStore {
        TsWin(final WindowStore<Bytes, byte[]> inner) {
            super(inner);
        }
    }
}
