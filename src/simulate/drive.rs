//! Drives the generator: resolves options, paces records in wall time,
//! hands them to the destination (Kafka or a file), stops on SIGINT or
//! SIGTERM, shows progress on a terminal and prints the summary line.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use super::catalog::catalog;
use super::destination::{Destination, KafkaDestination};
use super::generator::{generator, Generator, GeneratorOptions, RecordKind};
use super::payload::format_kst;
use super::{SimulateArgs, SimulateError};
use crate::kafka::{ensure_topics, TopicSpec};

/// Longest single wait while pacing, so a stop request (SIGINT/SIGTERM)
/// and delivery reports are served.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Never back-date the default start by more than about ten years.
const MAX_SPAN_MS: i64 = 10 * 366 * 86_400_000;

/// Options resolved from the command line.
#[derive(Debug, Clone)]
struct Plan {
    /// Records per second of wall time; 0 = as fast as possible on the
    /// generator's own clock.
    rate: f64,
    speedup: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    gen: GeneratorOptions,
}

fn plan(args: &SimulateArgs) -> Result<Plan, SimulateError> {
    let poll_ms = i64::try_from(args.poll_interval.as_millis())
        .map_err(|_| SimulateError::InvalidOption("--poll-interval is too long".into()))?;
    let per_sweep = catalog()?.sweep().len();
    let rate = match (args.rate, args.speedup) {
        (Some(rate), _) => rate,
        (None, Some(speedup)) => {
            if poll_ms <= 0 {
                return Err(SimulateError::InvalidOption(
                    "--poll-interval must be more than 0 with --speedup".into(),
                ));
            }
            per_sweep as f64 * speedup / args.poll_interval.as_secs_f64()
        }
        (None, None) => 0.0,
    };
    if rate == 0.0 && args.speedup.is_some() {
        tracing::warn!(
            "--speedup has no effect with --rate 0: the simulated clock advances by --poll-interval per sweep"
        );
    }
    let speedup = args.speedup.unwrap_or(1.0);
    let start = match args.start {
        Some(start) => start,
        None => {
            let span = default_span_ms(rate, speedup, args.count, args.duration, poll_ms, per_sweep);
            if span.is_none() && (rate == 0.0 || speedup > 1.0) {
                tracing::warn!(
                    "event time starts now and runs ahead of the wall clock; brokers reject records more than \
                     message.timestamp.after.max.ms (1 h by default) in the future: give --count, --duration or \
                     an earlier --start"
                );
            }
            Utc::now() - chrono::Duration::milliseconds(span.unwrap_or(0))
        }
    };
    Ok(Plan {
        rate,
        speedup,
        count: args.count,
        duration: args.duration,
        gen: GeneratorOptions {
            seed: args.seed.unwrap_or_else(rand::random),
            start_ms: start.timestamp_millis(),
            partitions: args.partitions,
            sweep_interval_ms: poll_ms,
            bad_ratio: args.bad_ratio,
            late_ratio: args.late_ratio,
        },
    })
}

/// How much simulated time a bounded run covers when its clock runs faster
/// than the wall clock (`--rate 0`, or `--speedup` above 1). The default
/// start lies that far in the past so the feed ends about now instead of
/// running into the future, which brokers reject (Kafka's
/// `message.timestamp.after.max.ms`, 1 h by default). `None` when the run is
/// unbounded or keeps pace with the wall clock.
fn default_span_ms(
    rate: f64,
    speedup: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    poll_ms: i64,
    per_sweep: usize,
) -> Option<i64> {
    if rate == 0.0 {
        let n = count?.saturating_sub(1);
        let span = i128::from(n) * i128::from(poll_ms) / per_sweep.max(1) as i128;
        return Some(i64::try_from(span).unwrap_or(i64::MAX).min(MAX_SPAN_MS));
    }
    if speedup <= 1.0 {
        return None;
    }
    let by_count = count.map(|n| n as f64 / rate);
    let by_duration = duration.map(|d| d.as_secs_f64());
    let wall_secs = match (by_count, by_duration) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(((wall_secs * speedup * 1000.0) as i64).min(MAX_SPAN_MS))
}

