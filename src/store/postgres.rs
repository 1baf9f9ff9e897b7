//! The PostgreSQL store: the production backend. Concurrency is decided by the
//! conversation row (a compare-and-set on its `last_seq`, else its lock), so any number of
//! replicas can share one database.

use super::retention::{self, Candidate};
use super::sql::{self, DbTime, PresentStintRow, StateParticipant, SummaryRow};
use super::{
    Appended, Checkout, FeedPosition, KeyRecord, Keyed, StoreError, finish, named_identities, plan,
};
use crate::config::{DatabaseSettings, GroupCommitSettings};
use crate::domain::{
    Anomaly, AppendPlan, IngestBatch, Participant, Stored, needs_interaction, present_needed,
};
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Connection, FromRow, PgConnection, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

mod group;
use group::GroupCommit;

/// An older binary keeps serving a database that a newer release migrated further.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

/// A pooled connection idle for longer is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// A ping not answered within this is a dead connection.
const PING_LIMIT: Duration = Duration::from_secs(1);

/// Timelines in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Appends gathered into shared transactions, when `database.group_commit` is on.
    group: Option<Arc<GroupCommit>>,
    deadlines: Deadlines,
}

/// How long the database may take to answer, and the connections that may be dead
/// because it once did not: a failover or a lost link can leave sockets open that never
/// answer again, and none of them fails by itself.
#[derive(Clone)]
pub(super) struct Deadlines {
    write: Duration,
    read: Duration,
    /// Connections opened before this moment are closed rather than used.
    stale_before: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Deadlines {
    fn new(settings: &DatabaseSettings) -> Self {
        Self {
            write: Duration::from_millis(settings.write_timeout_ms.max(1)),
            read: Duration::from_secs(settings.read_timeout_seconds.max(1)),
            stale_before: Arc::default(),
        }
    }

    /// `write`, abandoned if the database has not answered within the write deadline.
    pub(super) async fn write<T>(
        &self,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded(self.write, write).await
    }

    /// `read`, abandoned if the database has not answered within the read deadline.
    pub(super) async fn read<T>(
        &self,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded(self.read, read).await
    }

    /// Abandoning `work` closes the connection it held (a `Checkout` dropped unfinished);
    /// the others open then are suspect too, so they go as they come back for use.
    async fn bounded<T>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.distrust_open_connections();
                Err(StoreError::Unavailable(sqlx::Error::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the database did not answer within {limit:?}"),
                    ),
                )))
            }
        }
    }

    /// Marks every connection open now as suspect: each is closed when it is next wanted.
    fn distrust_open_connections(&self) {
        *self.stale_before.lock().expect("never poisoned") = Some(std::time::Instant::now());
    }

    /// Whether a connection `age` old was opened before the database last failed to answer.
    fn is_stale(&self, age: Duration) -> bool {
        let stale_before = *self.stale_before.lock().expect("never poisoned");
        stale_before.is_some_and(|moment| {
            std::time::Instant::now()
                .checked_sub(age)
                .is_none_or(|opened| opened <= moment)
        })
    }
}

