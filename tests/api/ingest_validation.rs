//! SPEC 1.1: every validation rule, reported as JSON Pointer paths, all at once; nothing
//! stored for a refused request.

on_both_backends!(
    every_rule_of_spec_1_1_is_enforced_at_its_json_pointer,
    every_problem_is_reported_at_once,
    the_documented_spellings_and_optional_fields_are_accepted,
    a_batch_with_one_invalid_event_stores_nothing,
    a_body_that_is_not_json_is_a_400_problem,
);

use crate::common::*;
use serde_json::{Value, json};

fn valid_event() -> Value {
    transfer("NA", "entry", "agentId1")
}

/// A body with one event changed by `edit`.
fn with_event(edit: impl FnOnce(&mut Value)) -> Value {
    let mut event = valid_event();
    edit(&mut event);
    batch("c-validation", vec![event])
}

fn with_body(edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = batch("c-validation", vec![valid_event()]);
    edit(&mut body);
    body
}

fn remove(key: &'static str) -> impl FnOnce(&mut Value) {
    move |value| {
        value.as_object_mut().unwrap().remove(key);
    }
}

fn set(key: &'static str, new: Value) -> impl FnOnce(&mut Value) {
    move |value| {
        value[key] = new;
    }
}

fn set_participant(key: &'static str, new: Value) -> impl FnOnce(&mut Value) {
    move |event| {
        event["participant"][key] = new;
    }
}