pub(super) async fn run(args: SimulateArgs) -> Result<(), SimulateError> {
    // SIGINT or SIGTERM stops generating; what was produced is still
    // delivered (or flushed to the file) and summarised, and the exit is 0.
    // Registered first, so a signal while connecting is a request to stop.
    let stop = crate::shutdown::on_signal();
    let plan = plan(&args)?;
    let mut dest = match &args.output {
        Some(path) => Destination::file(path, &args.topic)?,
        None => {
            // Fail fast on an unreachable broker, before the admin client's
            // much longer timeouts.
            let bootstrap = args.bootstrap.clone();
            let kafka = tokio::task::spawn_blocking(move || KafkaDestination::connect(&bootstrap))
                .await
                .map_err(|e| SimulateError::Task(e.to_string()))??;
            ensure_topics(&args.bootstrap, &[TopicSpec::new(&args.topic, args.partitions)])
                .await
                .map_err(|source| SimulateError::Kafka {
                    action: format!("creating topic {}", args.topic),
                    error: source,
                })?;
            Destination::Kafka(kafka)
        }
    };
    let task_stop = Arc::clone(&stop);
    let task = tokio::task::spawn_blocking(move || {
        let mut gen = plan.gen.clone();
        if let Destination::Kafka(kafka) = &mut dest {
            let n = kafka.load_partitions(&args.topic)?;
            if n != gen.partitions {
                tracing::warn!(
                    topic = %args.topic,
                    partitions = n,
                    "topic exists with a different partition count; placing keys over its partitions"
                );
                gen.partitions = n;
            }
        }
        let gen = generator(gen)?;
        tracing::info!(
            seed = plan.gen.seed,
            start = %format_kst(gen.next_time()),
            rate = plan.rate,
            speedup = plan.speedup,
            lots = gen.records_per_sweep(),
            to = %dest.describe(),
            "simulating the Seoul parking feed"
        );
        let summary = drive(gen, &mut dest, &plan, &task_stop)?;
        dest.finish()?;
        Ok::<_, SimulateError>((summary, dest.describe()))
    });
    let (summary, dest) = task.await.map_err(|e| SimulateError::Task(e.to_string()))??;
    eprintln!("{}", summary.line(&dest));
    Ok(())
}

/// What was generated, for the summary line.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    bad: u64,
    late: u64,
    elapsed: Duration,
    seed: u64,
    first_ms: Option<i64>,
    max_ms: Option<i64>,
}

impl Summary {
    fn line(&self, dest: &str) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.records as f64 / secs } else { 0.0 };
        let span = match (self.first_ms, self.max_ms) {
            (Some(a), Some(b)) => format!("; event time {} .. {} KST", format_kst(a), format_kst(b)),
            _ => String::new(),
        };
        format!(
            "simulate: {} records ({} bad, {} late) to {dest} in {secs:.2} s ({rate:.0} records/s); seed {}{span}",
            self.records, self.bad, self.late, self.seed
        )
    }
}

fn drive(mut gen: Generator, dest: &mut Destination, plan: &Plan, stop: &AtomicBool) -> Result<Summary, SimulateError> {
    let bar = progress_bar(plan.count);
    let started = Instant::now();
    let mut summary = Summary {
        seed: plan.gen.seed,
        ..Summary::default()
    };
    let over_time = |now: Instant| plan.duration.is_some_and(|d| now.duration_since(started) >= d);
    'records: loop {
        if stop.load(Ordering::Relaxed) || plan.count.is_some_and(|n| summary.records >= n) || over_time(Instant::now())
        {
            break;
        }
        let rec = if plan.rate > 0.0 {
            let due = started + Duration::from_secs_f64(summary.records as f64 / plan.rate);
            loop {
                let now = Instant::now();
                if stop.load(Ordering::Relaxed) || over_time(now) {
                    break 'records;
                }
                if now >= due {
                    break;
                }
                dest.idle((due - now).min(MAX_WAIT))?;
            }
            let simulated = started.elapsed().as_secs_f64() * plan.speedup * 1000.0;
            gen.next_at(plan.gen.start_ms.saturating_add(simulated as i64))
        } else {
            let t = gen.next_time();
            gen.next_at(t)
        };
        dest.write(&rec)?;
        summary.records += 1;
        match rec.kind {
            RecordKind::Good => {}
            RecordKind::Late => summary.late += 1,
            RecordKind::Bad(_) => summary.bad += 1,
        }
        summary.first_ms.get_or_insert(rec.timestamp_ms);
        summary.max_ms = Some(summary.max_ms.map_or(rec.timestamp_ms, |m| m.max(rec.timestamp_ms)));
        bar.inc(1);
        if plan.rate > 0.0 || summary.records % 1024 == 1 {
            bar.set_message(format!("event time {} KST", format_kst(rec.timestamp_ms)));
        }
    }
    summary.elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(summary)
}

