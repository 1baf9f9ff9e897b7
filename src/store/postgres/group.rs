//! Group commit: the appends waiting when a writer is free share one transaction, written
//! with a few multi-row statements for all of them, and each request is answered when
//! that transaction commits. A transaction and a statement cost PostgreSQL about as much
//! for one event as for sixty, so the appends that arrive together are much cheaper.
//!
//! A group, in one transaction: the `Idempotency-Key`s are taken (a key held elsewhere is
//! in flight, 409; a key used before is replayed or 422), the conversations are created if
//! new and locked in key order (so that two groups never wait on each other in a circle),
//! then each conversation's next append is loaded, planned and written for all of them at
//! once — a conversation with several appends in the group takes them in arrival order, a
//! round each — and the keys are saved. If any statement fails, the whole group is rolled
//! back and each request is retried alone, answered on its own merits: one request cannot
//! fail the others. Nothing is acknowledged before the commit.

use super::{Deadlines, StateRow, append_alone, append_keyed_alone, exit_types};
use crate::config::GroupCommitSettings;
use crate::domain::{AppendPlan, IngestBatch, needs_interaction, plan_append, present_needed};
use crate::store::sql::{self, DbTime, KeyRow};
use crate::store::{Appended, Checkout, KeyRecord, Keyed, StoreError, finish, named_identities};
use sqlx::types::Json;
use sqlx::{Connection, FromRow, PgPool, Postgres, Transaction};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Appends waiting for a writer, beyond which a request waits to be queued.
const QUEUE: usize = 4096;

/// The queue of appends and the writers that commit them in groups.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Job>,
}

/// One request's append, and where its answer goes.
struct Job {
    batch: IngestBatch,
    key: Option<KeyRecord>,
    reply: oneshot::Sender<Result<Keyed, StoreError>>,
    /// The request's `append` span, told the size of the group it was written in.
    span: tracing::Span,
}

impl GroupCommit {
    /// Starts the writers; `None` when group commit is off.
    pub(super) fn start(
        pool: &PgPool,
        settings: &GroupCommitSettings,
        deadlines: &Deadlines,
    ) -> Option<Arc<Self>> {
        if !settings.enabled {
            return None;
        }
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let limits = Limits {
            max_batch: settings.max_batch.max(1),
            window: Duration::from_micros(settings.window_us),
        };
        for _ in 0..settings.writers.max(1) {
            tokio::spawn(writer(
                pool.clone(),
                waiting.clone(),
                limits,
                deadlines.clone(),
            ));
        }
        Some(Arc::new(Self { queue }))
    }

    /// Appends `batch` (with its key, if any) in the next group; its outcome once that
    /// group committed.
    pub(super) async fn submit(
        &self,
        batch: IngestBatch,
        key: Option<KeyRecord>,
    ) -> Result<Keyed, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            batch,
            key,
            reply,
            span: tracing::Span::current(),
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| anyhow::anyhow!("the group commit writers have stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("a group commit writer stopped before answering"))?
    }
}

#[derive(Clone, Copy)]
struct Limits {
    max_batch: usize,
    window: Duration,
}

/// Takes the appends waiting (one writer at a time, so that each gets what queued while it
/// was busy), commits them as a group, and again, until the queue closes.
async fn writer(
    pool: PgPool,
    waiting: Arc<Mutex<mpsc::Receiver<Job>>>,
    limits: Limits,
    deadlines: Deadlines,
) {
    loop {
        let jobs = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            gather(&mut waiting, first, limits).await
        };
        commit(&pool, jobs, &deadlines).await;
    }
}