async fn every_rule_of_spec_1_1_is_enforced_at_its_json_pointer(backend: Backend) {
    let app = backend.app().await;
    let long = |chars: usize| Value::String("x".repeat(chars));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "conversationId missing",
            with_body(remove("conversationId")),
            "/conversationId",
        ),
        (
            "conversationId not a string",
            with_body(set("conversationId", json!(42))),
            "/conversationId",
        ),
        (
            "conversationId empty",
            with_body(set("conversationId", json!(""))),
            "/conversationId",
        ),
        (
            "conversationId over 256 chars",
            with_body(set("conversationId", long(257))),
            "/conversationId",
        ),
        (
            "conversationId with a control char",
            with_body(set("conversationId", json!("c-1\u{7}"))),
            "/conversationId",
        ),
        (
            "conversationId with a newline",
            with_body(set("conversationId", json!("c-1\n"))),
            "/conversationId",
        ),
        ("botId missing", with_body(remove("botId")), "/botId"),
        (
            "botId not a string",
            with_body(set("botId", json!(["st-1234"]))),
            "/botId",
        ),
        (
            "botId differs from the path",
            with_body(set("botId", json!("st-other"))),
            "/botId",
        ),
        (
            "botId differs only in case",
            with_body(set("botId", json!("ST-1234"))),
            "/botId",
        ),
        ("events missing", with_body(remove("events")), "/events"),
        (
            "events not an array",
            with_body(set("events", json!({"name": "x"}))),
            "/events",
        ),
        (
            "events empty",
            with_body(set("events", json!([]))),
            "/events",
        ),
        (
            "events over 100",
            with_body(set("events", Value::Array(vec![valid_event(); 101]))),
            "/events",
        ),
        (
            "event not an object",
            with_body(set("events", json!(["INTERNAL_TRANSFER_EVENT"]))),
            "/events/0",
        ),
        ("name missing", with_event(remove("name")), "/events/0/name"),
        (
            "name unsupported",
            with_event(set("name", json!("AGENT_JOINED"))),
            "/events/0/name",
        ),
        (
            "name in lower case",
            with_event(set("name", json!("internal_transfer_event"))),
            "/events/0/name",
        ),
        (
            "name not a string",
            with_event(set("name", json!(1))),
            "/events/0/name",
        ),
        (
            "transfertype missing",
            with_event(remove("transfertype")),
            "/events/0/transfertype",
        ),
        (
            "transfertype unknown",
            with_event(set("transfertype", json!("HOT"))),
            "/events/0/transfertype",
        ),
        (
            "transfertype not a string",
            with_event(set("transfertype", json!(true))),
            "/events/0/transfertype",
        ),
        (
            "transition missing",
            with_event(remove("transition")),
            "/events/0/transition",
        ),
        (
            "transition unknown",
            with_event(set("transition", json!("enter"))),
            "/events/0/transition",
        ),
        (
            "isExtAD missing",
            with_event(remove("isExtAD")),
            "/events/0/isExtAD",
        ),
        (
            "isExtAD another string",
            with_event(set("isExtAD", json!("yes"))),
            "/events/0/isExtAD",
        ),
        (
            "isExtAD a number",
            with_event(set("isExtAD", json!(1))),
            "/events/0/isExtAD",
        ),
        (
            "experience missing",
            with_event(remove("experience")),
            "/events/0/experience",
        ),
        (
            "experience unknown",
            with_event(set("experience", json!("sms"))),
            "/events/0/experience",
        ),
        (
            "language over 35 chars",
            with_event(set("language", long(36))),
            "/events/0/language",
        ),
        (
            "language not a string",
            with_event(set("language", json!(7))),
            "/events/0/language",
        ),
        (
            "participant missing",
            with_event(remove("participant")),
            "/events/0/participant",
        ),
        (
            "participant not an object",
            with_event(set("participant", json!("agentId1"))),
            "/events/0/participant",
        ),
        (
            "identity missing",
            with_event(|event| {
                event["participant"]
                    .as_object_mut()
                    .unwrap()
                    .remove("identity");
            }),
            "/events/0/participant/identity",
        ),
        (
            "identity empty",
            with_event(set_participant("identity", json!(""))),
            "/events/0/participant/identity",
        ),
        (
            "identity over 256 chars",
            with_event(set_participant("identity", long(257))),
            "/events/0/participant/identity",
        ),
        (
            "name over 256 chars",
            with_event(set_participant("name", long(257))),
            "/events/0/participant/name",
        ),
        (
            "participant name missing",
            with_event(|event| {
                event["participant"].as_object_mut().unwrap().remove("name");
            }),
            "/events/0/participant/name",
        ),
        (
            "type empty",
            with_event(set_participant("type", json!(""))),
            "/events/0/participant/type",
        ),
        (
            "type over 64 chars",
            with_event(set_participant("type", long(65))),
            "/events/0/participant/type",
        ),
        (
            "type missing",
            with_event(|event| {
                event["participant"].as_object_mut().unwrap().remove("type");
            }),
            "/events/0/participant/type",
        ),
        (
            "customFields not an object",
            with_event(set_participant("customFields", json!(["queue"]))),
            "/events/0/participant/customFields",
        ),
        (
            "transferData over 16 KiB",
            with_event(set(
                "transferData",
                json!({ "blob": "x".repeat(16 * 1024) }),
            )),
            "/events/0/transferData",
        ),
        (
            "END_OF_CONVERSATION with a bad participant",
            batch(
                "c-validation",
                vec![
                    json!({ "name": "END_OF_CONVERSATION", "participant": { "identity": "" , "name": "n", "type": "agent"} }),
                ],
            ),
            "/events/0/participant/identity",
        ),
        (
            "END_OF_CONVERSATION with a bad experience",
            batch(
                "c-validation",
                vec![json!({ "name": "END_OF_CONVERSATION", "experience": "fax" })],
            ),
            "/events/0/experience",
        ),
        (
            "TRIGGER_SUMMARY_EVENT with non-object data",
            batch(
                "c-validation",
                vec![json!({ "name": "TRIGGER_SUMMARY_EVENT", "data": [1, 2] })],
            ),
            "/events/0/data",
        ),
        ("the body is an array", json!([valid_event()]), ""),
    ];

    for (case, body, path) in cases {
        let response = app.post_events(BOT, &body).await;

        assert_eq!(response.status, 400, "{case}: {}", response.body);
        response.assert_problem(400);
        assert_eq!(response.body["type"], "/problems/validation", "{case}");
        assert!(
            response
                .error_paths()
                .iter()
                .any(|reported| reported == path),
            "{case}: expected a problem at {path:?}, got {:?}",
            response.error_paths()
        );
    }
    assert_eq!(
        app.event_count().await,
        0,
        "a refused request stores nothing"
    );
}

async fn every_problem_is_reported_at_once(backend: Backend) {
    let app = backend.app().await;
    let body = json!({
        "conversationId": "",
        "botId": "st-other",
        "events": [
            valid_event(),
            { "name": "INTERNAL_TRANSFER_EVENT", "transfertype": "hot", "transition": "sideways",
              "isExtAD": "maybe", "experience": "fax", "participant": { "identity": "" , "name": "", "type": "agent" } },
            { "name": "AGENT_JOINED" }
        ]
    });

    let response = app.post_events(BOT, &body).await;

    response.assert_problem(400);
    let mut paths = response.error_paths();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/botId",
            "/conversationId",
            "/events/1/experience",
            "/events/1/isExtAD",
            "/events/1/participant/identity",
            "/events/1/transfertype",
            "/events/1/transition",
            "/events/2/name",
        ]
    );
    assert_eq!(response.body["detail"], "8 problems in the request");
}

