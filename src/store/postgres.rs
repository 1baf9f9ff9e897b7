//! The PostgreSQL store: the production backend.

use super::sql::{self, Bind, KeyRow, PagedEventRow, StintRow, SummaryRow, convert};
use super::{
    Appended, Checkout, Conversation, ConversationFilter, ConversationKey, ConversationSummary,
    EventsPage, KeyRecord, Keyed, ParticipantStint, Previous, StintKey, StintMarks, Store,
    StoreError, TransferData, Window, finish,
};
use crate::config::DatabaseSettings;
use crate::domain::{Anomaly, IngestBatch, Participant, Timeline};
use anyhow::Context;
use async_trait::async_trait;
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Connection, FromRow, PgConnection, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// An older binary keeps serving a database that a newer release migrated further.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

/// A pooled connection idle for longer is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Timelines in PostgreSQL. Concurrency is decided by the conversation row (a
/// compare-and-set on its `last_seq`, else its lock), so any number of replicas can share
/// one database.
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
            // sqlx pings a connection on every checkout by default: a round trip per
            // request. A connection used moments ago is alive; only test idle ones.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
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
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(super::migration_failed)?;
        let applied: Vec<i64> = sqlx::query_scalar(super::APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await?;
        super::report_unknown_migrations(&MIGRATOR, &applied);
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> = sqlx::query_scalar(super::APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await?;
        super::require_migrations(&MIGRATOR, &applied)
    }

    async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError> {
        let mut connection = Checkout::acquire(&self.pool).await?;
        let appended = append_on(&mut connection, batch).await;
        connection.reuse_if_ok(&appended);
        appended
    }

    async fn append_keyed(
        &self,
        batch: &IngestBatch,
        key: &KeyRecord,
    ) -> Result<Keyed, StoreError> {
        let mut connection = Checkout::acquire(&self.pool).await?;
        let keyed = async {
            let mut tx = connection.begin().await?;
            let keyed = append_keyed_in(&mut tx, batch, key).await;
            finish(tx, keyed, |keyed| matches!(keyed, Keyed::Stored(_))).await
        }
        .await;
        connection.reuse_if_ok(&keyed);
        keyed
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
        max_bytes: i64,
    ) -> Result<Option<EventsPage>, StoreError> {
        let rows: Vec<PagedEventRow<OffsetDateTime>> = sqlx::query_as(sql::EVENTS_PAGE)
            .bind(bot_id)
            .bind(conversation_id)
            .bind(after_seq)
            .bind(limit + 1)
            .bind(max_bytes)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() && !self.exists(bot_id, conversation_id).await? {
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

/// Appends optimistically first: appends to one conversation rarely race, so read, fold,
/// and write only if nobody appended meanwhile — two round trips, no transaction. The
/// loser of a race takes the row lock instead.
async fn append_on(
    connection: &mut PgConnection,
    batch: &IngestBatch,
) -> Result<Appended, StoreError> {
    let found = read_conversation(connection, batch).await?;
    let expected = found.last_seq;
    if let Some(appended) = write_appended(&mut *connection, batch, found, expected).await? {
        return Ok(appended);
    }
    let mut tx = connection.begin().await?;
    let appended = append_in(&mut tx, batch).await;
    finish(tx, appended, |_| true).await
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

/// A conversation as an append finds it.
struct Found {
    /// The seq of its last event; 0 for a new conversation.
    last_seq: i64,
    timeline: Timeline,
    /// When the new events are received: the database's clock, never before the last event.
    received_at: OffsetDateTime,
}

/// Reads the conversation without locking it (it may not exist yet).
async fn read_conversation(
    connection: &mut PgConnection,
    batch: &IngestBatch,
) -> Result<Found, StoreError> {
    let (last_seq, timeline, received_at): (Option<i64>, Option<Json<Timeline>>, OffsetDateTime) =
        sqlx::query_as(
            "SELECT c.last_seq, c.timeline, GREATEST(clock_timestamp(), c.last_event_at)
             FROM (VALUES (1)) AS one
             LEFT JOIN conversations c ON c.bot_id = $1 AND c.conversation_id = $2",
        )
        .bind(batch.bot_id.as_str())
        .bind(batch.conversation_id.as_str())
        .fetch_one(connection)
        .await?;
    Ok(Found {
        last_seq: last_seq.unwrap_or(0),
        timeline: timeline.map(|Json(timeline)| timeline).unwrap_or_default(),
        received_at,
    })
}

/// Appends under the conversation's row lock, inside `tx`.
async fn append_in(
    tx: &mut Transaction<'_, Postgres>,
    batch: &IngestBatch,
) -> Result<Appended, StoreError> {
    let count = batch.events.len() as i64;
    // Creates or locks the conversation row and reserves `count` seqs in one statement;
    // the clock is read after the lock is held, so `receivedAt` follows `seq`.
    let (reserved, timeline, received_at): (i64, Option<Json<Timeline>>, OffsetDateTime) =
        sqlx::query_as(
            "INSERT INTO conversations AS c
                 (bot_id, conversation_id, last_seq, status, started_at, last_event_at)
             VALUES ($1, $2, $3, 'idle', now(), now())
             ON CONFLICT (bot_id, conversation_id)
                 DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
             RETURNING c.last_seq, c.timeline, GREATEST(clock_timestamp(), c.last_event_at)",
        )
        .bind(batch.bot_id.as_str())
        .bind(batch.conversation_id.as_str())
        .bind(count)
        .fetch_one(&mut **tx)
        .await?;
    let found = Found {
        last_seq: reserved - count,
        timeline: timeline.map(|Json(timeline)| timeline).unwrap_or_default(),
        received_at,
    };
    write_appended(&mut **tx, batch, found, reserved)
        .await?
        .context("the locked conversation row changed")
        .map_err(StoreError::from)
}

/// Folds `batch` into the conversation as `found` and writes the result in one statement:
/// the conversation row, if its `last_seq` is still `expected`; then, only if it was
/// written, the event rows and the stints that opened or closed. `None` when the row had
/// moved on and nothing was written.
async fn write_appended<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    batch: &IngestBatch,
    found: Found,
    expected: i64,
) -> Result<Option<Appended>, StoreError> {
    let Found {
        last_seq: previous_seq,
        mut timeline,
        received_at,
    } = found;
    let first_seq = previous_seq + 1;
    let last_seq = previous_seq + batch.events.len() as i64;
    let marks = StintMarks::of(&timeline);
    let anomalies: Vec<Vec<Anomaly>> = batch
        .events
        .iter()
        .map(|event| timeline.apply(received_at, event))
        .collect();
    let stints = marks.changed(&timeline);

    let events = &batch.events;
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
    let participants: Vec<Option<Json<&Participant>>> = events
        .iter()
        .map(|event| event.participant().map(Json))
        .collect();
    let anomaly_codes: Vec<Json<&[Anomaly]>> =
        anomalies.iter().map(|codes| Json(&codes[..])).collect();
    let transfer_data: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.transfer_data.as_ref().map(|data| data.get()))
        .collect();
    let payloads: Vec<&str> = events.iter().map(|event| event.payload.get()).collect();

    let stint_identities: Vec<&str> = stints.iter().map(|row| row.identity).collect();
    let ordinals: Vec<i32> = stints.iter().map(|row| row.ordinal).collect();
    let joined: Vec<OffsetDateTime> = stints.iter().map(|row| row.stint.joined_at).collect();
    let left: Vec<Option<OffsetDateTime>> = stints.iter().map(|row| row.stint.left_at).collect();
    let entry_types: Vec<&str> = stints
        .iter()
        .map(|row| row.stint.entry_type.as_str())
        .collect();
    let exit_types: Vec<Option<&str>> = stints
        .iter()
        .map(|row| row.stint.exit_type.map(|exit| exit.as_str()))
        .collect();
    let present: Vec<&str> = timeline.present().collect();

    let written: i64 = sqlx::query_scalar(
        "WITH conversation AS (
             INSERT INTO conversations AS c
                 (bot_id, conversation_id, last_seq, status, experience, language, started_at,
                  ended_at, last_event_at, event_count, anomaly_count, cold_transfers,
                  warm_transfers, redial_transfers, participants_present, timeline)
             VALUES ($1, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
                 last_seq = EXCLUDED.last_seq, status = EXCLUDED.status,
                 experience = EXCLUDED.experience, language = EXCLUDED.language,
                 started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
                 last_event_at = EXCLUDED.last_event_at, event_count = EXCLUDED.event_count,
                 anomaly_count = EXCLUDED.anomaly_count,
                 cold_transfers = EXCLUDED.cold_transfers,
                 warm_transfers = EXCLUDED.warm_transfers,
                 redial_transfers = EXCLUDED.redial_transfers,
                 participants_present = EXCLUDED.participants_present,
                 timeline = EXCLUDED.timeline
             WHERE c.last_seq = $3
             RETURNING 1
         ), new_events AS (
             INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
                 transition, participant_identity, participant, anomalies, transfer_data,
                 payload)
             SELECT $1, $2, $18 + e.n - 1, $10, e.name, e.transfer_type, e.transition,
                    e.identity, e.participant, e.anomalies, e.transfer_data::json,
                    e.payload::json
             FROM conversation,
                  UNNEST($19::text[], $20::text[], $21::text[], $22::text[], $23::jsonb[],
                         $24::jsonb[], $25::text[], $26::text[])
                      WITH ORDINALITY AS e(name, transfer_type, transition, identity,
                                           participant, anomalies, transfer_data, payload, n)
         ), changed_stints AS (
             INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
                 entry_type, exit_type)
             SELECT $1, $2, s.* FROM conversation,
                  UNNEST($27::text[], $28::integer[], $29::timestamptz[], $30::timestamptz[],
                         $31::text[], $32::text[])
                      AS s(identity, ordinal, joined_at, left_at, entry_type, exit_type)
             ON CONFLICT (bot_id, conversation_id, identity, ordinal)
                 DO UPDATE SET left_at = EXCLUDED.left_at, exit_type = EXCLUDED.exit_type
         )
         SELECT count(*) FROM conversation",
    )
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .bind(expected)
    .bind(last_seq)
    .bind(timeline.status.as_str())
    .bind(timeline.experience.map(|experience| experience.as_str()))
    .bind(timeline.language.as_deref())
    .bind(timeline.started_at)
    .bind(timeline.ended_at)
    .bind(received_at)
    .bind(timeline.event_count)
    .bind(timeline.anomaly_count)
    .bind(timeline.transfers.cold)
    .bind(timeline.transfers.warm)
    .bind(timeline.transfers.redial)
    .bind(Json(present))
    .bind(Json(&timeline))
    .bind(first_seq)
    .bind(names)
    .bind(transfer_types)
    .bind(transitions)
    .bind(identities)
    .bind(participants)
    .bind(anomaly_codes)
    .bind(transfer_data)
    .bind(payloads)
    .bind(stint_identities)
    .bind(ordinals)
    .bind(joined)
    .bind(left)
    .bind(entry_types)
    .bind(exit_types)
    .fetch_one(executor)
    .await?;
    Ok((written == 1).then(|| Appended {
        first_seq,
        last_seq,
        status: timeline.status,
        anomalies: anomalies.concat(),
    }))
}