/// `first` and those queued after it: what is waiting now, and what arrives within the
/// window, up to the batch limit.
async fn gather(waiting: &mut mpsc::Receiver<Job>, first: Job, limits: Limits) -> Vec<Job> {
    let mut jobs = vec![first];
    let until = tokio::time::Instant::now() + limits.window;
    while jobs.len() < limits.max_batch {
        match waiting.try_recv() {
            Ok(job) => jobs.push(job),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) if limits.window.is_zero() => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(until, waiting.recv()).await {
                    Ok(Some(job)) => jobs.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    jobs
}

/// Commits `jobs` as one group and answers each; on a failure, retries each alone.
async fn commit(pool: &PgPool, jobs: Vec<Job>, deadlines: &Deadlines) {
    // A request whose client went away (a timeout answered 503) must not be stored.
    let jobs: Vec<Job> = jobs
        .into_iter()
        .filter(|job| !job.reply.is_closed())
        .collect();
    let (jobs, answered) = without_repeated_keys(jobs);
    for job in answered {
        let _ = job.reply.send(Ok(Keyed::InFlight));
    }
    if jobs.is_empty() {
        return;
    }
    for job in &jobs {
        job.span.record("group.size", jobs.len() as i64);
    }
    let outcome = deadlines
        .write(async {
            let mut connection = Checkout::acquire(pool).await?;
            let outcome = async {
                let mut tx = connection.begin().await?;
                let outcome = write_group(&mut tx, &jobs).await;
                finish(tx, outcome, |_| true).await
            }
            .await;
            connection.reuse_if_ok(&outcome);
            outcome
        })
        .await;
    match outcome {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.reply.send(Ok(answer));
            }
        }
        // The database is out of reach: every request would meet the same outage.
        Err(StoreError::Unavailable(error)) if error.as_database_error().is_none() => {
            let message = error.to_string();
            for job in jobs {
                let error = sqlx::Error::Protocol(message.clone());
                let _ = job.reply.send(Err(StoreError::Unavailable(error)));
            }
        }
        Err(error) => {
            if jobs.len() > 1 {
                tracing::warn!(
                    error = %error,
                    appends = jobs.len(),
                    "a group of appends failed; each is retried alone"
                );
            }
            let retries = jobs.into_iter().map(|job| async move {
                let answer = deadlines
                    .write(async {
                        match &job.key {
                            Some(key) => append_keyed_alone(pool, &job.batch, key).await,
                            None => append_alone(pool, &job.batch).await.map(Keyed::Stored),
                        }
                    })
                    .await;
                let _ = job.reply.send(answer);
            });
            futures_util::future::join_all(retries).await;
        }
    }
}

/// Splits off the appends whose `Idempotency-Key` an earlier append of the group holds:
/// they run at the same time as the first, so they are in flight (409).
fn without_repeated_keys(jobs: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    let mut seen = std::collections::HashSet::new();
    jobs.into_iter().partition(|job| match &job.key {
        Some(key) => seen.insert((key.bot_id.clone(), key.key.clone())),
        None => true,
    })
}

/// Writes the group in `tx`; each job's answer, in order.
async fn write_group(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[Job],
) -> Result<Vec<Keyed>, StoreError> {
    let mut answers: Vec<Option<Keyed>> = vec![None; jobs.len()];
    take_keys(tx, jobs, &mut answers).await?;
    let appending: Vec<usize> = (0..jobs.len()).filter(|&i| answers[i].is_none()).collect();
    if appending.is_empty() {
        return Ok(answers.into_iter().flatten().collect());
    }
    create_conversations(tx, jobs, &appending).await?;
    for round in rounds(jobs, &appending) {
        let batches: Vec<&IngestBatch> = round.iter().map(|&i| &jobs[i].batch).collect();
        let plans = plan_round(tx, &batches).await?;
        let written = write_round(tx, &batches, &plans).await?;
        if written != batches.len() {
            return Err(anyhow::anyhow!("a locked conversation changed under a group").into());
        }
        for (&i, plan) in round.iter().zip(&plans) {
            answers[i] = Some(Keyed::Stored(Appended::of(plan)));
        }
    }
    save_keys(tx, jobs, &answers).await?;
    Ok(answers
        .into_iter()
        .map(|answer| answer.expect("every job is answered"))
        .collect())
}

