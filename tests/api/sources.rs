//! SPEC 7 over HTTP, on both stores: Bright Pattern's interactions and transfer data, and
//! the Salesforce bot's messages, feed the same timeline as the hooks API.

on_both_backends!(
    every_documented_interaction_field_round_trips_with_unknown_ones_kept,
    deliveries_merge_into_the_interaction_and_name_each_agent,
    invalid_interaction_members_are_refused_at_their_pointers,
    transfer_data_put_is_what_the_transfer_data_query_answers,
    a_v4_envelope_with_two_messages_stores_two_events_in_order,
    an_unsupported_message_type_is_refused_naming_the_supported_ones,
    a_salesforce_escalation_reads_back_as_a_hop_to_the_agent_who_entered,
    the_service_filter_lists_conversations_whose_interaction_names_it,
    the_new_endpoints_need_the_ingest_permission_and_keep_idempotency,
    numbers_at_the_edge_of_a_double_read_back_from_the_merged_interaction,
);

use crate::common::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

fn interactions_path(bot: &str) -> String {
    format!("/api/v1/bots/{bot}/interactions")
}

fn transfer_data_path(conversation: &str) -> String {
    format!("/api/v1/bots/{BOT}/conversations/{conversation}/transfer-data")
}

fn bot_messages_path(conversation: &str) -> String {
    format!("/api/v1/bots/{BOT}/conversations/{conversation}/bot-messages")
}

async fn send(app: &TestApp, method: &str, path: &str, body: String) -> TestResponse {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("token", ingest_token())
        .body(Body::from(body))
        .unwrap();
    app.send(request).await
}

async fn read(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &read_token()).await;
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    response.body
}

/// Every member of the seed's `InteractionData`, and one it does not know.
fn seed_interaction() -> Value {
    json!({
        "interactionId": "int-1001",
        "state": "delivered",
        "type": "voice",
        "subject": "Billing question",
        "associatedObjects": { "case": "00012345" },
        "callParties": [
            { "id": "p-1", "name": "Customer", "phone": "+15550100" },
            { "id": "p-2", "name": "Agent One", "phone": "+15550101", "userId": "u-1" }
        ],
        "callMuted": false,
        "callRecording": true,
        "attachedData": { "priority": "gold" },
        "phoneNumber": "+15550100",
        "email": "customer@example.com",
        "callDirection": "inbound",
        "startTime": 1764756000000_i64,
        "endTime": 1764756300000_i64,
        "duration": 300,
        "description": "Customer asks about an invoice",
        "disposition": "resolved",
        "globalInteractionId": "giid-77",
        "service": "Billing",
        "playbackUrl": "https://example.com/play/1",
        "recordingUrl": "https://example.com/rec/1",
        "DNIS": "+15550199",
        "ANI": "+15550100",
        "origination": "integration-api",
        "vendorExtension": { "kept": ["as", "sent"] }
    })
}

async fn every_documented_interaction_field_round_trips_with_unknown_ones_kept(backend: Backend) {
    let app = backend.app().await;
    let body = json!({ "agentId": "agent-1", "interaction": seed_interaction() }).to_string();

    let response = send(&app, "POST", &interactions_path(BOT), body.clone()).await;

    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["conversationId"], "int-1001");
    let (status, events) = app
        .get_text(
            &format!("{}/events", conversation_path("int-1001")),
            &read_token(),
        )
        .await;
    assert_eq!(status, 200);
    let events: Value = serde_json::from_str(&events).unwrap();
    let event = &events["events"][0];
    assert_eq!(event["name"], "INTERACTION_DATA");
    assert_eq!(
        event["payload"],
        serde_json::from_str::<Value>(&body).unwrap()
    );
    assert_eq!(event["participant"]["identity"], "agent-1");
    let conversation = read(&app, &conversation_path("int-1001")).await;
    let interaction = conversation["interaction"].as_object().unwrap();
    for (key, value) in seed_interaction().as_object().unwrap() {
        assert_eq!(&interaction[key], value, "{key} is kept as sent");
    }
    assert_eq!(interaction["deliveredTo"][0]["agentId"], "agent-1");
    assert_eq!(
        conversation["experience"], "voice",
        "taken from the interaction's type"
    );
    assert_eq!(
        conversation["participants"],
        json!([]),
        "no stint from an interaction"
    );
    assert_eq!(conversation["eventCount"], 1);
}

