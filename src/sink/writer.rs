//! The Postgres writer: one connection with prepared statements, writing
//! a batch — rows of every table plus the consumed offsets — in one
//! transaction.
//!
//! Exactly-once rests on the offsets rows: a batch first moves each of its
//! partitions' `next_offset` from the value this instance read (compare and
//! set), so a batch whose partition another instance has advanced in the
//! meantime aborts as a whole ([`WriteError::OwnershipLost`]) and the
//! caller re-seeks.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement, Transaction};

use super::config::{QualifiedName, SinkConfig};
use super::error::{classify, connect_error, db_message, is_data_error, masked_url, WriteError};
use super::mapping::RecordMapping;
use super::row::Value;
use super::schema::{self, DbType, TablePlan};
use super::sql;

/// One column of a batch's rows, typed for the target column.
enum Array<'a> {
    Text(Vec<Option<&'a str>>),
    I16(Vec<Option<i16>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    F64(Vec<Option<f64>>),
    Tstz(Vec<Option<DateTime<Utc>>>),
    Ts(Vec<Option<NaiveDateTime>>),
}

impl<'a> Array<'a> {
    fn with_capacity(ty: DbType, n: usize) -> Self {
        match ty {
            DbType::Text => Array::Text(Vec::with_capacity(n)),
            DbType::Int2 => Array::I16(Vec::with_capacity(n)),
            DbType::Int4 => Array::I32(Vec::with_capacity(n)),
            DbType::Int8 => Array::I64(Vec::with_capacity(n)),
            DbType::Float8 => Array::F64(Vec::with_capacity(n)),
            DbType::Timestamptz => Array::Tstz(Vec::with_capacity(n)),
            DbType::Timestamp => Array::Ts(Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, v: &'a Value) -> Result<(), String> {
        let mismatch = || format!("value {v:?} does not fit the column");
        match (self, v) {
            (Array::Text(a), Value::Null) => a.push(None),
            (Array::I16(a), Value::Null) => a.push(None),
            (Array::I32(a), Value::Null) => a.push(None),
            (Array::I64(a), Value::Null) => a.push(None),
            (Array::F64(a), Value::Null) => a.push(None),
            (Array::Tstz(a), Value::Null) => a.push(None),
            (Array::Ts(a), Value::Null) => a.push(None),
            (Array::Text(a), Value::Text(s)) => a.push(Some(s)),
            (Array::I16(a), Value::Int(i)) => a.push(Some(i16::try_from(*i).map_err(|_| mismatch())?)),
            (Array::I32(a), Value::Int(i)) => a.push(Some(i32::try_from(*i).map_err(|_| mismatch())?)),
            (Array::I64(a), Value::Int(i)) => a.push(Some(*i)),
            (Array::F64(a), Value::Double(d)) => a.push(Some(*d)),
            (Array::F64(a), Value::Int(i)) => a.push(Some(*i as f64)),
            (Array::Tstz(a), Value::Timestamptz(t)) => a.push(Some(*t)),
            (Array::Ts(a), Value::Timestamp(t)) => a.push(Some(*t)),
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Array::Text(a) => a,
            Array::I16(a) => a,
            Array::I32(a) => a,
            Array::I64(a) => a,
            Array::F64(a) => a,
            Array::Tstz(a) => a,
            Array::Ts(a) => a,
        }
    }

    /// Element `i` as a single parameter (a row written alone).
    fn element(&self, i: usize) -> &(dyn ToSql + Sync) {
        match self {
            Array::Text(a) => &a[i],
            Array::I16(a) => &a[i],
            Array::I32(a) => &a[i],
            Array::I64(a) => &a[i],
            Array::F64(a) => &a[i],
            Array::Tstz(a) => &a[i],
            Array::Ts(a) => &a[i],
        }
    }
}

/// Column arrays of a batch of rows.
fn build_arrays<'a>(rows: &[&'a [Value]], types: &[DbType]) -> Result<Vec<Array<'a>>, String> {
    let mut arrays: Vec<Array<'a>> = types.iter().map(|t| Array::with_capacity(*t, rows.len())).collect();
    for row in rows {
        for (a, v) in arrays.iter_mut().zip(row.iter()) {
            a.push(v)?;
        }
    }
    Ok(arrays)
}

/// A batch's new position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetUpdate {
    pub topic: String,
    pub partition: i32,
    /// `next_offset` as last read from (or written to) Postgres by this
    /// instance; `None` when no row exists yet.
    pub expected: Option<i64>,
    pub next: i64,
}