/// Takes each job's key for this transaction, in one statement, then reads the earlier
/// uses of those it got, in another: a key held elsewhere is in flight; an earlier use is
/// the answer (replayed, or refused for another body).
async fn take_keys(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[Job],
    answers: &mut [Option<Keyed>],
) -> Result<(), StoreError> {
    let keyed: Vec<(usize, &KeyRecord)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, job)| job.key.as_ref().map(|key| (i, key)))
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    let taken: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(k.id)
         FROM UNNEST($1::bigint[]) WITH ORDINALITY AS k(id, n) ORDER BY k.n",
    )
    .bind(
        keyed
            .iter()
            .map(|(_, key)| sql::key_lock_id(key))
            .collect::<Vec<_>>(),
    )
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
    .bind(
        held.iter()
            .map(|(_, key)| key.bot_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        held.iter()
            .map(|(_, key)| key.key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        held.iter()
            .map(|(_, key)| key.expired_before)
            .collect::<Vec<_>>(),
    )
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
    jobs: &[Job],
    appending: &[usize],
) -> Result<(), StoreError> {
    let conversations: Vec<(&str, &str)> = appending
        .iter()
        .map(|&i| {
            let batch = &jobs[i].batch;
            (batch.bot_id.as_str(), batch.conversation_id.as_str())
        })
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
    .bind(
        conversations
            .iter()
            .map(|(bot, _)| *bot)
            .collect::<Vec<_>>(),
    )
    .bind(conversations.iter().map(|(_, id)| *id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The appends in rounds: each round holds at most one append per conversation, in key
/// order, and a conversation's appends come in arrival order, one round after another.
fn rounds(jobs: &[Job], appending: &[usize]) -> Vec<Vec<usize>> {
    let mut by_conversation: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for &i in appending {
        let batch = &jobs[i].batch;
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

/// Reads what each append of the round needs (as `postgres::load` does for one), in one
/// statement that also locks the round's conversations in its (key) order, and plans it.
async fn plan_round(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[&IngestBatch],
) -> Result<Vec<AppendPlan>, StoreError> {
    let mut rows = read_round(tx, batches).await?;
    // A conversation whose lock this statement waited for was read with its row as the
    // other transaction left it but the rest as before (PostgreSQL rechecks only the locked
    // row): read again, now that every lock is held, with a snapshot that sees it all.
    if rows
        .iter()
        .any(|row| row.seen_seq != Some(row.state.summary.last_seq))
    {
        rows = read_round(tx, batches).await?;
    }
    if rows.len() != batches.len() {
        return Err(anyhow::anyhow!("a group's conversations did not all read back").into());
    }
    rows.into_iter()
        .zip(batches)
        .map(|(row, batch)| {
            let (stored, received_at) = row.state.into_state()?;
            Ok(plan_append(
                stored,
                &batch.events,
                DbTime::truncated(received_at),
            ))
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

/// The statement of [`plan_round`], in the order of the round (`ORDER BY w.n`).
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
    .bind(
        batches
            .iter()
            .map(|batch| batch.bot_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        batches
            .iter()
            .map(|batch| batch.conversation_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        batches
            .iter()
            .map(|batch| Json(named_identities(batch)))
            .collect::<Vec<_>>(),
    )
    .bind(
        batches
            .iter()
            .map(|batch| present_needed(&batch.events))
            .collect::<Vec<_>>(),
    )
    .bind(
        batches
            .iter()
            .map(|batch| needs_interaction(&batch.events))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// The rows of a round's plans, column by column, each row with the number (from 1) of its
/// append in the round.
#[derive(Default)]
struct RoundRows<'a> {
    events: EventColumns<'a>,
    participants: ParticipantColumns<'a>,
    closed: StintColumns<'a>,
    opened: StintColumns<'a>,
    hops: HopColumns<'a>,
    changes: HopChangeColumns<'a>,
}

#[derive(Default)]
struct EventColumns<'a> {
    n: Vec<i64>,
    seq: Vec<i64>,
    name: Vec<&'a str>,
    transfer_type: Vec<Option<&'a str>>,
    transition: Vec<Option<&'a str>>,
    identity: Vec<Option<&'a str>>,
    participant: Vec<Option<Json<&'a crate::domain::Participant>>>,
    anomalies: Vec<Json<&'a [crate::domain::Anomaly]>>,
    transfer_data: Vec<Option<&'a str>>,
    payload: Vec<&'a str>,
    status_after: Vec<&'static str>,
}

#[derive(Default)]
struct ParticipantColumns<'a> {
    n: Vec<i64>,
    identity: Vec<&'a str>,
    position: Vec<i64>,
    name: Vec<&'a str>,
    kind: Vec<&'a str>,
    stint_count: Vec<i32>,
}

#[derive(Default)]
struct StintColumns<'a> {
    n: Vec<i64>,
    identity: Vec<&'a str>,
    ordinal: Vec<i32>,
    joined_at: Vec<time::OffsetDateTime>,
    left_at: Vec<Option<time::OffsetDateTime>>,
    entry_type: Vec<&'static str>,
    exit_type: Vec<Option<&'static str>>,
    position: Vec<i64>,
}

#[derive(Default)]
struct HopColumns<'a> {
    n: Vec<i64>,
    ordinal: Vec<i64>,
    seq: Vec<i64>,
    at: Vec<time::OffsetDateTime>,
    kind: Vec<&'static str>,
    from: Vec<Option<&'a str>>,
    to: Vec<Option<&'a str>>,
    outcome: Vec<&'static str>,
    reason: Vec<Option<&'a str>>,
    targets: Vec<Option<Json<&'a Vec<serde_json::Value>>>>,
}

#[derive(Default)]
struct HopChangeColumns<'a> {
    n: Vec<i64>,
    ordinal: Vec<i64>,
    outcome: Vec<Option<&'static str>>,
    to: Vec<Option<&'a str>>,
    reason: Vec<Option<&'a str>>,
}

impl<'a> StintColumns<'a> {
    fn push(&mut self, n: i64, rows: &'a [crate::domain::StintRow]) {
        for (row, exit_type) in rows.iter().zip(exit_types(rows)) {
            self.n.push(n);
            self.identity.push(&row.identity);
            self.ordinal.push(row.ordinal);
            self.joined_at.push(row.stint.joined_at);
            self.left_at.push(row.stint.left_at);
            self.entry_type.push(row.stint.entry_type.as_str());
            self.exit_type.push(exit_type);
            self.position.push(row.position);
        }
    }
}

impl<'a> RoundRows<'a> {
    fn of(batches: &[&'a IngestBatch], plans: &'a [AppendPlan]) -> Self {
        let mut rows = Self::default();
        for (n, (batch, plan)) in (1..).zip(batches.iter().zip(plans)) {
            let events = &batch.events;
            let seqs = plan.first_seq..;
            for (((seq, event), anomalies), status) in
                seqs.zip(events).zip(&plan.anomalies).zip(&plan.statuses)
            {
                let columns = &mut rows.events;
                columns.n.push(n);
                columns.seq.push(seq);
                columns.name.push(event.name().as_str());
                columns
                    .transfer_type
                    .push(event.transfer_type().map(|kind| kind.as_str()));
                columns
                    .transition
                    .push(event.transition().map(|transition| transition.as_str()));
                columns.identity.push(
                    event
                        .participant()
                        .map(|participant| participant.identity.as_str()),
                );
                columns.participant.push(event.participant().map(Json));
                columns.anomalies.push(Json(&anomalies[..]));
                columns
                    .transfer_data
                    .push(event.transfer_data.as_ref().map(|data| data.get()));
                columns.payload.push(event.payload.get());
                columns.status_after.push(status.as_str());
            }
            for row in &plan.participants {
                let columns = &mut rows.participants;
                columns.n.push(n);
                columns.identity.push(&row.identity);
                columns.position.push(row.position);
                columns.name.push(&row.name);
                columns.kind.push(&row.kind);
                columns.stint_count.push(row.stint_count);
            }
            rows.closed.push(n, &plan.closed);
            rows.opened.push(n, &plan.opened);
            for hop in &plan.hops {
                let columns = &mut rows.hops;
                columns.n.push(n);
                columns.ordinal.push(hop.ordinal);
                columns.seq.push(hop.seq);
                columns.at.push(hop.at);
                columns.kind.push(hop.kind.as_str());
                columns.from.push(hop.from.as_deref());
                columns.to.push(hop.to.as_deref());
                columns.outcome.push(hop.outcome.as_str());
                columns.reason.push(hop.reason.as_deref());
                columns.targets.push(hop.targets.as_ref().map(Json));
            }
            for change in &plan.hop_changes {
                let columns = &mut rows.changes;
                columns.n.push(n);
                columns.ordinal.push(change.ordinal);
                columns
                    .outcome
                    .push(change.outcome.map(|outcome| outcome.as_str()));
                columns.to.push(change.to.as_deref());
                columns.reason.push(change.reason.as_deref());
            }
        }
        rows
    }
}

/// Writes a round's plans in one statement, as `postgres::write` does for one append: each
/// conversation's row if its `last_seq` is still the planned one (it is: it is locked),
/// then the events, participants, stints and hops of those written. How many were.
async fn write_round(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[&IngestBatch],
    plans: &[AppendPlan],
) -> Result<usize, StoreError> {
    let rows = RoundRows::of(batches, plans);
    let summaries = plans.iter().map(|plan| &plan.summary);
    let written: Vec<i64> = sqlx::query_scalar(WRITE_ROUND)
        .bind((1..=plans.len() as i64).collect::<Vec<_>>())
        .bind(
            batches
                .iter()
                .map(|batch| batch.bot_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            batches
                .iter()
                .map(|batch| batch.conversation_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            plans
                .iter()
                .map(|plan| plan.expected_seq)
                .collect::<Vec<_>>(),
        )
        .bind(plans.iter().map(AppendPlan::last_seq).collect::<Vec<_>>())
        .bind(
            summaries
                .clone()
                .map(|summary| summary.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.experience.map(|experience| experience.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.language.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            plans
                .iter()
                .map(|plan| plan.summary.started_at.unwrap_or(plan.received_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.ended_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            plans
                .iter()
                .map(|plan| plan.summary.last_event_at.unwrap_or(plan.received_at))
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.event_count)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.anomaly_count)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.transfers.cold)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.transfers.warm)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.transfers.redial)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.present_count)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.participant_count)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.experience_from_events)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.transfers.escalated)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.transfers.failed)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.hop_count)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.last_emptied_by.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| Json(&summary.pending_escalations))
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.awaiting_agent)
                .collect::<Vec<_>>(),
        )
        .bind(
            summaries
                .clone()
                .map(|summary| summary.service.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            plans
                .iter()
                .map(|plan| plan.interaction.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(
            plans
                .iter()
                .map(|plan| plan.received_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            plans
                .iter()
                .map(|plan| plan.end_open_stints_at)
                .collect::<Vec<_>>(),
        )
        .bind(plans.iter().map(|plan| plan.first_seq).collect::<Vec<_>>())
        .bind(&rows.events.n)
        .bind(&rows.events.seq)
        .bind(&rows.events.name)
        .bind(&rows.events.transfer_type)
        .bind(&rows.events.transition)
        .bind(&rows.events.identity)
        .bind(&rows.events.participant)
        .bind(&rows.events.anomalies)
        .bind(&rows.events.transfer_data)
        .bind(&rows.events.payload)
        .bind(&rows.events.status_after)
        .bind(&rows.participants.n)
        .bind(&rows.participants.identity)
        .bind(&rows.participants.position)
        .bind(&rows.participants.name)
        .bind(&rows.participants.kind)
        .bind(&rows.participants.stint_count)
        .bind(&rows.closed.n)
        .bind(&rows.closed.identity)
        .bind(&rows.closed.ordinal)
        .bind(&rows.closed.left_at)
        .bind(&rows.closed.exit_type)
        .bind(&rows.opened.n)
        .bind(&rows.opened.identity)
        .bind(&rows.opened.ordinal)
        .bind(&rows.opened.joined_at)
        .bind(&rows.opened.left_at)
        .bind(&rows.opened.entry_type)
        .bind(&rows.opened.exit_type)
        .bind(&rows.opened.position)
        .bind(&rows.hops.n)
        .bind(&rows.hops.ordinal)
        .bind(&rows.hops.seq)
        .bind(&rows.hops.at)
        .bind(&rows.hops.kind)
        .bind(&rows.hops.from)
        .bind(&rows.hops.to)
        .bind(&rows.hops.outcome)
        .bind(&rows.hops.reason)
        .bind(&rows.hops.targets)
        .bind(&rows.changes.n)
        .bind(&rows.changes.ordinal)
        .bind(&rows.changes.outcome)
        .bind(&rows.changes.to)
        .bind(&rows.changes.reason)
        .fetch_all(&mut **tx)
        .await?;
    Ok(written.len())
}

/// The statement of [`write_round`]: `$1`–`$30` the conversations, `$31`–`$41` the events,
/// `$42`–`$47` the participants, `$48`–`$52` the stints closed, `$53`–`$60` those opened,
/// `$61`–`$70` the hops, `$71`–`$75` the hops changed. Each event carries its feed
/// transaction as in `postgres::write`.
const WRITE_ROUND: &str = "WITH conversation AS (
    UPDATE conversations AS c SET
        (last_seq, status, experience, language, started_at, ended_at, last_event_at,
         event_count, anomaly_count, cold_transfers, warm_transfers, redial_transfers,
         present_count, participant_count, experience_from_events, escalated_transfers,
         failed_transfers, hop_count, last_emptied_by, pending_escalations,
         awaiting_agent, service, interaction)
      = (x.last_seq, x.status, x.experience, x.language, x.started_at, x.ended_at,
         x.last_event_at, x.event_count, x.anomaly_count, x.cold, x.warm, x.redial,
         x.present_count, x.participant_count, x.experience_from_events, x.escalated,
         x.failed, x.hop_count, x.last_emptied_by, x.pending_escalations, x.awaiting_agent,
         x.service, COALESCE(x.interaction, c.interaction))
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[],
                $11::timestamptz[], $12::bigint[], $13::bigint[], $14::bigint[],
                $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bool[],
                $20::bigint[], $21::bigint[], $22::bigint[], $23::text[], $24::jsonb[],
                $25::bigint[], $26::text[], $27::jsonb[], $28::timestamptz[],
                $29::timestamptz[], $30::bigint[])
        AS x(n, bot_id, conversation_id, expected, last_seq, status, experience, language,
             started_at, ended_at, last_event_at, event_count, anomaly_count, cold, warm,
             redial, present_count, participant_count, experience_from_events, escalated,
             failed, hop_count, last_emptied_by, pending_escalations, awaiting_agent,
             service, interaction, received_at, end_open_stints_at, first_seq)
    WHERE c.bot_id = x.bot_id AND c.conversation_id = x.conversation_id
        AND c.last_seq = x.expected
    RETURNING x.n, x.bot_id, x.conversation_id, x.received_at, x.end_open_stints_at,
              x.first_seq
), new_events AS (
    INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
        transition, participant_identity, participant, anomalies, transfer_data, payload,
        status_after, feed_txn)
    SELECT w.bot_id, w.conversation_id, e.seq, w.received_at, e.name, e.transfer_type,
           e.transition, e.identity, e.participant, e.anomalies, e.transfer_data::json,
           e.payload::json, e.status_after,
           GREATEST((pg_current_xact_id()::text)::bigint, COALESCE(
               (SELECT previous.feed_txn FROM events previous
                WHERE previous.bot_id = w.bot_id AND previous.conversation_id = w.conversation_id
                    AND previous.seq = w.first_seq - 1),
               (SELECT max(erased.feed_txn) + 1 FROM erasures erased
                WHERE erased.bot_id = w.bot_id AND erased.conversation_id = w.conversation_id),
               0))
    FROM UNNEST($31::bigint[], $32::bigint[], $33::text[], $34::text[], $35::text[],
                $36::text[], $37::jsonb[], $38::jsonb[], $39::text[], $40::text[],
                $41::text[])
        AS e(n, seq, name, transfer_type, transition, identity, participant, anomalies,
             transfer_data, payload, status_after)
    JOIN conversation w ON w.n = e.n
), participant_rows AS (
    INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind,
        stint_count)
    SELECT w.bot_id, w.conversation_id, p.identity, p.position, p.name, p.kind, p.stint_count
    FROM UNNEST($42::bigint[], $43::text[], $44::bigint[], $45::text[], $46::text[],
                $47::integer[])
        AS p(n, identity, position, name, kind, stint_count)
    JOIN conversation w ON w.n = p.n
    ON CONFLICT (bot_id, conversation_id, identity) DO UPDATE SET
        name = EXCLUDED.name, kind = EXCLUDED.kind, stint_count = EXCLUDED.stint_count
), closing_rows AS (
    SELECT * FROM UNNEST($48::bigint[], $49::text[], $50::integer[], $51::timestamptz[],
                         $52::text[])
        AS x(n, identity, ordinal, left_at, exit_type)
), closing AS (
    SELECT found.row_id, x.left_at, x.exit_type
    FROM closing_rows x
    JOIN conversation w ON w.n = x.n
    CROSS JOIN LATERAL (
        SELECT s.ctid AS row_id FROM stints s
        WHERE s.bot_id = w.bot_id AND s.conversation_id = w.conversation_id
            AND s.identity = x.identity AND s.ordinal = x.ordinal
        LIMIT 1) found
), closed_stints AS (
    UPDATE stints s SET left_at = closing.left_at, exit_type = closing.exit_type
    FROM closing WHERE s.ctid = closing.row_id
), ended_stints AS (
    UPDATE stints s SET left_at = w.end_open_stints_at, exit_type = 'END'
    FROM conversation w
    WHERE w.end_open_stints_at IS NOT NULL AND s.bot_id = w.bot_id
        AND s.conversation_id = w.conversation_id AND s.left_at IS NULL
        AND NOT EXISTS (SELECT 1 FROM closing_rows x
                        WHERE x.n = w.n AND x.identity = s.identity)
), opened_stints AS (
    INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
        entry_type, exit_type, position)
    SELECT w.bot_id, w.conversation_id, o.identity, o.ordinal, o.joined_at, o.left_at,
           o.entry_type, o.exit_type, o.position
    FROM UNNEST($53::bigint[], $54::text[], $55::integer[], $56::timestamptz[],
                $57::timestamptz[], $58::text[], $59::text[], $60::bigint[])
        AS o(n, identity, ordinal, joined_at, left_at, entry_type, exit_type, position)
    JOIN conversation w ON w.n = o.n
), new_hops AS (
    INSERT INTO hops (bot_id, conversation_id, ordinal, seq, at, kind, from_identity,
        to_identity, outcome, reason, targets)
    SELECT w.bot_id, w.conversation_id, h.ordinal, h.seq, h.at, h.kind, h.from_identity,
           h.to_identity, h.outcome, h.reason, h.targets
    FROM UNNEST($61::bigint[], $62::bigint[], $63::bigint[], $64::timestamptz[],
                $65::text[], $66::text[], $67::text[], $68::text[], $69::text[],
                $70::jsonb[])
        AS h(n, ordinal, seq, at, kind, from_identity, to_identity, outcome, reason,
             targets)
    JOIN conversation w ON w.n = h.n
), changing AS (
    SELECT found.row_id, x.outcome, x.to_identity, x.reason
    FROM UNNEST($71::bigint[], $72::bigint[], $73::text[], $74::text[], $75::text[])
        AS x(n, ordinal, outcome, to_identity, reason)
    JOIN conversation w ON w.n = x.n
    CROSS JOIN LATERAL (
        SELECT h.ctid AS row_id FROM hops h
        WHERE h.bot_id = w.bot_id AND h.conversation_id = w.conversation_id
            AND h.ordinal = x.ordinal
        LIMIT 1) found
), changed_hops AS (
    UPDATE hops h SET outcome = COALESCE(changing.outcome, h.outcome),
        to_identity = COALESCE(changing.to_identity, h.to_identity),
        reason = COALESCE(changing.reason, h.reason)
    FROM changing WHERE h.ctid = changing.row_id
)
SELECT n FROM conversation";

