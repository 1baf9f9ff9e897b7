//! SPEC 1 and 6: the hooks endpoint end to end against PostgreSQL.

on_both_backends!(
    the_vendor_curl_sample_is_accepted_as_written,
    the_vendor_javascript_samples_are_accepted_in_order,
    a_batch_keeps_its_array_order_in_seq,
    conversations_of_different_bots_are_separate,
    every_documented_path_and_token_header_is_accepted,
    each_error_status_of_spec_6_is_a_problem_document,
    the_body_limit_is_configurable,
    responses_carry_a_request_id_and_propagate_the_callers,
    health_is_ok_and_ready_once_migrated,
);

use crate::common::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The vendor documentation's curl sample, byte for byte apart from the bot id.
const VENDOR_CURL_BODY: &str = r#"{
"conversationId": "c-xxxx",
"botId": "st-1234",
"events": [
{
"name": "INTERNAL_TRANSFER_EVENT",
"transfertype": "NA",
"transition": "entry",
"isExtAD": "true",
"language": "language",
"experience": "chat",
"participant": {
"identity": "xxxxxx",
"name": "Agent ai",
"type": "agent"
}
}
]
}"#;

async fn the_vendor_curl_sample_is_accepted_as_written(backend: Backend) {
    let app = backend.app().await;

    let response = app
        .send(hooks_request(
            BOT,
            &ingest_token(),
            VENDOR_CURL_BODY.to_owned(),
        ))
        .await;

    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.headers["content-type"], "application/json");
    assert_eq!(
        response.body,
        json!({
            "STATUS": "OK", "conversationId": "c-xxxx", "accepted": 1,
            "firstSeq": 1, "lastSeq": 1, "conversationStatus": "active"
        })
    );
    let event_start = VENDOR_CURL_BODY.find("{\n\"name\"").unwrap();
    let event_end = VENDOR_CURL_BODY.rfind("}\n]").unwrap() + 1;
    let stored = app.stored_events("c-xxxx").await;
    assert_eq!(
        stored[0].2,
        VENDOR_CURL_BODY[event_start..event_end],
        "the event is stored exactly as received"
    );
}

async fn the_vendor_javascript_samples_are_accepted_in_order(backend: Backend) {
    let app = backend.app().await;
    // The JavaScript samples send boolean isExtAD and upper-case transfer types.
    let steps = [
        (transfer("NA", "entry", "agentId1"), "active"),
        (transfer("COLD", "entry", "agentId2"), "active"),
        (transfer("COLD", "exit", "agentId1"), "active"),
        (transfer("WARM", "entry", "agentId3"), "active"),
        (transfer("WARM", "exit", "agentId2"), "active"),
        (transfer("NA", "exit", "agentId3"), "ended"),
    ];

    for (seq, (event, status)) in steps.into_iter().enumerate() {
        let response = app
            .post_events(BOT, &batch("atesta-xxxx", vec![event]))
            .await;

        let seq = seq as i64 + 1;
        assert_eq!(
            response.body,
            json!({
                "STATUS": "OK", "conversationId": "atesta-xxxx", "accepted": 1,
                "firstSeq": seq, "lastSeq": seq, "conversationStatus": status
            })
        );
    }
}

