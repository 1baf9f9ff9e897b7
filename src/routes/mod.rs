//! HTTP routes, one file per resource, and the router that mounts them.

pub mod audit;
pub mod bots;
pub mod changes;
pub mod console;
pub mod conversations;
pub mod extract;
pub mod health;
pub mod hooks;
pub mod openapi;
pub mod params;
pub mod paths;
pub mod sources;
pub mod stats;
pub mod webhooks;

use crate::auth::AppRegistry;
use crate::changes::ChangeHub;
use crate::config::{ChangesSettings, IdempotencySettings, ServerSettings};
use crate::error::ApiError;
use crate::store::Store;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRef, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub apps: Arc<AppRegistry>,
    pub body_limit_bytes: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub key_retention: Duration,
    /// Wake-ups of the live change streams.
    pub changes: Arc<ChangeHub>,
    /// How long a stats answer waits for the worker to count what came before it.
    pub stats_max_lag_seconds: u64,
    /// The webhook endpoints in the config (SPEC 12).
    pub webhooks: Arc<Vec<crate::config::WebhookConfig>>,
    /// The identity provider people sign in with, when there is one (SPEC 13).
    pub people: Option<Arc<crate::oidc::People>>,
    /// Where the audited reads are recorded (off until [`AppState::with_audit`]).
    pub audit: crate::audit::Recorder,
}

impl AppState {
    pub fn new(
        store: Store,
        apps: Arc<AppRegistry>,
        server: &ServerSettings,
        idempotency: &IdempotencySettings,
        changes: &ChangesSettings,
    ) -> Self {
        Self {
            store,
            apps,
            body_limit_bytes: server.body_limit_bytes,
            key_retention: Duration::from_secs(idempotency.retention_seconds),
            changes: Arc::new(ChangeHub::new(changes)),
            stats_max_lag_seconds: crate::config::StatsSettings::default().max_lag_seconds,
            webhooks: Arc::default(),
            people: None,
            audit: crate::audit::Recorder::default(),
        }
    }

    /// Accepting people's tokens from `people`'s provider too.
    pub fn with_people(mut self, people: Option<Arc<crate::oidc::People>>) -> Self {
        self.people = people;
        self
    }

    /// Recording the audited reads with `recorder`.
    pub fn with_audit(mut self, recorder: crate::audit::Recorder) -> Self {
        self.audit = recorder;
        self
    }

    /// With the stats settings of `stats`.
    pub fn with_stats(mut self, stats: &crate::config::StatsSettings) -> Self {
        self.stats_max_lag_seconds = stats.max_lag_seconds;
        self
    }

    /// With the webhook endpoints of the config.
    pub fn with_webhooks(mut self, webhooks: &[crate::config::WebhookConfig]) -> Self {
        self.webhooks = Arc::new(webhooks.to_vec());
        self
    }
}

impl FromRef<AppState> for Arc<AppRegistry> {
    fn from_ref(state: &AppState) -> Self {
        state.apps.clone()
    }
}

impl FromRef<AppState> for crate::audit::Recorder {
    fn from_ref(state: &AppState) -> Self {
        state.audit.clone()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every documented route, as the OpenAPI document lists them (with `/metrics`, which a
/// config may leave unmounted).
pub fn documented() -> OpenApiRouter<AppState> {
    audited_routes()
        .merge(other_routes())
        .merge(probe_routes(true))
}

/// The reads of conversation data SPEC 13 has recorded in the audit log.
fn audited_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(conversations::conversation, conversations::erase))
        .routes(routes!(conversations::events))
        .routes(routes!(conversations::participant_stints))
        .routes(routes!(
            conversations::transfer_data,
            sources::transfer_data
        ))
        .routes(routes!(changes::changes))
        .routes(routes!(changes::stream))
        .routes(routes!(stats::stats))
        .routes(routes!(stats::now))
}

/// The rest of the API, each route mounted with its description.
fn other_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(hooks::ingest))
        .routes(routes!(bots::list))
        .routes(routes!(conversations::list))
        .routes(routes!(sources::interaction))
        .routes(routes!(sources::bot_messages))
        .routes(routes!(webhooks::list))
        .routes(routes!(audit::list))
        .routes(routes!(openapi::serve))
}

/// The probes, and the metrics when `metrics` is on.
fn probe_routes(metrics: bool) -> OpenApiRouter<AppState> {
    let probes = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz));
    if metrics {
        probes.routes(routes!(health::metrics))
    } else {
        probes
    }
}

