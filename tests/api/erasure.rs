//! Erasure (SPEC 10): `DELETE` removes a conversation and everything it holds, provably:
//! every read answers as for a conversation that never existed, and no table of the schema
//! keeps a row of it but its tombstone in the change feed.

use crate::common::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

on_both_backends!(
    an_erased_conversation_reads_exactly_like_one_that_never_existed,
    no_table_keeps_anything_of_an_erased_conversation_but_its_tombstone,
    erasing_needs_the_erase_permission_for_the_conversations_bot,
    an_event_after_the_erasure_starts_a_new_conversation_after_the_tombstone,
);

/// The conversation erased. Its data carries its id in every place that holds text of its
/// own — an agent's name, transfer data, an interaction member, a payload's extra member,
/// the idempotency key — so that finding the id nowhere finds all of them gone.
const ERASED: &str = "c-erase-me";

async fn send(app: &TestApp, method: &str, path: &str, token: &str, body: Value) -> TestResponse {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("token", token)
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(request).await
}

async fn erase(app: &TestApp, conversation: &str, token: &str) -> TestResponse {
    let request = Request::delete(conversation_path(conversation))
        .header("token", token)
        .body(Body::empty())
        .unwrap();
    app.send(request).await
}

/// The conversation's first request: a cold transfer, sent with an `Idempotency-Key`.
fn first_request(conversation: &str) -> Request<Body> {
    let mut entry = transfer("NA", "entry", "agent-e1");
    entry["participant"]["name"] = json!(format!("name in {conversation}"));
    entry["extra"] = json!(format!("extra member of {conversation}"));
    let mut leave = transfer("COLD", "exit", "agent-e1");
    leave["transferData"] = json!({ "note": format!("handed over in {conversation}") });
    let body = batch(
        conversation,
        vec![entry, leave, transfer("COLD", "entry", "agent-e2")],
    );
    keyed_request(&format!("key-of-{conversation}"), body.to_string())
}

/// A conversation with something in every table: events of all three sources, stints,
/// hops, transfer data, an interaction and an idempotency record.
async fn store_a_full_conversation(app: &TestApp, conversation: &str) {
    assert_eq!(app.send(first_request(conversation)).await.status, 200);

    let interaction = json!({ "agentId": "agent-e2", "conversationId": conversation,
        "interaction": { "interactionId": "i-erase", "type": "voice",
                         "service": format!("service of {conversation}") } });
    let path = format!("/api/v1/bots/{BOT}/interactions");
    let stored = send(app, "POST", &path, &ingest_token(), interaction).await;
    assert_eq!(stored.status, 200, "{}", stored.body);

    let handed = json!({ "participant": { "identity": "agent-e2" },
                         "data": { "note": format!("handed over in {conversation}") } });
    let path = format!("{}/transfer-data", conversation_path(conversation));
    assert_eq!(
        send(app, "PUT", &path, &ingest_token(), handed)
            .await
            .status,
        200
    );

    let escalate = json!({ "message": { "type": "escalate",
        "targets": [{ "type": "Queue", "value": "q-erase" }] } });
    let path = format!("{}/bot-messages", conversation_path(conversation));
    assert_eq!(
        send(app, "POST", &path, &ingest_token(), escalate)
            .await
            .status,
        200
    );
}

/// Everything the read API answers about `conversation`, as `(what, status, body)`.
async fn reads_of(app: &TestApp, conversation: &str) -> Vec<(String, u16, Value)> {
    let base = conversation_path(conversation);
    let mut reads = Vec::new();
    for path in [
        base.clone(),
        format!("{base}/events"),
        format!("{base}/transfer-data"),
    ] {
        let response = app.get(&path, &read_token()).await;
        let what = path.replace(conversation, "{conversationId}");
        reads.push((what, response.status.as_u16(), response.body));
    }
    reads
}

async fn an_erased_conversation_reads_exactly_like_one_that_never_existed(backend: Backend) {
    let app = backend.app().await;
    store_a_full_conversation(&app, ERASED).await;
    let never_existed = reads_of(&app, "c-never-existed").await;
    assert!(
        reads_of(&app, ERASED)
            .await
            .iter()
            .all(|(_, status, _)| *status == 200)
    );

    let erased = erase(&app, ERASED, &erase_token()).await;

    assert_eq!(erased.status, 204, "{}", erased.body);
    assert_eq!(erased.body, Value::Null, "no content");
    assert_eq!(reads_of(&app, ERASED).await, never_existed);
    let list = app
        .get(&format!("/api/v1/bots/{BOT}/conversations"), &read_token())
        .await;
    assert_eq!(list.body["items"], json!([]), "not listed");
    for agent in ["agent-e1", "agent-e2"] {
        let stints = app
            .get(
                &format!("/api/v1/bots/{BOT}/participants/{agent}/stints"),
                &read_token(),
            )
            .await;
        assert_eq!(stints.body["items"], json!([]), "no stint of {agent} left");
    }
    let bots = app.get("/api/v1/bots", &read_token()).await;
    assert_eq!(
        bots.body["items"],
        json!([]),
        "the bot has no conversation left"
    );
    let again = erase(&app, ERASED, &erase_token()).await;
    again.assert_problem(404);
}

