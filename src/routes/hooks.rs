//! `POST /agentassist/api/v1/hooks/{botId}` and its aliases (SPEC 1), with
//! `Idempotency-Key` (SPEC 1.5).

use super::params::PathParams;
use super::{AppState, paths};
use crate::auth::Caller;
use crate::config::Permission;
use crate::domain::idempotency::{IdempotencyKey, body_fingerprint};
use crate::domain::{BodyError, IngestBatch, Status};
use crate::error::{ApiError, IngestRefusals, Problem};
use crate::metrics;
use crate::store::{Appended, KeyRecord, Keyed, Outcome, Previous};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa::openapi::{ObjectBuilder, OneOfBuilder, Schema, Type};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The SPEC 1.2 success body; `STATUS: "OK"` mirrors the vendor's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestResponse {
    /// Always `OK`.
    #[serde(rename = "STATUS")]
    #[schema(value_type = String, pattern = "^OK$", example = "OK")]
    pub status: &'static str,
    pub conversation_id: String,
    /// Events stored by this request.
    #[schema(minimum = 1, maximum = 100)]
    pub accepted: i64,
    /// The `seq` of the first and the last of them (gap-free per conversation, from 1).
    #[schema(minimum = 1)]
    pub first_seq: i64,
    #[schema(minimum = 1)]
    pub last_seq: i64,
    /// The conversation's status after them.
    pub conversation_status: Status,
}

impl From<Outcome> for IngestResponse {
    fn from(outcome: Outcome) -> Self {
        Self {
            status: "OK",
            conversation_id: outcome.conversation_id,
            accepted: outcome.accepted,
            first_seq: outcome.appended.first_seq,
            last_seq: outcome.appended.last_seq,
            conversation_status: outcome.appended.status,
        }
    }
}

