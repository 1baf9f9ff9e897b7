//! The one error type at the HTTP boundary, written as `application/problem+json` (RFC 9457).

use crate::domain::FieldError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// What went wrong, named by what the client should do about it. The message of each is
/// the `detail` its client reads.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{}", count(.0))]
    Validation(Vec<FieldError>),
    #[error("{}", count(.0))]
    InvalidQuery(Vec<FieldError>),
    #[error("{0}")]
    InvalidHeader(&'static str),
    #[error("invalid token")]
    Unauthorized,
    #[error("the app is not allowed to do this for this bot")]
    Forbidden,
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    #[error("send at most {max_headers} header fields and {max_bytes} bytes of headers")]
    HeadersTooLarge {
        max_headers: usize,
        max_bytes: usize,
    },
    #[error("the first request with this Idempotency-Key has not finished; retry shortly")]
    IdempotencyInFlight,
    #[error("this Idempotency-Key was first used with a different body")]
    IdempotencyMismatch,
    #[error("the service is overloaded or its database is unavailable; retry shortly")]
    Unavailable,
    /// Logged with its cause; the client reads only that something unexpected happened.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn count(problems: &[FieldError]) -> String {
    match problems.len() {
        1 => "1 problem in the request".to_owned(),
        n => format!("{n} problems in the request"),
    }
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
    /// The status, the stable `type` URI and the `title` of each kind of problem.
    fn describe(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::MalformedJson(_) => (
                S::BAD_REQUEST,
                "/problems/malformed-json",
                "Request body is not valid JSON",
            ),
            Self::Validation(_) => (
                S::BAD_REQUEST,
                "/problems/validation",
                "Request body failed validation",
            ),
            Self::InvalidQuery(_) => (
                S::BAD_REQUEST,
                "/problems/invalid-query",
                "Query parameters are invalid",
            ),
            Self::InvalidHeader(_) => (
                S::BAD_REQUEST,
                "/problems/invalid-header",
                "A request header is invalid",
            ),
            Self::Unauthorized => (S::UNAUTHORIZED, "/problems/unauthorized", "Invalid token"),
            Self::Forbidden => (S::FORBIDDEN, "/problems/forbidden", "Not allowed"),
            Self::NotFound => (S::NOT_FOUND, "/problems/not-found", "Not found"),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "/problems/method-not-allowed",
                "Method not allowed",
            ),
            Self::PayloadTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "/problems/payload-too-large",
                "Request body too large",
            ),
            Self::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "/problems/unsupported-media-type",
                "Content-Type must be application/json",
            ),
            Self::HeadersTooLarge { .. } => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "/problems/headers-too-large",
                "Request header fields too large",
            ),
            Self::IdempotencyInFlight => (
                S::CONFLICT,
                "/problems/idempotency-key-in-flight",
                "A request with this Idempotency-Key is still in progress",
            ),
            Self::IdempotencyMismatch => (
                S::UNPROCESSABLE_ENTITY,
                "/problems/idempotency-key-reused",
                "Idempotency-Key reused with another body",
            ),
            Self::Unavailable => (
                S::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service temporarily unavailable",
            ),
            Self::Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal server error",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Internal(_) => "an unexpected error occurred".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.describe();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
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

/// The refusals an operation needing permission `P` can meet (401, 403, 503), described
/// once for the OpenAPI document: handlers answer them with `ApiError`.
pub struct Refusals<P>(std::marker::PhantomData<P>);

/// A permission an operation needs, as the 403's description names it.
pub trait Needs {
    const PERMISSION: &'static str;
}

pub enum Read {}
pub enum Admin {}
pub enum Audit {}

impl Needs for Read {
    const PERMISSION: &'static str = "read";
}
impl Needs for Admin {
    const PERMISSION: &'static str = "admin";
}
impl Needs for Audit {
    const PERMISSION: &'static str = "audit";
}

pub type ReadRefusals = Refusals<Read>;
pub type AdminRefusals = Refusals<Admin>;
pub type AuditRefusals = Refusals<Audit>;

impl<P: Needs> utoipa::IntoResponses for Refusals<P> {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
        let problem = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
        };
        let retry_after = HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(0)),
            )
            .description(Some("Seconds to wait before retrying."))
            .build();
        [
            ("401", problem("Missing or invalid token.").build()),
            (
                "403",
                problem(&format!(
                    "The caller lacks the `{}` permission.",
                    P::PERMISSION
                ))
                .build(),
            ),
            (
                "503",
                problem("The database is unavailable, or the service is overloaded.")
                    .header("Retry-After", retry_after)
                    .build(),
            ),
        ]
        .into_iter()
        .map(|(status, response)| (status.to_owned(), response.into()))
        .collect()
    }
}

/// The refusals every ingest can meet, described once for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only described: handlers answer with `ApiError`.
pub enum IngestRefusals {
    #[response(
        status = 401,
        description = "Missing or invalid token.",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "The app may not ingest for this bot.",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    #[response(
        status = 409,
        description = "A request with this `Idempotency-Key` is still running.",
        content_type = "application/problem+json"
    )]
    InFlight(Problem),
    #[response(status = 503, description = "Overloaded, or the database is unavailable; nothing was stored.", content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying.")))]
    Unavailable(Problem),
}
