//! Shared test harness: the real router over a real PostgreSQL (one database per test,
//! from `#[sqlx::test]`, with group commit on as in production), driven with `oneshot`.

use agentassist_hooks::auth::{AppRegistry, issue_token};
use agentassist_hooks::changes::ChangeHub;
use agentassist_hooks::config::{
    AppConfig, AuthSettings, ChangesSettings, GroupCommitSettings, IdempotencySettings, OneOrMany,
    Permission, ServerSettings,
};
use agentassist_hooks::routes::{AppState, router};
use agentassist_hooks::store::{PgStore, SqliteStore, Store};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, SqlitePool};
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
/// An app that may erase (and read) BOT's conversations, and nothing else.
pub const ERASE_APP: &str = "privacy-desk";
pub const ERASE_SECRET: &str = "erase-secret-erase-secret-erase-secret-01";

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
/// a read-only app for BOT, an app for every bot that may ingest and read, and an app that
/// may erase and read BOT's conversations.
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
        app_config(
            ERASE_APP,
            &[ERASE_SECRET],
            &[BOT],
            &[Permission::Erase, Permission::Read],
        ),
    ]
}

/// Defines each listed `async fn name(backend: Backend)` as two tests, `postgres::name`
/// (its own database from `#[sqlx::test]`) and `sqlite::name` (a fresh file), so that one
/// suite runs against both stores.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[sqlx::test(migrations = "migrations/postgres")]
                async fn $test(pool: sqlx::PgPool) {
                    super::$test($crate::common::Backend::Postgres(pool)).await
                }
            )+
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::sqlite().await).await
                }
            )+
        }
    };
}

/// A migrated, empty database of either kind.
pub enum Backend {
    Postgres(PgPool),
    Sqlite(tempfile::TempDir),
}

const SQLITE_FILE: &str = "hooks.db";

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store: Store =
            SqliteStore::open_file(&dir.path().join(SQLITE_FILE), &Default::default())
                .await
                .expect("sqlite opens")
                .into();
        store.migrate().await.expect("sqlite migrates");
        store.close().await;
        Self::Sqlite(dir)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// An app with its own store (and so its own pool), as one replica would have.
    pub async fn app(&self) -> TestApp {
        self.app_with(AuthSettings::default(), ServerSettings::default())
            .await
    }

    pub async fn app_with(&self, auth: AuthSettings, server: ServerSettings) -> TestApp {
        self.app_configured(auth, server, IdempotencySettings::default())
            .await
    }

    pub async fn app_configured(
        &self,
        auth: AuthSettings,
        server: ServerSettings,
        idempotency: IdempotencySettings,
    ) -> TestApp {
        self.app_built(auth, server, idempotency, ChangesSettings::default())
            .await
    }

    /// An app whose live streams have `changes` settings.
    pub async fn app_streaming(&self, auth: AuthSettings, changes: ChangesSettings) -> TestApp {
        self.app_built(auth, ServerSettings::default(), Default::default(), changes)
            .await
    }

    async fn app_built(
        &self,
        auth: AuthSettings,
        server: ServerSettings,
        idempotency: IdempotencySettings,
        changes: ChangesSettings,
    ) -> TestApp {
        let (store, db): (Store, Db) = match self {
            Self::Postgres(pool) => {
                let own_pool = PgPoolOptions::new()
                    .max_connections(8)
                    .connect_lazy_with(pool.connect_options().as_ref().clone());
                (
                    PgStore::with_group_commit(own_pool.clone(), &Default::default()).into(),
                    Db::Postgres(own_pool),
                )
            }
            Self::Sqlite(dir) => {
                let store =
                    SqliteStore::open_file(&dir.path().join(SQLITE_FILE), &Default::default())
                        .await
                        .expect("sqlite opens");
                let pool = store.pool().clone();
                (store.into(), Db::Sqlite(pool))
            }
        };
        TestApp::build(store, db, auth, server, idempotency, changes)
    }
}

enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