impl PgStore {
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<Self> {
        // A transaction whose client stopped talking must not keep a conversation's row
        // locked for every other replica: PostgreSQL ends it once it idles as long as a
        // write may take (the client gave up on it then); no transaction here idles for
        // even a moment otherwise. The statements are written to plan well whatever their
        // arguments (see `load`), so they are planned once per connection, not again at
        // every execution.
        let idle_limit = format!("{}ms", settings.write_timeout_ms.max(1));
        let options = PgConnectOptions::from_str(url)
            .context("invalid PostgreSQL URL")?
            .options([
                ("idle_in_transaction_session_timeout", idle_limit.as_str()),
                ("plan_cache_mode", "force_generic_plan"),
            ]);
        let deadlines = Deadlines::new(settings);
        let checked = deadlines.clone();
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_seconds))
            // sqlx pings a connection on every checkout by default: a round trip per
            // request. A connection used moments ago is alive; only test idle ones, and
            // drop those opened before the database last failed to answer.
            .test_before_acquire(false)
            .before_acquire(move |connection, meta| {
                let checked = checked.clone();
                Box::pin(async move {
                    if checked.is_stale(meta.age) {
                        return Ok(false);
                    }
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        let answered = tokio::time::timeout(PING_LIMIT, connection.ping()).await;
                        if !matches!(answered, Ok(Ok(()))) {
                            // The others idle as long likely went the same way; each would
                            // cost a ping's wait.
                            checked.distrust_open_connections();
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        let group = GroupCommit::start(&pool, &settings.group_commit, &deadlines);
        Ok(Self {
            pool,
            group,
            deadlines,
        })
    }

    /// Wraps an existing pool (tests use the per-test pools of `#[sqlx::test]`); every
    /// append in a transaction of its own.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            group: None,
            deadlines: Deadlines::new(&DatabaseSettings::default()),
        }
    }

    /// Wraps an existing pool, gathering appends as `settings` say.
    pub fn with_group_commit(pool: PgPool, settings: &GroupCommitSettings) -> Self {
        let deadlines = Deadlines::new(&DatabaseSettings::default());
        let group = GroupCommit::start(&pool, settings, &deadlines);
        Self {
            pool,
            group,
            deadlines,
        }
    }

    pub(super) fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations, one replica at a time: the whole of it, checks
    /// included, runs under an advisory lock that the others poll for rather than wait on.
    /// A session waiting on a lock holds a snapshot, and `CREATE INDEX CONCURRENTLY` (some
    /// migrations) waits for every snapshot older than itself: the migrating replica would
    /// wait for the waiting ones, which wait for it.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = Checkout::acquire(&self.pool).await?;
        let migrated = async {
            take_migration_lock(&mut connection).await?;
            super::migrate::<Postgres>(&MIGRATOR, &mut connection).await?;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *connection)
                .await?;
            Ok(())
        }
        .await;
        // On failure the connection is closed, which releases the lock.
        connection.reuse_if_ok(&migrated);
        migrated
    }

    pub(super) async fn reach(&self) -> Result<(), StoreError> {
        let options = self.pool.connect_options();
        let mut connection = PgConnection::connect_with(&options).await?;
        let answered = connection.ping().await;
        let _ = connection.close().await;
        Ok(answered?)
    }

    pub(super) async fn ready(&self) -> Result<(), StoreError> {
        super::require_migrations(&MIGRATOR, &self.pool).await
    }

    /// Whether committed events of the bot follow `after` in the feed that it does not
    /// list yet, because a transaction that could still precede them is running.
    pub(super) async fn feed_held_back(
        &self,
        bot_id: &str,
        after: Option<&FeedPosition>,
    ) -> Result<bool, StoreError> {
        let (txn, conversation_id, seq) = after.map_or((-1, "", 0), |after| {
            (after.txn, after.conversation_id.as_str(), after.seq)
        });
        Ok(sqlx::query_scalar(
            "WITH horizon AS (
                 SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT)
                     AS xmin)
             SELECT EXISTS (SELECT 1 FROM events, horizon
                            WHERE bot_id = $1
                                AND (feed_txn, conversation_id, seq) > ($2, $3, $4)
                                AND feed_txn >= horizon.xmin)
                 OR EXISTS (SELECT 1 FROM erasures, horizon
                            WHERE bot_id = $1
                                AND (feed_txn, conversation_id, seq) > ($2, $3, $4)
                                AND feed_txn >= horizon.xmin)",
        )
        .bind(bot_id)
        .bind(txn)
        .bind(conversation_id)
        .bind(seq)
        .fetch_one(&self.pool)
        .await?)
    }

    pub(super) async fn append(&self, batch: &IngestBatch) -> Result<Appended, StoreError> {
        let Some(group) = &self.group else {
            return self.deadlines.write(append_alone(&self.pool, batch)).await;
        };
        match group.submit(batch.clone(), None).await? {
            Keyed::Stored(appended) => Ok(appended),
            other => Err(anyhow::anyhow!("an append without a key was answered {other:?}").into()),
        }
    }

    pub(super) async fn append_keyed(
        &self,
        batch: &IngestBatch,
        key: &KeyRecord,
    ) -> Result<Keyed, StoreError> {
        match &self.group {
            Some(group) => group.submit(batch.clone(), Some(key.clone())).await,
            None => {
                self.deadlines
                    .write(append_keyed_alone(&self.pool, batch, key))
                    .await
            }
        }
    }
}

