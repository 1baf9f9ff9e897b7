//! Storage: the [`Store`] the routes use, over PostgreSQL (the production store) or an
//! embedded SQLite file (the zero-install default). The domain plans every append
//! ([`crate::domain::plan_append`]); a backend only loads what the plan needs and writes
//! what it says. The reads are shared (`reads.rs`, `queries.rs`); only SQL that differs by
//! dialect is written per backend.

mod audit;
mod codec;
mod connection;
mod error;
mod keys;
mod migrations;
mod postgres;
mod queries;
mod reads;
mod records;
pub(crate) mod retention;
mod rows;
mod sqlite;
mod stats;
mod webhooks;

pub use audit::{AuditEntry, AuditFilter, AuditRecord};
pub use codec::DbTime;
pub use error::StoreError;
pub use postgres::PgStore;
pub use records::{
    Appended, BotRecord, Change, ChangeKind, ChangesPage, ConversationFilter, ConversationKey,
    ConversationRecord, EventRecord, EventsPage, FeedPosition, KeyRecord, Keyed, Outcome,
    ParticipantStint, PoolStats, Previous, StintKey, TransferDataRecord, Window,
};
pub use retention::{Candidate, Expired};
pub use sqlite::{DEFAULT_SQLITE_FILE, SqliteStore};
pub use stats::{Counted, StatsNow, StatsProgress};
pub use webhooks::{FailedAttempt, WebhookPosition, WebhookRecord, WebhookStatus};

use crate::config::DatabaseSettings;
use crate::domain::{AppendPlan, IngestBatch, ParticipantTimeline, Stored, plan_append};
use connection::{Checkout, finish};
use error::is_disk_failure;
use migrations::{migrate, require_migrations};
use reads::Reads;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

/// Plans the append of `batch` to the conversation as `stored`, received at `received_at`.
fn plan(batch: &IngestBatch, stored: Stored, received_at: OffsetDateTime) -> AppendPlan {
    plan_append(stored, &batch.events, DbTime::truncated(received_at))
}

/// The identities the events of `batch` name, each once: the participants its plan needs.
fn named_identities(batch: &IngestBatch) -> Vec<&str> {
    let mut identities: Vec<&str> = Vec::new();
    for participant in batch.events.iter().filter_map(|event| event.participant()) {
        if !identities.contains(&participant.identity.as_str()) {
            identities.push(&participant.identity);
        }
    }
    identities
}

/// Where events are appended and timelines read: PostgreSQL or SQLite.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// What the stats worker last wrote, per bot (see `stats/mod.rs`).
    stats_written: std::sync::Arc<stats::Written>,
}

#[derive(Clone)]
enum Backend {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Self {
        Self {
            backend: Backend::Postgres(store),
            stats_written: Default::default(),
        }
    }
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Self {
            backend: Backend::Sqlite(store),
            stats_written: Default::default(),
        }
    }
}

/// Runs `$call` on the shared reads (`$reads`) over the backend's pool for reads.
macro_rules! read {
    ($store:expr, $reads:ident => $call:expr) => {
        match &$store.backend {
            Backend::Postgres(store) => {
                let $reads = Reads(store.pool());
                store.deadlines().read($call).await
            }
            Backend::Sqlite(store) => {
                let $reads = Reads(store.reader());
                $call.await
            }
        }
    };
}

