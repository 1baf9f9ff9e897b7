//! Storage: the [`Store`] trait the routes use, with a PostgreSQL implementation (the
//! production store) and an embedded SQLite one (the zero-install default).

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::{DEFAULT_SQLITE_FILE, SqliteStore};

use crate::config::DatabaseSettings;
use crate::domain::timestamp;
use crate::domain::{
    Anomaly, EventName, Experience, IngestBatch, Participant, Status, Stint, Timeline,
    TransferType, Transfers, Transition,
};
use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::ToSchema;

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

/// A stint to write, keyed by participant and ordinal.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedStint<'a> {
    pub identity: &'a str,
    pub ordinal: i32,
    pub stint: &'a Stint,
}

/// Taken before an append, tells which stint rows the append added or changed: new
/// stints, and the stint that was open if it closed. The fold only ever appends
/// participants and their stints, and an open stint changes only by closing, so a
/// participant's position and its stints' ordinals stay put.
#[derive(Debug, Clone, PartialEq)]
pub struct StintMarks(Vec<StintMark>);

/// Where a participant's stints may have changed; a new participant's all changed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct StintMark {
    /// Stints before this ordinal were closed before the append, and stay as they are.
    first_changed: usize,
    /// Whether the stint at `first_changed` was already there, open.
    was_open: bool,
}

impl StintMarks {
    pub fn of(before: &Timeline) -> Self {
        Self(
            before
                .participants
                .iter()
                .map(|participant| match participant.stints.last() {
                    Some(last) if last.is_open() => StintMark {
                        first_changed: participant.stints.len() - 1,
                        was_open: true,
                    },
                    _ => StintMark {
                        first_changed: participant.stints.len(),
                        was_open: false,
                    },
                })
                .collect(),
        )
    }

    /// The stint rows of `after` (the marked timeline after the append) to write.
    pub fn changed<'a>(&self, after: &'a Timeline) -> Vec<ChangedStint<'a>> {
        after
            .participants
            .iter()
            .enumerate()
            .flat_map(|(index, participant)| {
                let mark = self.0.get(index).copied().unwrap_or_default();
                participant
                    .stints
                    .iter()
                    .enumerate()
                    .skip(mark.first_changed)
                    .filter(move |(ordinal, stint)| {
                        let still_open =
                            mark.was_open && *ordinal == mark.first_changed && stint.is_open();
                        !still_open
                    })
                    .map(|(ordinal, stint)| ChangedStint {
                        identity: &participant.identity,
                        ordinal: ordinal as i32,
                        stint,
                    })
            })
            .collect()
    }
}

/// A conversation without its participants: a SPEC 4.3 list item.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    pub bot_id: String,
    pub conversation_id: String,
    pub status: Status,
    pub experience: Option<Experience>,
    pub language: Option<String>,
    #[serde(serialize_with = "timestamp::serialize")]
    pub started_at: OffsetDateTime,
    #[serde(serialize_with = "timestamp::option::serialize")]
    pub ended_at: Option<OffsetDateTime>,
    #[serde(serialize_with = "timestamp::serialize")]
    pub last_event_at: OffsetDateTime,
    pub event_count: i64,
    pub anomaly_count: i64,
    pub transfers: Transfers,
    pub participants_present: Vec<String>,
}

impl ConversationSummary {
    /// The summary columns materialised from `timeline`.
    pub fn of(bot_id: &str, conversation_id: &str, timeline: &Timeline) -> Self {
        let epoch = OffsetDateTime::UNIX_EPOCH;
        Self {
            bot_id: bot_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            status: timeline.status,
            experience: timeline.experience,
            language: timeline.language.clone(),
            started_at: timeline.started_at.unwrap_or(epoch),
            ended_at: timeline.ended_at,
            last_event_at: timeline.last_event_at.unwrap_or(epoch),
            event_count: timeline.event_count,
            anomaly_count: timeline.anomaly_count,
            transfers: timeline.transfers,
            participants_present: timeline.present().map(str::to_owned).collect(),
        }
    }
}

/// A conversation with its whole timeline (SPEC 4.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub summary: ConversationSummary,
    pub timeline: Timeline,
}

/// A stored event as the events query returns it (SPEC 4.2).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub seq: i64,
    #[serde(serialize_with = "timestamp::serialize")]
    pub received_at: OffsetDateTime,
    pub name: EventName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_type: Option<TransferType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    pub participant: Option<Participant>,
    pub anomalies: Vec<Anomaly>,
    /// The event exactly as received.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
}

