//! The `weir` command line: parses arguments and calls the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "weir", version, about = "A Kafka Streams-style stateful stream processor")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "WEIR_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DescribeFormat {
    Text,
    Mermaid,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check topology or sink files; print every error with file:line:col.
    Validate {
        /// Topology (or sink) YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the processor graph like Kafka Streams' Topology.describe().
    Describe {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Run a topology against Kafka until SIGINT/SIGTERM.
    Run {
        file: PathBuf,
        /// Kafka bootstrap servers.
        #[arg(long, env = "WEIR_BOOTSTRAP", default_value = weir::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
        /// Address serving Prometheus /metrics, /healthz and /readyz.
        #[arg(long, env = "WEIR_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Directory of the local RocksDB state stores.
        #[arg(long, env = "WEIR_STATE_DIR", default_value = weir::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// How often records of repartition topics that every task has
        /// committed are deleted (Kafka Streams' repartition.purge.interval.ms).
        #[arg(long, default_value = "30s", value_parser = weir::parse_duration)]
        repartition_purge_interval: std::time::Duration,
        /// Consumer group session timeout: an instance silent for this long
        /// (crashed, stalled) loses its partitions to the others; under
        /// exactly-once it is fenced and cannot commit anymore.
        #[arg(long, default_value = "45s", value_parser = weir::parse_duration)]
        session_timeout: std::time::Duration,
        /// How long an input partition with nothing to read (and not caught
        /// up) holds back the others while records are taken in event-time
        /// order (Kafka Streams' max.task.idle.ms).
        #[arg(long, default_value = "2s", value_parser = weir::parse_duration)]
        max_task_idle: std::time::Duration,
        /// Replication factor of the topics weir creates (internal and
        /// output); -1 takes the broker's default.replication.factor. With 3
        /// or more, internal topics get min.insync.replicas=2.
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        replication_factor: i32,
        /// Memory of the local state, shared by every task: RocksDB's block
        /// cache with the write buffers (memtables) charged to it; these
        /// are flushed at half of it. Half of it again bounds the writes
        /// waiting for their commit: past that the commit comes early. A
        /// size with a unit: 128MiB, 1GiB.
        #[arg(long, env = "WEIR_STATE_MEMORY", default_value = "128MiB", value_parser = state_memory_arg)]
        state_memory: usize,
        #[command(flatten)]
        kafka: weir::KafkaArgs,
        /// Static group membership: the consumer's group.instance.id. A
        /// restart within --session-timeout keeps this instance's tasks
        /// without a rebalance; a stop (SIGTERM) does not leave the group
        /// (SIGUSR1 stops and leaves: scaling in). Default: derived from
        /// the state directory (`auto`, stable across its restarts);
        /// `none`: dynamic membership.
        #[arg(long, env = "WEIR_INSTANCE_ID", default_value = "auto")]
        instance_id: weir::InstanceId,
        /// Serve interactive queries into the stores over HTTP on this
        /// address (docs/queries.md): any instance answers for any key.
        #[arg(long, env = "WEIR_QUERY_ADDR")]
        query_addr: Option<std::net::SocketAddr>,
        /// The host:port other instances reach this one's query server at
        /// (behind NAT or in a container). Default: --query-addr, with an
        /// unspecified IP (0.0.0.0) replaced by this host's name.
        #[arg(long, env = "WEIR_QUERY_ADVERTISED_ADDR", requires = "query_addr")]
        query_advertised_addr: Option<String>,
    },
    /// Ask a running `weir run --query-addr` what a store holds now: a
    /// key's row, rows by prefix, or a group's open windows (JSON).
    Query(weir::QueryArgs),
    /// Make an application reprocess from scratch: its source offsets to the
    /// start (or a time), its internal topics and local state deleted.
    Reset(weir::ResetArgs),
    /// Load Kafka topics into PostgreSQL tables, exactly once.
    Sink(weir::SinkArgs),
    /// Produce a realistic Seoul parking feed.
    Simulate(weir::SimulateArgs),
    /// Feed a topic from a real source (Seoul's citydata API).
    #[command(subcommand)]
    Ingest(weir::IngestCommand),
    /// Run a topology offline on a JSONL input file (no broker).
    Test {
        file: PathBuf,
        /// JSONL input records (see docs/topology.md).
        #[arg(long)]
        input: PathBuf,
        /// At end of input, move stream time to the end of time: every open
        /// window closes, and tables with a `ttl` forget every key.
        #[arg(long)]
        flush: bool,
    },
    /// Print the JSON Schema of the topology file format.
    Schema,
}

/// The address other instances reach a query server bound to `addr` at:
/// `addr` itself, or for an unspecified IP this host's name.
fn advertised(addr: std::net::SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", addr.port())
}

/// `--state-memory`: a size, at least 16 MiB (the write buffers are flushed
/// at half of it, and one column family's buffer is 4 MiB).
fn state_memory_arg(s: &str) -> Result<usize, String> {
    const MIN: usize = 16 << 20;
    match weir::parse_size(s)? {
        n if n < MIN => Err(format!("{s:?} is below the minimum, 16MiB")),
        n => Ok(n),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a log file or a CI log
    // are noise (and NO_COLOR turns them off on a terminal too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Load a topology, printing its diagnostics on failure.
fn load(path: &std::path::Path) -> Option<weir::Topology> {
    match weir::Topology::load(path) {
        Ok(t) => Some(t),
        Err(d) => {
            eprintln!("{d}");
            None
        }
    }
}

/// `weir validate`: topology files, or sink files (recognised by a
/// top-level `tables:` key).
fn validate(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let result = if weir::is_sink_file(&text) {
            weir::validate_sink_file(file).map_err(|d| d.to_string())
        } else {
            weir::Topology::load(file).map(|_| ()).map_err(|d| d.to_string())
        };
        match result {
            Ok(()) => println!("{}: ok", file.display()),
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files } => Ok(validate(&files)),
        Command::Describe { file, format } => {
            let topo = match load(&file) {
                Some(t) => t,
                None => return Ok(ExitCode::FAILURE),
            };
            match format {
                DescribeFormat::Text => print!("{}", weir::describe(&topo)),
                DescribeFormat::Mermaid => print!("{}", weir::describe_mermaid(&topo)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            bootstrap,
            metrics_addr,
            state_dir,
            repartition_purge_interval,
            session_timeout,
            max_task_idle,
            replication_factor,
            state_memory,
            kafka,
            instance_id,
            query_addr,
            query_advertised_addr,
        } => {
            let shutdown = weir::on_signal();
            let leave_group = weir::on_leave_signal(&shutdown);
            let topo = match load(&file) {
                Some(t) => t,
                None => return Ok(ExitCode::FAILURE),
            };
            let settings = kafka.settings(weir::kafka_settings_from_file(&file, &topo.kafka))?;
            if let Some(entry) = settings.get("session.timeout.ms") {
                anyhow::bail!(
                    "Kafka setting `session.timeout.ms` ({}): weir run takes it from --session-timeout (its \
                     heartbeat and the exactly_once fencing follow from it)",
                    entry.origin
                );
            }
            weir::install_kafka_settings(settings);
            if let Some(addr) = metrics_addr {
                weir::serve_metrics(addr)?;
                tracing::info!(%addr, "serving Prometheus metrics on /metrics");
            }
            let topo = std::sync::Arc::new(topo);
            let query = match query_addr {
                Some(addr) => {
                    let advertised = query_advertised_addr.unwrap_or_else(|| advertised(addr));
                    let registry = weir::QueryRegistry::new(topo.clone(), advertised.clone(), bootstrap.clone());
                    weir::serve_queries(addr, registry.clone())?;
                    tracing::info!(%addr, %advertised, "serving interactive queries");
                    Some(registry)
                }
                None => None,
            };
            let opts = weir::RunOptions {
                bootstrap,
                state_dir,
                purge_interval: repartition_purge_interval,
                session_timeout,
                max_task_idle,
                replication_factor,
                state_memory,
                instance_id,
                leave_group,
                query,
            };
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || weir::run(topo, opts, shutdown, handle)).await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query(args) => Ok(ExitCode::from(weir::query_command(args).await?)),
        Command::Reset(args) => {
            let topo = match load(&args.file) {
                Some(t) => t,
                None => return Ok(ExitCode::FAILURE),
            };
            args.kafka
                .install(weir::kafka_settings_from_file(&args.file, &topo.kafka))?;
            let handle = tokio::runtime::Handle::current();
            // Boxed: the error holds a whole RuntimeError (clippy::result_large_err).
            tokio::task::spawn_blocking(move || weir::run_reset(&topo, &args, &handle).map_err(Box::new)).await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sink(args) => {
            weir::run_sink(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => {
            weir::run_simulate(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(command) => {
            weir::run_ingest(command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { file, input, flush } => {
            let topo = match load(&file) {
                Some(t) => t,
                None => return Ok(ExitCode::FAILURE),
            };
            let records = weir::read_test_input(&input)?;
            let out = weir::run_offline(&topo, &records, flush)?;
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            for rec in out {
                serde_json::to_writer(&mut lock, &rec)?;
                lock.write_all(b"\n")?;
            }
            lock.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let schema = schemars::schema_for!(weir::TopologySpec);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
