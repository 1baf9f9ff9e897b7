//! SPEC 5: `GET /metrics` in the Prometheus text format, scraped after real traffic.
//! A test binary of its own (not in `tests/api`): the metrics recorder is global to a process.
//!
//! The recorder is one per process, so every test here holds [`SERIAL`] from its first
//! scrape to its last and asserts on the difference between the two.

// A binary of its own: the metrics recorder is global to a process, and the other tests'
// requests would count in it.
#[allow(dead_code)]
#[path = "api/common.rs"]
mod common;

on_both_backends!(
    traffic_is_counted_by_route_status_event_anomaly_reason_and_replay,
    a_shed_request_is_counted_while_metrics_and_probes_still_answer,
    metrics_can_be_turned_off,
);

use agentassist_hooks::auth::issue_token;
use agentassist_hooks::config::{AuthSettings, ServerSettings};
use agentassist_hooks::metrics as names;
use axum::body::{Body, Bytes};
use axum::http::Request;
use common::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use std::collections::BTreeMap;
use tokio::sync::Mutex;
use tower::ServiceExt;

static SERIAL: Mutex<()> = Mutex::const_new(());

const HOOKS_ROUTE: &str = "/agentassist/api/v1/hooks/{botId}";

/// One scrape: every sample by metric name and its sorted labels.
#[derive(Debug)]
struct Scrape(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let response = app
            .router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Self::parse(std::str::from_utf8(&bytes).unwrap())
    }

    fn parse(text: &str) -> Self {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut labels: Vec<(String, String)> = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                    (key.to_owned(), value.trim_end_matches('"').to_owned())
                })
                .collect();
            labels.sort();
            samples.insert((name.to_owned(), labels), value.parse().expect("a number"));
        }
        Self(samples)
    }

    /// The sample with exactly these labels, 0 when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        labels.sort();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every label set of a metric.
    fn series(&self, name: &str) -> Vec<&[(String, String)]> {
        self.0
            .keys()
            .filter(|(metric, _)| metric == name)
            .map(|(_, labels)| labels.as_slice())
            .collect()
    }
}

/// How much a sample grew between two scrapes.
fn grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

