//! The daily occupancy curve: how full Seoul's lots are at each hour of the
//! day, Korea Standard Time. Quiet at night, filling from 7–8 am, busiest
//! from late morning to early evening, emptying after 8 pm.

use super::catalog::LotProfile;

/// Seconds east of UTC of Korea Standard Time (no daylight saving).
pub(crate) const KST_OFFSET_SECS: i64 = 9 * 3600;

/// Relative demand at each full KST hour (0–24; 24 repeats 0). Values in
/// between are interpolated linearly.
const HOURLY: [f64; 25] = [
    0.20, 0.15, 0.10, 0.07, 0.05, 0.06, 0.10, 0.20, 0.36, 0.54, 0.70, 0.82, 0.88, 0.91, 0.93, 0.93, 0.91, 0.88, 0.85,
    0.79, 0.68, 0.53, 0.39, 0.28, 0.20,
];

/// The KST hour of day (`0.0 ≤ h < 24.0`) of an epoch-millisecond instant.
pub(crate) fn kst_hour(timestamp_ms: i64) -> f64 {
    let secs = timestamp_ms.div_euclid(1000) + KST_OFFSET_SECS;
    secs.rem_euclid(86_400) as f64 / 3600.0
}

/// Demand in `[0, 1]` at KST hour `hour` (any real; wrapped to a day).
pub(crate) fn demand(hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    let i = (h.floor() as usize).min(23);
    let frac = h - i as f64;
    HOURLY[i] + (HOURLY[i + 1] - HOURLY[i]) * frac
}

/// Expected occupancy share (before noise) of a lot with `profile` at
/// `timestamp_ms`.
pub(crate) fn expected_share(profile: &LotProfile, timestamp_ms: i64) -> f64 {
    let d = demand(kst_hour(timestamp_ms) - profile.shift_hours);
    profile.floor + (profile.peak - profile.floor) * d
}

/// Cars parked in a lot of `capacity` with occupancy share `share`
/// (clamped, so never negative and never above capacity).
pub(crate) fn occupied(capacity: u32, share: f64) -> u32 {
    let share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.0 };
    ((f64::from(capacity) * share).round() as u32).min(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kst_hour_is_utc_plus_nine() {
        // 2025-03-20T05:26:30Z = 14:26:30 KST.
        let ms = 1_742_448_390_000;
        assert!((kst_hour(ms) - (14.0 + 26.5 / 60.0)).abs() < 1e-9);
        // 15:00 UTC is midnight KST.
        assert_eq!(kst_hour(1_742_482_800_000), 0.0);
    }

    #[test]
    fn demand_is_low_at_night_and_high_in_the_afternoon() {
        for h in 2..5 {
            for q in 0..4 {
                let night = demand(h as f64 + q as f64 * 0.25);
                assert!(night < 0.2, "{h}: {night}");
            }
        }
        for h in 13..17 {
            assert!(demand(h as f64 + 0.5) > 0.8);
        }
        assert!((demand(24.0) - demand(0.0)).abs() < 1e-12);
        assert!((0..240).all(|t| (0.0..=1.0).contains(&demand(t as f64 / 10.0))));
    }

    #[test]
    fn occupied_never_exceeds_capacity() {
        for cap in [0, 1, 2, 22, 1260] {
            for share in [-1.0, 0.0, 0.3, 0.999, 1.0, 1.7, f64::NAN, f64::INFINITY] {
                assert!(occupied(cap, share) <= cap);
            }
        }
        assert_eq!(occupied(22, 0.5), 11);
    }
}
