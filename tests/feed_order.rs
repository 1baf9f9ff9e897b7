//! SPEC 8's guarantee under concurrency: two replicas (two apps, two pools, one
//! PostgreSQL database), 16 concurrent writers and a writer whose transaction stays open
//! while later ones commit, with a reader paging the feed from the start as fast as it can.
//! The reader sees every stored event exactly once, each conversation's in seq order; a
//! naive reader that continues "after the largest position it saw" loses the late
//! writer's events.
//!
//! A test binary of its own (not in `tests/api`): the feed waits for the oldest transaction
//! running anywhere in the cluster, and this test holds one open on purpose, which would
//! hold back the feed of every test running beside it.

#[allow(dead_code)]
#[path = "api/common.rs"]
mod common;

use crate::common::{
    BOT, Backend, TestApp, batch, hooks_request, ingest_token, read_token, transfer,
};
use sqlx::{Connection, PgPool};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

const WRITERS: usize = 16;
const BATCHES_PER_WRITER: usize = 12;
const PAGE: usize = 7;
const HELD_CONVERSATION: &str = "c-held";
const HELD_KEY: &str = "held-key";

type Key = (String, i64);

#[sqlx::test(migrations = "migrations/postgres")]
async fn a_reader_sees_every_event_once_in_order_while_replicas_commit_out_of_order(pool: PgPool) {
    let backend = Backend::Postgres(pool.clone());
    let replicas = Arc::new([backend.app().await, backend.app().await]);

    // The late writer: an ingest with an Idempotency-Key whose events are written, and whose
    // transaction then waits for a key row this test holds locked (an expired use of the key).
    sqlx::query(
        "INSERT INTO idempotency_keys (bot_id, key, fingerprint, created_at, conversation_id,
             accepted, first_seq, last_seq, conversation_status)
         VALUES ($1, $2, 'old', now() - interval '30 days', 'c-old', 1, 1, 1, 'active')",
    )
    .bind(BOT)
    .bind(HELD_KEY)
    .execute(&pool)
    .await
    .unwrap();
    let mut holder = pool.acquire().await.unwrap();
    let mut hold = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM idempotency_keys WHERE bot_id = $1 AND key = $2 FOR UPDATE")
        .bind(BOT)
        .bind(HELD_KEY)
        .execute(&mut *hold)
        .await
        .unwrap();
    let late_writer = tokio::spawn({
        let replicas = replicas.clone();
        async move {
            let events = ["a1", "a2", "a3"]
                .map(|agent| transfer("NA", "entry", agent))
                .to_vec();
            let mut request = hooks_request(
                BOT,
                &ingest_token(),
                batch(HELD_CONVERSATION, events).to_string(),
            );
            request
                .headers_mut()
                .insert("idempotency-key", HELD_KEY.parse().unwrap());
            replicas[0].send(request).await
        }
    });
    wait_until_a_session_waits_for_a_lock(&pool).await;

    let finished = Arc::new(AtomicBool::new(false));
    let target = Arc::new(AtomicI64::new(-1));
    let reader = tokio::spawn(read_feed_over_http(replicas.clone(), target.clone()));
    let naive = tokio::spawn(read_feed_naively(pool.clone(), finished.clone()));

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| tokio::spawn(write(replicas.clone(), writer)))
        .collect();
    let mut written_by_writers = 0;
    for writer in writers {
        written_by_writers += writer.await.unwrap();
    }
    // Everything but the late writer's events is committed; the naive reader passes them.
    wait_for_naive_reader_to_pass_every_commit(&pool).await;
    assert_eq!(
        READ_SO_FAR.load(Ordering::Acquire),
        0,
        "the feed lists nothing a running transaction could still precede"
    );

    hold.commit().await.unwrap();
    let late = late_writer.await.unwrap();
    assert_eq!(late.status, 200, "{}", late.body);
    let after_release = replicas[1]
        .post_events(BOT, &batch("c-after", vec![transfer("NA", "entry", "z")]))
        .await;
    assert_eq!(after_release.status, 200);

    let stored = stored_keys(&pool).await;
    target.store(stored.len() as i64, Ordering::Release);
    let read = reader.await.unwrap();
    finished.store(true, Ordering::Release);
    let naively_read = naive.await.unwrap();

    assert_eq!(stored.len(), written_by_writers as usize + 3 + 1);
    check(&read, &stored).expect("the feed");
    let naive_failure = check(&naively_read, &stored).expect_err("a naive feed loses events");
    println!("naive reader: {naive_failure}");
    let missed: BTreeSet<&Key> = stored
        .iter()
        .filter(|key| !naively_read.contains(key))
        .collect();
    let late_events: BTreeSet<Key> = (1..=3)
        .map(|seq| (HELD_CONVERSATION.to_owned(), seq))
        .collect();
    assert!(
        late_events.iter().all(|key| missed.contains(key)),
        "the naive reader misses the late writer's events: {missed:?}"
    );
    println!(
        "the naive reader missed {} events, {} of them other than the late writer's",
        missed.len(),
        missed.len() - late_events.len()
    );
}

