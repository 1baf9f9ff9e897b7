//! Who is calling: the token verified into a [`Caller`] (401 with our problem+json), and
//! the read checks every query makes of it.

use super::AppState;
use crate::auth::{AuthFailure, Caller, token_from_headers};
use crate::config::Permission;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::{Map, Value};

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let verified = match token_from_headers(&parts.headers) {
            Some(token) => {
                use tracing::Instrument;
                authenticate(state, token)
                    .instrument(tracing::info_span!("authenticate"))
                    .await
            }
            None => Err(AuthFailure::MissingToken),
        };
        let caller = verified.map_err(|failure| {
            tracing::info!(reason = failure.reason(), "authentication failed");
            crate::metrics::auth_failure(failure.reason());
            ApiError::Unauthorized
        })?;
        tracing::Span::current().record("actor", caller.actor().label());
        if let Some(seen) = parts.extensions.get::<crate::audit::Seen>() {
            seen.caller(&caller);
        }
        Ok(caller)
    }
}

/// A person's token when its issuer is the identity provider's (and it names no app); an
/// app's otherwise.
async fn authenticate(state: &AppState, token: &str) -> Result<Caller, AuthFailure> {
    if let Some(people) = &state.people {
        let claims: Option<Map<String, Value>> =
            jsonwebtoken::dangerous::insecure_decode_claims(token).ok();
        if claims.is_some_and(|claims| people.issued(&claims)) {
            return people.verify(token).await;
        }
    }
    state.apps.verify(token)
}

/// A caller without the `read` permission is refused: 403.
pub(super) fn authorize_read_any(caller: &Caller) -> Result<(), ApiError> {
    if caller.has(Permission::Read) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// A conversation of a bot the caller cannot read is answered like a missing one: 404.
pub(super) fn authorize_read(caller: &Caller, bot_id: &str) -> Result<(), ApiError> {
    authorize_read_any(caller)?;
    if !caller.may(bot_id, Permission::Read) {
        Err(ApiError::NotFound)
    } else {
        Ok(())
    }
}
