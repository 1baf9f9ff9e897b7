//! SPEC 4: the query API end to end, on both stores, read back over HTTP.

on_both_backends!(
    the_cold_transfer_flow_reads_back_as_an_ended_conversation,
    an_active_conversation_shows_its_open_stint_counted_to_now,
    a_participants_total_is_the_sum_of_their_stint_durations,
    events_carry_each_payload_exactly_as_received,
    end_and_summary_events_have_no_transfer_type_or_transition,
    each_event_lists_the_codes_of_its_anomalies,
    events_page_by_after_seq_until_next_after_seq_is_null,
    the_events_limit_defaults_to_100_and_goes_up_to_1000,
    event_limits_out_of_range_are_problems,
    events_of_an_unknown_conversation_are_not_found,
    conversations_are_listed_newest_activity_first,
    the_list_filters_by_status,
    the_participant_filter_finds_everyone_who_ever_had_a_stint,
    the_time_window_matches_lifetimes_that_overlap_it,
    every_window_pages_through_exactly_the_overlapping_conversations,
    invalid_list_parameters_are_problems,
    paging_survives_new_conversations_arriving_between_pages,
    a_cursor_the_api_did_not_issue_is_a_problem,
    an_agents_stints_span_conversations_newest_first,
    agent_stints_filter_by_window_and_page_by_cursor,
    transfer_data_is_the_last_one_sent,
    transfer_data_of_any_json_kind_reads_back_as_sent,
    transfer_data_is_not_found_until_some_was_sent,
    another_bots_conversation_is_answered_like_a_missing_one,
    another_bots_activity_never_shows_in_lists_or_stints,
    an_ingest_only_app_is_forbidden_from_the_query_api,
    the_query_api_needs_a_valid_token,
    transfer_data_is_returned_byte_for_byte,
    a_conversation_with_many_participants_is_read_a_part_at_a_time,
);

use crate::common::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SUMMARY_KEYS: [&str; 14] = [
    "anomalyCount",
    "botId",
    "conversationId",
    "endedAt",
    "eventCount",
    "experience",
    "hops",
    "interaction",
    "language",
    "lastEventAt",
    "participantsPresent",
    "startedAt",
    "status",
    "transfers",
];
const STINT_KEYS: [&str; 5] = [
    "durationSeconds",
    "entryType",
    "exitType",
    "joinedAt",
    "leftAt",
];

fn list_path(query: &str) -> String {
    format!("/api/v1/bots/{BOT}/conversations?{query}")
}

fn stints_path(identity: &str, query: &str) -> String {
    format!("/api/v1/bots/{BOT}/participants/{identity}/stints?{query}")
}

/// Long enough for the next event to get a later `receivedAt` than the last one.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn read(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, &read_token()).await;
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    assert_eq!(response.headers["content-type"], "application/json");
    response.body
}

fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn sorted(mut keys: Vec<&'static str>) -> Vec<&'static str> {
    keys.sort_unstable();
    keys
}

fn time_of(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a time string"), &Rfc3339)
        .unwrap_or_else(|error| panic!("{value} is not RFC 3339: {error}"))
}

/// A time for a query string, shifted by whole microseconds (the stores' precision).
fn shifted(value: &Value, micros: i64) -> String {
    (time_of(value) + time::Duration::microseconds(micros))
        .format(&Rfc3339)
        .unwrap()
}

fn conversation_ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["conversationId"].as_str().unwrap())
        .collect()
}

fn millis(seconds: &Value) -> i64 {
    (seconds.as_f64().expect("a number of seconds") * 1000.0).round() as i64
}

/// The item of a list page for `conversation`.
fn item<'a>(page: &'a Value, conversation: &str) -> &'a Value {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["conversationId"] == conversation)
        .unwrap_or_else(|| panic!("{conversation} is not in {page}"))
}

fn event_with_transfer_data(
    transfer_type: &str,
    transition: &str,
    agent: &str,
    data: Value,
) -> Value {
    let mut event = transfer(transfer_type, transition, agent);
    event["transferData"] = data;
    event
}

// ---- 4.1 one conversation ----

async fn the_cold_transfer_flow_reads_back_as_an_ended_conversation(backend: Backend) {
    let app = backend.app().await;
    // The vendor's cold-transfer walk-through: each agent leaves before the next arrives.
    let flow = [
        transfer("NA", "entry", "a1"),
        transfer("COLD", "exit", "a1"),
        transfer("COLD", "entry", "a2"),
        transfer("COLD", "exit", "a2"),
        transfer("COLD", "entry", "a3"),
        transfer("NA", "exit", "a3"),
    ];
    for event in flow {
        post(&app, "c-cold", vec![event]).await;
        pause().await;
    }

    let body = read(&app, &conversation_path("c-cold")).await;

    let mut expected_keys = SUMMARY_KEYS.to_vec();
    expected_keys.push("participants");
    assert_eq!(keys(&body), sorted(expected_keys));
    assert_eq!(body["botId"], BOT);
    assert_eq!(body["conversationId"], "c-cold");
    assert_eq!(body["status"], "ended");
    assert_eq!(body["experience"], "voice");
    assert_eq!(body["language"], "en");
    assert_eq!(body["eventCount"], 6);
    assert_eq!(body["anomalyCount"], 0);
    assert_eq!(
        body["transfers"],
        json!({ "cold": 2, "warm": 0, "redial": 0, "escalated": 0, "failed": 0 })
    );
    assert_eq!(body["participantsPresent"], json!([]));
    assert!(
        body["endedAt"].is_string(),
        "an ended conversation has endedAt"
    );
    assert_eq!(body["lastEventAt"], body["endedAt"]);

    let participants = body["participants"].as_array().unwrap();
    let identities: Vec<&str> = participants
        .iter()
        .map(|participant| participant["identity"].as_str().unwrap())
        .collect();
    assert_eq!(identities, ["a1", "a2", "a3"], "ordered by first entry");
    let expected_types = [("NA", "COLD"), ("COLD", "COLD"), ("COLD", "NA")];
    let mut previous_left_at = None;
    for (participant, (entry_type, exit_type)) in participants.iter().zip(expected_types) {
        let identity = participant["identity"].as_str().unwrap();
        assert_eq!(
            keys(participant),
            ["identity", "name", "stints", "totalSeconds", "type"]
        );
        assert_eq!(participant["name"], format!("Name of {identity}"));
        assert_eq!(participant["type"], "agent");
        let stints = participant["stints"].as_array().unwrap();
        assert_eq!(stints.len(), 1, "{identity} had one stint");
        let stint = &stints[0];
        assert_eq!(keys(stint), STINT_KEYS);
        assert_eq!(stint["entryType"], entry_type, "{identity}");
        assert_eq!(stint["exitType"], exit_type, "{identity}");
        let (joined_at, left_at) = (time_of(&stint["joinedAt"]), time_of(&stint["leftAt"]));
        assert!(joined_at < left_at, "{identity} stayed a while");
        if let Some(previous) = previous_left_at {
            assert!(
                previous < joined_at,
                "{identity} came after the last one left"
            );
        }
        previous_left_at = Some(left_at);
        let seconds = stint["durationSeconds"].as_f64().unwrap();
        assert!(seconds >= 0.0);
        assert!(
            (seconds - (left_at - joined_at).as_seconds_f64()).abs() <= 0.0005,
            "durationSeconds is leftAt - joinedAt to the millisecond"
        );
        assert_eq!(participant["totalSeconds"], stint["durationSeconds"]);
    }
    assert_eq!(body["startedAt"], participants[0]["stints"][0]["joinedAt"]);
    assert_eq!(body["endedAt"], participants[2]["stints"][0]["leftAt"]);
}

