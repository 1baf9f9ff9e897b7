//! The query API for operations staff (SPEC 4): conversations, their events, an agent's
//! stints across conversations, and the latest transfer data.

use super::extract::authorize_read;
use super::params::{BOT_ID, PathParams, QueryParams, encode_cursor, problem, reject};
use super::{AppState, paths};
use crate::auth::Caller;
use crate::config::Permission;
use crate::domain::timestamp;
use crate::domain::{
    Anomaly, EventName, Experience, Hop, HopKind, HopOutcome, Participant, ParticipantTimeline,
    Status, Stint, TransferType, Transfers, Transition,
};
use crate::error::{ApiError, Problem, ReadRefusals};
use crate::store::{
    ConversationFilter, ConversationKey, ConversationRecord, EventRecord, StintKey,
    TransferDataRecord,
};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// `limit` of the events query and of the lists: (default, max).
pub(crate) const EVENTS_LIMIT: (i64, i64) = (100, 1000);
pub(crate) const LIST_LIMIT: (i64, i64) = (50, 500);
/// `participantsLimit` of a conversation (SPEC 4.1): (default, max). A conversation with
/// more participants is read a part at a time.
pub(crate) const PARTICIPANTS_LIMIT: (i64, i64) = (1000, 1000);

/// A conversation without its participants: a SPEC 4.3 list item.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    bot_id: String,
    conversation_id: String,
    status: Status,
    experience: Option<Experience>,
    language: Option<String>,
    #[serde(serialize_with = "timestamp::serialize")]
    started_at: OffsetDateTime,
    #[serde(serialize_with = "timestamp::option::serialize")]
    ended_at: Option<OffsetDateTime>,
    #[serde(serialize_with = "timestamp::serialize")]
    last_event_at: OffsetDateTime,
    event_count: i64,
    anomaly_count: i64,
    transfers: Transfers,
    /// Identities with an open stint, in order of first entry.
    participants_present: Vec<String>,
    /// Every hand-over, in `seq` order.
    hops: Vec<HopView>,
    /// Every delivered Bright Pattern `InteractionData`, merged (the latest delivery wins
    /// per member), with `deliveredTo`: the agents it was delivered to, in order, each
    /// with the time; `null` when none was delivered.
    #[schema(value_type = Option<Object>)]
    interaction: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One hand-over (SPEC 7.3).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HopView {
    /// The event that made it.
    seq: i64,
    #[serde(serialize_with = "timestamp::serialize")]
    at: OffsetDateTime,
    kind: HopKind,
    /// Who handed over; `null` when unknown.
    from: Option<String>,
    /// Who took over; `null` until an escalation's agent enters.
    to: Option<String>,
    outcome: HopOutcome,
    /// Why an escalation failed: `NoAgentAvailable` or `Error`.
    reason: Option<String>,
    /// An escalation's targets, as the bot sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>, nullable = false)]
    targets: Option<Vec<serde_json::Value>>,
}

impl From<Hop> for HopView {
    fn from(hop: Hop) -> Self {
        Self {
            seq: hop.seq,
            at: hop.at,
            kind: hop.kind,
            from: hop.from,
            to: hop.to,
            outcome: hop.outcome,
            reason: hop.reason,
            targets: hop.targets,
        }
    }
}

impl From<ConversationRecord> for ConversationSummary {
    fn from(record: ConversationRecord) -> Self {
        let summary = record.summary;
        let epoch = OffsetDateTime::UNIX_EPOCH;
        Self {
            bot_id: record.bot_id,
            conversation_id: record.conversation_id,
            status: summary.status,
            experience: summary.experience,
            language: summary.language,
            started_at: summary.started_at.unwrap_or(epoch),
            ended_at: summary.ended_at,
            last_event_at: summary.last_event_at.unwrap_or(epoch),
            event_count: summary.event_count,
            anomaly_count: summary.anomaly_count,
            transfers: summary.transfers,
            participants_present: record.present,
            hops: record.hops.into_iter().map(HopView::from).collect(),
            interaction: record.interaction,
        }
    }
}

/// SPEC 4.1: the conversation with its participants' stints.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDetail {
    #[serde(flatten)]
    summary: ConversationSummary,
    /// In order of first entry: up to `participantsLimit` of them (all, for any
    /// conversation of at most 1000 participants), each with every stint. When more
    /// follow, a `Link` header with `rel="next"` gives the URL of the next part.
    participants: Vec<ParticipantView>,
}