/// SPEC 1: validate and append events to a conversation's timeline.
#[utoipa::path(
    post,
    path = paths::HOOKS,
    tag = "ingest",
    operation_id = "ingest",
    summary = "Append hook events",
    description = "Validates the events (every problem is reported) and appends them to the \
conversation's timeline, all or none. Also mounted at `/agentai/api/v1/hooks/{botId}` and \
`/api/v1/hooks/{botId}`. Checks run in this order: token (401), permission for the path's \
bot (403), content type (415), `Idempotency-Key` format (400), body size (413), the key's \
earlier use (422) and the body (400).",
    params(
        ("botId" = String, Path, description = "The bot; the body's `botId` must equal it.", example = "st-XXXX-XXXX-XXXX-XXXX"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]+$",
            description = "1–255 visible ASCII characters, scoped by bot and kept 24 h: a retry \
with the same key and body replays the first response; another body gets 422; a retry while \
the first request runs gets 409."),
    ),
    request_body(content = HookRequest, content_type = "application/json",
        description = "1–100 events of one conversation. `Content-Type: application/json` (a \
UTF-8 charset parameter is fine); at most 256 KiB by default."),
    responses(
        IngestRefusals,
        (status = 200, description = "Stored, or replayed for a repeated `Idempotency-Key`.", body = IngestResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same key.")),
            example = json!({"STATUS": "OK", "conversationId": "c-xxxx", "accepted": 1, "firstSeq": 1, "lastSeq": 1, "conversationStatus": "active"})),
        (status = 400, description = "Not JSON, failed validation (every problem in `errors`), path and body `botId` differ, or a malformed `Idempotency-Key`.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The path names no bot (e.g. it does not decode).", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`Content-Type` is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The `Idempotency-Key` was used with another body.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn ingest(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let parse = |body: &[u8], bot_id: &str, keyed: bool| {
        let (batch, fingerprint) = IngestBatch::parse_fingerprinted(body, bot_id, keyed);
        Parsed { batch, fingerprint }
    };
    append_request(&caller, &state, bot_id, &headers, body, parse).await
}

/// What a body parser gives: the batch or why not, and the body's fingerprint when it
/// was asked for one (a keyed request) and computed it on the way.
pub(super) struct Parsed {
    batch: Result<IngestBatch, BodyError>,
    fingerprint: Option<String>,
}

impl From<Result<IngestBatch, BodyError>> for Parsed {
    fn from(batch: Result<IngestBatch, BodyError>) -> Self {
        Self {
            batch,
            fingerprint: None,
        }
    }
}

/// Appends what `parse` makes of a request's body to a conversation of `bot_id`, with
/// everything every ingest endpoint does (SPEC 1 and 7): the `ingest` permission, a JSON
/// body within the limit, and an optional `Idempotency-Key`, in this order of checks.
pub(super) async fn append_request(
    caller: &Caller,
    state: &AppState,
    bot_id: String,
    headers: &HeaderMap,
    body: Body,
    parse: impl FnOnce(&[u8], &str, bool) -> Parsed,
) -> Result<Response, ApiError> {
    if !caller.may(&bot_id, Permission::Ingest) {
        return Err(ApiError::Forbidden);
    }
    require_json(headers)?;
    let key = idempotency_key(headers)?;
    let body = read_body(body, state.body_limit_bytes).await?;
    let Parsed { batch, fingerprint } = parse(&body, &bot_id, key.is_some());
    let parsed = batch.map_err(|error| match error {
        BodyError::Malformed(reason) => ApiError::MalformedJson(reason),
        BodyError::Invalid(problems) => ApiError::Validation(problems),
    });

    let Some(key) = key else {
        let batch = parsed?;
        let appended = state.store.append(&batch).await?;
        state.changes.committed(&batch.bot_id);
        metrics::stored(&batch, &appended.anomalies);
        return Ok(success(outcome(&batch, appended), false));
    };
    let now = OffsetDateTime::now_utc();
    let key = KeyRecord {
        bot_id,
        key: key.as_str().to_owned(),
        fingerprint: fingerprint.unwrap_or_else(|| body_fingerprint(&body)),
        now,
        expired_before: now - state.key_retention,
    };
    let batch = match parsed {
        Ok(batch) => batch,
        // A refused body stores nothing; it is only news if the key was used for another.
        Err(refused) => {
            return match state.store.previous_use(&key).await? {
                Some(Previous::OtherBody) => Err(ApiError::IdempotencyMismatch),
                _ => Err(refused),
            };
        }
    };
    match state.store.append_keyed(&batch, &key).await? {
        Keyed::Stored(appended) => {
            state.changes.committed(&batch.bot_id);
            metrics::stored(&batch, &appended.anomalies);
            Ok(success(outcome(&batch, appended), false))
        }
        Keyed::Used(Previous::SameBody(previous)) => {
            metrics::idempotent_replay();
            Ok(success(previous, true))
        }
        Keyed::Used(Previous::OtherBody) => Err(ApiError::IdempotencyMismatch),
        Keyed::InFlight => Err(ApiError::IdempotencyInFlight),
    }
}

fn outcome(batch: &IngestBatch, appended: Appended) -> Outcome {
    Outcome {
        conversation_id: batch.conversation_id.as_str().to_owned(),
        accepted: batch.events.len() as i64,
        appended,
    }
}

fn success(outcome: Outcome, replayed: bool) -> Response {
    let mut response = Json(IngestResponse::from(outcome)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::InvalidHeader("Idempotency-Key must be visible ASCII characters"))?;
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(ApiError::InvalidHeader)
}

/// `application/json`, with or without parameters; a charset other than UTF-8 is refused.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .ok_or(ApiError::UnsupportedMediaType)?;
    let mut parts = content_type.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default();
    let utf8 = parts.all(|parameter| match parameter.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    if media_type.eq_ignore_ascii_case("application/json") && utf8 {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::MalformedJson("the request body could not be read".to_owned())
        }
    })
}

// `domain::ingest` parses the body by hand, so that it can report every problem; the types
// below only describe it (their limits are checked against the parser's in the tests).

/// The hooks request body (SPEC 1.1): all of its events are stored, or none. Unknown
/// members are accepted, and every event is stored exactly as received.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    /// 1–256 characters, no control characters.
    #[schema(min_length = 1, max_length = 256, example = "c-xxxx")]
    pub conversation_id: String,
    /// Must equal the path's `botId`; at most 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128, example = "st-XXXX-XXXX-XXXX-XXXX")]
    pub bot_id: String,
    /// 1–100 events, stored in this order, all or none.
    #[schema(min_items = 1, max_items = 100)]
    pub events: Vec<HookEvent>,
}

