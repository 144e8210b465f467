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
//! # The library's surface
//!
//! Every module is private; what is `pub` below is the whole API, used by
//! the `weir` binary (`src/main.rs`), the integration tests and the benches,
//! and meant for a program that embeds weir. Everything else is
//! `pub(crate)`, so the compiler reports what nothing uses
//! (`unreachable_pub` warns when an item is `pub` but not reachable here).
//!
//! - **Topology files**: [`Topology::load`] parses, validates (errors carry
//!   file, line and column) and compiles a file; [`describe`] and
//!   [`describe_mermaid`] draw it; [`TopologySpec`] is the file format (its
//!   JSON Schema is `weir schema`).
//! - **Offline** (`weir test`): [`run_offline`] runs a topology over
//!   [`read_test_input`]'s records, no Kafka, no disk.
//! - **A processor graph by hand** (the benches): a [`Task`] per partition
//!   takes records ([`Origin`]) and returns [`Output`]s; [`TaskDb`] is the
//!   RocksDB store a task keeps its state in, [`restore`] fills one from its
//!   changelog.
//! - **Commands**: [`run`] (`weir run`, with [`RunOptions`], stopped by
//!   [`on_signal`]), [`run_sink`] (`weir sink`: [`SinkArgs`]; [`Writer`]
//!   is its Postgres writer), [`run_simulate`], [`run_ingest`],
//!   [`run_reset`], each with the arguments `weir` parses for it.
//! - **Kafka**: the client settings every command takes ([`KafkaArgs`],
//!   [`kafka_settings_from_file`], [`install_kafka_settings`]), topic helpers
//!   and [`partition_for`] (the Java client's partitioner).
//! - **Metrics**: [`serve_metrics`] serves `/metrics`, `/healthz` and
//!   `/readyz`; the metric names are in `docs/metrics.md`.
//! - **For the integration tests**: [`detach_queue`] (how `weir run`
//!   gives a partition of an event-time-aligned sub-topology its own queue)
//!   and [`changelog_reader`], checked against the real broker.
//! - **For the client library's floor** (`examples/passthrough.rs`, a row
//!   of `./dev bench`): [`run_consumer_config`] and [`run_producer_config`],
//!   the librdkafka settings `weir run` consumes and produces with.
//!
//! Each entry point's error type is here too; the causes inside them are
//! reached through [`std::error::Error::source`].

#![warn(unreachable_pub)]

mod health;
mod ingest;
mod kafka;
mod metrics;
mod processor;
mod query;
mod reset;
mod runtime;
mod shutdown;
mod simulate;
mod sink;
mod state;
mod support;
mod testkit;
mod topology;

// Topology files.
pub use topology::describe::{mermaid as describe_mermaid, text as describe};
pub use topology::spec::TopologySpec;
pub use topology::{Diagnostic, Diagnostics, Topology};

// Offline: `weir test`.
pub use testkit::{read_input as read_test_input, run as run_offline, InputRecord, OutputRecord, TestError};

// A processor graph by hand, and its state.
pub use processor::{Origin, Output, OutputKind, ProcessError, Task, TaskStats};
pub use runtime::restore::{reader as changelog_reader, restore, StoreRef};
pub use state::{global::GlobalTables, rocks::TaskDb, Backend, StoreError, DEFAULT_STATE_DIR};

// `weir run`.
#[doc(hidden)]
pub use runtime::{consumer_config as run_consumer_config, producer_config as run_producer_config};
pub use runtime::{detach_queue, run, InstanceId, RunOptions, RuntimeError};
pub use shutdown::{on_leave_signal, on_signal};

// Interactive queries: `weir run --query-addr`, `weir query`.
pub use query::{
    query_command, serve as serve_queries, QueryArgs, Registry as QueryRegistry, ServeError as QueryServeError,
};

// `weir sink`.
pub use sink::{
    is_sink_file, run as run_sink, validate_file as validate_sink_file, OffsetUpdate, SinkArgs, SinkConfig, SinkError,
    TableRows, Value as SqlValue, WriteError, Writer, DEFAULT_POSTGRES_URL,
};

// `weir simulate`, `weir ingest`, `weir reset`.
pub use ingest::{run as run_ingest, IngestCommand, IngestError};
pub use reset::{run as run_reset, ResetArgs, ResetError};
pub use simulate::{run as run_simulate, SimulateArgs, SimulateError, FIELDS as SIMULATED_FIELDS};

// Kafka.
pub use kafka::settings::{
    from_file as kafka_settings_from_file, install as install_kafka_settings, KafkaArgs, Settings as KafkaSettings,
    SettingsError as KafkaSettingsError,
};
pub use kafka::{client_config, delete_topics, ensure_topics, partition_for, TopicSpec, DEFAULT_BOOTSTRAP};

// Metrics, and the argument parsers `weir` shares with its tests.
pub use metrics::{install as serve_metrics, InstallError as MetricsError};
pub use support::{base64, duration::parse_arg as parse_duration, size::parse as parse_size};

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
