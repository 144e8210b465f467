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
//!
//! What `main`, the integration tests and the benches use is `pub`; the
//! rest is crate-private, so the compiler reports what nothing uses.

#![warn(unreachable_pub)]

pub(crate) mod health;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod processor;
pub mod reset;
pub mod runtime;
pub mod shutdown;
pub mod simulate;
pub mod sink;
pub mod state;
pub mod support;
pub mod testkit;
pub mod topology;

/// mimalloc instead of glibc malloc, for every binary linking weir (the CLI,
/// the benchmarks, the tests), so benchmarks measure what `weir run` uses.
/// Records are many small short-lived allocations (JSON fields, CEL values):
/// glibc's free-list consolidation took 20–30% of the engine hot path in
/// `perf` (`unlink_chunk`, `malloc_consolidate`).
///
/// The C and C++ libraries use it too: libmimalloc-sys's `override`
/// feature defines `malloc`/`free` in the binary. librdkafka allocates each
/// fetched message on its broker thread and the engine frees it on its own;
/// with glibc those frees waited on the broker thread's arena lock (a
/// `sched_switch` profile of `weir run` under `./dev bench`: 6% of the
/// engine thread's context switches were `free` blocking in `futex_wait`).
/// mimalloc frees across threads without that lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits its arenas eagerly on Linux, which kept 6–15 MiB more
/// resident than glibc (bench-peer: 25 vs 19 MB). Lazy commit gives the
/// memory back with no measurable cost in throughput. Set from an
/// `.init_array` constructor: it runs before Rust's runtime makes its first
/// allocation, i.e. before mimalloc creates its first arena.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static MIMALLOC_LAZY_COMMIT: extern "C" fn() = {
    extern "C" fn lazy_commit() {
        /// `mi_option_arena_eager_commit` in mimalloc.h (not exported by
        /// libmimalloc-sys).
        const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
        // SAFETY: setting an option is valid at any time, before any allocation too.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
    }
    lazy_commit
};
