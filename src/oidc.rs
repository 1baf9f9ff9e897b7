//! People's access tokens from the organisation's OpenID Connect provider (SPEC 13): keys
//! found by discovery, cached, fetched again for an unknown `kid` at most once a minute;
//! roles mapped to grants.
//!
//! A fetch runs as a task of its own: a request that asked for it and went away does not
//! cut it short (which would let anyone spend the minute's fetch for nothing), and requests
//! that arrive meanwhile wait for that fetch instead of starting another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use anyhow::{Context, ensure};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::auth::{Access, Actor, AuthFailure, Caller, Grant};
use crate::config::{OidcSettings, Permission};

/// The algorithms people's tokens may be signed with: no HMAC (the key would be public),
/// no `none`.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
/// Key sets are fetched again for an unknown `kid` at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Before any key set was fetched, a failed fetch is tried again this long after it ended.
const FIRST_FETCH_RETRY: Duration = Duration::from_secs(5);
/// A discovery document or key set larger than this is refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// A provider that has not answered within this long is given up on for this fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer tokens are refused before decoding.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The provider people sign in with, and its keys as last fetched. Cheap to clone.
#[derive(Clone)]
pub struct People {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OidcSettings,
    leeway: u64,
    client: reqwest::Client,
    keys: RwLock<KeySet>,
    fetches: Mutex<Fetches>,
    /// Counts finished fetches: requests waiting for one watch it.
    fetched: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    /// Keys without a `kid`.
    unnamed: Vec<DecodingKey>,
    /// The token endpoint's origin, which the console calls.
    token_origin: Option<String>,
}

#[derive(Default)]
struct Fetches {
    in_flight: bool,
    /// When the last fetch ended, successful or not.
    last_ended: Option<Instant>,
    /// When the last fetch an unknown `kid` caused began.
    last_for_unknown_key: Option<Instant>,
    succeeded_once: bool,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    token_endpoint: Option<String>,
}

