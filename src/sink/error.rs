//! Postgres errors, classified so the sink knows whether to retry the same
//! batch (connection lost, server restarting, deadlock), to look for the
//! rows Postgres rejects, to re-seek, or to stop.
//!
//! Connecting is classified apart ([`connect_error`]): an unreachable or
//! restarting server is waited for, but a server that refuses this sink
//! (password, role, database, `pg_hba.conf`, TLS) refuses it again on every
//! attempt, and retrying would only look like an outage.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Postgres is unreachable, restarting, or the transaction lost a
    /// deadlock: retry the same batch later.
    #[error("{context}: {cause}")]
    Retryable {
        context: String,
        /// Postgres's error, or no answer within [`super::writer`]'s deadline.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another instance advanced one of the batch's partitions: abort the
    /// batch and seek to the offsets stored in Postgres.
    #[error(
        "offsets of {partitions:?} in Postgres are not where this instance left them (another instance wrote them)"
    )]
    OwnershipLost { partitions: Vec<(String, i32)> },
    /// Postgres rejected a row's data (constraint, value out of range, a
    /// trigger's exception…): in a table's statement (`table`), or at
    /// COMMIT (`None`: a deferred constraint, of any table of the batch).
    #[error("{}: {message}", table_name.as_ref().map_or_else(|| "at COMMIT".into(), |t| format!("table {t}")))]
    Data {
        table: Option<usize>,
        table_name: Option<String>,
        message: String,
    },
    /// Postgres refuses the connection itself: wrong password, no such
    /// role or database, `pg_hba.conf`, TLS. The message names the server
    /// (password masked) and what is wrong.
    #[error("{0}")]
    Refused(String),
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

/// Errors caused by a row's values: data exceptions (22), constraints
/// (23, also when deferred to COMMIT), a row touched twice (21), and
/// PL/pgSQL exceptions (P0: a trigger's `RAISE EXCEPTION` is P0001 unless
/// it names another code).
pub(crate) fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .map(|db| matches!(&db.code().code()[..2], "22" | "23" | "21" | "P0"))
        .unwrap_or(false)
}

/// Postgres' message and code, then its `detail` after [`DETAIL`]. The
/// detail often quotes the row (`Key (seq)=(5) already exists`, `Failing
/// row contains (…)`): it goes into the dead letter's reason (the topic
/// holds the record itself anyway), but logs show it only with
/// `--log-row-values` (see [`loggable`]).
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({}){DETAIL}{d}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

/// Where [`db_message`] puts Postgres' detail.
const DETAIL: &str = "; detail: ";

/// `weir sink --log-row-values`: logs show Postgres' details with the
/// values they quote.
static LOG_ROW_VALUES: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_log_row_values(on: bool) {
    LOG_ROW_VALUES.store(on, Ordering::Relaxed);
}

/// A reason from [`db_message`] as a log may show it: without Postgres'
/// detail (row values: personal data, secrets in a column) unless
/// `--log-row-values`.
pub(crate) fn loggable(reason: &str) -> Cow<'_, str> {
    redact(reason, LOG_ROW_VALUES.load(Ordering::Relaxed))
}

fn redact(reason: &str, show: bool) -> Cow<'_, str> {
    match reason.find(DETAIL) {
        Some(at) if !show => Cow::Owned(format!(
            "{} (Postgres' detail withheld: it may quote row values; --log-row-values logs it)",
            &reason[..at]
        )),
        _ => Cow::Borrowed(reason),
    }
}

pub(crate) fn classify(context: &str, e: tokio_postgres::Error) -> WriteError {
    if is_transient(&e) {
        WriteError::Retryable {
            context: context.to_string(),
            cause: Box::new(e),
        }
    } else {
        WriteError::fatal(context, e)
    }
}

/// A failed connection attempt to `server` (as [`masked_url`] shows it):
/// [`WriteError::Refused`] when Postgres refuses this sink, `Retryable`
/// when it is unreachable, starting or out of connections.
pub(crate) fn connect_error(server: &str, e: tokio_postgres::Error) -> WriteError {
    let refused = |what: String| WriteError::Refused(format!("{server} refuses the connection: {what}"));
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let hint = if *code == SqlState::INVALID_PASSWORD {
            // Also what a role that does not exist gets: the server does
            // not tell which.
            "wrong password, or no such role"
        } else if code.code().starts_with("28") {
            // No pg_hba.conf entry or a `reject` line, no such role
            // (trust/peer authentication), a role without LOGIN.
            "the server does not let this role in from here (pg_hba.conf, role)"
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            "no such database"
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            // The database's CONNECT privilege.
            "no permission to connect"
        } else {
            return classify("connecting to Postgres", e);
        };
        return refused(format!("{hint}: {}", db_message(&e)));
    }
    // tokio-postgres does not expose the error kind: its message names it.
    // The causes (the part after the kind) are in `source()`.
    let kind = e.to_string();
    let cause = std::error::Error::source(&e)
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    if kind.starts_with("error performing TLS handshake") {
        // A server without TLS under sslmode=require and above, or a
        // certificate that does not verify: no retry changes either.
        refused(format!("TLS{cause} (see sslmode and sslrootcert in the URL)"))
    } else if kind.starts_with("authentication error") || kind.starts_with("invalid configuration") {
        // An authentication method the client cannot do, a password the
        // server asks for and the URL lacks.
        refused(format!("{kind}{cause}"))
    } else {
        WriteError::Retryable {
            context: "connecting to Postgres".into(),
            cause: Box::new(e),
        }
    }
}

/// The server a connection config names, as a URL without the password
/// (`postgres://user:***@host:port/db`), for messages and logs.
pub(crate) fn masked_url(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let user = config.get_user().unwrap_or_default();
    let password = if config.get_password().is_some() { ":***" } else { "" };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            // One port for every host, or one per host.
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}{password}@{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::{masked_url, redact, DETAIL};

    #[test]
    fn logs_withhold_postgres_detail_unless_asked() {
        let reason = format!("duplicate key value violates unique constraint \"seq_once\" (23505){DETAIL}Key (seq)=(4242) already exists.");
        let logged = redact(&reason, false);
        assert!(!logged.contains("4242"), "{logged}");
        assert!(logged.contains("seq_once") && logged.contains("23505"), "{logged}");
        assert!(logged.contains("--log-row-values"), "{logged}");
        assert_eq!(redact(&reason, true), reason);
        // A reason without a detail is logged as it is.
        assert_eq!(
            redact("samples 666 refused by trigger (P0001)", false),
            "samples 666 refused by trigger (P0001)"
        );
    }

    #[test]
    fn masked_url_never_shows_the_password() {
        for (url, want) in [
            (
                "postgres://weir:s3cret@127.0.0.1:5433/weir",
                "postgres://weir:***@127.0.0.1:5433/weir",
            ),
            (
                "host=db1,db2 port=5432 user=app password=s3cret dbname=prod",
                "postgres://app:***@db1:5432,db2:5432/prod",
            ),
            ("postgres://app@db/other", "postgres://app@db:5432/other"),
        ] {
            let config: tokio_postgres::Config = url.parse().unwrap();
            let got = masked_url(&config);
            assert_eq!(got, want);
            assert!(!got.contains("s3cret"));
        }
    }
}
