//! The sink fixture: the hourly-average table of the shipped
//! `topology/parking-sink.yaml`, pointed at a test's topic and schema.
//! Shared by the integration tests (through `sink_common`) and
//! `benches/sink_upsert.rs`, so they all load what users run.

const SHIPPED: &str = include_str!("../../topology/parking-sink.yaml");

/// The `parking_hourly_avg` entry of the shipped sink file (under
/// `tables:`), reading `topic` into `<schema>.parking_hourly_avg`, with
/// `batch` (e.g. `"    batch_size: 10\n"`, or empty) before its columns.
pub fn hourly_table_yaml(topic: &str, schema: &str, batch: &str) -> String {
    let start = SHIPPED
        .find("  - topic: parking_hourly_avg\n")
        .expect("topology/parking-sink.yaml loads parking_hourly_avg");
    let rest = &SHIPPED[start..];
    let entry = &rest[..rest.find("\n\n").map_or(rest.len(), |end| end + 1)];
    entry
        .replace("topic: parking_hourly_avg", &format!("topic: {topic}"))
        .replace(
            "table: parking.parking_hourly_avg",
            &format!("table: {schema}.parking_hourly_avg"),
        )
        .replace("    columns:\n", &format!("{batch}    columns:\n"))
}
