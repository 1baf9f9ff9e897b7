//! Prometheus metrics: the names, their descriptions, and the functions that record them.
//!
//! One recorder per process (installed by the first [`install`]), rendered by `GET /metrics`.
//! Labels take values from small fixed sets only — route templates, status codes, event
//! names, anomaly codes, failure reasons — never ids or raw URIs.

use crate::domain::{Anomaly, IngestBatch};
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Requests answered, by `method`, `route` (template) and `status`.
pub const HTTP_REQUESTS: &str = "agentassist_hooks_http_requests_total";
/// Time to answer (until the response head), by `method`, `route` and `status`.
pub const HTTP_REQUEST_DURATION: &str = "agentassist_hooks_http_request_duration_seconds";
/// Requests refused with 503 because `server.concurrency_limit` requests were in flight.
pub const REQUESTS_SHED: &str = "agentassist_hooks_requests_shed_total";
/// Requests answered 503 at `server.request_timeout_seconds`.
pub const REQUEST_TIMEOUTS: &str = "agentassist_hooks_request_timeouts_total";
/// Events stored, by `name`, `transfer_type` and `transition` (`none` where they do not apply).
pub const EVENTS_STORED: &str = "agentassist_hooks_events_stored_total";
/// Anomalies flagged on stored events, by `code`.
pub const ANOMALIES: &str = "agentassist_hooks_anomalies_total";
/// Refused tokens, by `reason` (the client only hears "invalid token").
pub const AUTH_FAILURES: &str = "agentassist_hooks_auth_failures_total";
/// Ingest requests answered from an earlier request with the same `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYS: &str = "agentassist_hooks_idempotent_replays_total";
/// Client connections open now.
pub const HTTP_CONNECTIONS: &str = "agentassist_hooks_http_connections";
/// The most client connections the server holds open (`server.max_connections`, or what
/// the open-file limit allows).
pub const HTTP_MAX_CONNECTIONS: &str = "agentassist_hooks_http_max_connections";
/// Database connections by `pool` and `state` (`idle`, `in_use`), sampled at scrape time.
pub const DB_POOL_CONNECTIONS: &str = "agentassist_hooks_db_pool_connections";
/// The most connections each `pool` will open.
pub const DB_POOL_MAX_CONNECTIONS: &str = "agentassist_hooks_db_pool_max_connections";

/// Live change streams open now (SPEC 8).
pub const CHANGE_STREAMS_OPEN: &str = "agentassist_hooks_change_streams_open";
/// Change feed items sent on live streams.
pub const CHANGE_ITEMS_SENT: &str = "agentassist_hooks_change_items_sent_total";
/// Live streams closed because their reader fell behind (`changes.slow_reader_seconds`).
pub const CHANGE_READERS_CUT_OFF: &str = "agentassist_hooks_change_readers_cut_off_total";
/// Live streams refused with 503 at `changes.max_streams`.
pub const CHANGE_STREAMS_REFUSED: &str = "agentassist_hooks_change_streams_refused_total";
/// Conversations deleted by retention (SPEC 10).
pub const CONVERSATIONS_PURGED: &str = "agentassist_hooks_conversations_purged_total";
/// Conversations erased on request (SPEC 10).
pub const CONVERSATIONS_ERASED: &str = "agentassist_hooks_conversations_erased_total";
/// Change feed items the stats worker counted on this instance (SPEC 11).
pub const STATS_COUNTED: &str = "agentassist_hooks_stats_items_counted_total";
/// Committed events the stats do not count yet, over every bot, as of the worker's last look.
pub const STATS_LAG_EVENTS: &str = "agentassist_hooks_events_after";
/// How far the most lagging bot's stats are behind: seconds since its worker last had
/// counted everything committed.
pub const STATS_LAG_SECONDS: &str = "agentassist_hooks_stats_lag_seconds";
/// Webhook delivery attempts, by `endpoint` and `outcome` (`delivered`, `refused`,
/// `redirect`, `timeout`, `unreachable`).
pub const WEBHOOK_ATTEMPTS: &str = "agentassist_hooks_webhook_attempts_total";
/// Feed items not yet delivered to each `endpoint`, as of the last look.
pub const WEBHOOK_LAG_ITEMS: &str = "agentassist_hooks_webhook_lag_items";
/// How long the oldest item not yet delivered to each `endpoint` has waited.
pub const WEBHOOK_LAG_SECONDS: &str = "agentassist_hooks_webhook_lag_seconds";
/// 1 for each `endpoint`'s current `state` (`active`, `retrying`, `disabled`) on the
/// replica delivering it, 0 for the others.
pub const WEBHOOK_STATE: &str = "agentassist_hooks_webhook_state";
/// Fetches of the identity provider's keys, by `outcome` (`ok`, `error`).
pub const OIDC_KEY_FETCHES: &str = "agentassist_hooks_oidc_key_fetches_total";
/// Audit records written to the store.
pub const AUDIT_RECORDS: &str = "agentassist_hooks_audit_records_written_total";
/// Audit records lost (after shutdown closed the log, or refused by the database).
pub const AUDIT_LOST: &str = "agentassist_hooks_audit_records_lost_total";
/// Audit records waiting to be written.
pub const AUDIT_PENDING: &str = "agentassist_hooks_audit_records_pending";

