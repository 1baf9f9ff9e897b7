//! The other seed systems' endpoints (SPEC 7): Bright Pattern's agent desktop (a new
//! interaction, transfer data) and the Salesforce Einstein Bot's messages. Each stores its
//! request as events of the conversation, with every rule of the hooks API (permission,
//! body limit, `Idempotency-Key`, problem+json errors).

use super::hooks::{IngestResponse, append_request};
use super::params::PathParams;
use super::{AppState, paths};
use crate::auth::Caller;
use crate::domain::sources::{parse_bot_messages, parse_interaction, parse_transfer_data};
use crate::error::{ApiError, IngestRefusals, Problem};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

#[utoipa::path(
    post,
    path = paths::INTERACTIONS,
    tag = "ingest",
    operation_id = "postInteraction",
    summary = "A Bright Pattern interaction delivered to an agent (ON_NEW_INTERACTION)",
    description = "Stored as an `INTERACTION_DATA` event of the conversation `conversationId`, \
else `interaction.interactionId`. No stint opens or closes: the conversation's `interaction` \
gains the delivery's members (the latest delivery wins per member) and `deliveredTo` gains the \
agent and the time. `experience` follows the interaction's `type` while no hooks event has set \
it. Needs the `ingest` permission; `Idempotency-Key` works as on the hooks endpoint.",
    params(("botId" = String, Path, description = "The bot."), IdempotencyHeader),
    request_body(content = InteractionRequest, content_type = "application/json"),
    responses(
        IngestRefusals,
        (status = 200, description = "Stored, or replayed for a repeated `Idempotency-Key`.", body = IngestResponse),
        (status = 400, description = "Not JSON, or failed validation (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`Content-Type` is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The `Idempotency-Key` was used with another body.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn interaction(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let parse = |body: &[u8], bot_id: &str, _: bool| parse_interaction(body, bot_id).into();
    append_request(&caller, &state, bot_id, &headers, body, parse).await
}

#[utoipa::path(
    put,
    path = paths::TRANSFER_DATA,
    tag = "ingest",
    operation_id = "putTransferData",
    summary = "The data an agent hands over on a transfer (ON_REQUEST_TRANSFER_DATA)",
    description = "Stored as a `TRANSFER_DATA` event; the transfer-data query then answers the \
latest transfer data from either source (this, or a hooks event's `transferData`). Needs the \
`ingest` permission.",
    params(
        ("botId" = String, Path, description = "The bot."),
        ("conversationId" = String, Path, description = "The conversation (1–256 characters)."),
        IdempotencyHeader,
    ),
    request_body(content = TransferDataRequest, content_type = "application/json"),
    responses(
        IngestRefusals,
        (status = 200, description = "Stored, or replayed for a repeated `Idempotency-Key`.", body = IngestResponse),
        (status = 400, description = "Not JSON, or failed validation (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`Content-Type` is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The `Idempotency-Key` was used with another body.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn transfer_data(
    caller: Caller,
    State(state): State<AppState>,
    PathParams((bot_id, conversation_id)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let parse = |body: &[u8], bot_id: &str, _: bool| {
        parse_transfer_data(body, bot_id, &conversation_id).into()
    };
    append_request(&caller, &state, bot_id, &headers, body, parse).await
}

#[utoipa::path(
    post,
    path = paths::BOT_MESSAGES,
    tag = "ingest",
    operation_id = "postBotMessages",
    summary = "A Salesforce Einstein Bot's escalation, and the client's transfer outcome",
    description = "The body the client sent to the bot — a v5 `ChatMessageEnvelope` \
(`{\"message\": {…}}`) or a v4 `RequestEnvelope` (`{\"messages\": [{…}, …]}`) — or the bot's \
`escalate` response, with an optional `participant` for the bot (default identity \
`bot:{botId}`, type `bot`). Each message is stored as one event, in order: `escalate` as \
`BOT_ESCALATION` (a pending ESCALATION hop), `transferSucceeded` as `BOT_TRANSFER_SUCCEEDED` \
(completes the latest pending one; the next agent to enter is its `to`), `transferFailed` as \
`BOT_TRANSFER_FAILED` (fails it, with `reason`). Other message types are refused with 400. \
Needs the `ingest` permission.",
    params(
        ("botId" = String, Path, description = "The bot."),
        ("conversationId" = String, Path, description = "The conversation (1–256 characters)."),
        IdempotencyHeader,
    ),
    request_body(content = BotMessages, content_type = "application/json"),
    responses(
        IngestRefusals,
        (status = 200, description = "Stored, or replayed for a repeated `Idempotency-Key`.", body = IngestResponse),
        (status = 400, description = "Not JSON, a message type other than escalate, transferSucceeded and transferFailed, or failed validation (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`Content-Type` is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The `Idempotency-Key` was used with another body.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn bot_messages(
    caller: Caller,
    State(state): State<AppState>,
    PathParams((bot_id, conversation_id)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let parse = |body: &[u8], bot_id: &str, _: bool| {
        parse_bot_messages(body, bot_id, &conversation_id).into()
    };
    append_request(&caller, &state, bot_id, &headers, body, parse).await
}

/// The optional `Idempotency-Key` header (described for the OpenAPI document).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// 1–255 visible ASCII characters, scoped by bot and kept 24 h: a retry with the same key
    /// and body replays the first response; another body gets 422; a retry while the first
    /// request runs gets 409.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[\\x21-\\x7E]+$"
    )]
    pub idempotency_key: Option<String>,
}

// `domain::sources` parses the bodies by hand, so that it can report every problem; the
// types below only describe them.

/// `ON_NEW_INTERACTION`'s call: the agent and the `InteractionData` as the handler got it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InteractionRequest {
    /// The agent it was delivered to.
    #[schema(min_length = 1, max_length = 256, example = "agent-1")]
    pub agent_id: String,
    /// The conversation; `interaction.interactionId` when absent.
    #[schema(min_length = 1, max_length = 256)]
    pub conversation_id: Option<String>,
    pub interaction: InteractionData,
}

/// Bright Pattern's `InteractionData`, stored exactly as sent; members not listed here are
/// kept too.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InteractionData {
    #[schema(min_length = 1, max_length = 256, example = "int-42")]
    pub interaction_id: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^(voice|chat|email)$", example = "voice")]
    pub kind: String,
    #[schema(
        pattern = "^(unknown|queued|ivr|wrap_up|wrap_up_hold|delivered|delivery_pending|hold|completed)$"
    )]
    pub state: Option<String>,
    #[schema(pattern = "^(inbound|outbound)$")]
    pub call_direction: Option<String>,
    #[schema(
        pattern = "^(dialpad|dialpad-search|directory|recent|favorites|workitem|interaction|contact-profile|help|conference|auto|integration-api)$"
    )]
    pub origination: Option<String>,
    pub call_parties: Option<Vec<CallParty>>,
    /// Epoch milliseconds.
    pub start_time: Option<f64>,
    /// Epoch milliseconds.
    pub end_time: Option<f64>,
    /// Seconds.
    pub duration: Option<f64>,
    /// The service the interaction belongs to: what the list's `service` filter matches.
    pub service: Option<String>,
}

