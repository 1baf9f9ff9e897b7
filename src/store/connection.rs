//! A connection checked out for one piece of work, and how its transaction ends.

use super::StoreError;

/// A pooled connection that goes back to the pool only when the work using it finished
/// ([`Checkout::reuse`]); otherwise it is closed. sqlx cannot know the state of a
/// connection whose work was cancelled or failed half way: a `BEGIN` sent but never
/// acknowledged leaves PostgreSQL inside a transaction sqlx believes closed, so every
/// later autocommit write on that connection would be acknowledged and then lost; a
/// failed SQLite `COMMIT` (a full disk) leaves sqlx's transaction depth stuck above zero.
pub(super) struct Checkout<DB: sqlx::Database> {
    connection: sqlx::pool::PoolConnection<DB>,
    reusable: bool,
}

impl<DB: sqlx::Database> Checkout<DB> {
    pub(super) async fn acquire(pool: &sqlx::Pool<DB>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            connection: pool.acquire().await?,
            reusable: false,
        })
    }

    /// The work is done and the connection is in a known state.
    pub(super) fn reuse(mut self) {
        self.reusable = true;
    }
}

impl<DB: sqlx::Database> Checkout<DB> {
    /// Reuses the connection if `result` is a success, else closes it.
    pub(super) fn reuse_if_ok<T>(self, result: &Result<T, StoreError>) {
        if result.is_ok() {
            self.reuse();
        }
    }
}

/// Ends `tx`: commits when `keep` says the result is worth it, else rolls back at once (a
/// dropped transaction would hold its locks until its connection is next used). A
/// transaction that did not end cleanly is an error, so its [`Checkout`] is closed.
pub(super) async fn finish<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<T, StoreError>,
    keep: impl Fn(&T) -> bool,
) -> Result<T, StoreError> {
    match result {
        Ok(value) if keep(&value) => {
            tx.commit().await?;
            Ok(value)
        }
        result => match tx.rollback().await {
            Ok(()) => result,
            Err(error) => {
                tracing::warn!(error = %error, "rollback failed; the connection is discarded");
                result.and(Err(error.into()))
            }
        },
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Checkout<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.connection
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Checkout<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.connection
    }
}

impl<DB: sqlx::Database> Drop for Checkout<DB> {
    fn drop(&mut self) {
        if !self.reusable {
            self.connection.close_on_drop();
        }
    }
}