async fn an_active_conversation_shows_its_open_stint_counted_to_now(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-live", vec![transfer("NA", "entry", "a1")]).await;
    post(&app, "c-live", vec![transfer("COLD", "entry", "a2")]).await;
    post(&app, "c-live", vec![transfer("COLD", "exit", "a1")]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;

    let body = read(&app, &conversation_path("c-live")).await;

    assert_eq!(body["status"], "active");
    assert_eq!(body["endedAt"], Value::Null);
    assert!(body.get("endedAt").is_some(), "endedAt is present, as null");
    assert_eq!(body["participantsPresent"], json!(["a2"]));
    assert_eq!(
        body["transfers"],
        json!({ "cold": 1, "warm": 0, "redial": 0, "escalated": 0, "failed": 0 })
    );
    let closed = &body["participants"][0]["stints"][0];
    assert_eq!(closed["exitType"], "COLD");
    let open = &body["participants"][1]["stints"][0];
    assert_eq!(
        keys(open),
        STINT_KEYS,
        "leftAt and exitType are present, as null"
    );
    assert_eq!(open["leftAt"], Value::Null);
    assert_eq!(open["exitType"], Value::Null);
    assert_eq!(open["entryType"], "COLD");
    assert!(
        open["durationSeconds"].as_f64().unwrap() >= 0.029,
        "an open stint counts up to now: {open}"
    );
    assert_eq!(
        body["participants"][1]["totalSeconds"],
        open["durationSeconds"]
    );
}

async fn a_participants_total_is_the_sum_of_their_stint_durations(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-back", vec![transfer("NA", "entry", "a1")]).await;
    for (transfer_type, transition) in [
        ("COLD", "exit"),
        ("COLD", "entry"),
        ("WARM", "exit"),
        ("REDIAL", "entry"),
        ("COLD", "exit"),
        ("WARM", "entry"),
        ("COLD", "exit"),
    ] {
        pause().await;
        post(
            &app,
            "c-back",
            vec![transfer(transfer_type, transition, "a1")],
        )
        .await;
    }

    let body = read(&app, &conversation_path("c-back")).await;

    let participant = &body["participants"][0];
    let stints = participant["stints"].as_array().unwrap();
    assert_eq!(stints.len(), 4);
    let entry_types: Vec<&str> = stints
        .iter()
        .map(|stint| stint["entryType"].as_str().unwrap())
        .collect();
    assert_eq!(entry_types, ["NA", "COLD", "REDIAL", "WARM"]);
    let sum: i64 = stints
        .iter()
        .map(|stint| millis(&stint["durationSeconds"]))
        .sum();
    assert_eq!(
        millis(&participant["totalSeconds"]),
        sum,
        "totalSeconds adds up the durations shown: {participant}"
    );
    assert_eq!(body["status"], "idle");
}

// ---- 4.2 events ----

/// An event as some integration might write it: keys in another order, odd spacing,
/// escapes, number spellings and fields the contract does not know.
const ODD_EVENT: &str = r#"{ "participant" : { "type":"agent" , "name":"Zo\u00eb",
    "identity":"a1", "customFields": {"queueId": "q-7", "agentEmail":"zoe@example.com"} },
  "transition":"ENTRY",	"transfertype" : "cold",
  "x-vendor": [1, 2.50, 1E3, {"z": null}], "isExtAD":"true", "experience":"Voice",
  "name":"INTERNAL_TRANSFER_EVENT" }"#;

async fn events_carry_each_payload_exactly_as_received(backend: Backend) {
    let app = backend.app().await;
    let body = format!(
        "{{ \"events\" : [ {ODD_EVENT} ],\n \"botId\": \"{BOT}\", \"conversationId\":\"c-raw\" }}"
    );
    let posted = app.post_raw(&body).await;
    assert_eq!(posted.status, 200, "{}", posted.body);

    let (status, text) = app
        .get_text(
            &format!("{}/events", conversation_path("c-raw")),
            &read_token(),
        )
        .await;

    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(&format!("\"payload\":{ODD_EVENT}")),
        "the payload is the event byte for byte: {text}"
    );
    let page: Value = serde_json::from_str(&text).unwrap();
    let event = &page["events"][0];
    assert_eq!(
        keys(event),
        [
            "anomalies",
            "name",
            "participant",
            "payload",
            "receivedAt",
            "seq",
            "transferType",
            "transition"
        ]
    );
    assert_eq!(event["seq"], 1);
    assert_eq!(event["name"], "INTERNAL_TRANSFER_EVENT");
    assert_eq!(
        event["transferType"], "COLD",
        "upper case, though sent as cold"
    );
    assert_eq!(
        event["transition"], "entry",
        "lower case, though sent as ENTRY"
    );
    assert_eq!(
        event["participant"],
        json!({ "identity": "a1", "name": "Zoë", "type": "agent" })
    );
    assert_eq!(event["anomalies"], json!([]));
    assert_eq!(page["nextAfterSeq"], Value::Null);
    let summary = read(&app, &conversation_path("c-raw")).await;
    assert_eq!(event["receivedAt"], summary["startedAt"]);
}

