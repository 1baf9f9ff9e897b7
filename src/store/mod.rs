//! Storage: the [`Store`] trait the routes use, and its PostgreSQL implementation.

mod postgres;

pub use postgres::PgStore;

use crate::config::DatabaseSettings;
use crate::domain::{IngestBatch, Status, Stint, Timeline};
use async_trait::async_trait;
use secrecy::ExposeSecret;
use std::sync::Arc;

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
        if is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Other(error.into())
        }
    }
}

/// Connection loss, pool exhaustion and the server refusing work are worth a retry.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database_error) => database_error.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P0x: shutting down;
            // 40001/40P01: serialization failure or deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// What an append stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub first_seq: i64,
    pub last_seq: i64,
    pub status: Status,
}

/// A stint row as the store keeps it, keyed by participant and ordinal.
#[derive(Debug, Clone, PartialEq)]
pub struct StintRow {
    pub identity: String,
    pub ordinal: i32,
    pub stint: Stint,
}

/// The stint rows that `after` adds or changes relative to `before`: new stints, and
/// stints that were open before (they may have closed).
pub fn changed_stints(before: &Timeline, after: &Timeline) -> Vec<StintRow> {
    after
        .participants
        .iter()
        .flat_map(|participant| {
            let previous = before
                .participants
                .iter()
                .find(|known| known.identity == participant.identity)
                .map(|known| &known.stints[..])
                .unwrap_or_default();
            let first_changed = match previous.last() {
                Some(last) if last.is_open() => previous.len() - 1,
                _ => previous.len(),
            };
            participant
                .stints
                .iter()
                .enumerate()
                .skip(first_changed)
                .map(|(ordinal, stint)| StintRow {
                    identity: participant.identity.clone(),
                    ordinal: ordinal as i32,
                    stint: stint.clone(),
                })
        })
        .collect()
}

/// Where events are appended and timelines read.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Ok when the database answers and its migrations are applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Stores every event of `batch`, or none, with gap-free `seq` per conversation.
    async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError>;

    /// Releases the connections.
    async fn close(&self);
}

/// Opens the store that `settings.database.url` names.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    let Some(url) = &settings.database_url() else {
        anyhow::bail!(
            "no database configured: set database.url in the config or DATABASE_URL (postgres://…)"
        );
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, settings).await?))
    } else {
        anyhow::bail!("unsupported database URL scheme; expected postgres://")
    }
}

impl DatabaseSettings {
    fn database_url(&self) -> Option<String> {
        self.url
            .as_ref()
            .map(|url| url.expose_secret().to_owned())
            .filter(|url| !url.is_empty())
    }
}
