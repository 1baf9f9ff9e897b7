//! A configured webhook endpoint, checked and ready to deliver to: its URL (SPEC 12's
//! target rules), its secrets, and the HTTP client that reaches it.

use super::signature::Secret;
use super::target::{AllowedHosts, CheckedResolver, check_url};
use crate::config::{WebhookConfig, read_secrets};
use anyhow::{Context, bail, ensure};
use std::sync::Arc;
use std::time::Duration;

/// The longest attempt.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest wait between two attempts.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A webhook endpoint as delivery uses it.
#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    pub url: url::Url,
    pub secrets: Vec<Secret>,
    /// `None`: every bot.
    pub bots: Option<Vec<String>>,
    pub events: bool,
    pub erasures: bool,
    /// Start a new endpoint at the feed's end (`now`) rather than its beginning.
    pub start_now: bool,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub client: reqwest::Client,
}

impl Endpoint {
    /// Checks `config` (name, URL, kinds, schedule) and reads its secrets; the error names
    /// the endpoint and never a secret.
    pub fn from_config(config: &WebhookConfig, allowed: &AllowedHosts) -> anyhow::Result<Self> {
        let name = &config.name;
        ensure!(
            (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'),
            "webhook {name:?}: a name is 1 to 64 of a-z, 0-9 and -"
        );
        let url = url::Url::parse(&config.url)
            .with_context(|| format!("webhook {name}: url is not a URL"))?;
        check_url(&url, allowed).map_err(|why| anyhow::anyhow!("webhook {name}: url {why}"))?;
        let owner = format!("webhook {name}");
        let secrets = read_secrets(&owner, &config.secret_env, &config.secret_file)?
            .iter()
            .map(|secret| {
                let text = std::str::from_utf8(secret).unwrap_or("");
                Secret::parse(text).map_err(|why| anyhow::anyhow!("{owner}: a secret {why}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(
            !secrets.is_empty(),
            "{owner} has no secret: set secret_env or secret_file"
        );
        ensure!(
            !config.bots.is_empty(),
            "{owner}: bots is empty (a bot id, or \"*\")"
        );
        ensure!(
            !config.kinds.is_empty(),
            "{owner}: kinds is empty (leave it out for both kinds)"
        );
        for kind in &config.kinds {
            ensure!(
                WebhookConfig::KINDS.contains(&kind.as_str()),
                "{owner}: kinds: {kind:?} is none of {:?}",
                WebhookConfig::KINDS
            );
        }
        let start_now = match config.start.as_str() {
            "now" => true,
            "oldest" => false,
            other => bail!("{owner}: start is {other:?}: \"now\" or \"oldest\""),
        };
        ensure!(
            (1..=1024).contains(&config.max_in_flight),
            "{owner}: max_in_flight is 1 to 1024"
        );
        let timeout = seconds(config.timeout_seconds)
            .filter(|timeout| !timeout.is_zero() && *timeout <= MAX_TIMEOUT)
            .with_context(|| format!("{owner}: timeout_seconds is more than 0 and at most 3600"))?;
        let retry_schedule = config
            .retry_schedule_seconds
            .iter()
            .map(|wait| seconds(*wait).filter(|wait| *wait <= MAX_RETRY_WAIT))
            .collect::<Option<Vec<_>>>()
            .with_context(|| {
                format!(
                    "{owner}: retry_schedule_seconds holds waits of 0 to 604800 seconds (a week)"
                )
            })?;
        Ok(Self {
            name: name.clone(),
            client: client(allowed, timeout)?,
            url,
            secrets,
            bots: (!config.bots.iter().any(|bot| bot == "*")).then(|| config.bots.clone()),
            events: config.kinds.iter().any(|kind| kind == "event"),
            erasures: config
                .kinds
                .iter()
                .any(|kind| kind == "conversation.erased"),
            start_now,
            max_in_flight: config.max_in_flight,
            timeout,
            retry_schedule,
        })
    }

    /// Checks every configured endpoint, and that names are unique.
    pub fn all(
        configs: &[WebhookConfig],
        allow_hosts: &[String],
    ) -> anyhow::Result<Vec<Arc<Self>>> {
        let allowed = AllowedHosts::new(allow_hosts);
        let mut endpoints: Vec<Arc<Self>> = Vec::new();
        for config in configs {
            ensure!(
                endpoints
                    .iter()
                    .all(|endpoint| endpoint.name != config.name),
                "webhook {} is configured twice",
                config.name
            );
            endpoints.push(Arc::new(Self::from_config(config, &allowed)?));
        }
        Ok(endpoints)
    }

    pub fn subscribes_to(&self, bot_id: &str) -> bool {
        self.bots
            .as_ref()
            .is_none_or(|bots| bots.iter().any(|bot| bot == bot_id))
    }
}

fn seconds(value: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value).ok()
}

/// No proxy (it would connect where the resolver did not check), no redirects, the
/// attempt's timeout, rustls with the public CA roots built in.
fn client(allowed: &AllowedHosts, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let tls = crate::outbound::tls()?;
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .dns_resolver(Arc::new(CheckedResolver {
            allowed: allowed.clone(),
        }))
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("agentassist-hooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the webhook HTTP client")
}