/// The advisory lock that serialises migrations across replicas (any number, chosen
/// once: "agentassist-hooks migrations" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x6167_656e_7461_6d69;
/// How often a replica asks for the migration lock while another holds it.
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(250);

/// Takes the session-level migration lock, asking again until the replica holding it is
/// done; between asks this session runs no statement, so it holds no snapshot.
async fn take_migration_lock(connection: &mut PgConnection) -> Result<(), StoreError> {
    let mut waiting = false;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *connection)
            .await?;
        if taken {
            return Ok(());
        }
        if !waiting {
            tracing::info!("another replica is migrating the database; waiting for it");
            waiting = true;
        }
        tokio::time::sleep(MIGRATION_LOCK_POLL).await;
    }
}

/// An append in a transaction of its own (two round trips, usually; see [`append_on`]).
async fn append_alone(pool: &PgPool, batch: &IngestBatch) -> Result<Appended, StoreError> {
    let mut connection = Checkout::acquire(pool).await?;
    let appended = append_on(&mut connection, batch).await;
    connection.reuse_if_ok(&appended);
    appended
}

/// An append with an `Idempotency-Key`, in a transaction of its own.
async fn append_keyed_alone(
    pool: &PgPool,
    batch: &IngestBatch,
    key: &KeyRecord,
) -> Result<Keyed, StoreError> {
    let mut connection = Checkout::acquire(pool).await?;
    let keyed = async {
        let mut tx = connection.begin().await?;
        let keyed = append_keyed_in(&mut tx, batch, key).await;
        finish(tx, keyed, |keyed| matches!(keyed, Keyed::Stored(_))).await
    }
    .await;
    connection.reuse_if_ok(&keyed);
    keyed
}

