//! The pure record generator: catalog sweep, occupancy, bad and late
//! injection. No I/O and no clock of its own, so the same seed and options
//! always give the same records; `weir simulate` feeds them to Kafka or a
//! file.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use chrono::DateTime;

use super::catalog::{catalog, Catalog};
use super::curve;
use super::payload::BadKind;
use super::payload::Snapshot;
use super::SimulateError;
use crate::kafka::partition_for;

/// How far behind stream time a late record is: 1–3 hours.
const LATE_MIN_SECS: i64 = 3600;
const LATE_MAX_SECS: i64 = 3 * 3600;

/// Standard deviation of the per-lot occupancy noise and how much of it
/// carries over from one poll of the lot to the next.
const NOISE_SD: f64 = 0.06;
const NOISE_CARRY: f64 = 0.8;

/// Options of the generator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GeneratorOptions {
    /// Seeds every random choice; same seed and options, same records.
    pub seed: u64,
    /// Event time of the first record (epoch ms; rounded down to a second).
    pub start_ms: i64,
    /// Partition count used to place keys (`murmur2(key) % partitions`).
    pub partitions: i32,
    /// Simulated time one sweep over every lot takes when the generator's own
    /// clock is used (the `Iterator` implementation).
    pub sweep_interval_ms: i64,
    /// Share of records that are malformed (`0.0..=1.0`).
    pub bad_ratio: f64,
    /// Share of records stamped 1–3 hours behind stream time.
    pub late_ratio: f64,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            // 2025-03-20 00:00:00 KST, the day of the captured poll.
            start_ms: 1_742_396_400_000,
            partitions: 3,
            sweep_interval_ms: 5 * 60 * 1000,
            bad_ratio: 0.0,
            late_ratio: 0.0,
        }
    }
}

/// Why a record was generated the way it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RecordKind {
    /// A well-formed, on-time snapshot.
    Good,
    /// A well-formed snapshot stamped 1–3 hours behind stream time.
    Late,
    /// A malformed payload.
    Bad(BadKind),
}

/// One generated Kafka record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimRecord {
    /// `murmur2(key) % partitions`, what Kafka's default partitioner picks.
    pub partition: i32,
    /// Kafka record timestamp = event time, epoch milliseconds (whole
    /// seconds, like `LAST_UPDATE`).
    pub timestamp_ms: i64,
    /// The lot's `PARKING_CODE`.
    pub key: String,
    /// The raw value (normally UTF-8 JSON; not for some bad records).
    pub payload: Vec<u8>,
    pub kind: RecordKind,
}

impl SimRecord {
    /// The payload as text, if it is valid UTF-8.
    pub(crate) fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }
}

/// A deterministic stream of parking records. As an `Iterator` it runs its
/// own simulated clock (one sweep over all lots per `sweep_interval_ms`);
/// [`Generator::next_at`] stamps a record with a caller's clock instead.
#[derive(Debug, Clone)]
pub(crate) struct Generator {
    catalog: &'static Catalog,
    opts: GeneratorOptions,
    rng: ChaCha8Rng,
    sweep: Vec<(usize, usize)>,
    /// Partition of each lot, by lot index.
    lot_partition: Vec<i32>,
    /// Occupancy noise of each lot, carried from poll to poll.
    noise: Vec<f64>,
    cursor: usize,
    produced: u64,
    /// Stream time per partition: the largest timestamp generated so far.
    partition_max: Vec<Option<i64>>,
}

/// Build a generator. Fails only on options out of range.
pub(crate) fn generator(opts: GeneratorOptions) -> Result<Generator, SimulateError> {
    Generator::new(opts)
}

