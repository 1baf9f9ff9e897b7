//! Who is calling: the token verified into a [`Caller`] (401 with our problem+json), and
//! the read checks every query makes of it.

use crate::auth::{AppRegistry, Caller, token_from_headers};
use crate::config::Permission;
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
            Some(token) => tracing::info_span!("authenticate").in_scope(|| apps.verify(token)),
            None => Err(crate::auth::AuthFailure::MissingToken),
        };
        verified.map_err(|failure| {
            tracing::info!(reason = failure.reason(), "authentication failed");
            crate::metrics::auth_failure(failure.reason());
            ApiError::Unauthorized
        })
    }
}

/// An app without the `read` permission is refused: 403.
pub(super) fn authorize_read_any(caller: &Caller) -> Result<(), ApiError> {
    if caller.has(Permission::Read) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// A conversation of a bot the app cannot read is answered like a missing one: 404.
pub(super) fn authorize_read(caller: &Caller, bot_id: &str) -> Result<(), ApiError> {
    authorize_read_any(caller)?;
    if !caller.serves(bot_id) {
        Err(ApiError::NotFound)
    } else {
        Ok(())
    }
}