async fn deliveries_merge_into_the_interaction_and_name_each_agent(backend: Backend) {
    let app = backend.app().await;
    let first = json!({ "agentId": "agent-1", "conversationId": "c-bp", "interaction": {
        "interactionId": "int-7", "type": "chat", "state": "delivered", "subject": "Hello" } });
    let second = json!({ "agentId": "agent-2", "conversationId": "c-bp", "interaction": {
        "interactionId": "int-7", "type": "chat", "state": "hold" } });

    for body in [first, second] {
        let response = send(&app, "POST", &interactions_path(BOT), body.to_string()).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    app.post_events(
        BOT,
        &batch("c-bp", vec![transfer("NA", "entry", "agent-2")]),
    )
    .await;

    let conversation = read(&app, &conversation_path("c-bp")).await;
    let interaction = &conversation["interaction"];
    assert_eq!(
        interaction["state"], "hold",
        "the latest delivery wins per member"
    );
    assert_eq!(
        interaction["subject"], "Hello",
        "members it did not send stay"
    );
    let delivered: Vec<&str> = interaction["deliveredTo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|delivery| delivery["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(delivered, ["agent-1", "agent-2"]);
    assert!(
        interaction["deliveredTo"][1]["at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        conversation["experience"], "voice",
        "a hooks event's experience wins over the interaction's type"
    );
}

async fn invalid_interaction_members_are_refused_at_their_pointers(backend: Backend) {
    let app = backend.app().await;
    let body = json!({ "agentId": "agent-1", "interaction": {
        "interactionId": "int-9",
        "type": "fax",
        "state": "ringing",
        "callDirection": "sideways",
        "origination": "telepathy",
        "startTime": "noon",
        "service": {},
        "callParties": [{ "id": "p-1", "name": 7 }, "nobody"]
    } });

    let response = send(&app, "POST", &interactions_path(BOT), body.to_string()).await;

    response.assert_problem(400);
    let paths = response.error_paths();
    for path in [
        "/interaction/type",
        "/interaction/state",
        "/interaction/callDirection",
        "/interaction/origination",
        "/interaction/startTime",
        "/interaction/service",
        "/interaction/callParties/0/name",
        "/interaction/callParties/0/phone",
        "/interaction/callParties/1",
    ] {
        assert!(paths.contains(&path.to_owned()), "{path} in {paths:?}");
    }
    let missing = send(&app, "POST", &interactions_path(BOT), json!({}).to_string()).await;
    missing.assert_problem(400);
    assert_eq!(missing.error_paths(), ["/agentId", "/interaction"]);
    let not_a_list = json!({ "agentId": "a", "interaction": {
        "interactionId": "i", "type": "chat", "callParties": "all" } });
    let refused = send(
        &app,
        "POST",
        &interactions_path(BOT),
        not_a_list.to_string(),
    )
    .await;
    assert_eq!(refused.error_paths(), ["/interaction/callParties"]);
    assert_eq!(app.event_count().await, 0);
}

async fn transfer_data_put_is_what_the_transfer_data_query_answers(backend: Backend) {
    let app = backend.app().await;
    let mut with_data = transfer("COLD", "exit", "agent-1");
    with_data["transferData"] = json!({ "from": "hooks" });
    app.post_events(
        BOT,
        &batch("c-td", vec![transfer("NA", "entry", "agent-1"), with_data]),
    )
    .await;
    // As text: member order and `1.50` must survive, as the next agent's integration reads it.
    let put = r#"{"participant": {"identity": "agent-1", "name": "Agent One"},
        "data": {"url":"https://crm.example.com/case/1","n":1.50}}"#;

    let response = send(&app, "PUT", &transfer_data_path("c-td"), put.to_owned()).await;

    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["firstSeq"], 3);
    let (status, text) = app
        .get_text(&transfer_data_path("c-td"), &read_token())
        .await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#""data":{"url":"https://crm.example.com/case/1","n":1.50}"#),
        "the latest transfer data, byte for byte: {text}"
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["seq"], 3);
    assert_eq!(answer["participant"]["identity"], "agent-1");
    let events = read(&app, &format!("{}/events", conversation_path("c-td"))).await;
    assert_eq!(events["events"][2]["name"], "TRANSFER_DATA");

    let no_data = send(
        &app,
        "PUT",
        &transfer_data_path("c-td"),
        json!({ "participant": { "identity": "a" } }).to_string(),
    )
    .await;
    no_data.assert_problem(400);
    assert_eq!(no_data.error_paths(), ["/data"]);
}

