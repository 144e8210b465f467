//! The topology file format: serde types, one per YAML element.
//!
//! These types only describe the file; `compile` turns them into a checked
//! processor graph. Strings that matter for error messages are `Spanned` so
//! `weir validate` can point at their line and column. The JSON Schema
//! printed by `weir schema` is derived from these types.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A string with its position in the file.
pub(crate) type Str = Spanned<String>;

/// A whole topology file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Consumer group id, prefix of every internal topic and name of the
    /// state sub-directory.
    #[schemars(with = "String")]
    pub application_id: Str,
    /// `at_least_once` (default) or `exactly_once`.
    #[serde(default)]
    pub processing_guarantee: Guarantee,
    /// How often offsets are committed and stores flushed, e.g. `100ms`,
    /// `5s`. Default 1s.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub commit_interval: Option<Str>,
    /// Topic for records that fail parsing, conversion or expressions (and
    /// late records of windows with `late: dead_letter`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dead_letter: Option<Str>,
    /// Time zone of times written in output values (RFC 3339), e.g.
    /// `Asia/Seoul`. Default `UTC`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub time_zone: Option<Str>,
    /// librdkafka properties for every Kafka client of `weir run` and
    /// `weir reset` (security, timeouts, tuning), e.g.
    /// `security.protocol: SASL_SSL`; a value may be `${env:NAME}` or
    /// `${file:PATH}`. The properties weir's guarantees depend on are
    /// refused.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, crate::kafka::settings::FileValue>")]
    pub kafka: crate::kafka::settings::FileMap,
    /// Input streams by name.
    pub sources: IndexMap<String, SourceSpec>,
    /// Global tables, by name: compacted topics read in full by every
    /// instance (Kafka Streams' `GlobalKTable`), looked up by `join` steps.
    #[serde(default)]
    pub global_tables: IndexMap<String, GlobalTableSpec>,
    /// Processing steps, in order. A step reads the previous step's output
    /// unless `from` names another step or a source.
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

/// One input stream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The Kafka topic to read.
    #[schemars(with = "String")]
    pub topic: Str,
    /// How record values are decoded: `json` (default), `string` or `bytes`.
    #[serde(default)]
    pub value: ValueFormat,
    /// How record keys are decoded: `string` (default), `json` or `bytes`.
    #[serde(default = "default_key_format")]
    pub key: ValueFormat,
    /// `kafka` (the record timestamp, default) or a field of the value.
    #[serde(default)]
    pub event_time: EventTimeSpec,
}

fn default_key_format() -> ValueFormat {
    ValueFormat::String
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    #[default]
    Json,
    String,
    Bytes,
}

/// Where a record's event time comes from.
#[derive(Debug, Default, JsonSchema)]
#[serde(untagged)]
pub enum EventTimeSpec {
    /// `kafka`: the Kafka record timestamp.
    #[default]
    #[serde(skip)]
    Kafka,
    Keyword(EventTimeKeyword),
    Field(Box<EventTimeField>),
}

/// Untagged (a keyword or a map) by hand: serde's `untagged` buffers the
/// value before trying each variant, and the buffered copy has lost its
/// positions, so an error inside `{ field: …, max_future: … }` was reported
/// at line 0.
impl<'de> Deserialize<'de> for EventTimeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EventTimeSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`kafka` or `{ field: NAME, ... }`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<EventTimeSpec, E> {
                use serde::de::IntoDeserializer;
                EventTimeKeyword::deserialize(s.into_deserializer()).map(EventTimeSpec::Keyword)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<EventTimeSpec, A::Error> {
                EventTimeField::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|f| EventTimeSpec::Field(Box::new(f)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventTimeKeyword {
    Kafka,
}

/// Event time read from a field of the (JSON) value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTimeField {
    /// Top-level field name, e.g. `LAST_UPDATE`.
    #[schemars(with = "String")]
    pub field: Str,
    /// strftime format, e.g. `%Y-%m-%d %H:%M:%S`. Without it the field is
    /// RFC 3339 text or epoch milliseconds.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub format: Option<Str>,
    /// Time zone of a format without offset, e.g. `Asia/Seoul`. Default UTC.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub time_zone: Option<Str>,
    /// How far ahead of the wall clock an event time may be, e.g. `10m`.
    /// A record dated further ahead (a device with a wrong clock) goes to
    /// the dead-letter topic instead of moving stream time. Default 1h.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_future: Option<Str>,
}

/// One processing step: exactly one of `filter`, `map`, `window`, `table`,
/// optionally followed by `to`. A step with only `to` forwards its input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique name; node names, store names and internal topics derive
    /// from it, so keep it stable.
    #[schemars(with = "String")]
    pub name: Str,
    /// Read from this step or source instead of the previous step.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub from: Option<Str>,
    /// Keep records for which this CEL expression is true.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub filter: Option<Str>,
    /// Set, drop or keep fields of the value.
    #[serde(default)]
    pub map: Option<MapSpec>,
    /// Windowed aggregation grouped by key expressions.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// Latest value per key.
    #[serde(default)]
    pub table: Option<TableSpec>,
    /// Aggregate a table's current rows by a new key, retracting a row's
    /// old value when it changes or leaves (reads a `table` step).
    #[serde(default)]
    pub table_aggregate: Option<TableAggregateSpec>,
    /// Look each record up in a global table or a table step and add
    /// fields of the row.
    #[serde(default)]
    pub join: Option<JoinSpec>,
    /// Write this step's output to a topic.
    #[serde(default)]
    pub to: Option<ToSpec>,
}

/// Field changes, applied in the order set → drop → keep.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// New or overwritten fields: name → CEL expression (evaluated against
    /// the input value, so fields set here do not see each other).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>")]
    pub set: IndexMap<String, Str>,
    /// Fields to remove.
    #[serde(default)]
    pub drop: Vec<String>,
    /// If given, only these fields remain.
    #[serde(default)]
    pub keep: Option<Vec<String>>,
}

