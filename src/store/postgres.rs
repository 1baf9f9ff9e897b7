//! The PostgreSQL store: the production backend.

use super::sql::{self, Bind, EventRow, KeyRow, StintRow, SummaryRow, convert};
use super::{
    Appended, Conversation, ConversationFilter, ConversationKey, ConversationSummary, KeyRecord,
    Keyed, ParticipantStint, Previous, StintKey, Store, StoreError, StoredEvent, TransferData,
    Window, changed_stints,
};
use crate::config::DatabaseSettings;
use crate::domain::{Anomaly, Event, IngestBatch, Participant, Timeline};
use anyhow::Context;
use async_trait::async_trait;
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Timelines in PostgreSQL. Concurrency is decided by the conversation row's lock, so
/// any number of replicas can share one database.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<Self> {
        // A replica that stalls inside a transaction must not keep a conversation's row
        // locked for every other replica; no transaction here idles for even a second.
        let options = PgConnectOptions::from_str(url)
            .context("invalid PostgreSQL URL")?
            .options([("idle_in_transaction_session_timeout", "5s")]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_seconds))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// Wraps an existing pool (tests use the per-test pools of `#[sqlx::test]`).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => StoreError::from(error),
            other => StoreError::Other(anyhow::Error::new(other).context("migration failed")),
        })
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        super::require_migrations(&MIGRATOR, &applied)
    }

    async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await?;
        let appended = append_in(&mut tx, batch).await;
        finish(tx, appended, |_| true).await
    }

    async fn append_keyed(
        &self,
        batch: &IngestBatch,
        key: &KeyRecord,
    ) -> Result<Keyed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let keyed = append_keyed_in(&mut tx, batch, key).await;
        finish(tx, keyed, |keyed| matches!(keyed, Keyed::Stored(_))).await
    }

    async fn previous_use(&self, key: &KeyRecord) -> Result<Option<Previous>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        read_key(&mut connection, key).await
    }

    async fn purge_keys(&self, expired_before: OffsetDateTime) -> Result<u64, StoreError> {
        let purged = sqlx::query(sql::PURGE_KEYS)
            .bind(expired_before)
            .execute(&self.pool)
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
        .fetch_optional(&self.pool)
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
    ) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        let rows: Vec<EventRow<OffsetDateTime>> = sqlx::query_as(
            "SELECT seq, received_at, name, transfer_type, transition, participant, anomalies,
                    payload::text AS payload
             FROM events
             WHERE bot_id = $1 AND conversation_id = $2 AND seq > $3
             ORDER BY seq LIMIT $4",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.exists(bot_id, conversation_id).await? {
            return Ok(None);
        }
        convert(rows, EventRow::into_event).map(Some)
    }

    async fn conversations(
        &self,
        bot_id: &str,
        filter: &ConversationFilter,
        after: Option<&ConversationKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let sql = sql::list_conversations_pg(bot_id, filter, after, limit, now);
        let rows: Vec<SummaryRow<OffsetDateTime>> = fetch_sql(&self.pool, sql).await?;
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
        let rows: Vec<StintRow<OffsetDateTime>> = fetch_sql(&self.pool, sql).await?;
        convert(rows, StintRow::into_stint)
    }

    async fn transfer_data(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<TransferData>, StoreError> {
        let row: Option<(i64, OffsetDateTime, Option<Json<Participant>>, String)> = sqlx::query_as(
            "SELECT seq, received_at, participant, transfer_data::text
                 FROM events
                 WHERE bot_id = $1 AND conversation_id = $2 AND transfer_data IS NOT NULL
                 ORDER BY seq DESC LIMIT 1",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((seq, received_at, participant, data)) = row else {
            return Ok(None);
        };
        Ok(Some(TransferData {
            seq,
            received_at,
            participant: participant.map(|Json(participant)| participant),
            data: RawValue::from_string(data).context("stored transferData is not JSON")?,
        }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

impl PgStore {
    async fn exists(&self, bot_id: &str, conversation_id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE bot_id = $1 AND conversation_id = $2)",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Runs a shared list query with PostgreSQL's time representation.
async fn fetch_sql<R>(pool: &PgPool, sql: sql::Sql) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let mut query = sqlx::query_as::<_, R>(AssertSqlSafe(sql.text));
    for bind in sql.binds {
        query = match bind {
            Bind::Text(text) => query.bind(text),
            Bind::Int(number) => query.bind(number),
            Bind::Time(at) => query.bind(at),
        };
    }
    query.fetch_all(pool).await
}

/// Commits when `keep` says the result is worth it, else rolls back at once: a dropped
/// transaction would hold its locks until its connection is next used.
async fn finish<T>(
    tx: Transaction<'_, Postgres>,
    result: Result<T, StoreError>,
    keep: impl Fn(&T) -> bool,
) -> Result<T, StoreError> {
    match result {
        Ok(value) if keep(&value) => {
            tx.commit().await?;
            Ok(value)
        }
        other => {
            if let Err(error) = tx.rollback().await {
                tracing::warn!(error = %error, "rollback failed; the connection is discarded");
            }
            other
        }
    }
}

async fn append_keyed_in(
    tx: &mut Transaction<'_, Postgres>,
    batch: &IngestBatch,
    key: &KeyRecord,
) -> Result<Keyed, StoreError> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(sql::key_lock_id(key))
        .fetch_one(&mut **tx)
        .await?;
    if !locked {
        return Ok(Keyed::InFlight);
    }
    if let Some(previous) = read_key(tx, key).await? {
        return Ok(Keyed::Used(previous));
    }
    let appended = append_in(tx, batch).await?;
    sqlx::query(sql::SAVE_KEY)
        .bind(&key.bot_id)
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(key.now)
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
    tx: &mut Transaction<'_, Postgres>,
    batch: &IngestBatch,
) -> Result<Appended, StoreError> {
    let bot_id = batch.bot_id.as_str();
    let conversation_id = batch.conversation_id.as_str();
    let count = batch.events.len() as i64;

    // Creates or locks the conversation row and reserves `count` seqs in one statement;
    // the clock is read after the lock is held, so `receivedAt` follows `seq`.
    let (last_seq, stored, received_at): (i64, Option<Json<Timeline>>, OffsetDateTime) =
        sqlx::query_as(
            "INSERT INTO conversations AS c
                 (bot_id, conversation_id, last_seq, status, started_at, last_event_at)
             VALUES ($1, $2, $3, 'idle', now(), now())
             ON CONFLICT (bot_id, conversation_id)
                 DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
             RETURNING c.last_seq, c.timeline, clock_timestamp()",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(count)
        .fetch_one(&mut **tx)
        .await?;
    let first_seq = last_seq - count + 1;

    let before = stored.map(|Json(timeline)| timeline).unwrap_or_default();
    let mut timeline = before.clone();
    let anomalies: Vec<_> = batch
        .events
        .iter()
        .map(|event| timeline.apply(received_at, event))
        .collect();

    insert_events(tx, batch, first_seq, received_at, &anomalies).await?;
    update_conversation(tx, bot_id, conversation_id, &timeline).await?;
    upsert_stints(tx, bot_id, conversation_id, &before, &timeline).await?;

    Ok(Appended {
        first_seq,
        last_seq,
        status: timeline.status,
        anomalies: anomalies.concat(),
    })
}

async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    batch: &IngestBatch,
    first_seq: i64,
    received_at: OffsetDateTime,
    anomalies: &[Vec<Anomaly>],
) -> Result<(), StoreError> {
    let events = &batch.events;
    let seqs: Vec<i64> = (first_seq..).take(events.len()).collect();
    let names: Vec<&str> = events.iter().map(|event| event.name().as_str()).collect();
    let transfer_types: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.transfer_type().map(|kind| kind.as_str()))
        .collect();
    let transitions: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.transition().map(|transition| transition.as_str()))
        .collect();
    let identities: Vec<Option<&str>> = events
        .iter()
        .map(|event| {
            event
                .participant()
                .map(|participant| participant.identity.as_str())
        })
        .collect();
    let participants: Vec<Option<String>> = events.iter().map(participant_json).collect();
    let anomalies: Vec<String> = anomalies
        .iter()
        .map(|codes| serde_json::to_string(codes).unwrap_or_else(|_| "[]".to_owned()))
        .collect();
    let transfer_data: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.transfer_data.as_ref().map(|data| data.get()))
        .collect();
    let payloads: Vec<&str> = events.iter().map(|event| event.payload.get()).collect();

    sqlx::query(
        "INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
             transition, participant_identity, participant, anomalies, transfer_data, payload)
         SELECT $1, $2, seq, $3, name, transfer_type, transition, identity,
                participant::jsonb, anomalies::jsonb, transfer_data::json, payload::json
         FROM UNNEST($4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                     $10::text[], $11::text[], $12::text[])
              AS e(seq, name, transfer_type, transition, identity, participant, anomalies,
                   transfer_data, payload)",
    )
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .bind(received_at)
    .bind(seqs)
    .bind(names)
    .bind(transfer_types)
    .bind(transitions)
    .bind(identities)
    .bind(participants)
    .bind(anomalies)
    .bind(transfer_data)
    .bind(payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn participant_json(event: &Event) -> Option<String> {
    event
        .participant()
        .and_then(|participant| serde_json::to_string(participant).ok())
}

async fn update_conversation(
    tx: &mut Transaction<'_, Postgres>,
    bot_id: &str,
    conversation_id: &str,
    timeline: &Timeline,
) -> Result<(), StoreError> {
    let present: Vec<&str> = timeline.present().collect();
    sqlx::query(
        "UPDATE conversations SET
             status = $3, experience = $4, language = $5, started_at = $6, ended_at = $7,
             last_event_at = $8, event_count = $9, anomaly_count = $10, cold_transfers = $11,
             warm_transfers = $12, redial_transfers = $13, participants_present = $14,
             timeline = $15
         WHERE bot_id = $1 AND conversation_id = $2",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(timeline.status.as_str())
    .bind(timeline.experience.map(|experience| experience.as_str()))
    .bind(timeline.language.as_deref())
    .bind(timeline.started_at)
    .bind(timeline.ended_at)
    .bind(timeline.last_event_at)
    .bind(timeline.event_count)
    .bind(timeline.anomaly_count)
    .bind(timeline.transfers.cold)
    .bind(timeline.transfers.warm)
    .bind(timeline.transfers.redial)
    .bind(Json(present))
    .bind(Json(timeline))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_stints(
    tx: &mut Transaction<'_, Postgres>,
    bot_id: &str,
    conversation_id: &str,
    before: &Timeline,
    after: &Timeline,
) -> Result<(), StoreError> {
    let rows = changed_stints(before, after);
    if rows.is_empty() {
        return Ok(());
    }
    let identities: Vec<&str> = rows.iter().map(|row| row.identity.as_str()).collect();
    let ordinals: Vec<i32> = rows.iter().map(|row| row.ordinal).collect();
    let joined: Vec<OffsetDateTime> = rows.iter().map(|row| row.stint.joined_at).collect();
    let left: Vec<Option<OffsetDateTime>> = rows.iter().map(|row| row.stint.left_at).collect();
    let entry_types: Vec<&str> = rows
        .iter()
        .map(|row| row.stint.entry_type.as_str())
        .collect();
    let exit_types: Vec<Option<&str>> = rows
        .iter()
        .map(|row| row.stint.exit_type.map(|exit| exit.as_str()))
        .collect();
    sqlx::query(
        "INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
             entry_type, exit_type)
         SELECT $1, $2, * FROM UNNEST($3::text[], $4::integer[], $5::timestamptz[],
                                      $6::timestamptz[], $7::text[], $8::text[])
         ON CONFLICT (bot_id, conversation_id, identity, ordinal)
             DO UPDATE SET left_at = EXCLUDED.left_at, exit_type = EXCLUDED.exit_type",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(identities)
    .bind(ordinals)
    .bind(joined)
    .bind(left)
    .bind(entry_types)
    .bind(exit_types)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn read_key(
    connection: &mut sqlx::PgConnection,
    key: &KeyRecord,
) -> Result<Option<Previous>, StoreError> {
    let row: Option<KeyRow> = sqlx::query_as(sql::READ_KEY)
        .bind(&key.bot_id)
        .bind(&key.key)
        .bind(key.expired_before)
        .fetch_optional(connection)
        .await?;
    Ok(row
        .map(|row| row.into_previous(&key.fingerprint))
        .transpose()?)
}
