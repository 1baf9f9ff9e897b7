//! Extractors that answer with our problem+json instead of axum's plain-text rejections.

use crate::auth::{AppRegistry, Caller, token_from_headers};
use crate::error::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use std::sync::Arc;

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<AppRegistry>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let apps = Arc::<AppRegistry>::from_ref(state);
        let verified = match token_from_headers(&parts.headers) {
            Some(token) => apps.verify(token),
            None => Err(crate::auth::AuthFailure::MissingToken),
        };
        verified.map_err(|failure| {
            tracing::info!(reason = failure.reason(), "authentication failed");
            ApiError::Unauthorized
        })
    }
}
