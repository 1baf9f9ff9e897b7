//! Path and query parameters: the extractors (answering with our problem+json instead of
//! axum's plain-text rejections) and the checks the queries share, each problem reported
//! with its parameter.

use crate::domain::FieldError;
use crate::error::ApiError;
use crate::store::{ConversationKey, StintKey, Window};
use axum::extract::{FromRequestParts, Path, Query, RawPathParams};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The `botId` path parameter of the queries.
pub(crate) const BOT_ID: &str =
    "The bot. A bot the app may not read answers 404, like a missing conversation.";

/// Query-string parameters by name; the last value wins when one is repeated. A parameter
/// holding U+0000 is refused: no stored text can contain it, and PostgreSQL cannot take it
/// as a query argument.
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let invalid = || {
            ApiError::InvalidQuery(vec![FieldError {
                path: String::new(),
                message: "the query string is not valid".to_owned(),
            }])
        };
        let Query(params) =
            Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map_err(|_| invalid())?;
        if params
            .iter()
            .any(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            return Err(invalid());
        }
        Ok(Self(params))
    }
}

/// Path parameters; a path that does not decode (e.g. invalid UTF-8) or that holds U+0000
/// (which no stored id can contain, and PostgreSQL cannot take as an argument) names no
/// resource.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        if raw.iter().any(|(_, value)| value.contains('\0')) {
            return Err(ApiError::NotFound);
        }
        let Path(params) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        Ok(Self(params))
    }
}

pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Option<K> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    // No cursor we issue holds U+0000, and PostgreSQL cannot take it as an argument.
    let key: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if key
        .as_object()?
        .values()
        .any(|value| value.as_str().is_some_and(|text| text.contains('\0')))
    {
        return None;
    }
    serde_json::from_value(key).ok()
}

/// A page key, with the time it continues after.
pub(super) trait CursorKey: DeserializeOwned {
    fn time(&self) -> OffsetDateTime;
}

impl CursorKey for ConversationKey {
    fn time(&self) -> OffsetDateTime {
        self.last_event_at
    }
}

impl CursorKey for StintKey {
    fn time(&self) -> OffsetDateTime {
        self.joined_at
    }
}

/// True when the time can be written in UTC: `9999-12-31T23:59:59-01:00` cannot, and the
/// database driver panics converting it.
fn in_utc_range(time: OffsetDateTime) -> bool {
    time.checked_to_offset(time::UtcOffset::UTC).is_some()
}

pub(super) fn problem(parameter: &str, message: &str) -> FieldError {
    FieldError {
        path: format!("/{parameter}"),
        message: message.to_owned(),
    }
}

pub(super) fn reject(problems: Vec<FieldError>) -> Result<(), ApiError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidQuery(problems))
    }
}

impl QueryParams {
    pub(super) fn limit(&self, range: (i64, i64), problems: &mut Vec<FieldError>) -> i64 {
        self.limit_named("limit", range, problems)
    }

    pub(super) fn limit_named(
        &self,
        name: &str,
        (default, max): (i64, i64),
        problems: &mut Vec<FieldError>,
    ) -> i64 {
        match self.get(name).map(str::parse::<i64>) {
            None => default,
            Some(Ok(limit)) if (1..=max).contains(&limit) => limit,
            Some(_) => {
                problems.push(problem(
                    name,
                    &format!("must be an integer from 1 to {max}"),
                ));
                default
            }
        }
    }

    pub(super) fn non_negative(&self, name: &str, problems: &mut Vec<FieldError>) -> Option<i64> {
        match self.get(name).map(str::parse::<i64>) {
            None => None,
            Some(Ok(value)) if value >= 0 => Some(value),
            Some(_) => {
                problems.push(problem(name, "must be a non-negative integer"));
                None
            }
        }
    }

    pub(super) fn non_empty(&self, name: &str, problems: &mut Vec<FieldError>) -> Option<String> {
        match self.get(name) {
            Some("") => {
                problems.push(problem(name, "must not be empty"));
                None
            }
            other => other.map(str::to_owned),
        }
    }

    pub(super) fn time(
        &self,
        name: &str,
        problems: &mut Vec<FieldError>,
    ) -> Option<OffsetDateTime> {
        let text = self.get(name)?;
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .filter(|time| in_utc_range(*time));
        if parsed.is_none() {
            problems.push(problem(
                name,
                "must be an RFC 3339 time, e.g. 2026-01-31T09:00:00Z",
            ));
        }
        parsed
    }

    pub(super) fn window(&self, problems: &mut Vec<FieldError>) -> Window {
        let window = Window {
            from: self.time("from", problems),
            to: self.time("to", problems),
        };
        if let (Some(from), Some(to)) = (window.from, window.to)
            && from >= to
        {
            problems.push(problem("to", "must be after from"));
        }
        window
    }

    pub(super) fn cursor<K: CursorKey>(&self, problems: &mut Vec<FieldError>) -> Option<K> {
        let text = self.get("cursor")?;
        let key = decode_cursor::<K>(text).filter(|key| in_utc_range(key.time()));
        if key.is_none() {
            problems.push(problem("cursor", "is not a cursor this API returned"));
        }
        key
    }
}