impl People {
    /// Checks the settings; nothing is fetched yet (see [`People::warm_up`]).
    pub fn new(settings: &OidcSettings, leeway_seconds: u64) -> anyhow::Result<Self> {
        check_provider_url(&settings.issuer).context("auth.oidc.issuer")?;
        ensure!(!settings.audience.is_empty(), "auth.oidc.audience is empty");
        ensure!(
            !settings.client_id.is_empty(),
            "auth.oidc.client_id is empty"
        );
        // Else the console's ID tokens (whose `aud` is the client) would pass as access tokens.
        ensure!(
            settings.audience != settings.client_id,
            "auth.oidc.audience must not be the client_id: the API's own audience is what \
             tells access tokens from the console's ID tokens"
        );
        ensure!(
            !settings.roles_claim.is_empty(),
            "auth.oidc.roles_claim is empty"
        );
        for role in &settings.roles {
            ensure!(
                !role.bots.is_empty() && !role.permissions.is_empty(),
                "auth.oidc.roles: {:?} needs bots and permissions",
                role.value
            );
            ensure!(
                !role.permissions.contains(&Permission::Ingest),
                "auth.oidc.roles: {:?}: people do not ingest; ingest is for apps",
                role.value
            );
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= 3 {
                    attempt.error("too many redirects")
                } else if check_provider_url(attempt.url().as_str()).is_err() {
                    attempt.error("a redirect away from https")
                } else {
                    attempt.follow()
                }
            }))
            .tls_backend_preconfigured(crate::outbound::tls()?)
            .user_agent(concat!("agentassist-hooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the OpenID Connect HTTP client")?;
        let inner = Inner {
            settings: settings.clone(),
            leeway: leeway_seconds,
            client,
            keys: RwLock::default(),
            fetches: Mutex::default(),
            fetched: tokio::sync::watch::Sender::new(0),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.inner.settings
    }

    /// The origins the console calls: the issuer's (discovery), and the token endpoint's
    /// once discovery has named it.
    pub fn console_origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = origin_of(&self.inner.settings.issuer).into_iter().collect();
        if let Some(token) = &self.inner.read_keys().token_origin
            && !origins.contains(token)
        {
            origins.push(token.clone());
        }
        origins
    }

    /// Whether `claims` (read before any check) say the token is the provider's.
    pub fn issued(&self, claims: &Map<String, Value>) -> bool {
        claims.get("iss").and_then(Value::as_str) == Some(self.inner.settings.issuer.as_str())
            && !claims.contains_key("appId")
    }

    /// Fetches the keys once at start, so that the first person does not wait for them;
    /// a provider that is down is only logged (app tokens do not need it).
    pub async fn warm_up(&self) {
        let mut fetched = self.inner.fetched.subscribe();
        {
            let mut fetches = self.inner.lock_fetches();
            if !fetches.in_flight {
                self.start_fetch(&mut fetches);
            }
        }
        let _ = fetched.changed().await;
    }

    /// Verifies a person's access token: the provider's key, `iss`, `aud`, `exp` (required)
    /// and `nbf`; then maps the roles claim to grants.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|error| match error.kind() {
            ErrorKind::Json(_) => AuthFailure::AlgorithmNotAllowed,
            _ => AuthFailure::Malformed,
        })?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }
        // A key named by the token itself would let anyone sign.
        if header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err(AuthFailure::EmbeddedKey);
        }
        if header.crit.is_some() {
            return Err(AuthFailure::CriticalExtension);
        }
        let settings = &self.inner.settings;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.inner.leeway;

        let kid = header.kid.as_deref();
        let claims = match self.check_with_known_keys(token, kid, &validation)? {
            Some(claims) => claims,
            None => {
                self.refetch_for_unknown_key(kid).await;
                self.check_with_known_keys(token, kid, &validation)?
                    .ok_or(AuthFailure::UnknownKey)?
            }
        };
        Ok(self.caller(&claims))
    }

    /// The token's claims if a known key verifies it; `None` when no key of that `kid`
    /// is known.
    fn check_with_known_keys(
        &self,
        token: &str,
        kid: Option<&str>,
        validation: &Validation,
    ) -> Result<Option<Map<String, Value>>, AuthFailure> {
        let keys = self.inner.read_keys();
        let candidates: Vec<&DecodingKey> = match kid {
            Some(kid) => keys.by_kid.get(kid).into_iter().collect(),
            // A provider with one key may leave `kid` out of its tokens.
            None => keys.by_kid.values().chain(&keys.unnamed).collect(),
        };
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut failure = AuthFailure::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => return Ok(Some(data.claims)),
                Err(error) => failure = refusal(error.kind()),
            }
        }
        Err(failure)
    }

    /// Fetches the keys again for a token naming a `kid` not among them, unless one was
    /// fetched for that reason within the minute; waits for a fetch in flight (bounded).
    async fn refetch_for_unknown_key(&self, kid: Option<&str>) {
        let mut fetched = self.inner.fetched.subscribe();
        {
            let mut fetches = self.inner.lock_fetches();
            if kid.is_some_and(|kid| self.inner.read_keys().by_kid.contains_key(kid)) {
                return;
            }
            if !fetches.in_flight {
                let allowed = if fetches.succeeded_once {
                    fetches
                        .last_for_unknown_key
                        .is_none_or(|last| last.elapsed() >= REFETCH_INTERVAL)
                } else {
                    fetches
                        .last_ended
                        .is_none_or(|last| last.elapsed() >= FIRST_FETCH_RETRY)
                };
                if !allowed {
                    return;
                }
                if fetches.succeeded_once {
                    fetches.last_for_unknown_key = Some(Instant::now());
                }
                self.start_fetch(&mut fetches);
            }
        }
        // Discovery, then the key set, each bounded by FETCH_TIMEOUT.
        let _ = tokio::time::timeout(FETCH_TIMEOUT * 2, fetched.changed()).await;
    }

    fn start_fetch(&self, fetches: &mut Fetches) {
        fetches.in_flight = true;
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let outcome = inner.fetch_keys().await;
            inner.finish_fetch(outcome);
        });
    }

    /// The person the claims name, with the grants of their roles.
    fn caller(&self, claims: &Map<String, Value>) -> Caller {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let actor = Actor::Person {
            subject: text("sub").unwrap_or_default(),
            name: text("name").or_else(|| text("preferred_username")),
            email: text("email"),
        };
        let settings = &self.inner.settings;
        let roles = roles_in(claims, &settings.roles_claim);
        let grants = settings
            .roles
            .iter()
            .filter(|role| roles.contains(&role.value.as_str()))
            .map(|role| Grant {
                bots: role.bots.clone(),
                permissions: role.permissions.clone(),
            })
            .collect();
        let exp = claims.get("exp").and_then(Value::as_f64);
        Caller::new(
            Arc::new(Access { actor, grants }),
            exp.map(|exp| exp + self.inner.leeway as f64),
        )
    }
}

