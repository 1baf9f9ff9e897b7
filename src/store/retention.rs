//! Erasure and retention (SPEC 10), shared by both backends: deleting a conversation with
//! everything it holds, and finding the conversations past the retention limit.

use super::StoreError;
use super::codec::{Bind, DbTime};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Transaction, Type};
use time::OffsetDateTime;

/// Every table that holds rows of a conversation, children first: one statement each.
/// A table added later must be added here (the erasure tests look for leftovers in every
/// table of the schema).
const DELETE_CONVERSATION: [&str; 9] = [
    "DELETE FROM events WHERE bot_id = $1 AND conversation_id = $2",
    // The stats worker's state of it; the stats it counted stay (they name no conversation).
    "DELETE FROM stats_conversations WHERE bot_id = $1 AND conversation_id = $2",
    "DELETE FROM stats_present WHERE bot_id = $1 AND conversation_id = $2",
    "DELETE FROM stats_open_conversations WHERE bot_id = $1 AND conversation_id = $2",
    "DELETE FROM stints WHERE bot_id = $1 AND conversation_id = $2",
    "DELETE FROM participants WHERE bot_id = $1 AND conversation_id = $2",
    "DELETE FROM hops WHERE bot_id = $1 AND conversation_id = $2",
    "DELETE FROM idempotency_keys WHERE bot_id = $1 AND conversation_id = $2",
    "DELETE FROM conversations WHERE bot_id = $1 AND conversation_id = $2",
];

/// Whether a conversation is past the retention limit: nobody present, no event since
/// `$n` (ended conversations and idle ones alike). Shared by the candidates, the check under
/// lock and the dry run, so that the three cannot disagree.
macro_rules! past_retention {
    ($before:literal) => {
        concat!("status <> 'active' AND last_event_at < ", $before)
    };
}
pub(crate) use past_retention;

/// The conversations past the limit, oldest activity first (index `conversations_purgeable`).
const CANDIDATES: &str = concat!(
    "SELECT bot_id, conversation_id, event_count FROM conversations WHERE ",
    past_retention!("$1"),
    " ORDER BY last_event_at LIMIT $2"
);

/// What retention would delete now.
const EXPIRED_TOTALS: &str = concat!(
    "SELECT count(*) AS conversations, CAST(COALESCE(sum(event_count), 0) AS BIGINT) AS events
     FROM conversations WHERE ",
    past_retention!("$1")
);

/// Is the conversation still past the limit, under this transaction's lock?
macro_rules! still_expired {
    () => {
        concat!(
            "SELECT last_seq FROM conversations WHERE bot_id = $1 AND conversation_id = $2 AND ",
            $crate::store::retention::past_retention!("$3")
        )
    };
}
pub(super) use still_expired;

/// Tombstones older than `$1`, a bounded batch at a time.
const PURGE_TOMBSTONES: &str = "DELETE FROM erasures
    WHERE (bot_id, feed_txn, conversation_id, seq) IN (
        SELECT bot_id, feed_txn, conversation_id, seq FROM erasures
        WHERE erased_at < $1 LIMIT $2)
    RETURNING CAST(1 AS BIGINT)";

/// Conversations looked at per purge transaction…
pub(super) const PURGE_BATCH: i64 = 50;
/// …taken while their events add up to at most this many (at least one conversation is
/// taken, whatever its size: a conversation is always deleted whole).
pub(super) const PURGE_BATCH_EVENTS: i64 = 2000;
const TOMBSTONE_BATCH: i64 = 1000;

/// A conversation retention may delete.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Candidate {
    pub bot_id: String,
    pub conversation_id: String,
    pub event_count: i64,
}

/// What retention would delete (`purge --dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromRow)]
pub struct Expired {
    pub conversations: i64,
    pub events: i64,
}

