//! Typed settings: `config/default.toml`, then an optional file, then `HOOKS__…` env vars.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything the service reads at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub idempotency: IdempotencySettings,
    #[serde(default)]
    pub changes: ChangesSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub stats: StatsSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Endpoints the change feed is pushed to (SPEC 12).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Hosts a webhook may reach although they are private, loopback or link-local, or
    /// over `http` (SPEC 12): a receiver inside the cluster, or a test's.
    #[serde(default)]
    pub webhook_allow_hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// Largest accepted request body (SPEC 1.4).
    pub body_limit_bytes: usize,
    /// Requests handled at once; more are shed with 503.
    pub concurrency_limit: usize,
    pub request_timeout_seconds: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_seconds: u64,
    /// Client connections held open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request head must arrive whole within this long of the connection opening or of
    /// its previous response (so it is also how long an idle keep-alive connection lasts).
    pub header_read_timeout_seconds: u64,
    /// A response the client reads nothing of for this long is abandoned.
    pub write_timeout_seconds: u64,
    /// Serve `GET /metrics` (unauthenticated: keep it off the public network).
    pub metrics: bool,
    /// Origins whose browser pages may call the API (the agent desktop's CRM integration);
    /// none by default.
    pub cors_origins: Vec<String>,
    /// Proxies in front of the service (addresses or networks, `10.0.0.0/8`) whose
    /// `X-Forwarded-For` names the client in the audit log; none by default.
    pub trusted_proxies: Vec<String>,
}

impl ServerSettings {
    /// Refuses settings that would only fail later: origins that are not
    /// `scheme://host[:port]`.
    pub fn check(&self) -> anyhow::Result<()> {
        for origin in &self.cors_origins {
            anyhow::ensure!(
                is_origin(origin),
                "server.cors_origins: {origin:?} is not an origin (scheme://host[:port])"
            );
        }
        Ok(())
    }
}

/// `scheme://host[:port]`, nothing after it but an optional `/`.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 256 * 1024,
            concurrency_limit: 512,
            request_timeout_seconds: 30,
            shutdown_timeout_seconds: 30,
            max_connections: 10_000,
            header_read_timeout_seconds: 10,
            write_timeout_seconds: 30,
            metrics: true,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…`; `DATABASE_URL` overrides it.
    #[serde(skip_serializing)]
    pub url: Option<SecretString>,
    pub max_connections: u32,
    pub acquire_timeout_seconds: u64,
    /// At start, how long to keep trying a database that cannot be reached (or whose
    /// certificate fails verification) before giving up with its last error.
    pub connect_timeout_seconds: u64,
    /// PostgreSQL: an append (or a group of them) the database has not finished within this
    /// many milliseconds is abandoned, its requests answered 503 and its connection closed
    /// with every connection opened before it: after a failover or a lost link a socket can
    /// stay open and never answer again.
    pub write_timeout_ms: u64,
    /// PostgreSQL: as `write_timeout_ms`, for a read, in seconds.
    pub read_timeout_seconds: u64,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// PostgreSQL: appends that arrive together share one transaction.
    pub group_commit: GroupCommitSettings,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            acquire_timeout_seconds: 5,
            connect_timeout_seconds: 60,
            write_timeout_ms: 2000,
            read_timeout_seconds: 15,
            migrate_on_start: true,
            group_commit: GroupCommitSettings::default(),
        }
    }
}

/// Group commit (PostgreSQL): the appends waiting when a writer is free are written in one
/// transaction, with a few statements for all of them, and each answered when it commits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupCommitSettings {
    /// Off: every append is a transaction of its own.
    pub enabled: bool,
    /// Transactions of grouped appends running at once (each holds one connection).
    pub writers: usize,
    /// The most appends in one transaction.
    pub max_batch: usize,
    /// How long a writer waits for more appends after the first, in microseconds; 0 takes
    /// only those already waiting (a group forms while the other writers are busy).
    pub window_us: u64,
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            writers: 4,
            max_batch: 64,
            window_us: 0,
        }
    }
}

/// JWT rules shared by every app (SPEC 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Accepted signature algorithms: any of `HS256`, `HS384`, `HS512`.
    pub algorithms: Vec<String>,
    pub leeway_seconds: u64,
    pub require_exp: bool,
    pub max_token_age_seconds: Option<u64>,
    /// People signing in through the organisation's identity provider (SPEC 13).
    pub oidc: Option<OidcSettings>,
}

/// The OpenID Connect provider people sign in with, and what their roles grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// `https://…`, or `http://` on a loopback address for local development.
    pub issuer: String,
    /// What an access token's `aud` must hold.
    pub audience: String,
    /// The console's client (public: no secret).
    pub client_id: String,
    /// Shown on the console's button: "Sign in with {name}"; the issuer's host when unset.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "OidcSettings::default_scopes")]
    pub scopes: Vec<String>,
    /// The claim holding a person's roles or groups; a dotted path reaches into objects
    /// (`realm_access.roles` for Keycloak's realm roles).
    #[serde(default = "OidcSettings::default_roles_claim")]
    pub roles_claim: String,
    #[serde(default)]
    pub roles: Vec<RoleMapping>,
}

