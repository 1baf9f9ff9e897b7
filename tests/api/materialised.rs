//! The materialised rows agree with the events they came from: for random histories
//! posted in random batches, on both stores, the conversation's summary, its participants
//! and their stints equal what a fresh fold of the stored events gives (SPEC 3 is a pure
//! function of the events).

use crate::common::*;
use agentassist_hooks::domain::{Anomaly, Event, Status, Timeline};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use time::OffsetDateTime;

const CASES: usize = 40;
const IDENTITIES: [&str; 4] = ["agent-1", "agent-2", "agent-3", "bot-1"];

fn transfer_event() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["NA", "COLD", "WARM", "REDIAL", "cold", "Warm"]),
        prop::sample::select(vec!["entry", "exit", "ENTRY"]),
        prop::sample::select(IDENTITIES.to_vec()),
        prop::sample::select(vec!["voice", "chat", "email"]),
        prop::option::of(prop::sample::select(vec!["en", "de", "fr-CA"])),
    )
        .prop_map(
            |(transfer_type, transition, identity, experience, language)| {
                let mut event = json!({
                    "name": "INTERNAL_TRANSFER_EVENT",
                    "transfertype": transfer_type,
                    "transition": transition,
                    "isExtAD": "false",
                    "experience": experience,
                    "participant": {
                        "identity": identity,
                        "name": format!("Name of {identity}"),
                        "type": if identity.starts_with("bot") { "bot" } else { "agent" }
                    }
                });
                if let Some(language) = language {
                    event["language"] = json!(language);
                }
                event
            },
        )
}

fn event() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => transfer_event(),
        1 => Just(json!({ "name": "END_OF_CONVERSATION", "reason": "hung up" })),
        1 => Just(json!({ "name": "TRIGGER_SUMMARY_EVENT", "data": { "language": "xx" } })),
    ]
}

/// A history of 1–40 events and how it is cut into requests of 1–5 events.
fn history() -> impl Strategy<Value = (Vec<Value>, Vec<usize>)> {
    (
        prop::collection::vec(event(), 1..=40),
        prop::collection::vec(1usize..=5, 40),
    )
}

fn batches(events: Vec<Value>, sizes: &[usize]) -> Vec<Vec<Value>> {
    let mut events = events.into_iter().peekable();
    let mut batches = Vec::new();
    for size in sizes.iter().cycle() {
        if events.peek().is_none() {
            break;
        }
        batches.push(events.by_ref().take(*size).collect());
    }
    batches
}

/// The stored events, parsed again from their payloads, with their `receivedAt` and
/// the anomalies ingest recorded for them.
async fn stored_events(
    app: &TestApp,
    conversation: &str,
) -> Vec<(OffsetDateTime, Event, Vec<Anomaly>)> {
    let page = app
        .store
        .events(BOT, conversation, 0, 1000, i64::MAX)
        .await
        .unwrap()
        .expect("the conversation exists");
    assert!(
        !page.more,
        "one page holds every event of a test conversation"
    );
    page.events
        .into_iter()
        .map(|record| {
            let event = Event::reparse(&record.payload).expect("a stored event parses again");
            (record.received_at, event, record.anomalies)
        })
        .collect()
}

/// Asserts that what is stored for `conversation` — the summary row, the participants and
/// their stints, who is present — is what folding its stored events gives, after `posted`
/// events; returns the status, to see which states were covered.
async fn assert_materialised(app: &TestApp, conversation: &str, posted: usize) -> Status {
    let stored = stored_events(app, conversation).await;
    let (refolded, anomalies) = Timeline::fold(stored.iter().map(|(at, event, _)| (*at, event)));
    let record = app
        .store
        .conversation(BOT, conversation)
        .await
        .unwrap()
        .expect("the conversation exists");
    let participants = app
        .store
        .participants(BOT, conversation, -1, 1000)
        .await
        .unwrap();

    assert_eq!(stored.len(), posted, "{conversation}: every event stored");
    let recorded: Vec<&Vec<Anomaly>> = stored.iter().map(|(_, _, codes)| codes).collect();
    assert_eq!(
        recorded,
        anomalies.iter().collect::<Vec<_>>(),
        "{conversation}: each event's anomalies"
    );
    assert_eq!(
        record.summary, refolded.summary,
        "{conversation}: the summary columns"
    );
    assert_eq!(
        participants, refolded.participants,
        "{conversation}: the participants and their stints"
    );
    assert_eq!(
        record.present,
        refolded.present().collect::<Vec<_>>(),
        "{conversation}: who is present, in order of first entry"
    );

    for participant in &participants {
        let open = participant
            .stints
            .iter()
            .filter(|stint| stint.is_open())
            .count();
        assert!(
            open <= 1,
            "{conversation}: {} has {open} open stints",
            participant.identity
        );
    }
    let summary = &record.summary;
    assert_eq!(
        summary.status == Status::Active,
        !record.present.is_empty(),
        "{conversation}: active exactly when someone is present"
    );
    assert_eq!(
        summary.status == Status::Ended,
        summary.ended_at.is_some(),
        "{conversation}: endedAt is set exactly when ended"
    );
    summary.status
}

on_both_backends!(
    stored_summaries_and_stints_equal_a_fresh_fold_of_the_stored_events,
    appends_racing_through_two_replicas_still_equal_a_fresh_fold,
);

async fn stored_summaries_and_stints_equal_a_fresh_fold_of_the_stored_events(backend: Backend) {
    let app = backend.app().await;
    let mut runner = TestRunner::deterministic();
    let mut statuses_seen = Vec::new();

    for case in 0..CASES {
        let conversation = format!("c-prop-{case:02}");
        let (events, sizes) = history()
            .new_tree(&mut runner)
            .expect("a history")
            .current();
        let mut posted = 0;

        for events in batches(events, &sizes) {
            posted += events.len();
            let response = app.post_events(BOT, &batch(&conversation, events)).await;
            assert_eq!(response.status, 200, "{conversation}: {}", response.body);

            // After every request, not only the last: each append continues the stored
            // timeline, and must land where a fold from scratch does.
            let status = assert_materialised(&app, &conversation, posted).await;
            statuses_seen.push(status);
        }
    }

    for status in [Status::Active, Status::Idle, Status::Ended] {
        assert!(
            statuses_seen.contains(&status),
            "the histories reach {status:?}"
        );
    }
}

/// Requests for one conversation, racing through two replicas (each gathering its own into
/// groups on PostgreSQL): whoever waits for the conversation must then see it whole, as
/// the append before it left it — its participants and stints, not only its summary row —
/// or the stored rows drift from the fold of the stored events.
async fn appends_racing_through_two_replicas_still_equal_a_fresh_fold(backend: Backend) {
    let replicas = [backend.app().await, backend.app().await];
    let mut runner = TestRunner::deterministic();
    let (events, sizes) = (
        prop::collection::vec(event(), 120),
        prop::collection::vec(1usize..=3, 40),
    )
        .new_tree(&mut runner)
        .expect("a history")
        .current();
    let mut requests = batches(events, &sizes);
    let posted: usize = requests.iter().map(Vec::len).sum();
    // The conversation exists before the race, so that the racers wait on its row.
    let first = replicas[0]
        .post_events(BOT, &batch("c-race", requests.remove(0)))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);

    let answers =
        futures_util::future::join_all(requests.into_iter().enumerate().map(|(index, events)| {
            let replica = &replicas[index % 2];
            async move { replica.post_events(BOT, &batch("c-race", events)).await }
        }))
        .await;

    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_materialised(&replicas[0], "c-race", posted).await;
}