/// How one database connection pool is used, sampled when `/metrics` is scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Which pool: `primary` (PostgreSQL), or SQLite's `writer` and `reader`.
    pub pool: &'static str,
    /// Open connections, idle or in use.
    pub size: u32,
    pub idle: u32,
    /// The most connections the pool will open.
    pub max: u32,
}

/// Latency buckets, in seconds: an append takes milliseconds; 30 s is the request timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histograms are drained when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder, installed on first use.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(HTTP_REQUEST_DURATION.to_owned()),
                &LATENCY_BUCKETS,
            )
            .expect("the latency buckets are not empty");
        match builder.install_recorder() {
            Ok(handle) => {
                describe();
                handle
            }
            Err(error) => {
                tracing::warn!(%error, "another metrics recorder is installed; /metrics stays empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by route template and status"
    );
    describe_counter!(
        REQUESTS_SHED,
        Unit::Count,
        "Requests shed with 503 because the concurrency limit was reached"
    );
    describe_counter!(
        REQUEST_TIMEOUTS,
        Unit::Count,
        "Requests answered 503 at the request timeout"
    );
    describe_counter!(
        EVENTS_STORED,
        Unit::Count,
        "Hook events stored, by name, transfer type and transition"
    );
    describe_counter!(
        ANOMALIES,
        Unit::Count,
        "Timeline anomalies flagged on stored events, by code"
    );
    describe_counter!(AUTH_FAILURES, Unit::Count, "Refused tokens, by reason");
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        Unit::Count,
        "Ingest requests answered by replaying an earlier one with the same Idempotency-Key"
    );
    describe_gauge!(HTTP_CONNECTIONS, Unit::Count, "Client connections open now");
    describe_gauge!(
        HTTP_MAX_CONNECTIONS,
        Unit::Count,
        "Most client connections the server holds open; more wait in the listen backlog"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "Open database connections, by pool and state (idle, in_use)"
    );
    describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        Unit::Count,
        "Most database connections each pool will open"
    );
    describe_gauge!(
        CHANGE_STREAMS_OPEN,
        Unit::Count,
        "Live change streams open now"
    );
    describe_counter!(
        CHANGE_ITEMS_SENT,
        Unit::Count,
        "Change feed items sent on live streams"
    );
    describe_counter!(
        CHANGE_READERS_CUT_OFF,
        Unit::Count,
        "Live change streams closed because their reader fell behind"
    );
    describe_counter!(
        CHANGE_STREAMS_REFUSED,
        Unit::Count,
        "Live change streams refused with 503 because changes.max_streams were open"
    );
    describe_counter!(
        CONVERSATIONS_PURGED,
        Unit::Count,
        "Conversations deleted by retention (retention.ended_days) on this instance"
    );
    describe_counter!(
        CONVERSATIONS_ERASED,
        Unit::Count,
        "Conversations erased on request (DELETE) through this instance"
    );
    describe_counter!(
        STATS_COUNTED,
        Unit::Count,
        "Change feed items the stats worker counted on this instance"
    );
    describe_gauge!(
        STATS_LAG_EVENTS,
        Unit::Count,
        "Committed events not counted in the stats yet, over every bot"
    );
    describe_gauge!(
        STATS_LAG_SECONDS,
        Unit::Seconds,
        "How long the oldest event not counted in the stats yet has waited, over every bot"
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        Unit::Count,
        "Webhook delivery attempts, by endpoint and outcome"
    );
    describe_gauge!(
        WEBHOOK_LAG_ITEMS,
        Unit::Count,
        "Feed items not yet delivered to each webhook endpoint"
    );
    describe_gauge!(
        WEBHOOK_LAG_SECONDS,
        Unit::Seconds,
        "How long the oldest item not yet delivered to each webhook endpoint has waited"
    );
    describe_gauge!(
        WEBHOOK_STATE,
        "1 for each webhook endpoint's state (active, retrying, disabled) where it is delivered"
    );
    describe_counter!(
        OIDC_KEY_FETCHES,
        Unit::Count,
        "Fetches of the identity provider's keys, by outcome"
    );
    describe_counter!(AUDIT_RECORDS, Unit::Count, "Audit records written");
    describe_gauge!(
        AUDIT_PENDING,
        Unit::Count,
        "Audit records waiting to be written"
    );
    describe_counter!(
        AUDIT_LOST,
        Unit::Count,
        "Audit records lost: after shutdown closed the log, or refused by the database"
    );
    counter!(AUDIT_RECORDS).absolute(0);
    counter!(AUDIT_LOST).absolute(0);
    // Series that exist before their first event, so that rate() sees them start at zero.
    counter!(STATS_COUNTED).absolute(0);
    gauge!(CHANGE_STREAMS_OPEN).set(0);
    counter!(CHANGE_ITEMS_SENT).absolute(0);
    counter!(CHANGE_READERS_CUT_OFF).absolute(0);
    counter!(CHANGE_STREAMS_REFUSED).absolute(0);
    counter!(CONVERSATIONS_PURGED).absolute(0);
    counter!(CONVERSATIONS_ERASED).absolute(0);
    counter!(REQUESTS_SHED).absolute(0);
    counter!(REQUEST_TIMEOUTS).absolute(0);
    counter!(IDEMPOTENT_REPLAYS).absolute(0);
    for anomaly in Anomaly::ALL {
        counter!(ANOMALIES, "code" => anomaly.as_str()).absolute(0);
    }
}