/// Rows for one table in a batch.
pub struct TableRows<'a> {
    pub table: usize,
    pub rows: Vec<&'a [Value]>,
    /// Rows whose key's row is deleted (tombstones, `delete_on_tombstone`):
    /// only their key column is read. No key may be in both lists.
    pub deletes: Vec<&'a [Value]>,
}

/// Prepared statements of one connection.
struct Session {
    client: Client,
    unnest: Vec<Statement>,
    single: Vec<Statement>,
    delete: Vec<Option<Statement>>,
    update_offsets: Statement,
    insert_offsets: Statement,
    read_offsets: Statement,
}

/// How long sent data may stay unacknowledged before the connection counts
/// as dead (`TCP_USER_TIMEOUT`).
const PG_UNACKED_TIMEOUT: Duration = Duration::from_secs(20);
/// An idle connection is probed after this long, every
/// [`PG_KEEPALIVE_INTERVAL`], and dropped after [`PG_KEEPALIVE_RETRIES`]
/// probes without an answer: a dead one is noticed within ~40 s.
const PG_KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const PG_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const PG_KEEPALIVE_RETRIES: u32 = 5;
/// Longest wait for Postgres to answer one batch (or one offsets read, or
/// one bisection): a connection black-holed beyond what TCP can see (a
/// proxy or pooler in between that stopped forwarding, a hung server) is
/// dropped then and the batch retried on a new one. A commit whose answer
/// was lost is found out by the offsets compare of the retry. Longer than
/// any write of a batch (10,000 rows at most) should take, or a lock wait
/// on another instance's batch.
pub(crate) const PG_ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// `fut`, or a retryable error if Postgres does not answer within
/// [`PG_ANSWER_DEADLINE`] (the caller drops the connection).
async fn answered<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, WriteError>>,
) -> Result<T, WriteError> {
    match tokio::time::timeout(PG_ANSWER_DEADLINE, fut).await {
        Ok(r) => r,
        Err(_) => Err(WriteError::Retryable {
            context: what.to_string(),
            cause: format!("no answer from Postgres within {PG_ANSWER_DEADLINE:?}; dropping the connection").into(),
        }),
    }
}

/// Writes batches into Postgres; reconnects as needed.
pub struct Writer {
    config: tokio_postgres::Config,
    /// TLS as the URL's `sslmode` asks (see `tls`).
    tls: postgres_openssl::MakeTlsConnector,
    sink: String,
    owner: String,
    offsets: QualifiedName,
    tables: Vec<TablePlan>,
    session: Option<Session>,
}

