//! SPEC 8 over real HTTP and both stores: the change feed's pages and parameters, and the
//! live stream's resume, cut-off, limits and ending. The feed's guarantee under
//! concurrent replicas is in `feed_order.rs`.

use crate::common::{
    BOT, Backend, OTHER_BOT, READ_APP, READ_SECRET, TestApp, batch, ingest_token, read_token,
    transfer,
};
use agentassist_hooks::auth::issue_token;
use agentassist_hooks::config::{AuthSettings, ChangesSettings};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

on_both_backends!(
    the_feed_lists_every_event_once_with_the_status_after_it,
    the_feed_checks_its_parameters,
    a_feed_page_ends_early_at_four_mib,
    a_stream_resumes_after_last_event_id_with_exactly_what_it_missed,
    a_stream_refuses_a_position_it_did_not_issue,
    a_reader_that_falls_behind_is_cut_off_and_resumes_on_reconnect,
    streams_beyond_the_limit_are_refused_and_streams_end_at_shutdown,
    a_stream_ends_when_its_token_expires,
    a_reader_starting_at_now_gets_only_what_is_stored_from_then_on,
);

fn changes_path(after: Option<&str>, limit: usize) -> String {
    match after {
        Some(after) => format!("/api/v1/bots/{BOT}/changes?after={after}&limit={limit}"),
        None => format!("/api/v1/bots/{BOT}/changes?limit={limit}"),
    }
}

/// The feed from `after`, `limit` at a time, until `expected` items have come (a page can
/// come back short while another test's transaction holds the feed back), and the last
/// `nextAfter`. Fails if more than `expected` come.
async fn read_feed(
    app: &TestApp,
    mut after: Option<String>,
    limit: usize,
    expected: usize,
) -> (Vec<Value>, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut items = Vec::new();
    loop {
        let page = app
            .get(&changes_path(after.as_deref(), limit), &read_token())
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let got = page.body["items"].as_array().unwrap().clone();
        after = page.body["nextAfter"].as_str().map(str::to_owned);
        assert!(got.len() <= limit);
        let done = got.is_empty() && items.len() >= expected;
        items.extend(got);
        assert!(
            items.len() <= expected,
            "more than {expected}: {}",
            items.len()
        );
        if done {
            return (items, after);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected}",
            items.len()
        );
    }
}