async fn the_documented_spellings_and_optional_fields_are_accepted(backend: Backend) {
    let app = backend.app().await;
    let accepted: Vec<(&str, Value)> = vec![
        (
            "lower-case transfertype",
            with_event(set("transfertype", json!("cold"))),
        ),
        (
            "mixed-case transfertype",
            with_event(set("transfertype", json!("Redial"))),
        ),
        (
            "upper-case transition",
            with_event(set("transition", json!("ENTRY"))),
        ),
        (
            "isExtAD as the string \"true\"",
            with_event(set("isExtAD", json!("true"))),
        ),
        (
            "isExtAD as the string \"false\"",
            with_event(set("isExtAD", json!("false"))),
        ),
        (
            "isExtAD as boolean false",
            with_event(set("isExtAD", json!(false))),
        ),
        (
            "capitalised experience",
            with_event(set("experience", json!("Chat"))),
        ),
        (
            "email experience",
            with_event(set("experience", json!("email"))),
        ),
        ("no language", with_event(remove("language"))),
        (
            "a 35-char language",
            with_event(set("language", Value::String("x".repeat(35)))),
        ),
        (
            "empty participant name",
            with_event(set_participant("name", json!(""))),
        ),
        (
            "customFields",
            with_event(set_participant(
                "customFields",
                json!({ "agentEmail": "a@example.com", "queueId": "q1" }),
            )),
        ),
        (
            "transferData of any JSON type",
            with_event(set("transferData", json!([1, "two", { "three": 3 }]))),
        ),
        (
            "unknown extra fields",
            with_event(set("somethingNew", json!({ "nested": true }))),
        ),
        (
            "a 256-char conversationId",
            with_body(set("conversationId", Value::String("c".repeat(256)))),
        ),
        (
            "100 events",
            with_body(set("events", Value::Array(vec![valid_event(); 100]))),
        ),
        (
            "bare END_OF_CONVERSATION",
            batch("c-eoc", vec![json!({ "name": "END_OF_CONVERSATION" })]),
        ),
        (
            "END_OF_CONVERSATION with every optional field",
            batch(
                "c-eoc",
                vec![
                    json!({ "name": "END_OF_CONVERSATION", "reason": "customer hung up", "language": "en", "experience": "voice",
                "participant": { "identity": "agentId1", "name": "A", "type": "agent" } }),
                ],
            ),
        ),
        (
            "bare TRIGGER_SUMMARY_EVENT",
            batch("c-sum", vec![json!({ "name": "TRIGGER_SUMMARY_EVENT" })]),
        ),
        (
            "TRIGGER_SUMMARY_EVENT with data",
            batch(
                "c-sum",
                vec![json!({ "name": "TRIGGER_SUMMARY_EVENT", "data": { "k": "v" } })],
            ),
        ),
    ];

    for (case, body) in accepted {
        let response = app.post_events(BOT, &body).await;

        assert_eq!(response.status, 200, "{case}: {}", response.body);
        assert_eq!(response.body["STATUS"], "OK", "{case}");
    }
}

async fn a_batch_with_one_invalid_event_stores_nothing(backend: Backend) {
    let app = backend.app().await;
    let mut broken = transfer("COLD", "exit", "agentId1");
    broken["transition"] = json!("leave");
    let body = batch(
        "c-atomic",
        vec![
            transfer("NA", "entry", "agentId1"),
            transfer("COLD", "entry", "agentId2"),
            broken,
        ],
    );

    let response = app.post_events(BOT, &body).await;

    response.assert_problem(400);
    assert_eq!(response.error_paths(), ["/events/2/transition"]);
    assert_eq!(app.event_count().await, 0);
    assert_eq!(app.conversation_count().await, 0);
}

async fn a_body_that_is_not_json_is_a_400_problem(backend: Backend) {
    let app = backend.app().await;
    for body in ["", "{", "not json", "{\"conversationId\": \"c\",}", "\u{0}"] {
        let response = app
            .send(hooks_request(BOT, &ingest_token(), body.to_owned()))
            .await;

        response.assert_problem(400);
        assert_eq!(
            response.body["type"], "/problems/malformed-json",
            "{body:?}"
        );
    }
    assert_eq!(app.event_count().await, 0);
}