async fn no_table_keeps_anything_of_an_erased_conversation_but_its_tombstone(backend: Backend) {
    let app = backend.app().await;
    store_a_full_conversation(&app, ERASED).await;
    store_a_full_conversation(&app, "c-kept").await;
    let tables = app.tables().await;
    for table in [
        "conversations",
        "events",
        "stints",
        "participants",
        "hops",
        "idempotency_keys",
    ] {
        assert!(
            app.rows_holding(table, "c-kept").await > 0,
            "the search finds the other conversation's rows in {table}, so it is not blind"
        );
    }
    assert!(tables.contains(&"erasures".to_owned()), "{tables:?}");

    assert_eq!(erase(&app, ERASED, &erase_token()).await.status, 204);

    for table in &tables {
        let expected = if table == "erasures" { 1 } else { 0 };
        assert_eq!(
            app.rows_holding(table, ERASED).await,
            expected,
            "rows of {table} holding anything of the erased conversation (only its tombstone may)"
        );
    }
    let kept = app.get(&conversation_path("c-kept"), &read_token()).await;
    assert_eq!(kept.status, 200, "the other conversation is untouched");
    assert_eq!(kept.body["eventCount"], 6);
}

async fn erasing_needs_the_erase_permission_for_the_conversations_bot(backend: Backend) {
    let app = backend.app().await;
    store_a_full_conversation(&app, ERASED).await;
    let other = json!({ "conversationId": ERASED, "botId": OTHER_BOT,
                        "events": [transfer("NA", "entry", "agent-o")] });
    let stored = app
        .send(hooks_request(
            OTHER_BOT,
            &wildcard_token(),
            other.to_string(),
        ))
        .await;
    assert_eq!(stored.status, 200);

    erase(&app, ERASED, &read_token()).await.assert_problem(403);
    erase(&app, ERASED, &wildcard_token())
        .await
        .assert_problem(403);
    erase(&app, ERASED, "not-a-token").await.assert_problem(401);
    let other_bot = Request::delete(format!("/api/v1/bots/{OTHER_BOT}/conversations/{ERASED}"))
        .header("token", erase_token())
        .body(Body::empty())
        .unwrap();
    app.send(other_bot).await.assert_problem(404);
    erase(&app, "c-never-existed", &erase_token())
        .await
        .assert_problem(404);

    let still = app.get(&conversation_path(ERASED), &read_token()).await;
    assert_eq!(still.status, 200, "nothing was erased");
    let other = app
        .get(
            &format!("/api/v1/bots/{OTHER_BOT}/conversations/{ERASED}"),
            &wildcard_token(),
        )
        .await;
    assert_eq!(other.status, 200, "nor the other bot's conversation");
}

async fn an_event_after_the_erasure_starts_a_new_conversation_after_the_tombstone(
    backend: Backend,
) {
    let app = backend.app().await;
    store_a_full_conversation(&app, ERASED).await;
    assert_eq!(erase(&app, ERASED, &erase_token()).await.status, 204);

    let retried = app.send(first_request(ERASED)).await;

    assert_eq!(retried.status, 200, "{}", retried.body);
    assert!(
        retried.headers.get("idempotent-replayed").is_none(),
        "the key went with the conversation: the same request is stored anew"
    );
    assert_eq!(
        (&retried.body["firstSeq"], &retried.body["lastSeq"]),
        (&json!(1), &json!(3)),
        "seq starts again from 1"
    );
    let conversation = app.get(&conversation_path(ERASED), &read_token()).await;
    assert_eq!(conversation.body["eventCount"], 3);
    assert_eq!(
        conversation.body["transfers"]["escalated"], 0,
        "nothing carried over"
    );
    assert_eq!(conversation.body["interaction"], Value::Null);
    let feed = app
        .get(&format!("/api/v1/bots/{BOT}/changes"), &read_token())
        .await;
    let kinds: Vec<(&str, Option<i64>)> = feed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["kind"].as_str().unwrap(), item["seq"].as_i64()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("conversation.erased", None),
            ("event", Some(1)),
            ("event", Some(2)),
            ("event", Some(3))
        ],
        "the erased events are gone from the feed, the tombstone comes before the new start"
    );
    let tombstone = &feed.body["items"][0];
    assert_eq!(tombstone["conversationId"], ERASED);
    assert!(tombstone["erasedAt"].is_string());
}