async fn end_and_summary_events_have_no_transfer_type_or_transition(backend: Backend) {
    let app = backend.app().await;
    post(
        &app,
        "c-kinds",
        vec![
            transfer("NA", "entry", "a1"),
            json!({ "name": "END_OF_CONVERSATION", "reason": "customer hung up" }),
            json!({ "name": "TRIGGER_SUMMARY_EVENT", "data": { "summary": "billing" } }),
        ],
    )
    .await;

    let page = read(&app, &format!("{}/events", conversation_path("c-kinds"))).await;

    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["transferType"], "NA");
    assert_eq!(events[0]["transition"], "entry");
    for event in &events[1..] {
        assert_eq!(
            keys(event),
            [
                "anomalies",
                "name",
                "participant",
                "payload",
                "receivedAt",
                "seq"
            ],
            "{event}"
        );
        assert_eq!(event["participant"], Value::Null);
    }
    assert_eq!(events[1]["name"], "END_OF_CONVERSATION");
    assert_eq!(events[1]["payload"]["reason"], "customer hung up");
    assert_eq!(
        events[1]["anomalies"],
        json!(["closed_with_participants_present"])
    );
    assert_eq!(events[2]["name"], "TRIGGER_SUMMARY_EVENT");
    assert_eq!(events[2]["anomalies"], json!([]));
    assert_eq!(
        events[2]["payload"]["data"],
        json!({ "summary": "billing" })
    );
}

async fn each_event_lists_the_codes_of_its_anomalies(backend: Backend) {
    let app = backend.app().await;
    post(
        &app,
        "c-odd",
        vec![
            transfer("NA", "entry", "a1"),
            transfer("NA", "entry", "a1"),
            transfer("COLD", "exit", "ghost"),
            transfer("NA", "entry", "a2"),
            transfer("NA", "exit", "a1"),
        ],
    )
    .await;

    let page = read(&app, &format!("{}/events", conversation_path("c-odd"))).await;

    let anomalies: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| &event["anomalies"])
        .collect();
    assert_eq!(
        anomalies,
        [
            &json!([]),
            &json!(["duplicate_entry"]),
            &json!(["exit_without_entry"]),
            &json!(["na_entry_while_active"]),
            &json!(["na_exit_while_others_present"]),
        ]
    );
    let summary = read(&app, &conversation_path("c-odd")).await;
    assert_eq!(summary["anomalyCount"], 4);
}

async fn events_page_by_after_seq_until_next_after_seq_is_null(backend: Backend) {
    let app = backend.app().await;
    let agents = ["a1", "a2", "a3", "a4", "a5", "a6", "a7"];
    post(
        &app,
        "c-pages",
        agents[..4]
            .iter()
            .map(|agent| transfer("WARM", "entry", agent))
            .collect(),
    )
    .await;
    post(
        &app,
        "c-pages",
        agents[4..]
            .iter()
            .map(|agent| transfer("WARM", "entry", agent))
            .collect(),
    )
    .await;
    let events = format!("{}/events", conversation_path("c-pages"));
    let seqs = |page: &Value| -> Vec<i64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["seq"].as_i64().unwrap())
            .collect()
    };

    let first = read(&app, &format!("{events}?limit=3")).await;
    let second = read(&app, &format!("{events}?afterSeq=3&limit=3")).await;
    let last = read(&app, &format!("{events}?afterSeq=6&limit=3")).await;
    let exact = read(&app, &format!("{events}?afterSeq=4&limit=3")).await;
    let beyond = read(&app, &format!("{events}?afterSeq=7")).await;

    assert_eq!(
        (seqs(&first), &first["nextAfterSeq"]),
        (vec![1, 2, 3], &json!(3))
    );
    assert_eq!(
        (seqs(&second), &second["nextAfterSeq"]),
        (vec![4, 5, 6], &json!(6))
    );
    assert_eq!(
        (seqs(&last), &last["nextAfterSeq"]),
        (vec![7], &Value::Null)
    );
    assert_eq!(
        (seqs(&exact), &exact["nextAfterSeq"]),
        (vec![5, 6, 7], &Value::Null),
        "a page that ends on the last event has no next page"
    );
    assert_eq!(beyond, json!({ "events": [], "nextAfterSeq": null }));
}

async fn the_events_limit_defaults_to_100_and_goes_up_to_1000(backend: Backend) {
    let app = backend.app().await;
    for _ in 0..11 {
        let summaries = (0..100)
            .map(|index| json!({ "name": "TRIGGER_SUMMARY_EVENT", "data": { "n": index } }))
            .collect();
        post(&app, "c-long", summaries).await;
    }
    let events = format!("{}/events", conversation_path("c-long"));

    let default = read(&app, &events).await;
    let most = read(&app, &format!("{events}?limit=1000")).await;
    let rest = read(&app, &format!("{events}?afterSeq=1000&limit=1000")).await;

    assert_eq!(default["events"].as_array().unwrap().len(), 100);
    assert_eq!(default["nextAfterSeq"], 100);
    assert_eq!(most["events"].as_array().unwrap().len(), 1000);
    assert_eq!(most["events"][999]["seq"], 1000);
    assert_eq!(most["nextAfterSeq"], 1000);
    assert_eq!(rest["events"].as_array().unwrap().len(), 100);
    assert_eq!(rest["events"][0]["seq"], 1001);
    assert_eq!(rest["nextAfterSeq"], Value::Null);
}