/// The whole service: routes, error fallbacks and the production middleware.
pub fn router(state: AppState, server: &ServerSettings) -> Router {
    crate::metrics::install();
    let overload = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
            // Not logged one by one: under overload that would add to it. The response
            // line says 503, and the metrics count sheds and timeouts.
            crate::metrics::overloaded(&error);
            ApiError::Unavailable
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(server.concurrency_limit))
        .timeout(Duration::from_secs(server.request_timeout_seconds));

    let sensitive: Arc<[HeaderName]> = Arc::new([
        HeaderName::from_static("token"),
        HeaderName::from_static("auth"),
        header::AUTHORIZATION,
        header::COOKIE,
    ]);

    let (audited, _) = audited_routes().split_for_parts();
    let audited = audited.route_layer(middleware::from_fn_with_state(
        state.audit.clone(),
        crate::audit::record,
    ));
    let (others, _) = other_routes().split_for_parts();
    let shed = audited.merge(others);
    let (probes, _) = probe_routes(server.metrics).split_for_parts();
    let mut app = shed
        .route(paths::HOOKS_ALIASES[0], post(hooks::ingest))
        .route(paths::HOOKS_ALIASES[1], post(hooks::ingest))
        .route(paths::CONSOLE, get(console::root))
        .route(paths::CONSOLE_INDEX, get(console::index))
        .route(paths::CONSOLE_SIGN_IN, get(console::sign_in))
        .route(paths::CONSOLE_FILES, get(console::file))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(overload)
        // Probes and metrics bypass load shedding: a busy instance is alive, and its
        // metrics matter most then.
        .merge(probes);
    // Again for the routes added after the overload layer (it only reaches those before).
    app = app.method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    // Outside the rest, so that a browser's preflight is answered before any token check.
    if let Some(cors) = cors(&server.cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state).layer(
        ServiceBuilder::new()
            // Outermost, so that it counts the 503s of the overload layer and the 500 of
            // a caught panic.
            .layer(middleware::from_fn(crate::metrics::track_requests))
            .layer(CatchPanicLayer::custom(|_| {
                axum::response::IntoResponse::into_response(ApiError::Internal(anyhow::anyhow!(
                    "handler panicked"
                )))
            }))
            .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                // One line per response; a failure's cause is logged once, where it is
                // known (a 500 by `ApiError`, an unavailable database by the store
                // error), so the layer's own failure line would only repeat it.
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(response_line)
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(middleware::from_fn(refuse_large_heads)),
    )
}

/// CORS for the configured origins (the agent desktop runs the adapter in a browser);
/// `None` when there are none. An origin that is not a valid header value is skipped with
/// a warning (`check-config` reports it).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| {
            let value = HeaderValue::from_str(origin.trim_end_matches('/')).ok();
            if value.is_none() {
                tracing::warn!(origin, "server.cors_origins: not a valid origin, skipped");
            }
            value
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("token"),
                HeaderName::from_static("auth"),
                HeaderName::from_static("idempotency-key"),
                REQUEST_ID,
            ])
            .expose_headers([REQUEST_ID, HeaderName::from_static("idempotent-replayed")])
            .max_age(Duration::from_secs(600)),
    )
}

/// Header fields a request may carry; more get a problem+json 431.
pub const MAX_HEADERS: usize = 100;
/// Bytes of header names and values a request may carry; more get a problem+json 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses a request with more headers than [`MAX_HEADERS`] or [`MAX_HEADER_BYTES`], before
/// anything else looks at them.
async fn refuse_large_heads(request: Request, next: middleware::Next) -> axum::response::Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let too_large = ApiError::HeadersTooLarge {
            max_headers: MAX_HEADERS,
            max_bytes: MAX_HEADER_BYTES,
        };
        return axum::response::IntoResponse::into_response(too_large);
    }
    next.run(request).await
}

/// The request's span, which is also its trace's server span (SPEC 14): named
/// `{method} {route template}` (never the raw URI), with OpenTelemetry's HTTP attributes and
/// the request id, continuing the caller's W3C `traceparent`.
fn request_span(request: &Request) -> tracing::Span {
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.unwrap_or("unmatched"),
        http.response.status_code = tracing::field::Empty,
        url.scheme = "http",
        network.protocol.version = ?request.version(),
        request_id,
        trace_id = tracing::field::Empty,
        actor = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, request.headers());
    span
}

/// The response line of a request, and its status on the request's span.
fn response_line(response: &axum::response::Response, latency: Duration, span: &tracing::Span) {
    let status = response.status().as_u16();
    // As a signed integer: OpenTelemetry has no unsigned one, so a u64 would become text.
    span.record("http.response.status_code", i64::from(status));
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(status, latency_ms, "finished processing request");
}
