//! The ops console (SPEC 9): static files built into the binary from `console/public/`,
//! served under `/console/` with a strict Content-Security-Policy. The page signs people in
//! through the identity provider (SPEC 13), or with a read token pasted, and calls the query
//! API itself; nothing here needs a token.

use super::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

/// Every file of `console/public/`, by its path under `/console/` (written by `build.rs`).
const ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Scripts, styles and connections from this origin only (and the identity provider's, for
/// its discovery document and token endpoint); no inline script or style, no plugins, no
/// framing, no forms posting elsewhere.
pub fn content_security_policy(provider_origins: &[String]) -> String {
    let connect = std::iter::once("'self'")
        .chain(provider_origins.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; font-src 'self'; manifest-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

/// What the console's "Sign in with …" needs to know of the identity provider.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignInSettings {
    issuer: String,
    client_id: String,
    scopes: Vec<String>,
    /// "Sign in with {name}".
    name: String,
}

/// `GET /console/sign-in.json`: the provider people sign in with; 404 when there is none.
pub async fn sign_in(State(state): State<AppState>) -> Result<Json<SignInSettings>, ApiError> {
    let settings = state.people.as_ref().ok_or(ApiError::NotFound)?.settings();
    let name = settings.name.clone().unwrap_or_else(|| {
        url::Url::parse(&settings.issuer)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| settings.issuer.clone())
    });
    Ok(Json(SignInSettings {
        issuer: settings.issuer.clone(),
        client_id: settings.client_id.clone(),
        scopes: settings.scopes.clone(),
        name,
    }))
}

/// `/console` → `/console/`, so that the page's relative URLs resolve under it.
pub async fn root() -> Redirect {
    Redirect::permanent("/console/")
}

pub async fn index(State(state): State<AppState>) -> Response {
    asset(&state, "index.html")
}

pub async fn file(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    asset(&state, &path)
}

fn asset(state: &AppState, path: &str) -> Response {
    let Some((_, bytes)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return ApiError::NotFound.into_response();
    };
    let provider_origins = state
        .people
        .as_ref()
        .map(|people| people.console_origins())
        .unwrap_or_default();
    let policy = HeaderValue::from_str(&content_security_policy(&provider_origins))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            ),
            (header::CONTENT_SECURITY_POLICY, policy),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // The files change with the binary: a browser checks before reusing one.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        *bytes,
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_and_every_script_are_built_in_with_their_types() {
        assert!(ASSETS.iter().any(|(name, _)| *name == "index.html"));
        for (name, _) in ASSETS {
            assert_ne!(
                content_type(name),
                "application/octet-stream",
                "console/public/{name} would be served without a known type"
            );
        }
    }
}
