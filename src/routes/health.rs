//! Operator endpoints: liveness, readiness, metrics and the API description.

use super::{AppState, paths};
use crate::error::{ApiError, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// A probe's answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = paths::HEALTHZ,
    tag = "operations",
    operation_id = "healthz",
    summary = "Liveness",
    description = "200 while the process runs; not subject to load shedding.",
    responses((status = 200, description = "Alive.", body = Health)),
    security(())
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 only when the database answers and its migrations are applied.
#[utoipa::path(
    get,
    path = paths::READYZ,
    tag = "operations",
    operation_id = "readyz",
    summary = "Readiness",
    description = "200 only when the database answers (within 2 s) and every migration is applied; not subject to load shedding.",
    responses(
        (status = 200, description = "Ready to serve.", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "The database does not answer or lacks migrations.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security(())
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ready()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "not ready");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer in time");
            Err(ApiError::Unavailable)
        }
    }
}

/// The Prometheus text exposition, with the database pools sampled now.
#[utoipa::path(
    get,
    path = paths::METRICS,
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "The Prometheus text exposition format (0.0.4): requests and latency by route \
template and status, events stored, anomalies, authentication failures by reason, idempotent \
replays, shed requests and database pool use. Unauthenticated and not subject to load \
shedding: keep it on an internal network (firewall it, or turn it off with \
`server.metrics = false`, which makes it 404).",
    responses((status = 200, description = "The metrics.", body = String, content_type = "text/plain")),
    security(())
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&pool_use(&state.store)),
    )
}

/// The store's connection pools, as the metrics show them.
fn pool_use(store: &crate::store::Store) -> Vec<crate::metrics::PoolUse> {
    store
        .pool_stats()
        .into_iter()
        .map(|stats| crate::metrics::PoolUse {
            pool: stats.pool,
            size: stats.size,
            idle: stats.idle,
            max: stats.max,
        })
        .collect()
}
