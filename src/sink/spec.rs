//! Sink files: the YAML format as serde types, with positions for
//! diagnostics. `check` turns them into the checked [`super::config`]
//! types. The format is documented in `docs/sink.md`;
//! `topology/parking-sink.yaml` is the shipped example.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub(crate) type Str = Spanned<String>;

/// A whole sink file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinkSpec {
    /// Names the consumer group (`weir-sink-<name>`) and the sink's rows in
    /// the offsets table.
    pub(crate) name: Str,
    /// Consumer group id; default `weir-sink-<name>`.
    #[serde(default)]
    pub(crate) group: Option<Str>,
    /// Topic for records that cannot be loaded (reason in headers).
    pub(crate) dead_letter: Str,
    /// `schema.table` of the offsets table; default `weir.weir_sink_offsets`.
    #[serde(default)]
    pub(crate) offsets_table: Option<Str>,
    /// Default rows per Postgres transaction for every table.
    #[serde(default)]
    pub(crate) batch_size: Option<Spanned<u64>>,
    /// Default longest wait before a partial batch is written, e.g. `200ms`.
    #[serde(default)]
    pub(crate) linger: Option<Str>,
    /// Obsolete: batches are always one `INSERT … SELECT FROM
    /// unnest(arrays) … ON CONFLICT` statement. `multi_row` is accepted;
    /// `copy` (removed: it measured no faster) is an error at its line.
    #[serde(default)]
    pub(crate) write_method: Option<Str>,
    /// Extra librdkafka consumer properties (strings), e.g.
    /// `session.timeout.ms: "6000"`.
    #[serde(default)]
    pub(crate) consumer: IndexMap<String, Str>,
    /// librdkafka properties for every Kafka client of the sink (its
    /// consumer, the dead-letter producer, the metadata clients): security,
    /// timeouts, tuning. Values may be `${env:NAME}` or `${file:PATH}`.
    #[serde(default)]
    pub(crate) kafka: crate::kafka::settings::FileMap,
    /// Topic → table loads.
    pub(crate) tables: Spanned<Vec<TableSpec>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// `INSERT … ON CONFLICT (key) DO UPDATE`: one row per key.
    #[default]
    Upsert,
    /// Plain `INSERT`: one row per record.
    Insert,
}

/// One topic loaded into one table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableSpec {
    pub(crate) topic: Str,
    /// `schema.table` or `table` (schema `public`).
    pub(crate) table: Str,
    #[serde(default)]
    pub(crate) mode: Option<Spanned<Mode>>,
    /// Key columns (required for `upsert`): the conflict target, and what
    /// a batch is deduplicated by.
    #[serde(default)]
    pub(crate) key: Option<Spanned<Vec<Str>>>,
    /// Create the schema and table if they do not exist.
    #[serde(default)]
    pub(crate) auto_create: bool,
    /// With `auto_create`: add a `bigserial PRIMARY KEY` column of this
    /// name; the key columns then get a UNIQUE constraint.
    #[serde(default)]
    pub(crate) id_column: Option<Str>,
    /// A tombstone (a record with a key and no value) deletes the row whose
    /// key column equals the record key (`mode: upsert`, one key column).
    #[serde(default)]
    pub(crate) delete_on_tombstone: Option<Spanned<bool>>,
    #[serde(default)]
    pub(crate) batch_size: Option<Spanned<u64>>,
    #[serde(default)]
    pub(crate) linger: Option<Str>,
    /// Column name → where its value comes from and its type, in table
    /// order.
    pub(crate) columns: Spanned<IndexMap<String, Spanned<ColumnSpec>>>,
}

/// One column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ColumnSpec {
    /// Top-level field of the JSON value. Required unless `now` is given.
    #[serde(default)]
    pub(crate) field: Option<Str>,
    /// text, varchar(N), integer, bigint, double, timestamptz, timestamp.
    #[serde(rename = "type")]
    pub(crate) ty: Str,
    /// Reject records where the value is missing, null or empty.
    #[serde(default)]
    pub(crate) not_null: bool,
    /// timestamp: the wall-clock zone written; timestamptz: the zone of
    /// text without an offset. Default UTC.
    #[serde(default)]
    pub(crate) time_zone: Option<Str>,
    /// strftime format of text timestamps, e.g. `%Y-%m-%d %H:%M:%S`.
    /// Without it text must be RFC 3339; numbers are epoch milliseconds.
    #[serde(default)]
    pub(crate) format: Option<Str>,
    /// A database-side time instead of a field: `on_insert` (kept by
    /// upserts, like `created_at`) or `on_write` (refreshed by every
    /// upsert, like `updated_at`).
    #[serde(default)]
    pub(crate) now: Option<Spanned<NowMode>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NowMode {
    OnInsert,
    OnWrite,
}
