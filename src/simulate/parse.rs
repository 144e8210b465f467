//! Parsers for `weir simulate`'s option values: rates (`100`, `100/s`),
//! start times (RFC 3339 or KST wall clock) and ratios. Durations use the
//! one grammar of [`crate::support::duration`].

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Records per second: `100`, `100/s` or `2.5`; `0` means as fast as
/// possible.
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let rate: f64 = t
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate {s:?}: expected records per second, e.g. 100 or 100/s"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("invalid rate {s:?}: must be 0 or more"));
    }
    Ok(rate)
}

/// A share between 0 and 1.
pub(crate) fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid ratio {s:?}: expected a number between 0 and 1"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("invalid ratio {s:?}: must be between 0 and 1"));
    }
    Ok(r)
}

/// A positive finite number (speed-up factor).
pub(crate) fn parse_speedup(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid speed-up {s:?}: expected a number, e.g. 1440"))?;
    if !x.is_finite() || x <= 0.0 {
        return Err(format!("invalid speed-up {s:?}: must be more than 0"));
    }
    Ok(x)
}

/// A start time: RFC 3339 (`2025-03-20T14:00:00+09:00`), or a wall-clock
/// time in Korea Standard Time (`2025-03-20 14:00:00`, `2025-03-20 14:00`,
/// `2025-03-20T14:00:00`, `2025-03-20`), or `now`.
pub(crate) fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(Utc::now());
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return check_range(dt.with_timezone(&Utc), s);
    }
    let kst = FixedOffset::east_opt(9 * 3600).ok_or("bad KST offset")?;
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    match naive.and_then(|n| kst.from_local_datetime(&n).single()) {
        Some(dt) => check_range(dt.with_timezone(&Utc), s),
        None => Err(format!(
            "invalid start time {s:?}: use RFC 3339 (2025-03-20T14:00:00+09:00) or KST \"YYYY-MM-DD HH:MM:SS\""
        )),
    }
}

fn check_range(dt: DateTime<Utc>, s: &str) -> Result<DateTime<Utc>, String> {
    // Keep every simulated instant printable as a four-digit year.
    let min = Utc.with_ymd_and_hms(1971, 1, 1, 0, 0, 0).single();
    let max = Utc.with_ymd_and_hms(9000, 1, 1, 0, 0, 0).single();
    match (min, max) {
        (Some(min), Some(max)) if dt >= min && dt < max => Ok(dt),
        _ => Err(format!("start time {s:?} is out of range (1971–9000)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_ratios_speedups() {
        assert_eq!(parse_rate("100"), Ok(100.0));
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert!(parse_rate("-1").is_err() && parse_rate("fast").is_err());
        assert_eq!(parse_ratio("0.1"), Ok(0.1));
        assert!(parse_ratio("1.1").is_err());
        assert_eq!(parse_speedup("1440"), Ok(1440.0));
        assert!(parse_speedup("0").is_err());
    }

    #[test]
    fn start_times() {
        let expected = Utc.with_ymd_and_hms(2025, 3, 20, 5, 26, 30).unwrap();
        assert_eq!(parse_start("2025-03-20 14:26:30"), Ok(expected));
        assert_eq!(parse_start("2025-03-20T14:26:30"), Ok(expected));
        assert_eq!(parse_start("2025-03-20T14:26:30+09:00"), Ok(expected));
        assert_eq!(parse_start("2025-03-20T05:26:30Z"), Ok(expected));
        assert_eq!(
            parse_start("2025-03-20"),
            Ok(Utc.with_ymd_and_hms(2025, 3, 19, 15, 0, 0).unwrap())
        );
        assert!(parse_start("yesterday").is_err());
        assert!(parse_start("now").is_ok());
    }
}