async fn a_v4_envelope_with_two_messages_stores_two_events_in_order(backend: Backend) {
    let app = backend.app().await;
    let body = json!({
        "participant": { "identity": "einstein", "name": "Einstein Bot" },
        "messages": [
            { "type": "escalate", "targets": [{ "type": "Skill", "value": "billing" }] },
            { "type": "transferFailed", "sequenceId": 3, "reason": "NoAgentAvailable",
              "description": "nobody is free" }
        ]
    });

    let response = send(&app, "POST", &bot_messages_path("c-sf"), body.to_string()).await;

    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        (
            response.body["firstSeq"].clone(),
            response.body["lastSeq"].clone()
        ),
        (json!(1), json!(2))
    );
    let events = read(&app, &format!("{}/events", conversation_path("c-sf"))).await;
    let names: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["BOT_ESCALATION", "BOT_TRANSFER_FAILED"]);
    assert_eq!(events["events"][1]["payload"], body["messages"][1]);
    assert_eq!(events["events"][0]["participant"]["identity"], "einstein");
    let conversation = read(&app, &conversation_path("c-sf")).await;
    assert_eq!(conversation["hops"][0]["outcome"], "failed");
    assert_eq!(conversation["hops"][0]["reason"], "NoAgentAvailable");
    assert_eq!(conversation["hops"][0]["from"], "einstein");
    assert_eq!(conversation["transfers"]["failed"], 1);
}

async fn an_unsupported_message_type_is_refused_naming_the_supported_ones(backend: Backend) {
    let app = backend.app().await;
    let body = json!({ "message": { "type": "text", "text": "hi" } });

    let response = send(&app, "POST", &bot_messages_path("c-sf"), body.to_string()).await;

    response.assert_problem(400);
    assert_eq!(response.error_paths(), ["/message/type"]);
    let message = response.body["errors"][0]["message"].as_str().unwrap();
    for supported in ["escalate", "transferSucceeded", "transferFailed"] {
        assert!(message.contains(supported), "{message}");
    }
    let both = json!({ "message": { "type": "escalate", "targets": [] }, "messages": [] });
    send(&app, "POST", &bot_messages_path("c-sf"), both.to_string())
        .await
        .assert_problem(400);
    assert_eq!(app.event_count().await, 0);
}

