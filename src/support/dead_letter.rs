//! Headers of a dead-letter record: why it failed and where it came from.
//! The processor writes them; the runtime and the sink write the same names
//! for their own dead letters.

/// Why the record failed (human-readable).
pub(crate) const ERROR: &str = "weir.error";
/// Name of the step that rejected it.
pub(crate) const PROCESSOR: &str = "weir.processor";
/// Input topic, partition and offset of the record, when it came from one.
pub(crate) const TOPIC: &str = "weir.topic";
pub(crate) const PARTITION: &str = "weir.partition";
pub(crate) const OFFSET: &str = "weir.offset";
/// Timestamp (epoch ms) of the record.
pub(crate) const TIMESTAMP: &str = "weir.timestamp";
/// Why the value was left out (an output record over the producer's
/// `message.max.bytes`).
pub(crate) const VALUE_DROPPED: &str = "weir.value_dropped";
/// The sink (its `name`) and the table a sink's dead letter was meant for.
pub(crate) const SINK: &str = "weir.sink";
pub(crate) const TABLE: &str = "weir.table";
