//! The embedded SQLite store: the zero-install default, with the same behaviour as
//! PostgreSQL. Writes go through a one-connection pool and `BEGIN IMMEDIATE`, so there is
//! one writer at a time even across processes sharing the file.

use super::codec::DbTime;
use super::keys;
use super::retention::{self, Candidate};
use super::rows::{self, PresentStintRow, StateParticipant, SummaryRow};
use super::{
    Appended, Checkout, KeyRecord, Keyed, StoreError, finish, is_disk_failure, named_identities,
    plan,
};
use crate::config::DatabaseSettings;
use crate::domain::{AppendPlan, IngestBatch, needs_interaction, present_needed};
use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// Writes a conversation's summary row after an append, if its `last_seq` is still `$3`
/// (the plan's expected seq): `$1` bot, `$2` conversation, `$4` the new `last_seq`, then
/// the summary columns in table order. Bound by [`bind_conversation`].
macro_rules! upsert_conversation {
    () => {
        "INSERT INTO conversations AS c
             (bot_id, conversation_id, last_seq, status, experience, language, started_at,
              ended_at, last_event_at, event_count, anomaly_count, cold_transfers,
              warm_transfers, redial_transfers, present_count, participant_count,
              experience_from_events, escalated_transfers, failed_transfers, hop_count,
              last_emptied_by, pending_escalations, awaiting_agent, service, interaction)
         VALUES ($1, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20, $21, $22, $23, $24, $25, $26)
         ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
             last_seq = excluded.last_seq, status = excluded.status,
             experience = excluded.experience, language = excluded.language,
             started_at = excluded.started_at, ended_at = excluded.ended_at,
             last_event_at = excluded.last_event_at, event_count = excluded.event_count,
             anomaly_count = excluded.anomaly_count, cold_transfers = excluded.cold_transfers,
             warm_transfers = excluded.warm_transfers,
             redial_transfers = excluded.redial_transfers,
             present_count = excluded.present_count,
             participant_count = excluded.participant_count,
             experience_from_events = excluded.experience_from_events,
             escalated_transfers = excluded.escalated_transfers,
             failed_transfers = excluded.failed_transfers, hop_count = excluded.hop_count,
             last_emptied_by = excluded.last_emptied_by,
             pending_escalations = excluded.pending_escalations,
             awaiting_agent = excluded.awaiting_agent, service = excluded.service,
             interaction = COALESCE(excluded.interaction, c.interaction)
         WHERE c.last_seq = $3"
    };
}

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

    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub(super) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = Checkout::acquire(&self.writer).await?;
        let migrated = super::migrate::<sqlx::Sqlite>(&MIGRATOR, &mut connection).await;
        connection.reuse_if_ok(&migrated);
        migrated
    }

    pub(super) async fn ready(&self) -> Result<(), StoreError> {
        super::require_migrations(&MIGRATOR, &self.reader).await?;
        if self.disk_failing.load(Ordering::Relaxed) {
            self.write(async |tx| probe_write(tx).await, |_| true)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError> {
        self.write(async |tx| append_in(tx, batch).await, |_| true)
            .await
    }

    pub(super) async fn append_keyed(
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

    /// Deletes the conversation with everything it holds and leaves its tombstone in the
    /// feed, in one transaction; whether it existed.
    pub(super) async fn erase(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<bool, StoreError> {
        self.write(
            async |tx| erase_in(tx, bot_id, conversation_id).await,
            |erased| *erased,
        )
        .await
    }

    /// Deletes those of `candidates` still past the limit, in one short write transaction
    /// (the only writer: ingest waits for it, so a batch is kept to a few thousand rows);
    /// those it deleted. One that took an event meanwhile is kept.
    pub(super) async fn purge(
        &self,
        candidates: Vec<Candidate>,
        ended_before: OffsetDateTime,
    ) -> Result<Vec<Candidate>, StoreError> {
        let still_expired = retention::still_expired!();
        self.write(
            async |tx| retention::purge_in(tx, candidates, ended_before, still_expired).await,
            |_| true,
        )
        .await
    }

    /// Runs `work` in a write transaction, committed if `keep` says its result is worth it.
    pub(super) async fn write<T>(
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

async fn erase_in(
    tx: &mut Transaction<'_, Sqlite>,
    bot_id: &str,
    conversation_id: &str,
) -> Result<bool, StoreError> {
    let last_seq: Option<i64> = sqlx::query_scalar(
        "SELECT last_seq FROM conversations WHERE bot_id = $1 AND conversation_id = $2",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(last_seq) = last_seq else {
        return Ok(false);
    };
    retention::delete_conversation(tx, bot_id, conversation_id).await?;
    // Like an append, a place of its own in the feed, after everything committed before.
    let feed_txn: i64 =
        sqlx::query_scalar("UPDATE feed_counter SET last = last + 1 WHERE id = 1 RETURNING last")
            .fetch_one(&mut **tx)
            .await?;
    sqlx::query(
        "INSERT INTO erasures (bot_id, conversation_id, feed_txn, seq, erased_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(feed_txn)
    .bind(last_seq + 1)
    .bind(retention::now())
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// A write that needs the disk to take a page, for readiness after a disk failure.
async fn probe_write(tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO write_probe (id, probed_at) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
    )
    .bind(DbTime(OffsetDateTime::now_utc()))
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
    keys::append_once(tx, batch, key, async |tx| append_in(tx, batch).await).await
}

async fn append_in(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &IngestBatch,
) -> Result<Appended, StoreError> {
    let (stored, last_event_at) = load(tx, batch).await?;
    // Never before the previous event, so that `receivedAt` follows `seq` even if the
    // wall clock steps back.
    let received_at = last_event_at.map_or(OffsetDateTime::now_utc(), |last| {
        OffsetDateTime::now_utc().max(last)
    });
    let plan = plan(batch, stored, received_at);
    write(tx, batch, &plan).await?;
    Ok(Appended::of(&plan))
}

/// What an append of `batch` needs, and the conversation's last event time.
async fn load(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &IngestBatch,
) -> Result<(crate::domain::Stored, Option<OffsetDateTime>), StoreError> {
    let row: Option<SummaryRow> = sqlx::query_as(concat!(
        "SELECT ",
        super::queries::summary_columns!(),
        ", CASE WHEN $3 THEN c.interaction END AS interaction
         FROM conversations c WHERE c.bot_id = $1 AND c.conversation_id = $2"
    ))
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .bind(needs_interaction(&batch.events))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(Default::default());
    };
    let participants: Vec<StateParticipant> = sqlx::query_as(
        "SELECT p.identity, p.name, p.kind, p.position, p.stint_count, s.joined_at,
                s.entry_type
         FROM participants p
         LEFT JOIN stints s ON s.bot_id = p.bot_id AND s.conversation_id = p.conversation_id
             AND s.identity = p.identity AND s.ordinal = p.stint_count - 1
             AND s.left_at IS NULL
         WHERE p.bot_id = $1 AND p.conversation_id = $2
             AND p.identity IN (SELECT value FROM json_each($3))",
    )
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .bind(Json(named_identities(batch)))
    .fetch_all(&mut **tx)
    .await?;
    let present: Vec<PresentStintRow> = sqlx::query_as(
        "SELECT identity, position, joined_at FROM stints
         WHERE bot_id = $1 AND conversation_id = $2 AND left_at IS NULL
         ORDER BY joined_at, position LIMIT $3",
    )
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .bind(present_needed(&batch.events))
    .fetch_all(&mut **tx)
    .await?;
    let last_event_at = Some(row.last_event_at.into());
    Ok((rows::stored(&row, participants, present)?, last_event_at))
}

/// Writes `plan`, a statement a row, in the order that keeps END from closing a stint the
/// events opened after it.
async fn write(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &IngestBatch,
    plan: &AppendPlan,
) -> Result<(), StoreError> {
    let (bot_id, conversation_id) = (batch.bot_id.as_str(), batch.conversation_id.as_str());
    let query = sqlx::query_scalar(concat!(upsert_conversation!(), " RETURNING 1"));
    let written = bind_conversation(query, batch, plan)
        .fetch_optional(&mut **tx)
        .await?;
    // BEGIN IMMEDIATE made this the only writer, so the row cannot have moved on.
    if written.is_none() {
        return Err(anyhow::anyhow!("the conversation changed under the write lock").into());
    }
    // The one writer's transactions commit in the order they take the counter.
    let feed_txn: i64 =
        sqlx::query_scalar("UPDATE feed_counter SET last = last + 1 WHERE id = 1 RETURNING last")
            .fetch_one(&mut **tx)
            .await?;
    let events = (plan.first_seq..)
        .zip(&batch.events)
        .zip(plan.anomalies.iter().zip(&plan.statuses));
    for ((seq, event), (anomalies, status)) in events {
        sqlx::query(
            "INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
                 transition, participant_identity, participant, anomalies, transfer_data, payload,
                 status_after, feed_txn)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(seq)
        .bind(DbTime(plan.received_at))
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
        .bind(status.as_str())
        .bind(feed_txn)
        .execute(&mut **tx)
        .await?;
    }
    for row in &plan.participants {
        sqlx::query(
            "INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind,
                 stint_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (bot_id, conversation_id, identity) DO UPDATE SET
                 name = excluded.name, kind = excluded.kind, stint_count = excluded.stint_count",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(&row.identity)
        .bind(row.position)
        .bind(&row.name)
        .bind(&row.kind)
        .bind(row.stint_count)
        .execute(&mut **tx)
        .await?;
    }
    for row in &plan.closed {
        sqlx::query(
            "UPDATE stints SET left_at = $5, exit_type = $6
             WHERE bot_id = $1 AND conversation_id = $2 AND identity = $3 AND ordinal = $4",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(&row.identity)
        .bind(row.ordinal)
        .bind(row.stint.left_at.map(DbTime))
        .bind(row.stint.exit_type.map(|exit| exit.as_str()))
        .execute(&mut **tx)
        .await?;
    }
    if let Some(at) = plan.end_open_stints_at {
        sqlx::query(
            "UPDATE stints SET left_at = $3, exit_type = 'END'
             WHERE bot_id = $1 AND conversation_id = $2 AND left_at IS NULL",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(DbTime(at))
        .execute(&mut **tx)
        .await?;
    }
    for row in &plan.opened {
        sqlx::query(AssertSqlSafe(
            "INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
                 entry_type, exit_type, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ))
        .bind(bot_id)
        .bind(conversation_id)
        .bind(&row.identity)
        .bind(row.ordinal)
        .bind(DbTime(row.stint.joined_at))
        .bind(row.stint.left_at.map(DbTime))
        .bind(row.stint.entry_type.as_str())
        .bind(row.stint.exit_type.map(|exit| exit.as_str()))
        .bind(row.position)
        .execute(&mut **tx)
        .await?;
    }
    for hop in &plan.hops {
        sqlx::query(
            "INSERT INTO hops (bot_id, conversation_id, ordinal, seq, at, kind, from_identity,
                 to_identity, outcome, reason, targets)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(hop.ordinal)
        .bind(hop.seq)
        .bind(DbTime(hop.at))
        .bind(hop.kind.as_str())
        .bind(hop.from.as_deref())
        .bind(hop.to.as_deref())
        .bind(hop.outcome.as_str())
        .bind(hop.reason.as_deref())
        .bind(hop.targets.as_ref().map(Json))
        .execute(&mut **tx)
        .await?;
    }
    for change in &plan.hop_changes {
        sqlx::query(
            "UPDATE hops SET outcome = COALESCE($4, outcome),
                 to_identity = COALESCE($5, to_identity), reason = COALESCE($6, reason)
             WHERE bot_id = $1 AND conversation_id = $2 AND ordinal = $3",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(change.ordinal)
        .bind(change.outcome.map(|outcome| outcome.as_str()))
        .bind(change.to.as_deref())
        .bind(change.reason.as_deref())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

type SqliteScalar<'q> =
    sqlx::query::QueryScalar<'q, Sqlite, i64, <Sqlite as sqlx::Database>::Arguments>;

/// Binds `$1`–`$26` of [`upsert_conversation!`] for the append of `batch` by `plan`; the
/// interaction only when the plan changed it (the row keeps its own otherwise).
fn bind_conversation<'q>(
    query: SqliteScalar<'q>,
    batch: &'q IngestBatch,
    plan: &'q AppendPlan,
) -> SqliteScalar<'q> {
    let summary = &plan.summary;
    query
        .bind(batch.bot_id.as_str())
        .bind(batch.conversation_id.as_str())
        .bind(plan.expected_seq)
        .bind(plan.last_seq())
        .bind(summary.status.as_str())
        .bind(summary.experience.map(|experience| experience.as_str()))
        .bind(summary.language.as_deref())
        .bind(DbTime(summary.started_at.unwrap_or(plan.received_at)))
        .bind(summary.ended_at.map(DbTime))
        .bind(DbTime(summary.last_event_at.unwrap_or(plan.received_at)))
        .bind(summary.event_count)
        .bind(summary.anomaly_count)
        .bind(summary.transfers.cold)
        .bind(summary.transfers.warm)
        .bind(summary.transfers.redial)
        .bind(summary.present_count)
        .bind(summary.participant_count)
        .bind(summary.experience_from_events)
        .bind(summary.transfers.escalated)
        .bind(summary.transfers.failed)
        .bind(summary.hop_count)
        .bind(summary.last_emptied_by.as_deref())
        .bind(Json(&summary.pending_escalations))
        .bind(summary.awaiting_agent)
        .bind(summary.service.as_deref())
        .bind(plan.interaction.as_ref().map(Json))
}
