//! Postgres errors, classified so the sink knows whether to retry the same
//! batch (connection lost, server restarting, deadlock), to look for the
//! rows Postgres rejects, to re-seek, or to stop.

use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Postgres is unreachable, restarting, or the transaction lost a
    /// deadlock: retry the same batch later.
    #[error("{context}: {cause}")]
    Retryable {
        context: String,
        cause: tokio_postgres::Error,
    },
    /// Another instance advanced one of the batch's partitions: abort the
    /// batch and seek to the offsets stored in Postgres.
    #[error(
        "offsets of {partitions:?} in Postgres are not where this instance left them (another instance wrote them)"
    )]
    OwnershipLost { partitions: Vec<(String, i32)> },
    /// Postgres rejected a row's data (constraint, value out of range…).
    #[error("table {table_name}: {message}")]
    Data {
        table: usize,
        table_name: String,
        message: String,
    },
    /// The table does not match the config, or another error that retrying
    /// will not fix.
    #[error("{0}")]
    Fatal(String),
}

impl WriteError {
    pub(crate) fn fatal(context: &str, e: tokio_postgres::Error) -> WriteError {
        let detail = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        WriteError::Fatal(format!("{context}: {detail}"))
    }
}

/// Errors worth retrying: the connection, the server's state, or
/// concurrency, not the data.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        // I/O, closed connection, timeout.
        return true;
    };
    let code = db.code();
    let class = &code.code()[..2];
    matches!(class, "08" | "53" | "57" | "58")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::IN_FAILED_SQL_TRANSACTION
}

/// Errors caused by a row's values.
pub(crate) fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .map(|db| matches!(&db.code().code()[..2], "22" | "23" | "21"))
        .unwrap_or(false)
}

pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({}): {d}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

pub(crate) fn classify(context: &str, e: tokio_postgres::Error) -> WriteError {
    if is_transient(&e) {
        WriteError::Retryable {
            context: context.to_string(),
            cause: e,
        }
    } else {
        WriteError::fatal(context, e)
    }
}