async fn event_limits_out_of_range_are_problems(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-limits", vec![transfer("NA", "entry", "a1")]).await;
    let events = format!("{}/events", conversation_path("c-limits"));

    for (query, path) in [
        ("limit=1001", "/limit"),
        ("limit=0", "/limit"),
        ("limit=-1", "/limit"),
        ("limit=abc", "/limit"),
        ("limit=2.5", "/limit"),
        ("limit=", "/limit"),
        ("afterSeq=-1", "/afterSeq"),
        ("afterSeq=one", "/afterSeq"),
    ] {
        let response = app.get(&format!("{events}?{query}"), &read_token()).await;

        response.assert_problem(400);
        assert_eq!(response.error_paths(), [path], "{query}");
    }
    let both = app
        .get(&format!("{events}?limit=0&afterSeq=x"), &read_token())
        .await;
    both.assert_problem(400);
    let mut paths = both.error_paths();
    paths.sort();
    assert_eq!(paths, ["/afterSeq", "/limit"], "every problem is reported");
}

async fn events_of_an_unknown_conversation_are_not_found(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-known", vec![transfer("NA", "entry", "a1")]).await;

    let unknown = app
        .get(
            &format!("{}/events", conversation_path("c-unknown")),
            &read_token(),
        )
        .await;
    let past_the_end = read(
        &app,
        &format!("{}/events?afterSeq=99", conversation_path("c-known")),
    )
    .await;

    unknown.assert_problem(404);
    assert_eq!(
        past_the_end,
        json!({ "events": [], "nextAfterSeq": null }),
        "a known conversation read past its end is an empty page, not a 404"
    );
}

// ---- 4.3 the conversation list ----

async fn conversations_are_listed_newest_activity_first(backend: Backend) {
    let app = backend.app().await;
    for conversation in ["c-first", "c-second", "c-third"] {
        post(&app, conversation, vec![transfer("NA", "entry", "a1")]).await;
        pause().await;
    }
    post(&app, "c-first", vec![transfer("COLD", "entry", "a2")]).await;

    let page = read(&app, &list_path("")).await;

    assert_eq!(keys(&page), ["items", "nextCursor"]);
    assert_eq!(conversation_ids(&page), ["c-first", "c-third", "c-second"]);
    assert_eq!(page["nextCursor"], Value::Null);
    let items = page["items"].as_array().unwrap();
    for item in items {
        assert_eq!(keys(item), sorted(SUMMARY_KEYS.to_vec()), "no participants");
    }
    let last_event_times: Vec<OffsetDateTime> = items
        .iter()
        .map(|item| time_of(&item["lastEventAt"]))
        .collect();
    assert!(last_event_times.is_sorted_by(|newer, older| newer > older));
    let detail = read(&app, &conversation_path("c-first")).await;
    let mut expected = detail.clone();
    expected.as_object_mut().unwrap().remove("participants");
    assert_eq!(
        items[0], expected,
        "an item is the 4.1 object without participants"
    );
}

async fn the_list_filters_by_status(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-active", vec![transfer("NA", "entry", "a1")]).await;
    post(
        &app,
        "c-idle",
        vec![
            transfer("NA", "entry", "a2"),
            transfer("COLD", "exit", "a2"),
        ],
    )
    .await;
    post(
        &app,
        "c-ended",
        vec![transfer("NA", "entry", "a3"), transfer("NA", "exit", "a3")],
    )
    .await;

    for status in ["active", "idle", "ended"] {
        let page = read(&app, &list_path(&format!("status={status}"))).await;

        assert_eq!(conversation_ids(&page), [format!("c-{status}")]);
        assert_eq!(page["items"][0]["status"], status);
    }
}

async fn the_participant_filter_finds_everyone_who_ever_had_a_stint(backend: Backend) {
    let app = backend.app().await;
    post(
        &app,
        "c-left",
        vec![
            transfer("NA", "entry", "a1"),
            transfer("COLD", "entry", "a2"),
            transfer("COLD", "exit", "a1"),
        ],
    )
    .await;
    pause().await;
    post(&app, "c-other", vec![transfer("NA", "entry", "a2")]).await;
    pause().await;
    post(&app, "c-present", vec![transfer("NA", "entry", "a1")]).await;
    pause().await;
    // An exit without an entry opens no stint.
    post(&app, "c-ghost", vec![transfer("COLD", "exit", "a1")]).await;

    let a1 = read(&app, &list_path("participant=a1")).await;
    let a2 = read(&app, &list_path("participant=a2")).await;
    let nobody = read(&app, &list_path("participant=nobody")).await;
    let a1_active = read(&app, &list_path("participant=a1&status=active")).await;

    assert_eq!(conversation_ids(&a1), ["c-present", "c-left"]);
    assert_eq!(item(&a1, "c-left")["participantsPresent"], json!(["a2"]));
    assert_eq!(conversation_ids(&a2), ["c-other", "c-left"]);
    assert_eq!(nobody, json!({ "items": [], "nextCursor": null }));
    assert_eq!(conversation_ids(&a1_active), ["c-present", "c-left"]);
}

async fn the_time_window_matches_lifetimes_that_overlap_it(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-long", vec![transfer("NA", "entry", "x1")]).await;
    post(&app, "c-idle", vec![transfer("NA", "entry", "x2")]).await;
    post(&app, "c-idle", vec![transfer("COLD", "exit", "x2")]).await;
    pause().await;
    post(&app, "c-before", vec![transfer("NA", "entry", "x3")]).await;
    post(&app, "c-before", vec![transfer("NA", "exit", "x3")]).await;
    pause().await;
    post(&app, "c-during", vec![transfer("NA", "entry", "x4")]).await;
    pause().await;
    post(&app, "c-during", vec![transfer("NA", "exit", "x4")]).await;
    pause().await;
    post(&app, "c-after", vec![transfer("NA", "entry", "x5")]).await;
    let all = read(&app, &list_path("")).await;
    let before_ended = &item(&all, "c-before")["endedAt"];
    let during_ended = &item(&all, "c-during")["endedAt"];
    let long_started = &item(&all, "c-long")["startedAt"];
    let after_started = &item(&all, "c-after")["startedAt"];
    let window = |from: String, to: String| list_path(&format!("from={from}&to={to}"));

    let after_the_early_end = read(
        &app,
        &window(shifted(before_ended, 1), shifted(after_started, 0)),
    )
    .await;
    let from_the_early_end = read(
        &app,
        &window(shifted(before_ended, 0), shifted(after_started, 0)),
    )
    .await;
    let to_just_after_the_last_start = read(
        &app,
        &window(shifted(before_ended, 1), shifted(after_started, 1)),
    )
    .await;
    let from_only = read(
        &app,
        &list_path(&format!("from={}", shifted(during_ended, 1))),
    )
    .await;
    let to_only = read(
        &app,
        &list_path(&format!("to={}", shifted(long_started, 1))),
    )
    .await;
    let to_the_first_start = read(
        &app,
        &list_path(&format!("to={}", shifted(long_started, 0))),
    )
    .await;

    assert_eq!(
        conversation_ids(&after_the_early_end),
        ["c-during", "c-idle", "c-long"],
        "open conversations that started before `from` overlap; one that ended before \
         `from` does not, nor one that started at `to`"
    );
    assert_eq!(
        conversation_ids(&from_the_early_end),
        ["c-during", "c-before", "c-idle", "c-long"],
        "a lifetime includes its end"
    );
    assert_eq!(
        conversation_ids(&to_just_after_the_last_start),
        ["c-after", "c-during", "c-idle", "c-long"]
    );
    assert_eq!(
        conversation_ids(&from_only),
        ["c-after", "c-idle", "c-long"],
        "conversations that have not ended live until now"
    );
    assert_eq!(conversation_ids(&to_only), ["c-long"]);
    assert_eq!(conversation_ids(&to_the_first_start), Vec::<&str>::new());
}

