//! Why the store could not do what was asked, and which failures are worth a retry.

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; the client should retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let error = tls_failure(error);
        if is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Other(error.into())
        }
    }
}

/// sqlx reports a TLS handshake that failed (a certificate that did not verify, say) as an
/// I/O error; it is said as a TLS error, which is what an operator must fix.
fn tls_failure(error: sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            sqlx::Error::Tls(Box::new(io))
        }
        other => other,
    }
}

/// Connection loss, pool exhaustion, a full disk, the server refusing work and a schema
/// not (or not yet) migrated are worth a retry.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database_error) => match sqlite_code(database_error.as_ref()) {
            // Busy or locked; a disk that is full or failing; a missing table or column
            // (SQLite says so only in the message of its catch-all code 1).
            Some(code) => {
                matches!(
                    code,
                    SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL
                ) || database_error.message().starts_with("no such table")
                    || database_error.message().starts_with("no such column")
            }
            // PostgreSQL — 08: connection exception; 53: insufficient resources (53100 is
            // a full disk); 57P0x: shutting down; 40001/40P01: serialization failure or
            // deadlock; 42P01/42703/3F000: a table, column or schema the binary needs is
            // missing (migrations not applied yet).
            None => database_error.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P0")
                    || ["40001", "40P01", "42P01", "42703", "3F000"].contains(&code.as_ref())
            }),
        },
        _ => false,
    }
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;

/// The primary result code of an SQLite error (sqlx reports the extended one); `None` for
/// an error of another database.
fn sqlite_code(error: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    error.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    let extended: i32 = error.code()?.parse().ok()?;
    Some(extended & 0xff)
}

/// Whether `error` says the disk is full or failing: the embedded store then stops
/// reporting ready until a write succeeds again.
pub(super) fn is_disk_failure(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(sqlite_code)
        .is_some_and(|code| matches!(code, SQLITE_IOERR | SQLITE_FULL))
}
