//! Retention (SPEC 10): conversations with nobody present and no event for longer than
//! `retention.ended_days` are deleted whole, by every replica at once without deleting
//! anything twice, while ingest to other conversations goes on.

use crate::common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

on_both_backends!(
    only_conversations_past_the_limit_with_nobody_present_are_purged,
    two_replicas_purging_at_once_delete_each_conversation_exactly_once,
    ingest_to_other_conversations_keeps_answering_during_a_purge_of_100_000_rows,
);

const DAYS: i64 = 30;

fn limit() -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::days(DAYS)
}

/// An ended conversation: an agent in, then out (NA), `events` events in all (at least 2).
async fn ended(app: &TestApp, conversation: &str, events: usize) {
    let mut batch = vec![transfer("NA", "entry", "agent-r1")];
    for _ in 2..events {
        batch.push(serde_json::json!({ "name": "TRIGGER_SUMMARY_EVENT" }));
    }
    batch.push(transfer("NA", "exit", "agent-r1"));
    post(app, conversation, batch).await;
}

async fn status(app: &TestApp, conversation: &str) -> u16 {
    app.get(
        &format!("/api/v1/bots/{BOT}/conversations/{conversation}"),
        &read_token(),
    )
    .await
    .status
    .as_u16()
}

async fn only_conversations_past_the_limit_with_nobody_present_are_purged(backend: Backend) {
    let app = backend.app().await;
    ended(&app, "c-ended-old", 3).await;
    post(
        &app,
        "c-idle-old",
        vec![
            transfer("NA", "entry", "agent-r1"),
            transfer("COLD", "exit", "agent-r1"),
        ],
    )
    .await;
    post(
        &app,
        "c-active-old",
        vec![transfer("NA", "entry", "agent-r2")],
    )
    .await;
    ended(&app, "c-ended-recent", 2).await;
    ended(&app, "c-ended-just-inside", 2).await;
    for conversation in ["c-ended-old", "c-idle-old", "c-active-old"] {
        app.backdate(conversation, DAYS + 1).await;
    }
    app.backdate("c-ended-just-inside", DAYS - 1).await;

    let expired = app.store.expired(limit()).await.unwrap();
    assert_eq!(
        (expired.conversations, expired.events),
        (2, 5),
        "the dry run's count"
    );
    assert_eq!(
        status(&app, "c-ended-old").await,
        200,
        "a dry run deletes nothing"
    );

    let purged = app.store.purge_expired(limit()).await.unwrap();

    assert_eq!(purged, 2);
    for (conversation, kept) in [
        ("c-ended-old", false),
        ("c-idle-old", false),
        ("c-active-old", true),
        ("c-ended-recent", true),
        ("c-ended-just-inside", true),
    ] {
        let expected = if kept { 200 } else { 404 };
        assert_eq!(status(&app, conversation).await, expected, "{conversation}");
    }
    assert_eq!(
        app.event_count().await,
        1 + 2 + 2,
        "the purged ones' events went too"
    );
    assert_eq!(
        app.store.purge_expired(limit()).await.unwrap(),
        0,
        "idempotent"
    );
}

async fn two_replicas_purging_at_once_delete_each_conversation_exactly_once(backend: Backend) {
    let first = backend.app().await;
    let second = backend.app().await;
    let mut expected = BTreeSet::new();
    for n in 0..300 {
        let conversation = format!("c-{n:03}");
        ended(&first, &conversation, 2).await;
        first.backdate(&conversation, DAYS + 1).await;
        expected.insert(conversation);
    }

    let (by_first, by_second) = tokio::join!(purge_all(&first), purge_all(&second));

    let both: BTreeSet<_> = by_first.intersection(&by_second).collect();
    assert!(both.is_empty(), "deleted by both replicas: {both:?}");
    let all: BTreeSet<String> = by_first.union(&by_second).cloned().collect();
    assert_eq!(all, expected, "every expired conversation deleted");
    assert_eq!(first.conversation_count().await, 0);
    assert_eq!(first.event_count().await, 0);
    eprintln!(
        "{}: the first replica deleted {}, the second {}",
        backend.name(),
        by_first.len(),
        by_second.len()
    );
}