/// A progress bar on a terminal; nothing otherwise.
fn progress_bar(count: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match count {
        Some(n) => (
            ProgressBar::new(n),
            "{spinner} [{elapsed_precise}] [{bar:30}] {human_pos}/{human_len} records ({rate}, eta {eta}) {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {human_pos} records ({rate}) {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} records/s", state.per_sec());
        };
        bar.set_style(style.progress_chars("=> ").with_key("rate", rate));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::output::jsonl_line;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn args(extra: &[&str]) -> SimulateArgs {
        Cli::try_parse_from(std::iter::once("simulate").chain(extra.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn rate_defaults_to_zero_or_follows_speedup() {
        let p = plan(&args(&["--seed", "1"])).unwrap();
        assert_eq!(p.rate, 0.0);
        assert_eq!(p.gen.seed, 1);
        assert_eq!(p.gen.sweep_interval_ms, 300_000);
        let lots = catalog().unwrap().sweep().len() as f64;
        let p = plan(&args(&["--speedup", "1"])).unwrap();
        assert!((p.rate - lots / 300.0).abs() < 1e-9);
        let p = plan(&args(&["--speedup", "1440", "--rate", "50/s"])).unwrap();
        assert_eq!((p.rate, p.speedup), (50.0, 1440.0));
    }

    #[test]
    fn default_start_makes_fast_runs_end_about_now() {
        let lots = catalog().unwrap().sweep().len();
        // --rate 0: back-dated so the last record is stamped about now.
        let before = Utc::now().timestamp_millis();
        let p = plan(&args(&["--count", "100000"])).unwrap();
        let end = p.gen.start_ms + 99_999 * 300_000 / lots as i64;
        let after = Utc::now().timestamp_millis();
        assert!((before - 1000..=after).contains(&end), "{end} not in {before}..{after}");
        assert_eq!(default_span_ms(0.0, 1.0, Some(1), None, 300_000, lots), Some(0));
        // A sped-up clock: the run's wall time times the speed-up.
        let minute = Some(Duration::from_secs(60));
        assert_eq!(
            default_span_ms(10.0, 1440.0, None, minute, 300_000, lots),
            Some(86_400_000)
        );
        assert_eq!(
            default_span_ms(10.0, 60.0, Some(100), minute, 300_000, lots),
            Some(600_000)
        );
        // Real time, or unbounded: start now.
        assert_eq!(default_span_ms(10.0, 1.0, Some(100), None, 300_000, lots), None);
        assert_eq!(default_span_ms(0.0, 1.0, None, minute, 300_000, lots), None);
        // An explicit start wins.
        let p = plan(&args(&["--count", "100000", "--start", "2025-03-20 00:00:00"])).unwrap();
        assert_eq!(p.gen.start_ms, 1_742_396_400_000);
    }

    #[test]
    fn file_output_is_the_generator_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.jsonl");
        let path_s = path.to_str().unwrap();
        let a = args(&[
            "--seed",
            "9",
            "--count",
            "700",
            "--start",
            "2025-03-20 08:00:00",
            "--bad-ratio",
            "0.1",
            "--output",
            path_s,
        ]);
        let p = plan(&a).unwrap();
        let mut dest = Destination::file(&path, &a.topic).unwrap();
        let summary = drive(
            generator(p.gen.clone()).unwrap(),
            &mut dest,
            &p,
            &AtomicBool::new(false),
        )
        .unwrap();
        dest.finish().unwrap();
        assert_eq!(summary.records, 700);
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<String> = generator(p.gen)
            .unwrap()
            .take(700)
            .map(|r| String::from_utf8(jsonl_line("parking_status", &r)).unwrap())
            .collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        assert!(text.contains("\"value_base64\":"));
    }
}