impl PgStore {
    /// Deletes the conversation with everything it holds and leaves its tombstone in the
    /// feed, in one transaction; whether it existed.
    pub(super) async fn erase(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<bool, StoreError> {
        let mut connection = Checkout::acquire(&self.pool).await?;
        let erased = async {
            let mut tx = connection.begin().await?;
            let erased = erase_in(&mut tx, bot_id, conversation_id).await;
            finish(tx, erased, |erased| *erased).await
        }
        .await;
        connection.reuse_if_ok(&erased);
        erased
    }

    /// Deletes the next conversations past the limit, in one short transaction; those it
    /// deleted. A conversation another replica is deleting, or that an append holds right
    /// now, is skipped; one that took an event meanwhile is kept.
    pub(super) async fn purge_batch(
        &self,
        ended_before: OffsetDateTime,
    ) -> Result<Vec<Candidate>, StoreError> {
        let candidates = retention::candidates(&self.pool, ended_before).await?;
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let mut connection = Checkout::acquire(&self.pool).await?;
        let purged = async {
            let mut tx = connection.begin().await?;
            let purged = purge_in(&mut tx, candidates, ended_before).await;
            finish(tx, purged, |_| true).await
        }
        .await;
        connection.reuse_if_ok(&purged);
        purged
    }
}

async fn erase_in(
    tx: &mut Transaction<'_, Postgres>,
    bot_id: &str,
    conversation_id: &str,
) -> Result<bool, StoreError> {
    let locked = sqlx::query(
        "SELECT 1 FROM conversations WHERE bot_id = $1 AND conversation_id = $2 FOR UPDATE",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .fetch_optional(&mut **tx)
    .await?;
    if locked.is_none() {
        return Ok(false);
    }
    // A statement of its own, after the lock: its snapshot sees an append that held the
    // lock before us and committed.
    let (last_seq, last_feed_txn): (i64, i64) = sqlx::query_as(
        "SELECT c.last_seq, COALESCE(
             (SELECT e.feed_txn FROM events e WHERE e.bot_id = c.bot_id
                  AND e.conversation_id = c.conversation_id AND e.seq = c.last_seq), 0)
         FROM conversations c WHERE c.bot_id = $1 AND c.conversation_id = $2",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .fetch_one(&mut **tx)
    .await?;
    retention::delete_conversation(tx, bot_id, conversation_id).await?;
    // After every event of the conversation in the feed: at least this transaction's id
    // (the feed's rule) and the last event's feed transaction, one past its last seq.
    sqlx::query(
        "INSERT INTO erasures (bot_id, conversation_id, feed_txn, seq, erased_at)
         VALUES ($1, $2, GREATEST((pg_current_xact_id()::text)::bigint, $3), $4, $5)",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(last_feed_txn)
    .bind(last_seq + 1)
    .bind(retention::now())
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

async fn purge_in(
    tx: &mut Transaction<'_, Postgres>,
    candidates: Vec<Candidate>,
    ended_before: OffsetDateTime,
) -> Result<Vec<Candidate>, StoreError> {
    let mut purged = Vec::new();
    for candidate in candidates {
        let still_expired = sqlx::query(concat!(
            retention::still_expired!(),
            " FOR UPDATE SKIP LOCKED"
        ))
        .bind(candidate.bot_id.as_str())
        .bind(candidate.conversation_id.as_str())
        .bind(DbTime(ended_before))
        .fetch_optional(&mut **tx)
        .await?;
        if still_expired.is_some() {
            retention::delete_conversation(tx, &candidate.bot_id, &candidate.conversation_id)
                .await?;
            purged.push(candidate);
        }
    }
    Ok(purged)
}

/// Appends optimistically first: appends to one conversation rarely race, so read, plan,
/// and write only if nobody appended meanwhile — two round trips, no transaction. The
/// loser of a race takes the row lock instead.
async fn append_on(
    connection: &mut PgConnection,
    batch: &IngestBatch,
) -> Result<Appended, StoreError> {
    let (stored, received_at) = load(&mut *connection, batch).await?;
    let plan = plan(batch, stored, received_at);
    if write(&mut *connection, batch, &plan).await? {
        return Ok(Appended::of(&plan));
    }
    let mut tx = connection.begin().await?;
    let appended = append_locked(&mut tx, batch).await;
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
    sql::append_once(tx, batch, key, async |tx| append_locked(tx, batch).await).await
}

/// Appends under the conversation's row lock, inside `tx`; creates the row (empty) first
/// if there is none, so that there is a row to lock.
async fn append_locked(
    tx: &mut Transaction<'_, Postgres>,
    batch: &IngestBatch,
) -> Result<Appended, StoreError> {
    sqlx::query(
        "INSERT INTO conversations (bot_id, conversation_id, last_seq, status, started_at,
             last_event_at)
         VALUES ($1, $2, 0, 'idle', now(), now())
         ON CONFLICT (bot_id, conversation_id) DO NOTHING",
    )
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "SELECT 1 FROM conversations WHERE bot_id = $1 AND conversation_id = $2 FOR UPDATE",
    )
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .execute(&mut **tx)
    .await?;
    let (stored, received_at) = load(tx, batch).await?;
    let plan = plan(batch, stored, received_at);
    if !write(tx, batch, &plan).await? {
        return Err(anyhow::anyhow!("the locked conversation row changed").into());
    }
    Ok(Appended::of(&plan))
}

/// What an append needs of a conversation, read in one row.
#[derive(FromRow)]
pub(super) struct StateRow {
    #[sqlx(flatten)]
    summary: SummaryRow,
    received_at: DbTime,
    participants: Option<Json<Vec<StateParticipant>>>,
    present: Option<Json<Vec<PresentStintRow>>>,
}

impl StateRow {
    /// The conversation as the plan sees it, and the time the append is received.
    pub(super) fn into_state(self) -> Result<(Stored, OffsetDateTime), StoreError> {
        let participants = self
            .participants
            .map(|Json(participants)| participants)
            .unwrap_or_default();
        let present = self
            .present
            .map(|Json(present)| present)
            .unwrap_or_default();
        let stored = sql::stored(&self.summary, participants, present)?;
        Ok((stored, self.received_at.into()))
    }
}

/// Reads, in one round trip and without locking, what an append of `batch` needs, and
/// the time it is received: the database's clock, never before the conversation's last
/// event, so that `receivedAt` follows `seq`. The participants are looked up from the
/// named identities (`LATERAL … LIMIT 1` keeps that order), so that no plan — a generic
/// one, or one from stale statistics — reads a large conversation's rows.
async fn load(
    connection: &mut PgConnection,
    batch: &IngestBatch,
) -> Result<(Stored, OffsetDateTime), StoreError> {
    let row: StateRow = sqlx::query_as(
        "SELECT $1 AS bot_id, $2 AS conversation_id, COALESCE(c.last_seq, 0) AS last_seq,
                COALESCE(c.status, 'idle') AS status, c.experience, c.language,
                COALESCE(c.started_at, clock_timestamp()) AS started_at, c.ended_at,
                COALESCE(c.last_event_at, clock_timestamp()) AS last_event_at,
                COALESCE(c.event_count, 0) AS event_count,
                COALESCE(c.anomaly_count, 0) AS anomaly_count,
                COALESCE(c.cold_transfers, 0) AS cold_transfers,
                COALESCE(c.warm_transfers, 0) AS warm_transfers,
                COALESCE(c.redial_transfers, 0) AS redial_transfers,
                COALESCE(c.present_count, 0) AS present_count,
                COALESCE(c.participant_count, 0) AS participant_count,
                COALESCE(c.experience_from_events, false) AS experience_from_events,
                COALESCE(c.escalated_transfers, 0) AS escalated_transfers,
                COALESCE(c.failed_transfers, 0) AS failed_transfers,
                COALESCE(c.hop_count, 0) AS hop_count, c.last_emptied_by,
                COALESCE(CAST(c.pending_escalations AS TEXT), '[]') AS pending_escalations,
                c.awaiting_agent, c.service,
                CASE WHEN $5 THEN CAST(c.interaction AS TEXT) END AS interaction,
                GREATEST(clock_timestamp(), c.last_event_at) AS received_at,
                (SELECT json_agg(json_build_object(
                            'identity', p.identity, 'name', p.name, 'kind', p.kind,
                            'position', p.position, 'stint_count', p.stint_count,
                            'joined_at', s.joined_at, 'entry_type', s.entry_type))
                 FROM UNNEST($3::text[]) AS named(identity)
                 CROSS JOIN LATERAL (
                     SELECT * FROM participants p
                     WHERE p.bot_id = $1 AND p.conversation_id = $2
                         AND p.identity = named.identity
                     LIMIT 1) p
                 LEFT JOIN LATERAL (
                     SELECT s.joined_at, s.entry_type FROM stints s
                     WHERE s.bot_id = $1 AND s.conversation_id = $2
                         AND s.identity = named.identity AND s.ordinal = p.stint_count - 1
                         AND s.left_at IS NULL
                     LIMIT 1) s ON true) AS participants,
                (SELECT json_agg(json_build_object(
                            'identity', o.identity, 'position', o.position,
                            'joined_at', o.joined_at) ORDER BY o.joined_at, o.position)
                 FROM (SELECT s.identity, s.position, s.joined_at FROM stints s
                       WHERE s.bot_id = $1 AND s.conversation_id = $2 AND s.left_at IS NULL
                       ORDER BY s.joined_at, s.position LIMIT $4) o) AS present
         FROM (VALUES (1)) AS one
         LEFT JOIN conversations c ON c.bot_id = $1 AND c.conversation_id = $2",
    )
    .bind(batch.bot_id.as_str())
    .bind(batch.conversation_id.as_str())
    .bind(named_identities(batch))
    .bind(present_needed(&batch.events))
    .bind(needs_interaction(&batch.events))
    .fetch_one(connection)
    .await?;
    row.into_state()
}

/// The rows an append writes after its conversation's row (`conversation`, which returns
/// one row only if it was written): events, participants, stints and hops, `$27` onwards.
macro_rules! append_rows {
    () => {
        " RETURNING 1
         ), new_events AS (
             INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
                 transition, participant_identity, participant, anomalies, transfer_data,
                 payload, status_after, feed_txn)
             SELECT $1, $2, $27 + e.n - 1, $28, e.name, e.transfer_type, e.transition,
                    e.identity, e.participant, e.anomalies, e.transfer_data::json,
                    e.payload::json, e.status_after,
                    GREATEST((pg_current_xact_id()::text)::bigint, COALESCE(
                        (SELECT previous.feed_txn FROM events previous
                         WHERE previous.bot_id = $1 AND previous.conversation_id = $2
                             AND previous.seq = $27 - 1),
                        (SELECT max(erased.feed_txn) + 1 FROM erasures erased
                         WHERE erased.bot_id = $1 AND erased.conversation_id = $2), 0))
             FROM conversation,
                  UNNEST($29::text[], $30::text[], $31::text[], $32::text[], $33::jsonb[],
                         $34::jsonb[], $35::text[], $36::text[], $67::text[])
                      WITH ORDINALITY AS e(name, transfer_type, transition, identity,
                                           participant, anomalies, transfer_data, payload,
                                           status_after, n)
         ), participant_rows AS (
             INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind,
                 stint_count)
             SELECT $1, $2, p.* FROM conversation,
                  UNNEST($37::text[], $38::bigint[], $39::text[], $40::text[], $41::integer[])
                      AS p(identity, position, name, kind, stint_count)
             ON CONFLICT (bot_id, conversation_id, identity) DO UPDATE SET
                 name = EXCLUDED.name, kind = EXCLUDED.kind,
                 stint_count = EXCLUDED.stint_count
         ), closing AS (
             SELECT found.row_id, x.left_at, x.exit_type
             FROM conversation,
                  UNNEST($42::text[], $43::integer[], $44::timestamptz[], $45::text[])
                      AS x(identity, ordinal, left_at, exit_type)
             CROSS JOIN LATERAL (
                 SELECT s.ctid AS row_id FROM stints s
                 WHERE s.bot_id = $1 AND s.conversation_id = $2 AND s.identity = x.identity
                     AND s.ordinal = x.ordinal
                 LIMIT 1) found
         ), closed_stints AS (
             UPDATE stints s SET left_at = closing.left_at, exit_type = closing.exit_type
             FROM closing WHERE s.ctid = closing.row_id
         ), ended_stints AS (
             UPDATE stints s SET left_at = $46, exit_type = 'END'
             FROM conversation
             WHERE $46::timestamptz IS NOT NULL AND s.bot_id = $1 AND s.conversation_id = $2
                 AND s.left_at IS NULL AND s.identity <> ALL($42::text[])
         ), opened_stints AS (
             INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at,
                 left_at, entry_type, exit_type, position)
             SELECT $1, $2, o.* FROM conversation,
                  UNNEST($47::text[], $48::integer[], $49::timestamptz[], $50::timestamptz[],
                         $51::text[], $52::text[], $53::bigint[])
                      AS o(identity, ordinal, joined_at, left_at, entry_type, exit_type,
                           position)
         ), new_hops AS (
             INSERT INTO hops (bot_id, conversation_id, ordinal, seq, at, kind, from_identity,
                 to_identity, outcome, reason, targets)
             SELECT $1, $2, h.* FROM conversation,
                  UNNEST($54::bigint[], $55::bigint[], $56::timestamptz[], $57::text[],
                         $58::text[], $59::text[], $60::text[], $61::text[], $62::jsonb[])
                      AS h(ordinal, seq, at, kind, from_identity, to_identity, outcome, reason,
                           targets)
         ), changing AS (
             SELECT found.row_id, x.outcome, x.to_identity, x.reason
             FROM conversation,
                  UNNEST($63::bigint[], $64::text[], $65::text[], $66::text[])
                      AS x(ordinal, outcome, to_identity, reason)
             CROSS JOIN LATERAL (
                 SELECT h.ctid AS row_id FROM hops h
                 WHERE h.bot_id = $1 AND h.conversation_id = $2 AND h.ordinal = x.ordinal
                 LIMIT 1) found
         ), changed_hops AS (
             UPDATE hops h SET outcome = COALESCE(changing.outcome, h.outcome),
                 to_identity = COALESCE(changing.to_identity, h.to_identity),
                 reason = COALESCE(changing.reason, h.reason)
             FROM changing WHERE h.ctid = changing.row_id
         )
         SELECT count(*) FROM conversation"
    };
}

