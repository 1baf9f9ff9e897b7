//! An append on PostgreSQL: the requests of a group (group commit, see [`super::group`]), or
//! one alone, in one transaction. The `Idempotency-Key`s are taken (a key held elsewhere is
//! in flight, 409; a key used before is replayed or 422), the conversations are created if
//! new and locked in key order (so that two transactions never wait on each other in a
//! circle), then each conversation's next append is loaded, planned and written for all of
//! them at once — a conversation with several appends takes them in arrival order, a round
//! each — and the keys are saved. Nothing is acknowledged before the commit.

use super::in_transaction;
use super::write::{column, write_round};
use crate::domain::{AppendPlan, IngestBatch, Stored, needs_interaction, present_needed};
use crate::store::codec::DbTime;
use crate::store::keys::{self, KeyRow};
use crate::store::rows::{self, PresentStintRow, StateParticipant, SummaryRow};
use crate::store::{Appended, KeyRecord, Keyed, StoreError, named_identities, plan};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// One request's append: its events, and its `Idempotency-Key` if it has one.
#[derive(Clone, Copy)]
pub(super) struct Request<'a> {
    pub batch: &'a IngestBatch,
    pub key: Option<&'a KeyRecord>,
}

/// Appends `requests` in one transaction of their own; each one's answer, in order.
pub(super) async fn append_together(
    pool: &PgPool,
    requests: &[Request<'_>],
) -> Result<Vec<Keyed>, StoreError> {
    in_transaction(pool, async |tx| write_group(tx, requests).await, |_| true).await
}

/// Appends one request in a transaction of its own.
pub(super) async fn append_alone(pool: &PgPool, request: Request<'_>) -> Result<Keyed, StoreError> {
    let mut answers = append_together(pool, &[request]).await?;
    Ok(answers.pop().expect("one answer for one request"))
}

/// Writes the appends of `requests` in `tx`; each one's answer, in order.
async fn write_group(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[Request<'_>],
) -> Result<Vec<Keyed>, StoreError> {
    let mut answers: Vec<Option<Keyed>> = vec![None; requests.len()];
    take_keys(tx, requests, &mut answers).await?;
    let appending: Vec<usize> = (0..requests.len())
        .filter(|&i| answers[i].is_none())
        .collect();
    if appending.is_empty() {
        return Ok(answers.into_iter().flatten().collect());
    }
    let batches: Vec<&IngestBatch> = appending.iter().map(|&i| requests[i].batch).collect();
    create_conversations(tx, &batches).await?;
    for round in rounds(requests, &appending) {
        let batches: Vec<&IngestBatch> = round.iter().map(|&i| requests[i].batch).collect();
        let plans = plan_round(tx, &batches).await?;
        let written = write_round(tx, &batches, &plans).await?;
        if written != batches.len() {
            return Err(anyhow::anyhow!("a locked conversation changed under a group").into());
        }
        for (&i, plan) in round.iter().zip(&plans) {
            answers[i] = Some(Keyed::Stored(Appended::of(plan)));
        }
    }
    save_keys(tx, requests, &answers).await?;
    Ok(answers
        .into_iter()
        .map(|answer| answer.expect("every request is answered"))
        .collect())
}

/// Takes each request's key for this transaction, in one statement, then reads the earlier
/// uses of those it got, in another: a key held elsewhere is in flight; an earlier use is
/// the answer (replayed, or refused for another body).
async fn take_keys(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[Request<'_>],
    answers: &mut [Option<Keyed>],
) -> Result<(), StoreError> {
    let keyed: Vec<(usize, &KeyRecord)> = requests
        .iter()
        .enumerate()
        .filter_map(|(i, request)| request.key.map(|key| (i, key)))
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    let taken: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(k.id)
         FROM UNNEST($1::bigint[]) WITH ORDINALITY AS k(id, n) ORDER BY k.n",
    )
    .bind(column(&keyed, |(_, key)| keys::key_lock_id(key)))
    .fetch_all(&mut **tx)
    .await?;
    let mut held = Vec::new();
    for ((i, key), taken) in keyed.into_iter().zip(taken) {
        if taken {
            held.push((i, key));
        } else {
            answers[i] = Some(Keyed::InFlight);
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    let previous: Vec<NumberedKeyRow> = sqlx::query_as(
        "SELECT k.n, i.fingerprint, i.conversation_id, i.accepted, i.first_seq, i.last_seq,
                i.conversation_status
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY
             AS k(bot_id, key, expired_before, n)
         JOIN idempotency_keys i ON i.bot_id = k.bot_id AND i.key = k.key
             AND i.created_at >= k.expired_before",
    )
    .bind(column(&held, |(_, key)| key.bot_id.as_str()))
    .bind(column(&held, |(_, key)| key.key.as_str()))
    .bind(column(&held, |(_, key)| key.expired_before))
    .fetch_all(&mut **tx)
    .await?;
    for row in previous {
        let (i, key) = held[usize::try_from(row.n - 1).unwrap_or(usize::MAX)];
        answers[i] = Some(Keyed::Used(row.key.into_previous(&key.fingerprint)?));
    }
    Ok(())
}

#[derive(FromRow)]
struct NumberedKeyRow {
    n: i64,
    #[sqlx(flatten)]
    key: KeyRow,
}

/// Creates the conversations that do not exist yet (empty, to be written below), in key
/// order. The first round's read then locks every conversation of the group, in key order
/// too: two groups that share conversations take them in the same order, so neither can
/// wait on the other in a circle.
async fn create_conversations(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[&IngestBatch],
) -> Result<(), StoreError> {
    let conversations: Vec<(&str, &str)> = batches
        .iter()
        .map(|batch| (batch.bot_id.as_str(), batch.conversation_id.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    sqlx::query(
        "INSERT INTO conversations (bot_id, conversation_id, last_seq, status, started_at,
             last_event_at)
         SELECT w.bot_id, w.conversation_id, 0, 'idle', now(), now()
         FROM UNNEST($1::text[], $2::text[]) AS w(bot_id, conversation_id)
         ORDER BY w.bot_id, w.conversation_id
         ON CONFLICT (bot_id, conversation_id) DO NOTHING",
    )
    .bind(column(&conversations, |(bot, _)| *bot))
    .bind(column(&conversations, |(_, id)| *id))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The appends in rounds: each round holds at most one append per conversation, in key
/// order, and a conversation's appends come in arrival order, one round after another.
fn rounds(requests: &[Request<'_>], appending: &[usize]) -> Vec<Vec<usize>> {
    let mut by_conversation: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for &i in appending {
        let batch = requests[i].batch;
        by_conversation
            .entry((batch.bot_id.as_str(), batch.conversation_id.as_str()))
            .or_default()
            .push(i);
    }
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for appends in by_conversation.into_values() {
        for (round, i) in appends.into_iter().enumerate() {
            if rounds.len() == round {
                rounds.push(Vec::new());
            }
            rounds[round].push(i);
        }
    }
    rounds
}

/// Reads what each append of the round needs ([`read_round`]), locking the round's
/// conversations in its (key) order, and plans it.
async fn plan_round(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[&IngestBatch],
) -> Result<Vec<AppendPlan>, StoreError> {
    let mut rows = read_round(tx, batches).await?;
    if rows.len() != batches.len() {
        // A conversation erased or purged while this waited for its lock is gone (its
        // creation above does not lock it): create it again, in a statement of its own
        // that sees the delete, and read the round again.
        create_conversations(tx, batches).await?;
        rows = read_round(tx, batches).await?;
    } else if rows
        .iter()
        .any(|row| row.seen_seq != Some(row.state.summary.last_seq))
    {
        // A conversation whose lock this statement waited for was read with its row as the
        // other transaction left it but the rest as before (PostgreSQL rechecks only the
        // locked row): read again, now that every lock is held, with a snapshot that sees
        // it all.
        rows = read_round(tx, batches).await?;
    }
    if rows.len() != batches.len() {
        return Err(
            anyhow::anyhow!("a conversation was deleted again while an append waited").into(),
        );
    }
    rows.into_iter()
        .zip(batches)
        .map(|(row, batch)| {
            let (stored, received_at) = row.state.into_state()?;
            Ok(plan(batch, stored, received_at))
        })
        .collect()
}

/// A conversation's state, locked, and its `last_seq` as the statement's snapshot saw it.
#[derive(FromRow)]
struct LockedStateRow {
    seen_seq: Option<i64>,
    #[sqlx(flatten)]
    state: StateRow,
}

/// The statement of [`plan_round`], in the order of the round (`ORDER BY w.n`): each
/// conversation's row and the time its append is received, the database's clock but never
/// before the conversation's last event, so that `receivedAt` follows `seq`. The
/// participants are looked up from the named identities (`LATERAL … LIMIT 1` keeps that
/// order), so that no plan — a generic one, or one from stale statistics — reads a large
/// conversation's rows.
async fn read_round(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[&IngestBatch],
) -> Result<Vec<LockedStateRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT w.n, w.bot_id, w.conversation_id, COALESCE(c.last_seq, 0) AS last_seq,
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
                CASE WHEN w.wants_interaction THEN CAST(c.interaction AS TEXT) END AS interaction,
                GREATEST(clock_timestamp(), c.last_event_at) AS received_at,
                (SELECT json_agg(json_build_object(
                            'identity', p.identity, 'name', p.name, 'kind', p.kind,
                            'position', p.position, 'stint_count', p.stint_count,
                            'joined_at', s.joined_at, 'entry_type', s.entry_type))
                 FROM jsonb_array_elements_text(w.named) AS named(identity)
                 CROSS JOIN LATERAL (
                     SELECT * FROM participants p
                     WHERE p.bot_id = w.bot_id AND p.conversation_id = w.conversation_id
                         AND p.identity = named.identity
                     LIMIT 1) p
                 LEFT JOIN LATERAL (
                     SELECT s.joined_at, s.entry_type FROM stints s
                     WHERE s.bot_id = w.bot_id AND s.conversation_id = w.conversation_id
                         AND s.identity = named.identity AND s.ordinal = p.stint_count - 1
                         AND s.left_at IS NULL
                     LIMIT 1) s ON true) AS participants,
                (SELECT json_agg(json_build_object(
                            'identity', o.identity, 'position', o.position,
                            'joined_at', o.joined_at) ORDER BY o.joined_at, o.position)
                 FROM (SELECT s.identity, s.position, s.joined_at FROM stints s
                       WHERE s.bot_id = w.bot_id AND s.conversation_id = w.conversation_id
                           AND s.left_at IS NULL
                       ORDER BY s.joined_at, s.position LIMIT w.present_limit) o) AS present,
                (SELECT seen.last_seq FROM conversations seen
                 WHERE seen.bot_id = w.bot_id AND seen.conversation_id = w.conversation_id)
                    AS seen_seq
         FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::bigint[], $5::bool[])
             WITH ORDINALITY AS w(bot_id, conversation_id, named, present_limit,
                                  wants_interaction, n)
         JOIN conversations c ON c.bot_id = w.bot_id AND c.conversation_id = w.conversation_id
         ORDER BY w.n
         FOR UPDATE OF c",
    )
    .bind(column(batches, |batch| batch.bot_id.as_str()))
    .bind(column(batches, |batch| batch.conversation_id.as_str()))
    .bind(column(batches, |batch| Json(named_identities(batch))))
    .bind(column(batches, |batch| present_needed(&batch.events)))
    .bind(column(batches, |batch| needs_interaction(&batch.events)))
    .fetch_all(&mut **tx)
    .await?)
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
        let stored = rows::stored(&self.summary, participants, present)?;
        Ok((stored, self.received_at.into()))
    }
}

/// Saves the outcome of every keyed append the group stored, in one statement.
async fn save_keys(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[Request<'_>],
    answers: &[Option<Keyed>],
) -> Result<(), StoreError> {
    let stored: Vec<(&KeyRecord, &IngestBatch, &Appended)> = requests
        .iter()
        .zip(answers)
        .filter_map(|(request, answer)| match (request.key, answer) {
            (Some(key), Some(Keyed::Stored(appended))) => Some((key, request.batch, appended)),
            _ => None,
        })
        .collect();
    if stored.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO idempotency_keys (bot_id, key, fingerprint, created_at, conversation_id,
             accepted, first_seq, last_seq, conversation_status)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                              $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[])
         ON CONFLICT (bot_id, key) DO UPDATE SET
             fingerprint = excluded.fingerprint, created_at = excluded.created_at,
             conversation_id = excluded.conversation_id, accepted = excluded.accepted,
             first_seq = excluded.first_seq, last_seq = excluded.last_seq,
             conversation_status = excluded.conversation_status",
    )
    .bind(column(&stored, |(key, ..)| key.bot_id.as_str()))
    .bind(column(&stored, |(key, ..)| key.key.as_str()))
    .bind(column(&stored, |(key, ..)| key.fingerprint.as_str()))
    .bind(column(&stored, |(key, ..)| key.now))
    .bind(column(&stored, |(_, batch, _)| {
        batch.conversation_id.as_str()
    }))
    .bind(column(&stored, |(_, batch, _)| batch.events.len() as i64))
    .bind(column(&stored, |(.., appended)| appended.first_seq))
    .bind(column(&stored, |(.., appended)| appended.last_seq))
    .bind(column(&stored, |(.., appended)| appended.status.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::postgres::{MIGRATOR, PgStore};
    use serde_json::{Value, json};
    use std::time::Duration;

    /// A request of `events` for the conversation `c-race`.
    pub(in crate::store::postgres) fn batch(events: Value) -> IngestBatch {
        let body = json!({ "conversationId": "c-race", "botId": "st-1", "events": events });
        IngestBatch::parse(body.to_string().as_bytes(), "st-1")
            .expect("the test body is a valid hooks request")
    }

    pub(in crate::store::postgres) fn transfer(
        transfer_type: &str,
        transition: &str,
        agent: &str,
    ) -> Value {
        json!({
            "name": "INTERNAL_TRANSFER_EVENT", "transfertype": transfer_type,
            "transition": transition, "isExtAD": true, "experience": "chat",
            "participant": { "identity": agent, "name": agent, "type": "agent" }
        })
    }

    /// Appends `batch` inside `tx`, as another transaction holding the conversation would.
    pub(in crate::store::postgres) async fn write_alone(
        tx: &mut Transaction<'_, Postgres>,
        batch: &IngestBatch,
    ) {
        write_group(tx, &[Request { batch, key: None }])
            .await
            .unwrap();
    }

    /// `batch`'s plan as its conversation stands now, read and let go: it goes stale if
    /// anything happens to the conversation before it is written.
    async fn plan_now(pool: &PgPool, batch: &IngestBatch) -> AppendPlan {
        let mut tx = pool.begin().await.unwrap();
        create_conversations(&mut tx, &[batch]).await.unwrap();
        let plan = plan_round(&mut tx, &[batch]).await.unwrap().remove(0);
        tx.rollback().await.unwrap();
        plan
    }

    /// Writes `plan` in a transaction of its own; whether it was written.
    async fn write_plan(pool: &PgPool, batch: &IngestBatch, plan: AppendPlan) -> bool {
        let mut tx = pool.begin().await.unwrap();
        let written = write_round(&mut tx, &[batch], &[plan]).await.unwrap();
        tx.commit().await.unwrap();
        written == 1
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
        let stale = plan_now(&pool, &late).await;

        store
            .append(&batch(json!([transfer("WARM", "entry", "a3")])))
            .await
            .unwrap();
        let written = write_plan(&pool, &late, stale).await;

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

        write_alone(&mut early, &batch(json!([transfer("COLD", "entry", "a2")]))).await;
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

    /// A write only ever updates a conversation row that is there: else the stale plan
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
        let stale = plan_now(&pool, &late).await;
        assert_eq!(stale.expected_seq, 2);

        assert!(store.erase("st-1", "c-race").await.unwrap());
        let written = write_plan(&pool, &late, stale).await;

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
        let stale = plan_now(&pool, &late).await;
        assert_eq!(stale.expected_seq, 0);

        store
            .append(&batch(json!([transfer("NA", "entry", "a1")])))
            .await
            .unwrap();
        let written = write_plan(&pool, &late, stale).await;

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

    /// The conversation an append waits for is erased meanwhile: its lock, once got, finds
    /// no row. The append creates it again and starts it afresh (without that, it fails).
    #[sqlx::test(migrator = "MIGRATOR")]
    async fn an_append_whose_conversation_was_erased_while_it_waited_starts_it_again(pool: PgPool) {
        let store = PgStore::from_pool(pool.clone());
        store
            .append(&batch(json!([transfer("NA", "entry", "a1")])))
            .await
            .unwrap();
        let mut eraser = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM conversations WHERE conversation_id = 'c-race' FOR UPDATE")
            .execute(&mut *eraser)
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .append(&batch(json!([transfer("NA", "entry", "a2")])))
                    .await
            }
        });
        wait_until_a_session_waits_for_a_lock(&pool).await;

        crate::store::retention::delete_conversation(&mut eraser, "st-1", "c-race")
            .await
            .unwrap();
        eraser.commit().await.unwrap();
        let appended = waiting
            .await
            .unwrap()
            .expect("the append starts the conversation again");

        assert_eq!((appended.first_seq, appended.last_seq), (1, 1));
        assert_eq!(stored(&pool).await, [(1, "a2".into())]);
    }

    /// Polls `pg_stat_activity` (an event to wait on, not a fixed sleep) until a session
    /// waits for a lock.
    pub(in crate::store::postgres) async fn wait_until_a_session_waits_for_a_lock(pool: &PgPool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if waiting > 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no session ever waited for a lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
