//! Retry pacing shared by every retry loop: exponential backoff with
//! jitter, a cap, an optional overall deadline, and sleeps that end early
//! when a shutdown flag is set.
//!
//! Written here rather than taken from a crate: `backoff` is unmaintained,
//! and `backon` drives a closure to completion, while weir's loops decide
//! per error what to do (retry, re-seek, give up, switch to a shutdown
//! deadline). All they need is the next delay and an interruptible sleep.
//!
//! ```ignore
//! use crate::support::backoff::{sleep_unless, Backoff};
//! let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! loop {
//!     match try_it() {
//!         Ok(v) => break Ok(v),
//!         Err(e) if transient(&e) => {
//!             if shutdown.load(Ordering::SeqCst) {
//!                 backoff.deadline_within(GRACE); // finish up, but not forever
//!             }
//!             let Some(delay) = backoff.next_delay() else { break Err(e) }; // deadline passed
//!             tracing::warn!(error = %e, retry_in = ?delay, "retrying");
//!             if sleep_unless(&shutdown, delay) {
//!                 break Err(e); // asked to stop
//!             }
//!         }
//!         Err(e) => break Err(e),
//!     }
//! }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

/// How often an interrupted sleep looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(50);

/// Delays for successive retries: `first`, doubling up to `max`, each
/// drawn at random from its upper half (so instances that failed together
/// do not retry in lockstep), never past the deadline.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Option<Instant>,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first,
            max: max.max(first),
            deadline: None,
            attempt: 0,
        }
    }

    /// Give up `total` from now unless a deadline is already set (e.g.
    /// when a shutdown starts, keep trying for a grace period).
    pub(crate) fn deadline_within(&mut self, total: Duration) {
        self.deadline.get_or_insert_with(|| Instant::now() + total);
    }

    /// Delays handed out so far.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The next delay, or `None` once the deadline has passed.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        let remaining = match self.deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return None,
            },
            None => None,
        };
        let full = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempt += 1;
        let jittered = full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        Some(remaining.map_or(jittered, |r| jittered.min(r)))
    }
}

/// Sleep `d` on this thread, waking early if `stop` becomes true; returns
/// whether it is (for callers that log the delay before sleeping).
pub(crate) fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(left.min(POLL));
    }
    stop.load(Ordering::SeqCst)
}

/// [`sleep_unless`] for async code.
pub(crate) async fn sleep_unless_async(stop: &AtomicBool, d: Duration) -> bool {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep_until(until.min(tokio::time::Instant::now() + POLL)).await;
    }
    stop.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let full = [100, 200, 400, 800, 1000, 1000, 1000];
        for (i, f) in full.iter().enumerate() {
            let d = b.next_delay().unwrap();
            let f = *f * MS;
            assert!(d >= f / 2 && d <= f, "delay {i}: {d:?} not in [{:?}, {f:?}]", f / 2);
        }
        assert_eq!(b.attempt(), full.len() as u32);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            seen.insert(Backoff::new(1000 * MS, 1000 * MS).next_delay().unwrap());
        }
        assert!(seen.len() > 1, "20 first delays were all equal");
    }

    #[test]
    fn deadline_clips_and_expires() {
        let mut b = Backoff::new(1000 * MS, 5000 * MS);
        b.deadline_within(30 * MS);
        assert!(b.next_delay().unwrap() <= 30 * MS);
        std::thread::sleep(40 * MS);
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn the_first_deadline_stays() {
        let mut b = Backoff::new(MS, MS);
        b.deadline_within(Duration::ZERO);
        b.deadline_within(Duration::from_secs(60));
        assert_eq!(b.next_delay(), None);
    }

    #[test]
    fn shutdown_ends_a_sleep_early() {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let setter = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(100 * MS);
            setter.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        assert!(sleep_unless(&stop, Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        t.join().unwrap();
        assert!(
            !sleep_unless(&AtomicBool::new(false), 20 * MS),
            "not stopped: slept it out"
        );
    }

    #[tokio::test]
    async fn async_sleep_ends_early_on_shutdown() {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        assert!(!sleep_unless_async(&stop, 20 * MS).await);
        assert!(started.elapsed() >= 20 * MS);
        stop.store(true, Ordering::SeqCst);
        let started = Instant::now();
        assert!(sleep_unless_async(&stop, Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
