//! The sink fixture: the hourly-average table of the shipped
//! `topology/parking-sink.yaml`, pointed at a test's topic and schema.
//! Shared by the integration tests (through `sink_common`) and
//! `benches/sink_upsert.rs`, so they all load what users run.

const SHIPPED: &str = include_str!("../../topology/parking-sink.yaml");

/// The `parking_hourly_avg` entry of the shipped sink file (under
/// `tables:`), reading `topic` into `<schema>.parking_hourly_avg`, with
/// `batch` (e.g. `"    batch_size: 10\n"`, or empty) before its columns.
pub fn hourly_table_yaml(topic: &str, schema: &str, batch: &str) -> String {
    shipped_table_yaml("parking_hourly_avg", topic, schema, batch)
}

/// The shipped `parking_free_now` entry (deleting on tombstones), reading
/// `topic` into `schema`.
#[allow(dead_code)]
pub fn free_now_table_yaml(topic: &str, schema: &str) -> String {
    shipped_table_yaml("parking_free_now", topic, schema, "")
}

/// The shipped entry loading topic `name` into `parking.<name>`, reading
/// `topic` into `<schema>.<name>` instead, with `batch` lines before its
/// columns.
fn shipped_table_yaml(name: &str, topic: &str, schema: &str, batch: &str) -> String {
    let start = SHIPPED
        .find(&format!("  - topic: {name}\n"))
        .unwrap_or_else(|| panic!("topology/parking-sink.yaml loads {name}"));
    let rest = &SHIPPED[start..];
    let entry = &rest[..rest.find("\n\n").map_or(rest.len(), |end| end + 1)];
    entry
        .replace(&format!("topic: {name}"), &format!("topic: {topic}"))
        .replace(&format!("table: parking.{name}"), &format!("table: {schema}.{name}"))
        .replace("    columns:\n", &format!("{batch}    columns:\n"))
}
