//! The chaos run's checker, independent of the engine: the expectation is
//! `engine_common::expected` / `expected_lots` over the input topic read
//! back; the engine's output topics (read_committed and
//! read_uncommitted), the sink's Postgres table and the processes' exit
//! statuses and logs are compared with it. Counts anomalies instead of
//! failing at the first one.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde_json::Value;

use crate::common::Rec;

/// What one run found. Every count but `aborted`, `late`, `state_errors` and `dead_letters`
/// is an anomaly when non-zero.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub inputs: usize,
    pub windows: usize,
    /// Samples missing from the windows' first emissions (missing windows
    /// count all of theirs).
    pub lost: u64,
    /// Samples too many in the windows' first emissions (windows that
    /// should not exist count all of theirs).
    pub duplicated: u64,
    /// Windows emitted more than once on the output topic (read_committed).
    pub twice: usize,
    /// Windows whose first emission has the right samples but another
    /// region or average.
    pub wrong: usize,
    /// Committed output records (read_committed) that are not exactly an
    /// expected window: an aborted or zombie record visible, or a wrong
    /// result.
    pub bad_committed: usize,
    /// Records on the hourly and lot topics read_uncommitted but not
    /// read_committed (aborted transactions): not an anomaly, shows that
    /// faults hit open transactions.
    pub aborted: i64,
    /// Lots whose last status on the lot topic differs from the expectation
    /// (or is missing, or should not be there).
    pub lots_wrong: usize,
    /// Regions whose free spots now (the free-now topic's last record)
    /// differ from the lots' latest statuses added up (or are missing, or
    /// should not be there).
    pub regions_wrong: usize,
    /// Records of the feed with a wrong-clock event time (runs with
    /// `field_time`): not an anomaly.
    pub wrong_clocks: usize,
    /// How far the dead-letter topic's count of event-time rejections is
    /// from `wrong_clocks` (missing or repeated).
    pub wrong_clocks_unaccounted: usize,
    /// Rows of the Postgres table missing, extra or different.
    pub pg_wrong: usize,
    /// First Postgres difference, for the report.
    pub pg_detail: String,
    /// `weir_offset_regressions_total`, summed over every scrape before a
    /// kill or a stop; `None` if no `weir run` exported it.
    pub regressions: Option<f64>,
    /// `weir_dropped_records_total{reason="late"}`, summed the same way.
    pub late: f64,
    /// `weir_state_errors_total{kind="disk_full"}` (informational: state
    /// writes that failed on a full disk), summed the same way.
    pub state_errors: f64,
    /// Processes that did not exit 0 on SIGTERM.
    pub unhealthy: Vec<String>,
    /// Log lines with a panic (any incarnation of any process).
    pub panics: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Set when the run could not complete (a process died, a wait timed
    /// out): the panic message.
    pub failure: Option<String>,
}

impl Findings {
    pub fn anomalies(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |n: u64, what: &str| {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        };
        add(self.lost, "samples lost");
        add(self.duplicated, "samples counted twice");
        add(self.twice as u64, "windows emitted twice");
        add(self.wrong as u64, "windows with a wrong average");
        add(self.bad_committed as u64, "committed output records not expected");
        add(self.lots_wrong as u64, "lots with a wrong latest status");
        add(self.regions_wrong as u64, "regions with wrong free spots now");
        add(self.pg_wrong as u64, "Postgres rows wrong");
        add(
            self.wrong_clocks_unaccounted as u64,
            "wrong-clock records not dead-lettered exactly once",
        );
        add(self.regressions.unwrap_or(0.0) as u64, "offset regressions");
        add(self.unhealthy.len() as u64, "processes not exiting cleanly");
        add(self.panics.len() as u64, "panics in logs");
        if let Some(f) = &self.failure {
            out.push(format!("run failed: {}", f.lines().next().unwrap_or_default()));
        }
        out
    }
}

/// (region_code, window start ms).
type WindowKey = (String, i64);
/// (region, average, samples) of an emitted window.
type Emitted = (String, f64, u64);

/// An hourly result: (region_code, window start ms) → (region, avg, samples).
fn window(r: &Rec) -> Option<(WindowKey, Emitted)> {
    let v: Value = serde_json::from_slice(r.value.as_deref()?).ok()?;
    let start = chrono::DateTime::parse_from_rfc3339(v["window_start"].as_str()?)
        .ok()?
        .timestamp_millis();
    Some((
        (v["region_code"].as_str()?.to_string(), start),
        (
            v["region"].as_str()?.to_string(),
            v["avg_available_spots"].as_f64()?,
            v["samples"].as_u64()?,
        ),
    ))
}

