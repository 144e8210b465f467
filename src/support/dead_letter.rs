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