/// Deletes every row of the conversation, in every table that holds one.
pub(super) async fn delete_conversation<DB>(
    tx: &mut Transaction<'_, DB>,
    bot_id: &str,
    conversation_id: &str,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    for statement in DELETE_CONVERSATION {
        sqlx::query::<DB>(statement)
            .bind(Bind::Text(bot_id.to_owned()))
            .bind(Bind::Text(conversation_id.to_owned()))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The next conversations past the limit, up to [`PURGE_BATCH`] of them and as many as fit
/// in [`PURGE_BATCH_EVENTS`] events (at least one).
pub(super) async fn candidates<'c, DB, E>(
    executor: E,
    ended_before: OffsetDateTime,
) -> Result<Vec<Candidate>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    Candidate: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let found: Vec<Candidate> = sqlx::query_as::<DB, Candidate>(CANDIDATES)
        .bind(Bind::Time(ended_before))
        .bind(Bind::Int(PURGE_BATCH))
        .fetch_all(executor)
        .await?;
    Ok(within_budget(found))
}

/// The longest prefix of `found` whose events fit in the batch, and at least one.
fn within_budget(found: Vec<Candidate>) -> Vec<Candidate> {
    let mut events = 0;
    let mut taken = Vec::new();
    for candidate in found {
        events += candidate.event_count;
        if !taken.is_empty() && events > PURGE_BATCH_EVENTS {
            break;
        }
        taken.push(candidate);
    }
    taken
}

/// What retention would delete now.
pub(super) async fn expired<'c, DB, E>(
    executor: E,
    ended_before: OffsetDateTime,
) -> Result<Expired, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    Expired: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    Ok(sqlx::query_as::<DB, Expired>(EXPIRED_TOTALS)
        .bind(Bind::Time(ended_before))
        .fetch_one(executor)
        .await?)
}

/// Forgets erasure tombstones older than `before`, a bounded batch at a time; how many.
pub(super) async fn purge_tombstones<DB>(
    pool: &sqlx::Pool<DB>,
    before: OffsetDateTime,
) -> Result<u64, StoreError>
where
    DB: Database,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut purged = 0;
    loop {
        let batch = sqlx::query_as::<DB, (i64,)>(PURGE_TOMBSTONES)
            .bind(Bind::Time(before))
            .bind(Bind::Int(TOMBSTONE_BATCH))
            .fetch_all(pool)
            .await?
            .len() as u64;
        purged += batch;
        if batch < TOMBSTONE_BATCH as u64 {
            return Ok(purged);
        }
    }
}

/// The time an erasure happened, as both stores keep it.
pub(super) fn now() -> DbTime {
    DbTime(DbTime::truncated(OffsetDateTime::now_utc()))
}

/// Deletes those of `candidates` still past the limit when looked at again in `tx`; those
/// it deleted. `still_expired` is [`still_expired!`] in the backend's dialect (PostgreSQL
/// skips a conversation another transaction holds).
pub(super) async fn purge_in<DB>(
    tx: &mut Transaction<'_, DB>,
    candidates: Vec<Candidate>,
    ended_before: OffsetDateTime,
    still_expired: &'static str,
) -> Result<Vec<Candidate>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut purged = Vec::new();
    for candidate in candidates {
        let found = sqlx::query::<DB>(still_expired)
            .bind(Bind::Text(candidate.bot_id.clone()))
            .bind(Bind::Text(candidate.conversation_id.clone()))
            .bind(Bind::Time(ended_before))
            .fetch_optional(&mut **tx)
            .await?;
        if found.is_some() {
            delete_conversation(tx, &candidate.bot_id, &candidate.conversation_id).await?;
            purged.push(candidate);
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(events: i64) -> Candidate {
        Candidate {
            bot_id: "st-1".into(),
            conversation_id: format!("c-{events}"),
            event_count: events,
        }
    }

    #[test]
    fn a_batch_takes_conversations_while_their_events_fit() {
        let found = vec![candidate(1500), candidate(500), candidate(1)];

        let taken = within_budget(found);

        assert_eq!(taken, [candidate(1500), candidate(500)]);
    }

    #[test]
    fn a_conversation_larger_than_the_budget_is_taken_alone() {
        let taken = within_budget(vec![candidate(100_000), candidate(1)]);

        assert_eq!(taken, [candidate(100_000)]);
    }

    #[test]
    fn nothing_found_is_an_empty_batch() {
        assert!(within_budget(Vec::new()).is_empty());
    }
}