/// Every stored event exactly once, each conversation's in seq order.
fn check(read: &[Key], stored: &BTreeSet<Key>) -> Result<(), String> {
    let distinct: BTreeSet<&Key> = read.iter().collect();
    if distinct.len() != read.len() {
        return Err(format!(
            "{} items read more than once",
            read.len() - distinct.len()
        ));
    }
    let missing: Vec<&Key> = stored
        .iter()
        .filter(|key| !distinct.contains(key))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} stored events never read: {missing:?}",
            missing.len()
        ));
    }
    if distinct.len() != stored.len() {
        return Err("events read that are not stored".to_owned());
    }
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (conversation, seq) in read {
        let previous = last.insert(conversation, *seq).unwrap_or(0);
        if *seq != previous + 1 {
            return Err(format!("{conversation}: seq {seq} read after {previous}"));
        }
    }
    Ok(())
}

/// One writer: batches of one or two events to a conversation it shares with another
/// writer, through either replica in turn. How many events it stored.
async fn write(replicas: Arc<[TestApp; 2]>, writer: usize) -> i64 {
    let conversation = format!("c-{}", writer % (WRITERS / 2));
    let mut stored = 0;
    for round in 0..BATCHES_PER_WRITER {
        let events: Vec<_> = (0..=round % 2)
            .map(|index| transfer("COLD", "entry", &format!("w{writer}-{round}-{index}")))
            .collect();
        let response = replicas[round % 2]
            .post_events(BOT, &batch(&conversation, events))
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
        stored += response.body["accepted"].as_i64().unwrap();
    }
    stored
}

/// Pages the feed through replica B from the start, as fast as it can, until it has read
/// `target` items (set once every write is done).
async fn read_feed_over_http(replicas: Arc<[TestApp; 2]>, target: Arc<AtomicI64>) -> Vec<Key> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut read = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/api/v1/bots/{BOT}/changes?after={after}&limit={PAGE}"),
            None => format!("/api/v1/bots/{BOT}/changes?limit={PAGE}"),
        };
        let page = replicas[1].get(&path, &read_token()).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        for item in items {
            read.push((
                item["conversationId"].as_str().unwrap().to_owned(),
                item["seq"].as_i64().unwrap(),
            ));
        }
        after = page.body["nextAfter"].as_str().map(str::to_owned);
        READ_SO_FAR.store(read.len() as i64, Ordering::Release);
        if items.is_empty() {
            let target = target.load(Ordering::Acquire);
            if target >= 0 && read.len() as i64 >= target {
                return read;
            }
            assert!(
                Instant::now() < deadline,
                "the reader never caught up: {}",
                read.len()
            );
            tokio::task::yield_now().await;
        }
    }
}

/// How many items the reader over HTTP has read.
static READ_SO_FAR: AtomicI64 = AtomicI64::new(0);

/// What a naive feed does: continue after the largest position seen, with no regard for
/// transactions still running. Reads until `finished` and one more pass finds nothing.
async fn read_feed_naively(pool: PgPool, finished: Arc<AtomicBool>) -> Vec<Key> {
    let mut read: Vec<Key> = Vec::new();
    let mut after: (i64, String, i64) = (-1, String::new(), 0);
    loop {
        let done = finished.load(Ordering::Acquire);
        let page: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT feed_txn, conversation_id, seq FROM events
             WHERE bot_id = $1 AND (feed_txn, conversation_id, seq) > ($2, $3, $4)
             ORDER BY feed_txn, conversation_id, seq LIMIT $5",
        )
        .bind(BOT)
        .bind(after.0)
        .bind(&after.1)
        .bind(after.2)
        .bind(PAGE as i64)
        .fetch_all(&pool)
        .await
        .unwrap();
        if let Some(last) = page.last() {
            after = last.clone();
        }
        NAIVE_POSITION.store(after.0, Ordering::Release);
        let empty = page.is_empty();
        read.extend(
            page.into_iter()
                .map(|(_, conversation, seq)| (conversation, seq)),
        );
        if empty {
            if done {
                return read;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The `feed_txn` of the last event the naive reader has read.
static NAIVE_POSITION: AtomicI64 = AtomicI64::new(-1);

/// Waits until the naive reader has read up to the last committed transaction.
async fn wait_for_naive_reader_to_pass_every_commit(pool: &PgPool) {
    let last_committed: i64 = sqlx::query_scalar("SELECT max(feed_txn) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while NAIVE_POSITION.load(Ordering::Acquire) < last_committed {
        assert!(
            Instant::now() < deadline,
            "the naive reader never reads the writers' events"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_until_a_session_waits_for_a_lock(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(30);
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
            Instant::now() < deadline,
            "the late writer never waits for the key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stored_keys(pool: &PgPool) -> BTreeSet<Key> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT conversation_id, seq FROM events WHERE bot_id = $1")
            .bind(BOT)
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}