/// Windowed aggregation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Group key: output field name → CEL expression. If the group key is
    /// not the record key (`key`), records are repartitioned through
    /// `<application_id>-<step>-repartition`.
    #[schemars(with = "IndexMap<String, String>")]
    pub group_by: IndexMap<String, Str>,
    /// Tumbling window size, e.g. `1h`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub tumbling: Option<Str>,
    /// Hopping windows.
    #[serde(default)]
    pub hopping: Option<HoppingSpec>,
    /// Allowed lateness after the window end, e.g. `1m`. Default 0.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub grace: Option<Str>,
    /// Align windows of a day or more to midnight in this zone (default:
    /// the epoch, i.e. UTC).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub time_zone: Option<Str>,
    /// If no record arrives for this long (wall clock), stream time
    /// advances with the wall clock so windows of an idle feed close.
    /// Ignored by `weir test`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub close_idle_after: Option<Str>,
    /// `on_window_close` (default): one final record per window;
    /// `on_update`: the current value after every change.
    #[serde(default)]
    pub emit: EmitSpec,
    /// What to do with records for closed windows: `drop` (default, counted)
    /// or `dead_letter` (also sent to the topology's dead-letter topic).
    #[serde(default)]
    pub late: LateSpec,
    /// Output field name → aggregate: `count()`, `sum(e)`, `avg(e)`,
    /// `min(e)`, `max(e)`, `first(e)`, `last(e)` where `e` is a CEL
    /// expression (a bare name means that field of the value).
    #[schemars(with = "IndexMap<String, String>")]
    pub aggregate: IndexMap<String, Str>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoppingSpec {
    #[schemars(with = "String")]
    pub size: Str,
    #[schemars(with = "String")]
    pub advance: Str,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmitSpec {
    #[default]
    OnWindowClose,
    OnUpdate,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LateSpec {
    #[default]
    Drop,
    DeadLetter,
}

/// Latest value per key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Key expression; `key` (the record key) avoids a repartition.
    #[schemars(with = "String")]
    pub key: Str,
    /// Newest wins by this expression (compared as number or string);
    /// default: the record timestamp. Ties: the later record wins.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub newest_by: Option<Str>,
    /// `on_update` (default): every accepted record goes downstream at
    /// once; `on_commit`: the newest per key goes downstream at each commit
    /// (Kafka Streams' record cache).
    #[serde(default)]
    pub emit: TableEmitSpec,
    /// Forget a key not updated for this long in stream time (`1d`): its
    /// row leaves the store and a tombstone (its key, no value) goes to
    /// the table's changelog and its topic. Default: keys are kept forever.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ttl: Option<Str>,
    /// Keep each key's whole value in the store, so `weir run
    /// --query-addr` can serve it (interactive queries; Kafka Streams'
    /// `Materialized.as`). Default false: the store keeps what ordering
    /// needs, and the values go downstream only.
    #[serde(default)]
    pub queryable: bool,
}

/// A compacted topic every instance reads in full: keys as text, values
/// as JSON objects (a null value deletes the key).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalTableSpec {
    #[schemars(with = "String")]
    pub topic: Str,
}

/// Stream–table join: with `global`, Kafka Streams' `KStream.join(GlobalKTable,
/// keySelector, joiner)` and `leftJoin`; with `table`, the co-partitioned
/// `KStream.join(KTable, joiner)` and `leftJoin`. Exactly one of the two.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// The global table (a name under `global_tables`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub global: Option<Str>,
    /// A `table` step defined before this one: the stream is joined with
    /// its current rows in the same task (repartitioned by `key` when
    /// `key` is not the record key).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub table: Option<Str>,
    /// The table key to look up: a CEL expression over the record, as text.
    #[schemars(with = "String")]
    pub key: Str,
    /// `inner` (default): a record without a row is dropped; `left`: it
    /// goes on with the fields null.
    #[serde(default)]
    pub how: JoinHow,
    /// Fields to add: output field name → field of the table row's value.
    #[schemars(with = "IndexMap<String, String>")]
    pub fields: IndexMap<String, Str>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinHow {
    #[default]
    Inner,
    Left,
}

/// Aggregation of a table's current rows (Kafka Streams'
/// `KTable.groupBy(...).aggregate(adder, subtractor)`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableAggregateSpec {
    /// Group key: output field name → CEL expression over a row's value.
    /// Rows are repartitioned by it through
    /// `<application_id>-<step>-repartition`.
    #[schemars(with = "IndexMap<String, String>")]
    pub group_by: IndexMap<String, Str>,
    /// Output field name → `count()`, `count(e)`, `sum(e)` or `avg(e)`
    /// (the aggregates a changed row can be subtracted from).
    #[schemars(with = "IndexMap<String, String>")]
    pub aggregate: IndexMap<String, Str>,
    /// `on_update` (default): a group's new value after every change;
    /// `on_commit`: the newest per group at each commit.
    #[serde(default)]
    pub emit: TableEmitSpec,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TableEmitSpec {
    #[default]
    OnUpdate,
    OnCommit,
}

/// Output topic of a step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToSpec {
    #[schemars(with = "String")]
    pub topic: Str,
    /// Record key (CEL expression). Default: the step's key.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub key: Option<Str>,
    /// Only these value fields are written (default: all).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Partitions when weir creates the topic (default: those of the input).
    #[serde(default)]
    pub partitions: Option<i32>,
}