/// A conversation's lifetime as the list reports it.
struct Lifetime {
    conversation: String,
    started_at: OffsetDateTime,
    ended_at: Option<OffsetDateTime>,
    last_event_at: OffsetDateTime,
}

impl Lifetime {
    /// SPEC 4.3: `[startedAt, endedAt or now]` overlaps `[from, to)`.
    fn overlaps(&self, from: Option<OffsetDateTime>, to: Option<OffsetDateTime>) -> bool {
        let end = self.ended_at.unwrap_or_else(OffsetDateTime::now_utc);
        to.is_none_or(|to| self.started_at < to) && from.is_none_or(|from| end >= from)
    }
}

/// Every page of the list for `query`, `limit` at a time.
async fn all_pages(app: &TestApp, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = read(app, &list_path(&format!("{query}&limit={limit}{cursor}"))).await;
        let items = conversation_ids(&page);
        assert!(items.len() <= limit);
        ids.extend(items.into_iter().map(str::to_owned));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
}

async fn every_window_pages_through_exactly_the_overlapping_conversations(backend: Backend) {
    let app = backend.app().await;
    let end = || json!({ "name": "END_OF_CONVERSATION" });
    let summary = || json!({ "name": "TRIGGER_SUMMARY_EVENT" });
    // Interleaved lives: ended, idle, heard of after the end, reopened, still going.
    let script = [
        ("w-a", transfer("NA", "entry", "a")),
        ("w-b", transfer("NA", "entry", "b")),
        ("w-a", transfer("NA", "exit", "a")),
        ("w-c", transfer("NA", "entry", "c")),
        ("w-b", transfer("COLD", "exit", "b")),
        ("w-d", transfer("NA", "entry", "d")),
        ("w-a", summary()),
        ("w-c", transfer("NA", "exit", "c")),
        ("w-e", transfer("NA", "entry", "e")),
        ("w-c", transfer("REDIAL", "entry", "c")),
        ("w-f", transfer("NA", "entry", "f")),
        ("w-f", end()),
        ("w-d", transfer("COLD", "entry", "d2")),
        ("w-e", transfer("NA", "exit", "e")),
        ("w-g", transfer("NA", "entry", "g")),
        ("w-d", transfer("NA", "exit", "d")),
        ("w-f", summary()),
    ];
    for (conversation, event) in script {
        post(&app, conversation, vec![event]).await;
        pause().await;
    }
    let everything = read(&app, &list_path("limit=500")).await;
    let lives: Vec<Lifetime> = everything["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| Lifetime {
            conversation: item["conversationId"].as_str().unwrap().to_owned(),
            started_at: time_of(&item["startedAt"]),
            ended_at: item["endedAt"]
                .is_string()
                .then(|| time_of(&item["endedAt"])),
            last_event_at: time_of(&item["lastEventAt"]),
        })
        .collect();
    assert_eq!(lives.len(), 7);
    // Every time the API reported, and the microsecond after it: each edge of each life.
    let mut edges: Vec<OffsetDateTime> = lives
        .iter()
        .flat_map(|life| {
            [
                Some(life.started_at),
                life.ended_at,
                Some(life.last_event_at),
            ]
        })
        .flatten()
        .flat_map(|at| [at, at + time::Duration::microseconds(1)])
        .collect();
    edges.sort();
    edges.dedup();
    let bounds: Vec<Option<OffsetDateTime>> = std::iter::once(None)
        .chain(edges.iter().copied().map(Some))
        .collect();
    let format = |at: OffsetDateTime| at.format(&Rfc3339).unwrap();

    let mut windows = 0;
    for (index, from) in bounds.iter().enumerate() {
        for to in bounds.iter().skip(index + 1).step_by(3).chain([&None]) {
            if from.is_none() && to.is_none() {
                continue;
            }
            let mut query = String::from("x=1");
            if let Some(from) = from {
                query += &format!("&from={}", format(*from));
            }
            if let Some(to) = to {
                query += &format!("&to={}", format(*to));
            }

            let listed = all_pages(&app, &query, 2).await;

            let mut expected: Vec<&Lifetime> = lives
                .iter()
                .filter(|life| life.overlaps(*from, *to))
                .collect();
            expected.sort_by(|a, b| {
                (b.last_event_at, &b.conversation).cmp(&(a.last_event_at, &a.conversation))
            });
            let expected: Vec<&str> = expected
                .iter()
                .map(|life| life.conversation.as_str())
                .collect();
            assert_eq!(listed, expected, "{query}");
            windows += 1;
        }
    }
    assert!(windows > 100, "{windows} windows tried");
}

