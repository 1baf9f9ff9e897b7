//! Extractors that answer with our problem+json instead of axum's plain-text rejections.

use crate::auth::{AppRegistry, Caller, token_from_headers};
use crate::domain::FieldError;
use crate::error::ApiError;
use axum::extract::{FromRef, FromRequestParts, Path, Query, RawPathParams};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
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
