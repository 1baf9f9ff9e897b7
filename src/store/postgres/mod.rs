//! The PostgreSQL store: the production backend. Concurrency is decided by the
//! conversation row (its lock, and a compare-and-set on its `last_seq`), so any number of
//! replicas can share one database.

use super::retention::{self, Candidate};
use super::{Appended, Checkout, FeedPosition, KeyRecord, Keyed, StoreError, finish};
use crate::config::{DatabaseSettings, GroupCommitSettings};
use crate::domain::IngestBatch;
use anyhow::Context;
use append::{Request, append_alone};
use group::GroupCommit;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

mod append;
mod group;
mod write;

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
        // arguments (see `append::read_round`), so they are planned once per connection, not again at
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
        match self.append_keyed_or_not(batch, None).await? {
            Keyed::Stored(appended) => Ok(appended),
            other => Err(anyhow::anyhow!("an append without a key was answered {other:?}").into()),
        }
    }

    pub(super) async fn append_keyed(
        &self,
        batch: &IngestBatch,
        key: &KeyRecord,
    ) -> Result<Keyed, StoreError> {
        self.append_keyed_or_not(batch, Some(key)).await
    }

    /// Appends in the next group, or alone when group commit is off.
    async fn append_keyed_or_not(
        &self,
        batch: &IngestBatch,
        key: Option<&KeyRecord>,
    ) -> Result<Keyed, StoreError> {
        match &self.group {
            Some(group) => group.submit(batch.clone(), key.cloned()).await,
            None => {
                let request = Request { batch, key };
                self.deadlines
                    .write(append_alone(&self.pool, request))
                    .await
            }
        }
    }
}

/// Runs `work` in a transaction on a connection of its own, committed when `keep` says its
/// result is worth it, else rolled back; the connection goes back to the pool only if all
/// of it ended cleanly (see [`Checkout`]).
pub(super) async fn in_transaction<T>(
    pool: &PgPool,
    work: impl AsyncFnOnce(&mut Transaction<'_, Postgres>) -> Result<T, StoreError>,
    keep: impl Fn(&T) -> bool,
) -> Result<T, StoreError> {
    let mut connection = Checkout::acquire(pool).await?;
    let result = async {
        let mut tx = connection.begin().await?;
        let result = work(&mut tx).await;
        finish(tx, result, keep).await
    }
    .await;
    connection.reuse_if_ok(&result);
    result
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

impl PgStore {
    /// Deletes the conversation with everything it holds and leaves its tombstone in the
    /// feed, in one transaction; whether it existed.
    pub(super) async fn erase(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<bool, StoreError> {
        in_transaction(
            &self.pool,
            async |tx| erase_in(tx, bot_id, conversation_id).await,
            |erased| *erased,
        )
        .await
    }

    /// Deletes those of `candidates` still past the limit, in one short transaction; those
    /// it deleted. A conversation another replica is deleting, or that an append holds right
    /// now, is skipped; one that took an event meanwhile is kept.
    pub(super) async fn purge(
        &self,
        candidates: Vec<Candidate>,
        ended_before: OffsetDateTime,
    ) -> Result<Vec<Candidate>, StoreError> {
        let still_expired = concat!(retention::still_expired!(), " FOR UPDATE SKIP LOCKED");
        in_transaction(
            &self.pool,
            async |tx| retention::purge_in(tx, candidates, ended_before, still_expired).await,
            |_| true,
        )
        .await
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
