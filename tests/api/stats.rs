//! SPEC 11, operations metrics, on both stores: for random histories spread over days
//! across a DST change, every stats answer (each granularity, time zone, grouping and
//! filter, ranges on and off the 15-minute grid) equals a from-scratch computation over
//! the stored events — counts, sums, minima and maxima exactly, quantiles within 1 % of
//! the nearest-rank value — and `stats/now`, CSV and the refusals.

use crate::common::*;
use agentassist_hooks::domain::sources::parse_stored;
use agentassist_hooks::domain::stats::{
    ConversationStats, Dimension, Fact, Granularity, Measure, buckets, local_rfc3339,
};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

on_both_backends!(
    stats_equal_a_from_scratch_computation_over_the_stored_events,
    the_now_view_shows_who_is_present_by_queue_and_what_waits,
    stats_come_as_csv_when_asked,
    a_stats_query_is_refused_with_every_problem_named,
);

const CASES: usize = 8;
const QUERIES_PER_CASE: usize = 14;
/// Histories start the day before Europe/Berlin and New York leave summer time.
const BASE: &str = "2026-10-24T18:00:00Z";
const AGENTS: [&str; 3] = ["agent-1", "agent-2", "agent-3"];

/// One thing a conversation gets, before its time is known.
#[derive(Debug, Clone)]
enum Step {
    Hooks(Value),
    Bot(Value),
}

