//! The faults of one chaos run, drawn from its seed: a sequence of
//! process, broker and database faults (one at a time, each ended before the
//! next starts) and bursts of malformed records and of records dated far
//! ahead mixed into the feed.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

/// `--session-timeout` of every `weir run` of the campaign: a SIGSTOPped
/// instance is stopped longer than this, so the group throws it out.
pub const SESSION_SECS: u64 = 6;

#[derive(Debug, Clone)]
pub enum Fault {
    /// SIGKILL `weir run` instance `instance` at a random moment; it is
    /// started again `down` later (its partitions wait meanwhile: a
    /// backlog). `wipe`: its state directory is deleted too (restored from
    /// the changelogs).
    KillRun {
        instance: usize,
        down: Duration,
        wipe: bool,
    },
    /// SIGKILL the instance right after its next commit (its
    /// `weir_commit_latency_seconds_count` moved), restart `down` later.
    KillRunAfterCommit { instance: usize, down: Duration },
    /// SIGKILL, restart after `down`, SIGKILL again `after` the restart
    /// (while it restores its stores; `wipe` deletes its state directory
    /// first, so the restore reads the whole changelog), restart at once.
    KillRunDuringRestore {
        instance: usize,
        down: Duration,
        after: Duration,
        wipe: bool,
    },
    /// SIGSTOP the instance for `stopped` (longer than the session timeout:
    /// fenced, its tasks move), then SIGCONT.
    StopRun { instance: usize, stopped: Duration },
    /// SIGKILL `weir sink`, restart `down` later.
    KillSink { down: Duration },
    /// SIGSTOP a broker for `stalled` (a GC or VM stall), then SIGCONT:
    /// the single broker, or node `node` of the 3-node cluster (its
    /// controller fences it after 9 s; its partitions' leadership moves).
    StallBroker { node: Option<usize>, stalled: Duration },
    /// 3-node cluster only: SIGKILL node `node` (1..=3), start it again
    /// `down` later and wait until every node lists all three brokers.
    KillBroker { node: usize, down: Duration },
    /// Stop PostgreSQL (`pg_ctl stop -m fast`), start it `down` later.
    RestartPostgres { down: Duration },
    /// Every connection between `weir sink` and Postgres (through the
    /// run's second proxy) cut silently for good, as by a NAT or a load
    /// balancer that dropped their state: no RST, no FIN, nothing more
    /// forwarded; new connections flow. The sink has to notice by itself.
    /// The next fault comes `after` later.
    PostgresStranded { after: Duration },
    /// `count` malformed records (broken JSON, not JSON, a JSON array, an
    /// empty value) produced into the feed at this moment, on random
    /// partitions.
    BadPayloads { count: usize },
    /// `count` copies of valid feed records whose event-time field
    /// (`OBSERVED_AT`, runs with `field_time` only) says 2099, hours to
    /// weeks past the wall clock, or before 1970 (a device with a wrong
    /// clock): each must be dead-lettered and move nothing.
    FarFutureTimestamps { count: usize },
    /// Every chunk between the `weir run` instances and the broker (they
    /// talk to it through the run's proxy, `tests/chaos/proxy.rs`) delayed
    /// by `latency` each way, for `lasting`.
    NetworkLatency { latency: Duration, lasting: Duration },
    /// Every open connection between the instances and the broker reset
    /// (RST) `times` times, `every` apart (the clients reconnect in
    /// between).
    NetworkReset { times: usize, every: Duration },
    /// A partition between the instances and the broker for `lasting`:
    /// connections stay open, new ones are accepted, nothing is forwarded
    /// (requests time out); then every connection is reset and traffic
    /// flows again. `instance`: that instance only (a zombie: the group
    /// moves its tasks to the others after the session timeout while it
    /// goes on running, cut off, and comes back with a stale generation
    /// and an open transaction); `None`: all of them.
    NetworkPartition { instance: Option<usize>, lasting: Duration },
    /// The broker unreachable for `lasting`: every open connection reset,
    /// every new one accepted and reset at once.
    NetworkRefuse { lasting: Duration },
    /// Fill the state filesystem of instance `instance` (each has a tmpfs
    /// of its own, see `chaos.rs`) with a filler file up to ENOSPC for
    /// `full` (kept full), then delete the filler. A running instance
    /// writes into the space RocksDB preallocated and meets the full disk
    /// when it needs new space, e.g. reopening its tasks: `stop`, 1 s into
    /// the fault, SIGSTOPs it that long (past the session timeout: thrown
    /// out of the group, it drops its tasks and opens them again on the
    /// full disk after SIGCONT).
    StateDiskFull {
        instance: usize,
        full: Duration,
        stop: Option<Duration>,
    },
}

