//! TEMPORARY stub; replaced by the real module.
use crate::config::{AppConfig, AuthSettings, Permission};
use axum::http::HeaderMap;
#[derive(Debug)]
pub struct AppRegistry;
impl AppRegistry {
    pub fn from_settings(_auth: &AuthSettings, _apps: &[AppConfig]) -> anyhow::Result<Self> { Ok(Self) }
    pub fn verify(&self, token: &str) -> Result<Caller, AuthFailure> { self.verify_at(token, 0) }
    pub fn verify_at(&self, _token: &str, _now: i64) -> Result<Caller, AuthFailure> { Ok(Caller) }
}
#[derive(Clone, Debug)]
pub struct Caller;
impl Caller {
    pub fn app_id(&self) -> &str { "" }
    pub fn may(&self, _bot_id: &str, _permission: Permission) -> bool { true }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure { #[error("x")] MissingToken }
impl AuthFailure { pub fn reason(self) -> &'static str { "x" } }
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> { headers.get("token").and_then(|v| v.to_str().ok()) }
pub fn issue_token(_app_id: &str, _secret: &[u8], _ttl_seconds: Option<u64>) -> anyhow::Result<String> { Ok(String::new()) }
