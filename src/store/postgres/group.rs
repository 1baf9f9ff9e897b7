//! Group commit: the appends waiting when a writer is free share one transaction (see
//! [`super::append`]), and each request is answered when that transaction commits. A
//! transaction and a statement cost PostgreSQL about as much for one event as for sixty, so
//! the appends that arrive together are much cheaper. If the group fails, each request is
//! retried alone, answered on its own merits: one request cannot fail the others.

use super::Deadlines;
use super::append::{Request, append_alone, append_together};
use crate::config::GroupCommitSettings;
use crate::domain::IngestBatch;
use crate::store::{KeyRecord, Keyed, StoreError};
use sqlx::PgPool;
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

impl Job {
    fn request(&self) -> Request<'_> {
        Request {
            batch: &self.batch,
            key: self.key.as_ref(),
        }
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
    let requests: Vec<Request> = jobs.iter().map(Job::request).collect();
    let outcome = deadlines.write(append_together(pool, &requests)).await;
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
                let answer = deadlines.write(append_alone(pool, job.request())).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::append::tests::{
        batch, transfer, wait_until_a_session_waits_for_a_lock, write_alone,
    };
    use crate::store::postgres::{MIGRATOR, PgStore};
    use serde_json::json;
    use sqlx::PgPool;

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

        write_alone(&mut other, &batch(json!([transfer("COLD", "exit", "a1")]))).await;
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
}