impl Inner {
    fn lock_fetches(&self) -> MutexGuard<'_, Fetches> {
        self.fetches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_keys(&self) -> RwLockReadGuard<'_, KeySet> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps what a fetch brought, and tells the requests waiting for it.
    fn finish_fetch(&self, outcome: anyhow::Result<KeySet>) {
        {
            let mut fetches = self.lock_fetches();
            fetches.in_flight = false;
            fetches.last_ended = Some(Instant::now());
            match outcome {
                Ok(keys) => {
                    tracing::info!(
                        issuer = self.settings.issuer,
                        keys = keys.by_kid.len() + keys.unnamed.len(),
                        "fetched the identity provider's keys"
                    );
                    crate::metrics::oidc_key_fetch("ok");
                    fetches.succeeded_once = true;
                    *self
                        .keys
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
                }
                Err(error) => {
                    crate::metrics::oidc_key_fetch("error");
                    tracing::warn!(
                        issuer = self.settings.issuer,
                        error = format!("{error:#}"),
                        "cannot fetch the identity provider's keys; people's tokens signed \
                         with keys not fetched before are refused until they are"
                    );
                }
            }
        }
        self.fetched.send_modify(|count| *count += 1);
    }

    async fn fetch_keys(&self) -> anyhow::Result<KeySet> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .fetch_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await
            .context("discovery")?;
        ensure!(
            discovery.issuer == self.settings.issuer,
            "discovery names the issuer {:?}, not {:?}",
            discovery.issuer,
            self.settings.issuer
        );
        check_provider_url(&discovery.jwks_uri).context("jwks_uri")?;
        let set: JwkSet = self
            .fetch_json(&discovery.jwks_uri)
            .await
            .context("key set")?;
        let mut keys = KeySet {
            token_origin: discovery.token_endpoint.as_deref().and_then(origin_of),
            ..KeySet::default()
        };
        for jwk in &set.keys {
            // Encryption keys and keys of algorithms not accepted are left out.
            if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), key);
                }
                None => keys.unnamed.push(key),
            }
        }
        Ok(keys)
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let mut response = self.client.get(url).send().await?.error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            ensure!(
                body.len() <= MAX_DOCUMENT_BYTES,
                "larger than {MAX_DOCUMENT_BYTES} bytes"
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let origin = url::Url::parse(url).ok()?.origin().ascii_serialization();
    (origin != "null").then_some(origin)
}

/// The values of the roles claim (a list of strings, or one string): the claim of that
/// name, else one found by a dotted path (a claim named by a URL has dots of its own).
fn roles_in<'a>(claims: &'a Map<String, Value>, path: &str) -> Vec<&'a str> {
    let value = claims.get(path).or_else(|| {
        let mut parts = path.split('.');
        let mut value = parts.next().and_then(|first| claims.get(first));
        for part in parts {
            value = value.and_then(|value| value.get(part));
        }
        value
    });
    match value {
        Some(Value::String(role)) => vec![role.as_str()],
        Some(Value::Array(roles)) => roles.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn refusal(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthFailure::MissingExp,
        ErrorKind::MissingRequiredClaim(_) => AuthFailure::InvalidClaim,
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::InvalidAlgorithm => AuthFailure::AlgorithmNotAllowed,
        _ => AuthFailure::Malformed,
    }
}

/// `https://…`, or `http://` on a loopback address (local development).
fn check_provider_url(text: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(text).with_context(|| format!("{text:?} is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    };
    ensure!(
        url.scheme() == "https" || (url.scheme() == "http" && loopback),
        "{text:?} must be https (http only on a loopback address)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_are_found_by_name_or_dotted_path_as_a_list_or_one_value() {
        let claims = json!({
            "groups": ["a", 1, "b"],
            "realm_access": {"roles": ["x"]},
            "role": "single",
            "https://example.com/roles": ["by-url"],
        });
        let claims = claims.as_object().unwrap();
        assert_eq!(roles_in(claims, "groups"), ["a", "b"]);
        assert_eq!(roles_in(claims, "realm_access.roles"), ["x"]);
        assert_eq!(roles_in(claims, "role"), ["single"]);
        assert_eq!(roles_in(claims, "https://example.com/roles"), ["by-url"]);
        assert!(roles_in(claims, "missing.path").is_empty());
    }

    #[test]
    fn a_provider_is_https_or_http_on_loopback() {
        assert!(check_provider_url("https://login.example.com/realms/cc").is_ok());
        assert!(check_provider_url("http://127.0.0.1:8080").is_ok());
        assert!(check_provider_url("http://localhost:8080").is_ok());
        assert!(check_provider_url("http://[::1]:8080").is_ok());
        assert!(check_provider_url("http://login.example.com").is_err());
        assert!(check_provider_url("ftp://127.0.0.1").is_err());
        assert!(check_provider_url("not a url").is_err());
    }
}
