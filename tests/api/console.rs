//! The ops console (SPEC 9): its page served from the binary with a strict policy, and the
//! bots a caller may read, where it starts.

use crate::common::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::json;

on_both_backends!(
    the_bots_listed_are_those_the_app_may_read_that_have_conversations,
    listing_bots_needs_the_read_permission,
);

async fn the_bots_listed_are_those_the_app_may_read_that_have_conversations(backend: Backend) {
    let app = backend.app().await;
    let bots = app.get("/api/v1/bots", &wildcard_token()).await;
    assert_eq!(bots.status, 200);
    assert_eq!(bots.body, json!({ "items": [] }), "no conversation yet");

    for bot in [OTHER_BOT, BOT] {
        let body = json!({
            "conversationId": "c-1", "botId": bot,
            "events": [transfer("NA", "entry", "agentId1")]
        });
        let stored = app
            .send(hooks_request(bot, &wildcard_token(), body.to_string()))
            .await;
        assert_eq!(stored.status, 200);
    }

    let every = app.get("/api/v1/bots", &wildcard_token()).await;
    let ids: Vec<&str> = every.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bot| bot["botId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [BOT, OTHER_BOT], "every bot, by id");
    let conversation = app
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-1"),
            &read_token(),
        )
        .await;
    assert_eq!(
        every.body["items"][0]["lastEventAt"], conversation.body["lastEventAt"],
        "each with its latest event's time"
    );

    let own = app.get("/api/v1/bots", &read_token()).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(own.body["items"][0]["botId"], BOT, "only the app's own bot");
}

async fn listing_bots_needs_the_read_permission(backend: Backend) {
    let app = backend.app().await;

    app.get("/api/v1/bots", &ingest_token())
        .await
        .assert_problem(403);
    app.get("/api/v1/bots", "not-a-token")
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn the_console_page_is_served_with_a_strict_content_security_policy() {
    let app = Backend::sqlite().await.app().await;

    let (status, page) = app.get_text("/console/", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the page: {page}");
    let response = app
        .send(Request::get("/console/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.headers["content-type"], "text/html; charset=utf-8");
    let policy = response.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(
        policy.contains("script-src 'self';"),
        "no inline script: {policy}"
    );
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(response.headers["x-content-type-options"], "nosniff");
    assert_eq!(response.headers["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn the_console_without_its_slash_redirects_and_unknown_files_are_not_found() {
    let app = Backend::sqlite().await.app().await;

    let bare = app
        .send(Request::get("/console").body(Body::empty()).unwrap())
        .await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.headers["location"], "/console/");

    app.send(
        Request::get("/console/no-such.js")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .assert_problem(404);
    app.send(
        Request::get("/console/../openapi.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .assert_problem(404);
}
