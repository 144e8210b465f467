//! Input shared by the engine benchmarks, so `engine` and `weir_peer`
//! measure the same records.

const POLL: &str = include_str!("../../data/citydata_parking_poll.jsonl");

/// Event time of the first benchmark record (2025-03-20 14:26 KST); record
/// `i` is `i` seconds later.
pub const BASE_TS: i64 = 1_742_448_360_000;

/// The captured Seoul poll's records, all marked real-time so every record
/// takes the full path (the real poll has only 54 "Y" among 765), empty
/// LAST_UPDATE filled, keyed by PARKING_CODE.
pub fn records() -> Vec<(Vec<u8>, Vec<u8>)> {
    POLL.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["REGION_CODE"].as_str().is_some_and(|c| c.starts_with("POI")))
        .map(|mut v| {
            v["IS_REALTIME_STATUS_PROVIDED"] = "Y".into();
            if v["LAST_UPDATE"] == "" {
                v["LAST_UPDATE"] = "2025-03-20 14:26:00".into();
            }
            let key = v["PARKING_CODE"].as_str().unwrap_or("").as_bytes().to_vec();
            (key, v.to_string().into_bytes())
        })
        .collect()
}

/// Record `i` of the cycled poll as it arrives on `parking_status`
/// partition 0, at offset `i` and `i` seconds after [`BASE_TS`].
pub fn status_origin(recs: &[(Vec<u8>, Vec<u8>)], i: usize) -> weir::Origin<'_> {
    let (k, v) = &recs[i % recs.len()];
    weir::Origin {
        topic: "parking_status",
        partition: 0,
        offset: i as i64,
        timestamp: BASE_TS + i as i64 * 1000,
        key: Some(k),
        value: Some(v),
    }
}

/// `topology/parking.yaml` without its `free-now-by-region` step and
/// without the hotspot join (its `global_tables` and `with-hotspot` step;
/// the lot table reads `available` again): the job the Kafka Streams and
/// Quix peers implement (hourly averages and the lot table), so both sides
/// do the same work and write the same lot statuses.
#[allow(dead_code)]
pub fn parking_yaml() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml")).unwrap();
    let end = text
        .find(FREE_NOW_STEP)
        .expect("free-now-by-region in topology/parking.yaml");
    let text = cut(&text[..end], GLOBAL_TABLES, "    topic: parking_hotspots\n");
    let text = cut(&text, JOIN_STEP, "        HOTSPOT_CATEGORY: category\n");
    let from = "    from: with-hotspot\n";
    assert!(
        text.contains(from),
        "the lot table reads the join in topology/parking.yaml"
    );
    let text = text.replace(from, "    from: available\n");
    for gone in ["global_tables", "join:", "with-hotspot", "DISTRICT"] {
        assert!(!text.contains(gone), "{gone} left in the peers' parking job:\n{text}");
    }
    text
}

/// `text` without the lines from the one starting with `first` through
/// the one ending with `last` (which must both be there).
fn cut(text: &str, first: &str, last: &str) -> String {
    let start = text
        .find(first)
        .unwrap_or_else(|| panic!("{first:?} in topology/parking.yaml"));
    let end = start
        + text[start..]
            .find(last)
            .unwrap_or_else(|| panic!("{last:?} after {first:?} in topology/parking.yaml"))
        + last.len();
    format!("{}{}", &text[..start], &text[end..])
}

/// The first line of the parking topology's `free-now-by-region` step (its
/// comment); everything from it on is that step.
pub const FREE_NOW_STEP: &str = "  # Free spots per region now";
/// The first line of its `global_tables` (their comment).
const GLOBAL_TABLES: &str = "# The hotspot reference table";
/// The first line of its `with-hotspot` join step (its comment).
const JOIN_STEP: &str = "  # The lot's hotspot";

/// The parking job as the peers run it ([`parking_yaml`]), compiled.
#[allow(dead_code)]
pub fn parking_topology() -> weir::Topology {
    weir::Topology::parse(&parking_yaml()).expect("parking topology")
}
