//! HTTP routes, one file per resource, and the router that mounts them.

pub mod conversations;
pub mod extract;
pub mod health;
pub mod hooks;

use crate::auth::AppRegistry;
use crate::config::{IdempotencySettings, ServerSettings};
use crate::error::ApiError;
use crate::store::Store;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRef, MatchedPath, Request};
use axum::http::{HeaderName, header};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub apps: Arc<AppRegistry>,
    pub body_limit_bytes: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub key_retention: Duration,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        apps: Arc<AppRegistry>,
        server: &ServerSettings,
        idempotency: &IdempotencySettings,
    ) -> Self {
        Self {
            store,
            apps,
            body_limit_bytes: server.body_limit_bytes,
            key_retention: Duration::from_secs(idempotency.retention_seconds),
        }
    }
}

impl FromRef<AppState> for Arc<AppRegistry> {
    fn from_ref(state: &AppState) -> Self {
        state.apps.clone()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole service: routes, error fallbacks and the production middleware.
pub fn router(state: AppState, server: &ServerSettings) -> Router {
    let overload = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
            tracing::warn!(error = %error, "request shed or timed out");
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

    Router::new()
        .route("/agentassist/api/v1/hooks/{bot_id}", post(hooks::ingest))
        .route("/agentai/api/v1/hooks/{bot_id}", post(hooks::ingest))
        .route("/api/v1/hooks/{bot_id}", post(hooks::ingest))
        .route(
            "/api/v1/bots/{bot_id}/conversations",
            get(conversations::list),
        )
        .route(
            "/api/v1/bots/{bot_id}/conversations/{conversation_id}",
            get(conversations::conversation),
        )
        .route(
            "/api/v1/bots/{bot_id}/conversations/{conversation_id}/events",
            get(conversations::events),
        )
        .route(
            "/api/v1/bots/{bot_id}/conversations/{conversation_id}/transfer-data",
            get(conversations::transfer_data),
        )
        .route(
            "/api/v1/bots/{bot_id}/participants/{identity}/stints",
            get(conversations::participant_stints),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(overload)
        // Probes bypass load shedding: a busy instance is alive and still serving.
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(|_| {
                    axum::response::IntoResponse::into_response(ApiError::Internal(
                        anyhow::anyhow!("handler panicked"),
                    ))
                }))
                .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// The request's span: method, route template (never the raw URI) and request id.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), route, request_id)
}