/// Drains histogram buckets now and then (the recorder has no task of its own).
pub fn spawn_upkeep() -> tokio::task::JoinHandle<()> {
    let handle = install();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    })
}

/// The Prometheus text exposition, with the pools' use sampled now.
pub fn render(pools: &[PoolUse]) -> String {
    for pool in pools {
        let in_use = pool.size.saturating_sub(pool.idle);
        gauge!(DB_POOL_CONNECTIONS, "pool" => pool.pool, "state" => "idle").set(pool.idle);
        gauge!(DB_POOL_CONNECTIONS, "pool" => pool.pool, "state" => "in_use").set(in_use);
        gauge!(DB_POOL_MAX_CONNECTIONS, "pool" => pool.pool).set(pool.max);
    }
    install().render()
}

/// Middleware: counts and times every request by its route template and status. It runs
/// after routing (so it sees the template) and outside the load-shed layer (so it sees 503s).
pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_REQUEST_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Standard methods by name; anything else is `other`, so a client cannot mint series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// A request refused by the overload layer: shed at the concurrency limit, or timed out.
pub fn overloaded(error: &tower::BoxError) {
    if error.is::<tower::load_shed::error::Overloaded>() {
        counter!(REQUESTS_SHED).increment(1);
    } else if error.is::<tower::timeout::error::Elapsed>() {
        counter!(REQUEST_TIMEOUTS).increment(1);
    }
}