/// A page of a conversation's events (SPEC 4.2).
#[derive(Debug)]
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
    /// Whether more events follow the last one.
    pub more: bool,
}

/// One stint of a participant, with the conversation it belongs to (SPEC 4.4).
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantStint {
    pub conversation_id: String,
    pub ordinal: i32,
    pub stint: Stint,
}

/// The latest `transferData` of a conversation (SPEC 4.5).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferData {
    pub seq: i64,
    #[serde(serialize_with = "timestamp::serialize")]
    pub received_at: OffsetDateTime,
    pub participant: Option<Participant>,
    /// The `transferData` exactly as sent: any JSON value.
    #[schema(value_type = serde_json::Value)]
    pub data: Box<RawValue>,
}

/// Filters of the conversation list. A conversation's lifetime is
/// `[startedAt, endedAt or now]`; `from`/`to` keep those overlapping `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationFilter {
    pub status: Option<Status>,
    pub participant: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Where the previous page of conversations ended (newest `lastEventAt` first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ConversationKey {
    #[serde(with = "time::serde::rfc3339")]
    pub last_event_at: OffsetDateTime,
    pub conversation_id: String,
}

/// Where the previous page of stints ended (newest `joinedAt` first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// Connection-pool use, sampled when `/metrics` is scraped.
pub trait PoolUse {
    fn pool_stats(&self) -> Vec<PoolStats>;
}

impl PoolUse for PgStore {
    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![PoolStats::of("primary", self.pool())]
    }
}