impl Writer {
    /// Connect, create what `auto_create` asks for and the offsets table,
    /// and check every table. A mismatch is `WriteError::Fatal` naming the
    /// column; an unreachable server is `Retryable`.
    pub async fn start(url: &str, sink: &SinkConfig, owner: &str) -> Result<Writer, WriteError> {
        let (url, tls) = super::tls::split(url).map_err(|e| WriteError::Fatal(format!("invalid Postgres URL: {e}")))?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| WriteError::fatal("invalid Postgres URL", e))?;
        config.ssl_mode(tls.ssl_mode());
        let tls = tls.connector().map_err(WriteError::Fatal)?;
        config.connect_timeout(Duration::from_secs(5));
        // A connection the network drops silently (a NAT or a load balancer
        // that forgot it, a server failed over behind the same address)
        // gets no RST: without these the sink would wait for the kernel to
        // give up on unacknowledged data (~15 min, `tcp_retries2`) or, idle,
        // for two hours before the first keepalive. Found by the chaos
        // campaign's stranded connections (docs/chaos.md). A server that is
        // merely slow or waiting on a lock still acknowledges, so neither
        // limits how long a statement may run. Settings in the URL win.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(PG_UNACKED_TIMEOUT);
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(PG_KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(PG_KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(PG_KEEPALIVE_RETRIES);
        }
        if config.get_application_name().is_none() {
            config.application_name(format!("weir-sink-{}", sink.name));
        }
        let mut client = connect(&config, &tls).await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| classify("starting DDL transaction", e))?;
        let tables = schema::prepare(&tx, sink).await?;
        tx.commit().await.map_err(|e| classify("committing DDL", e))?;
        let mut writer = Writer {
            config,
            tls,
            sink: sink.name.clone(),
            owner: owner.to_string(),
            offsets: sink.offsets_table.clone(),
            tables,
            session: None,
        };
        writer.session = Some(writer.new_session(client).await?);
        Ok(writer)
    }

    pub(crate) fn tables(&self) -> &[TablePlan] {
        &self.tables
    }

    /// How records become rows of table `table` (config order), as
    /// checked against the database.
    pub fn mapping(&self, table: usize) -> &RecordMapping {
        &self.tables[table].mapping
    }

    async fn new_session(&self, client: Client) -> Result<Session, WriteError> {
        let ctx = "preparing statements";
        let mut unnest = Vec::new();
        let mut single = Vec::new();
        let mut delete = Vec::new();
        for t in &self.tables {
            unnest.push(client.prepare(&t.unnest_sql).await.map_err(|e| classify(ctx, e))?);
            single.push(client.prepare(&t.single_sql).await.map_err(|e| classify(ctx, e))?);
            delete.push(match &t.delete_sql {
                Some(sql) => Some(client.prepare(sql).await.map_err(|e| classify(ctx, e))?),
                None => None,
            });
        }
        let prepare = |sql: String| {
            let client = &client;
            async move { client.prepare(&sql).await.map_err(|e| classify(ctx, e)) }
        };
        let update_offsets = prepare(sql::update_offsets_sql(&self.offsets)).await?;
        let insert_offsets = prepare(sql::insert_offsets_sql(&self.offsets)).await?;
        let read_offsets = prepare(sql::read_offsets_sql(&self.offsets)).await?;
        Ok(Session {
            client,
            unnest,
            single,
            delete,
            update_offsets,
            insert_offsets,
            read_offsets,
        })
    }

    /// The current session, connecting if there is none.
    async fn session(&mut self) -> Result<&mut Session, WriteError> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        if self.session.is_none() {
            let client = connect(&self.config, &self.tls).await?;
            let s = self.new_session(client).await?;
            tracing::info!(sink = %self.sink, "connected to Postgres");
            self.session = Some(s);
        }
        match self.session.as_mut() {
            Some(s) => Ok(s),
            None => Err(WriteError::Fatal("no Postgres session".into())),
        }
    }

    /// Forget the connection (after an error that may have broken it).
    pub(crate) fn reset(&mut self) {
        self.session = None;
    }

    /// Stored `next_offset` per (topic, partition) of this sink.
    pub async fn read_offsets(&mut self, topics: &[String]) -> Result<HashMap<(String, i32), i64>, WriteError> {
        let result = answered("reading stored offsets", self.read_offsets_inner(topics)).await;
        self.forget_if_broken(&result);
        result
    }

    async fn read_offsets_inner(&mut self, topics: &[String]) -> Result<HashMap<(String, i32), i64>, WriteError> {
        let sink = self.sink.clone();
        let s = self.session().await?;
        let rows = s
            .client
            .query(&s.read_offsets, &[&sink, &topics])
            .await
            .map_err(|e| classify("reading stored offsets", e))?;
        Ok(rows
            .iter()
            .map(|r| ((r.get::<_, String>(0), r.get::<_, i32>(1)), r.get::<_, i64>(2)))
            .collect())
    }

    /// Write one batch and its offsets in one transaction.
    pub async fn write_batch(&mut self, batch: &[TableRows<'_>], offsets: &[OffsetUpdate]) -> Result<(), WriteError> {
        let result = answered("writing a batch", self.write_batch_inner(batch, offsets)).await;
        self.forget_if_broken(&result);
        result
    }

    /// After a retryable error the connection may be gone or hung: a fresh
    /// one costs little.
    fn forget_if_broken<T>(&mut self, result: &Result<T, WriteError>) {
        if let Err(WriteError::Retryable { .. }) = result {
            self.session = None;
        }
    }

    async fn write_batch_inner(&mut self, batch: &[TableRows<'_>], offsets: &[OffsetUpdate]) -> Result<(), WriteError> {
        let sink = self.sink.clone();
        let owner = self.owner.clone();
        self.session().await?;
        let Writer { session, tables, .. } = self;
        let Some(s) = session.as_mut() else {
            return Err(WriteError::Fatal("no Postgres session".into()));
        };
        let tx = s
            .client
            .transaction()
            .await
            .map_err(|e| classify("starting a transaction", e))?;

        // Offsets first: this takes the partitions' row locks, so a second
        // instance writing the same partitions waits here and then fails
        // the compare instead of doing the batch's work twice.
        let (known, new): (Vec<&OffsetUpdate>, Vec<&OffsetUpdate>) = offsets.iter().partition(|o| o.expected.is_some());
        if !known.is_empty() {
            let topics: Vec<&str> = known.iter().map(|o| o.topic.as_str()).collect();
            let parts: Vec<i32> = known.iter().map(|o| o.partition).collect();
            let expected: Vec<i64> = known.iter().map(|o| o.expected.unwrap_or_default()).collect();
            let next: Vec<i64> = known.iter().map(|o| o.next).collect();
            let n = tx
                .execute(&s.update_offsets, &[&sink, &owner, &topics, &parts, &expected, &next])
                .await
                .map_err(|e| classify("updating offsets", e))?;
            if n != known.len() as u64 {
                return Err(WriteError::OwnershipLost {
                    partitions: known.iter().map(|o| (o.topic.clone(), o.partition)).collect(),
                });
            }
        }
        if !new.is_empty() {
            let topics: Vec<&str> = new.iter().map(|o| o.topic.as_str()).collect();
            let parts: Vec<i32> = new.iter().map(|o| o.partition).collect();
            let next: Vec<i64> = new.iter().map(|o| o.next).collect();
            if let Err(e) = tx
                .execute(&s.insert_offsets, &[&sink, &owner, &topics, &parts, &next])
                .await
            {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(WriteError::OwnershipLost {
                        partitions: new.iter().map(|o| (o.topic.clone(), o.partition)).collect(),
                    });
                }
                return Err(classify("inserting offsets", e));
            }
        }

        for tr in batch {
            if tr.rows.is_empty() && tr.deletes.is_empty() {
                continue;
            }
            let plan = &tables[tr.table];
            let data_err = |e: tokio_postgres::Error| {
                if is_data_error(&e) {
                    WriteError::Data {
                        table: Some(tr.table),
                        table_name: Some(plan.config.table.to_string()),
                        message: db_message(&e),
                    }
                } else {
                    classify(&format!("writing {}", plan.config.table), e)
                }
            };
            if !tr.deletes.is_empty() {
                // The one key column of each tombstone's row, as one array.
                let (Some(stmt), &[k]) = (&s.delete[tr.table], &plan.mapping.key[..]) else {
                    return Err(WriteError::Fatal(format!(
                        "table {}: tombstones to delete, but the table does not delete on tombstones",
                        plan.config.table
                    )));
                };
                let keys: Vec<&[Value]> = tr.deletes.iter().map(|row| &row[k..=k]).collect();
                let arrays = build_arrays(&keys, &plan.db_types[k..=k])
                    .map_err(|m| WriteError::Fatal(format!("table {}: {m}", plan.config.table)))?;
                let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::as_param).collect();
                tx.execute(stmt, &params).await.map_err(data_err)?;
            }
            if tr.rows.is_empty() {
                continue;
            }
            let arrays = build_arrays(&tr.rows, &plan.db_types)
                .map_err(|m| WriteError::Fatal(format!("table {}: {m}", plan.config.table)))?;
            let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::as_param).collect();
            tx.execute(&s.unnest[tr.table], &params).await.map_err(data_err)?;
        }
        tx.commit().await.map_err(|e| {
            if is_data_error(&e) {
                // A deferred constraint (or constraint trigger): of which
                // table, and which rows, only a search can tell.
                WriteError::Data {
                    table: None,
                    table_name: None,
                    message: db_message(&e),
                }
            } else {
                classify("committing", e)
            }
        })?;
        Ok(())
    }

    /// Which rows of `rows` Postgres rejects, in a transaction that is then
    /// rolled back. Used after a batch failed with [`WriteError::Data`],
    /// in its statement or at COMMIT.
    ///
    /// A bisection: a range of rows is written inside a savepoint and
    /// checked as COMMIT would check it ([`commit_checks`]); one that fails
    /// is rolled back and its halves are tried, down to single rows, which
    /// are the rejected ones. Rows that pass stay written, so the rows
    /// after them are checked against them as in the batch (a duplicate in
    /// `insert` mode rejects the later row). A few bad rows among many cost
    /// a few statements per bad row, not one per row.
    pub(crate) async fn find_bad_rows(
        &mut self,
        table: usize,
        rows: &[&[Value]],
    ) -> Result<Vec<(usize, String)>, WriteError> {
        let result = answered("finding the rejected rows", self.find_bad_rows_inner(table, rows)).await;
        self.forget_if_broken(&result);
        result
    }

    async fn find_bad_rows_inner(
        &mut self,
        table: usize,
        rows: &[&[Value]],
    ) -> Result<Vec<(usize, String)>, WriteError> {
        let plan = self.tables[table].clone();
        let s = self.session().await?;
        let stmt = s.unnest[table].clone();
        let mut tx = s
            .client
            .transaction()
            .await
            .map_err(|e| classify("starting a transaction", e))?;
        let mut bad = Vec::new();
        // Ranges to try, the next one last: a failed range's first half is
        // tried before its second, so rows go in in batch order.
        let mut todo = Vec::new();
        todo.push(0..rows.len());
        while let Some(range) = todo.pop() {
            if range.is_empty() {
                continue;
            }
            let Some(reason) = try_rows(&mut tx, &stmt, &plan, &rows[range.clone()]).await? else {
                continue;
            };
            if range.len() == 1 {
                bad.push((range.start, reason));
            } else {
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
        }
        // Once more after all the others: a row may need a later row of the
        // batch (a deferred foreign key to it).
        let mut rejected = Vec::new();
        for (i, reason) in bad {
            if try_rows(&mut tx, &stmt, &plan, &rows[i..=i]).await?.is_some() {
                rejected.push((i, reason));
            }
        }
        tx.rollback().await.map_err(|e| classify("rolling back", e))?;
        Ok(rejected)
    }

    /// One row in its own implicit transaction, with a prepared statement
    /// (the row-at-a-time baseline of the benchmark).
    pub async fn write_row_autocommit(&mut self, table: usize, row: &[Value]) -> Result<(), WriteError> {
        let arrays = build_arrays(&[row], &self.tables[table].db_types).map_err(WriteError::Fatal)?;
        let s = self.session().await?;
        let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a.element(0)).collect();
        s.client
            .execute(&s.single[table], &params)
            .await
            .map_err(|e| classify("writing a row", e))?;
        Ok(())
    }
}