impl OidcSettings {
    fn default_scopes() -> Vec<String> {
        ["openid", "profile", "email"].map(str::to_owned).to_vec()
    }

    fn default_roles_claim() -> String {
        "groups".to_owned()
    }
}

/// What one value of the roles claim grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    pub value: String,
    /// Bot ids, or `["*"]`.
    pub bots: Vec<String>,
    pub permissions: Vec<Permission>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".to_owned()],
            leeway_seconds: 60,
            require_exp: false,
            max_token_age_seconds: None,
            oidc: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".to_owned(),
        }
    }
}

/// Operations metrics (SPEC 11).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsSettings {
    /// A stats answer waits at most this long for the worker to count every event
    /// committed before the request; it says how far it got in `asOf`.
    pub max_lag_seconds: u64,
    /// How often the worker looks for new events when no wake-up came.
    pub poll_interval_ms: u64,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self {
            max_lag_seconds: 5,
            poll_interval_ms: 1000,
        }
    }
}

/// Traces (SPEC 14).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP collector's base URL (`/v1/traces` is added); the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` overrides it. Unset: no traces are exported.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long an `Idempotency-Key` is remembered (SPEC: at least 24 h).
    pub retention_seconds: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            retention_seconds: 24 * 60 * 60,
        }
    }
}

/// The live change stream (SPEC 8).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangesSettings {
    /// Streams open at once on this instance; more are refused with 503.
    pub max_streams: usize,
    /// How often an open stream looks for new events when no wake-up came (a wake-up is
    /// missed only when a notification is lost, or a long transaction held events back).
    pub poll_interval_ms: u64,
    /// A stream whose reader takes nothing for this long, with its buffer full, is closed;
    /// the reader reconnects and resumes.
    pub slow_reader_seconds: u64,
}

impl Default for ChangesSettings {
    fn default() -> Self {
        Self {
            max_streams: 1000,
            poll_interval_ms: 500,
            slow_reader_seconds: 10,
        }
    }
}

/// How long conversations are kept (SPEC 10).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Conversations ended, or idle (nobody present), with no event for this many days
    /// are deleted with everything they hold; `None` (the default) keeps them forever.
    pub ended_days: Option<u32>,
    /// How long an erasure's tombstone stays in the change feed, so that consumers that
    /// were away learn of it; it holds the conversation's id and the time, nothing else.
    pub tombstone_days: u32,
    /// How often each replica looks for conversations past the limit.
    pub purge_interval_seconds: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            ended_days: None,
            tombstone_days: 30,
            purge_interval_seconds: 600,
        }
    }
}

/// The audit log of reads (SPEC 13).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Record every read of conversation data.
    pub enabled: bool,
    /// Records older than this are deleted.
    pub retention_days: u32,
}

impl AuditSettings {
    /// Refuses a retention that would delete every record at once, or reach past the
    /// calendar (100 years is the most).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=36_500).contains(&self.retention_days),
            "audit.retention_days must be from 1 to 36500, not {}",
            self.retention_days
        );
        Ok(())
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 365,
        }
    }
}

/// What an app may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Ingest,
    Read,
    /// Delete a conversation and everything it holds (SPEC 10); in no app unless configured.
    Erase,
    /// See how the webhooks are doing (SPEC 12).
    Admin,
    /// Read the audit log of who read what (SPEC 13).
    Audit,
}

/// One value or a list: a list of secrets rotates keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values, without cloning them.
    pub fn items(setting: &Option<Self>) -> &[T] {
        match setting {
            None => &[],
            Some(Self::One(value)) => std::slice::from_ref(value),
            Some(Self::Many(values)) => values,
        }
    }
}

