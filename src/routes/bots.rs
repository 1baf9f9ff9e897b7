//! The bots a caller may read (SPEC 9): where the ops console starts.

use super::extract::authorize_read_any;
use super::{AppState, paths};
use crate::auth::Caller;
use crate::config::Permission;
use crate::domain::timestamp;
use crate::error::{ApiError, ReadRefusals};
use crate::store::BotRecord;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The most bots listed: the console offers them in one menu.
pub const MAX_BOTS: i64 = 1000;

/// A bot with conversations.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotView {
    bot_id: String,
    /// When its latest event arrived.
    #[serde(serialize_with = "timestamp::serialize")]
    last_event_at: OffsetDateTime,
}

/// The bots the token's app may read.
#[derive(Serialize, ToSchema)]
pub struct BotList {
    /// By `botId`; at most 1000.
    items: Vec<BotView>,
}

#[utoipa::path(
    get,
    path = paths::BOTS,
    tag = "query",
    operation_id = "listBots",
    summary = "The bots the app may read that have conversations",
    description = "By `botId`, at most 1000: the bots the token's app may read (its `bots`, or \
every bot for `*`) that have at least one conversation.",
    responses(
        ReadRefusals,
        (status = 200, description = "The bots.", body = BotList),
    ),
    security(("token" = []))
)]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<BotList>, ApiError> {
    authorize_read_any(&caller)?;
    // Bots are few; those the app may not read are left out after the scan.
    let bots = state.store.bots(MAX_BOTS * 10).await?;
    let items = bots
        .into_iter()
        .filter(|bot| caller.may(&bot.bot_id, Permission::Read))
        .take(MAX_BOTS as usize)
        .map(
            |BotRecord {
                 bot_id,
                 last_event_at,
             }| BotView {
                bot_id,
                last_event_at,
            },
        )
        .collect();
    Ok(Json(BotList { items }))
}