impl Generator {
    pub(crate) fn new(opts: GeneratorOptions) -> Result<Self, SimulateError> {
        let ratio_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !ratio_ok(opts.bad_ratio) || !ratio_ok(opts.late_ratio) || opts.bad_ratio + opts.late_ratio > 1.0 {
            return Err(SimulateError::InvalidOption(format!(
                "bad ratio ({}) and late ratio ({}) must be in 0..=1 and add up to at most 1",
                opts.bad_ratio, opts.late_ratio
            )));
        }
        if opts.partitions < 1 {
            return Err(SimulateError::InvalidOption(format!(
                "partitions must be at least 1, not {}",
                opts.partitions
            )));
        }
        if opts.sweep_interval_ms < 0 {
            return Err(SimulateError::InvalidOption(
                "the poll interval cannot be negative".into(),
            ));
        }
        if DateTime::from_timestamp_millis(opts.start_ms).is_none() {
            return Err(SimulateError::InvalidOption(format!(
                "start time {} ms is out of range",
                opts.start_ms
            )));
        }
        let catalog = catalog()?;
        let sweep = catalog.sweep();
        if sweep.is_empty() {
            return Err(SimulateError::Catalog("no lots".into()));
        }
        let lot_partition = catalog
            .lots
            .iter()
            .map(|l| partition_for(Some(l.code.as_bytes()), opts.partitions, 0))
            .collect();
        Ok(Self {
            catalog,
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            noise: vec![0.0; catalog.lots.len()],
            partition_max: vec![None; opts.partitions as usize],
            sweep,
            lot_partition,
            cursor: 0,
            produced: 0,
            opts,
        })
    }

    /// Records in one sweep over every lot of every region.
    pub(crate) fn records_per_sweep(&self) -> usize {
        self.sweep.len()
    }

    /// Event time of the next record on the generator's own clock:
    /// `start + n × sweep_interval / records_per_sweep`, whole seconds.
    pub(crate) fn next_time(&self) -> i64 {
        let step = i128::from(self.opts.sweep_interval_ms) * i128::from(self.produced) / self.sweep.len() as i128;
        let t = i64::try_from(i128::from(self.opts.start_ms) + step).unwrap_or(i64::MAX);
        floor_second(t)
    }

    /// The next record, polled at `now_ms` (epoch ms, rounded down to a
    /// second). Late records are stamped behind their partition's stream
    /// time instead.
    pub(crate) fn next_at(&mut self, now_ms: i64) -> SimRecord {
        let (r, l) = self.sweep[self.cursor];
        self.cursor = (self.cursor + 1) % self.sweep.len();
        self.produced += 1;
        let region = &self.catalog.regions[r];
        let lot = &self.catalog.lots[l];
        let partition = self.lot_partition[l];
        let p = partition as usize;

        // Draw a fixed number of values per record, whatever its kind, so a
        // change of ratio does not reshuffle the rest of the stream.
        let u_kind: f64 = self.rng.gen();
        let u_detail: f64 = self.rng.gen();
        let u_variant: u32 = self.rng.gen();
        let z = gaussian(&mut self.rng);
        self.noise[l] = NOISE_CARRY * self.noise[l] + (1.0 - NOISE_CARRY * NOISE_CARRY).sqrt() * NOISE_SD * z;

        let mut kind = if u_kind < self.opts.bad_ratio {
            RecordKind::Bad(BadKind::ALL[(u_variant % 4) as usize])
        } else if u_kind < self.opts.bad_ratio + self.opts.late_ratio {
            RecordKind::Late
        } else {
            RecordKind::Good
        };

        let mut timestamp_ms = floor_second(now_ms);
        if kind == RecordKind::Late {
            match self.partition_max[p] {
                Some(max) => {
                    let delay = LATE_MIN_SECS + (u_detail * (LATE_MAX_SECS - LATE_MIN_SECS) as f64) as i64;
                    timestamp_ms = max.saturating_sub(delay * 1000);
                }
                // Nothing to be late against yet: the partition's first record.
                None => kind = RecordKind::Good,
            }
        }
        let max = self.partition_max[p].map_or(timestamp_ms, |m| m.max(timestamp_ms));
        self.partition_max[p] = Some(max);

        let share = curve::expected_share(&lot.profile, timestamp_ms) + self.noise[l];
        let occupied = curve::occupied(lot.capacity, share);
        let snapshot = Snapshot {
            region,
            lot,
            occupied,
            timestamp_ms,
        };
        let payload = match kind {
            RecordKind::Good | RecordKind::Late => snapshot.json(None, None),
            RecordKind::Bad(bad) => snapshot.bad(bad, u_detail, u_variant / 4),
        };
        SimRecord {
            partition,
            timestamp_ms,
            key: lot.code.clone(),
            payload,
            kind,
        }
    }
}

