//! weir: a Kafka Streams-style stateful stream processor.
//!
//! A declarative topology file (see `docs/topology.md`) is compiled into a
//! graph of processors; the runtime feeds them records from Kafka, keeps
//! their state in RocksDB stores backed by changelog topics, and writes their
//! output to Kafka. The sink task loads output topics into PostgreSQL.
//!
//! Data flows one way: source → processors → state → output/changelog →
//! commit. Processors never touch Kafka or RocksDB directly, so the same graph
//! runs under `weir run` and offline under `weir test`.

pub mod kafka;
pub mod metrics;
pub mod processor;
pub mod runtime;
pub mod shutdown;
pub mod simulate;
pub mod sink;
pub mod state;
pub mod testkit;
pub mod topology;

/// mimalloc instead of glibc malloc, for every binary linking weir (the CLI,
/// the benchmarks, the tests), so benchmarks measure what `weir run` uses.
/// Records are many small short-lived allocations (JSON fields, CEL values):
/// glibc's free-list consolidation took 20–30% of the engine hot path in
/// `perf` (`unlink_chunk`, `malloc_consolidate`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