/// A participant of a conversation and their stints, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantView {
    identity: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    stints: Vec<StintView>,
    /// The sum of the stints' `durationSeconds`.
    #[schema(minimum = 0)]
    total_seconds: f64,
}

/// One continuous presence; an open stint has `leftAt: null` and lasts until now.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StintView {
    /// Present in an agent's history across conversations (SPEC 4.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    conversation_id: Option<String>,
    #[serde(serialize_with = "timestamp::serialize")]
    joined_at: OffsetDateTime,
    #[serde(serialize_with = "timestamp::option::serialize")]
    left_at: Option<OffsetDateTime>,
    entry_type: crate::domain::TransferType,
    exit_type: Option<crate::domain::ExitType>,
    /// Rounded to milliseconds.
    #[schema(minimum = 0)]
    duration_seconds: f64,
}

impl StintView {
    fn of(stint: &Stint, conversation_id: Option<String>, now: OffsetDateTime) -> Self {
        Self {
            conversation_id,
            joined_at: stint.joined_at,
            left_at: stint.left_at,
            entry_type: stint.entry_type,
            exit_type: stint.exit_type,
            duration_seconds: round_millis(stint.duration_seconds(now)),
        }
    }
}

impl ParticipantView {
    fn of(participant: &ParticipantTimeline, now: OffsetDateTime) -> Self {
        let stints: Vec<StintView> = participant
            .stints
            .iter()
            .map(|stint| StintView::of(stint, None, now))
            .collect();
        // The sum of the durations shown, so that a client adding them up gets the total.
        let total = stints.iter().map(|stint| stint.duration_seconds).sum();
        Self {
            identity: participant.identity.clone(),
            name: participant.name.clone(),
            kind: participant.kind.clone(),
            stints,
            total_seconds: round_millis(total),
        }
    }
}

