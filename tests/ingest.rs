//! SPEC 1 and 6: the hooks endpoint end to end against PostgreSQL.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
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

#[sqlx::test(migrations = "migrations/postgres")]
async fn the_vendor_curl_sample_is_accepted_as_written(pool: PgPool) {
    let app = TestApp::new(pool.clone());

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
    let payload: String =
        sqlx::query_scalar("SELECT payload::text FROM events WHERE conversation_id = 'c-xxxx'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let sent_event = &VENDOR_CURL_BODY[VENDOR_CURL_BODY.find("{\n\"name\"").unwrap()..]
        [..VENDOR_CURL_BODY[VENDOR_CURL_BODY.find("{\n\"name\"").unwrap()..]
            .find("\n}\n]")
            .unwrap()
            + 2];
    assert_eq!(
        payload, sent_event,
        "the event is stored exactly as received"
    );
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn the_vendor_javascript_samples_are_accepted_in_order(pool: PgPool) {
    let app = TestApp::new(pool);
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

#[sqlx::test(migrations = "migrations/postgres")]
async fn a_batch_keeps_its_array_order_in_seq(pool: PgPool) {
    let app = TestApp::new(pool.clone());
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
    let identities: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT seq, participant_identity, transition FROM events
         WHERE conversation_id = 'c-order' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        identities,
        [
            (1, "a1".into(), "entry".into()),
            (2, "a2".into(), "entry".into()),
            (3, "a1".into(), "exit".into()),
            (4, "a2".into(), "exit".into()),
        ]
    );
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn conversations_of_different_bots_are_separate(pool: PgPool) {
    let app = TestApp::new(pool);
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

#[sqlx::test(migrations = "migrations/postgres")]
async fn every_documented_path_and_token_header_is_accepted(pool: PgPool) {
    let app = TestApp::new(pool);
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

#[sqlx::test(migrations = "migrations/postgres")]
async fn each_error_status_of_spec_6_is_a_problem_document(pool: PgPool) {
    let app = TestApp::new(pool.clone());
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
        event_count(&pool).await,
        0,
        "no refused request stored anything"
    );
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn the_body_limit_is_configurable(pool: PgPool) {
    let server = agentassist_hooks::config::ServerSettings {
        body_limit_bytes: 1024,
        ..Default::default()
    };
    let app = TestApp::with(pool, Default::default(), server);
    let mut event = transfer("NA", "entry", "a1");
    event["transferData"] = Value::String("x".repeat(2000));

    let response = app.post_events(BOT, &batch("c-limit", vec![event])).await;

    response.assert_problem(413);
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn responses_carry_a_request_id_and_propagate_the_callers(pool: PgPool) {
    let app = TestApp::new(pool);

    let generated = app.get("/healthz", "").await;
    let request = Request::get("/healthz")
        .header("x-request-id", "caller-chosen-id")
        .body(Body::empty())
        .unwrap();
    let propagated = app.send(request).await;

    assert!(!generated.headers["x-request-id"].is_empty());
    assert_eq!(propagated.headers["x-request-id"], "caller-chosen-id");
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn health_is_ok_and_ready_once_migrated(pool: PgPool) {
    let app = TestApp::new(pool);

    let health = app.get("/healthz", "").await;
    let ready = app.get("/readyz", "").await;

    assert_eq!(health.status, 200);
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[sqlx::test(migrations = false)]
async fn ready_is_503_until_migrations_are_applied(pool: PgPool) {
    let app = TestApp::new(pool);

    let ready = app.get("/readyz", "").await;

    ready.assert_problem(503);
    assert!(ready.headers.contains_key("retry-after"));
}
