//! The one error type at the HTTP boundary, written as `application/problem+json` (RFC 9457).

use crate::domain::FieldError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// What went wrong, named by what the client should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON")]
    MalformedJson(String),
    #[error("{} problem(s) in the request body", .0.len())]
    Validation(Vec<FieldError>),
    #[error("invalid query parameter")]
    InvalidQuery(Vec<FieldError>),
    #[error("invalid header: {0}")]
    InvalidHeader(&'static str),
    #[error("invalid token")]
    Unauthorized,
    #[error("not allowed")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInFlight,
    #[error("the Idempotency-Key was used with another body")]
    IdempotencyMismatch,
    #[error("service unavailable")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The `application/problem+json` body (RFC 9457) of every error; `code` and `message`
/// mirror `status` and `detail` for clients written against the vendor's error body.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation",
    "title": "Request body failed validation",
    "status": 400, "detail": "1 problem in the request",
    "code": 400, "message": "1 problem in the request",
    "errors": [{ "path": "/events/0/transition", "message": "must be one of entry, exit" }]
}))]
pub struct Problem {
    /// A stable relative URI per kind of problem, e.g. `/problems/validation`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'static str,
    #[schema(value_type = String)]
    title: &'static str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    detail: String,
    /// `status` again.
    #[schema(minimum = 400, maximum = 599)]
    code: u16,
    /// `detail` again.
    message: String,
    /// Every problem found in the body or query, each with its JSON Pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    errors: Option<Vec<FieldError>>,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::Validation(_)
            | Self::InvalidQuery(_)
            | Self::InvalidHeader(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::IdempotencyInFlight => StatusCode::CONFLICT,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `type` URI and the `title` of each kind of problem.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::MalformedJson(_) => {
                ("/problems/malformed-json", "Request body is not valid JSON")
            }
            Self::Validation(_) => ("/problems/validation", "Request body failed validation"),
            Self::InvalidQuery(_) => ("/problems/invalid-query", "Query parameters are invalid"),
            Self::InvalidHeader(_) => ("/problems/invalid-header", "A request header is invalid"),
            Self::Unauthorized => ("/problems/unauthorized", "Invalid token"),
            Self::Forbidden => ("/problems/forbidden", "Not allowed"),
            Self::NotFound => ("/problems/not-found", "Not found"),
            Self::MethodNotAllowed => ("/problems/method-not-allowed", "Method not allowed"),
            Self::PayloadTooLarge { .. } => {
                ("/problems/payload-too-large", "Request body too large")
            }
            Self::UnsupportedMediaType => (
                "/problems/unsupported-media-type",
                "Content-Type must be application/json",
            ),
            Self::HeadersTooLarge => (
                "/problems/headers-too-large",
                "Request header fields too large",
            ),
            Self::IdempotencyInFlight => (
                "/problems/idempotency-key-in-flight",
                "A request with this Idempotency-Key is still in progress",
            ),
            Self::IdempotencyMismatch => (
                "/problems/idempotency-key-reused",
                "Idempotency-Key reused with another body",
            ),
            Self::Unavailable => ("/problems/unavailable", "Service temporarily unavailable"),
            Self::Internal(_) => ("/problems/internal", "Internal server error"),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::MalformedJson(reason) => reason.clone(),
            Self::Validation(errors) | Self::InvalidQuery(errors) => match errors.len() {
                1 => "1 problem in the request".to_owned(),
                n => format!("{n} problems in the request"),
            },
            Self::InvalidHeader(reason) => (*reason).to_owned(),
            Self::Unauthorized => "invalid token".to_owned(),
            Self::Forbidden => "the app is not allowed to do this for this bot".to_owned(),
            Self::NotFound => "no such resource".to_owned(),
            Self::MethodNotAllowed => "method not allowed on this path".to_owned(),
            Self::PayloadTooLarge { limit } => {
                format!("the request body exceeds the limit of {limit} bytes")
            }
            Self::UnsupportedMediaType => "send the body as application/json".to_owned(),
            Self::HeadersTooLarge => format!(
                "send at most {} header fields and {} bytes of headers",
                crate::routes::MAX_HEADERS,
                crate::routes::MAX_HEADER_BYTES
            ),
            Self::IdempotencyInFlight => {
                "the first request with this Idempotency-Key has not finished; retry shortly"
                    .to_owned()
            }
            Self::IdempotencyMismatch => {
                "this Idempotency-Key was first used with a different body".to_owned()
            }
            Self::Unavailable => {
                "the service is overloaded or its database is unavailable; retry shortly".to_owned()
            }
            Self::Internal(_) => "an unexpected error occurred".to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let (kind, title) = self.kind();
        let detail = self.detail();
        let errors = match self {
            Self::Validation(errors) | Self::InvalidQuery(errors) => Some(errors),
            _ => None,
        };
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            message: detail.clone(),
            detail,
            code: status.as_u16(),
            errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::Unavailable
            }
            StoreError::Other(cause) => Self::Internal(cause),
        }
    }
}
