//! How the webhooks are doing (SPEC 12), for people with the `admin` permission.

use super::params::encode_cursor;
use super::{AppState, paths};
use crate::auth::Caller;
use crate::config::Permission;
use crate::domain::timestamp;
use crate::error::{AdminRefusals, ApiError};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// A webhook endpoint and how its delivery goes; never a secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    name: String,
    url: String,
    /// Bot ids, or `["*"]`.
    bots: Vec<String>,
    /// `active`, `retrying` (an item failed and waits for its next attempt) or `disabled`
    /// (a `410`, or failures past the retry schedule: `webhooks enable NAME` resumes it).
    #[schema(example = "active")]
    state: String,
    /// The furthest feed position delivered (opaque, as the feed's; pass it to
    /// `webhooks replay NAME --from`); `null` before the first delivery.
    position: Option<String>,
    /// Feed events of its bots not yet delivered.
    lag_items: i64,
    /// How long the oldest of those has waited (0 when none waits).
    lag_seconds: f64,
    #[serde(serialize_with = "timestamp::option::serialize")]
    last_attempt_at: Option<OffsetDateTime>,
    /// Why the last failed attempt failed.
    last_error: Option<String>,
}

/// The configured webhook endpoints.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    /// In the config's order.
    items: Vec<WebhookView>,
}

#[utoipa::path(
    get,
    path = paths::WEBHOOKS,
    tag = "webhooks",
    operation_id = "listWebhooks",
    summary = "The webhook endpoints and how their delivery goes",
    description = "Every endpoint in the config whose bots the app may read (`[\"*\"]` endpoints only \
for an app with `*`): its state, position, lag and last error. Needs the `admin` permission.",
    responses(
        AdminRefusals,
        (status = 200, description = "The endpoints.", body = WebhookList),
    ),
    security(("token" = []))
)]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<WebhookList>, ApiError> {
    if !caller.has(Permission::Admin) {
        return Err(ApiError::Forbidden);
    }
    let now = OffsetDateTime::now_utc();
    let mut items = Vec::new();
    for webhook in state.webhooks.iter() {
        if !webhook
            .bots
            .iter()
            .all(|bot| caller.may(bot, Permission::Admin))
        {
            continue;
        }
        let every_bot = webhook.bots.iter().any(|bot| bot == "*");
        let status = state
            .store
            .webhook_status(
                &webhook.name,
                (!every_bot).then_some(webhook.bots.as_slice()),
            )
            .await?;
        let record = status.record.as_ref();
        items.push(WebhookView {
            name: webhook.name.clone(),
            url: webhook.url.clone(),
            bots: webhook.bots.clone(),
            state: record
                .map_or("active", |record| record.state.as_str())
                .to_owned(),
            position: status.position.as_ref().map(encode_cursor),
            lag_items: status.lag_items,
            lag_seconds: status
                .oldest_waiting
                .map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0)),
            last_attempt_at: status.last_attempt_at,
            last_error: record.and_then(|record| record.last_error.clone()),
        });
    }
    Ok(Json(WebhookList { items }))
}