/// One event, by `name`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "name")]
pub enum HookEvent {
    /// An agent entered or left the conversation.
    #[serde(rename = "INTERNAL_TRANSFER_EVENT")]
    InternalTransferEvent(TransferEvent),
    /// The conversation ended: open stints are closed with exit type `END`.
    #[serde(rename = "END_OF_CONVERSATION")]
    EndOfConversation(EndOfConversationEvent),
    /// Recorded only.
    #[serde(rename = "TRIGGER_SUMMARY_EVENT")]
    TriggerSummaryEvent(TriggerSummaryEvent),
}

/// An `INTERNAL_TRANSFER_EVENT`. Enumerated strings are matched case-insensitively (the
/// vendor's documentation writes both `cold` and `COLD`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferEvent {
    /// `NA`, `COLD`, `WARM` or `REDIAL`, in any case; `transferType` is accepted as an alias.
    #[serde(rename = "transfertype")]
    #[schema(
        pattern = "^([Nn][Aa]|[Cc][Oo][Ll][Dd]|[Ww][Aa][Rr][Mm]|[Rr][Ee][Dd][Ii][Aa][Ll])$",
        example = "COLD"
    )]
    pub transfertype: String,
    /// `entry` or `exit`, in any case.
    #[schema(
        pattern = "^([Ee][Nn][Tt][Rr][Yy]|[Ee][Xx][Ii][Tt])$",
        example = "entry"
    )]
    pub transition: String,
    /// A boolean, or the string `"true"` or `"false"` (the vendor's samples send both).
    #[serde(rename = "isExtAD")]
    #[schema(schema_with = is_ext_ad)]
    pub is_ext_ad: Value,
    /// `chat`, `voice` or `email`, in any case.
    #[schema(
        pattern = "^([Cc][Hh][Aa][Tt]|[Vv][Oo][Ii][Cc][Ee]|[Ee][Mm][Aa][Ii][Ll])$",
        example = "voice"
    )]
    pub experience: String,
    /// At most 35 characters; `null` counts as absent.
    #[schema(max_length = 35, example = "en")]
    pub language: Option<String>,
    pub participant: HookParticipant,
    /// Context the leaving agent hands to the next one: any JSON value, at most 16 KiB
    /// serialized; the latest is served by the transfer-data query.
    #[schema(value_type = Option<serde_json::Value>)]
    pub transfer_data: Option<Value>,
}

/// An `END_OF_CONVERSATION`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndOfConversationEvent {
    pub reason: Option<String>,
    #[schema(max_length = 35)]
    pub language: Option<String>,
    /// `chat`, `voice` or `email`, in any case.
    #[schema(pattern = "^([Cc][Hh][Aa][Tt]|[Vv][Oo][Ii][Cc][Ee]|[Ee][Mm][Aa][Ii][Ll])$")]
    pub experience: Option<String>,
    pub participant: Option<HookParticipant>,
}

/// A `TRIGGER_SUMMARY_EVENT`.
#[derive(Deserialize, ToSchema)]
pub struct TriggerSummaryEvent {
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

/// Who entered or left.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookParticipant {
    /// Participants are keyed by it.
    #[schema(min_length = 1, max_length = 256, example = "agentId1")]
    pub identity: String,
    #[schema(max_length = 256, example = "AgentName1")]
    pub name: String,
    /// e.g. `agent`, `bot`, `supervisor`.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 64, example = "agent")]
    pub kind: String,
    /// Free-form: `agentEmail`, `queueId`, `queueName`, …
    #[schema(value_type = Option<Object>)]
    pub custom_fields: Option<Value>,
}

/// `isExtAD`: a JSON boolean or the strings `"true"`/`"false"` in any case.
fn is_ext_ad() -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$")),
        )
        .description(Some(
            "A boolean, or the string \"true\" or \"false\" (the vendor's samples send both)",
        ))
        .into()
}
