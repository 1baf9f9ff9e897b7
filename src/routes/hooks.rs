//! `POST /agentassist/api/v1/hooks/{botId}` and its aliases (SPEC 1).

use super::AppState;
use super::extract::PathParams;
use crate::auth::Caller;
use crate::config::Permission;
use crate::domain::{BodyError, IngestBatch, Status};
use crate::error::ApiError;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::Serialize;

/// The SPEC 1.2 success body; `STATUS: "OK"` mirrors the vendor's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestResponse {
    #[serde(rename = "STATUS")]
    pub status: &'static str,
    pub conversation_id: String,
    pub accepted: usize,
    pub first_seq: i64,
    pub last_seq: i64,
    pub conversation_status: Status,
}

pub async fn ingest(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    if !caller.may(&bot_id, Permission::Ingest) {
        return Err(ApiError::Forbidden);
    }
    require_json(&headers)?;
    let body = read_body(body, state.body_limit_bytes).await?;
    let batch = IngestBatch::parse(&body, &bot_id).map_err(|error| match error {
        BodyError::Malformed(reason) => ApiError::MalformedJson(reason),
        BodyError::Invalid(problems) => ApiError::Validation(problems),
    })?;

    let appended = state.store.append(&batch).await?;
    Ok(Json(IngestResponse {
        status: "OK",
        conversation_id: batch.conversation_id.as_str().to_owned(),
        accepted: batch.events.len(),
        first_seq: appended.first_seq,
        last_seq: appended.last_seq,
        conversation_status: appended.status,
    }))
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