/// Durations to the millisecond, so that `12.345` reads as written.
fn round_millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[utoipa::path(
    delete,
    path = paths::CONVERSATION,
    tag = "query",
    operation_id = "eraseConversation",
    summary = "Erase a conversation and everything it holds",
    description = "Needs the `erase` permission. Deletes the conversation's events, stints, \
hops, transfer data, interaction and idempotency records in one transaction; every read then \
answers 404, as for a conversation that never existed, and the change feed gets a \
`conversation.erased` item. An event arriving later for the same conversation id starts a new \
conversation, from `seq` 1.",
    params(
        ("botId" = String, Path, description = BOT_ID),
        ("conversationId" = String, Path, description = "The conversation."),
    ),
    responses(
        (status = 204, description = "Erased."),
        (status = 401, description = "Missing or invalid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The app lacks the `erase` permission.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such conversation, or a bot the app may not erase in.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable, or the service is overloaded.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security(("token" = []))
)]
pub async fn erase(
    caller: Caller,
    State(state): State<AppState>,
    PathParams((bot_id, conversation_id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !caller.has(Permission::Erase) {
        return Err(ApiError::Forbidden);
    }
    if !caller.may(&bot_id, Permission::Erase)
        || !state.store.erase(&bot_id, &conversation_id).await?
    {
        return Err(ApiError::NotFound);
    }
    crate::metrics::conversation_erased();
    state.changes.committed(&bot_id);
    // Without the conversation's id: the log is not a place it may stay.
    tracing::info!(
        actor = caller.actor().label(),
        bot_id,
        "erased a conversation"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Query parameters of a conversation (parsed by [`QueryParams`]; this describes them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct ConversationQuery {
    /// Only participants after this position in the order of first entry (from 0): the
    /// value the `Link` header of the previous part carries.
    #[param(rename = "participantsAfter", minimum = 0)]
    pub participants_after: Option<i64>,
    /// How many participants, at most.
    #[param(
        rename = "participantsLimit",
        minimum = 1,
        maximum = 1000,
        default = 1000
    )]
    pub participants_limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = paths::CONVERSATION,
    tag = "query",
    operation_id = "getConversation",
    summary = "A conversation with every participant's stints",
    params(
        ("botId" = String, Path, description = BOT_ID),
        ("conversationId" = String, Path, description = "The conversation."),
        ConversationQuery,
    ),
    responses(
        ReadRefusals,
        (status = 200, description = "The conversation.", body = ConversationDetail,
            headers(("Link" = String, description = "When more participants follow: `<url>; rel=\"next\"`, the URL of the next part."))),
        (status = 400, description = "A query parameter is out of range (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such conversation, or a bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn conversation(
    caller: Caller,
    State(state): State<AppState>,
    PathParams((bot_id, conversation_id)): PathParams<(String, String)>,
    params: QueryParams,
) -> Result<Response, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let mut problems = Vec::new();
    let limit = params.limit_named("participantsLimit", PARTICIPANTS_LIMIT, &mut problems);
    let after = params.non_negative("participantsAfter", &mut problems);
    reject(problems)?;

    let record = state
        .store
        .conversation(&bot_id, &conversation_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let participants = state
        .store
        .participants(&bot_id, &conversation_id, after.unwrap_or(-1), limit)
        .await?;
    let last_shown = after.unwrap_or(-1) + participants.len() as i64;
    let more = last_shown + 1 < record.summary.participant_count;
    let now = OffsetDateTime::now_utc();
    let detail = Json(ConversationDetail {
        participants: participants
            .iter()
            .map(|participant| ParticipantView::of(participant, now))
            .collect(),
        summary: record.into(),
    });
    if !more {
        return Ok(detail.into_response());
    }
    let next = format!(
        "</api/v1/bots/{}/conversations/{}?participantsAfter={last_shown}&participantsLimit={limit}>; rel=\"next\"",
        path_segment(&bot_id),
        path_segment(&conversation_id),
    );
    Ok(([(header::LINK, next)], detail).into_response())
}

/// `text` as one percent-encoded path segment.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A stored event (SPEC 4.2).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    seq: i64,
    #[serde(serialize_with = "timestamp::serialize")]
    received_at: OffsetDateTime,
    name: EventName,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer_type: Option<TransferType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transition: Option<Transition>,
    participant: Option<Participant>,
    anomalies: Vec<Anomaly>,
    /// The event exactly as received.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
}

impl From<EventRecord> for StoredEvent {
    fn from(record: EventRecord) -> Self {
        Self {
            seq: record.seq,
            received_at: record.received_at,
            name: record.name,
            transfer_type: record.transfer_type,
            transition: record.transition,
            participant: record.participant,
            anomalies: record.anomalies,
            payload: record.payload,
        }
    }
}

/// SPEC 4.2: a page of stored events.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// In `seq` order.
    events: Vec<StoredEvent>,
    /// Pass as `afterSeq` for the next page; `null` on the last page.
    next_after_seq: Option<i64>,
}

/// A page ends early once its payloads reach this many bytes, so that one request for a
/// thousand large events cannot hold hundreds of MiB.
pub const EVENTS_PAGE_BYTES: i64 = 4 * 1024 * 1024;

impl IntoResponse for EventPage {
    fn into_response(self) -> Response {
        let next_after_seq = serde_json::to_string(&self.next_after_seq).unwrap_or_default();
        streamed_list(
            "{\"events\":[",
            self.events,
            format!("],\"nextAfterSeq\":{next_after_seq}}}"),
        )
    }
}

/// A JSON object holding a list, written an item at a time as the client reads, so that an
/// item's memory goes as it is sent: `open`, the items separated by commas, then `close`.
pub(super) fn streamed_list<T: Serialize + Send + 'static>(
    open: &'static str,
    items: Vec<T>,
    close: String,
) -> Response {
    let head = std::iter::once(Ok::<_, serde_json::Error>(Bytes::from_static(
        open.as_bytes(),
    )));
    let items = items.into_iter().enumerate().map(|(index, item)| {
        let mut chunk = if index == 0 { Vec::new() } else { vec![b','] };
        serde_json::to_writer(&mut chunk, &item)?;
        Ok(Bytes::from(chunk))
    });
    let tail = std::iter::once(Ok(Bytes::from(close)));
    let chunks = futures_util::stream::iter(head.chain(items).chain(tail));
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// Query parameters of the events query (parsed by [`QueryParams`]; this describes them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct EventsQuery {
    /// Only events with a greater `seq`.
    #[param(rename = "afterSeq", minimum = 0, default = 0)]
    pub after_seq: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = paths::EVENTS,
    tag = "query",
    operation_id = "listEvents",
    summary = "A conversation's stored events, in seq order",
    description = "Up to `limit` events; a page also ends early, with `nextAfterSeq` set, at \
the event whose payload takes it past 4 MiB (the first event always comes).",
    params(
        ("botId" = String, Path, description = BOT_ID),
        ("conversationId" = String, Path, description = "The conversation."),
        EventsQuery,
    ),
    responses(
        ReadRefusals,
        (status = 200, description = "A page of events.", body = EventPage),
        (status = 400, description = "A query parameter is out of range (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such conversation, or a bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn events(
    caller: Caller,
    State(state): State<AppState>,
    PathParams((bot_id, conversation_id)): PathParams<(String, String)>,
    params: QueryParams,
) -> Result<EventPage, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let mut problems = Vec::new();
    let limit = params.limit(EVENTS_LIMIT, &mut problems);
    let after_seq = params.non_negative("afterSeq", &mut problems).unwrap_or(0);
    reject(problems)?;

    let page = state
        .store
        .events(
            &bot_id,
            &conversation_id,
            after_seq,
            limit,
            EVENTS_PAGE_BYTES,
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(EventPage {
        next_after_seq: page
            .more
            .then(|| page.events.last().map(|event| event.seq))
            .flatten(),
        events: page.events.into_iter().map(StoredEvent::from).collect(),
    })
}

/// A page of a keyset-paginated list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of the conversation list (parsed by [`QueryParams`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct ConversationsQuery {
    /// Only conversations with this status.
    pub status: Option<Status>,
    /// Only conversations where this identity ever had a stint.
    #[param(min_length = 1)]
    pub participant: Option<String>,
    /// Only conversations whose interaction (Bright Pattern) names this service.
    #[param(min_length = 1)]
    pub service: Option<String>,
    /// Conversations whose lifetime `[startedAt, endedAt or now]` overlaps `[from, to)`
    /// (RFC 3339).
    pub from: Option<OffsetDateTime>,
    /// Must be after `from`.
    pub to: Option<OffsetDateTime>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page (opaque).
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = paths::CONVERSATIONS,
    tag = "query",
    operation_id = "listConversations",
    summary = "A bot's conversations, newest lastEventAt first",
    description = "Keyset-paginated: new conversations arriving while you page never make an \
item repeat or go missing.",
    params(("botId" = String, Path, description = BOT_ID), ConversationsQuery),
    responses(
        ReadRefusals,
        (status = 200, description = "A page of conversations (each without `participants`).", body = Page<ConversationSummary>),
        (status = 400, description = "A query parameter is invalid (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    params: QueryParams,
) -> Result<Json<Page<ConversationSummary>>, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let mut problems = Vec::new();
    let limit = params.limit(LIST_LIMIT, &mut problems);
    let status = params.get("status").and_then(|text| {
        let status = Status::parse(text);
        if status.is_none() {
            problems.push(problem("status", "must be one of active, idle, ended"));
        }
        status
    });
    let participant = params.non_empty("participant", &mut problems);
    let service = params.non_empty("service", &mut problems);
    let window = params.window(&mut problems);
    let after: Option<ConversationKey> = params.cursor(&mut problems);
    reject(problems)?;

    let filter = ConversationFilter {
        status,
        service,
        participant,
        from: window.from,
        to: window.to,
    };
    let now = OffsetDateTime::now_utc();
    let mut items = state
        .store
        .conversations(&bot_id, &filter, after.as_ref(), limit + 1, now)
        .await?;
    let next = next_key(&mut items, limit, |last| ConversationKey {
        last_event_at: last
            .summary
            .last_event_at
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        conversation_id: last.conversation_id.clone(),
    });
    Ok(Json(Page {
        items: items.into_iter().map(ConversationSummary::from).collect(),
        next_cursor: next.map(|key| encode_cursor(&key)),
    }))
}

/// Query parameters of an agent's stints (parsed by [`QueryParams`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct StintsQuery {
    /// Stints overlapping `[from, to)` (RFC 3339); an open stint lasts until now.
    pub from: Option<OffsetDateTime>,
    /// Must be after `from`.
    pub to: Option<OffsetDateTime>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<i64>,
    /// The `nextCursor` of the previous page (opaque).
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = paths::STINTS,
    tag = "query",
    operation_id = "listParticipantStints",
    summary = "An agent's stints across conversations, newest joinedAt first",
    params(
        ("botId" = String, Path, description = BOT_ID),
        ("identity" = String, Path, description = "The participant's `identity`."),
        StintsQuery,
    ),
    responses(
        ReadRefusals,
        (status = 200, description = "A page of stints, each with its `conversationId`.", body = Page<StintView>),
        (status = 400, description = "A query parameter is invalid (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn participant_stints(
    caller: Caller,
    State(state): State<AppState>,
    PathParams((bot_id, identity)): PathParams<(String, String)>,
    params: QueryParams,
) -> Result<Json<Page<StintView>>, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let mut problems = Vec::new();
    let limit = params.limit(LIST_LIMIT, &mut problems);
    let window = params.window(&mut problems);
    let after: Option<StintKey> = params.cursor(&mut problems);
    reject(problems)?;

    let now = OffsetDateTime::now_utc();
    let mut stints = state
        .store
        .stints(&bot_id, &identity, window, after.as_ref(), limit + 1, now)
        .await?;
    let next = next_key(&mut stints, limit, |last| StintKey {
        joined_at: last.stint.joined_at,
        conversation_id: last.conversation_id.clone(),
        ordinal: last.ordinal,
    });
    Ok(Json(Page {
        items: stints
            .into_iter()
            .map(|found| StintView::of(&found.stint, Some(found.conversation_id), now))
            .collect(),
        next_cursor: next.map(|key| encode_cursor(&key)),
    }))
}

/// The latest `transferData` of a conversation (SPEC 4.5).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferData {
    seq: i64,
    #[serde(serialize_with = "timestamp::serialize")]
    received_at: OffsetDateTime,
    participant: Option<Participant>,
    /// The `transferData` exactly as sent: any JSON value.
    #[schema(value_type = serde_json::Value)]
    data: Box<RawValue>,
}

impl From<TransferDataRecord> for TransferData {
    fn from(record: TransferDataRecord) -> Self {
        Self {
            seq: record.seq,
            received_at: record.received_at,
            participant: record.participant,
            data: record.data,
        }
    }
}

#[utoipa::path(
    get,
    path = paths::TRANSFER_DATA,
    tag = "query",
    operation_id = "getTransferData",
    summary = "The latest transferData sent in a conversation",
    description = "Last writer wins, as in the agent-desktop API it mirrors.",
    params(
        ("botId" = String, Path, description = BOT_ID),
        ("conversationId" = String, Path, description = "The conversation."),
    ),
    responses(
        ReadRefusals,
        (status = 200, description = "The latest transfer data.", body = TransferData),
        (status = 404, description = "No transfer data was sent, no such conversation, or a bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn transfer_data(
    caller: Caller,
    State(state): State<AppState>,
    PathParams((bot_id, conversation_id)): PathParams<(String, String)>,
) -> Result<Json<TransferData>, ApiError> {
    authorize_read(&caller, &bot_id)?;
    state
        .store
        .transfer_data(&bot_id, &conversation_id)
        .await?
        .map(|record| Json(TransferData::from(record)))
        .ok_or(ApiError::NotFound)
}

/// Trims a `limit + 1` fetch to `limit` and returns the key to continue after, if more.
fn next_key<T, K>(items: &mut Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Option<K> {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(key)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventName, Participant};
    use http_body_util::BodyExt;
    use serde_json::value::RawValue;

    fn event(seq: i64, payload: &str) -> StoredEvent {
        StoredEvent {
            seq,
            received_at: OffsetDateTime::UNIX_EPOCH,
            name: EventName::InternalTransferEvent,
            transfer_type: None,
            transition: None,
            participant: Some(Participant {
                identity: "a1".to_owned(),
                name: "<b>A</b>".to_owned(),
                kind: "agent".to_owned(),
            }),
            anomalies: Vec::new(),
            payload: RawValue::from_string(payload.to_owned()).unwrap(),
        }
    }

    async fn streamed(page: EventPage) -> Vec<u8> {
        let body = page.into_response().into_body();
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_streamed_page_is_the_same_json_as_the_page_serialised_whole() {
        for (events, next_after_seq) in [
            (vec![], None),
            (vec![event(1, r#"{"a":1}"#)], None),
            (
                vec![event(7, r#"{"x":"\u00e9"}"#), event(8, "[1, 2]")],
                Some(8),
            ),
        ] {
            let whole = serde_json::to_vec(&EventPage {
                events: events.clone(),
                next_after_seq,
            })
            .unwrap();

            let bytes = streamed(EventPage {
                events,
                next_after_seq,
            })
            .await;

            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                String::from_utf8(whole).unwrap()
            );
        }
    }
}
