//! Storage: the [`Store`] the routes use, over PostgreSQL (the production store) or an
//! embedded SQLite file (the zero-install default). The domain plans every append
//! ([`crate::domain::plan_append`]); a backend only loads what the plan needs and writes
//! what it says. The reads are shared (`sql.rs`); only SQL that differs by dialect is
//! written per backend.

mod codec;
mod keys;
mod postgres;
mod queries;
mod reads;
pub(crate) mod retention;
mod rows;
mod sqlite;
mod stats;

pub use codec::DbTime;
pub use postgres::PgStore;
pub use retention::{Candidate, Expired};
pub use sqlite::{DEFAULT_SQLITE_FILE, SqliteStore};
pub use stats::{Counted, StatsNow, StatsProgress};

use crate::config::DatabaseSettings;
use crate::domain::{
    Anomaly, AppendPlan, EventName, Hop, IngestBatch, Participant, ParticipantTimeline, Status,
    Stint, Stored, Summary, TransferType, Transition, plan_append,
};
use reads::Reads;
use secrecy::ExposeSecret;
use serde_json::value::RawValue;
use time::OffsetDateTime;

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
fn is_disk_failure(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(sqlite_code)
        .is_some_and(|code| matches!(code, SQLITE_IOERR | SQLITE_FULL))
}

/// A pooled connection that goes back to the pool only when the work using it finished
/// ([`Checkout::reuse`]); otherwise it is closed. sqlx cannot know the state of a
/// connection whose work was cancelled or failed half way: a `BEGIN` sent but never
/// acknowledged leaves PostgreSQL inside a transaction sqlx believes closed, so every
/// later autocommit write on that connection would be acknowledged and then lost; a
/// failed SQLite `COMMIT` (a full disk) leaves sqlx's transaction depth stuck above zero.
struct Checkout<DB: sqlx::Database> {
    connection: sqlx::pool::PoolConnection<DB>,
    reusable: bool,
}

impl<DB: sqlx::Database> Checkout<DB> {
    async fn acquire(pool: &sqlx::Pool<DB>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            connection: pool.acquire().await?,
            reusable: false,
        })
    }

    /// The work is done and the connection is in a known state.
    fn reuse(mut self) {
        self.reusable = true;
    }
}

impl<DB: sqlx::Database> Checkout<DB> {
    /// Reuses the connection if `result` is a success, else closes it.
    fn reuse_if_ok<T>(self, result: &Result<T, StoreError>) {
        if result.is_ok() {
            self.reuse();
        }
    }
}

/// Ends `tx`: commits when `keep` says the result is worth it, else rolls back at once (a
/// dropped transaction would hold its locks until its connection is next used). A
/// transaction that did not end cleanly is an error, so its [`Checkout`] is closed.
async fn finish<DB: sqlx::Database, T>(
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

/// What an append stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub first_seq: i64,
    pub last_seq: i64,
    pub status: Status,
    /// Every anomaly the appended events raised, in `seq` order (for metrics); empty for
    /// an outcome replayed from an `Idempotency-Key`, which stored nothing.
    pub anomalies: Vec<Anomaly>,
}

impl Appended {
    fn of(plan: &AppendPlan) -> Self {
        Self {
            first_seq: plan.first_seq,
            last_seq: plan.last_seq(),
            status: plan.summary.status,
            anomalies: plan.all_anomalies(),
        }
    }
}

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

/// A conversation's summary, who is present in it, its hops and its interaction: a SPEC
/// 4.3 list item.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    pub bot_id: String,
    pub conversation_id: String,
    pub summary: Summary,
    /// Identities with an open stint, in order of first entry.
    pub present: Vec<String>,
    /// In `seq` order.
    pub hops: Vec<Hop>,
    pub interaction: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A stored event (SPEC 4.2).
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub seq: i64,
    pub received_at: OffsetDateTime,
    pub name: EventName,
    pub transfer_type: Option<TransferType>,
    pub transition: Option<Transition>,
    pub participant: Option<Participant>,
    pub anomalies: Vec<Anomaly>,
    /// The event exactly as received.
    pub payload: Box<RawValue>,
}

/// A page of a conversation's events (SPEC 4.2).
#[derive(Debug)]
pub struct EventsPage {
    pub events: Vec<EventRecord>,
    /// Whether more events follow the last one.
    pub more: bool,
}

/// A place in a bot's change feed (SPEC 8): just after the event `seq` of conversation
/// `conversation_id` written in feed transaction `txn`. The feed is in this order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FeedPosition {
    #[serde(rename = "t")]
    pub txn: i64,
    #[serde(rename = "c")]
    pub conversation_id: String,
    #[serde(rename = "s")]
    pub seq: i64,
}

impl FeedPosition {
    /// Before every item of every feed.
    pub fn beginning() -> Self {
        Self {
            txn: -1,
            conversation_id: String::new(),
            seq: 0,
        }
    }
}

/// An item of the change feed.
#[derive(Debug, Clone)]
pub struct Change {
    pub position: FeedPosition,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone)]
pub enum ChangeKind {
    /// A stored event of the conversation.
    Event {
        /// The conversation's status after the event; unknown for an event stored before
        /// the feed existed, other than its conversation's last.
        conversation_status: Option<Status>,
        event: EventRecord,
    },
    /// The conversation was erased (SPEC 10): consumers delete their copies of it.
    Erased { at: OffsetDateTime },
}