impl Fault {
    /// The kind, for the summary table.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillRun { .. } => "kill run",
            Fault::KillRunAfterCommit { .. } => "kill run after commit",
            Fault::KillRunDuringRestore { .. } => "kill run during restore",
            Fault::StopRun { .. } => "stop run",
            Fault::KillSink { .. } => "kill sink",
            Fault::StallBroker { .. } => "stall broker",
            Fault::KillBroker { .. } => "kill broker",
            Fault::RestartPostgres { .. } => "restart postgres",
            Fault::PostgresStranded { .. } => "postgres stranded",
            Fault::BadPayloads { .. } => "bad payloads",
            Fault::FarFutureTimestamps { .. } => "far-future timestamps",
            Fault::NetworkLatency { .. } => "network latency",
            Fault::NetworkReset { .. } => "network reset",
            Fault::NetworkPartition { .. } => "network partition",
            Fault::NetworkRefuse { .. } => "network refuse",
            Fault::StateDiskFull { .. } => "state disk full",
        }
    }

    /// How long the fault lasts once started (the scheduler waits that
    /// long before the next one).
    pub fn length(&self) -> Duration {
        match self {
            Fault::KillRun { down, .. } | Fault::KillRunAfterCommit { down, .. } => *down,
            Fault::KillRunDuringRestore { down, after, .. } => *down + *after,
            Fault::StopRun { stopped, .. } => *stopped,
            Fault::KillSink { down } | Fault::RestartPostgres { down } => *down,
            Fault::StallBroker { stalled, .. } => *stalled,
            Fault::KillBroker { down, .. } => *down,
            Fault::NetworkLatency { lasting, .. }
            | Fault::NetworkPartition { lasting, .. }
            | Fault::NetworkRefuse { lasting } => *lasting,
            Fault::NetworkReset { times, every } => *every * *times as u32,
            Fault::StateDiskFull { full, .. } => *full,
            Fault::PostgresStranded { after } => *after,
            _ => Duration::ZERO,
        }
    }
}

/// One fault and when it starts, counted from the start of the feed.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    pub fault: Fault,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{:6.1}s  {:?}", self.at.as_secs_f64(), self.fault)
    }
}

/// Everything a run does, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// `weir run` instances in the group.
    pub instances: usize,
    /// Brokers: 1 (the single broker of `./dev up`, behind the run's
    /// proxy) or 3 (the cluster of `./dev up --brokers 3`, every topic
    /// with three replicas, no proxy).
    pub brokers: usize,
    /// How long the feed runs (event time advances with the wall clock).
    pub feed: Duration,
    /// Records per second of the feed.
    pub rate: u32,
    /// Seed of `weir simulate` for the feed's records.
    pub sim_seed: u64,
    /// Event time from a field of the value (`event_time: { field:
    /// OBSERVED_AT }`, which the feeder writes: the record's timestamp)
    /// instead of the Kafka timestamp; only such runs get
    /// `FarFutureTimestamps` (a Kafka timestamp over an hour ahead is
    /// refused by the broker itself).
    pub field_time: bool,
    /// Faults, in start order; `BadPayloads` are mixed into the feed by
    /// the feeder, the others applied by the scheduler one after another.
    pub steps: Vec<Step>,
}

/// Uniform in [lo, hi) seconds (lo if the range is empty).
fn secs(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(if hi > lo { rng.gen_range(lo..hi) } else { lo })
}