fn token_signed_with(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn traffic_is_counted_by_route_status_event_anomaly_reason_and_replay(backend: Backend) {
    let _serial = SERIAL.lock().await;
    let app = backend.app().await;
    let before = Scrape::of(&app).await;

    // Act: one batch with four kinds of event and two anomalies ...
    let stored = app
        .post_events(
            BOT,
            &batch(
                "c-metrics",
                vec![
                    transfer("NA", "entry", "a1"),
                    transfer("COLD", "exit", "a2"),
                    json!({ "name": "END_OF_CONVERSATION" }),
                    json!({ "name": "TRIGGER_SUMMARY_EVENT" }),
                ],
            ),
        )
        .await;
    // ... a keyed request and its retry ...
    let keyed_body = batch("c-metrics-keyed", vec![transfer("WARM", "entry", "a3")]).to_string();
    let first = app
        .send(keyed_request("metrics-key", keyed_body.clone()))
        .await;
    let replayed = app.send(keyed_request("metrics-key", keyed_body)).await;
    // ... five refused tokens ...
    let body = batch("c-metrics-refused", vec![transfer("NA", "entry", "a4")]).to_string();
    let exp_past = 1_000_000_000;
    let refused_tokens = [
        ("malformed", "not-a-jwt".to_owned()),
        (
            "bad_signature",
            issue_token(
                INGEST_APP,
                b"another-secret-another-secret-0123456789",
                None,
            )
            .unwrap(),
        ),
        (
            "unknown_app",
            issue_token("no-such-app", INGEST_SECRET.as_bytes(), None).unwrap(),
        ),
        (
            "expired",
            token_signed_with(
                json!({ "appId": INGEST_APP, "exp": exp_past }),
                INGEST_SECRET,
            ),
        ),
    ];
    let mut refusals = Vec::new();
    for (_, token) in &refused_tokens {
        refusals.push(app.send(hooks_request(BOT, token, body.clone())).await);
    }
    let no_token = Request::post(format!("/agentassist/api/v1/hooks/{BOT}"))
        .header("content-type", "application/json")
        .body(Body::from(body.clone()))
        .unwrap();
    refusals.push(app.send(no_token).await);
    // ... a read and an unknown path.
    let read = app
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-metrics"),
            &read_token(),
        )
        .await;
    let unknown = app.get("/no/such/path", &read_token()).await;
    let after = Scrape::of(&app).await;

    // Assert: the answers were what the counts say.
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(first.status, 200);
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    for refusal in &refusals {
        refusal.assert_problem(401);
        assert_eq!(
            refusal.body["detail"], "invalid token",
            "the client is never told why"
        );
    }
    assert_eq!(read.status, 200);
    assert_eq!(unknown.status, 404);

    // Requests by route template and status, with their latency.
    let hooks = |status| {
        [
            ("method", "POST"),
            ("route", HOOKS_ROUTE),
            ("status", status),
        ]
    };
    assert_eq!(
        grew(&before, &after, names::HTTP_REQUESTS, &hooks("200")),
        3.0
    );
    assert_eq!(
        grew(&before, &after, names::HTTP_REQUESTS, &hooks("401")),
        5.0
    );
    let histogram = |suffix: &str| format!("{}{suffix}", names::HTTP_REQUEST_DURATION);
    assert_eq!(
        grew(&before, &after, &histogram("_count"), &hooks("200")),
        3.0
    );
    let mut le_inf = hooks("401").to_vec();
    le_inf.push(("le", "+Inf"));
    assert_eq!(grew(&before, &after, &histogram("_bucket"), &le_inf), 5.0);
    assert!(grew(&before, &after, &histogram("_sum"), &hooks("200")) > 0.0);
    let conversation_route = "/api/v1/bots/{botId}/conversations/{conversationId}";
    assert_eq!(
        grew(
            &before,
            &after,
            names::HTTP_REQUESTS,
            &[
                ("method", "GET"),
                ("route", conversation_route),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        grew(
            &before,
            &after,
            names::HTTP_REQUESTS,
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0,
        "an unknown path is counted without its raw URI"
    );
    assert!(
        after
            .series(names::HTTP_REQUESTS)
            .iter()
            .flat_map(|labels| labels.iter())
            .all(|(_, value)| !value.contains(BOT) && !value.contains("c-metrics")),
        "no label holds an id"
    );

    // Events stored by name, transfer type and transition; the replay stored nothing.
    let stored_events = [
        ("INTERNAL_TRANSFER_EVENT", "NA", "entry", 1.0),
        ("INTERNAL_TRANSFER_EVENT", "COLD", "exit", 1.0),
        ("INTERNAL_TRANSFER_EVENT", "WARM", "entry", 1.0),
        ("END_OF_CONVERSATION", "none", "none", 1.0),
        ("TRIGGER_SUMMARY_EVENT", "none", "none", 1.0),
        ("INTERNAL_TRANSFER_EVENT", "NA", "exit", 0.0),
    ];
    for (name, transfer_type, transition, count) in stored_events {
        assert_eq!(
            grew(
                &before,
                &after,
                names::EVENTS_STORED,
                &[
                    ("name", name),
                    ("transfer_type", transfer_type),
                    ("transition", transition)
                ]
            ),
            count,
            "{name} {transfer_type} {transition}"
        );
    }

    // Anomalies by code, as the events API reports them.
    let events = app
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-metrics/events"),
            &read_token(),
        )
        .await;
    let flagged: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|event| event["anomalies"].as_array().unwrap())
        .map(|code| code.as_str().unwrap())
        .collect();
    assert_eq!(
        flagged,
        ["exit_without_entry", "closed_with_participants_present"]
    );
    for code in [
        "exit_without_entry",
        "closed_with_participants_present",
        "duplicate_entry",
    ] {
        let expected = if flagged.contains(&code) { 1.0 } else { 0.0 };
        assert_eq!(
            grew(&before, &after, names::ANOMALIES, &[("code", code)]),
            expected,
            "{code}"
        );
    }
    assert!(
        after
            .series(names::ANOMALIES)
            .iter()
            .any(|labels| labels == &[("code".to_owned(), "entry_after_end".to_owned())]),
        "every anomaly code has a series from the start"
    );

    // Authentication failures by reason; one replay.
    for (reason, _) in &refused_tokens {
        assert_eq!(
            grew(&before, &after, names::AUTH_FAILURES, &[("reason", reason)]),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        grew(
            &before,
            &after,
            names::AUTH_FAILURES,
            &[("reason", "missing_token")]
        ),
        1.0
    );
    assert_eq!(grew(&before, &after, names::IDEMPOTENT_REPLAYS, &[]), 1.0);

    // The database pools of this store, sampled at the scrape.
    let pools: &[(&str, f64)] = match &backend {
        Backend::Postgres(_) => &[("primary", 8.0)],
        Backend::Sqlite(_) => &[("writer", 1.0), ("reader", 16.0)],
    };
    for (pool, max) in pools {
        assert_eq!(
            after.value(names::DB_POOL_MAX_CONNECTIONS, &[("pool", pool)]),
            *max,
            "{pool}"
        );
        let idle = after.value(
            names::DB_POOL_CONNECTIONS,
            &[("pool", pool), ("state", "idle")],
        );
        let in_use = after.value(
            names::DB_POOL_CONNECTIONS,
            &[("pool", pool), ("state", "in_use")],
        );
        // Connections go back to the pool in the background, so idle and in use may
        // still be shifting; the traffic opened at least one.
        assert!(
            idle + in_use >= 1.0 && idle + in_use <= *max,
            "{pool}: {idle} idle, {in_use} in use"
        );
    }
}

async fn a_shed_request_is_counted_while_metrics_and_probes_still_answer(backend: Backend) {
    let _serial = SERIAL.lock().await;
    let server = ServerSettings {
        concurrency_limit: 1,
        ..ServerSettings::default()
    };
    let app = backend.app_with(AuthSettings::default(), server).await;
    let before = Scrape::of(&app).await;

    // Arrange: a request holds the only slot, its body still arriving.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let held = hooks_request(BOT, &ingest_token(), String::new())
        .map(|_| Body::from_stream(tokio_stream(receiver)));
    let holding = tokio::spawn(app.router.clone().oneshot(held));
    // The channel holds one chunk: a second is taken only once the handler reads the body,
    // and so holds the slot.
    for _ in 0..2 {
        sender.send(Ok(Bytes::from_static(b" "))).await.unwrap();
    }

    // Act
    let shed = app
        .post_events(BOT, &batch("c-shed", vec![transfer("NA", "entry", "a1")]))
        .await;
    let during = Scrape::of(&app).await;
    let alive = app.get("/healthz", "").await;
    drop(sender);
    let finished = holding.await.unwrap().unwrap();

    // Assert: the excess was shed and counted; /metrics and /healthz were not shed.
    shed.assert_problem(503);
    assert!(shed.headers.contains_key("retry-after"));
    assert_eq!(alive.status, 200);
    assert_eq!(
        finished.status(),
        400,
        "the held request ends with its empty body"
    );
    assert_eq!(grew(&before, &during, names::REQUESTS_SHED, &[]), 1.0);
    assert_eq!(
        grew(
            &before,
            &during,
            names::HTTP_REQUESTS,
            &[
                ("method", "POST"),
                ("route", HOOKS_ROUTE),
                ("status", "503")
            ]
        ),
        1.0
    );
    assert_eq!(grew(&before, &during, names::REQUEST_TIMEOUTS, &[]), 0.0);
}

/// A body stream fed by a channel: it ends when the sender is dropped.
fn tokio_stream(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |context| receiver.poll_recv(context))
}

async fn metrics_can_be_turned_off(backend: Backend) {
    // Its 404 is counted too, and would show in another test's counts.
    let _serial = SERIAL.lock().await;
    let server = ServerSettings {
        metrics: false,
        ..ServerSettings::default()
    };
    let app = backend.app_with(AuthSettings::default(), server).await;

    let response = app.get("/metrics", "").await;

    response.assert_problem(404);
}