/// A page of the change feed.
#[derive(Debug)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    /// Whether more changes visible now follow the last one.
    pub more: bool,
    /// Whether committed changes follow that are not listed yet, because a transaction
    /// that could still precede them is running (PostgreSQL): they come once it ends.
    pub held_back: bool,
}

/// One stint of a participant, with the conversation it belongs to (SPEC 4.4).
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantStint {
    pub conversation_id: String,
    pub ordinal: i32,
    pub stint: Stint,
}

/// A bot that has conversations (SPEC 9: the bots the console offers).
#[derive(Debug, Clone, PartialEq)]
pub struct BotRecord {
    pub bot_id: String,
    /// When its latest event arrived.
    pub last_event_at: OffsetDateTime,
}

/// The latest `transferData` of a conversation (SPEC 4.5).
#[derive(Debug, Clone)]
pub struct TransferDataRecord {
    pub seq: i64,
    pub received_at: OffsetDateTime,
    pub participant: Option<Participant>,
    /// Exactly as sent: any JSON value.
    pub data: Box<RawValue>,
}

/// Filters of the conversation list. A conversation's lifetime is
/// `[startedAt, endedAt or now]`; `from`/`to` keep those overlapping `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationFilter {
    pub status: Option<Status>,
    /// Conversations whose interaction names this service.
    pub service: Option<String>,
    pub participant: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Where the previous page of conversations ended (newest `lastEventAt` first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConversationKey {
    #[serde(with = "time::serde::rfc3339")]
    pub last_event_at: OffsetDateTime,
    pub conversation_id: String,
}

/// Where the previous page of stints ended (newest `joinedAt` first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StintKey {
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    pub conversation_id: String,
    pub ordinal: i32,
}

/// A time window `[from, to)`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// An `Idempotency-Key` as a request presents it: scoped by bot, with the fingerprint of
/// its body and the times that decide whether an earlier use still counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub bot_id: String,
    pub key: String,
    pub fingerprint: String,
    pub now: OffsetDateTime,
    /// Uses of the key before this time have expired.
    pub expired_before: OffsetDateTime,
}

/// An earlier, finished request with the same key.
#[derive(Debug, Clone, PartialEq)]
pub enum Previous {
    SameBody(Outcome),
    OtherBody,
}

/// A finished append, kept with its key for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub conversation_id: String,
    pub accepted: i64,
    pub appended: Appended,
}

/// What an append with an idempotency key did.
#[derive(Debug, Clone, PartialEq)]
pub enum Keyed {
    /// The events were stored and the outcome kept under the key.
    Stored(Appended),
    /// The key was used before; nothing was stored.
    Used(Previous),
    /// Another request with the key is running right now; nothing was stored.
    InFlight,
}

/// How one connection pool is used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool: `primary` (PostgreSQL), or SQLite's `writer` and `reader`.
    pub pool: &'static str,
    /// Open connections, idle or in use.
    pub size: u32,
    pub idle: u32,
    /// The most connections the pool will open.
    pub max: u32,
}

impl PoolStats {
    fn of<DB: sqlx::Database>(pool: &'static str, connections: &sqlx::Pool<DB>) -> Self {
        Self {
            pool,
            size: connections.size(),
            idle: u32::try_from(connections.num_idle()).unwrap_or(u32::MAX),
            max: connections.options().get_max_connections(),
        }
    }
}

/// Where events are appended and timelines read: PostgreSQL or SQLite.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// What the stats worker last wrote, per bot (see `stats.rs`).
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
        match &self.backend {
            Backend::Postgres(store) => store.purge_batch(ended_before).await,
            Backend::Sqlite(store) => store.purge_batch(ended_before).await,
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

/// The versions of the migrations applied to a database.
async fn applied_migrations<'c, DB, E>(executor: E) -> Result<Vec<i64>, StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(executor)
        .await?;
    Ok(applied.into_iter().map(|(version,)| version).collect())
}

/// Applies `migrator`'s pending migrations on `connection`, then logs the applied versions
/// it does not know: a newer release migrated the database. Its migrations are written
/// expand-then-contract, so this one serves on.
async fn migrate<DB>(
    migrator: &sqlx::migrate::Migrator,
    connection: &mut DB::Connection,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    migrator
        .run_direct(None, connection, false)
        .await
        .map_err(migration_failed)?;
    let unknown: Vec<i64> = applied_migrations(connection)
        .await?
        .into_iter()
        .filter(|version| !migrator.version_exists(*version))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the database has migrations this binary does not know (applied by a newer \
             release); serving with the schema as it is"
        );
    }
    Ok(())
}

/// Ok when every migration of `migrator` is applied.
async fn require_migrations<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let applied = applied_migrations(pool).await?;
    let missing = migrator
        .iter()
        .filter(|migration| !applied.contains(&migration.version))
        .count();
    if missing == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{missing} migration(s) not applied").into())
    }
}

/// A failed migration: unavailable if the database could not be reached, else a bug or a
/// changed migration file.
fn migration_failed(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(error) => StoreError::from(error),
        other => StoreError::Other(anyhow::Error::new(other).context("migration failed")),
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