pub struct TestApp {
    pub router: Router,
    pub store: Store,
    pub changes: Arc<ChangeHub>,
    db: Db,
    /// What the router was built from, for [`TestApp::rebuilt`].
    state: AppState,
    server: ServerSettings,
}

/// The relay of an app's live streams between replicas; stops when dropped.
pub struct Relay(tokio::task::JoinHandle<()>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TestApp {
    /// An app over the given PostgreSQL pool.
    pub fn new(pool: PgPool) -> Self {
        Self::with(pool, AuthSettings::default(), ServerSettings::default())
    }

    pub fn with(pool: PgPool, auth: AuthSettings, server: ServerSettings) -> Self {
        let store = PgStore::with_group_commit(pool.clone(), &Default::default()).into();
        Self::build(
            store,
            Db::Postgres(pool),
            auth,
            server,
            Default::default(),
            Default::default(),
        )
    }

    /// An app over `store` as `serve` builds it (its deadlines watch its own pool).
    pub fn over_postgres(store: PgStore, server: ServerSettings) -> Self {
        let pool = store.pool().clone();
        Self::build(
            store.into(),
            Db::Postgres(pool),
            AuthSettings::default(),
            server,
            IdempotencySettings::default(),
            ChangesSettings::default(),
        )
    }

    /// An app over the given PostgreSQL pool, grouping appends as `settings` say.
    pub fn with_group_commit(pool: PgPool, settings: &GroupCommitSettings) -> Self {
        let store = PgStore::with_group_commit(pool.clone(), settings).into();
        Self::build(
            store,
            Db::Postgres(pool),
            AuthSettings::default(),
            ServerSettings::default(),
            IdempotencySettings::default(),
            ChangesSettings::default(),
        )
    }

    /// An app over an SQLite store as it is (migrated or not).
    pub fn over_sqlite(store: SqliteStore) -> Self {
        let pool = store.pool().clone();
        Self::build(
            store.into(),
            Db::Sqlite(pool),
            AuthSettings::default(),
            ServerSettings::default(),
            IdempotencySettings::default(),
            ChangesSettings::default(),
        )
    }

    fn build(
        store: Store,
        db: Db,
        auth: AuthSettings,
        server: ServerSettings,
        idempotency: IdempotencySettings,
        changes: ChangesSettings,
    ) -> Self {
        let apps = AppRegistry::from_settings(&auth, &test_apps()).expect("test apps are valid");
        let state = AppState::new(
            store.clone(),
            Arc::new(apps),
            &server,
            &idempotency,
            &changes,
        );
        Self {
            changes: state.changes.clone(),
            router: router(state.clone(), &server),
            store,
            db,
            state,
            server,
        }
    }

    /// The same app with its state changed by `change` (people signing in, the audit log).
    pub fn rebuilt(mut self, change: impl FnOnce(AppState) -> AppState) -> Self {
        self.state = change(self.state);
        self.router = router(self.state.clone(), &self.server);
        self
    }

    /// Starts counting new events into the stats, as `serve` does (looking every 20 ms).
    pub fn count_stats(&self) -> Relay {
        let (store, hub) = (self.store.clone(), self.changes.clone());
        let settings = agentassist_hooks::config::StatsSettings {
            max_lag_seconds: 5,
            poll_interval_ms: 20,
        };
        Relay(tokio::spawn(agentassist_hooks::stats::count(
            store, hub, settings,
        )))
    }

    /// Whether the app is over PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Starts relaying new events to and from the other replicas, as `serve` does.
    pub fn relay(&self) -> Relay {
        let (store, hub) = (self.store.clone(), self.changes.clone());
        Relay(tokio::spawn(async move {
            agentassist_hooks::changes::relay(&store, &hub).await
        }))
    }

    /// Opens the live stream of `bot`, resuming after `last_event_id` if given.
    pub async fn stream(&self, bot: &str, token: &str, last_event_id: Option<&str>) -> SseReader {
        let mut request =
            Request::get(format!("/api/v1/bots/{bot}/changes/stream")).header("token", token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        self.open_stream(request).await
    }

    /// Opens the live stream of `bot` with `?after=`.
    pub async fn stream_after(&self, bot: &str, token: &str, after: &str) -> SseReader {
        let request = Request::get(format!("/api/v1/bots/{bot}/changes/stream?after={after}"))
            .header("token", token);
        self.open_stream(request).await
    }

    async fn open_stream(&self, request: axum::http::request::Builder) -> SseReader {
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "the stream opens");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// A number from SQL that reads the same in both dialects.
    pub async fn count(&self, sql: &'static str) -> i64 {
        match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .expect("count query runs")
    }

    /// Runs one statement, as written, on the app's database.
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.db {
            Db::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Db::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .expect("the statement runs");
    }

    /// Every table of the schema but the migration ledger, as the database lists them.
    pub async fn tables(&self) -> Vec<String> {
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
                         AND table_name <> '_sqlx_migrations'
                     ORDER BY table_name",
                )
                .fetch_all(pool)
                .await
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT name FROM sqlite_master
                     WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
                         AND name <> '_sqlx_migrations'
                     ORDER BY name",
                )
                .fetch_all(pool)
                .await
            }
        }
        .expect("the schema lists its tables")
    }

    /// How many rows of `table` hold `text` anywhere: in any column, inside any JSON.
    pub async fn rows_holding(&self, table: &str, text: &str) -> i64 {
        match &self.db {
            Db::Postgres(pool) => {
                let sql = format!(
                    "SELECT count(*) FROM \"{table}\" AS r WHERE strpos(CAST(r AS TEXT), $1) > 0"
                );
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(text)
                    .fetch_one(pool)
                    .await
            }
            Db::Sqlite(pool) => {
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                        .bind(table)
                        .fetch_all(pool)
                        .await
                        .expect("the table lists its columns");
                let row_text = columns
                    .iter()
                    .map(|column| format!("COALESCE(CAST(\"{column}\" AS TEXT), '')"))
                    .collect::<Vec<_>>()
                    .join(" || ' ' || ");
                let sql =
                    format!("SELECT count(*) FROM \"{table}\" WHERE instr({row_text}, $1) > 0");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(text)
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("the table can be searched")
    }

    /// The columns of `table`, in table order.
    pub async fn columns(&self, table: &str) -> Vec<String> {
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT column_name::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                     ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(pool)
                .await
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(pool)
                    .await
            }
        }
        .expect("the table lists its columns")
    }

    /// Moves the conversations of BOT whose id is `LIKE` the pattern `days` into the past
    /// (their activity; the events keep their times).
    pub async fn backdate(&self, conversations: &str, days: i64) {
        let sql = match &self.db {
            Db::Postgres(_) => format!(
                "UPDATE conversations SET last_event_at = last_event_at - interval '{days} days',
                     started_at = started_at - interval '{days} days',
                     ended_at = ended_at - interval '{days} days'
                 WHERE bot_id = '{BOT}' AND conversation_id LIKE '{conversations}'"
            ),
            Db::Sqlite(_) => {
                let micros = days * 86_400_000_000;
                format!(
                    "UPDATE conversations SET last_event_at = last_event_at - {micros},
                         started_at = started_at - {micros}, ended_at = ended_at - {micros}
                     WHERE bot_id = '{BOT}' AND conversation_id LIKE '{conversations}'"
                )
            }
        };
        self.execute(&sql).await;
    }

    pub async fn event_count(&self) -> i64 {
        self.count("SELECT count(*) FROM events").await
    }

    pub async fn conversation_count(&self) -> i64 {
        self.count("SELECT count(*) FROM conversations").await
    }

    /// Seqs stored for a conversation of BOT, in order.
    pub async fn stored_seqs(&self, conversation: &str) -> Vec<i64> {
        self.stored_events(conversation)
            .await
            .into_iter()
            .map(|(seq, _, _)| seq)
            .collect()
    }

    /// `(seq, participant identity, payload text)` of a conversation of BOT, in order.
    pub async fn stored_events(&self, conversation: &str) -> Vec<(i64, Option<String>, String)> {
        const POSTGRES: &str = "SELECT seq, participant_identity, payload::text FROM events
             WHERE bot_id = $1 AND conversation_id = $2 ORDER BY seq";
        const SQLITE: &str = "SELECT seq, participant_identity, payload FROM events
             WHERE bot_id = $1 AND conversation_id = $2 ORDER BY seq";
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_as(POSTGRES)
                    .bind(BOT)
                    .bind(conversation)
                    .fetch_all(pool)
                    .await
            }
            Db::Sqlite(pool) => {
                sqlx::query_as(SQLITE)
                    .bind(BOT)
                    .bind(conversation)
                    .fetch_all(pool)
                    .await
            }
        }
        .expect("events query runs")
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