impl Iterator for Generator {
    type Item = SimRecord;

    fn next(&mut self) -> Option<SimRecord> {
        let t = self.next_time();
        Some(self.next_at(t))
    }
}

/// A standard normal variate (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn floor_second(ms: i64) -> i64 {
    ms - ms.rem_euclid(1000)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::{NaiveDateTime, TimeZone};
    use serde_json::{Map, Value};

    use super::*;
    use crate::simulate::payload::{format_kst, FIELDS, REQUIRED_FIELDS};

    fn opts(seed: u64) -> GeneratorOptions {
        GeneratorOptions {
            seed,
            ..GeneratorOptions::default()
        }
    }

    fn parse_object(rec: &SimRecord) -> Map<String, Value> {
        match serde_json::from_slice::<Value>(&rec.payload) {
            Ok(Value::Object(m)) => m,
            other => panic!(
                "not an object: {other:?} from {:?}",
                String::from_utf8_lossy(&rec.payload)
            ),
        }
    }

    fn kst_to_ms(s: &str) -> i64 {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("LAST_UPDATE format");
        chrono::FixedOffset::east_opt(9 * 3600)
            .unwrap()
            .from_local_datetime(&naive)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn good_records_have_16_string_fields_in_feed_order() {
        let gen = generator(opts(1)).unwrap();
        let n = gen.records_per_sweep();
        for rec in gen.take(2 * n) {
            assert_eq!(rec.kind, RecordKind::Good);
            let obj = parse_object(&rec);
            assert_eq!(obj.len(), 16);
            for name in FIELDS {
                assert!(obj.get(name).is_some_and(Value::is_string), "{name} in {obj:?}");
            }
            let text = rec.payload_str().unwrap();
            let positions: Vec<usize> = FIELDS
                .iter()
                .map(|f| text.find(&format!("\"{f}\":")).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "field order in {text}");
            assert_eq!(obj["PARKING_CODE"], rec.key);
            assert_eq!(rec.partition, partition_for(Some(rec.key.as_bytes()), 3, 0));
            let cap: u32 = obj["CAPACITY"].as_str().unwrap().parse().unwrap();
            match obj["IS_REALTIME_STATUS_PROVIDED"].as_str().unwrap() {
                "Y" => {
                    let occ: u32 = obj["OCCUPIED_SPOTS"].as_str().unwrap().parse().unwrap();
                    assert!(occ <= cap);
                    let lu = obj["LAST_UPDATE"].as_str().unwrap();
                    assert_eq!(lu, format_kst(rec.timestamp_ms));
                    assert_eq!(kst_to_ms(lu), rec.timestamp_ms, "LAST_UPDATE is the timestamp in KST");
                }
                "N" => {
                    assert_eq!(obj["OCCUPIED_SPOTS"], "");
                    assert_eq!(obj["LAST_UPDATE"], "");
                }
                other => panic!("flag {other}"),
            }
        }
    }

    #[test]
    fn last_update_is_kst() {
        // 2025-03-20T05:26:30Z.
        assert_eq!(format_kst(1_742_448_390_000), "2025-03-20 14:26:30");
        assert_eq!(format_kst(1_742_448_390_999), "2025-03-20 14:26:30");
    }

    #[test]
    fn own_clock_sweeps_every_lot_once_per_interval() {
        let gen = generator(opts(2)).unwrap();
        let n = gen.records_per_sweep();
        let start = gen.opts.start_ms;
        let recs: Vec<SimRecord> = gen.take(3 * n + 1).collect();
        assert_eq!(recs[0].timestamp_ms, start);
        assert_eq!(recs[n].timestamp_ms, start + 300_000);
        assert_eq!(recs[3 * n].timestamp_ms, start + 900_000);
        assert!(recs.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        assert_eq!(recs[0].key, recs[n].key);
        assert!(recs.iter().all(|r| r.timestamp_ms % 1000 == 0));
    }

    /// Average occupancy share of realtime lots per KST hour over two days.
    #[test]
    fn night_is_quieter_than_afternoon_and_occupancy_stays_within_capacity() {
        let mut gen = generator(GeneratorOptions {
            seed: 3,
            sweep_interval_ms: 20 * 60 * 1000,
            ..opts(3)
        })
        .unwrap();
        let per_day = gen.records_per_sweep() * 72;
        let mut sum = [0.0f64; 24];
        let mut cnt = [0u32; 24];
        for rec in gen.by_ref().take(2 * per_day) {
            let obj = parse_object(&rec);
            if obj["IS_REALTIME_STATUS_PROVIDED"] != "Y" {
                continue;
            }
            let cap: f64 = obj["CAPACITY"].as_str().unwrap().parse().unwrap();
            let occ: f64 = obj["OCCUPIED_SPOTS"].as_str().unwrap().parse().unwrap();
            assert!(occ <= cap && occ >= 0.0, "{occ} > {cap}");
            let h = curve::kst_hour(rec.timestamp_ms) as usize;
            sum[h] += occ / cap;
            cnt[h] += 1;
        }
        let avg = |hours: std::ops::Range<usize>| {
            let s: f64 = hours.clone().map(|h| sum[h]).sum();
            let c: u32 = hours.map(|h| cnt[h]).sum();
            s / f64::from(c)
        };
        let night = avg(2..5);
        let afternoon = avg(13..17);
        assert!(
            night < 0.35 && afternoon > 0.6 && night + 0.3 < afternoon,
            "night {night}, afternoon {afternoon}"
        );
    }

    #[test]
    fn about_ten_percent_of_records_are_not_realtime_and_stable_per_lot() {
        let gen = generator(opts(4)).unwrap();
        let n = gen.records_per_sweep();
        let mut flag: HashMap<String, String> = HashMap::new();
        let mut not_rt = 0;
        for rec in gen.take(3 * n) {
            let obj = parse_object(&rec);
            let f = obj["IS_REALTIME_STATUS_PROVIDED"].as_str().unwrap().to_string();
            if f == "N" {
                not_rt += 1;
            }
            let prev = flag.entry(rec.key.clone()).or_insert_with(|| f.clone());
            assert_eq!(*prev, f, "flag of lot {} changed", rec.key);
        }
        let share = f64::from(not_rt) / (3 * n) as f64;
        assert!((0.05..=0.15).contains(&share), "{share}");
    }

    #[test]
    fn bad_ratio_gives_that_share_of_really_bad_records_of_every_kind() {
        let gen = generator(GeneratorOptions {
            bad_ratio: 0.2,
            ..opts(5)
        })
        .unwrap();
        let total = 10_000;
        let mut by_kind: HashMap<BadKind, usize> = HashMap::new();
        for rec in gen.take(total) {
            let RecordKind::Bad(kind) = rec.kind else {
                // Good ones stay good.
                assert_eq!(parse_object(&rec).len(), 16);
                continue;
            };
            *by_kind.entry(kind).or_default() += 1;
            match kind {
                BadKind::NotJson => {
                    assert!(
                        serde_json::from_slice::<Value>(&rec.payload).is_err(),
                        "{:?}",
                        rec.payload_str()
                    );
                }
                BadKind::InvalidUtf8 => assert!(std::str::from_utf8(&rec.payload).is_err()),
                BadKind::NonNumeric => {
                    let obj = parse_object(&rec);
                    assert_eq!(obj.len(), 16);
                    let cap = obj["CAPACITY"].as_str().unwrap();
                    assert!(cap.parse::<f64>().is_err(), "{cap}");
                }
                BadKind::MissingField => {
                    let obj = parse_object(&rec);
                    assert_eq!(obj.len(), 15);
                    assert!(REQUIRED_FIELDS.iter().any(|f| !obj.contains_key(*f)));
                }
            }
        }
        let bad: usize = by_kind.values().sum();
        let share = bad as f64 / total as f64;
        assert!((0.18..=0.22).contains(&share), "{share}");
        assert_eq!(by_kind.len(), 4, "{by_kind:?}");
        assert!(by_kind.values().all(|&n| n > bad / 8), "{by_kind:?}");
    }

    #[test]
    fn late_records_are_behind_stream_time() {
        let gen = generator(GeneratorOptions {
            late_ratio: 0.1,
            ..opts(6)
        })
        .unwrap();
        let total = 10_000;
        let mut global_max: Option<i64> = None;
        let mut part_max: HashMap<i32, i64> = HashMap::new();
        let mut late = 0;
        for rec in gen.take(total) {
            if rec.kind == RecordKind::Late {
                late += 1;
                let g = global_max.unwrap();
                let p = part_max[&rec.partition];
                assert!(rec.timestamp_ms < g && rec.timestamp_ms < p);
                assert!((3_600_000..=10_800_000).contains(&(p - rec.timestamp_ms)));
                // Late but well-formed, and LAST_UPDATE tells the same time.
                let obj = parse_object(&rec);
                if obj["IS_REALTIME_STATUS_PROVIDED"] == "Y" {
                    assert_eq!(kst_to_ms(obj["LAST_UPDATE"].as_str().unwrap()), rec.timestamp_ms);
                }
            } else if let Some(g) = global_max {
                assert!(rec.timestamp_ms >= g, "on-time records do not go back in time");
            }
            global_max = Some(global_max.map_or(rec.timestamp_ms, |g| g.max(rec.timestamp_ms)));
            let e = part_max.entry(rec.partition).or_insert(rec.timestamp_ms);
            *e = (*e).max(rec.timestamp_ms);
        }
        let share = f64::from(late) / f64::from(total as u32);
        assert!((0.08..=0.12).contains(&share), "{share}");
    }

    #[test]
    fn same_seed_same_records_different_seed_different_records() {
        let o = GeneratorOptions {
            bad_ratio: 0.05,
            late_ratio: 0.05,
            ..opts(42)
        };
        let a: Vec<SimRecord> = generator(o.clone()).unwrap().take(3000).collect();
        let b: Vec<SimRecord> = generator(o.clone()).unwrap().take(3000).collect();
        assert_eq!(a, b);
        let c: Vec<SimRecord> = generator(GeneratorOptions { seed: 43, ..o })
            .unwrap()
            .take(3000)
            .collect();
        assert_ne!(a, c);
        // Same lots in the same order, only the random parts differ.
        assert!(a.iter().zip(&c).all(|(x, y)| x.key == y.key));
    }

    #[test]
    fn next_at_uses_the_callers_clock() {
        let mut gen = generator(opts(7)).unwrap();
        let rec = gen.next_at(1_742_448_390_123);
        assert_eq!(rec.timestamp_ms, 1_742_448_390_000);
    }

    #[test]
    fn invalid_options_are_rejected() {
        assert!(generator(GeneratorOptions {
            bad_ratio: 1.5,
            ..opts(0)
        })
        .is_err());
        assert!(generator(GeneratorOptions {
            bad_ratio: 0.6,
            late_ratio: 0.6,
            ..opts(0)
        })
        .is_err());
        assert!(generator(GeneratorOptions {
            partitions: 0,
            ..opts(0)
        })
        .is_err());
    }
}