/// The plan of the run with `seed`: 1–3 instances, `feed` of records, and
/// faults from a few seconds after the feed starts until a few seconds
/// before it ends.
///
/// `brokers` 3: the network faults (the proxy stands before the single
/// broker only) are replaced by `KillBroker`, and `StallBroker` stops one
/// node. With 1 the draws are those of the seed from before the 3-node
/// mode existed.
///
/// `only`: the fault kinds allowed (`Fault::kind` with dashes for spaces,
/// e.g. `kill-sink`); empty: all. A drawn fault of another kind is drawn
/// again, so a filtered plan keeps the same pace of faults.
pub fn draw(seed: u64, feed: Duration, only: &[String], brokers: usize) -> Plan {
    let allowed = |f: &Fault| only.is_empty() || only.iter().any(|k| k == &f.kind().replace(' ', "-"));
    let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let instances = rng.gen_range(1..=3usize);
    let sim_seed = rng.gen::<u32>() as u64;
    let f = feed.as_secs_f64();
    // A partition held back longer than the grace (1 m) while the group's
    // other instances go on is dropped as late by design (stream time is
    // per task, shared through the repartition topic): with several
    // instances, an instance is down at most 20 s (+ the 6 s session
    // timeout before its partitions move, + up to the 10 s transaction
    // timeout while the new owner's restore waits for the dead instance's
    // open transaction to be aborted). A single instance catches up a
    // backlog of any length in event-time order.
    let max_down = if instances == 1 { 40.0 } else { 20.0 };
    // The same holds for a broker stall, which holds back every instance:
    // afterwards each instance catches up its own input partitions' backlog
    // (the stall plus ~5-15 s of recovery: the flush times out, the
    // transaction is aborted, the group rejoins) as fast as it can, so the
    // first one done moves the repartition tasks' stream time to the end of
    // the backlog while the others' records of its start are still on their
    // way: late once the backlog is longer than the grace (seed 1004: a 56 s
    // stall, 18 samples dropped as late). One instance merges its
    // partitions in event-time order and catches up any backlog.
    let max_stall: f64 = if instances == 1 { 60.0 } else { 35.0 };
    let mut steps = Vec::new();
    let mut t = rng.gen_range(5.0..10.0);
    let end = f - 4.0;
    // Kinds the loop below draws (a filter naming none of them: no steps).
    const STEP_KINDS: [&str; 14] = [
        "kill-run",
        "kill-run-after-commit",
        "kill-run-during-restore",
        "stop-run",
        "kill-sink",
        "stall-broker",
        "restart-postgres",
        "network-latency",
        "network-reset",
        "network-partition",
        "network-refuse",
        "state-disk-full",
        "kill-broker",
        "postgres-stranded",
    ];
    let any_step = only.is_empty() || only.iter().any(|k| STEP_KINDS.contains(&k.as_str()));
    while any_step && t < end - 1.0 {
        let instance = rng.gen_range(0..instances);
        let room = (end - t).max(1.0);
        let cap = |hi: f64| hi.min(room).max(0.6);
        let fault = loop {
            // 0..15: the kinds of the first campaigns; 15..19 (added with
            // the proxy): the network faults, which hit every instance at
            // once; 19..21: the state disk full.
            let fault = match rng.gen_range(0..21u32) {
                0..=2 => Fault::KillRun {
                    instance,
                    down: secs(&mut rng, 0.5, cap(max_down)),
                    wipe: rng.gen_bool(0.2),
                },
                3..=4 => Fault::KillRunAfterCommit {
                    instance,
                    down: secs(&mut rng, 0.5, cap(max_down / 2.0)),
                },
                5..=6 => Fault::KillRunDuringRestore {
                    instance,
                    down: secs(&mut rng, 0.5, cap(8.0)),
                    after: Duration::from_millis(rng.gen_range(100..2000)),
                    wipe: rng.gen_bool(0.5),
                },
                7..=8 => {
                    let lo = SESSION_SECS as f64 + 2.0;
                    Fault::StopRun {
                        instance,
                        stopped: secs(&mut rng, lo, (lo + 12.0).min(room.max(lo + 0.5))),
                    }
                }
                9..=10 => Fault::KillSink {
                    down: secs(&mut rng, 0.5, cap(20.0)),
                },
                11..=12 => Fault::StallBroker {
                    node: (brokers == 3).then(|| rng.gen_range(1..=3)),
                    stalled: secs(&mut rng, 5.0, max_stall.min(room.max(5.5))),
                },
                // A broker killed for up to 30 s: its partitions' leaders
                // move to the other two (every topic has three replicas,
                // min.insync.replicas 2), the transaction coordinator too
                // when it was the one; restarted, it catches up and takes
                // its leaderships back.
                15..=18 if brokers == 3 => Fault::KillBroker {
                    node: rng.gen_range(1..=3),
                    down: secs(&mut rng, 2.0, cap(30.0)),
                },
                13..=14 => Fault::RestartPostgres {
                    down: secs(&mut rng, 1.0, cap(10.0)),
                },
                15 => Fault::NetworkLatency {
                    latency: Duration::from_millis(rng.gen_range(50..1500)),
                    lasting: secs(&mut rng, 5.0, (30.0f64).min(room.max(5.5))),
                },
                16 => Fault::NetworkReset {
                    times: rng.gen_range(2..=5),
                    every: Duration::from_millis(rng.gen_range(200..2500)),
                },
                // Longer than the 6 s session timeout and the 10 s
                // transaction timeout, sometimes.
                17 => Fault::NetworkPartition {
                    instance: None,
                    lasting: secs(&mut rng, 5.0, (40.0f64).min(room.max(5.5))),
                },
                18 => Fault::NetworkRefuse {
                    lasting: secs(&mut rng, 5.0, (20.0f64).min(room.max(5.5))),
                },
                // Up to 30 s: with the engine's wait for space (8 s at
                // most) and the reopen, an instance of several holds its
                // partitions back well within the 1 m grace.
                _ => {
                    let session = SESSION_SECS as f64;
                    let stop = rng.gen_bool(0.5).then(|| secs(&mut rng, session + 2.0, session + 4.0));
                    let lo = stop.map_or(5.0, |d| d.as_secs_f64() + 6.0);
                    Fault::StateDiskFull {
                        instance,
                        full: secs(&mut rng, lo, (30.0f64).min(room.max(lo + 0.5))),
                        stop,
                    }
                }
            };
            // A restart may become a stranded connection below.
            let stranded = Fault::PostgresStranded { after: Duration::ZERO };
            if allowed(&fault) || matches!(fault, Fault::RestartPostgres { .. }) && allowed(&stranded) {
                break fault;
            }
        };
        let len = fault.length().as_secs_f64();
        steps.push(Step {
            at: Duration::from_secs_f64(t),
            fault,
        });
        t += len + rng.gen_range(3.0..12.0);
    }
    // With several instances, half the partitions cut off one of them
    // only: drawn from a generator of their own, so that the draws above
    // stay those of the seed from before one-instance partitions existed.
    let mut prng = <StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x1507);
    for step in &mut steps {
        if let Fault::NetworkPartition { instance, .. } = &mut step.fault {
            if instances > 1 && prng.gen_bool(0.5) {
                *instance = Some(prng.gen_range(0..instances));
            }
        }
    }
    // Half the Postgres restarts become stranded sink connections, drawn
    // apart too.
    let mut grng = <StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x5C1);
    let restarts = allowed(&Fault::RestartPostgres { down: Duration::ZERO });
    let strands = allowed(&Fault::PostgresStranded { after: Duration::ZERO });
    for step in &mut steps {
        if let Fault::RestartPostgres { down } = step.fault {
            let strand = grng.gen_bool(0.5);
            if strands && (strand || !restarts) {
                step.fault = Fault::PostgresStranded { after: down };
            }
        }
    }
    let bursts = rng.gen_range(1..=3);
    for _ in 0..bursts {
        let step = Step {
            at: secs(&mut rng, 1.0, f - 1.0),
            fault: Fault::BadPayloads {
                count: rng.gen_range(5..40),
            },
        };
        if allowed(&step.fault) {
            steps.push(step);
        }
    }
    // Drawn from a generator of their own, so that the draws above stay
    // those of the seed from before these existed.
    let mut trng = <StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x7_1AE);
    let field_time = trng.gen_bool(0.5) || only.iter().any(|k| k == "far-future-timestamps");
    if field_time {
        for _ in 0..trng.gen_range(1..=2) {
            let step = Step {
                at: secs(&mut trng, 1.0, f - 1.0),
                fault: Fault::FarFutureTimestamps {
                    count: trng.gen_range(1..10),
                },
            };
            if allowed(&step.fault) {
                steps.push(step);
            }
        }
    }
    steps.sort_by_key(|s| s.at);
    Plan {
        field_time,
        seed,
        instances,
        brokers,
        feed,
        rate: 50,
        sim_seed,
        steps,
    }
}