async fn invalid_list_parameters_are_problems(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-any", vec![transfer("NA", "entry", "a1")]).await;

    for (query, paths) in [
        ("status=open", vec!["/status"]),
        ("status=ACTIVE", vec!["/status"]),
        ("from=yesterday", vec!["/from"]),
        ("from=2026-01-01", vec!["/from"]),
        // A bare `+` in a query string is a space.
        ("from=2026-01-01T00:00:00+02:00", vec!["/from"]),
        ("to=2026-13-01T00:00:00Z", vec!["/to"]),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            vec!["/to"],
        ),
        (
            "from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            vec!["/to"],
        ),
        ("limit=501", vec!["/limit"]),
        ("limit=0", vec!["/limit"]),
        ("participant=", vec!["/participant"]),
        (
            "status=open&limit=0&from=x",
            vec!["/from", "/limit", "/status"],
        ),
    ] {
        let response = app.get(&list_path(query), &read_token()).await;

        response.assert_problem(400);
        let mut reported = response.error_paths();
        reported.sort();
        assert_eq!(reported, paths, "{query}");
    }
    let with_offset = read(
        &app,
        &list_path("from=2026-01-01T00:00:00%2B02:00&limit=500"),
    )
    .await;
    assert_eq!(
        conversation_ids(&with_offset),
        ["c-any"],
        "any RFC 3339 offset"
    );
}

async fn paging_survives_new_conversations_arriving_between_pages(backend: Backend) {
    let app = backend.app().await;
    let originals: Vec<String> = (0..120).map(|index| format!("c-{index:03}")).collect();
    for conversation in &originals {
        post(&app, conversation, vec![transfer("NA", "entry", "a1")]).await;
    }

    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("limit=25&cursor={cursor}"),
            None => "limit=25".to_owned(),
        };
        let page = read(&app, &list_path(&query)).await;
        pages += 1;
        seen.extend(conversation_ids(&page).into_iter().map(str::to_owned));
        for arrival in 0..3 {
            let conversation = format!("n-{pages}-{arrival}");
            post(&app, &conversation, vec![transfer("NA", "entry", "a9")]).await;
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }

    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no conversation twice");
    let newest_first: Vec<String> = originals.iter().rev().cloned().collect();
    assert_eq!(
        seen, newest_first,
        "every original conversation once, in order; later arrivals are newer than the cursor"
    );
    assert_eq!(pages, 5);
}

async fn a_cursor_the_api_did_not_issue_is_a_problem(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-1", vec![transfer("NA", "entry", "a1")]).await;
    post(&app, "c-2", vec![transfer("NA", "entry", "a1")]).await;
    let stints_page = read(&app, &stints_path("a1", "limit=1")).await;
    let stints_cursor = stints_page["nextCursor"].as_str().unwrap();

    for cursor in [
        "%%%",
        "not-base64!",
        // base64url of `not json` and of `{}`
        "bm90IGpzb24",
        "e30",
        stints_cursor,
    ] {
        let response = app
            .get(&list_path(&format!("cursor={cursor}")), &read_token())
            .await;

        response.assert_problem(400);
        assert_eq!(response.error_paths(), ["/cursor"], "{cursor}");
    }
}

// ---- 4.4 an agent's stints ----

/// Agent a7 in three conversations, twice in the second; a8 keeps that one going.
async fn agent_history(app: &TestApp) {
    post(app, "c-one", vec![transfer("NA", "entry", "a7")]).await;
    pause().await;
    post(app, "c-one", vec![transfer("COLD", "exit", "a7")]).await;
    pause().await;
    post(app, "c-two", vec![transfer("NA", "entry", "a8")]).await;
    post(app, "c-two", vec![transfer("COLD", "entry", "a7")]).await;
    pause().await;
    post(app, "c-two", vec![transfer("WARM", "exit", "a7")]).await;
    pause().await;
    post(app, "c-two", vec![transfer("REDIAL", "entry", "a7")]).await;
    pause().await;
    post(app, "c-three", vec![transfer("NA", "entry", "a7")]).await;
    pause().await;
    post(app, "c-three", vec![transfer("NA", "exit", "a7")]).await;
}

/// Stints without `durationSeconds`, which an open stint counts up to each request.
fn without_durations(stints: &[Value]) -> Vec<Value> {
    stints
        .iter()
        .map(|stint| {
            let mut stint = stint.clone();
            stint.as_object_mut().unwrap().remove("durationSeconds");
            stint
        })
        .collect()
}

fn stint_summary(page: &Value) -> Vec<(&str, &str, Option<&str>)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stint| {
            (
                stint["conversationId"].as_str().unwrap(),
                stint["entryType"].as_str().unwrap(),
                stint["exitType"].as_str(),
            )
        })
        .collect()
}

