//! The materialised tables agree with the events they came from: for random histories
//! posted in random batches, the `conversations` row and the `stints` rows equal what a
//! fresh fold of the stored events gives (SPEC 3 is a pure function of the events).

mod common;

use agentassist_hooks::domain::{Anomaly, Event, Experience, Status, Timeline, Transfers};
use agentassist_hooks::store::ConversationSummary;
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::BTreeMap;
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
    pool: &PgPool,
    conversation: &str,
) -> Vec<(OffsetDateTime, Event, Vec<Anomaly>)> {
    let rows: Vec<(OffsetDateTime, String, Json<Vec<Anomaly>>)> = sqlx::query_as(
        "SELECT received_at, payload::text, anomalies FROM events
         WHERE bot_id = $1 AND conversation_id = $2 ORDER BY seq",
    )
    .bind(BOT)
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(received_at, payload, Json(anomalies))| {
            let payload = RawValue::from_string(payload).unwrap();
            let event = Event::reparse(&payload).expect("a stored event parses again");
            (received_at, event, anomalies)
        })
        .collect()
}

/// The summary columns of a `conversations` row, and the timeline they came from.
#[derive(sqlx::FromRow)]
struct ConversationRow {
    status: String,
    experience: Option<String>,
    language: Option<String>,
    started_at: OffsetDateTime,
    ended_at: Option<OffsetDateTime>,
    last_event_at: OffsetDateTime,
    event_count: i64,
    anomaly_count: i64,
    cold_transfers: i64,
    warm_transfers: i64,
    redial_transfers: i64,
    participants_present: Json<Vec<String>>,
    timeline: Json<Timeline>,
}

async fn stored_summary(pool: &PgPool, conversation: &str) -> (ConversationSummary, Timeline) {
    let row: ConversationRow = sqlx::query_as(
        "SELECT status, experience, language, started_at, ended_at, last_event_at,
                event_count, anomaly_count, cold_transfers, warm_transfers,
                redial_transfers, participants_present, timeline
         FROM conversations WHERE bot_id = $1 AND conversation_id = $2",
    )
    .bind(BOT)
    .bind(conversation)
    .fetch_one(pool)
    .await
    .unwrap();
    let summary = ConversationSummary {
        bot_id: BOT.to_owned(),
        conversation_id: conversation.to_owned(),
        status: Status::parse(&row.status).expect("a known status"),
        experience: row
            .experience
            .map(|text| Experience::parse(&text).expect("a known experience")),
        language: row.language,
        started_at: row.started_at,
        ended_at: row.ended_at,
        last_event_at: row.last_event_at,
        event_count: row.event_count,
        anomaly_count: row.anomaly_count,
        transfers: Transfers {
            cold: row.cold_transfers,
            warm: row.warm_transfers,
            redial: row.redial_transfers,
        },
        participants_present: row.participants_present.0,
    };
    (summary, row.timeline.0)
}

/// `(identity, ordinal, joined_at, left_at, entry_type, exit_type)`, in key order.
type StintColumns = (
    String,
    i32,
    OffsetDateTime,
    Option<OffsetDateTime>,
    String,
    Option<String>,
);

async fn stored_stints(pool: &PgPool, conversation: &str) -> Vec<StintColumns> {
    sqlx::query_as(
        "SELECT identity, ordinal, joined_at, left_at, entry_type, exit_type FROM stints
         WHERE bot_id = $1 AND conversation_id = $2 ORDER BY identity, ordinal",
    )
    .bind(BOT)
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn stints_of(timeline: &Timeline) -> Vec<StintColumns> {
    let mut rows: Vec<StintColumns> = timeline
        .participants
        .iter()
        .flat_map(|participant| {
            participant
                .stints
                .iter()
                .enumerate()
                .map(|(ordinal, stint)| {
                    (
                        participant.identity.clone(),
                        ordinal as i32,
                        stint.joined_at,
                        stint.left_at,
                        stint.entry_type.as_str().to_owned(),
                        stint.exit_type.map(|exit| exit.as_str().to_owned()),
                    )
                })
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rows
}

/// Asserts that what is stored for `conversation` is what folding its stored events
/// gives, after `posted` events; returns the status, to see which states were covered.
async fn assert_materialised(pool: &PgPool, conversation: &str, posted: usize) -> Status {
    let stored = stored_events(pool, conversation).await;
    let (refolded, anomalies) = Timeline::fold(stored.iter().map(|(at, event, _)| (*at, event)));
    let (summary, timeline) = stored_summary(pool, conversation).await;
    let stints = stored_stints(pool, conversation).await;

    assert_eq!(stored.len(), posted, "{conversation}: every event stored");
    let recorded: Vec<&Vec<Anomaly>> = stored.iter().map(|(_, _, codes)| codes).collect();
    assert_eq!(
        recorded,
        anomalies.iter().collect::<Vec<_>>(),
        "{conversation}: each event's anomalies"
    );
    assert_eq!(
        summary,
        ConversationSummary::of(BOT, conversation, &refolded),
        "{conversation}: the summary columns"
    );
    assert_eq!(timeline, refolded, "{conversation}: the stored timeline");
    assert_eq!(
        stints,
        stints_of(&refolded),
        "{conversation}: the stints table"
    );

    let mut open_by_identity: BTreeMap<&str, usize> = BTreeMap::new();
    for (identity, _, _, left_at, _, _) in &stints {
        if left_at.is_none() {
            *open_by_identity.entry(identity).or_default() += 1;
        }
    }
    assert!(
        open_by_identity.values().all(|open| *open == 1),
        "{conversation}: nobody has two open stints: {open_by_identity:?}"
    );
    let mut present = summary.participants_present.clone();
    present.sort();
    assert_eq!(
        present,
        open_by_identity.keys().copied().collect::<Vec<_>>(),
        "{conversation}: present means an open stint"
    );
    assert_eq!(
        summary.status == Status::Active,
        !present.is_empty(),
        "{conversation}: active exactly when someone is present"
    );
    assert_eq!(
        summary.status == Status::Ended,
        summary.ended_at.is_some(),
        "{conversation}: endedAt is set exactly when ended"
    );
    summary.status
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn stored_summaries_and_stints_equal_a_fresh_fold_of_the_stored_events(pool: PgPool) {
    let app = TestApp::new(pool.clone());
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
            let status = assert_materialised(&pool, &conversation, posted).await;
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