/// Write `rows` inside a savepoint of `tx` and run the checks COMMIT would:
/// `None` when they pass (the rows stay written), else Postgres's reason
/// (the rows rolled back).
async fn try_rows(
    tx: &mut Transaction<'_>,
    stmt: &Statement,
    plan: &TablePlan,
    rows: &[&[Value]],
) -> Result<Option<String>, WriteError> {
    let arrays = build_arrays(rows, &plan.db_types)
        .map_err(|m| WriteError::Fatal(format!("table {}: {m}", plan.config.table)))?;
    let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(Array::as_param).collect();
    let mut sp = tx.savepoint("weir_rows").await.map_err(|e| classify("savepoint", e))?;
    let rejected = match sp.execute(stmt, &params).await {
        Ok(_) => commit_checks(&mut sp).await?,
        Err(e) if is_data_error(&e) => Some(db_message(&e)),
        Err(e) => return Err(classify(&format!("writing {}", plan.config.table), e)),
    };
    match rejected {
        None => sp.commit().await.map_err(|e| classify("releasing savepoint", e))?,
        Some(_) => sp
            .rollback()
            .await
            .map_err(|e| classify("rolling back to savepoint", e))?,
    }
    Ok(rejected)
}

/// Run now what COMMIT would check of the transaction so far (deferred
/// constraints and constraint triggers): `None` when it passes, else
/// Postgres's reason. `SET CONSTRAINTS ALL IMMEDIATE` runs every pending
/// deferred check at once; rolling back to a savepoint around it restores
/// the deferred mode and un-fires the checks, so the rows written next are
/// checked as the table declares (deferred until the end), as in the batch.
async fn commit_checks(tx: &mut Transaction<'_>) -> Result<Option<String>, WriteError> {
    let check = tx
        .savepoint("weir_commit_checks")
        .await
        .map_err(|e| classify("savepoint", e))?;
    let result = check.batch_execute("SET CONSTRAINTS ALL IMMEDIATE").await;
    check
        .rollback()
        .await
        .map_err(|e| classify("rolling back to savepoint", e))?;
    match result {
        Ok(()) => Ok(None),
        Err(e) if is_data_error(&e) => Ok(Some(db_message(&e))),
        Err(e) => Err(classify("checking deferred constraints", e)),
    }
}

async fn connect(
    config: &tokio_postgres::Config,
    tls: &postgres_openssl::MakeTlsConnector,
) -> Result<Client, WriteError> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| connect_error(&masked_url(config), e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Postgres connection ended");
        }
    });
    Ok(client)
}