fn transfer_step() -> impl Strategy<Value = Step> {
    (
        prop::sample::select(vec!["NA", "COLD", "WARM", "REDIAL"]),
        prop::sample::select(vec!["entry", "exit"]),
        prop::sample::select(AGENTS.to_vec()),
        prop::sample::select(vec!["voice", "chat"]),
        prop::option::of(prop::sample::select(vec!["en", "de"])),
        prop::option::of(prop::sample::select(vec!["Billing", "Tech, 2nd line"])),
    )
        .prop_map(|(kind, transition, agent, experience, language, queue)| {
            let mut participant = json!({ "identity": agent, "name": agent, "type": "agent" });
            if let Some(queue) = queue {
                participant["customFields"] = json!({ "queueName": queue });
            }
            let mut event = json!({
                "name": "INTERNAL_TRANSFER_EVENT", "transfertype": kind,
                "transition": transition, "isExtAD": true, "experience": experience,
                "participant": participant
            });
            if let Some(language) = language {
                event["language"] = json!(language);
            }
            Step::Hooks(event)
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => transfer_step(),
        1 => Just(Step::Hooks(json!({ "name": "END_OF_CONVERSATION", "reason": "done" }))),
        1 => Just(Step::Bot(json!({ "type": "escalate", "targets": [{ "type": "Skill", "value": "billing" }] }))),
        1 => Just(Step::Bot(json!({ "type": "transferSucceeded", "sequenceId": 1 }))),
        1 => Just(Step::Bot(json!({ "type": "transferFailed", "sequenceId": 1, "reason": "NoAgentAvailable" }))),
    ]
}

/// Conversations of steps, each step with the seconds since the previous one (up to 5 h,
/// so that a history spans days).
fn history() -> impl Strategy<Value = Vec<Vec<(Step, i64)>>> {
    prop::collection::vec(prop::collection::vec((step(), 1i64..18_000), 1..14), 2..6)
}

/// A stats query, before its range is fitted to the history.
#[derive(Debug, Clone)]
struct Asked {
    granularity: &'static str,
    zone: &'static str,
    group_by: Vec<Dimension>,
    participant: Option<&'static str>,
    queue: Option<&'static str>,
    experience: Option<&'static str>,
    /// Cut the range off the grid: milliseconds into the first and before the last hour.
    off_grid: Option<(i64, i64)>,
}

fn asked() -> impl Strategy<Value = Asked> {
    (
        prop::sample::select(vec!["PT15M", "PT30M", "PT1H", "P1D", "P7D", "all"]),
        prop::sample::select(vec![
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kathmandu",
        ]),
        prop::sample::select(vec![
            vec![],
            vec![Dimension::Participant],
            vec![Dimension::Queue],
            vec![Dimension::Experience],
            vec![Dimension::Language],
            vec![Dimension::Participant, Dimension::Queue],
            vec![Dimension::Experience, Dimension::Language],
            vec![Dimension::Service, Dimension::Queue],
        ]),
        prop::option::weighted(0.2, Just("agent-1")),
        prop::option::weighted(0.15, Just("Billing")),
        prop::option::weighted(0.2, Just("voice")),
        prop::option::weighted(0.5, (1i64..3_600_000, 1i64..3_600_000)),
    )
        .prop_map(
            |(granularity, zone, group_by, participant, queue, experience, off_grid)| Asked {
                granularity,
                zone,
                group_by,
                participant,
                queue,
                experience,
                off_grid,
            },
        )
}

async fn stats_equal_a_from_scratch_computation_over_the_stored_events(backend: Backend) {
    // Each case adds conversations to the same bot, so later answers count earlier cases'
    // facts too (the histories overlap in time), as the from-scratch side does.
    let app = backend.app().await;
    let mut runner = TestRunner::deterministic();
    for case in 0..CASES {
        let history = history().new_tree(&mut runner).unwrap().current();
        let counting = app.count_stats();
        drop(counting);
        let span = post_history(&app, case, &history).await;
        let _counting = app.count_stats();
        wait_until_counted(&app.store).await;
        let facts = facts_of_stored_events(&app).await;
        let queries: Vec<Asked> = (0..QUERIES_PER_CASE)
            .map(|_| asked().new_tree(&mut runner).unwrap().current())
            .collect();
        for asked in queries {
            let (from, to) = range(span, &asked);
            let answer = get_stats(&app, &asked, from, to).await;
            let expected = from_scratch(&facts, &asked, from, to);
            let context = format!("{} case {case}: {asked:?}", backend.name());
            assert_same(&answer, &expected, asked.zone, &context);
        }
    }
}

/// Waits until the stats worker has counted every stored event (a loaded machine may take
/// longer than the answers' own wait, `stats.max_lag_seconds`).
async fn wait_until_counted(store: &agentassist_hooks::store::Store) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let latest = store.latest_event_at(BOT).await.unwrap();
        let progress = store.stats_progress(BOT).await.unwrap();
        if progress
            .caught_up_at
            .zip(latest)
            .is_some_and(|(at, latest)| at >= latest)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stats worker counted nothing new"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Posts each step as a request of its own, then dates every stored event as the history
/// says: from `BASE` on, each conversation's steps the given seconds apart (a request's
/// events share its time). The earliest and latest time.
async fn post_history(
    app: &TestApp,
    case: usize,
    history: &[Vec<(Step, i64)>],
) -> (OffsetDateTime, OffsetDateTime) {
    let base = OffsetDateTime::parse(BASE, &Rfc3339).unwrap();
    let (mut earliest, mut latest) = (None::<OffsetDateTime>, None::<OffsetDateTime>);
    for (n, steps) in history.iter().enumerate() {
        let conversation = format!("c-{case}-{n}");
        let mut at = base + time::Duration::minutes(37 * n as i64);
        for (seq, (step, gap)) in (1..).zip(steps) {
            at += time::Duration::seconds(*gap) + time::Duration::milliseconds(*gap % 997);
            let response = match step {
                Step::Hooks(event) => {
                    app.post_events(BOT, &batch(&conversation, vec![event.clone()]))
                        .await
                }
                Step::Bot(message) => {
                    let request = axum::http::Request::post(format!(
                        "/api/v1/bots/{BOT}/conversations/{conversation}/bot-messages"
                    ))
                    .header("content-type", "application/json")
                    .header("token", ingest_token())
                    .body(axum::body::Body::from(
                        json!({ "message": message }).to_string(),
                    ))
                    .unwrap();
                    app.send(request).await
                }
            };
            assert_eq!(response.status, 200, "{}", response.body);
            set_received_at(app, &conversation, seq, at).await;
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
            latest = Some(latest.map_or(at, |l| l.max(at)));
        }
    }
    (earliest.unwrap(), latest.unwrap())
}

async fn set_received_at(app: &TestApp, conversation: &str, seq: i64, at: OffsetDateTime) {
    let micros = at.unix_timestamp_nanos() / 1_000;
    let value = if app.is_postgres() {
        format!("to_timestamp({micros} / 1e6)")
    } else {
        micros.to_string()
    };
    app.execute(&format!(
        "UPDATE events SET received_at = {value}
         WHERE bot_id = '{BOT}' AND conversation_id = '{conversation}' AND seq = {seq}"
    ))
    .await;
}

/// Every fact of every conversation, from its stored events folded afresh, with the
/// conversation it belongs to.
async fn facts_of_stored_events(app: &TestApp) -> Vec<(String, Fact)> {
    facts_of_store(&app.store).await
}

async fn facts_of_store(store: &agentassist_hooks::store::Store) -> Vec<(String, Fact)> {
    let app = TestStore { store };
    let mut facts = Vec::new();
    let mut cursor = None;
    loop {
        let page = app
            .store
            .conversations(
                BOT,
                &Default::default(),
                cursor.as_ref(),
                500,
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(agentassist_hooks::store::ConversationKey {
            last_event_at: last.summary.last_event_at.unwrap(),
            conversation_id: last.conversation_id.clone(),
        });
        for record in &page {
            let events = app
                .store
                .events(BOT, &record.conversation_id, 0, 1000, i64::MAX)
                .await
                .unwrap()
                .unwrap();
            let mut state = ConversationStats::default();
            for stored in events.events {
                let event = parse_stored(
                    stored.name,
                    stored.participant.as_ref(),
                    &stored.payload,
                    BOT,
                    &record.conversation_id,
                )
                .unwrap();
                for fact in state.apply(stored.received_at, &event) {
                    facts.push((record.conversation_id.clone(), fact));
                }
            }
        }
    }
    facts
}

struct TestStore<'a> {
    store: &'a agentassist_hooks::store::Store,
}

/// The query's range around the history: on whole hours, or cut off the grid.
fn range(
    (earliest, latest): (OffsetDateTime, OffsetDateTime),
    asked: &Asked,
) -> (OffsetDateTime, OffsetDateTime) {
    let hour_before = earliest
        .replace_minute(0)
        .unwrap()
        .replace_second(0)
        .unwrap()
        .replace_nanosecond(0)
        .unwrap();
    let hour_after =
        hour_before + time::Duration::hours(((latest - hour_before).whole_hours()) + 1);
    match asked.off_grid {
        None => (hour_before, hour_after),
        Some((into_first, before_last)) => {
            // Inside the history where it is long enough, else around it.
            let (a, b) = (
                time::Duration::milliseconds(into_first),
                time::Duration::milliseconds(before_last),
            );
            let from = if earliest + a < latest {
                earliest + a
            } else {
                earliest - a
            };
            let to = if latest - b > from {
                latest - b
            } else {
                latest + b
            };
            (from, to)
        }
    }
}

async fn get_stats(
    app: &TestApp,
    asked: &Asked,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Value {
    let query = query_of(asked, from, to);
    let response = app
        .get(&format!("/api/v1/bots/{BOT}/stats?{query}"), &read_token())
        .await;
    assert_eq!(response.status, 200, "{query}: {}", response.body);
    response.body
}

fn query_of(asked: &Asked, from: OffsetDateTime, to: OffsetDateTime) -> String {
    let mut query = vec![
        ("from", from.format(&Rfc3339).unwrap()),
        ("to", to.format(&Rfc3339).unwrap()),
        ("granularity", asked.granularity.to_owned()),
        ("timeZone", asked.zone.to_owned()),
    ];
    if !asked.group_by.is_empty() {
        let names: Vec<&str> = asked.group_by.iter().map(|d| d.as_str()).collect();
        query.push(("groupBy", names.join(",")));
    }
    for (name, value) in [
        ("participant", asked.participant),
        ("queue", asked.queue),
        ("experience", asked.experience),
    ] {
        if let Some(value) = value {
            query.push((name, value.to_owned()));
        }
    }
    serde_urlencoded(&query)
}

fn serde_urlencoded(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| {
            let encoded: String = value
                .bytes()
                .map(|byte| match byte {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (byte as char).to_string()
                    }
                    _ => format!("%{byte:02X}"),
                })
                .collect();
            format!("{name}={encoded}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// What one group's bucket adds up to, counted naively.
#[derive(Debug, Default)]
struct Expected {
    started: u64,
    ended: u64,
    handled: BTreeSet<String>,
    stints: Vec<i64>,
    first_agent: Vec<i64>,
    cold: u64,
    warm: u64,
    redial: u64,
    escalated: u64,
    completed: u64,
    failed: u64,
    hops_in: u64,
    hops_out: u64,
    anomalies: BTreeMap<String, u64>,
    /// What was counted, to say what differs.
    facts: Vec<String>,
}

fn from_scratch(
    facts: &[(String, Fact)],
    asked: &Asked,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> BTreeMap<Vec<Option<String>>, BTreeMap<Timestamp, Expected>> {
    let zone = TimeZone::get(asked.zone).unwrap();
    let instant = |at: OffsetDateTime| {
        Timestamp::from_microsecond((at.unix_timestamp_nanos() / 1_000) as i64).unwrap()
    };
    let granularity = Granularity::parse(asked.granularity).unwrap();
    let buckets = buckets(instant(from), instant(to), granularity, &zone).unwrap();
    let mut dimensions: Vec<Dimension> = asked.group_by.clone();
    dimensions.extend(
        [
            (Dimension::Participant, asked.participant),
            (Dimension::Queue, asked.queue),
            (Dimension::Experience, asked.experience),
        ]
        .into_iter()
        .filter_map(|(d, v)| v.map(|_| d)),
    );
    let conversations_known = !dimensions.iter().any(|d| d.is_of_participants());
    let mut expected: BTreeMap<Vec<Option<String>>, BTreeMap<Timestamp, Expected>> =
        BTreeMap::new();
    for (conversation, fact) in facts {
        let at = instant(fact.at);
        let Some(bucket) = buckets.iter().find(|b| b.start <= at && at < b.end) else {
            continue;
        };
        let dims = &fact.dims;
        let value = |d: &Dimension| -> Option<String> {
            match d {
                Dimension::Participant => dims.participant.clone(),
                Dimension::Queue => dims.queue.clone(),
                Dimension::Experience => dims.conversation.experience.clone(),
                Dimension::Language => dims.conversation.language.clone(),
                Dimension::Service => dims.conversation.service.clone(),
            }
        };
        let kept = [
            (Dimension::Participant, asked.participant),
            (Dimension::Queue, asked.queue),
            (Dimension::Experience, asked.experience),
        ]
        .iter()
        .all(|(d, wanted)| wanted.is_none_or(|w| value(d).as_deref() == Some(w)));
        if !kept {
            continue;
        }
        if matches!(fact.measure, Measure::Started | Measure::Ended) && !conversations_known {
            continue;
        }
        let group: Vec<Option<String>> = asked.group_by.iter().map(value).collect();
        let cell = expected
            .entry(group)
            .or_default()
            .entry(bucket.start)
            .or_default();
        cell.facts.push(format!("{conversation} {fact:?}"));
        match &fact.measure {
            Measure::Started => cell.started += 1,
            Measure::Ended => cell.ended += 1,
            Measure::Stint { micros, .. } => {
                cell.stints.push(*micros);
                cell.handled.insert(conversation.clone());
            }
            Measure::FirstAgent { micros } => cell.first_agent.push(*micros),
            Measure::Hop { kind } => {
                cell.hops_out += 1;
                match kind {
                    agentassist_hooks::domain::HopKind::Cold => cell.cold += 1,
                    agentassist_hooks::domain::HopKind::Warm => cell.warm += 1,
                    agentassist_hooks::domain::HopKind::Redial => cell.redial += 1,
                    agentassist_hooks::domain::HopKind::Escalation => cell.escalated += 1,
                }
            }
            Measure::HopIn => cell.hops_in += 1,
            Measure::Outcome { completed: true } => cell.completed += 1,
            Measure::Outcome { completed: false } => cell.failed += 1,
            Measure::Anomaly(code) => {
                *cell.anomalies.entry(code.as_str().to_owned()).or_default() += 1
            }
        }
    }
    if !conversations_known {
        for cells in expected.values_mut() {
            for cell in cells.values_mut() {
                cell.handled.clear();
            }
        }
    }
    let in_and_out = asked.group_by.iter().any(|d| d.is_of_participants());
    for cells in expected.values_mut() {
        cells.retain(|_, cell| {
            cell.started
                + cell.ended
                + cell.cold
                + cell.warm
                + cell.redial
                + cell.escalated
                + cell.completed
                + cell.failed
                + if in_and_out {
                    cell.hops_in + cell.hops_out
                } else {
                    0
                }
                + cell.anomalies.values().sum::<u64>()
                + cell.stints.len() as u64
                + cell.first_agent.len() as u64
                + cell.handled.len() as u64
                > 0
        });
    }
    expected.retain(|_, cells| !cells.is_empty());
    expected
}

fn nearest_rank(values: &[i64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

fn assert_quantile(actual: &Value, values: &[i64], q: f64, context: &str) {
    if values.is_empty() {
        assert_eq!(actual, &Value::Null, "{context}: no value, no quantile");
        return;
    }
    let exact = nearest_rank(values, q);
    let got = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{context}: a quantile"));
    assert!(
        (got - exact).abs() <= 0.01 * exact.abs() + 1e-9,
        "{context}: p{q} {got} vs nearest-rank {exact}"
    );
}

fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn assert_same(
    answer: &Value,
    expected: &BTreeMap<Vec<Option<String>>, BTreeMap<Timestamp, Expected>>,
    zone: &str,
    context: &str,
) {
    let zone = TimeZone::get(zone).unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        expected.len(),
        "{context}: the same groups\n{answer}"
    );
    for ((group, cells), result) in expected.iter().zip(results) {
        let buckets = result["buckets"].as_array().unwrap();
        let starts: Vec<&str> = buckets
            .iter()
            .map(|b| b["start"].as_str().unwrap())
            .collect();
        let expected_starts: Vec<String> = cells
            .keys()
            .map(|start| local_rfc3339(*start, &zone))
            .collect();
        assert_eq!(
            starts,
            expected_starts,
            "{context}: group {group:?}'s buckets\n{result}\nexpected: {:#?}",
            cells.values().map(|cell| &cell.facts).collect::<Vec<_>>()
        );
        for (bucket, cell) in buckets.iter().zip(cells.values()) {
            let context = format!("{context}, group {group:?}, bucket {}", bucket["start"]);
            let conversations = &bucket["conversations"];
            if conversations["handled"].is_null() {
                assert!(cell.handled.is_empty() && conversations["started"].is_null());
            } else {
                assert_eq!(
                    conversations["started"],
                    json!(cell.started),
                    "{context}: started"
                );
                assert_eq!(
                    conversations["ended"],
                    json!(cell.ended),
                    "{context}: ended"
                );
                assert_eq!(
                    conversations["handled"],
                    json!(cell.handled.len()),
                    "{context}: handled"
                );
            }
            let stints = &bucket["stints"];
            assert_eq!(
                stints["count"],
                json!(cell.stints.len()),
                "{context}: stints"
            );
            assert_eq!(
                stints["sumSeconds"].as_f64().unwrap(),
                seconds(cell.stints.iter().sum()),
                "{context}: stint sum"
            );
            assert_eq!(
                stints["minSeconds"],
                json!(cell.stints.iter().min().map(|m| seconds(*m)))
            );
            assert_eq!(
                stints["maxSeconds"],
                json!(cell.stints.iter().max().map(|m| seconds(*m)))
            );
            for (name, q) in [
                ("p50Seconds", 0.5),
                ("p90Seconds", 0.9),
                ("p99Seconds", 0.99),
            ] {
                assert_quantile(&stints[name], &cell.stints, q, &context);
            }
            let first = &bucket["timeToFirstAgent"];
            assert_eq!(
                first["count"],
                json!(cell.first_agent.len()),
                "{context}: first agent"
            );
            assert_eq!(
                first["sumSeconds"].as_f64().unwrap(),
                seconds(cell.first_agent.iter().sum())
            );
            assert_eq!(
                first["maxSeconds"],
                json!(cell.first_agent.iter().max().map(|m| seconds(*m)))
            );
            assert_quantile(&first["p50Seconds"], &cell.first_agent, 0.5, &context);
            let transfers = &bucket["transfers"];
            for (name, count) in [
                ("cold", cell.cold),
                ("warm", cell.warm),
                ("redial", cell.redial),
                ("escalated", cell.escalated),
                ("escalationsCompleted", cell.completed),
                ("escalationsFailed", cell.failed),
            ] {
                assert_eq!(transfers[name], json!(count), "{context}: {name}");
            }
            if !transfers["in"].is_null() {
                assert_eq!(transfers["in"], json!(cell.hops_in), "{context}: in");
                assert_eq!(transfers["out"], json!(cell.hops_out), "{context}: out");
            }
            let anomalies: BTreeMap<String, u64> =
                serde_json::from_value(bucket["anomalies"].clone()).unwrap();
            assert_eq!(anomalies, cell.anomalies, "{context}: anomalies");
        }
    }
}

async fn the_now_view_shows_who_is_present_by_queue_and_what_waits(backend: Backend) {
    let app = backend.app().await;
    let _counting = app.count_stats();
    let entry = |agent: &str, queue: &str| {
        let mut event = transfer("NA", "entry", agent);
        event["participant"]["customFields"] = json!({ "queueName": queue });
        event
    };
    post(&app, "c-active", vec![entry("agent-1", "Billing")]).await;
    post(&app, "c-active", vec![transfer("WARM", "entry", "agent-2")]).await;
    post(
        &app,
        "c-idle",
        vec![
            entry("agent-3", "Tech"),
            transfer("COLD", "exit", "agent-3"),
        ],
    )
    .await;
    post(
        &app,
        "c-ended",
        vec![entry("agent-4", "Tech"), transfer("NA", "exit", "agent-4")],
    )
    .await;

    wait_until_counted(&app.store).await;
    let now = app
        .get(&format!("/api/v1/bots/{BOT}/stats/now"), &read_token())
        .await;

    assert_eq!(now.status, 200, "{}", now.body);
    assert_eq!(now.body["conversations"], json!({ "active": 1, "idle": 1 }));
    assert_eq!(now.body["participantsPresent"], 2);
    assert_eq!(
        now.body["byQueue"],
        json!([
            { "queue": "Billing", "present": 1, "activeConversations": 1 },
            { "queue": null, "present": 1, "activeConversations": 1 },
        ]),
        "by queue name, the participants who came from no queue last"
    );
    assert_eq!(now.body["longestOpenStint"]["identity"], "agent-1");
    assert_eq!(now.body["longestOpenStint"]["conversationId"], "c-active");
    assert_eq!(
        now.body["oldestIdleConversation"]["conversationId"],
        "c-idle"
    );
    assert!(now.body["asOf"].is_string());
}

async fn stats_come_as_csv_when_asked(backend: Backend) {
    let app = backend.app().await;
    let _counting = app.count_stats();
    post(
        &app,
        "c-csv",
        vec![
            transfer("NA", "entry", "agent, \"one\""),
            transfer("NA", "exit", "agent, \"one\""),
        ],
    )
    .await;
    let now = OffsetDateTime::now_utc();
    let from = (now - time::Duration::hours(1)).format(&Rfc3339).unwrap();
    let to = (now + time::Duration::hours(1)).format(&Rfc3339).unwrap();
    let path = format!(
        "/api/v1/bots/{BOT}/stats?from={}&to={}&groupBy=participant",
        serde_urlencoded(&[("x", from)]).trim_start_matches("x="),
        serde_urlencoded(&[("x", to)]).trim_start_matches("x="),
    );
    let request = axum::http::Request::get(&path)
        .header("token", read_token())
        .header("accept", "text/csv")
        .body(axum::body::Body::empty())
        .unwrap();

    wait_until_counted(&app.store).await;
    let response = app.send(request).await;

    assert_eq!(response.status, 200, "{}", response.body);
    let content_type = response.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let lines: Vec<&str> = response.body.as_str().unwrap().lines().collect();
    assert!(
        lines[0].starts_with("group.participant,start,end,conversations.started,"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(",stints.p90Seconds,"));
    assert!(lines[0].contains(",transfers.cold,"));
    assert_eq!(lines.len(), 2, "one group, one bucket: {lines:?}");
    assert!(
        lines[1].starts_with("\"agent, \"\"one\"\"\","),
        "quoted: {}",
        lines[1]
    );
    let header: Vec<&str> = lines[0].split(',').collect();
    let count = header.iter().position(|c| *c == "stints.count").unwrap();
    // The participant's cell holds a comma, so count cells after it.
    assert_eq!(
        lines[1].rsplit(',').nth(header.len() - 1 - count),
        Some("1")
    );
}

async fn a_stats_query_is_refused_with_every_problem_named(backend: Backend) {
    let app = backend.app().await;
    let stats = |query: &str| format!("/api/v1/bots/{BOT}/stats?{query}");

    let missing = app.get(&stats(""), &read_token()).await;
    missing.assert_problem(400);
    assert_eq!(missing.error_paths(), ["/from", "/to"]);

    let wrong = app
        .get(
            &stats("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z&granularity=PT5M&timeZone=Mars/Olympus&groupBy=participant,queue,language"),
            &read_token(),
        )
        .await;
    wrong.assert_problem(400);
    assert_eq!(
        wrong.error_paths(),
        ["/to", "/granularity", "/timeZone", "/groupBy"]
    );

    let too_long = app
        .get(
            &stats("from=2025-01-01T00:00:00Z&to=2026-06-01T00:00:00Z"),
            &read_token(),
        )
        .await;
    too_long.assert_problem(400);
    let too_many = app
        .get(
            &stats("from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z&granularity=PT15M"),
            &read_token(),
        )
        .await;
    too_many.assert_problem(400);
    assert!(
        too_many.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("2000")
    );

    let other_bot = app
        .get(
            &format!(
                "/api/v1/bots/{OTHER_BOT}/stats?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
            ),
            &read_token(),
        )
        .await;
    other_bot.assert_problem(404);
}

/// The apps of the replicas: one that ingests and reads every bot.
const REPLICA_CONFIG: &str = "[[apps]]\napp_id = \"all-bots\"\nsecret_env = \"WILDCARD_SECRET\"\n\
                              bots = [\"*\"]\npermissions = [\"ingest\", \"read\"]\n";

/// Two replicas count one bot's stats while events arrive through both; one is killed
/// (SIGKILL) and started again, and the other's database link is cut for a second. Then
/// every event is counted exactly once: the feed items counted equal the events stored,
/// and the stats equal a from-scratch computation over them.
#[sqlx::test(migrations = false)]
async fn stats_count_every_event_once_across_replicas_a_sigkill_and_a_link_cut(pool: sqlx::PgPool) {
    use crate::process::Service;
    use crate::proxy::{DbProxy, Fault};
    // Arrange: replica A on the database, replica B through a proxy.
    let url = test_database_url(&pool);
    let options = pool.connect_options();
    let proxy = DbProxy::start((options.get_host().to_owned(), options.get_port())).await;
    let proxied = proxy.url_for(&pool);
    let env = |url: &str| -> Vec<(&str, String)> {
        vec![
            ("DATABASE_URL", url.to_owned()),
            ("WILDCARD_SECRET", WILDCARD_SECRET.to_owned()),
        ]
    };
    let start = |url: &str| {
        let env = env(url);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        Service::start(REPLICA_CONFIG, &pairs)
    };
    let mut a = start(&url);
    let mut b = start(&proxied);
    a.wait_for("/readyz", 200).await;
    b.wait_for("/readyz", 200).await;
    let began = OffsetDateTime::now_utc();

    // Act: 40 conversations of 12 events, posted through both replicas in turn.
    let client = reqwest::Client::new();
    let token = wildcard_token();
    let mut steps = Vec::new();
    for conversation in 0..40 {
        let agents = [
            format!("agent-{}", conversation % 5),
            format!("agent-{}", (conversation + 1) % 5),
        ];
        let flow = [
            ("NA", "entry", &agents[0]),
            ("WARM", "entry", &agents[1]),
            ("WARM", "exit", &agents[1]),
            ("COLD", "exit", &agents[0]),
            ("COLD", "entry", &agents[1]),
            ("COLD", "exit", &agents[1]),
            ("COLD", "entry", &agents[0]),
            ("NA", "exit", &agents[0]),
            ("REDIAL", "entry", &agents[1]),
            ("NA", "entry", &agents[1]),
            ("NA", "exit", &agents[1]),
            ("NA", "exit", &agents[0]),
        ];
        for (kind, transition, agent) in flow {
            steps.push((
                format!("c-once-{conversation}"),
                kind,
                transition,
                agent.clone(),
            ));
        }
    }
    // Interleaved across conversations, as a contact center's events arrive.
    steps.sort_by_key(|(conversation, ..)| conversation.len() % 3);
    let total = steps.len();
    for (n, (conversation, kind, transition, agent)) in steps.into_iter().enumerate() {
        if n == total / 3 {
            a.kill();
            a = start(&url);
        }
        if n == total / 2 {
            proxy.fail(Fault::Cut);
        }
        if n == total / 2 + 40 {
            proxy.restore();
        }
        let body = batch(&conversation, vec![transfer(kind, transition, &agent)]).to_string();
        // Through whichever replica answers; a 503 while one is down is retried on the other.
        loop {
            let replica = if n % 2 == 0 { &a } else { &b };
            let other = if n % 2 == 0 { &b } else { &a };
            let mut stored = false;
            for target in [replica, other] {
                let response = client
                    .post(format!("{}/agentassist/api/v1/hooks/{BOT}", target.base))
                    .header("content-type", "application/json")
                    .header("token", &token)
                    .header("idempotency-key", format!("{conversation}-{n}"))
                    .body(body.clone())
                    .send()
                    .await;
                if response.is_ok_and(|response| response.status() == 200) {
                    stored = true;
                    break;
                }
            }
            if stored {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    a.wait_for("/readyz", 200).await;
    b.wait_for("/readyz", 200).await;

    // Assert: every stored event counted once.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        events as usize, total,
        "every event stored once (idempotency keys)"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let counted = loop {
        let counted: i64 = sqlx::query_scalar(
            "SELECT CAST(coalesce(sum(counted), 0) AS BIGINT) FROM stats_positions",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if counted >= events || std::time::Instant::now() > deadline {
            break counted;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(counted, events, "each feed item counted once, none twice");

    let store = agentassist_hooks::store::PgStore::from_pool(pool.clone()).into();
    let app_facts = facts_of_store(&store).await;
    let ended = OffsetDateTime::now_utc();
    for asked in [
        Asked {
            granularity: "all",
            zone: "UTC",
            group_by: vec![],
            participant: None,
            queue: None,
            experience: None,
            off_grid: None,
        },
        Asked {
            granularity: "PT15M",
            zone: "Europe/Berlin",
            group_by: vec![Dimension::Participant],
            participant: None,
            queue: None,
            experience: None,
            off_grid: None,
        },
        Asked {
            granularity: "PT1H",
            zone: "UTC",
            group_by: vec![Dimension::Experience],
            participant: None,
            queue: None,
            experience: None,
            off_grid: None,
        },
    ] {
        let from = began - time::Duration::hours(1);
        let to = ended + time::Duration::hours(1);
        let answer = get_stats_over_http(&client, &a.base, &asked, from, to).await;
        let expected = from_scratch(&app_facts, &asked, from, to);
        assert_same(&answer, &expected, asked.zone, &format!("{asked:?}"));
    }
}

async fn get_stats_over_http(
    client: &reqwest::Client,
    base: &str,
    asked: &Asked,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Value {
    let query = query_of(asked, from, to);
    let response = client
        .get(format!("{base}/api/v1/bots/{BOT}/stats?{query}"))
        .header("token", wildcard_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// An event held back from the feed by an older transaction still running (SPEC 8) keeps
/// the worker from finding nothing after its page, as steady ingest does all the time: an
/// answer is as of the request once the feed's visible end is counted, rather than
/// waiting out `stats.max_lag_seconds` to report the last time nothing followed.
#[sqlx::test(migrations = "migrations/postgres")]
async fn an_answer_is_as_of_the_request_once_the_visible_feed_is_counted(pool: sqlx::PgPool) {
    // Arrange: a lag allowance no test would wait out, so that waiting for the held-back
    // event (instead of answering as of the visible end) shows as a hang the guard below
    // reports.
    let patient = agentassist_hooks::config::StatsSettings {
        max_lag_seconds: 3600,
        ..Default::default()
    };
    let app = TestApp::new(pool.clone()).rebuilt(|state| state.with_stats(&patient));
    let _counting = app.count_stats();
    post(&app, "c-visible", vec![transfer("NA", "entry", "agent-1")]).await;
    wait_until_counted(&app.store).await;
    let mut holding = pool.begin().await.unwrap();
    sqlx::query("SELECT txid_current()")
        .execute(&mut *holding)
        .await
        .unwrap();
    let before_held_back = OffsetDateTime::now_utc();
    post(
        &app,
        "c-held-back",
        vec![transfer("NA", "entry", "agent-2")],
    )
    .await;
    let posted = OffsetDateTime::now_utc();
    let now = posted.format(&Rfc3339).unwrap();
    let from = (posted - time::Duration::hours(1))
        .format(&Rfc3339)
        .unwrap();
    let path = format!(
        "/api/v1/bots/{BOT}/stats?from={}&to={}",
        serde_urlencoded(&[("x", from)]).trim_start_matches("x="),
        serde_urlencoded(&[("x", now)]).trim_start_matches("x="),
    );

    // Act
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        app.get(&path, &read_token()),
    )
    .await
    .expect("answered without waiting for the held-back event");

    // Assert
    assert_eq!(answer.status, 200, "{}", answer.body);
    let as_of = OffsetDateTime::parse(answer.body["asOf"].as_str().unwrap(), &Rfc3339).unwrap();
    // As of the request, or of a moment the worker found nothing visible after its page
    // (it may look between the held-back commit and the request): never a moment from
    // before the held-back event, which waiting out max_lag would have reported.
    assert!(
        as_of >= before_held_back,
        "asOf {as_of} is from before the held-back event was sent ({before_held_back})"
    );
    assert_eq!(
        answer.body["results"][0]["buckets"][0]["conversations"]["started"], 1,
        "the held-back conversation is not visible yet: {}",
        answer.body
    );
    holding.rollback().await.unwrap();
}