/// Where events are appended and timelines read.
#[async_trait]
pub trait Store: PoolUse + Send + Sync + 'static {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Ok when the database answers and its migrations are applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Stores every event of `batch`, or none, with gap-free `seq` per conversation.
    async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError>;

    /// As [`Store::append`], unless `key` was used before or is in use: in one
    /// transaction, so a retry is never stored twice and a failure leaves nothing behind.
    async fn append_keyed(&self, batch: &IngestBatch, key: &KeyRecord)
    -> Result<Keyed, StoreError>;

    /// An earlier, unexpired use of `key`, if any.
    async fn previous_use(&self, key: &KeyRecord) -> Result<Option<Previous>, StoreError>;

    /// Forgets keys created before `expired_before`; returns how many.
    async fn purge_keys(&self, expired_before: OffsetDateTime) -> Result<u64, StoreError>;

    /// A conversation and its timeline, if it exists.
    async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<Conversation>, StoreError>;

    /// Up to `limit` events with `seq > after_seq`, in `seq` order, ending early once
    /// their payloads reach `max_bytes` (the first event always comes); `None` when the
    /// conversation does not exist.
    async fn events(
        &self,
        bot_id: &str,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Option<EventsPage>, StoreError>;

    /// Up to `limit` conversations after `after`, newest `lastEventAt` first; `now` ends
    /// the lifetime of conversations that have not ended.
    async fn conversations(
        &self,
        bot_id: &str,
        filter: &ConversationFilter,
        after: Option<&ConversationKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ConversationSummary>, StoreError>;

    /// Up to `limit` of a participant's stints overlapping `window`, after `after`,
    /// newest `joinedAt` first; `now` ends open stints.
    async fn stints(
        &self,
        bot_id: &str,
        identity: &str,
        window: Window,
        after: Option<&StintKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ParticipantStint>, StoreError>;

    /// The most recent `transferData` sent in a conversation.
    async fn transfer_data(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<TransferData>, StoreError>;

    /// Releases the connections.
    async fn close(&self);
}

/// Ok when every migration the binary embeds is among the `applied` versions.
fn require_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Result<(), StoreError> {
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

/// The versions every backend's readiness and migration checks read.
const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

/// Logs the `applied` versions this binary does not know: a newer release migrated the
/// database. Its migrations are written expand-then-contract, so this one serves on.
fn report_unknown_migrations(migrator: &sqlx::migrate::Migrator, applied: &[i64]) {
    let unknown: Vec<i64> = applied
        .iter()
        .copied()
        .filter(|version| !migrator.version_exists(*version))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the database has migrations this binary does not know (applied by a newer \
             release); serving with the schema as it is"
        );
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
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings
        .url
        .as_ref()
        .map(|url| url.expose_secret().trim().to_owned())
        .filter(|url| !url.is_empty());
    match url.as_deref() {
        None => Ok(Arc::new(
            SqliteStore::open_file(std::path::Path::new(DEFAULT_SQLITE_FILE), settings).await?,
        )),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PgStore::connect(url, settings).await?))
        }
        Some(url) if url.starts_with("sqlite:") => {
            Ok(Arc::new(SqliteStore::connect(url, settings).await?))
        }
        Some(_) => anyhow::bail!(
            "unsupported database URL scheme; expected postgres://, postgresql:// or sqlite://"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, ExitType};
    use serde_json::{Value, json};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-03-01 09:00:00 UTC);

    fn events(events: Value) -> Vec<Event> {
        let body = json!({ "conversationId": "c-1", "botId": "st-1", "events": events });
        IngestBatch::parse(body.to_string().as_bytes(), "st-1")
            .expect("the test body is a valid hooks request")
            .events
    }

    fn transfer(transfer_type: &str, transition: &str, agent: &str) -> Value {
        json!({
            "name": "INTERNAL_TRANSFER_EVENT", "transfertype": transfer_type,
            "transition": transition, "isExtAD": "true", "experience": "voice",
            "participant": { "identity": agent, "name": agent, "type": "agent" }
        })
    }

    fn apply(timeline: &mut Timeline, batch: &[Event]) {
        for event in batch {
            timeline.apply(T0, event);
        }
    }

    fn timeline_of(batch: Value) -> Timeline {
        let mut timeline = Timeline::default();
        apply(&mut timeline, &events(batch));
        timeline
    }

    /// `(identity, ordinal, still open)` of each row an append of `batch` writes.
    fn rows_written(timeline: &mut Timeline, batch: Value) -> Vec<(String, i32, bool)> {
        let marks = StintMarks::of(timeline);
        apply(timeline, &events(batch));
        marks
            .changed(timeline)
            .iter()
            .map(|row| (row.identity.to_owned(), row.ordinal, row.stint.is_open()))
            .collect()
    }

    fn row(identity: &str, ordinal: i32, open: bool) -> (String, i32, bool) {
        (identity.to_owned(), ordinal, open)
    }

    #[test]
    fn a_new_conversation_writes_every_stint_it_opened() {
        let mut timeline = Timeline::default();

        let rows = rows_written(
            &mut timeline,
            json!([
                transfer("NA", "entry", "a1"),
                transfer("COLD", "entry", "a2")
            ]),
        );

        assert_eq!(rows, [row("a1", 0, true), row("a2", 0, true)]);
    }

    #[test]
    fn closing_a_stint_rewrites_only_that_stint() {
        let mut timeline = timeline_of(json!([
            transfer("NA", "entry", "a1"),
            transfer("COLD", "exit", "a1"),
            transfer("COLD", "entry", "a1"),
            transfer("WARM", "entry", "a2"),
        ]));

        let rows = rows_written(&mut timeline, json!([transfer("WARM", "exit", "a2")]));

        assert_eq!(rows, [row("a2", 0, false)]);
    }

    #[test]
    fn a_returning_participant_gets_a_new_ordinal_and_the_closed_ones_stay_untouched() {
        let mut timeline = timeline_of(json!([
            transfer("NA", "entry", "a1"),
            transfer("COLD", "exit", "a1"),
            transfer("COLD", "entry", "a2"),
        ]));

        let rows = rows_written(&mut timeline, json!([transfer("WARM", "entry", "a1")]));

        assert_eq!(rows, [row("a1", 1, true)]);
    }

    #[test]
    fn events_that_change_no_presence_write_no_stint() {
        let mut timeline = timeline_of(json!([transfer("NA", "entry", "a1")]));

        let rows = rows_written(
            &mut timeline,
            json!([
                transfer("COLD", "entry", "a1"),
                transfer("COLD", "exit", "nobody"),
                { "name": "TRIGGER_SUMMARY_EVENT", "data": {} }
            ]),
        );

        assert_eq!(rows, []);
    }

    #[test]
    fn end_of_conversation_rewrites_every_open_stint_it_closed() {
        let mut timeline = timeline_of(json!([
            transfer("NA", "entry", "a1"),
            transfer("COLD", "exit", "a1"),
            transfer("COLD", "entry", "a2"),
            transfer("WARM", "entry", "a3"),
        ]));

        let marks = StintMarks::of(&timeline);
        apply(
            &mut timeline,
            &events(json!([{ "name": "END_OF_CONVERSATION" }])),
        );
        let rows = marks.changed(&timeline);

        let closed: Vec<_> = rows
            .iter()
            .map(|row| (row.identity, row.ordinal, row.stint.exit_type))
            .collect();
        assert_eq!(
            closed,
            [
                ("a2", 0, Some(ExitType::End)),
                ("a3", 0, Some(ExitType::End))
            ]
        );
    }
}