async fn read_key(
    connection: &mut PgConnection,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn batch(events: Value) -> IngestBatch {
        let body = json!({ "conversationId": "c-race", "botId": "st-1", "events": events });
        IngestBatch::parse(body.to_string().as_bytes(), "st-1")
            .expect("the test body is a valid hooks request")
    }

    fn transfer(transfer_type: &str, transition: &str, agent: &str) -> Value {
        json!({
            "name": "INTERNAL_TRANSFER_EVENT", "transfertype": transfer_type,
            "transition": transition, "isExtAD": true, "experience": "chat",
            "participant": { "identity": agent, "name": agent, "type": "agent" }
        })
    }

    /// `(seq, participant identity)` of every stored event of the conversation.
    async fn stored(pool: &PgPool) -> Vec<(i64, String)> {
        sqlx::query_as(
            "SELECT seq, participant_identity FROM events
             WHERE conversation_id = 'c-race' ORDER BY seq",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    async fn open_stints(pool: &PgPool) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT identity FROM stints
             WHERE conversation_id = 'c-race' AND left_at IS NULL ORDER BY identity",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[sqlx::test(migrator = "MIGRATOR")]
    async fn an_append_that_lost_the_race_writes_nothing_and_then_appends_after_the_winner(
        pool: PgPool,
    ) {
        let store = PgStore::from_pool(pool.clone());
        store
            .append(&batch(json!([transfer("NA", "entry", "a1")])))
            .await
            .unwrap();
        let late = batch(json!([transfer("COLD", "entry", "a2")]));
        let mut connection = pool.acquire().await.unwrap();
        let found = read_conversation(&mut connection, &late).await.unwrap();
        let expected = found.last_seq;

        store
            .append(&batch(json!([transfer("WARM", "entry", "a3")])))
            .await
            .unwrap();
        let lost = write_appended(&mut *connection, &late, found, expected)
            .await
            .unwrap();

        assert_eq!(
            lost, None,
            "the conversation moved on: nothing may be written"
        );
        assert_eq!(stored(&pool).await, [(1, "a1".into()), (2, "a3".into())]);
        assert_eq!(open_stints(&pool).await, ["a1", "a3"]);

        let appended = store.append(&late).await.unwrap();
        assert_eq!((appended.first_seq, appended.last_seq), (3, 3));
        assert_eq!(
            stored(&pool).await,
            [(1, "a1".into()), (2, "a3".into()), (3, "a2".into())]
        );
        assert_eq!(open_stints(&pool).await, ["a1", "a2", "a3"]);
    }

    #[sqlx::test(migrator = "MIGRATOR")]
    async fn two_first_appends_to_a_new_conversation_cannot_both_create_it(pool: PgPool) {
        let store = PgStore::from_pool(pool.clone());
        let late = batch(json!([transfer("NA", "entry", "a2")]));
        let mut connection = pool.acquire().await.unwrap();
        let found = read_conversation(&mut connection, &late).await.unwrap();
        assert_eq!(found.last_seq, 0);

        store
            .append(&batch(json!([transfer("NA", "entry", "a1")])))
            .await
            .unwrap();
        let lost = write_appended(&mut *connection, &late, found, 0)
            .await
            .unwrap();

        assert_eq!(lost, None);
        assert_eq!(stored(&pool).await, [(1, "a1".into())]);
        let last_seq: i64 = sqlx::query_scalar(
            "SELECT last_seq FROM conversations WHERE conversation_id = 'c-race'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(last_seq, 1);
    }
}