/// Purges batch by batch until nothing is left; the ids this replica deleted.
async fn purge_all(app: &TestApp) -> BTreeSet<String> {
    let mut purged = BTreeSet::new();
    loop {
        let batch = app.store.purge_batch(limit()).await.unwrap();
        if batch.is_empty() && app.store.expired(limit()).await.unwrap().conversations == 0 {
            return purged;
        }
        for candidate in batch {
            assert!(purged.insert(candidate.conversation_id), "deleted twice");
        }
        tokio::task::yield_now().await;
    }
}

async fn ingest_to_other_conversations_keeps_answering_during_a_purge_of_100_000_rows(
    backend: Backend,
) {
    let app = backend.app().await;
    ended(&app, "c-template", 10).await;
    // 10,000 expired conversations of 10 events each, copied from one stored through the
    // service: 100,000 event rows (and their stints and participants) to purge.
    seed_copies(&app, 10_000).await;
    app.backdate("c-template", DAYS + 1).await;
    assert_eq!(app.event_count().await, 100_010);

    let purging = tokio::spawn({
        let store = app.store.clone();
        async move { store.purge_expired(limit()).await.unwrap() }
    });
    let mut latencies = Vec::new();
    let mut n = 0;
    while !purging.is_finished() {
        n += 1;
        let started = Instant::now();
        post(
            &app,
            &format!("c-live-{}", n % 50),
            vec![transfer("NA", "entry", &format!("agent-{n}"))],
        )
        .await;
        latencies.push(started.elapsed());
    }
    let purged = purging.await.unwrap();

    assert_eq!(purged, 10_001);
    assert!(
        !latencies.is_empty(),
        "ingest ran while the purge did ({n} requests)"
    );
    assert_eq!(app.event_count().await, latencies.len() as i64);
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    let max = latencies.last().copied().unwrap_or(Duration::ZERO);
    eprintln!(
        "{}: {} appends answered during the purge of 100,010 events: p99 {p99:?}, max {max:?}",
        backend.name(),
        latencies.len()
    );
}

/// Copies the conversation `c-template` of BOT `copies` times (ids `c-copy-N`) with its
/// events, participants and stints, in SQL.
async fn seed_copies(app: &TestApp, copies: i64) {
    for table in ["conversations", "events", "participants", "stints"] {
        let columns = app.columns(table).await;
        let list = columns.join(", ");
        let select = columns
            .iter()
            .map(|column| {
                if column == "conversation_id" {
                    "'c-copy-' || n".to_owned()
                } else {
                    column.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        app.execute(&format!(
            "WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers
                                           WHERE n < {copies})
             INSERT INTO {table} ({list})
             SELECT {select} FROM {table}, numbers
             WHERE bot_id = '{BOT}' AND conversation_id = 'c-template'"
        ))
        .await;
    }
    app.backdate("c-copy-%", DAYS + 1).await;
}

#[tokio::test]
async fn purge_dry_run_shows_what_would_go_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooks.db");
    let store = agentassist_hooks::store::SqliteStore::open_file(&file, &Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let app = TestApp::over_sqlite(store);
    ended(&app, "c-old", 3).await;
    ended(&app, "c-new", 2).await;
    app.backdate("c-old", DAYS + 1).await;
    let purge = |dry_run: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentassist-hooks"));
        command
            .args(["purge", "--ended-days", "30"])
            .env("DATABASE_URL", format!("sqlite://{}", file.display()))
            .env_remove("AGENTASSIST_HOOKS_CONFIG");
        if dry_run {
            command.arg("--dry-run");
        }
        let output = command.output().expect("the binary runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };

    let shown = purge(true);

    assert!(
        shown.starts_with("dry run: 1 conversation(s) with 3 event(s)"),
        "{shown}"
    );
    assert_eq!(status(&app, "c-old").await, 200, "still there");

    let done = purge(false);

    assert!(done.starts_with("deleted 1 conversation(s)"), "{done}");
    assert_eq!(status(&app, "c-old").await, 404);
    assert_eq!(status(&app, "c-new").await, 200);
}