/// Saves the outcome of every keyed append the group stored, in one statement.
async fn save_keys(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[Job],
    answers: &[Option<Keyed>],
) -> Result<(), StoreError> {
    let stored: Vec<(&KeyRecord, &IngestBatch, &Appended)> = jobs
        .iter()
        .zip(answers)
        .filter_map(|(job, answer)| match (&job.key, answer) {
            (Some(key), Some(Keyed::Stored(appended))) => Some((key, &job.batch, appended)),
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
    .bind(
        stored
            .iter()
            .map(|(key, ..)| key.bot_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        stored
            .iter()
            .map(|(key, ..)| key.key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        stored
            .iter()
            .map(|(key, ..)| key.fingerprint.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(stored.iter().map(|(key, ..)| key.now).collect::<Vec<_>>())
    .bind(
        stored
            .iter()
            .map(|(_, batch, _)| batch.conversation_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        stored
            .iter()
            .map(|(_, batch, _)| batch.events.len() as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        stored
            .iter()
            .map(|(.., appended)| appended.first_seq)
            .collect::<Vec<_>>(),
    )
    .bind(
        stored
            .iter()
            .map(|(.., appended)| appended.last_seq)
            .collect::<Vec<_>>(),
    )
    .bind(
        stored
            .iter()
            .map(|(.., appended)| appended.status.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::tests::{batch, transfer};
    use crate::store::postgres::{MIGRATOR, PgStore, append_locked};
    use serde_json::json;

    /// Another transaction holds the conversation and changes who is present while a group
    /// waits for it: the group must plan from what that transaction left, not from what its
    /// statement's snapshot saw before the wait (PostgreSQL rechecks only the locked row).
    #[sqlx::test(migrator = "MIGRATOR")]
    async fn a_group_that_waited_for_a_conversation_plans_from_what_it_was_left(pool: PgPool) {
        PgStore::from_pool(pool.clone())
            .append(&batch(json!([transfer("NA", "entry", "a1")])))
            .await
            .unwrap();
        // Holds the conversation (a lock only: a group's insert of it does not wait for that)
        // and changes it only once the group waits for it.
        let mut other = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM conversations WHERE conversation_id = 'c-race' FOR UPDATE")
            .execute(&mut *other)
            .await
            .unwrap();
        let settings = GroupCommitSettings {
            enabled: true,
            writers: 1,
            max_batch: 1,
            window_us: 0,
        };
        let group = GroupCommit::start(&pool, &settings, &Deadlines::new(&Default::default()))
            .expect("group commit is on");
        let waiting = tokio::spawn(async move {
            group
                .submit(batch(json!([transfer("COLD", "entry", "a1")])), None)
                .await
        });
        wait_until_a_session_waits_for_a_lock(&pool).await;

        append_locked(&mut other, &batch(json!([transfer("COLD", "exit", "a1")])))
            .await
            .unwrap();
        other.commit().await.unwrap();
        let appended = match waiting.await.unwrap().unwrap() {
            Keyed::Stored(appended) => appended,
            other => panic!("stored expected, got {other:?}"),
        };

        assert_eq!((appended.first_seq, appended.last_seq), (3, 3));
        assert!(
            appended.anomalies.is_empty(),
            "a1 had left: entering again is no duplicate_entry ({:?})",
            appended.anomalies
        );
        let stints: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT ordinal, left_at IS NULL FROM stints
             WHERE conversation_id = 'c-race' AND identity = 'a1' ORDER BY ordinal",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(stints, [(0, false), (1, true)], "a second stint, open");
    }

    /// Polls `pg_stat_activity` (an event to wait on, not a fixed sleep) until a session
    /// waits for a lock.
    async fn wait_until_a_session_waits_for_a_lock(pool: &PgPool) {
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
                "the group never waited for the conversation"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
