//! SPEC 1.5: `Idempotency-Key` replays, refuses a changed body (422), refuses while the
//! first request runs (409, PostgreSQL; SQLite's single writer makes a retry wait for the
//! first and get its replay), holds across replicas and expires.

on_both_backends!(
    a_retry_with_the_same_key_and_body_is_replayed_and_stores_nothing,
    the_same_key_with_another_body_is_refused_with_422,
    a_used_key_with_an_invalid_other_body_is_still_422,
    replicas_sharing_a_key_store_the_events_once,
    a_refused_request_gives_its_key_back,
    malformed_keys_are_refused_with_400,
    keys_are_scoped_by_bot,
    expired_keys_are_free_again_and_purged,
);

use crate::common::*;
use agentassist_hooks::config::IdempotencySettings;
use futures_util::future::join_all;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

fn first_entry(conversation: &str) -> Value {
    batch(conversation, vec![transfer("NA", "entry", "agentId1")])
}

async fn a_retry_with_the_same_key_and_body_is_replayed_and_stores_nothing(backend: Backend) {
    let app = backend.app().await;
    let body = first_entry("c-replay");
    let reformatted = serde_json::to_string_pretty(&body).unwrap();

    let first = app.send(keyed_request("key-1", body.to_string())).await;
    let retry = app.send(keyed_request("key-1", reformatted)).await;

    assert_eq!(first.status, 200);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    assert_eq!(retry.status, 200);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.body, first.body, "the stored response is replayed");
    assert_eq!(app.event_count().await, 1, "nothing is stored again");
}

async fn the_same_key_with_another_body_is_refused_with_422(backend: Backend) {
    let app = backend.app().await;
    app.send(keyed_request("key-2", first_entry("c-422").to_string()))
        .await;

    let changed = app
        .send(keyed_request("key-2", first_entry("c-other").to_string()))
        .await;

    changed.assert_problem(422);
    assert_eq!(app.event_count().await, 1);
}

async fn a_used_key_with_an_invalid_other_body_is_still_422(backend: Backend) {
    let app = backend.app().await;
    app.send(keyed_request("key-3", first_entry("c-used").to_string()))
        .await;

    let invalid = app
        .send(keyed_request("key-3", "{\"not\": \"a batch\"}".to_owned()))
        .await;

    invalid.assert_problem(422);
    assert_eq!(app.event_count().await, 1);
}

async fn replicas_sharing_a_key_store_the_events_once(backend: Backend) {
    let replica_a = backend.app().await;
    let replica_b = backend.app().await;
    let body = batch(
        "c-shared-key",
        vec![
            transfer("NA", "entry", "a1"),
            transfer("WARM", "entry", "a2"),
        ],
    )
    .to_string();

    let responses = join_all((0..16).map(|index| {
        let replica = if index % 2 == 0 {
            &replica_a
        } else {
            &replica_b
        };
        let request = keyed_request("shared-key", body.clone());
        async move { replica.send(request).await }
    }))
    .await;
    let retry = replica_b
        .send(keyed_request("shared-key", body.clone()))
        .await;

    let stored_once: Vec<_> = responses
        .iter()
        .filter(|response| {
            response.status == 200 && !response.headers.contains_key("idempotent-replayed")
        })
        .collect();
    assert_eq!(
        stored_once.len(),
        1,
        "exactly one request stores the events"
    );
    for response in &responses {
        assert!(
            response.status == 200 || response.status == 409,
            "{}: {}",
            response.status,
            response.body
        );
    }
    assert_eq!(retry.status, 200);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.body, stored_once[0].body);
    assert_eq!(replica_a.stored_seqs("c-shared-key").await, [1, 2]);
}

