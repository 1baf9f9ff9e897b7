//! The audit log (SPEC 13): who read which conversation, for people with `audit`.

use super::params::{QueryParams, decode_cursor, encode_cursor, problem, reject};
use super::{AppState, paths};
use crate::auth::Caller;
use crate::config::Permission;
use crate::domain::timestamp;
use crate::error::{ApiError, AuditRefusals, Problem};
use crate::store::{AuditEntry, AuditFilter};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// Records a page holds: `(default, most)`.
const PAGE_LIMIT: (i64, i64) = (100, 1000);

/// One read of conversation data.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditItem {
    #[serde(serialize_with = "timestamp::serialize")]
    at: OffsetDateTime,
    /// `user:<sub>` for a person, `app:<appId>` for an app.
    #[schema(example = "user:8c1d6a3e")]
    actor: String,
    /// A person's name (`name`, else `preferred_username`); `null` for an app.
    actor_name: Option<String>,
    actor_email: Option<String>,
    #[schema(example = "GET")]
    method: String,
    /// The route template, e.g. `/api/v1/bots/{botId}/conversations/{conversationId}`.
    route: String,
    /// The status the read was answered with.
    status: u16,
    bot_id: Option<String>,
    conversation_id: Option<String>,
    /// The agent read about (a stints read's `identity`, or a `participant` filter).
    participant: Option<String>,
    /// The address the request came from, as the service saw it.
    client_address: Option<String>,
}

impl From<AuditEntry> for AuditItem {
    fn from(AuditEntry { record, .. }: AuditEntry) -> Self {
        Self {
            at: record.at,
            actor: record.actor,
            actor_name: record.actor_name,
            actor_email: record.actor_email,
            method: record.method,
            route: record.route,
            status: record.status,
            bot_id: record.bot_id,
            conversation_id: record.conversation_id,
            participant: record.participant,
            client_address: record.client_address,
        }
    }
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    items: Vec<AuditItem>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of the audit log (parsed by [`QueryParams`]; this describes them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct AuditQuery {
    /// Records at or after this time (RFC 3339).
    pub from: Option<OffsetDateTime>,
    /// Records before this time; must be after `from`.
    pub to: Option<OffsetDateTime>,
    /// Only this actor's records (`user:<sub>` or `app:<appId>`, matched exactly).
    pub actor: Option<String>,
    #[param(rename = "botId")]
    pub bot_id: Option<String>,
    #[param(rename = "conversationId")]
    pub conversation_id: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page (opaque).
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// Where a page continues: after the record with this time (microseconds) and id.
#[derive(Serialize, Deserialize)]
struct AuditKey {
    at: i64,
    id: i64,
}

#[utoipa::path(
    get,
    path = paths::AUDIT,
    tag = "audit",
    operation_id = "listAuditRecords",
    summary = "Who read which conversation, newest first",
    description = "The reads of conversation data (a conversation, its events, its transfer data, an \
agent's stints, the change feed and stream, the stats), each with who made it, the route, bot, \
conversation or participant, the status answered and the client's address. Written within a \
second of the read. Needs the `audit` permission; a caller whose `audit` is limited to some bots \
sees only those bots' records.",
    params(AuditQuery),
    responses(
        AuditRefusals,
        (status = 200, description = "A page of records.", body = AuditPage),
        (status = 400, description = "A query parameter is invalid (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    params: QueryParams,
) -> Result<Json<AuditPage>, ApiError> {
    if !caller.has(Permission::Audit) {
        return Err(ApiError::Forbidden);
    }
    let mut problems = Vec::new();
    let limit = params.limit(PAGE_LIMIT, &mut problems);
    let window = params.window(&mut problems);
    let before = params.get("cursor").and_then(|cursor| {
        let key =
            decode_cursor::<AuditKey>(cursor).and_then(|key| Some((timestamp_of(key.at)?, key.id)));
        if key.is_none() {
            problems.push(problem("cursor", "is not a cursor this API returned"));
        }
        key
    });
    let filter = AuditFilter {
        from: window.from,
        to: window.to,
        actor: params.non_empty("actor", &mut problems),
        bot_id: params.non_empty("botId", &mut problems),
        conversation_id: params.non_empty("conversationId", &mut problems),
        bots: caller
            .bots_with(Permission::Audit)
            .map(|bots| bots.into_iter().map(str::to_owned).collect()),
        before,
    };
    reject(problems)?;

    let mut entries = state.store.audit_page(&filter, limit + 1).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor = more.then(|| entries.last()).flatten().map(|last| {
        encode_cursor(&AuditKey {
            at: micros(last.record.at),
            id: last.id,
        })
    });
    Ok(Json(AuditPage {
        items: entries.into_iter().map(AuditItem::from).collect(),
        next_cursor,
    }))
}

fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn timestamp_of(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}
