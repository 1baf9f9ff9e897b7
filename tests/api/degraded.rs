//! A database that is not the one this binary expects: not migrated yet (every call is a
//! retryable 503, never a 500), or migrated further by a newer release during a rolling
//! deploy (this older binary starts and serves); and pages of large events, bounded by
//! bytes as well as by count. On both stores.

use crate::common::*;
use agentassist_hooks::store::SqliteStore;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use sqlx::PgPool;

on_both_backends!(
    an_older_binary_migrates_and_serves_a_database_a_newer_release_migrated_further,
    events_pages_end_early_once_their_payloads_pass_4_mib,
);

async fn readyz(app: &TestApp) -> StatusCode {
    app.send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .status
}

/// Every API call an unmigrated database could fail, each answered 503 + `Retry-After`.
async fn assert_every_call_is_503(app: &TestApp) {
    assert_eq!(readyz(app).await, StatusCode::SERVICE_UNAVAILABLE);
    let ingest = app
        .post_events(BOT, &batch("c-1", vec![transfer("NA", "entry", "a1")]))
        .await;
    let keyed = app
        .send(keyed_request(
            "key-1",
            batch("c-1", vec![transfer("NA", "entry", "a1")]).to_string(),
        ))
        .await;
    let token = read_token();
    let mut answers = vec![("ingest", ingest), ("keyed ingest", keyed)];
    for path in [
        format!("/api/v1/bots/{BOT}/conversations"),
        format!("/api/v1/bots/{BOT}/conversations/c-1"),
        format!("/api/v1/bots/{BOT}/conversations/c-1/events"),
        format!("/api/v1/bots/{BOT}/conversations/c-1/transfer-data"),
        format!("/api/v1/bots/{BOT}/participants/a1/stints"),
    ] {
        answers.push(("query", app.get(&path, &token).await));
    }
    for (what, response) in answers {
        assert_eq!(response.status, 503, "{what}: {}", response.body);
        response.assert_problem(503);
        assert!(response.headers.contains_key("retry-after"), "{what}");
    }
}

#[sqlx::test(migrations = false)]
async fn postgres_before_migrations_answers_every_call_503(pool: PgPool) {
    let app = TestApp::new(pool);

    assert_every_call_is_503(&app).await;
}

#[tokio::test]
async fn sqlite_before_migrations_answers_every_call_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_file(&dir.path().join("hooks.db"), &Default::default())
        .await
        .unwrap();
    let app = TestApp::over_sqlite(store);

    assert_every_call_is_503(&app).await;
}

/// A migration this binary has never seen, applied as a newer release would: it adds a
/// column (expand), and is recorded as applied.
const NEWER_MIGRATION: i64 = 20_991_231_000_000;

async fn an_older_binary_migrates_and_serves_a_database_a_newer_release_migrated_further(
    backend: Backend,
) {
    let app = backend.app().await;
    let checksum = match backend {
        Backend::Postgres(_) => "'\\x00'::bytea",
        Backend::Sqlite(_) => "x'00'",
    };
    for sql in [
        "ALTER TABLE conversations ADD COLUMN added_by_a_newer_release TEXT".to_owned(),
        format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ({NEWER_MIGRATION}, 'newer release', true, {checksum}, 1)"
        ),
    ] {
        app.execute(&sql).await;
    }

    let migrated = app.store.migrate().await;

    assert!(migrated.is_ok(), "{migrated:?}");
    assert_eq!(readyz(&app).await, StatusCode::OK);
    let response = app
        .post_events(BOT, &batch("c-1", vec![transfer("NA", "entry", "a1")]))
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    let read = app
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-1"),
            &read_token(),
        )
        .await;
    assert_eq!(read.body["status"], "active");
}

async fn events_pages_end_early_once_their_payloads_pass_4_mib(backend: Backend) {
    // 30 events of about 200 KiB (one per request, as the body limit allows): 6 MB.
    let app = backend.app().await;
    let padding = "p".repeat(200 * 1024);
    for index in 0..30 {
        let mut event = transfer("WARM", "entry", &format!("agent-{index}"));
        event["padding"] = json!(padding);
        let response = app.post_events(BOT, &batch("c-big", vec![event])).await;
        assert_eq!(response.status, StatusCode::OK);
    }
    let page = |after: i64| {
        let path =
            format!("/api/v1/bots/{BOT}/conversations/c-big/events?limit=1000&afterSeq={after}");
        let app = &app;
        async move { app.get(&path, &read_token()).await }
    };

    let first = page(0).await;
    let next = first.body["nextAfterSeq"].as_i64().expect("more follow");
    let second = page(next).await;

    let seqs = |response: &TestResponse| -> Vec<i64> {
        response.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["seq"].as_i64().unwrap())
            .collect()
    };
    let first_seqs = seqs(&first);
    let bytes: usize = first.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["payload"].to_string().len())
        .sum();
    // The page stops at the event that passes 4 MiB: 21 events of just over 200 KiB.
    assert_eq!(first_seqs, (1..=21).collect::<Vec<_>>());
    assert!(bytes > 4 * 1024 * 1024 && bytes < 4 * 1024 * 1024 + 210 * 1024);
    assert_eq!(next, 21);
    assert_eq!(seqs(&second), (22..=30).collect::<Vec<_>>());
    assert_eq!(second.body["nextAfterSeq"], json!(null));

    // The count still bounds a page of small enough events.
    let counted = app
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-big/events?limit=5"),
            &read_token(),
        )
        .await;
    assert_eq!(seqs(&counted), [1, 2, 3, 4, 5]);
    assert_eq!(counted.body["nextAfterSeq"], 5);
}