async fn an_agents_stints_span_conversations_newest_first(backend: Backend) {
    let app = backend.app().await;
    agent_history(&app).await;

    let page = read(&app, &stints_path("a7", "")).await;
    let stranger = read(&app, &stints_path("nobody", "")).await;

    assert_eq!(keys(&page), ["items", "nextCursor"]);
    assert_eq!(
        stint_summary(&page),
        [
            ("c-three", "NA", Some("NA")),
            ("c-two", "REDIAL", None),
            ("c-two", "COLD", Some("WARM")),
            ("c-one", "NA", Some("COLD")),
        ]
    );
    assert_eq!(page["nextCursor"], Value::Null);
    let items = page["items"].as_array().unwrap();
    let mut expected_keys = STINT_KEYS.to_vec();
    expected_keys.push("conversationId");
    for stint in items {
        assert_eq!(keys(stint), sorted(expected_keys.clone()));
        assert!(stint["durationSeconds"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(items[1]["leftAt"], Value::Null, "the open stint");
    let joined: Vec<OffsetDateTime> = items
        .iter()
        .map(|stint| time_of(&stint["joinedAt"]))
        .collect();
    assert!(joined.is_sorted_by(|newer, older| newer > older));
    let two = read(&app, &conversation_path("c-two")).await;
    let a7_in_two: Vec<Value> = two["participants"][1]["stints"].as_array().unwrap().clone();
    for (listed, detailed) in [(&items[2], &a7_in_two[0]), (&items[1], &a7_in_two[1])] {
        for key in ["joinedAt", "leftAt", "entryType", "exitType"] {
            assert_eq!(listed[key], detailed[key], "{key} as in 4.1");
        }
    }
    assert_eq!(stranger, json!({ "items": [], "nextCursor": null }));
}

async fn agent_stints_filter_by_window_and_page_by_cursor(backend: Backend) {
    let app = backend.app().await;
    agent_history(&app).await;
    let all = read(&app, &stints_path("a7", "")).await;
    let items = all["items"].as_array().unwrap();
    let [three, two_open, two_closed, one] = &items[..] else {
        panic!("four stints: {all}");
    };

    let first = read(&app, &stints_path("a7", "limit=3")).await;
    let cursor = first["nextCursor"]
        .as_str()
        .expect("more to come")
        .to_owned();
    let second = read(
        &app,
        &stints_path("a7", &format!("limit=3&cursor={cursor}")),
    )
    .await;
    let between = read(
        &app,
        &stints_path(
            "a7",
            &format!(
                "from={}&to={}",
                shifted(&one["leftAt"], 1),
                shifted(&three["joinedAt"], 0)
            ),
        ),
    )
    .await;
    let since = read(
        &app,
        &stints_path("a7", &format!("from={}", shifted(&two_closed["leftAt"], 1))),
    )
    .await;
    let until = read(
        &app,
        &stints_path("a7", &format!("to={}", shifted(&two_closed["joinedAt"], 0))),
    )
    .await;

    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(second["nextCursor"], Value::Null);
    let paged: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .cloned()
        .collect();
    assert_eq!(
        without_durations(&paged),
        without_durations(items),
        "two pages, the same stints"
    );
    assert_eq!(
        without_durations(between["items"].as_array().unwrap()),
        without_durations(&[two_open.clone(), two_closed.clone()]),
        "only the stints in c-two overlap the time between c-one and c-three"
    );
    assert_eq!(
        stint_summary(&since),
        [("c-three", "NA", Some("NA")), ("c-two", "REDIAL", None)],
        "an open stint lasts until now"
    );
    assert_eq!(stint_summary(&until), [("c-one", "NA", Some("COLD"))]);
}

// ---- 4.5 transfer data ----

async fn transfer_data_is_the_last_one_sent(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-hand", vec![transfer("NA", "entry", "a1")]).await;
    post(
        &app,
        "c-hand",
        vec![
            transfer("COLD", "entry", "a2"),
            event_with_transfer_data("COLD", "exit", "a1", json!({ "note": "first", "n": 1 })),
        ],
    )
    .await;
    post(
        &app,
        "c-hand",
        vec![
            event_with_transfer_data(
                "WARM",
                "entry",
                "a3",
                json!({ "note": "second", "case": { "id": 42, "tags": ["vip", "ü"] } }),
            ),
            transfer("WARM", "exit", "a2"),
        ],
    )
    .await;
    // An explicit null is no transfer data: the last real value stands.
    post(
        &app,
        "c-hand",
        vec![event_with_transfer_data("COLD", "exit", "a3", Value::Null)],
    )
    .await;

    let body = read(
        &app,
        &format!("{}/transfer-data", conversation_path("c-hand")),
    )
    .await;

    assert_eq!(keys(&body), ["data", "participant", "receivedAt", "seq"]);
    assert_eq!(body["seq"], 4);
    assert_eq!(
        body["participant"],
        json!({ "identity": "a3", "name": "Name of a3", "type": "agent" })
    );
    assert_eq!(
        body["data"],
        json!({ "note": "second", "case": { "id": 42, "tags": ["vip", "ü"] } })
    );
    let events = read(&app, &format!("{}/events", conversation_path("c-hand"))).await;
    assert_eq!(body["receivedAt"], events["events"][3]["receivedAt"]);
}

async fn transfer_data_of_any_json_kind_reads_back_as_sent(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-kinds", vec![transfer("NA", "entry", "a1")]).await;
    let path = format!("{}/transfer-data", conversation_path("c-kinds"));

    for (seq, data) in [
        json!("call back after 5pm"),
        json!(7),
        json!(-0.25),
        json!(false),
        json!([]),
        json!({}),
        json!([1, "two", { "three": [3] }, null]),
    ]
    .into_iter()
    .enumerate()
    {
        post(
            &app,
            "c-kinds",
            vec![event_with_transfer_data(
                "WARM",
                "entry",
                "a2",
                data.clone(),
            )],
        )
        .await;

        let body = read(&app, &path).await;

        assert_eq!(body["data"], data);
        assert_eq!(body["seq"], seq as i64 + 2);
    }
}

async fn transfer_data_is_not_found_until_some_was_sent(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-plain", vec![transfer("NA", "entry", "a1")]).await;
    let path = |conversation: &str| format!("{}/transfer-data", conversation_path(conversation));

    let none_sent = app.get_text(&path("c-plain"), &read_token()).await;
    let unknown = app.get_text(&path("c-unknown"), &read_token()).await;

    assert_eq!(none_sent.0, StatusCode::NOT_FOUND);
    assert_eq!(none_sent, unknown);
    app.get(&path("c-plain"), &read_token())
        .await
        .assert_problem(404);
}

// ---- scoping and access ----

/// Posts to a conversation of OTHER_BOT with the app that may ingest for every bot.
async fn post_to_other_bot(app: &TestApp, conversation: &str, events: Vec<Value>) {
    let body = json!({ "conversationId": conversation, "botId": OTHER_BOT, "events": events });
    let response = app
        .send(hooks_request(
            OTHER_BOT,
            &wildcard_token(),
            body.to_string(),
        ))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

async fn another_bots_conversation_is_answered_like_a_missing_one(backend: Backend) {
    let app = backend.app().await;
    post_to_other_bot(
        &app,
        "c-secret",
        vec![
            transfer("NA", "entry", "spy"),
            event_with_transfer_data("COLD", "exit", "spy", json!({ "pin": "1234" })),
        ],
    )
    .await;

    for suffix in ["", "/events", "/transfer-data"] {
        let under = |bot: &str, conversation: &str| {
            format!("/api/v1/bots/{bot}/conversations/{conversation}{suffix}")
        };

        let missing = app.get_text(&under(BOT, "c-missing"), &read_token()).await;
        let hidden = app.get_text(&under(BOT, "c-secret"), &read_token()).await;
        let unreadable_bot = app
            .get_text(&under(OTHER_BOT, "c-secret"), &read_token())
            .await;
        let unreadable_missing = app
            .get_text(&under(OTHER_BOT, "c-missing"), &read_token())
            .await;
        let allowed = app
            .get(&under(OTHER_BOT, "c-secret"), &wildcard_token())
            .await;

        assert_eq!(missing.0, StatusCode::NOT_FOUND, "{suffix}");
        assert_eq!(
            hidden, missing,
            "another bot's conversation, asked under ours: {suffix}"
        );
        assert_eq!(unreadable_bot, missing, "a bot we may not read: {suffix}");
        assert_eq!(unreadable_missing, missing, "{suffix}");
        assert_eq!(allowed.status, 200, "the wildcard app reads it: {suffix}");
    }
}

async fn another_bots_activity_never_shows_in_lists_or_stints(backend: Backend) {
    let app = backend.app().await;
    post(
        &app,
        "c-ours",
        vec![transfer("NA", "entry", "shared-agent")],
    )
    .await;
    post_to_other_bot(
        &app,
        "c-theirs",
        vec![transfer("NA", "entry", "shared-agent")],
    )
    .await;
    post_to_other_bot(
        &app,
        "c-ours",
        vec![transfer("NA", "entry", "shared-agent")],
    )
    .await;

    let list = read(&app, &list_path("")).await;
    let by_agent = read(&app, &list_path("participant=shared-agent")).await;
    let stints = read(&app, &stints_path("shared-agent", "")).await;
    let their_list = app
        .get(
            &format!("/api/v1/bots/{OTHER_BOT}/conversations"),
            &read_token(),
        )
        .await;
    let their_stints = app
        .get(
            &format!("/api/v1/bots/{OTHER_BOT}/participants/shared-agent/stints"),
            &read_token(),
        )
        .await;

    assert_eq!(conversation_ids(&list), ["c-ours"]);
    assert_eq!(list["items"][0]["eventCount"], 1, "their events are theirs");
    assert_eq!(conversation_ids(&by_agent), ["c-ours"]);
    assert_eq!(stint_summary(&stints), [("c-ours", "NA", None)]);
    their_list.assert_problem(404);
    their_stints.assert_problem(404);
}

/// Every SPEC 4 path, for a conversation and an agent of BOT.
fn query_paths() -> [String; 5] {
    [
        conversation_path("c-1"),
        format!("{}/events", conversation_path("c-1")),
        format!("{}/transfer-data", conversation_path("c-1")),
        list_path(""),
        stints_path("a1", ""),
    ]
}

async fn an_ingest_only_app_is_forbidden_from_the_query_api(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-1", vec![transfer("NA", "entry", "a1")]).await;

    for path in query_paths() {
        let response = app.get(&path, &ingest_token()).await;

        response.assert_problem(403);
    }
}

async fn the_query_api_needs_a_valid_token(backend: Backend) {
    let app = backend.app().await;
    post(&app, "c-1", vec![transfer("NA", "entry", "a1")]).await;
    let forged = agentassist_hooks::auth::issue_token(
        READ_APP,
        b"not-the-read-secret-not-the-read-secret",
        Some(300),
    )
    .unwrap();

    for path in query_paths() {
        let anonymous = app
            .send(Request::get(&path).body(Body::empty()).unwrap())
            .await;
        let garbage = app.get(&path, "not.a.jwt").await;
        let wrong_secret = app.get(&path, &forged).await;

        anonymous.assert_problem(401);
        garbage.assert_problem(401);
        wrong_secret.assert_problem(401);
    }
}

/// Transfer data exactly as sent: key order, spacing and number spellings included,
/// and integers wider than 64 bits intact.
async fn transfer_data_is_returned_byte_for_byte(backend: Backend) {
    let app = backend.app().await;
    let data = r#"{ "zeta" : 1.50, "alpha": [12345678901234567890123, 1E-7, "\u00fc"],
        "nested" : {"b":true,"a":null} }"#;
    let body = format!(
        r#"{{"conversationId":"c-exact","botId":"{BOT}","events":[{{"name":"INTERNAL_TRANSFER_EVENT",
        "transfertype":"COLD","transition":"exit","isExtAD":false,"experience":"chat",
        "participant":{{"identity":"a1","name":"","type":"agent"}},"transferData":{data}}}]}}"#
    );
    let posted = app.post_raw(&body).await;
    assert_eq!(posted.status, 200, "{}", posted.body);

    let (status, text) = app
        .get_text(
            &format!("{}/transfer-data", conversation_path("c-exact")),
            &read_token(),
        )
        .await;

    assert_eq!(status, 200, "{text}");
    assert!(
        text.ends_with(&format!("\"data\":{data}}}")),
        "data is the transferData text as sent: {text}"
    );
}