#[cfg(test)]
mod tests {
    //! The draw alone (no services): runs in plain `cargo test`.

    use super::*;

    const FEED: Duration = Duration::from_secs(90);

    #[test]
    fn draw_yields_every_step_kind_within_bounds() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..300 {
            let plan = draw(seed, FEED, &[], 1);
            let plan_instances = plan.instances;
            for s in plan.steps {
                seen.insert(s.fault.kind());
                let secs = |d: &Duration| d.as_secs_f64();
                match &s.fault {
                    Fault::NetworkLatency { latency, lasting } => {
                        assert!((50..1500).contains(&(latency.as_millis() as u64)), "{s}");
                        assert!((5.0..=30.0).contains(&secs(lasting)), "{s}");
                    }
                    Fault::NetworkReset { times, every } => {
                        assert!((2..=5).contains(times), "{s}");
                        assert!(secs(every) < 2.5, "{s}");
                    }
                    Fault::NetworkPartition { lasting, instance } => {
                        assert!((5.0..=40.0).contains(&secs(lasting)), "{s}");
                        if let Some(i) = instance {
                            seen.insert("network partition of one instance");
                            assert!(*i < plan_instances, "{s}");
                        }
                    }
                    Fault::NetworkRefuse { lasting } => assert!((5.0..=20.0).contains(&secs(lasting)), "{s}"),
                    _ => {}
                }
            }
        }
        let want = [
            "kill run",
            "kill run after commit",
            "kill run during restore",
            "stop run",
            "kill sink",
            "stall broker",
            "restart postgres",
            "postgres stranded",
            "network latency",
            "network reset",
            "network partition",
            "network partition of one instance",
            "network refuse",
            "bad payloads",
            "far-future timestamps",
        ];
        for k in want {
            assert!(seen.contains(k), "{k} never drawn in 300 seeds");
        }
    }

    #[test]
    fn only_draws_the_named_kinds() {
        let only: Vec<String> = ["network-partition", "network-refuse"].map(String::from).to_vec();
        let mut n = 0;
        for seed in 0..50 {
            let plan = draw(seed, FEED, &only, 1);
            for s in &plan.steps {
                assert!(
                    matches!(s.fault, Fault::NetworkPartition { .. } | Fault::NetworkRefuse { .. }),
                    "{s}"
                );
                n += 1;
            }
        }
        assert!(n >= 50, "{n} steps in 50 seeds");
        // The same seed draws the same plan.
        assert_eq!(
            format!("{:?}", draw(7, FEED, &[], 1)),
            format!("{:?}", draw(7, FEED, &[], 1))
        );
    }

    #[test]
    fn three_brokers_draw_broker_kills_instead_of_network_faults() {
        let mut kills = 0;
        let mut stalled_nodes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let one = draw(seed, FEED, &[], 1);
            let three = draw(seed, FEED, &[], 3);
            assert_eq!(three.brokers, 3);
            assert_eq!(one.instances, three.instances, "seed {seed}");
            for s in &three.steps {
                match &s.fault {
                    Fault::NetworkLatency { .. }
                    | Fault::NetworkReset { .. }
                    | Fault::NetworkPartition { .. }
                    | Fault::NetworkRefuse { .. } => panic!("seed {seed}: a network fault with 3 brokers: {s}"),
                    Fault::KillBroker { node, down } => {
                        assert!((1..=3).contains(node), "{s}");
                        assert!((0.6..=30.0).contains(&down.as_secs_f64()), "{s}");
                        kills += 1;
                    }
                    Fault::StallBroker { node, .. } => {
                        stalled_nodes.insert(node.expect("a node of the three"));
                    }
                    _ => {}
                }
            }
            for s in &one.steps {
                assert!(!matches!(s.fault, Fault::KillBroker { .. }), "seed {seed}: {s}");
                if let Fault::StallBroker { node, .. } = s.fault {
                    assert_eq!(node, None, "{s}");
                }
            }
        }
        assert!(kills >= 50, "{kills} broker kills in 200 seeds");
        assert_eq!(
            stalled_nodes.len(),
            3,
            "every node stalled some time: {stalled_nodes:?}"
        );
    }
}