/// Writes `plan` in one statement: the conversation row, if its `last_seq` is still the
/// one the plan was made from; then, only if it was written, the events, participants and
/// stints. Whether it was written. Closed stints are found from the plan's rows, as the
/// participants are in [`load`].
///
/// Each event carries its feed transaction (SPEC 8, see `sql::CHANGES`): this
/// transaction's id, or the previous event's feed transaction if that is larger. An id is
/// taken when a transaction first writes, which may be before it waits for the row lock,
/// so a later append to the conversation can have a smaller id; the previous event is
/// visible here, as the compare-and-set only writes when `last_seq` is the one `load`
/// read. So feed transactions never decrease along a conversation's `seq`, and none is
/// ever below the id of the transaction that wrote it. The first event of a conversation
/// started again after an erasure goes after the erasure's tombstone, for the same reason.
async fn write(
    connection: &mut PgConnection,
    batch: &IngestBatch,
    plan: &AppendPlan,
) -> Result<bool, StoreError> {
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
    let anomalies: Vec<Json<&[Anomaly]>> = plan
        .anomalies
        .iter()
        .map(|codes| Json(&codes[..]))
        .collect();
    let transfer_data: Vec<Option<&str>> = events
        .iter()
        .map(|event| event.transfer_data.as_ref().map(|data| data.get()))
        .collect();
    let payloads: Vec<&str> = events.iter().map(|event| event.payload.get()).collect();
    let rows = &plan.participants;
    let (opened, closed) = (&plan.opened, &plan.closed);
    let (hops, changes) = (&plan.hops, &plan.hop_changes);

    // A conversation that had events is only ever updated (see `sql::update_conversation`).
    let query = if plan.expected_seq == 0 {
        sqlx::query_scalar(concat!(
            "WITH conversation AS (",
            sql::upsert_conversation!(),
            append_rows!()
        ))
    } else {
        sqlx::query_scalar(concat!(
            "WITH conversation AS (",
            sql::update_conversation!(),
            append_rows!()
        ))
    };
    let written: i64 = sql::bind_conversation(query, batch, plan)
        .bind(plan.first_seq)
        .bind(plan.received_at)
        .bind(names)
        .bind(transfer_types)
        .bind(transitions)
        .bind(identities)
        .bind(participants)
        .bind(anomalies)
        .bind(transfer_data)
        .bind(payloads)
        .bind(
            rows.iter()
                .map(|row| row.identity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|row| row.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.name.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.stint_count).collect::<Vec<_>>())
        .bind(
            closed
                .iter()
                .map(|row| row.identity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(closed.iter().map(|row| row.ordinal).collect::<Vec<_>>())
        .bind(
            closed
                .iter()
                .map(|row| row.stint.left_at)
                .collect::<Vec<_>>(),
        )
        .bind(exit_types(closed))
        .bind(plan.end_open_stints_at)
        .bind(
            opened
                .iter()
                .map(|row| row.identity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(opened.iter().map(|row| row.ordinal).collect::<Vec<_>>())
        .bind(
            opened
                .iter()
                .map(|row| row.stint.joined_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            opened
                .iter()
                .map(|row| row.stint.left_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            opened
                .iter()
                .map(|row| row.stint.entry_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(exit_types(opened))
        .bind(opened.iter().map(|row| row.position).collect::<Vec<_>>())
        .bind(hops.iter().map(|hop| hop.ordinal).collect::<Vec<_>>())
        .bind(hops.iter().map(|hop| hop.seq).collect::<Vec<_>>())
        .bind(hops.iter().map(|hop| hop.at).collect::<Vec<_>>())
        .bind(hops.iter().map(|hop| hop.kind.as_str()).collect::<Vec<_>>())
        .bind(
            hops.iter()
                .map(|hop| hop.from.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(hops.iter().map(|hop| hop.to.as_deref()).collect::<Vec<_>>())
        .bind(
            hops.iter()
                .map(|hop| hop.outcome.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            hops.iter()
                .map(|hop| hop.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            hops.iter()
                .map(|hop| hop.targets.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|change| change.ordinal)
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|change| change.outcome.map(|outcome| outcome.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|change| change.to.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|change| change.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            plan.statuses
                .iter()
                .map(|status| status.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_one(connection)
        .await?;
    Ok(written == 1)
}

fn exit_types(rows: &[crate::domain::StintRow]) -> Vec<Option<&'static str>> {
    rows.iter()
        .map(|row| row.stint.exit_type.map(|exit| exit.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A request of `events` for the conversation `c-race`.
    pub(super) fn batch(events: Value) -> IngestBatch {
        let body = json!({ "conversationId": "c-race", "botId": "st-1", "events": events });
        IngestBatch::parse(body.to_string().as_bytes(), "st-1")
            .expect("the test body is a valid hooks request")
    }

    pub(super) fn transfer(transfer_type: &str, transition: &str, agent: &str) -> Value {
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
        let (found, at) = load(&mut connection, &late).await.unwrap();

        store
            .append(&batch(json!([transfer("WARM", "entry", "a3")])))
            .await
            .unwrap();
        let written = write(&mut connection, &late, &plan(&late, found, at))
            .await
            .unwrap();

        assert!(
            !written,
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

    /// A transaction takes its id at its first write, which can be before it waits for the
    /// conversation's lock (two first appends creating the row): its events must still come
    /// after those of the append that held the lock, in the feed.
    #[sqlx::test(migrator = "MIGRATOR")]
    async fn an_append_whose_transaction_took_its_id_first_still_follows_in_the_feed(pool: PgPool) {
        let store = PgStore::from_pool(pool.clone());
        let mut early = pool.begin().await.unwrap();
        let early_id: i64 = sqlx::query_scalar("SELECT (pg_current_xact_id()::text)::bigint")
            .fetch_one(&mut *early)
            .await
            .unwrap();
        store
            .append(&batch(json!([transfer("NA", "entry", "a1")])))
            .await
            .unwrap();

        append_locked(&mut early, &batch(json!([transfer("COLD", "entry", "a2")])))
            .await
            .unwrap();
        early.commit().await.unwrap();

        let feed: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, feed_txn FROM events WHERE conversation_id = 'c-race' ORDER BY seq",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(
            feed[0].1 > early_id,
            "the first append's transaction is younger"
        );
        assert!(
            feed[1].1 >= feed[0].1,
            "seq 2 may not come before seq 1 in the feed: {feed:?}"
        );
    }

    /// Without the update-only write for a conversation that had events, the stale plan
    /// would create the erased conversation again, at seq 3, with the erased counts.
    #[sqlx::test(migrator = "MIGRATOR")]
    async fn an_append_planned_before_an_erasure_starts_the_conversation_again(pool: PgPool) {
        let store = PgStore::from_pool(pool.clone());
        store
            .append(&batch(json!([
                transfer("NA", "entry", "a1"),
                transfer("NA", "exit", "a1")
            ])))
            .await
            .unwrap();
        let late = batch(json!([transfer("NA", "entry", "a2")]));
        let mut connection = pool.acquire().await.unwrap();
        let (found, at) = load(&mut connection, &late).await.unwrap();
        assert_eq!(found.last_seq, 2);

        assert!(store.erase("st-1", "c-race").await.unwrap());
        let written = write(&mut connection, &late, &plan(&late, found, at))
            .await
            .unwrap();

        assert!(!written, "the conversation is gone: nothing may be written");
        assert!(stored(&pool).await.is_empty());
        let appended = store.append(&late).await.unwrap();
        assert_eq!((appended.first_seq, appended.last_seq), (1, 1));
        let event_count: i64 = sqlx::query_scalar(
            "SELECT event_count FROM conversations WHERE conversation_id = 'c-race'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            event_count, 1,
            "nothing of the erased conversation carried over"
        );
    }

    #[sqlx::test(migrator = "MIGRATOR")]
    async fn two_first_appends_to_a_new_conversation_cannot_both_create_it(pool: PgPool) {
        let store = PgStore::from_pool(pool.clone());
        let late = batch(json!([transfer("NA", "entry", "a2")]));
        let mut connection = pool.acquire().await.unwrap();
        let (found, at) = load(&mut connection, &late).await.unwrap();
        assert_eq!(found.last_seq, 0);

        store
            .append(&batch(json!([transfer("NA", "entry", "a1")])))
            .await
            .unwrap();
        let written = write(&mut connection, &late, &plan(&late, found, at))
            .await
            .unwrap();

        assert!(!written);
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
