//! `POST /agentassist/api/v1/hooks/{botId}` and its aliases (SPEC 1), with
//! `Idempotency-Key` (SPEC 1.5).

use super::AppState;
use super::extract::PathParams;
use crate::auth::Caller;
use crate::config::Permission;
use crate::domain::idempotency::{IdempotencyKey, body_fingerprint};
use crate::domain::{BodyError, IngestBatch, Status};
use crate::error::ApiError;
use crate::store::{Appended, KeyRecord, Keyed, Outcome, Previous};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The SPEC 1.2 success body; `STATUS: "OK"` mirrors the vendor's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestResponse {
    #[serde(rename = "STATUS")]
    pub status: &'static str,
    pub conversation_id: String,
    pub accepted: i64,
    pub first_seq: i64,
    pub last_seq: i64,
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

pub async fn ingest(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !caller.may(&bot_id, Permission::Ingest) {
        return Err(ApiError::Forbidden);
    }
    require_json(&headers)?;
    let key = idempotency_key(&headers)?;
    let body = read_body(body, state.body_limit_bytes).await?;
    let parsed = IngestBatch::parse(&body, &bot_id).map_err(|error| match error {
        BodyError::Malformed(reason) => ApiError::MalformedJson(reason),
        BodyError::Invalid(problems) => ApiError::Validation(problems),
    });

    let Some(key) = key else {
        let batch = parsed?;
        let appended = state.store.append(&batch).await?;
        return Ok(success(outcome(&batch, appended), false));
    };
    let now = OffsetDateTime::now_utc();
    let key = KeyRecord {
        bot_id,
        key: key.as_str().to_owned(),
        fingerprint: body_fingerprint(&body),
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
        Keyed::Stored(appended) => Ok(success(outcome(&batch, appended), false)),
        Keyed::Used(Previous::SameBody(previous)) => Ok(success(previous, true)),
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