/// Compares the hourly output (read_committed `committed`) with `want`
/// (`engine_common::expected` of the inputs read back).
pub fn check_windows(
    committed: &[Rec],
    uncommitted: usize,
    want: &BTreeMap<WindowKey, (String, f64, u64)>,
    f: &mut Findings,
) {
    f.windows = want.len();
    f.aborted = uncommitted as i64 - committed.len() as i64;
    let mut seen: BTreeMap<WindowKey, Vec<Emitted>> = BTreeMap::new();
    for r in committed {
        match window(r) {
            Some((k, v)) => seen.entry(k).or_default().push(v),
            None => f.bad_committed += 1,
        }
    }
    for (k, (region, sum, n)) in want {
        let avg = sum / *n as f64;
        let Some(emits) = seen.get(k) else {
            f.lost += n;
            continue;
        };
        if emits.len() > 1 {
            f.twice += 1;
        }
        let (g_region, g_avg, g_n) = &emits[0];
        if g_n < n {
            f.lost += n - g_n;
        } else if g_n > n {
            f.duplicated += g_n - n;
        } else if g_region != region || (g_avg - avg).abs() >= 1e-6 {
            f.wrong += 1;
        }
        f.bad_committed += emits
            .iter()
            .filter(|(r, a, s)| r != region || s != n || (a - avg).abs() >= 1e-6)
            .count();
    }
    for (k, emits) in &seen {
        if !want.contains_key(k) {
            f.duplicated += emits[0].2;
            f.bad_committed += emits.len();
        }
    }
}

/// Compares the lot topic's last record per lot (sentinel lots `S-…`
/// left out) with `want` (`engine_common::expected_lots`).
pub fn check_lots(records: &[Rec], want: &BTreeMap<String, Value>, f: &mut Findings) {
    let mut last: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for r in records {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        if key.starts_with("S-") {
            continue;
        }
        last.insert(key, r.value.as_deref().and_then(|v| serde_json::from_slice(v).ok()));
    }
    for (k, v) in want {
        if last.get(k).and_then(Option::as_ref) != Some(v) {
            f.lots_wrong += 1;
        }
    }
    f.lots_wrong += last.keys().filter(|k| !want.contains_key(*k)).count();
}

/// Free spots per region: region code → (region, district, spots, lots).
pub type FreeNow = BTreeMap<String, (String, Option<String>, i64, i64)>;

/// Regions of `got` missing from, extra to or different from `want`, and
/// the first difference.
pub fn diff_free_now(got: &FreeNow, want: &FreeNow) -> (usize, String) {
    let mut diffs = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("region {k}: got {:?}, want {v:?}", got.get(k)))
        .chain(
            got.iter()
                .filter(|(k, _)| !want.contains_key(*k))
                .map(|(k, v)| format!("unexpected region {k}: {v:?}")),
        );
    let first = diffs.next();
    let n = first.iter().count() + diffs.count();
    (n, first.unwrap_or_default())
}

pub type Rows = BTreeMap<(String, NaiveDateTime), (String, f64, i64)>;

/// Rows of `got` missing from, extra to or different from `want`, and
/// the first difference.
pub fn diff_rows(got: &Rows, want: &Rows) -> (usize, String) {
    let mut n = 0;
    let mut first = String::new();
    let mut note = |s: String| {
        if first.is_empty() {
            first = s;
        }
    };
    for (k, (region, avg, samples)) in want {
        match got.get(k) {
            None => {
                n += 1;
                note(format!("no row for {k:?}"));
            }
            Some((g_region, g_avg, g_samples))
                if g_region != region || g_samples != samples || (g_avg - avg).abs() >= 1e-6 =>
            {
                n += 1;
                note(format!(
                    "row {k:?}: got ({g_region}, {g_avg}, {g_samples}), want ({region}, {avg}, {samples})"
                ));
            }
            Some(_) => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        n += 1;
        note(format!("unexpected row {k:?}"));
    }
    (n, first)
}

/// Lines of `text` that show a panic.
pub fn panic_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("panicked at") || l.contains("RUST_BACKTRACE"))
        .map(|l| l.chars().take(300).collect())
        .collect()
}

/// A dead letter rejected for its event time (beyond `max_future`, or
/// before 1970).
pub fn is_wrong_clock(d: &Rec) -> bool {
    d.headers
        .get("weir.error")
        .is_some_and(|e| e.contains("max_future") || e.contains("before 1970"))
}