async fn a_conversation_with_many_participants_is_read_a_part_at_a_time(backend: Backend) {
    let app = backend.app().await;
    let entries = (0..5)
        .map(|index| transfer("WARM", "entry", &format!("agent-{index}")))
        .collect();
    post(&app, "c-crowd", entries).await;

    let mut identities = Vec::new();
    let mut next = Some(format!(
        "{}?participantsLimit=2",
        conversation_path("c-crowd")
    ));
    let mut parts = 0;
    while let Some(path) = next.take() {
        let response = app.get(&path, &read_token()).await;
        assert_eq!(response.status, 200, "{}", response.body);
        let participants = response.body["participants"].as_array().unwrap();
        assert!(participants.len() <= 2);
        identities.extend(
            participants
                .iter()
                .map(|participant| participant["identity"].as_str().unwrap().to_owned()),
        );
        assert_eq!(
            response.body["participantsPresent"]
                .as_array()
                .unwrap()
                .len(),
            5,
            "every part carries the whole summary"
        );
        next = response.headers.get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
        parts += 1;
    }

    assert_eq!(parts, 3);
    assert_eq!(
        identities,
        ["agent-0", "agent-1", "agent-2", "agent-3", "agent-4"]
    );
    let whole = app.get(&conversation_path("c-crowd"), &read_token()).await;
    assert!(
        !whole.headers.contains_key("link"),
        "1000 participants fit in one part"
    );
    assert_eq!(whole.body["participants"].as_array().unwrap().len(), 5);
    let refused = app
        .get(
            &format!("{}?participantsLimit=1001", conversation_path("c-crowd")),
            &read_token(),
        )
        .await;
    refused.assert_problem(400);
}