/// A party of a call.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallParty {
    pub id: String,
    pub name: String,
    pub phone: String,
    pub user_id: Option<String>,
}

/// `ON_REQUEST_TRANSFER_DATA`'s data, with the agent handing it over.
#[derive(Deserialize, ToSchema)]
pub struct TransferDataRequest {
    pub participant: SourceParticipant,
    /// Described by [`any_but_null`].
    #[schema(schema_with = any_but_null)]
    pub data: Value,
}

/// Any JSON value but `null`.
fn any_but_null() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
    let any_of = [
        Type::Object,
        Type::Array,
        Type::String,
        Type::Number,
        Type::Boolean,
    ]
    .into_iter()
    .fold(AnyOfBuilder::new(), |any_of, kind| {
        any_of.item(ObjectBuilder::new().schema_type(kind))
    });
    let described = any_of.description(Some(
        "Any JSON value but `null` (which means \"none\"), at most 16 KiB serialized; handed on \
         exactly as sent.",
    ));
    Schema::AnyOf(described.build())
}

/// Who sent it: `identity` is required, `name` and `type` are optional.
#[derive(Deserialize, ToSchema)]
pub struct SourceParticipant {
    #[schema(min_length = 1, max_length = 256)]
    pub identity: String,
    #[schema(max_length = 256)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 64)]
    pub kind: Option<String>,
}

/// A v5 `ChatMessageEnvelope` (`message`) or a v4 `RequestEnvelope` (`messages`): exactly
/// one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BotMessages {
    V5(ChatMessageEnvelope),
    V4(RequestEnvelope),
}

/// Salesforce's v5 envelope: one message.
#[derive(Deserialize, ToSchema)]
pub struct ChatMessageEnvelope {
    pub message: BotMessage,
    /// The bot; default identity `bot:{botId}`, type `bot`.
    pub participant: Option<SourceParticipant>,
}

/// Salesforce's v4 envelope: messages stored in order.
#[derive(Deserialize, ToSchema)]
pub struct RequestEnvelope {
    #[schema(min_items = 1, max_items = 100)]
    pub messages: Vec<BotMessage>,
    /// The bot; default identity `bot:{botId}`, type `bot`.
    pub participant: Option<SourceParticipant>,
}

/// One message, by `type`: the bot's escalation, or the client's transfer outcome.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BotMessage {
    Escalate(EscalateMessage),
    TransferSucceeded(TransferSucceededMessage),
    TransferFailed(TransferFailedMessage),
}

/// The bot's `EscalateResponseMessage`: it asks to hand over.
#[derive(Deserialize, ToSchema)]
pub struct EscalateMessage {
    /// `escalate`.
    #[serde(rename = "type")]
    #[schema(pattern = "^escalate$")]
    pub kind: String,
    /// Where the bot asks to hand over to.
    pub targets: Vec<EscalationTarget>,
}

/// The client routed the session.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferSucceededMessage {
    /// `transferSucceeded`.
    #[serde(rename = "type")]
    #[schema(pattern = "^transferSucceeded$")]
    pub kind: String,
    pub sequence_id: i64,
}

/// Routing failed.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferFailedMessage {
    /// `transferFailed`.
    #[serde(rename = "type")]
    #[schema(pattern = "^transferFailed$")]
    pub kind: String,
    pub sequence_id: i64,
    #[schema(pattern = "^(NoAgentAvailable|Error)$")]
    pub reason: String,
    pub description: Option<String>,
}

/// A target of an escalation, as configured by the bot's admin.
#[derive(Deserialize, ToSchema)]
pub struct EscalationTarget {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}