/// The secrets named by env vars, then those in files (without a trailing newline); an
/// error names `owner` and the var or file, never a value.
pub fn read_secrets(
    owner: &str,
    env: &Option<OneOrMany<String>>,
    file: &Option<OneOrMany<PathBuf>>,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut secrets = Vec::new();
    for name in OneOrMany::items(env) {
        // Matched by hand: `VarError`'s own message would include the value.
        let value = match std::env::var(name) {
            Ok(value) if !value.is_empty() => value,
            Ok(_) => anyhow::bail!("{owner}: env var {name} is empty"),
            Err(std::env::VarError::NotPresent) => {
                anyhow::bail!("{owner}: env var {name} is not set")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("{owner}: env var {name} is not UTF-8")
            }
        };
        secrets.push(value.into_bytes());
    }
    for path in OneOrMany::items(file) {
        let mut bytes = std::fs::read(path).map_err(|error| {
            anyhow::anyhow!(
                "{owner}: cannot read secret file {}: {error}",
                path.display()
            )
        })?;
        let end = bytes
            .iter()
            .rposition(|byte| !matches!(byte, b'\n' | b'\r'))
            .map_or(0, |last| last + 1);
        bytes.truncate(end);
        anyhow::ensure!(
            !bytes.is_empty(),
            "{owner}: secret file {} is empty",
            path.display()
        );
        secrets.push(bytes);
    }
    Ok(secrets)
}

/// A calling app (the vendor's Client ID) and where its secrets come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub app_id: String,
    /// Names of env vars holding secrets.
    #[serde(default)]
    pub secret_env: Option<OneOrMany<String>>,
    /// Files holding secrets (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<OneOrMany<PathBuf>>,
    /// Literal secrets: local development only, warned about at start.
    #[serde(default, skip_serializing)]
    pub secret: Option<OneOrMany<SecretString>>,
    /// Bot ids this app may use, or `["*"]`.
    pub bots: Vec<String>,
    pub permissions: Vec<Permission>,
}

/// A subscriber to the change feed (SPEC 12).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// 1–64 of `[a-z0-9-]`: how the endpoint is named in the CLI, the API and metrics.
    pub name: String,
    pub url: String,
    /// Names of env vars holding secrets (`whsec_` + base64); a list rotates them.
    #[serde(default)]
    pub secret_env: Option<OneOrMany<String>>,
    /// Files holding secrets (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<OneOrMany<PathBuf>>,
    /// Bot ids whose feeds are pushed, or `["*"]`.
    pub bots: Vec<String>,
    /// Feed item kinds pushed: `event`, `conversation.erased`; all when unset.
    #[serde(default = "WebhookConfig::all_kinds")]
    pub kinds: Vec<String>,
    /// Where a new endpoint starts in the feed: `now` or `oldest`.
    #[serde(default = "WebhookConfig::default_start")]
    pub start: String,
    /// Conversations delivered in parallel.
    #[serde(default = "WebhookConfig::default_max_in_flight")]
    pub max_in_flight: usize,
    /// An attempt not answered within this long failed.
    #[serde(default = "WebhookConfig::default_timeout")]
    pub timeout_seconds: f64,
    /// Waits after each failed attempt (jittered by ±20 %); a failure after the last
    /// disables the endpoint. Fractions of a second are allowed (tests compress them).
    #[serde(default = "WebhookConfig::default_retry_schedule")]
    pub retry_schedule_seconds: Vec<f64>,
}

impl WebhookConfig {
    pub const KINDS: [&str; 2] = ["event", "conversation.erased"];

    fn all_kinds() -> Vec<String> {
        Self::KINDS.map(str::to_owned).to_vec()
    }

    fn default_start() -> String {
        "now".to_owned()
    }

    fn default_max_in_flight() -> usize {
        16
    }

    fn default_timeout() -> f64 {
        15.0
    }

    fn default_retry_schedule() -> Vec<f64> {
        vec![5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    }
}

/// The config file read first, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

impl Settings {
    /// Layers `config/default.toml` (if present), `extra_file`, then `HOOKS__SECTION__KEY`
    /// env vars and `DATABASE_URL`.
    pub fn load(extra_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(DEFAULT_CONFIG_FILE));
        if let Some(path) = extra_file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut settings: Settings = figment
            .merge(Env::prefixed("HOOKS__").split("__"))
            .extract()
            .map_err(|error| anyhow::anyhow!("invalid configuration: {error}"))?;
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            settings.database.url = Some(url.into());
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are the `Default` impls above; `config/default.toml` shows them to
    /// operators, and must say the same.
    #[test]
    fn the_default_file_says_what_the_defaults_are() {
        let from_file: Settings = Figment::from(Toml::file_exact(DEFAULT_CONFIG_FILE))
            .extract()
            .expect("config/default.toml reads as settings");
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(Settings::default()).unwrap()
        );
    }
}