async fn a_salesforce_escalation_reads_back_as_a_hop_to_the_agent_who_entered(backend: Backend) {
    let app = backend.app().await;
    let escalate = json!({ "message": { "type": "escalate",
        "targets": [{ "type": "Skill", "value": "billing" }] } });
    let succeeded = json!({ "message": { "type": "transferSucceeded", "sequenceId": 2 } });

    for body in [escalate, succeeded] {
        let response = send(&app, "POST", &bot_messages_path("c-esc"), body.to_string()).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    app.post_events(
        BOT,
        &batch("c-esc", vec![transfer("NA", "entry", "agent-7")]),
    )
    .await;

    let conversation = read(&app, &conversation_path("c-esc")).await;
    assert_eq!(
        conversation["hops"],
        json!([{ "seq": 1, "at": conversation["hops"][0]["at"], "kind": "ESCALATION",
                 "from": format!("bot:{BOT}"), "to": "agent-7", "outcome": "completed",
                 "reason": null, "targets": [{ "type": "Skill", "value": "billing" }] }])
    );
    assert_eq!(conversation["transfers"]["escalated"], 1);
    let list = read(&app, &format!("/api/v1/bots/{BOT}/conversations")).await;
    assert_eq!(
        list["items"][0]["hops"], conversation["hops"],
        "list items carry hops"
    );
}

async fn the_service_filter_lists_conversations_whose_interaction_names_it(backend: Backend) {
    let app = backend.app().await;
    for (conversation, service) in [("c-billing", "Billing"), ("c-sales", "Sales")] {
        let body = json!({ "agentId": "agent-1", "conversationId": conversation,
            "interaction": { "interactionId": conversation, "type": "chat", "service": service } });
        let response = send(&app, "POST", &interactions_path(BOT), body.to_string()).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    app.post_events(
        BOT,
        &batch("c-hooks-only", vec![transfer("NA", "entry", "a1")]),
    )
    .await;

    let billing = read(
        &app,
        &format!("/api/v1/bots/{BOT}/conversations?service=Billing"),
    )
    .await;
    let unknown = read(
        &app,
        &format!("/api/v1/bots/{BOT}/conversations?service=Nothing"),
    )
    .await;

    let ids: Vec<&str> = billing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["conversationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c-billing"]);
    assert_eq!(unknown["items"], json!([]));
    app.get(
        &format!("/api/v1/bots/{BOT}/conversations?service="),
        &read_token(),
    )
    .await
    .assert_problem(400);
}

async fn the_new_endpoints_need_the_ingest_permission_and_keep_idempotency(backend: Backend) {
    let app = backend.app().await;
    let body =
        json!({ "agentId": "agent-1", "interaction": { "interactionId": "i-1", "type": "email" } })
            .to_string();
    let read_only = Request::post(interactions_path(BOT))
        .header("content-type", "application/json")
        .header("token", read_token())
        .body(Body::from(body.clone()))
        .unwrap();
    app.send(read_only).await.assert_problem(403);
    let keyed = |key: &str| {
        Request::post(interactions_path(BOT))
            .header("content-type", "application/json")
            .header("token", ingest_token())
            .header("idempotency-key", key)
            .body(Body::from(body.clone()))
            .unwrap()
    };

    let first = app.send(keyed("bp-1")).await;
    let replay = app.send(keyed("bp-1")).await;

    assert_eq!(first.status, 200);
    assert_eq!(replay.status, 200);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn browsers_of_configured_origins_may_call_the_api_and_others_may_not() {
    let server = agentassist_hooks::config::ServerSettings {
        cors_origins: vec!["https://desktop.example.com".to_owned()],
        ..Default::default()
    };
    let app = Backend::sqlite()
        .await
        .app_with(Default::default(), server)
        .await;
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri(interactions_path(BOT))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, token")
            .body(Body::empty())
            .unwrap()
    };

    let allowed = app.send(preflight("https://desktop.example.com")).await;
    let other = app.send(preflight("https://elsewhere.example.com")).await;

    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://desktop.example.com"
    );
    let headers = allowed.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("token") && headers.contains("content-type"),
        "{headers}"
    );
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    let unconfigured = Backend::sqlite().await.app().await;
    let none = unconfigured
        .send(preflight("https://desktop.example.com"))
        .await;
    assert!(!none.headers.contains_key("access-control-allow-origin"));
}

/// PostgreSQL's jsonb writes a number in full (`1.7976931348623157e308` as 309 digits); read
/// back, it must be the same double, not "out of range" (found by schemathesis: a 500).
async fn numbers_at_the_edge_of_a_double_read_back_from_the_merged_interaction(backend: Backend) {
    let app = backend.app().await;
    let body = r#"{"agentId": "agent-1", "conversationId": "c-edge", "interaction": {
        "interactionId": "i-edge", "type": "voice", "startTime": 17976931348623157e292,
        "duration": 1.7976931348623157e308, "extra": [-17976931348623157e292, 5e-324]}}"#;
    let stored = send(&app, "POST", &interactions_path(BOT), body.to_owned()).await;
    assert_eq!(stored.status, 200, "{}", stored.body);

    let conversation = read(&app, &conversation_path("c-edge")).await;

    let interaction = &conversation["interaction"];
    assert_eq!(interaction["startTime"].as_f64(), Some(f64::MAX));
    assert_eq!(interaction["duration"].as_f64(), Some(f64::MAX));
    assert_eq!(interaction["extra"][0].as_f64(), Some(f64::MIN));
    let list = read(&app, &format!("/api/v1/bots/{BOT}/conversations")).await;
    assert_eq!(list["items"][0]["interaction"], *interaction);
}