impl Store {
    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(store) => store.migrate().await,
            Backend::Sqlite(store) => store.migrate().await,
        }
    }

    /// Ok when a new connection to the database can be opened (TLS verified) and answers:
    /// at start, the reason it cannot, told exactly (the pool would only say it timed out).
    pub async fn reach(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(store) => store.reach().await,
            Backend::Sqlite(_) => Ok(()),
        }
    }

    /// Ok when the database answers, its migrations are applied and (SQLite) its disk
    /// takes writes.
    pub async fn ready(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(store) => store.ready().await,
            Backend::Sqlite(store) => store.ready().await,
        }
    }

    /// Stores every event of `batch`, or none, with gap-free `seq` per conversation.
    #[tracing::instrument(name = "append", skip_all,
        fields(events.count = batch.events.len() as i64, group.size = tracing::field::Empty))]
    pub async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError> {
        // A group commit says how many appends shared the transaction.
        tracing::Span::current().record("group.size", 1_i64);
        match &self.backend {
            Backend::Postgres(store) => store.append(batch).await,
            Backend::Sqlite(store) => store.append(batch).await,
        }
    }

    /// As [`Store::append`], unless `key` was used before or is in use: in one
    /// transaction, so a retry is never stored twice and a failure leaves nothing behind.
    #[tracing::instrument(name = "append", skip_all,
        fields(events.count = batch.events.len() as i64, group.size = tracing::field::Empty))]
    pub async fn append_keyed(
        &self,
        batch: &IngestBatch,
        key: &KeyRecord,
    ) -> Result<Keyed, StoreError> {
        tracing::Span::current().record("group.size", 1_i64);
        match &self.backend {
            Backend::Postgres(store) => store.append_keyed(batch, key).await,
            Backend::Sqlite(store) => store.append_keyed(batch, key).await,
        }
    }

    /// An earlier, unexpired use of `key`, if any.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn previous_use(&self, key: &KeyRecord) -> Result<Option<Previous>, StoreError> {
        read!(self, reads => reads.previous_use(key))
    }

    /// Forgets keys created before `expired_before`; returns how many.
    pub async fn purge_keys(&self, expired_before: OffsetDateTime) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => Reads(store.pool()).purge_keys(expired_before).await,
            Backend::Sqlite(store) => Reads(store.writer()).purge_keys(expired_before).await,
        }
    }

    /// A conversation's summary, if it exists.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        read!(self, reads => reads.conversation(bot_id, conversation_id))
    }

    /// Up to `limit` of a conversation's participants after position `after`, in order
    /// of first entry, each with every stint.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn participants(
        &self,
        bot_id: &str,
        conversation_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ParticipantTimeline>, StoreError> {
        read!(self, reads => reads.participants(bot_id, conversation_id, after, limit))
    }

    /// Up to `limit` events with `seq > after_seq`, in `seq` order, ending early once
    /// their payloads reach `max_bytes` (the first event always comes); `None` when the
    /// conversation does not exist.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn events(
        &self,
        bot_id: &str,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Option<EventsPage>, StoreError> {
        read!(self, reads => reads.events(bot_id, conversation_id, after_seq, limit, max_bytes))
    }

    /// Up to `limit` of the bot's events after `after` in feed order, ending early once
    /// their payloads reach `max_bytes` (the first always comes). Only events that no
    /// transaction still running can precede are listed (see `queries::changes`).
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn changes(
        &self,
        bot_id: &str,
        after: Option<&FeedPosition>,
        limit: i64,
        max_bytes: i64,
    ) -> Result<ChangesPage, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => {
                store
                    .deadlines()
                    .read(async {
                        let sql = queries::changes(
                            bot_id,
                            after,
                            limit,
                            max_bytes,
                            queries::Horizon::Running,
                        );
                        let mut page = Reads(store.pool()).changes(sql, limit).await?;
                        if !page.more {
                            let last = page.changes.last().map(|change| &change.position);
                            page.held_back = store.feed_held_back(bot_id, last.or(after)).await?;
                        }
                        Ok(page)
                    })
                    .await
            }
            Backend::Sqlite(store) => {
                let sql =
                    queries::changes(bot_id, after, limit, max_bytes, queries::Horizon::Committed);
                Reads(store.reader()).changes(sql, limit).await
            }
        }
    }

    /// The bot's feed's end now: the position after which only what is listed from now on
    /// comes; `None` while its feed is empty.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn feed_end(&self, bot_id: &str) -> Result<Option<FeedPosition>, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => {
                let sql = queries::feed_end(bot_id, queries::Horizon::Running);
                store
                    .deadlines()
                    .read(Reads(store.pool()).feed_end(sql))
                    .await
            }
            Backend::Sqlite(store) => {
                let sql = queries::feed_end(bot_id, queries::Horizon::Committed);
                Reads(store.reader()).feed_end(sql).await
            }
        }
    }

    /// Up to `limit` conversations after `after`, newest `lastEventAt` first; `now` ends
    /// the lifetime of conversations that have not ended.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn conversations(
        &self,
        bot_id: &str,
        filter: &ConversationFilter,
        after: Option<&ConversationKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => {
                let sql = queries::list_conversations_pg(bot_id, filter, after, limit, now);
                let reads = Reads(store.pool());
                store
                    .deadlines()
                    .read(reads.conversations(bot_id, sql))
                    .await
            }
            Backend::Sqlite(store) => {
                let sql = queries::list_conversations(bot_id, filter, after, limit, now);
                Reads(store.reader()).conversations(bot_id, sql).await
            }
        }
    }

    /// Up to `limit` of a participant's stints overlapping `window`, after `after`,
    /// newest `joinedAt` first; `now` ends open stints.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn stints(
        &self,
        bot_id: &str,
        identity: &str,
        window: Window,
        after: Option<&StintKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ParticipantStint>, StoreError> {
        read!(self, reads => reads.stints(bot_id, identity, window, after, limit, now))
    }

    /// Up to `limit` bots that have conversations, by id.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn bots(&self, limit: i64) -> Result<Vec<BotRecord>, StoreError> {
        read!(self, reads => reads.bots(limit))
    }

    /// The most recent `transferData` sent in a conversation.
    #[tracing::instrument(name = "query", skip_all)]
    pub async fn transfer_data(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<TransferDataRecord>, StoreError> {
        read!(self, reads => reads.transfer_data(bot_id, conversation_id))
    }

    /// Deletes the conversation with everything it holds, in one transaction, and leaves a
    /// tombstone in the change feed; whether it existed.
    pub async fn erase(&self, bot_id: &str, conversation_id: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => store.erase(bot_id, conversation_id).await,
            Backend::Sqlite(store) => store.erase(bot_id, conversation_id).await,
        }
    }

    /// Deletes, in one short transaction, the next few conversations with nobody present
    /// and no event since `ended_before`; those it deleted (none when nothing is left, or
    /// another replica holds what is). Safe to run on every replica at once.
    pub async fn purge_batch(
        &self,
        ended_before: OffsetDateTime,
    ) -> Result<Vec<Candidate>, StoreError> {
        let candidates = match &self.backend {
            Backend::Postgres(store) => retention::candidates(store.pool(), ended_before).await,
            Backend::Sqlite(store) => retention::candidates(store.reader(), ended_before).await,
        }?;
        if candidates.is_empty() {
            return Ok(candidates);
        }
        match &self.backend {
            Backend::Postgres(store) => store.purge(candidates, ended_before).await,
            Backend::Sqlite(store) => store.purge(candidates, ended_before).await,
        }
    }

    /// Deletes every conversation past the limit, batch by batch; how many this call
    /// deleted (those another replica deleted meanwhile are its own to count).
    pub async fn purge_expired(&self, ended_before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let batch = self.purge_batch(ended_before).await?;
            if batch.is_empty() {
                return Ok(purged);
            }
            purged += batch.len() as u64;
            // Between batches the writers go first (SQLite has one at a time).
            tokio::task::yield_now().await;
        }
    }

    /// What [`Store::purge_expired`] would delete now.
    pub async fn expired(&self, ended_before: OffsetDateTime) -> Result<Expired, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => retention::expired(store.pool(), ended_before).await,
            Backend::Sqlite(store) => retention::expired(store.reader(), ended_before).await,
        }
    }

    /// Forgets erasure tombstones older than `before`; how many.
    pub async fn purge_tombstones(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Postgres(store) => retention::purge_tombstones(store.pool(), before).await,
            Backend::Sqlite(store) => retention::purge_tombstones(store.writer(), before).await,
        }
    }

    /// The PostgreSQL pool, for what only PostgreSQL does (the replicas' LISTEN/NOTIFY
    /// relay); `None` for SQLite.
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.backend {
            Backend::Postgres(store) => Some(store.pool()),
            Backend::Sqlite(_) => None,
        }
    }

    /// Connection-pool use, sampled when `/metrics` is scraped.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        match &self.backend {
            Backend::Postgres(store) => vec![PoolStats::of("primary", store.pool())],
            Backend::Sqlite(store) => vec![
                PoolStats::of("writer", store.writer()),
                PoolStats::of("reader", store.reader()),
            ],
        }
    }

    /// Releases the connections.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Postgres(store) => store.pool().close().await,
            Backend::Sqlite(store) => {
                store.reader().close().await;
                store.writer().close().await;
            }
        }
    }
}

/// Opens the store that `database.url` names: `postgres://…` (production) or
/// `sqlite://…`; with no URL, the embedded SQLite file under `./data/`.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Store> {
    let url = settings
        .url
        .as_ref()
        .map(|url| url.expose_secret().trim().to_owned())
        .filter(|url| !url.is_empty());
    match url.as_deref() {
        None => Ok(
            SqliteStore::open_file(std::path::Path::new(DEFAULT_SQLITE_FILE), settings)
                .await?
                .into(),
        ),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(PgStore::connect(url, settings).await?.into())
        }
        Some(url) if url.starts_with("sqlite:") => {
            Ok(SqliteStore::connect(url, settings).await?.into())
        }
        Some(_) => anyhow::bail!(
            "unsupported database URL scheme; expected postgres://, postgresql:// or sqlite://"
        ),
    }
}
