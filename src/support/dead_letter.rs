//! Headers of a dead-letter record: why it failed and where it came from.
//! The processor writes them; the runtime and the sink write the same names
//! for their own dead letters, and send a dead letter Kafka refuses without
//! its value ([`is_too_large`], [`value_dropped`]).

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
/// Why the value was left out (a record Kafka refused with it: over the
/// producer's `message.max.bytes`, say); see [`value_dropped`].
pub(crate) const VALUE_DROPPED: &str = "weir.value_dropped";
/// The sink (its `name`) and the table a sink's dead letter was meant for.
pub(crate) const SINK: &str = "weir.sink";
pub(crate) const TABLE: &str = "weir.table";

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// A record Kafka refuses for its size: over the producer's
/// `message.max.bytes` (refused when queued) or the topic's
/// `max.message.bytes` (refused by the broker); both report this code.
/// Without its value (what makes a record large) it fits.
pub(crate) fn is_too_large(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// Produce errors that every attempt meets again: besides the size, a
/// record the broker finds invalid, a topic this client may not write, a
/// producer that failed for good. The client has already retried what a
/// retry can fix (until `message.timeout.ms`).
pub(crate) fn is_permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    is_too_large(e)
        || matches!(
            e.rdkafka_error_code(),
            Some(
                C::InvalidMessage
                    | C::InvalidMessageSize
                    | C::InvalidRecord
                    | C::UnsupportedForMessageFormat
                    | C::PolicyViolation
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::InvalidArgument
                    | C::Fatal
            )
        )
}

/// The [`VALUE_DROPPED`] header of a dead letter sent without its value
/// (`size` bytes) because Kafka refused the record with it (`e`).
pub(crate) fn value_dropped(size: usize, e: &KafkaError) -> (&'static str, String) {
    (
        VALUE_DROPPED,
        format!("{size} bytes; Kafka refused the record with it: {e}"),
    )
}