async fn a_refused_request_gives_its_key_back(backend: Backend) {
    let app = backend.app().await;
    let mut invalid = first_entry("c-fixed");
    invalid["events"][0]["transition"] = json!("sideways");

    let refused = app.send(keyed_request("key-4", invalid.to_string())).await;
    let corrected = app
        .send(keyed_request("key-4", first_entry("c-fixed").to_string()))
        .await;

    refused.assert_problem(400);
    assert_eq!(corrected.status, 200, "{}", corrected.body);
    assert!(!corrected.headers.contains_key("idempotent-replayed"));
}

async fn malformed_keys_are_refused_with_400(backend: Backend) {
    let app = backend.app().await;
    for key in ["k".repeat(256), "two words".to_owned(), String::new()] {
        let mut request = hooks_request(BOT, &ingest_token(), first_entry("c-bad-key").to_string());
        request
            .headers_mut()
            .insert("idempotency-key", key.parse().unwrap());

        let response = app.send(request).await;

        response.assert_problem(400);
    }
    assert_eq!(app.event_count().await, 0);
}

async fn keys_are_scoped_by_bot(backend: Backend) {
    let app = backend.app().await;
    let mut other_bot = first_entry("c-scope");
    other_bot["botId"] = json!(OTHER_BOT);
    let mut request = hooks_request(OTHER_BOT, &wildcard_token(), other_bot.to_string());
    request
        .headers_mut()
        .insert("idempotency-key", "scoped".parse().unwrap());

    let first = app
        .send(keyed_request("scoped", first_entry("c-scope").to_string()))
        .await;
    let second = app.send(request).await;

    assert_eq!(first.status, 200);
    assert_eq!(
        second.status, 200,
        "the same key under another bot is another key"
    );
    assert!(!second.headers.contains_key("idempotent-replayed"));
}

async fn expired_keys_are_free_again_and_purged(backend: Backend) {
    let app = backend
        .app_configured(
            Default::default(),
            Default::default(),
            IdempotencySettings {
                retention_seconds: 0,
            },
        )
        .await;
    let body = first_entry("c-expiry").to_string();

    app.send(keyed_request("key-5", body.clone())).await;
    let after_expiry = app.send(keyed_request("key-5", body)).await;
    let purged = app
        .store
        .purge_keys(OffsetDateTime::now_utc() + Duration::seconds(1))
        .await
        .unwrap();

    assert_eq!(after_expiry.status, 200);
    assert!(!after_expiry.headers.contains_key("idempotent-replayed"));
    assert_eq!(
        app.event_count().await,
        2,
        "an expired key protects nothing"
    );
    assert_eq!(purged, 1);
}

/// The first request is really running: it has claimed the key and waits on the
/// conversation's row lock, which the test holds.
#[sqlx::test(migrations = "migrations/postgres")]
async fn a_retry_while_the_first_request_runs_gets_409_then_the_replay(pool: sqlx::PgPool) {
    let backend = Backend::Postgres(pool.clone());
    let app = backend.app().await;
    let body = first_entry("c-running").to_string();
    app.post_events(
        BOT,
        &batch("c-running", vec![transfer("COLD", "entry", "a0")]),
    )
    .await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversations WHERE conversation_id = 'c-running' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let first = tokio::spawn({
        let router = app.router.clone();
        let request = keyed_request("key-running", body.clone());
        async move { tower::ServiceExt::oneshot(router, request).await.unwrap() }
    });
    // Only retry once the first request holds the key, or the retry could take it.
    let mut holders = 0_i64;
    for _ in 0..250 {
        holders = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND d.datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if holders > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(holders, 1, "the first request holds the key");
    let retry = app.send(keyed_request("key-running", body.clone())).await;
    retry.assert_problem(409);
    assert!(!first.is_finished(), "the first request is still held");
    lock.rollback().await.unwrap();
    let first = first.await.unwrap();
    let replay = app.send(keyed_request("key-running", body)).await;

    assert_eq!(first.status(), 200);
    assert_eq!(replay.status, 200);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(app.stored_seqs("c-running").await, [1, 2]);
}
