//! Consumer lag of the input partitions, in records and in seconds.
//!
//! Records: the partition's end (the consumer's last known high watermark,
//! no broker round trip) minus the next offset to process. Seconds: how
//! long the oldest unprocessed record has been in the partition, measured
//! on the wall clock like kafka-lag-exporter does, not from record
//! timestamps (those are event times and can be hours old in a backlog or
//! a replay): every measurement remembers when the end offset was seen,
//! and the record at the position has been waiting at least since the
//! first measurement that saw the end past it. 0 when caught up.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use metrics::gauge;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};

fn labels(app: &str, tp: &(String, i32)) -> [(&'static str, String); 3] {
    [
        ("topology", app.to_string()),
        ("topic", tp.0.clone()),
        ("partition", tp.1.to_string()),
    ]
}

/// The partition's end as the consumer last heard it from a fetch (for
/// `read_committed`, librdkafka keeps the last stable offset): no broker
/// round trip, unlike `fetch_watermarks`, so measuring never blocks the
/// loop. `None` until a fetch answered. rdkafka does not wrap
/// `rd_kafka_get_watermark_offsets`.
pub(super) fn cached_end<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives, `topic`
    // is a NUL-terminated string and both out-pointers point to live i64s;
    // the call only reads librdkafka's cached partition state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            rdkafka::consumer::Consumer::client(consumer).native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Measurements kept per partition: at one per second, about a minute of
/// history at full resolution; an older backlog keeps its oldest kept
/// sample and the age is then a lower bound that still grows.
const SAMPLES: usize = 64;

#[derive(Default)]
pub(super) struct LagTracker {
    /// Per partition: (end offset, when seen), oldest first.
    seen: HashMap<(String, i32), VecDeque<(i64, Instant)>>,
}

impl LagTracker {
    /// Record the partition's `end` seen at `now` and return the lag of a
    /// consumer at `position`: (records, seconds).
    pub(super) fn observe(&mut self, tp: (String, i32), end: i64, position: i64, now: Instant) -> (i64, Duration) {
        let samples = self.seen.entry(tp).or_default();
        if samples.back().is_none_or(|(e, _)| *e != end) {
            samples.push_back((end, now));
        }
        // Samples whose end the consumer has reached tell nothing any more.
        while samples.front().is_some_and(|(e, _)| *e <= position) {
            samples.pop_front();
        }
        while samples.len() > SAMPLES {
            // Keep the oldest (it dates the backlog), thin the rest.
            samples.remove(1);
        }
        let records = (end - position).max(0);
        let seconds = match (records, samples.front()) {
            (0, _) | (_, None) => Duration::ZERO,
            (_, Some((_, since))) => now.saturating_duration_since(*since),
        };
        (records, seconds)
    }

    /// Export `weir_consumer_lag` and `weir_consumer_lag_seconds` of every
    /// consumed partition: `positions` (next offset to process) or, when
    /// further, `committed` (which steps over transaction markers).
    pub(super) fn export<C: ConsumerContext>(
        &mut self,
        app: &str,
        consumer: &BaseConsumer<C>,
        positions: &super::TpMap<i64>,
        committed: &super::TpMap<i64>,
        now: Instant,
    ) {
        for (tp, offset) in positions {
            let Some(end) = cached_end(consumer, &tp.0, tp.1) else {
                continue; // no fetch answered yet
            };
            let at = (*offset).max(committed.get(tp).copied().unwrap_or(0));
            let (records, age) = self.observe(tp.clone(), end, at, now);
            let labels = labels(app, tp);
            gauge!("weir_consumer_lag", &labels).set(records as f64);
            gauge!("weir_consumer_lag_seconds", &labels).set(age.as_secs_f64());
        }
    }

    /// Forget a partition (revoked): another instance reports its lag from
    /// now on, so this one's gauges go to 0.
    pub(super) fn forget(&mut self, app: &str, tp: &(String, i32)) {
        if self.seen.remove(tp).is_some() {
            let labels = labels(app, tp);
            gauge!("weir_consumer_lag", &labels).set(0.0);
            gauge!("weir_consumer_lag_seconds", &labels).set(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> (String, i32) {
        ("t".to_string(), 0)
    }

    #[test]
    fn seconds_count_from_when_the_oldest_unprocessed_record_was_first_seen() {
        let mut l = LagTracker::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(l.observe(tp(), 10, 10, t0), (0, Duration::ZERO), "caught up");
        // Records 10..20 arrive; the consumer stays at 10.
        assert_eq!(l.observe(tp(), 20, 10, t0 + s), (10, Duration::ZERO));
        assert_eq!(l.observe(tp(), 30, 10, t0 + 5 * s), (20, 4 * s));
        // Record 15 is next: it was there at t0+1 s.
        assert_eq!(l.observe(tp(), 30, 15, t0 + 6 * s), (15, 5 * s));
        // Record 25 is next: first seen at t0+5 s.
        assert_eq!(l.observe(tp(), 30, 25, t0 + 7 * s), (5, 2 * s));
        assert_eq!(
            l.observe(tp(), 30, 30, t0 + 8 * s),
            (0, Duration::ZERO),
            "caught up again"
        );
        assert_eq!(l.observe(tp(), 31, 30, t0 + 9 * s), (1, Duration::ZERO));
        assert_eq!(
            l.observe(tp(), 31, 30, t0 + 12 * s),
            (1, 3 * s),
            "an unchanged end keeps its first sighting"
        );
    }

    #[test]
    fn a_long_backlog_keeps_its_oldest_sample() {
        let mut l = LagTracker::default();
        let t0 = Instant::now();
        for i in 0..1000u64 {
            l.observe(tp(), 100 + i as i64, 0, t0 + Duration::from_secs(i));
        }
        let (records, age) = l.observe(tp(), 2000, 0, t0 + Duration::from_secs(1000));
        assert_eq!(records, 2000);
        assert_eq!(age, Duration::from_secs(1000));
        assert!(l.seen[&tp()].len() <= SAMPLES + 1);
    }
}