pub fn erase_token() -> String {
    issue_token(ERASE_APP, ERASE_SECRET.as_bytes(), Some(300)).unwrap()
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

/// A hooks request for BOT with a valid ingest token and an `Idempotency-Key`.
pub fn keyed_request(key: &str, body: String) -> Request<Body> {
    let mut request = hooks_request(BOT, &ingest_token(), body);
    request.headers_mut().insert(
        "idempotency-key",
        key.parse().expect("a valid header value"),
    );
    request
}

impl TestApp {
    /// A GET answered as its status and raw body text, for byte-for-byte checks that
    /// parsing the JSON would hide.
    pub async fn get_text(&self, path: &str, token: &str) -> (StatusCode, String) {
        let request = Request::get(path)
            .header("token", token)
            .body(Body::empty())
            .unwrap();
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
        )
    }

    /// Posts a hooks body exactly as written, with a valid ingest token for BOT.
    pub async fn post_raw(&self, body: &str) -> TestResponse {
        self.send(hooks_request(BOT, &ingest_token(), body.to_owned()))
            .await
    }
}

/// A message of a Server-Sent Events stream: a comment has only `comment`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl SseMessage {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("an item is JSON")
    }
}

/// Reads a `text/event-stream` body message by message, as the client reads it.
pub struct SseReader {
    body: Body,
    buffer: String,
}