async fn a_batch_keeps_its_array_order_in_seq(backend: Backend) {
    let app = backend.app().await;
    app.post_events(BOT, &batch("c-order", vec![transfer("NA", "entry", "a1")]))
        .await;

    let response = app
        .post_events(
            BOT,
            &batch(
                "c-order",
                vec![
                    transfer("COLD", "entry", "a2"),
                    transfer("COLD", "exit", "a1"),
                    transfer("COLD", "exit", "a2"),
                ],
            ),
        )
        .await;

    assert_eq!(response.status, 200);
    assert_eq!(response.body["firstSeq"], 2);
    assert_eq!(response.body["lastSeq"], 4);
    assert_eq!(response.body["accepted"], 3);
    assert_eq!(response.body["conversationStatus"], "idle");
    let stored: Vec<(i64, Option<String>, Value)> = app
        .stored_events("c-order")
        .await
        .into_iter()
        .map(|(seq, identity, payload)| (seq, identity, serde_json::from_str(&payload).unwrap()))
        .collect();
    let order: Vec<(i64, &str, &str)> = stored
        .iter()
        .map(|(seq, identity, payload)| {
            (
                *seq,
                identity.as_deref().unwrap(),
                payload["transition"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (1, "a1", "entry"),
            (2, "a2", "entry"),
            (3, "a1", "exit"),
            (4, "a2", "exit")
        ]
    );
}

async fn conversations_of_different_bots_are_separate(backend: Backend) {
    let app = backend.app().await;
    let mut other = batch("c-shared-id", vec![transfer("NA", "entry", "a1")]);
    other["botId"] = json!(OTHER_BOT);
    let request = hooks_request(OTHER_BOT, &wildcard_token(), other.to_string());

    app.post_events(
        BOT,
        &batch("c-shared-id", vec![transfer("NA", "entry", "a1")]),
    )
    .await;
    let response = app.send(request).await;

    assert_eq!(response.status, 200);
    assert_eq!(
        response.body["firstSeq"], 1,
        "seq is per bot and conversation"
    );
}

async fn every_documented_path_and_token_header_is_accepted(backend: Backend) {
    let app = backend.app().await;
    let token = ingest_token();
    let paths = [
        "/agentassist/api/v1/hooks/st-1234",
        "/agentai/api/v1/hooks/st-1234",
        "/api/v1/hooks/st-1234",
    ];
    let headers = [
        ("token", token.clone()),
        ("auth", token.clone()),
        ("authorization", format!("Bearer {token}")),
    ];

    for path in paths {
        for (header, value) in &headers {
            let request = Request::post(path)
                .header("content-type", "application/json; charset=utf-8")
                .header(*header, value)
                .body(Body::from(
                    batch("c-paths", vec![transfer("NA", "entry", "a1")]).to_string(),
                ))
                .unwrap();

            let response = app.send(request).await;

            assert_eq!(
                response.status, 200,
                "{path} with {header}: {}",
                response.body
            );
        }
    }
}

async fn each_error_status_of_spec_6_is_a_problem_document(backend: Backend) {
    let app = backend.app().await;
    let body = batch("c-errors", vec![transfer("NA", "entry", "a1")]).to_string();

    // 400: path and body botId differ.
    let response = app
        .send(hooks_request(BOT, &wildcard_token(), {
            let mut other = batch("c-errors", vec![transfer("NA", "entry", "a1")]);
            other["botId"] = json!(OTHER_BOT);
            other.to_string()
        }))
        .await;
    response.assert_problem(400);
    assert_eq!(response.error_paths(), ["/botId"]);

    // 401: no token at all.
    let request = Request::post("/agentassist/api/v1/hooks/st-1234")
        .header("content-type", "application/json")
        .body(Body::from(body.clone()))
        .unwrap();
    let response = app.send(request).await;
    response.assert_problem(401);
    assert_eq!(response.body["detail"], "invalid token");

    // 403: a valid token for an app without this bot.
    let response = app
        .send(hooks_request(OTHER_BOT, &ingest_token(), body.clone()))
        .await;
    response.assert_problem(403);

    // 403: a valid token for an app without the ingest permission.
    let response = app
        .send(hooks_request(BOT, &read_token(), body.clone()))
        .await;
    response.assert_problem(403);

    // 404: an unknown route.
    let response = app
        .get("/agentassist/api/v2/nothing", &ingest_token())
        .await;
    response.assert_problem(404);

    // 405: a known route with the wrong method.
    let response = app
        .get("/agentassist/api/v1/hooks/st-1234", &ingest_token())
        .await;
    response.assert_problem(405);

    // 413: a body over the limit (256 KiB by default).
    let huge = json!({
        "conversationId": "c-errors", "botId": BOT,
        "events": [ { "name": "TRIGGER_SUMMARY_EVENT", "data": { "blob": "x".repeat(300 * 1024) } } ]
    });
    let response = app
        .send(hooks_request(BOT, &ingest_token(), huge.to_string()))
        .await;
    response.assert_problem(413);

    // 415: not JSON, or no content type.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=latin1"),
        None,
    ] {
        let mut request =
            Request::post("/agentassist/api/v1/hooks/st-1234").header("token", ingest_token());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = app
            .send(request.body(Body::from(body.clone())).unwrap())
            .await;
        response.assert_problem(415);
    }

    assert_eq!(
        app.event_count().await,
        0,
        "no refused request stored anything"
    );
}

async fn the_body_limit_is_configurable(backend: Backend) {
    let server = agentassist_hooks::config::ServerSettings {
        body_limit_bytes: 1024,
        ..Default::default()
    };
    let app = backend.app_with(Default::default(), server).await;
    let mut event = transfer("NA", "entry", "a1");
    event["transferData"] = Value::String("x".repeat(2000));

    let response = app.post_events(BOT, &batch("c-limit", vec![event])).await;

    response.assert_problem(413);
}

async fn responses_carry_a_request_id_and_propagate_the_callers(backend: Backend) {
    let app = backend.app().await;

    let generated = app.get("/healthz", "").await;
    let request = Request::get("/healthz")
        .header("x-request-id", "caller-chosen-id")
        .body(Body::empty())
        .unwrap();
    let propagated = app.send(request).await;

    assert!(!generated.headers["x-request-id"].is_empty());
    assert_eq!(propagated.headers["x-request-id"], "caller-chosen-id");
}

async fn health_is_ok_and_ready_once_migrated(backend: Backend) {
    let app = backend.app().await;

    let health = app.get("/healthz", "").await;
    let ready = app.get("/readyz", "").await;

    assert_eq!(health.status, 200);
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[sqlx::test(migrations = false)]
async fn ready_is_503_until_migrations_are_applied_on_postgres(pool: PgPool) {
    let app = TestApp::new(pool);

    let ready = app.get("/readyz", "").await;

    ready.assert_problem(503);
    assert!(ready.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn ready_is_503_until_migrations_are_applied_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = agentassist_hooks::store::SqliteStore::open_file(
        &dir.path().join("unmigrated.db"),
        &Default::default(),
    )
    .await
    .unwrap();
    let app = TestApp::over_sqlite(store);

    let ready = app.get("/readyz", "").await;

    ready.assert_problem(503);
}
