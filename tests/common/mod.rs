//! Shared test harness: the real router over a real PostgreSQL (one database per test,
//! from `#[sqlx::test]`), driven with `oneshot`.
#![allow(dead_code)]

use agentassist_hooks::auth::{AppRegistry, issue_token};
use agentassist_hooks::config::{AppConfig, AuthSettings, OneOrMany, Permission, ServerSettings};
use agentassist_hooks::routes::{AppState, router};
use agentassist_hooks::store::PgStore;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
use tower::ServiceExt;

pub const BOT: &str = "st-1234";
pub const OTHER_BOT: &str = "st-9999";
/// The vendor documentation's Client ID.
pub const INGEST_APP: &str = "cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e";
pub const INGEST_SECRET: &str = "ingest-secret-ingest-secret-0123456789";
pub const ROTATED_SECRET: &str = "rotated-secret-rotated-secret-0123456789";
pub const READ_APP: &str = "ops-dashboard";
pub const READ_SECRET: &str = "read-secret-read-secret-read-secret-0123";
pub const WILDCARD_APP: &str = "all-bots";
pub const WILDCARD_SECRET: &str = "wildcard-secret-wildcard-secret-012345";

pub fn app_config(
    app_id: &str,
    secrets: &[&str],
    bots: &[&str],
    permissions: &[Permission],
) -> AppConfig {
    AppConfig {
        app_id: app_id.to_owned(),
        secret_env: None,
        secret_file: None,
        secret: Some(OneOrMany::Many(
            secrets
                .iter()
                .map(|secret| (*secret).to_owned().into())
                .collect(),
        )),
        bots: bots.iter().map(|bot| (*bot).to_owned()).collect(),
        permissions: permissions.to_vec(),
    }
}

/// The apps every test app knows: an ingest app for BOT (with a rotated second secret),
/// a read-only app for BOT and an app for every bot with both permissions.
pub fn test_apps() -> Vec<AppConfig> {
    vec![
        app_config(
            INGEST_APP,
            &[INGEST_SECRET, ROTATED_SECRET],
            &[BOT],
            &[Permission::Ingest],
        ),
        app_config(READ_APP, &[READ_SECRET], &[BOT], &[Permission::Read]),
        app_config(
            WILDCARD_APP,
            &[WILDCARD_SECRET],
            &["*"],
            &[Permission::Ingest, Permission::Read],
        ),
    ]
}

pub struct TestApp {
    pub router: Router,
    pub pool: PgPool,
}

impl TestApp {
    pub fn new(pool: PgPool) -> Self {
        Self::with(pool, AuthSettings::default(), ServerSettings::default())
    }

    pub fn with(pool: PgPool, auth: AuthSettings, server: ServerSettings) -> Self {
        let apps = AppRegistry::from_settings(&auth, &test_apps()).expect("test apps are valid");
        let state = AppState {
            store: Arc::new(PgStore::from_pool(pool.clone())),
            apps: Arc::new(apps),
            body_limit_bytes: server.body_limit_bytes,
        };
        Self {
            router: router(state, &server),
            pool,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// Posts `body` to the canonical hooks path for `bot` with a valid ingest token.
    pub async fn post_events(&self, bot: &str, body: &Value) -> TestResponse {
        self.send(hooks_request(bot, &ingest_token(), body.to_string()))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        let request = Request::get(path)
            .header("token", token)
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// The problem+json `errors[].path` values.
    pub fn error_paths(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|error| error["path"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "problem responses are problem+json"
        );
        assert_eq!(self.body["status"], status);
        assert_eq!(self.body["code"], status);
        assert!(
            self.body["type"]
                .as_str()
                .unwrap()
                .starts_with("/problems/")
        );
        assert_eq!(self.body["detail"], self.body["message"]);
    }
}

pub fn hooks_request(bot: &str, token: &str, body: String) -> Request<Body> {
    Request::post(format!("/agentassist/api/v1/hooks/{bot}"))
        .header("content-type", "application/json")
        .header("token", token)
        .body(Body::from(body))
        .unwrap()
}

pub fn ingest_token() -> String {
    issue_token(INGEST_APP, INGEST_SECRET.as_bytes(), Some(300)).unwrap()
}

pub fn read_token() -> String {
    issue_token(READ_APP, READ_SECRET.as_bytes(), Some(300)).unwrap()
}

pub fn wildcard_token() -> String {
    issue_token(WILDCARD_APP, WILDCARD_SECRET.as_bytes(), Some(300)).unwrap()
}

/// One INTERNAL_TRANSFER_EVENT as the vendor's JavaScript sample builds it.
pub fn transfer(transfer_type: &str, transition: &str, agent: &str) -> Value {
    json!({
        "name": "INTERNAL_TRANSFER_EVENT",
        "transfertype": transfer_type,
        "transition": transition,
        "isExtAD": true,
        "language": "en",
        "experience": "voice",
        "participant": { "identity": agent, "name": format!("Name of {agent}"), "type": "agent" }
    })
}

pub fn batch(conversation: &str, events: Vec<Value>) -> Value {
    json!({ "conversationId": conversation, "botId": BOT, "events": events })
}

/// Seqs stored for a conversation, in order.
pub async fn stored_seqs(pool: &PgPool, conversation: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM events WHERE conversation_id = $1 ORDER BY seq")
        .bind(conversation)
        .fetch_all(pool)
        .await
        .unwrap()
}

pub async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}