/// The events of a stored batch and the anomalies they raised.
pub fn stored(batch: &IngestBatch, anomalies: &[Anomaly]) {
    for event in &batch.events {
        counter!(
            EVENTS_STORED,
            "name" => event.name().as_str(),
            "transfer_type" => event.transfer_type().map_or("none", |kind| kind.as_str()),
            "transition" => event.transition().map_or("none", |transition| transition.as_str()),
        )
        .increment(1);
    }
    for anomaly in anomalies {
        counter!(ANOMALIES, "code" => anomaly.as_str()).increment(1);
    }
}

/// A refused token, by [`crate::auth::AuthFailure::reason`].
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// A fetch of the identity provider's keys: `ok` or `error`.
pub fn oidc_key_fetch(outcome: &'static str) {
    counter!(OIDC_KEY_FETCHES, "outcome" => outcome).increment(1);
}

/// Audit records lost: after the log closed at shutdown, or refused by the database.
pub fn audit_lost(records: usize) {
    counter!(AUDIT_LOST).increment(records as u64);
}

/// Audit records written, and how many wait after them.
pub fn audit_written(written: usize, pending: usize) {
    counter!(AUDIT_RECORDS).increment(written as u64);
    gauge!(AUDIT_PENDING).set(pending as f64);
}

/// An ingest request answered from its `Idempotency-Key`.
pub fn idempotent_replay() {
    counter!(IDEMPOTENT_REPLAYS).increment(1);
}

/// The most client connections the server will hold open.
pub fn connection_limit(max: usize) {
    gauge!(HTTP_MAX_CONNECTIONS).set(max as f64);
}

/// A client connection was accepted.
pub fn connection_opened() {
    gauge!(HTTP_CONNECTIONS).increment(1);
}

/// A client connection closed.
pub fn connection_closed() {
    gauge!(HTTP_CONNECTIONS).decrement(1);
}

/// A live change stream opened.
pub fn change_stream_opened() {
    gauge!(CHANGE_STREAMS_OPEN).increment(1);
}

/// A live change stream closed.
pub fn change_stream_closed() {
    gauge!(CHANGE_STREAMS_OPEN).decrement(1);
}

/// An item sent on a live change stream.
pub fn change_sent() {
    counter!(CHANGE_ITEMS_SENT).increment(1);
}

/// A live change stream closed because its reader fell behind.
pub fn change_reader_cut_off() {
    counter!(CHANGE_READERS_CUT_OFF).increment(1);
}

/// A live change stream refused at `changes.max_streams`.
pub fn change_stream_refused() {
    counter!(CHANGE_STREAMS_REFUSED).increment(1);
}

/// Conversations deleted by retention.
pub fn conversations_purged(count: usize) {
    counter!(CONVERSATIONS_PURGED).increment(count as u64);
}

/// A conversation erased on request.
pub fn conversation_erased() {
    counter!(CONVERSATIONS_ERASED).increment(1);
}

/// Feed items counted into the stats.
pub fn stats_counted(items: usize) {
    counter!(STATS_COUNTED).increment(items as u64);
}

/// The stats worker's lag after a pass over every bot.
pub fn stats_lag(events: u64, seconds: f64) {
    gauge!(STATS_LAG_EVENTS).set(events as f64);
    gauge!(STATS_LAG_SECONDS).set(seconds);
}

/// The stats worker's lag after a page.
pub fn stats_lag_seconds(seconds: f64) {
    gauge!(STATS_LAG_SECONDS).set(seconds);
}

/// A webhook attempt and how it went.
pub fn webhook_attempt(endpoint: &str, outcome: &'static str) {
    counter!(WEBHOOK_ATTEMPTS, "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The state a webhook endpoint is in now.
pub fn webhook_state(endpoint: &str, state: &str) {
    for each in ["active", "retrying", "disabled"] {
        let value = if each == state { 1.0 } else { 0.0 };
        gauge!(WEBHOOK_STATE, "endpoint" => endpoint.to_owned(), "state" => each).set(value);
    }
}

/// How far behind a webhook endpoint is.
pub fn webhook_lag(endpoint: &str, items: u64, seconds: f64) {
    gauge!(WEBHOOK_LAG_ITEMS, "endpoint" => endpoint.to_owned()).set(items as f64);
    gauge!(WEBHOOK_LAG_SECONDS, "endpoint" => endpoint.to_owned()).set(seconds);
}
