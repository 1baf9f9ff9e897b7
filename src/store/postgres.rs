//! The PostgreSQL store: the production backend.

use super::{
    Appended, Conversation, ConversationFilter, ConversationKey, ConversationSummary,
    ParticipantStint, StintKey, Store, StoreError, StoredEvent, TransferData, Window,
    changed_stints,
};
use crate::config::DatabaseSettings;
use crate::domain::{
    Anomaly, Event, EventName, ExitType, Experience, IngestBatch, Participant, Status, Stint,
    Timeline, TransferType, Transfers, Transition,
};
use anyhow::Context;
use async_trait::async_trait;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Transaction};
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
        let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
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
        let applied: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM _sqlx_migrations WHERE success AND version = ANY($1)",
        )
        .bind(
            MIGRATOR
                .iter()
                .map(|migration| migration.version)
                .collect::<Vec<_>>(),
        )
        .fetch_one(&self.pool)
        .await?;
        if applied as usize == MIGRATOR.iter().count() {
            Ok(())
        } else {
            Err(anyhow::anyhow!("migrations are not applied").into())
        }
    }

    async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await?;
        let appended = append_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(appended)
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
        let rows: Vec<EventRow> = sqlx::query_as(
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
        rows.into_iter()
            .map(EventRow::into_event)
            .collect::<anyhow::Result<_>>()
            .map(Some)
            .map_err(StoreError::Other)
    }

    async fn conversations(
        &self,
        bot_id: &str,
        filter: &ConversationFilter,
        after: Option<&ConversationKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT bot_id, conversation_id, status, experience, language, started_at,
                    ended_at, last_event_at, event_count, anomaly_count, cold_transfers,
                    warm_transfers, redial_transfers, participants_present
             FROM conversations c WHERE c.bot_id = ",
        );
        query.push_bind(bot_id);
        if let Some(status) = filter.status {
            query.push(" AND c.status = ").push_bind(status.as_str());
        }
        if let Some(identity) = &filter.participant {
            query
                .push(
                    " AND EXISTS (SELECT 1 FROM stints s WHERE s.bot_id = c.bot_id
                       AND s.identity = ",
                )
                .push_bind(identity)
                .push(" AND s.conversation_id = c.conversation_id)");
        }
        if let Some(from) = filter.from {
            query
                .push(" AND COALESCE(c.ended_at, ")
                .push_bind(now)
                .push(") >= ")
                .push_bind(from);
        }
        if let Some(to) = filter.to {
            query.push(" AND c.started_at < ").push_bind(to);
        }
        if let Some(after) = after {
            query
                .push(" AND (c.last_event_at, c.conversation_id) < (")
                .push_bind(after.last_event_at)
                .push(", ")
                .push_bind(&after.conversation_id)
                .push(")");
        }
        query
            .push(" ORDER BY c.last_event_at DESC, c.conversation_id DESC LIMIT ")
            .push_bind(limit);
        let rows: Vec<SummaryRow> = query.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(SummaryRow::into_summary)
            .collect::<anyhow::Result<_>>()
            .map_err(StoreError::Other)
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
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT conversation_id, ordinal, joined_at, left_at, entry_type, exit_type
             FROM stints WHERE bot_id = ",
        );
        query
            .push_bind(bot_id)
            .push(" AND identity = ")
            .push_bind(identity);
        if let Some(to) = window.to {
            query.push(" AND joined_at < ").push_bind(to);
        }
        if let Some(from) = window.from {
            query
                .push(" AND COALESCE(left_at, ")
                .push_bind(now)
                .push(") >= ")
                .push_bind(from);
        }
        if let Some(after) = after {
            query
                .push(" AND (joined_at, conversation_id, ordinal) < (")
                .push_bind(after.joined_at)
                .push(", ")
                .push_bind(&after.conversation_id)
                .push(", ")
                .push_bind(after.ordinal)
                .push(")");
        }
        query
            .push(" ORDER BY joined_at DESC, conversation_id DESC, ordinal DESC LIMIT ")
            .push_bind(limit);
        let rows: Vec<StintRecord> = query.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(StintRecord::into_stint)
            .collect::<anyhow::Result<_>>()
            .map_err(StoreError::Other)
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

#[derive(FromRow)]
struct EventRow {
    seq: i64,
    received_at: OffsetDateTime,
    name: String,
    transfer_type: Option<String>,
    transition: Option<String>,
    participant: Option<Json<Participant>>,
    anomalies: Json<Vec<Anomaly>>,
    payload: String,
}

impl EventRow {
    fn into_event(self) -> anyhow::Result<StoredEvent> {
        Ok(StoredEvent {
            seq: self.seq,
            received_at: self.received_at,
            name: EventName::parse(&self.name).context("unknown stored event name")?,
            transfer_type: self.transfer_type.as_deref().and_then(TransferType::parse),
            transition: self.transition.as_deref().and_then(Transition::parse),
            participant: self.participant.map(|Json(participant)| participant),
            anomalies: self.anomalies.0,
            payload: RawValue::from_string(self.payload).context("stored payload is not JSON")?,
        })
    }
}

#[derive(FromRow)]
struct SummaryRow {
    bot_id: String,
    conversation_id: String,
    status: String,
    experience: Option<String>,
    language: Option<String>,
    started_at: OffsetDateTime,
    ended_at: Option<OffsetDateTime>,
    last_event_at: OffsetDateTime,
    event_count: i64,
    anomaly_count: i64,
    cold_transfers: i64,
    warm_transfers: i64,
    redial_transfers: i64,
    participants_present: Vec<String>,
}

impl SummaryRow {
    fn into_summary(self) -> anyhow::Result<ConversationSummary> {
        Ok(ConversationSummary {
            bot_id: self.bot_id,
            conversation_id: self.conversation_id,
            status: Status::parse(&self.status).context("unknown stored status")?,
            experience: self.experience.as_deref().and_then(Experience::parse),
            language: self.language,
            started_at: self.started_at,
            ended_at: self.ended_at,
            last_event_at: self.last_event_at,
            event_count: self.event_count,
            anomaly_count: self.anomaly_count,
            transfers: Transfers {
                cold: self.cold_transfers,
                warm: self.warm_transfers,
                redial: self.redial_transfers,
            },
            participants_present: self.participants_present,
        })
    }
}

#[derive(FromRow)]
struct StintRecord {
    conversation_id: String,
    ordinal: i32,
    joined_at: OffsetDateTime,
    left_at: Option<OffsetDateTime>,
    entry_type: String,
    exit_type: Option<String>,
}

impl StintRecord {
    fn into_stint(self) -> anyhow::Result<ParticipantStint> {
        Ok(ParticipantStint {
            conversation_id: self.conversation_id,
            ordinal: self.ordinal,
            stint: Stint {
                joined_at: self.joined_at,
                left_at: self.left_at,
                entry_type: TransferType::parse(&self.entry_type)
                    .context("unknown stored entry type")?,
                exit_type: self.exit_type.as_deref().and_then(ExitType::parse),
            },
        })
    }
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
    })
}

async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    batch: &IngestBatch,
    first_seq: i64,
    received_at: OffsetDateTime,
    anomalies: &[Vec<crate::domain::Anomaly>],
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
    let transfer_data: Vec<Option<String>> = events
        .iter()
        .map(|event| event.transfer_data.as_ref().map(|data| data.to_string()))
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
    .bind(present)
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