/// `(conversationId, seq)` of each item.
fn keys(items: &[Value]) -> Vec<(String, i64)> {
    items
        .iter()
        .map(|item| {
            (
                item["conversationId"].as_str().unwrap().to_owned(),
                item["seq"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Fails unless each conversation's seqs are 1, 2, 3, … in the order given.
fn assert_in_seq_order(keys: &[(String, i64)]) {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (conversation, seq) in keys {
        let previous = last.insert(conversation, *seq).unwrap_or(0);
        assert_eq!(
            *seq,
            previous + 1,
            "{conversation}: seq {seq} after {previous}"
        );
    }
}

async fn the_feed_lists_every_event_once_with_the_status_after_it(backend: Backend) {
    let app = backend.app().await;
    let mut statuses: HashMap<(String, i64), String> = HashMap::new();
    let script = [
        ("c-a", transfer("NA", "entry", "a1")),
        ("c-b", transfer("NA", "entry", "b1")),
        ("c-a", transfer("COLD", "exit", "a1")),
        ("c-a", transfer("COLD", "entry", "a2")),
        ("c-b", transfer("NA", "exit", "b1")),
        ("c-c", transfer("NA", "entry", "c1")),
        ("c-a", transfer("NA", "exit", "a2")),
    ];
    for (conversation, event) in script {
        let stored = app
            .post_events(BOT, &batch(conversation, vec![event]))
            .await;
        assert_eq!(stored.status, 200);
        let seq = stored.body["lastSeq"].as_i64().unwrap();
        let status = stored.body["conversationStatus"]
            .as_str()
            .unwrap()
            .to_owned();
        statuses.insert((conversation.to_owned(), seq), status);
    }
    app.post_events(
        OTHER_BOT,
        &batch("c-other", vec![transfer("NA", "entry", "x")]),
    )
    .await;

    let (items, next_after) = read_feed(&app, None, 2, 7).await;

    let read = keys(&items);
    assert_eq!(
        read.len(),
        7,
        "each event of the bot once, no other bot's: {read:?}"
    );
    assert_in_seq_order(&read);
    for item in &items {
        let key = (
            item["conversationId"].as_str().unwrap().to_owned(),
            item["seq"].as_i64().unwrap(),
        );
        assert_eq!(item["conversationStatus"], statuses[&key], "{item}");
        assert_eq!(item["kind"], "event");
        assert_eq!(item["name"], "INTERNAL_TRANSFER_EVENT");
        assert!(item["payload"]["participant"]["identity"].is_string());
    }
    let statuses_of_a: Vec<&str> = items
        .iter()
        .filter(|item| item["conversationId"] == "c-a")
        .map(|item| item["conversationStatus"].as_str().unwrap())
        .collect();
    assert_eq!(statuses_of_a, ["active", "idle", "active", "ended"]);
    // SQLite commits in the order of the posts; so does PostgreSQL here, one at a time.
    assert_eq!(
        read.iter()
            .map(|(conversation, _)| conversation.as_str())
            .collect::<Vec<_>>(),
        ["c-a", "c-b", "c-a", "c-a", "c-b", "c-c", "c-a"]
    );
    let last = items.last().unwrap()["position"].as_str().unwrap();
    assert_eq!(
        next_after.as_deref(),
        Some(last),
        "an empty page echoes the position it was given"
    );

    app.post_events(BOT, &batch("c-b", vec![transfer("COLD", "entry", "b2")]))
        .await;
    let (more, _) = read_feed(&app, next_after, 10, 1).await;
    assert_eq!(keys(&more), [("c-b".to_owned(), 3)], "only what came after");
}

async fn the_feed_checks_its_parameters(backend: Backend) {
    let app = backend.app().await;
    app.post_events(BOT, &batch("c-1", vec![transfer("NA", "entry", "a1")]))
        .await;

    for (query, path) in [
        ("after=bm90LWEtcG9zaXRpb24", "/after"),
        ("after=%25%25", "/after"),
        ("limit=0", "/limit"),
        ("limit=1001", "/limit"),
    ] {
        let refused = app
            .get(
                &format!("/api/v1/bots/{BOT}/changes?{query}"),
                &read_token(),
            )
            .await;
        refused.assert_problem(400);
        assert_eq!(refused.error_paths(), [path], "{query}");
    }
    let from_start = app
        .get(&format!("/api/v1/bots/{BOT}/changes?after="), &read_token())
        .await;
    assert_eq!(from_start.status, 200);
    assert_eq!(from_start.body["items"].as_array().unwrap().len(), 1);
    let empty = app
        .get(
            &format!("/api/v1/bots/{OTHER_BOT}/changes"),
            &crate::common::wildcard_token(),
        )
        .await;
    assert_eq!(empty.body, json!({ "items": [], "nextAfter": null }));

    app.get(&format!("/api/v1/bots/{OTHER_BOT}/changes"), &read_token())
        .await
        .assert_problem(404);
    app.get(&format!("/api/v1/bots/{BOT}/changes"), &ingest_token())
        .await
        .assert_problem(403);
    app.get(
        &format!("/api/v1/bots/{BOT}/changes/stream"),
        &ingest_token(),
    )
    .await
    .assert_problem(403);
    app.get(&format!("/api/v1/bots/{BOT}/changes"), "not-a-token")
        .await
        .assert_problem(401);
}

async fn a_feed_page_ends_early_at_four_mib(backend: Backend) {
    let app = backend.app().await;
    let filler = "x".repeat(200 * 1024);
    for agent in 0..24 {
        let mut event = transfer("NA", "entry", &format!("a{agent}"));
        event["notes"] = json!(filler);
        let stored = app.post_events(BOT, &batch("c-big", vec![event])).await;
        assert_eq!(stored.status, 200, "{}", stored.body);
    }

    let mut all: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    while all.len() < 24 {
        let page = app
            .get(&changes_path(after.as_deref(), 1000), &read_token())
            .await;
        let items = page.body["items"].as_array().unwrap();
        let bytes: usize = items
            .iter()
            .map(|item| item["payload"].to_string().len())
            .sum();
        assert!(
            bytes <= 4 * 1024 * 1024 + 210 * 1024,
            "a page stops at the event that takes it past 4 MiB: {bytes} bytes"
        );
        pages += usize::from(!items.is_empty());
        all.extend(items.iter().cloned());
        after = page.body["nextAfter"].as_str().map(str::to_owned);
    }

    assert!(pages >= 2, "24 payloads of 200 KiB take two pages at least");
    assert_eq!(all.len(), 24);
    assert_in_seq_order(&keys(&all));
}

async fn a_stream_resumes_after_last_event_id_with_exactly_what_it_missed(backend: Backend) {
    let app = backend.app().await;
    let mut stream = app.stream(BOT, &read_token(), None).await;
    assert_eq!(
        stream.next_message().await.unwrap().comment.as_deref(),
        Some("connected")
    );
    app.post_events(BOT, &batch("c-live", vec![transfer("NA", "entry", "a1")]))
        .await;
    let seen = stream.expect_change(10).await;
    assert_eq!(seen.event.as_deref(), Some("change"));
    assert_eq!(seen.id.as_deref(), seen.json()["position"].as_str());
    assert_eq!(seen.json()["seq"], 1);
    drop(stream);

    for round in 0..25 {
        for conversation in ["c-live", "c-other"] {
            let agent = format!("{conversation}-{round}");
            let stored = app
                .post_events(
                    BOT,
                    &batch(conversation, vec![transfer("COLD", "entry", &agent)]),
                )
                .await;
            assert_eq!(stored.status, 200);
        }
    }
    let mut resumed = app.stream(BOT, &read_token(), seen.id.as_deref()).await;
    let mut missed = Vec::new();
    for _ in 0..50 {
        missed.push(resumed.expect_change(10).await.json());
    }
    app.post_events(BOT, &batch("c-marker", vec![transfer("NA", "entry", "m")]))
        .await;
    let after_them = resumed.expect_change(10).await.json();

    let (feed, _) = read_feed(&app, seen.id.clone(), 1000, 51).await;
    assert_eq!(
        keys(&missed),
        keys(&feed[..50]),
        "exactly the 50, in feed order"
    );
    assert_eq!(
        missed
            .iter()
            .filter(|item| item["conversationId"] == "c-live")
            .count(),
        25
    );
    assert_eq!(
        keys(&missed[..2]),
        [("c-live".to_owned(), 2), ("c-other".to_owned(), 1)]
    );
    assert_eq!(
        after_them["conversationId"], "c-marker",
        "nothing more in between"
    );
}

async fn a_stream_refuses_a_position_it_did_not_issue(backend: Backend) {
    let app = backend.app().await;
    let request = axum::http::Request::get(format!("/api/v1/bots/{BOT}/changes/stream"))
        .header("token", read_token())
        .header("last-event-id", "garbage")
        .body(axum::body::Body::empty())
        .unwrap();

    let refused = app.send(request).await;

    refused.assert_problem(400);
    assert_eq!(refused.error_paths(), ["/Last-Event-ID"]);
}

async fn a_reader_that_falls_behind_is_cut_off_and_resumes_on_reconnect(backend: Backend) {
    let app = backend
        .app_streaming(
            AuthSettings::default(),
            ChangesSettings {
                slow_reader_seconds: 1,
                ..ChangesSettings::default()
            },
        )
        .await;
    let cut_off_before = cut_off_count(&app).await;
    let mut stalled = app.stream(BOT, &read_token(), None).await;
    let events: Vec<Value> = (0..60)
        .map(|agent| transfer("COLD", "entry", &format!("a{agent}")))
        .collect();
    app.post_events(BOT, &batch("c-flood", events)).await;

    // Nothing is read until the stream gives up on its reader.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cut_off_count(&app).await == cut_off_before {
        assert!(
            Instant::now() < deadline,
            "the stalled reader is never cut off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut received = Vec::new();
    while let Some(change) = stalled.next_change().await {
        received.push(change);
    }
    assert!(
        !received.is_empty() && received.len() < 60,
        "a bounded buffer, then the end: {}",
        received.len()
    );

    let last = received.last().unwrap().id.clone();
    let mut resumed = app.stream(BOT, &read_token(), last.as_deref()).await;
    let mut seqs: Vec<i64> = received
        .iter()
        .map(|change| change.json()["seq"].as_i64().unwrap())
        .collect();
    while seqs.len() < 60 {
        seqs.push(
            resumed.expect_change(10).await.json()["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
}

async fn cut_off_count(app: &TestApp) -> f64 {
    let metrics = app.get("/metrics", "").await;
    metrics
        .body
        .as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("agentassist_hooks_change_readers_cut_off_total "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn streams_beyond_the_limit_are_refused_and_streams_end_at_shutdown(backend: Backend) {
    let app = backend
        .app_streaming(
            AuthSettings::default(),
            ChangesSettings {
                max_streams: 1,
                ..ChangesSettings::default()
            },
        )
        .await;
    let mut open = app.stream(BOT, &read_token(), None).await;

    app.get(&format!("/api/v1/bots/{BOT}/changes/stream"), &read_token())
        .await
        .assert_problem(503);

    app.changes.stop();
    let mut rest = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), open.next_message())
        .await
        .expect("the stream ends at shutdown")
    {
        rest.push(message);
    }
    assert_eq!(rest.len(), 1, "only the opening comment: {rest:?}");
}

async fn a_stream_ends_when_its_token_expires(backend: Backend) {
    let app = backend
        .app_streaming(
            AuthSettings {
                leeway_seconds: 0,
                ..AuthSettings::default()
            },
            ChangesSettings::default(),
        )
        .await;
    let short_lived = issue_token(READ_APP, READ_SECRET.as_bytes(), Some(2)).unwrap();
    let mut stream = app.stream(BOT, &short_lived, None).await;

    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while stream.next_message().await.is_some() {}
    })
    .await;

    assert!(ended.is_ok(), "the stream ends once its token has expired");
}

/// SPEC 8: a client of replica B hears of an event posted to replica A within a second.
/// B's streams poll once an hour here, so only A's notification can wake it in time.
#[sqlx::test(migrations = "migrations/postgres")]
async fn a_stream_on_one_replica_gets_an_event_posted_to_another_within_a_second(
    pool: sqlx::PgPool,
) {
    let backend = Backend::Postgres(pool.clone());
    let replica_a = backend.app().await;
    let replica_b = backend
        .app_streaming(
            AuthSettings::default(),
            ChangesSettings {
                poll_interval_ms: 3_600_000,
                ..ChangesSettings::default()
            },
        )
        .await;
    let (_relay_a, _relay_b) = (replica_a.relay(), replica_b.relay());
    wait_for_listeners(&pool, 2).await;
    let mut stream = replica_b.stream(BOT, &read_token(), None).await;
    assert!(stream.next_message().await.unwrap().comment.is_some());

    for round in 0..3 {
        let agent = format!("a{round}");
        let posted = Instant::now();
        let stored = replica_a
            .post_events(
                BOT,
                &batch("c-cross", vec![transfer("COLD", "entry", &agent)]),
            )
            .await;
        assert_eq!(stored.status, 200);
        let change = stream.expect_change(10).await;
        let latency = posted.elapsed();

        assert_eq!(
            change.json()["payload"]["participant"]["identity"],
            agent.as_str()
        );
        println!("replica B streamed replica A's event {round} {latency:?} after the post");
        assert!(latency < Duration::from_secs(1), "{latency:?}");
    }
}

/// Waits until `count` sessions of this database are listening for announcements.
async fn wait_for_listeners(pool: &sqlx::PgPool, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if listening >= count {
            return;
        }
        assert!(Instant::now() < deadline, "the relays never listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_reader_starting_at_now_gets_only_what_is_stored_from_then_on(backend: Backend) {
    let app = backend.app().await;
    let empty = app.get(&changes_path(Some("now"), 10), &read_token()).await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert_eq!(empty.body["items"], json!([]));
    let beginning = empty.body["nextAfter"]
        .as_str()
        .expect("an empty feed's end is named");
    let from_beginning = app
        .get(&changes_path(Some(beginning), 10), &read_token())
        .await;
    assert_eq!(from_beginning.body["items"], json!([]));
    let before = batch("c-before", vec![transfer("NA", "entry", "a1")]);
    assert_eq!(app.post_events(BOT, &before).await.status, 200);

    let end = app.get(&changes_path(Some("now"), 10), &read_token()).await;

    // The end is what is visible now: on PostgreSQL an event committed a moment ago may
    // still be held back by another transaction (of any database of the cluster), and
    // then comes after it — late, never lost.
    let position = end.body["nextAfter"]
        .as_str()
        .expect("the end's position")
        .to_owned();
    let mut stream = app.stream_after(BOT, &read_token(), "now").await;
    let opened = stream.next_message().await.unwrap();
    assert_eq!(opened.comment.as_deref(), Some("connected"));
    assert!(opened.id.is_some(), "the stream names where it starts");
    let after = batch("c-after", vec![transfer("NA", "entry", "a2")]);
    assert_eq!(app.post_events(BOT, &after).await.status, 200);

    let mut paged = conversations_of(&end.body["items"]);
    let mut next = Some(position);
    while !paged.contains(&"c-after".to_owned()) {
        let page = app
            .get(&changes_path(next.as_deref(), 10), &read_token())
            .await;
        paged.extend(conversations_of(&page.body["items"]));
        next = page.body["nextAfter"].as_str().map(str::to_owned);
    }
    assert_only_the_new_one(&paged);
    let mut streamed = Vec::new();
    while !streamed.contains(&"c-after".to_owned()) {
        let item = stream.expect_change(10).await.json();
        streamed.push(item["conversationId"].as_str().unwrap().to_owned());
    }
    assert_only_the_new_one(&streamed);
}

fn conversations_of(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["conversationId"].as_str().unwrap().to_owned())
        .collect()
}

/// `c-after` once; `c-before` at most once, and only if it was held back at `now`.
fn assert_only_the_new_one(conversations: &[String]) {
    let after = conversations.iter().filter(|c| *c == "c-after").count();
    let before = conversations.iter().filter(|c| *c == "c-before").count();
    assert_eq!(after, 1, "{conversations:?}");
    assert!(before <= 1, "{conversations:?}");
    assert_eq!(after + before, conversations.len(), "{conversations:?}");
}