impl SseReader {
    /// The next message, comments included; `None` once the stream has ended.
    pub async fn next_message(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_sse(&block));
            }
            let frame = self.body.frame().await?.expect("the stream reads");
            if let Ok(data) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&data).expect("UTF-8"));
            }
        }
    }

    /// The next `change` item, skipping comments (the opening and heartbeats).
    pub async fn next_change(&mut self) -> Option<SseMessage> {
        loop {
            let message = self.next_message().await?;
            if message.comment.is_none() {
                return Some(message);
            }
        }
    }

    /// As [`SseReader::next_change`], failing the test after `seconds`.
    pub async fn expect_change(&mut self, seconds: u64) -> SseMessage {
        tokio::time::timeout(std::time::Duration::from_secs(seconds), self.next_change())
            .await
            .expect("an item arrives in time")
            .expect("the stream is still open")
    }
}

fn parse_sse(block: &str) -> SseMessage {
    let mut message = SseMessage::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            message.comment = Some(comment.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => message.id = Some(value.to_owned()),
                "event" => message.event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
    }
    message.data = data.join("\n");
    message
}

/// A port nothing listens on right now, for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn conversation_path(conversation: &str) -> String {
    format!("/api/v1/bots/{BOT}/conversations/{conversation}")
}

/// Posts `events` to `conversation`, which must be answered 200.
pub async fn post(app: &TestApp, conversation: &str, events: Vec<Value>) {
    let response = app.post_events(BOT, &batch(conversation, events)).await;
    assert_eq!(response.status, 200, "{}", response.body);
}

/// The URL of the per-test database, from the server in `DATABASE_URL`.
pub fn test_database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL names the test server");
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{database}")
}
