//! `--emit changed`: which lots of a poll differ from the previous poll.
//!
//! The feed repeats every lot every cycle, changed or not. A lot is
//! published again when what the topology computes from it can differ:
//! its occupancy (`OCCUPIED_SPOTS`), its `LAST_UPDATE`, and also its
//! `CAPACITY` and `IS_REALTIME_STATUS_PROVIDED` (the available spots and
//! the real-time filter depend on them). State is per hotspot: the same lot
//! in two hotspots is two messages (their `REGION`s differ), each compared
//! with itself. It lives in memory: the first poll after a start publishes
//! every lot.

use std::collections::HashMap;

use super::citydata::LotStatus;

/// The fields whose change republishes a lot.
pub(crate) const COMPARED: [&str; 4] = [
    "OCCUPIED_SPOTS",
    "LAST_UPDATE",
    "CAPACITY",
    "IS_REALTIME_STATUS_PROVIDED",
];

type Fingerprint = [String; 4];

fn fingerprint(lot: &LotStatus) -> Fingerprint {
    COMPARED.map(|f| lot.get(f).to_string())
}

/// What was last published, per hotspot and lot.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    seen: HashMap<String, HashMap<String, Fingerprint>>,
}

impl Changes {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Split `lots` (one poll of `hotspot`) into the ones to publish and the
    /// number left out as unchanged, and remember this poll as the previous
    /// one. Lots missing from this poll are forgotten, so a lot that comes
    /// back is published again.
    pub(crate) fn select(&mut self, hotspot: &str, lots: Vec<LotStatus>) -> (Vec<LotStatus>, usize) {
        let previous = self.seen.remove(hotspot).unwrap_or_default();
        let mut current = HashMap::with_capacity(lots.len());
        let mut publish = Vec::new();
        let mut unchanged = 0;
        for lot in lots {
            let fp = fingerprint(&lot);
            if previous.get(lot.parking_code()) == Some(&fp) {
                unchanged += 1;
            } else {
                publish.push(lot.clone());
            }
            current.insert(lot.parking_code().to_string(), fp);
        }
        self.seen.insert(hotspot.to_string(), current);
        (publish, unchanged)
    }

    /// A published lot did not reach the broker: forget it, so the next poll
    /// publishes it again even if it has not changed.
    pub(crate) fn forget(&mut self, hotspot: &str, parking_code: &str) {
        if let Some(lots) = self.seen.get_mut(hotspot) {
            lots.remove(parking_code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::FIELDS;

    fn lot(code: &str, occupied: &str, updated: &str) -> LotStatus {
        let mut values: [String; 16] = Default::default();
        for (i, f) in FIELDS.iter().enumerate() {
            values[i] = match *f {
                "PARKING_CODE" => code.to_string(),
                "OCCUPIED_SPOTS" => occupied.to_string(),
                "LAST_UPDATE" => updated.to_string(),
                "CAPACITY" => "20".to_string(),
                "IS_REALTIME_STATUS_PROVIDED" => "Y".to_string(),
                "LATITUDE" => format!("37.{occupied}"),
                _ => String::new(),
            };
        }
        LotStatus { values }
    }

    fn codes(lots: &[LotStatus]) -> Vec<&str> {
        lots.iter().map(LotStatus::parking_code).collect()
    }

    #[test]
    fn an_unchanged_poll_publishes_nothing_and_changes_publish_only_the_lot() {
        let mut c = Changes::new();
        let first = vec![lot("A", "1", "t1"), lot("B", "2", "t1"), lot("C", "", "")];
        let (publish, unchanged) = c.select("POI001", first.clone());
        assert_eq!((codes(&publish), unchanged), (vec!["A", "B", "C"], 0));

        let (publish, unchanged) = c.select("POI001", first);
        assert_eq!((publish.len(), unchanged), (0, 3));

        // Occupancy changed for A, update time for B; C the same.
        let third = vec![lot("A", "2", "t1"), lot("B", "2", "t2"), lot("C", "", "")];
        let (publish, unchanged) = c.select("POI001", third);
        assert_eq!((codes(&publish), unchanged), (vec!["A", "B"], 1));
    }

    #[test]
    fn capacity_and_realtime_flag_count_as_changes_other_fields_do_not() {
        let mut c = Changes::new();
        c.select("P", vec![lot("A", "1", "t1")]);
        let mut moved = lot("A", "1", "t1");
        moved.values[FIELDS.iter().position(|f| *f == "LONGITUDE").unwrap()] = "127".into();
        assert_eq!(c.select("P", vec![moved]).0.len(), 0);
        let mut bigger = lot("A", "1", "t1");
        bigger.values[FIELDS.iter().position(|f| *f == "CAPACITY").unwrap()] = "30".into();
        assert_eq!(c.select("P", vec![bigger]).0.len(), 1);
        let mut not_realtime = lot("A", "1", "t1");
        not_realtime.values[FIELDS.iter().position(|f| *f == "IS_REALTIME_STATUS_PROVIDED").unwrap()] = "N".into();
        assert_eq!(c.select("P", vec![not_realtime]).0.len(), 1);
    }

    #[test]
    fn hotspots_are_separate_and_lots_that_vanish_or_fail_come_back() {
        let mut c = Changes::new();
        c.select("P1", vec![lot("A", "1", "t")]);
        // The same lot in another hotspot is another message.
        assert_eq!(c.select("P2", vec![lot("A", "1", "t")]).0.len(), 1);
        // Gone for a poll, then back unchanged: published again.
        assert_eq!(c.select("P1", vec![]).0.len(), 0);
        assert_eq!(c.select("P1", vec![lot("A", "1", "t")]).0.len(), 1);
        // A failed delivery is retried at the next poll.
        c.forget("P1", "A");
        assert_eq!(c.select("P1", vec![lot("A", "1", "t")]).0.len(), 1);
        assert_eq!(c.select("P1", vec![lot("A", "1", "t")]).0.len(), 0);
    }
}
