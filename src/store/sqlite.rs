//! The embedded SQLite store: the zero-install default, with the same behaviour as
//! PostgreSQL. Writes go through a one-connection pool and `BEGIN IMMEDIATE`, so there is
//! one writer at a time even across processes sharing the file.

use super::sql::{self, Bind, KeyRow, PagedEventRow, StintRow, SummaryRow, convert};
use super::{
    Appended, Checkout, Conversation, ConversationFilter, ConversationKey, ConversationSummary,
    EventsPage, KeyRecord, Keyed, ParticipantStint, PoolStats, PoolUse, Previous, StintKey,
    StintMarks, Store, StoreError, TransferData, Window, finish, is_disk_failure,
};
use crate::config::DatabaseSettings;
use crate::domain::{IngestBatch, Participant, Timeline};
use anyhow::Context;
use async_trait::async_trait;
use serde_json::value::RawValue;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous, SqliteTypeInfo,
    SqliteValueRef,
};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, Decode, Sqlite, SqlitePool, Transaction, Type};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// An older binary keeps serving a database that a newer release migrated further.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/sqlite")
};

/// Where the embedded store keeps its file when no database URL is configured.
pub const DEFAULT_SQLITE_FILE: &str = "data/agentassist-hooks.db";

/// Timelines in an SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Set when a write failed for a full or failing disk, cleared when one succeeds:
    /// reads still work then, so readiness must look at writes.
    disk_failing: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite:` URL names.
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url).context("invalid SQLite URL")?;
        anyhow::ensure!(
            !options.get_filename().as_os_str().is_empty()
                && options.get_filename() != Path::new(":memory:"),
            "the SQLite store needs a file (sqlite://path/to/file.db), not an in-memory database"
        );
        Self::open(options, settings).await
    }

    /// Opens (creating it and its directory if needed) the database file at `path`.
    pub async fn open_file(path: &Path, settings: &DatabaseSettings) -> anyhow::Result<Self> {
        Self::open(SqliteConnectOptions::new().filename(path), settings).await
    }

    async fn open(
        options: SqliteConnectOptions,
        settings: &DatabaseSettings,
    ) -> anyhow::Result<Self> {
        if let Some(directory) = options.get_filename().parent()
            && !directory.as_os_str().is_empty()
        {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
        }
        // FULL: an acknowledged event survives power loss, as it does in PostgreSQL.
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(settings.acquire_timeout_seconds.max(1)));
        let acquire_timeout = Duration::from_secs(settings.acquire_timeout_seconds);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open {}", options.get_filename().display()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options.read_only(true));
        Ok(Self {
            writer,
            reader,
            disk_failing: Arc::default(),
        })
    }

    /// The writer pool (tests inspect the tables through it).
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }
}

/// A time as SQLite keeps it: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micros(i64);

impl From<OffsetDateTime> for Micros {
    fn from(at: OffsetDateTime) -> Self {
        Self((at.unix_timestamp_nanos() / 1_000) as i64)
    }
}

impl From<Micros> for OffsetDateTime {
    fn from(Micros(micros): Micros) -> Self {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl Type<Sqlite> for Micros {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for Micros {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<i64 as Decode<Sqlite>>::decode(value)?))
    }
}

fn micros(at: OffsetDateTime) -> i64 {
    Micros::from(at).0
}

fn optional_micros(at: Option<OffsetDateTime>) -> Option<i64> {
    at.map(micros)
}

/// Runs a shared list query with SQLite's time representation.
async fn fetch_sql<R>(pool: &SqlitePool, sql: sql::Sql) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let mut query = sqlx::query_as::<_, R>(AssertSqlSafe(sql.text));
    for bind in sql.binds {
        query = match bind {
            Bind::Text(text) => query.bind(text),
            Bind::Int(number) => query.bind(number),
            Bind::Time(at) => query.bind(micros(at)),
        };
    }
    query.fetch_all(pool).await
}

impl PoolUse for SqliteStore {
    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            PoolStats::of("writer", &self.writer),
            PoolStats::of("reader", &self.reader),
        ]
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(super::migration_failed)?;
        let applied: Vec<i64> = sqlx::query_scalar(super::APPLIED_MIGRATIONS)
            .fetch_all(&self.writer)
            .await?;
        super::report_unknown_migrations(&MIGRATOR, &applied);
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> = sqlx::query_scalar(super::APPLIED_MIGRATIONS)
            .fetch_all(&self.reader)
            .await?;
        super::require_migrations(&MIGRATOR, &applied)?;
        if self.disk_failing.load(Ordering::Relaxed) {
            self.write(async |tx| probe_write(tx).await, |_| true)
                .await?;
        }
        Ok(())
    }

    async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError> {
        self.write(async |tx| append_in(tx, batch).await, |_| true)
            .await
    }

    async fn append_keyed(
        &self,
        batch: &IngestBatch,
        key: &KeyRecord,
    ) -> Result<Keyed, StoreError> {
        self.write(
            async |tx| append_keyed_in(tx, batch, key).await,
            |keyed| matches!(keyed, Keyed::Stored(_)),
        )
        .await
    }

    async fn previous_use(&self, key: &KeyRecord) -> Result<Option<Previous>, StoreError> {
        let mut connection = self.writer.acquire().await?;
        read_key(&mut connection, key).await
    }

    async fn purge_keys(&self, expired_before: OffsetDateTime) -> Result<u64, StoreError> {
        let purged = sqlx::query(sql::PURGE_KEYS)
            .bind(micros(expired_before))
            .execute(&self.writer)
            .await?;
        Ok(purged.rows_affected())
    }

    async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let timeline: Option<Json<Timeline>> = sqlx::query_scalar(
            "SELECT timeline FROM conversations WHERE bot_id = $1 AND conversation_id = $2",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .fetch_optional(&self.reader)
        .await?
        .flatten();
        Ok(timeline.map(|Json(timeline)| Conversation {
            summary: ConversationSummary::of(bot_id, conversation_id, &timeline),
            timeline,
        }))
    }

    async fn events(
        &self,
        bot_id: &str,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Option<EventsPage>, StoreError> {
        let rows: Vec<PagedEventRow<Micros>> = sqlx::query_as(sql::EVENTS_PAGE)
            .bind(bot_id)
            .bind(conversation_id)
            .bind(after_seq)
            .bind(limit + 1)
            .bind(max_bytes)
            .fetch_all(&self.reader)
            .await?;
        if rows.is_empty() && self.conversation(bot_id, conversation_id).await?.is_none() {
            return Ok(None);
        }
        sql::events_page(rows, limit).map(Some)
    }

    async fn conversations(
        &self,
        bot_id: &str,
        filter: &ConversationFilter,
        after: Option<&ConversationKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let sql = sql::list_conversations(bot_id, filter, after, limit, now);
        let rows: Vec<SummaryRow<Micros>> = fetch_sql(&self.reader, sql).await?;
        convert(rows, SummaryRow::into_summary)
    }

    async fn stints(
        &self,
        bot_id: &str,
        identity: &str,
        window: Window,
        after: Option<&StintKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ParticipantStint>, StoreError> {
        let sql = sql::list_stints(bot_id, identity, window, after, limit, now);
        let rows: Vec<StintRow<Micros>> = fetch_sql(&self.reader, sql).await?;
        convert(rows, StintRow::into_stint)
    }

    async fn transfer_data(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<TransferData>, StoreError> {
        let row: Option<(i64, Micros, Option<Json<Participant>>, String)> = sqlx::query_as(
            "SELECT seq, received_at, participant, transfer_data
             FROM events
             WHERE bot_id = $1 AND conversation_id = $2 AND transfer_data IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .fetch_optional(&self.reader)
        .await?;
        let Some((seq, received_at, participant, data)) = row else {
            return Ok(None);
        };
        Ok(Some(TransferData {
            seq,
            received_at: received_at.into(),
            participant: participant.map(|Json(participant)| participant),
            data: RawValue::from_string(data).context("stored transferData is not JSON")?,
        }))
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

impl SqliteStore {
    /// Runs `work` in a write transaction, committed if `keep` says its result is worth it.
    async fn write<T>(
        &self,
        work: impl AsyncFnOnce(&mut Transaction<'_, Sqlite>) -> Result<T, StoreError>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError> {
        let mut connection = Checkout::acquire(&self.writer).await?;
        let result = async {
            let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
            let result = work(&mut tx).await;
            finish(tx, result, keep).await
        }
        .await;
        self.observe(connection, result)
    }

    /// Notes whether the disk took the write, and keeps the connection only if it did.
    fn observe<T>(
        &self,
        connection: Checkout<Sqlite>,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.disk_failing.store(false, Ordering::Relaxed),
            Err(StoreError::Unavailable(error)) if is_disk_failure(error) => {
                self.disk_failing.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        connection.reuse_if_ok(&result);
        result
    }
}

/// A write that needs the disk to take a page, for readiness after a disk failure.
async fn probe_write(tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO write_probe (id, probed_at) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
    )
    .bind(micros(OffsetDateTime::now_utc()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn append_keyed_in(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &IngestBatch,
    key: &KeyRecord,
) -> Result<Keyed, StoreError> {
    // BEGIN IMMEDIATE already made this the only writer: no request with the key can
    // be running, so a retry waits for the first and is then replayed.
    if let Some(previous) = read_key(tx, key).await? {
        return Ok(Keyed::Used(previous));
    }
    let appended = append_in(tx, batch).await?;
    sqlx::query(sql::SAVE_KEY)
        .bind(&key.bot_id)
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(micros(key.now))
        .bind(batch.conversation_id.as_str())
        .bind(batch.events.len() as i64)
        .bind(appended.first_seq)
        .bind(appended.last_seq)
        .bind(appended.status.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(Keyed::Stored(appended))
}

async fn append_in(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &IngestBatch,
) -> Result<Appended, StoreError> {
    let bot_id = batch.bot_id.as_str();
    let conversation_id = batch.conversation_id.as_str();
    let stored: Option<(i64, Option<Json<Timeline>>, Micros)> = sqlx::query_as(
        "SELECT last_seq, timeline, last_event_at FROM conversations
         WHERE bot_id = $1 AND conversation_id = $2",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .fetch_optional(&mut **tx)
    .await?;

    // Truncated to what is stored, and never before the previous event, so that
    // `receivedAt` follows `seq` even if the wall clock steps back.
    let now = OffsetDateTime::from(Micros::from(OffsetDateTime::now_utc()));
    let (previous_seq, before, received_at) = match stored {
        Some((last_seq, timeline, last_event_at)) => (
            last_seq,
            timeline.map(|Json(timeline)| timeline).unwrap_or_default(),
            now.max(last_event_at.into()),
        ),
        None => (0, Timeline::default(), now),
    };
    let first_seq = previous_seq + 1;
    let last_seq = previous_seq + batch.events.len() as i64;

    let marks = StintMarks::of(&before);
    let mut timeline = before;
    let anomalies: Vec<_> = batch
        .events
        .iter()
        .map(|event| timeline.apply(received_at, event))
        .collect();

    save_conversation(tx, bot_id, conversation_id, last_seq, &timeline).await?;
    for ((seq, event), anomalies) in (first_seq..).zip(&batch.events).zip(&anomalies) {
        sqlx::query(
            "INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
                 transition, participant_identity, participant, anomalies, transfer_data, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(seq)
        .bind(micros(received_at))
        .bind(event.name().as_str())
        .bind(event.transfer_type().map(|kind| kind.as_str()))
        .bind(event.transition().map(|transition| transition.as_str()))
        .bind(
            event
                .participant()
                .map(|participant| participant.identity.as_str()),
        )
        .bind(event.participant().map(Json))
        .bind(Json(anomalies))
        .bind(event.transfer_data.as_ref().map(|data| data.get()))
        .bind(event.payload.get())
        .execute(&mut **tx)
        .await?;
    }
    for changed in marks.changed(&timeline) {
        sqlx::query(
            "INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
                 entry_type, exit_type)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (bot_id, conversation_id, identity, ordinal)
                 DO UPDATE SET left_at = excluded.left_at, exit_type = excluded.exit_type",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(changed.identity)
        .bind(changed.ordinal)
        .bind(micros(changed.stint.joined_at))
        .bind(optional_micros(changed.stint.left_at))
        .bind(changed.stint.entry_type.as_str())
        .bind(changed.stint.exit_type.map(|exit| exit.as_str()))
        .execute(&mut **tx)
        .await?;
    }

    Ok(Appended {
        first_seq,
        last_seq,
        status: timeline.status,
        anomalies: anomalies.concat(),
    })
}

async fn save_conversation(
    tx: &mut Transaction<'_, Sqlite>,
    bot_id: &str,
    conversation_id: &str,
    last_seq: i64,
    timeline: &Timeline,
) -> Result<(), StoreError> {
    let summary = ConversationSummary::of(bot_id, conversation_id, timeline);
    sqlx::query(
        "INSERT INTO conversations (bot_id, conversation_id, last_seq, status, experience,
             language, started_at, ended_at, last_event_at, event_count, anomaly_count,
             cold_transfers, warm_transfers, redial_transfers, participants_present, timeline)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
             last_seq = excluded.last_seq, status = excluded.status,
             experience = excluded.experience, language = excluded.language,
             started_at = excluded.started_at, ended_at = excluded.ended_at,
             last_event_at = excluded.last_event_at, event_count = excluded.event_count,
             anomaly_count = excluded.anomaly_count, cold_transfers = excluded.cold_transfers,
             warm_transfers = excluded.warm_transfers,
             redial_transfers = excluded.redial_transfers,
             participants_present = excluded.participants_present,
             timeline = excluded.timeline",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(last_seq)
    .bind(summary.status.as_str())
    .bind(summary.experience.map(|experience| experience.as_str()))
    .bind(summary.language.as_deref())
    .bind(micros(summary.started_at))
    .bind(optional_micros(summary.ended_at))
    .bind(micros(summary.last_event_at))
    .bind(summary.event_count)
    .bind(summary.anomaly_count)
    .bind(summary.transfers.cold)
    .bind(summary.transfers.warm)
    .bind(summary.transfers.redial)
    .bind(Json(&summary.participants_present))
    .bind(Json(timeline))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn read_key(
    connection: &mut sqlx::SqliteConnection,
    key: &KeyRecord,
) -> Result<Option<Previous>, StoreError> {
    let row: Option<KeyRow> = sqlx::query_as(sql::READ_KEY)
        .bind(&key.bot_id)
        .bind(&key.key)
        .bind(micros(key.expired_before))
        .fetch_optional(connection)
        .await?;
    Ok(row
        .map(|row| row.into_previous(&key.fingerprint))
        .transpose()?)
}
