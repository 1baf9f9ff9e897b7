//! The app registry and JWT verification (SPEC 2): which app is calling, and may it?

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{AppConfig, AuthSettings, OneOrMany, Permission};

/// Numeric dates above this are milliseconds (10^11 seconds is the year 5138).
const MILLISECONDS_ABOVE: f64 = 1e11;
/// Shorter secrets are warned about: below the HS256 output size they weaken the MAC.
const MIN_SECRET_BYTES: usize = 32;
/// Longer tokens are refused before decoding, bounding the work an anonymous caller can cause.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The configured apps and the JWT rules, resolved once at start.
#[derive(Debug)]
pub struct AppRegistry {
    apps: HashMap<String, RegisteredApp>,
    algorithms: Vec<Algorithm>,
    leeway: f64,
    require_exp: bool,
    max_token_age: Option<f64>,
}

#[derive(Debug)]
struct RegisteredApp {
    /// More than one while a secret is being rotated.
    keys: Vec<DecodingKey>,
    access: Arc<Access>,
}

/// Who is calling and what they may do: shared by every [`Caller`] of an app, built per
/// token for a person.
#[derive(Debug)]
pub struct Access {
    pub actor: Actor,
    /// A permission holds for a bot when one grant names both: a person's roles each
    /// grant their own permissions on their own bots, never across.
    pub grants: Vec<Grant>,
}

/// Who a caller is, as the audit log and the log lines name them (SPEC 13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    App {
        id: String,
    },
    Person {
        subject: String,
        name: Option<String>,
        email: Option<String>,
    },
}

impl Actor {
    /// `app:<appId>` or `user:<sub>`.
    pub fn label(&self) -> String {
        match self {
            Self::App { id } => format!("app:{id}"),
            Self::Person { subject, .. } => format!("user:{subject}"),
        }
    }
}

/// Permissions on bots (`"*"` for every bot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub bots: Vec<String>,
    pub permissions: Vec<Permission>,
}

impl Grant {
    fn allows(&self, bot_id: &str, permission: Permission) -> bool {
        self.permissions.contains(&permission)
            && self.bots.iter().any(|bot| bot == "*" || bot == bot_id)
    }
}

impl AppRegistry {
    /// Resolves every app's secrets (env vars, files with trailing newline trimmed, literal
    /// secrets) at start.
    ///
    /// Errors, naming the app id and the env var or file but never a secret, when an app has
    /// no secret, a named env var is unset or empty, a file is unreadable or empty, two apps
    /// share an `app_id`, an app has no bots or no permissions, or the algorithm list is empty
    /// or names anything but HS256, HS384 or HS512 (case-insensitive).
    ///
    /// Logs a warning, naming the app id only, for each literal `secret` and for each secret
    /// shorter than 32 bytes.
    pub fn from_settings(auth: &AuthSettings, apps: &[AppConfig]) -> anyhow::Result<Self> {
        ensure!(
            !auth.algorithms.is_empty(),
            "auth.algorithms is empty: list at least one of HS256, HS384, HS512"
        );
        let algorithms = auth
            .algorithms
            .iter()
            .map(|name| parse_algorithm(name))
            .collect::<anyhow::Result<Vec<_>>>()?;

        let mut registered = HashMap::with_capacity(apps.len());
        for app in apps {
            let id = &app.app_id;
            ensure!(!id.is_empty(), "an app has an empty app_id");
            ensure!(!registered.contains_key(id), "app {id} is configured twice");
            ensure!(
                !app.bots.is_empty(),
                "app {id} has no bots: list bot ids or \"*\""
            );
            ensure!(
                !app.permissions.is_empty(),
                "app {id} has no permissions: list \"ingest\", \"read\" and/or \"erase\""
            );
            let access = Access {
                actor: Actor::App { id: id.clone() },
                grants: vec![Grant {
                    bots: app.bots.clone(),
                    permissions: app.permissions.clone(),
                }],
            };
            let app = RegisteredApp {
                keys: load_keys(app)?,
                access: Arc::new(access),
            };
            registered.insert(id.clone(), app);
        }

        Ok(Self {
            apps: registered,
            algorithms,
            leeway: auth.leeway_seconds as f64,
            require_exp: auth.require_exp,
            max_token_age: auth.max_token_age_seconds.map(|seconds| seconds as f64),
        })
    }

    /// Verifies `token` against the clock now.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthFailure> {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        self.verify_at(token, now)
    }

    /// Verifies `token` as if the time were `now` (unix seconds): the testable core. The
    /// crate decodes the header and checks the signature; the date rules are the vendor's
    /// (milliseconds, fractional values) and so are checked here.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Caller, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|error| match error.kind() {
            ErrorKind::Json(_) if names_an_algorithm(token) => AuthFailure::AlgorithmNotAllowed,
            _ => AuthFailure::Malformed,
        })?;
        // Only HMAC algorithms are ever configured, so `none` and asymmetric ones fail here.
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }
        // RFC 7515 §4.1.11: a token must be refused if `crit` names an extension the
        // recipient does not understand, and this one understands none.
        if header.crit.is_some() {
            return Err(AuthFailure::CriticalExtension);
        }
        // Read before the signature is checked only to find whose keys to check it with.
        let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| AuthFailure::Malformed)?;
        let app = self.app_named_by(&claims)?;

        // The crate's own `decode` would also parse the registered claims, and fails the
        // whole token on one it cannot read (`"sub": []`); the claims are ours to judge.
        let (message, signature) = token.rsplit_once('.').ok_or(AuthFailure::Malformed)?;
        let verifies = |key| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, header.alg)
                .unwrap_or(false)
        };
        if !app.keys.iter().any(verifies) {
            return Err(AuthFailure::BadSignature);
        }

        let exp = self.check_dates(&claims, now as f64)?;
        Ok(Caller::new(
            Arc::clone(&app.access),
            exp.map(|exp| exp + self.leeway),
        ))
    }

    fn app_named_by(&self, claims: &Map<String, Value>) -> Result<&RegisteredApp, AuthFailure> {
        // A present `appId` wins even when it is not a string: no falling back to `iss` then.
        let Some(Value::String(app_id)) = claims.get("appId").or_else(|| claims.get("iss")) else {
            return Err(AuthFailure::UnknownApp);
        };
        self.apps.get(app_id).ok_or(AuthFailure::UnknownApp)
    }

    /// The token's `exp`, if it has one, once its dates are acceptable at `now`.
    fn check_dates(
        &self,
        claims: &Map<String, Value>,
        now: f64,
    ) -> Result<Option<f64>, AuthFailure> {
        let leeway = self.leeway;
        let exp = numeric_date(claims, "exp")?;
        let nbf = numeric_date(claims, "nbf")?;
        let iat = numeric_date(claims, "iat")?;

        if exp.is_some_and(|exp| now > exp + leeway) {
            return Err(AuthFailure::Expired);
        }
        if nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(AuthFailure::NotYetValid);
        }
        if iat.is_some_and(|iat| iat > now + leeway) {
            return Err(AuthFailure::IssuedInFuture);
        }
        if self.require_exp && exp.is_none() {
            return Err(AuthFailure::MissingExp);
        }
        if let Some(max_age) = self.max_token_age
            && iat.is_none_or(|iat| now - iat > max_age + leeway)
        {
            return Err(AuthFailure::TooOld);
        }
        Ok(exp)
    }
}

/// An authenticated app or person. Cheap to clone (holds an Arc).
#[derive(Clone, Debug)]
pub struct Caller {
    access: Arc<Access>,
    /// When the token stops being accepted (unix seconds, leeway included); `None` for a
    /// token without `exp`.
    valid_until: Option<f64>,
}

impl Caller {
    /// A caller with `access` whose token is accepted until `valid_until` (unix seconds).
    pub fn new(access: Arc<Access>, valid_until: Option<f64>) -> Self {
        Self {
            access,
            valid_until,
        }
    }

    /// How much longer the token is accepted; `None` for a token without `exp`.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.valid_until
            .map(|until| std::time::Duration::try_from_secs_f64(until - now).unwrap_or_default())
    }

    pub fn actor(&self) -> &Actor {
        &self.access.actor
    }

    /// True when one grant gives `permission` on `bot_id` (or on `"*"`).
    pub fn may(&self, bot_id: &str, permission: Permission) -> bool {
        self.access
            .grants
            .iter()
            .any(|grant| grant.allows(bot_id, permission))
    }

    /// The bots the caller has `permission` on; `None` for every bot (`"*"`).
    pub fn bots_with(&self, permission: Permission) -> Option<Vec<&str>> {
        let mut bots = Vec::new();
        for grant in &self.access.grants {
            if grant.permissions.contains(&permission) {
                if grant.bots.iter().any(|bot| bot == "*") {
                    return None;
                }
                bots.extend(grant.bots.iter().map(String::as_str));
            }
        }
        Some(bots)
    }

    /// True when the caller has `permission` for some bot.
    pub fn has(&self, permission: Permission) -> bool {
        self.access
            .grants
            .iter()
            .any(|grant| grant.permissions.contains(&permission))
    }
}

/// Why a token was refused: logged and counted, never told to the client (who only sees
/// "invalid token").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No token header at all; found by the caller of [`token_from_headers`], never by `verify`.
    #[error("no token")]
    MissingToken,
    /// Not three base64url parts, or a header or payload that is not a JSON object.
    #[error("malformed token")]
    Malformed,
    /// `alg` is `none`, asymmetric, unknown or not among the configured algorithms.
    #[error("signature algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header's `crit` names extensions, and none is understood here.
    #[error("critical header extension not understood")]
    CriticalExtension,
    /// Neither `appId` nor `iss` names a configured app.
    #[error("unknown app")]
    UnknownApp,
    /// No secret of the app verifies the signature.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is more than the leeway in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is more than the leeway in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is more than the leeway in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp`, `nbf` or `iat` is not a finite number.
    #[error("date claim is not a number")]
    InvalidClaim,
    /// `require_exp` is on and the token has no `exp`.
    #[error("token has no exp")]
    MissingExp,
    /// Older than `max_token_age_seconds`, or without the `iat` that would show its age.
    #[error("token too old")]
    TooOld,
    /// A person's token names its own key (`jwk`, `jku`, `x5u`, `x5c`).
    #[error("token carries its own key")]
    EmbeddedKey,
    /// A person's token names a key the identity provider does not have.
    #[error("unknown signing key")]
    UnknownKey,
    /// A person's token from another issuer (checked after the signature).
    #[error("wrong issuer")]
    WrongIssuer,
    /// A person's token for another audience.
    #[error("wrong audience")]
    WrongAudience,
}

impl AuthFailure {
    /// A snake_case label for logs and metrics, e.g. `"bad_signature"`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::CriticalExtension => "critical_extension",
            Self::UnknownApp => "unknown_app",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::InvalidClaim => "invalid_claim",
            Self::MissingExp => "missing_exp",
            Self::TooOld => "too_old",
            Self::EmbeddedKey => "embedded_key",
            Self::UnknownKey => "unknown_key",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
        }
    }
}

/// The JWT from the request headers, by precedence `token`, then `auth`, then
/// `Authorization: Bearer <jwt>` (scheme case-insensitive).
///
/// A `Bearer ` prefix inside `token` or `auth` is tolerated and stripped; surrounding
/// whitespace is trimmed. An `Authorization` header with another scheme carries no token.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    // The first present header wins even when unreadable (Some("")), so it cannot fall through
    // to a weaker header; verify refuses "" as Malformed.
    for name in ["token", "auth"] {
        if let Some(value) = headers.get(name) {
            let value = value.to_str().unwrap_or_default().trim();
            return Some(strip_bearer(value).unwrap_or(value).trim());
        }
    }
    let value = headers.get("authorization")?.to_str().unwrap_or_default();
    strip_bearer(value.trim()).map(str::trim)
}

/// A signed HS256 token with claims `appId`, `iat` = now and, when `ttl_seconds` is Some,
/// `exp` = now + ttl. Used by the CLI's `token` command and by tests.
pub fn issue_token(
    app_id: &str,
    secret: &[u8],
    ttl_seconds: Option<u64>,
) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Claims<'a> {
        #[serde(rename = "appId")]
        app_id: &'a str,
        iat: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    }

    let now = unix_now();
    let claims = Claims {
        app_id,
        iat: now,
        exp: ttl_seconds.map(|ttl| now.saturating_add(ttl)),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .context("failed to sign token")
}

fn parse_algorithm(name: &str) -> anyhow::Result<Algorithm> {
    match name.to_ascii_uppercase().as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        _ => bail!("auth.algorithms: {name:?} is not supported: use HS256, HS384 or HS512"),
    }
}

/// Resolves an app's secrets into HMAC keys.
fn load_keys(app: &AppConfig) -> anyhow::Result<Vec<DecodingKey>> {
    let id = &app.app_id;
    let mut keys = Vec::new();

    for secret in
        crate::config::read_secrets(&format!("app {id}"), &app.secret_env, &app.secret_file)?
    {
        keys.push(key(id, &secret));
    }

    for secret in OneOrMany::items(&app.secret) {
        tracing::warn!(app_id = %id, "literal secret in the config: for local development only");
        let secret = secret.expose_secret();
        ensure!(!secret.is_empty(), "app {id}: a literal secret is empty");
        keys.push(key(id, secret.as_bytes()));
    }

    ensure!(
        !keys.is_empty(),
        "app {id} has no secret: set secret_env or secret_file"
    );
    Ok(keys)
}

fn key(app_id: &str, secret: &[u8]) -> DecodingKey {
    if secret.len() < MIN_SECRET_BYTES {
        tracing::warn!(app_id, "secret shorter than {MIN_SECRET_BYTES} bytes");
    }
    DecodingKey::from_secret(secret)
}

/// Whether a header the crate could not read is a JSON object with a string `alg`: the
/// algorithm is then one it does not know (`none`, say), not a malformed token.
fn names_an_algorithm(token: &str) -> bool {
    let Some(header) = token.split('.').next() else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some_and(|header| matches!(header.get("alg"), Some(Value::String(_))))
}

/// A date claim in seconds, if present; milliseconds are scaled down.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthFailure> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value
        .as_f64()
        .filter(|seconds| seconds.is_finite())
        .ok_or(AuthFailure::InvalidClaim)?;
    Ok(Some(if seconds > MILLISECONDS_ABOVE {
        seconds / 1000.0
    } else {
        seconds
    }))
}

/// `<scheme> <rest>` with a case-insensitive `Bearer` scheme, giving `rest`.
fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use secrecy::SecretString;
    use serde_json::json;

    const APP: &str = "cs-test-app";
    const SECRET: &str = "first-secret-that-is-32-bytes-long";
    const ROTATED: &str = "second-secret-that-is-32-bytes-long";
    const NOW: i64 = 1_700_000_000;
    const VENDOR_APP: &str = "cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e";
    /// The sample from the vendor's docs; its signature was truncated with `xxxxx`.
    const VENDOR_SAMPLE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhcHBJZCI6ImNzLTYzNjNmY2JiLTMxMGUtNWIwNy05MWE5LWM2MTRjZDNjYmY2ZSJ9.H-JGmnWDBm2mFIw_PoMLQ5WLTPT_9-iFFPTLrHxxxxx";

    fn app(app_id: &str, bots: &[&str], permissions: &[Permission]) -> AppConfig {
        AppConfig {
            app_id: app_id.to_owned(),
            secret_env: None,
            secret_file: None,
            secret: Some(OneOrMany::Many(vec![
                SecretString::from(SECRET),
                SecretString::from(ROTATED),
            ])),
            bots: bots.iter().map(|bot| (*bot).to_owned()).collect(),
            permissions: permissions.to_vec(),
        }
    }

    fn registry_with(auth: AuthSettings) -> AppRegistry {
        let apps = [
            app(APP, &["st-1"], &[Permission::Ingest]),
            app("cs-reader", &["*"], &[Permission::Read]),
        ];
        AppRegistry::from_settings(&auth, &apps).expect("valid settings")
    }

    fn registry() -> AppRegistry {
        registry_with(AuthSettings::default())
    }

    fn sign(algorithm: Algorithm, claims: Value, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).expect("signed")
    }

    fn hs256(claims: Value) -> String {
        sign(Algorithm::HS256, claims, SECRET)
    }

    fn b64(json: Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn refusal(registry: &AppRegistry, token: &str) -> AuthFailure {
        registry
            .verify_at(token, NOW)
            .expect_err("token should be refused")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn accepts_hs256_token_naming_its_app_by_app_id() {
        let token = hs256(json!({ "appId": APP }));

        let caller = registry().verify_at(&token, NOW).expect("accepted");

        assert_eq!(caller.actor().label(), format!("app:{APP}"));
    }

    #[test]
    fn accepts_token_signed_with_the_rotated_second_secret() {
        let token = sign(Algorithm::HS256, json!({ "appId": APP }), ROTATED);

        let caller = registry().verify_at(&token, NOW).expect("accepted");

        assert_eq!(caller.actor().label(), format!("app:{APP}"));
    }

    #[test]
    fn falls_back_to_iss_when_app_id_is_absent() {
        let token = hs256(json!({ "iss": APP }));

        let caller = registry().verify_at(&token, NOW).expect("accepted");

        assert_eq!(caller.actor().label(), format!("app:{APP}"));
    }

    #[test]
    fn reads_millisecond_dates_as_seconds() {
        let fresh = hs256(json!({ "appId": APP, "iat": NOW * 1000, "exp": (NOW + 600) * 1000 }));
        let stale = hs256(json!({ "appId": APP, "exp": (NOW - 600) * 1000 }));

        let registry = registry();

        assert!(registry.verify_at(&fresh, NOW).is_ok());
        assert_eq!(refusal(&registry, &stale), AuthFailure::Expired);
    }

    #[test]
    fn accepts_token_whose_exp_is_in_the_future() {
        let token = hs256(json!({ "appId": APP, "iat": NOW, "exp": NOW + 3600 }));

        assert!(registry().verify_at(&token, NOW).is_ok());
    }

    #[test]
    fn accepts_fractional_dates() {
        let token =
            hs256(json!({ "appId": APP, "iat": NOW as f64 + 0.5, "exp": NOW as f64 + 60.25 }));

        assert!(registry().verify_at(&token, NOW).is_ok());
    }

    #[test]
    fn accepts_hs384_when_enabled() {
        let registry = registry_with(AuthSettings {
            algorithms: vec!["HS256".to_owned(), "hs384".to_owned()],
            ..AuthSettings::default()
        });
        let token = sign(Algorithm::HS384, json!({ "appId": APP }), SECRET);

        assert!(registry.verify_at(&token, NOW).is_ok());
    }

    #[test]
    fn issued_token_verifies_against_the_clock() {
        let registry = registry_with(AuthSettings {
            require_exp: true,
            max_token_age_seconds: Some(60),
            ..AuthSettings::default()
        });

        let token = issue_token(APP, SECRET.as_bytes(), Some(300)).expect("issued");

        assert_eq!(
            registry.verify(&token).expect("accepted").actor().label(),
            format!("app:{APP}")
        );
    }

    #[test]
    fn finds_no_token_without_a_token_header() {
        let headers = headers(&[("content-type", "application/json")]);

        assert_eq!(token_from_headers(&headers), None);
    }

    #[test]
    fn refuses_token_signed_with_another_secret_as_bad_signature() {
        let token = sign(
            Algorithm::HS256,
            json!({ "appId": APP }),
            "not-the-secret-of-this-app-at-all",
        );

        assert_eq!(refusal(&registry(), &token), AuthFailure::BadSignature);
    }

    #[test]
    fn refuses_tampered_payload_as_bad_signature() {
        let token = hs256(json!({ "appId": APP, "exp": NOW }));
        let (header, rest) = token.split_once('.').expect("three parts");
        let (_, signature) = rest.split_once('.').expect("three parts");
        let forged = format!(
            "{header}.{}.{signature}",
            b64(json!({ "appId": APP, "exp": NOW + 9999 }))
        );

        assert_eq!(refusal(&registry(), &forged), AuthFailure::BadSignature);
    }

    #[test]
    fn refuses_alg_none() {
        let token = format!(
            "{}.{}.",
            b64(json!({ "alg": "none", "typ": "JWT" })),
            b64(json!({ "appId": APP }))
        );

        assert_eq!(
            refusal(&registry(), &token),
            AuthFailure::AlgorithmNotAllowed
        );
    }

    #[test]
    fn refuses_hs512_when_only_hs256_is_enabled() {
        let token = sign(Algorithm::HS512, json!({ "appId": APP }), SECRET);

        assert_eq!(
            refusal(&registry(), &token),
            AuthFailure::AlgorithmNotAllowed
        );
    }

    #[test]
    fn refuses_rs256_header_even_when_hmac_signed_with_the_app_secret() {
        let message = format!(
            "{}.{}",
            b64(json!({ "alg": "RS256" })),
            b64(json!({ "appId": APP }))
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("signed");
        let token = format!("{message}.{signature}");

        assert_eq!(
            refusal(&registry(), &token),
            AuthFailure::AlgorithmNotAllowed
        );
    }

    #[test]
    fn refuses_a_correctly_signed_token_whose_crit_names_extensions() {
        for crit in [json!(["exp"]), json!(["urn:example:extension"]), json!([])] {
            let message = format!(
                "{}.{}",
                b64(json!({ "alg": "HS256", "crit": crit, "urn:example:extension": true })),
                b64(json!({ "appId": APP }))
            );
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
                .expect("signed");

            assert_eq!(
                refusal(&registry(), &format!("{message}.{signature}")),
                AuthFailure::CriticalExtension,
                "{crit}"
            );
        }
    }

    #[test]
    fn refuses_unknown_alg_names() {
        for alg in ["HS1024", "hs256", "EdDSA", ""] {
            let token = format!(
                "{}.{}.c2ln",
                b64(json!({ "alg": alg })),
                b64(json!({ "appId": APP }))
            );

            assert_eq!(
                refusal(&registry(), &token),
                AuthFailure::AlgorithmNotAllowed,
                "{alg}"
            );
        }
    }

    #[test]
    fn refuses_unknown_app() {
        let by_app_id = hs256(json!({ "appId": "cs-stranger" }));
        let unnamed = hs256(json!({ "sub": APP }));
        let numeric_app_id = hs256(json!({ "appId": 7, "iss": APP }));

        let registry = registry();

        assert_eq!(refusal(&registry, &by_app_id), AuthFailure::UnknownApp);
        assert_eq!(refusal(&registry, &unnamed), AuthFailure::UnknownApp);
        assert_eq!(refusal(&registry, &numeric_app_id), AuthFailure::UnknownApp);
    }

    #[test]
    fn refuses_expired_token() {
        let token = hs256(json!({ "appId": APP, "exp": NOW - 3600 }));

        assert_eq!(refusal(&registry(), &token), AuthFailure::Expired);
    }

    #[test]
    fn accepts_exp_within_leeway_and_refuses_it_beyond() {
        let within = hs256(json!({ "appId": APP, "exp": NOW - 60 }));
        let beyond = hs256(json!({ "appId": APP, "exp": NOW - 61 }));

        let registry = registry();

        assert!(registry.verify_at(&within, NOW).is_ok());
        assert_eq!(refusal(&registry, &beyond), AuthFailure::Expired);
    }

    #[test]
    fn refuses_wrong_typed_dates_as_invalid_claim() {
        let registry = registry();
        for claims in [
            json!({ "appId": APP, "exp": "123" }),
            json!({ "appId": APP, "exp": null }),
            json!({ "appId": APP, "nbf": true }),
            json!({ "appId": APP, "iat": { "seconds": NOW } }),
        ] {
            let token = hs256(claims.clone());

            assert_eq!(
                refusal(&registry, &token),
                AuthFailure::InvalidClaim,
                "{claims}"
            );
        }
    }

    #[test]
    fn refuses_absurd_numeric_dates_without_panicking() {
        let ancient = hs256(json!({ "appId": APP, "exp": -1e300 }));
        let far_future = hs256(json!({ "appId": APP, "exp": f64::MAX, "iat": -f64::MAX }));

        let registry = registry();

        assert_eq!(refusal(&registry, &ancient), AuthFailure::Expired);
        assert!(registry.verify_at(&far_future, NOW).is_ok());
        assert!(registry.verify_at(&far_future, i64::MIN).is_ok());
    }

    #[test]
    fn refuses_iat_in_the_future_beyond_leeway() {
        let token = hs256(json!({ "appId": APP, "iat": NOW + 61 }));

        assert_eq!(refusal(&registry(), &token), AuthFailure::IssuedInFuture);
    }

    #[test]
    fn refuses_nbf_in_the_future() {
        let token = hs256(json!({ "appId": APP, "nbf": NOW + 3600 }));

        assert_eq!(refusal(&registry(), &token), AuthFailure::NotYetValid);
    }

    #[test]
    fn refuses_token_without_exp_when_exp_is_required() {
        let registry = registry_with(AuthSettings {
            require_exp: true,
            ..AuthSettings::default()
        });
        let token = hs256(json!({ "appId": APP, "iat": NOW }));

        assert_eq!(refusal(&registry, &token), AuthFailure::MissingExp);
    }

    #[test]
    fn refuses_token_older_than_max_age_or_without_iat() {
        let registry = registry_with(AuthSettings {
            max_token_age_seconds: Some(300),
            ..AuthSettings::default()
        });
        let young = hs256(json!({ "appId": APP, "iat": NOW - 360 }));
        let old = hs256(json!({ "appId": APP, "iat": NOW - 361 }));
        let ageless = hs256(json!({ "appId": APP }));

        assert!(registry.verify_at(&young, NOW).is_ok());
        assert_eq!(refusal(&registry, &old), AuthFailure::TooOld);
        assert_eq!(refusal(&registry, &ageless), AuthFailure::TooOld);
    }

    #[test]
    fn refuses_garbage_as_malformed_without_panicking() {
        let valid = hs256(json!({ "appId": APP }));
        let huge = format!(
            "{}.{}.{}",
            "a".repeat(5_000_000),
            "b".repeat(5_000_000),
            "c"
        );
        let header = b64(json!({ "alg": "HS256" }));
        let registry = registry();

        for token in [
            String::new(),
            " ".to_owned(),
            ".".to_owned(),
            "..".to_owned(),
            "a.b".to_owned(),
            format!("{valid}.extra"),
            "!!!.e30.c2ln".to_owned(),
            format!("{header}.not base64!.c2ln"),
            format!("{header}.{}.c2ln", b64(json!([APP]))),
            format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode(b"\xff\xfe")),
            format!(
                "{}.{}.c2ln",
                b64(json!({ "typ": "JWT" })),
                b64(json!({ "appId": APP }))
            ),
            format!(
                "{}.{}.c2ln",
                b64(json!({ "alg": 256 })),
                b64(json!({ "appId": APP }))
            ),
            format!(
                "{}.{}.c2ln",
                b64(json!(["HS256"])),
                b64(json!({ "appId": APP }))
            ),
            "ünïcødé.☃.🦀".to_owned(),
            huge,
        ] {
            assert_eq!(refusal(&registry, &token), AuthFailure::Malformed);
        }
    }

    #[test]
    fn vendor_sample_token_finds_its_app_and_fails_on_its_truncated_signature() {
        let without_vendor_app = registry();
        let with_vendor_app = AppRegistry::from_settings(
            &AuthSettings::default(),
            &[app(VENDOR_APP, &["*"], &[Permission::Ingest])],
        )
        .expect("valid settings");

        assert_eq!(
            refusal(&without_vendor_app, VENDOR_SAMPLE),
            AuthFailure::UnknownApp
        );
        assert_eq!(
            refusal(&with_vendor_app, VENDOR_SAMPLE),
            AuthFailure::BadSignature
        );
    }

    #[test]
    fn token_header_wins_over_auth_and_authorization() {
        let headers = headers(&[
            ("token", "from-token"),
            ("auth", "from-auth"),
            ("authorization", "Bearer from-authorization"),
        ]);

        assert_eq!(token_from_headers(&headers), Some("from-token"));
    }

    #[test]
    fn auth_header_wins_over_authorization() {
        let headers = headers(&[
            ("auth", " from-auth "),
            ("authorization", "Bearer from-authorization"),
        ]);

        assert_eq!(token_from_headers(&headers), Some("from-auth"));
    }

    #[test]
    fn authorization_bearer_is_read_with_any_scheme_case() {
        let bearer = headers(&[("authorization", "bEaReR  the.jwt.here ")]);
        let basic = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);

        assert_eq!(token_from_headers(&bearer), Some("the.jwt.here"));
        assert_eq!(token_from_headers(&basic), None);
    }

    #[test]
    fn bearer_prefix_inside_token_header_is_stripped() {
        let headers = headers(&[("token", "Bearer the.jwt.here")]);

        assert_eq!(token_from_headers(&headers), Some("the.jwt.here"));
    }

    #[test]
    fn unreadable_token_header_still_wins_and_is_refused_as_malformed() {
        let mut headers = headers(&[("auth", "Bearer the.jwt.here")]);
        headers.insert(
            "token",
            HeaderValue::from_bytes(b"\xffjwt").expect("obs-text is allowed"),
        );

        let token = token_from_headers(&headers).expect("token header is present");

        assert_eq!(token, "");
        assert_eq!(refusal(&registry(), token), AuthFailure::Malformed);
    }

    #[test]
    fn caller_may_use_any_bot_when_its_bots_are_a_wildcard() {
        let caller = registry()
            .verify_at(&hs256(json!({ "appId": "cs-reader" })), NOW)
            .expect("accepted");

        assert!(caller.may("st-anything", Permission::Read));
    }

    #[test]
    fn caller_may_use_only_its_listed_bots() {
        let caller = registry()
            .verify_at(&hs256(json!({ "appId": APP })), NOW)
            .expect("accepted");

        assert!(caller.may("st-1", Permission::Ingest));
        assert!(!caller.may("st-2", Permission::Ingest));
    }

    #[test]
    fn caller_may_not_do_what_it_lacks_permission_for() {
        let reader = registry()
            .verify_at(&hs256(json!({ "appId": "cs-reader" })), NOW)
            .expect("accepted");

        assert!(!reader.may("st-1", Permission::Ingest));
    }

    #[test]
    fn from_settings_names_a_missing_env_var() {
        let name = "AGENTASSIST_HOOKS_AUTH_TEST_SECRET_NEVER_SET";
        let mut config = app(APP, &["*"], &[Permission::Ingest]);
        config.secret = None;
        config.secret_env = Some(OneOrMany::One(name.to_owned()));

        let error = AppRegistry::from_settings(&AuthSettings::default(), &[config])
            .expect_err("missing env var");

        let message = format!("{error:#}");
        assert!(message.contains(name) && message.contains(APP), "{message}");
    }

    #[test]
    fn from_settings_refuses_a_duplicate_app_id_without_showing_secrets() {
        let apps = [
            app(APP, &["*"], &[Permission::Ingest]),
            app(APP, &["*"], &[Permission::Read]),
        ];

        let error = AppRegistry::from_settings(&AuthSettings::default(), &apps)
            .expect_err("duplicate app_id");

        let message = format!("{error:#}");
        assert!(
            message.contains(APP) && message.contains("twice"),
            "{message}"
        );
        assert!(!message.contains(SECRET) && !message.contains(ROTATED));
    }

    #[test]
    fn from_settings_refuses_bad_algorithms_and_incomplete_apps() {
        let good = app(APP, &["*"], &[Permission::Ingest]);
        let no_secret = AppConfig {
            secret: None,
            ..good.clone()
        };
        let no_bots = AppConfig {
            bots: vec![],
            ..good.clone()
        };
        let no_permissions = AppConfig {
            permissions: vec![],
            ..good.clone()
        };
        let with_algorithms = |names: &[&str]| AuthSettings {
            algorithms: names.iter().map(|name| (*name).to_owned()).collect(),
            ..AuthSettings::default()
        };

        for (auth, app) in [
            (with_algorithms(&[]), &good),
            (with_algorithms(&["RS256"]), &good),
            (with_algorithms(&["none"]), &good),
            (AuthSettings::default(), &no_secret),
            (AuthSettings::default(), &no_bots),
            (AuthSettings::default(), &no_permissions),
        ] {
            assert!(AppRegistry::from_settings(&auth, std::slice::from_ref(app)).is_err());
        }
    }

    #[test]
    fn from_settings_reads_secret_files_without_their_trailing_newline() {
        let path = std::env::temp_dir().join(format!("auth-test-secret-{}", std::process::id()));
        std::fs::write(&path, format!("{SECRET}\r\n")).expect("temp file written");
        let mut config = app(APP, &["*"], &[Permission::Ingest]);
        config.secret = None;
        config.secret_file = Some(OneOrMany::One(path.clone()));

        let registry = AppRegistry::from_settings(&AuthSettings::default(), &[config]);
        std::fs::remove_file(&path).expect("temp file removed");

        let token = hs256(json!({ "appId": APP }));
        assert!(
            registry
                .expect("valid settings")
                .verify_at(&token, NOW)
                .is_ok()
        );
    }

    #[test]
    fn from_settings_names_an_unreadable_secret_file() {
        let path = std::env::temp_dir().join("auth-test-secret-that-does-not-exist");
        let mut config = app(APP, &["*"], &[Permission::Ingest]);
        config.secret = None;
        config.secret_file = Some(OneOrMany::One(path.clone()));

        let error = AppRegistry::from_settings(&AuthSettings::default(), &[config])
            .expect_err("unreadable file");

        assert!(format!("{error:#}").contains(&*path.to_string_lossy()));
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let registry = registry();
        let caller = registry
            .verify_at(&hs256(json!({ "appId": APP })), NOW)
            .expect("accepted");

        let debug = format!("{registry:?} {caller:?}");

        assert!(debug.contains(APP));
        assert!(
            !debug.contains(SECRET) && !debug.contains(ROTATED),
            "{debug}"
        );
    }

    #[test]
    fn reasons_are_snake_case_labels() {
        assert_eq!(AuthFailure::BadSignature.reason(), "bad_signature");
        assert_eq!(
            AuthFailure::AlgorithmNotAllowed.reason(),
            "algorithm_not_allowed"
        );
    }

    #[test]
    fn refuses_exp_beyond_f64_and_claims_that_are_not_objects() {
        let header = b64(json!({ "alg": "HS256" }));
        let signed = |claims: &str| {
            let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
                .expect("signed");
            format!("{message}.{signature}")
        };
        let registry = registry();

        for claims in [
            format!(r#"{{"appId":"{APP}","exp":1e400}}"#),
            format!(r#"{{"appId":"{APP}","iat":-1e400}}"#),
            format!(r#"["{APP}"]"#),
            format!(r#""{APP}""#),
            "null".to_owned(),
            format!(r#"{{"appId":"{APP}"}} trailing"#),
            format!(r#"{{"appId":"\ud800{APP}"}}"#),
        ] {
            assert_eq!(
                refusal(&registry, &signed(&claims)),
                AuthFailure::Malformed,
                "{claims}"
            );
        }
        assert!(
            registry
                .verify_at(
                    &signed(&format!(
                        r#"{{"appId":"{APP}","exp":18446744073709551616}}"#
                    )),
                    NOW
                )
                .is_ok()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        /// A fixed budget so CI time is bounded; no regression files written into src/.
        fn budget(cases: u32) -> Config {
            Config {
                cases,
                failure_persistence: None,
                max_shrink_iters: 2048,
                ..Config::default()
            }
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter_map("finite", |float| {
                    serde_json::Number::from_f64(float).map(Value::Number)
                }),
                "\\PC{0,16}".prop_map(Value::String),
                Just(json!(APP)),
                Just(json!("HS256")),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((member_name(), inner), 0..4)
                        .prop_map(|members| Value::Object(members.into_iter().collect())),
                ]
            })
        }

        fn member_name() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "alg", "typ", "kid", "appId", "iss", "exp", "nbf", "iat", "sub",
                ])
                .prop_map(str::to_owned),
                "\\PC{0,8}",
            ]
        }

        /// A JWT header that names an algorithm, or tries to.
        fn header() -> impl Strategy<Value = Value> {
            let alg = prop_oneof![
                prop::sample::select(vec![
                    "HS256", "HS384", "HS512", "none", "None", "RS256", "ES256", "EdDSA", "hs256",
                ])
                .prop_map(Value::from),
                json_value(),
            ];
            (
                alg,
                prop::collection::vec((member_name(), json_value()), 0..3),
            )
                .prop_map(|(alg, extra)| {
                    let mut header: Map<String, Value> = extra.into_iter().collect();
                    header.insert("alg".to_owned(), alg);
                    Value::Object(header)
                })
        }

        /// Claims that mostly name a configured app, with anything else beside.
        fn claims() -> impl Strategy<Value = Value> {
            let app_id = prop_oneof![
                3 => Just(json!(APP)),
                1 => Just(json!("cs-reader")),
                1 => json_value(),
            ];
            (
                app_id,
                prop::collection::vec((member_name(), json_value()), 0..4),
            )
                .prop_map(|(app_id, extra)| {
                    let mut claims: Map<String, Value> = extra.into_iter().collect();
                    claims.insert("appId".to_owned(), app_id);
                    Value::Object(claims)
                })
        }

        /// A secret that is neither of the apps' secrets.
        fn wrong_secret() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(any::<u8>(), 1..64)
                .prop_filter("not a configured secret", |key| {
                    key.as_slice() != SECRET.as_bytes() && key.as_slice() != ROTATED.as_bytes()
                })
        }

        fn signed(header: &Value, claims: &Value, secret: &[u8], algorithm: Algorithm) -> String {
            let message = format!("{}.{}", b64(header.clone()), b64(claims.clone()));
            let key = EncodingKey::from_secret(secret);
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm).expect("signed");
            format!("{message}.{signature}")
        }

        fn any_now() -> impl Strategy<Value = i64> {
            prop_oneof![Just(NOW), any::<i64>()]
        }

        proptest! {
            #![proptest_config(budget(256))]

            #[test]
            fn verify_refuses_arbitrary_strings(token in "\\PC{0,256}", now in any_now()) {
                prop_assert!(registry().verify_at(&token, now).is_err());
            }

            #[test]
            fn verify_refuses_arbitrary_dotted_strings(
                token in "[A-Za-z0-9_=+/\\- .]{0,512}",
                now in any_now(),
            ) {
                prop_assert!(registry().verify_at(&token, now).is_err());
            }

            #[test]
            fn verify_refuses_three_part_base64url_tokens_of_random_bytes(
                parts in prop::array::uniform3(prop::collection::vec(any::<u8>(), 0..128)),
                now in any_now(),
            ) {
                let [header, claims, signature] = parts.map(|part| URL_SAFE_NO_PAD.encode(part));
                let token = format!("{header}.{claims}.{signature}");

                prop_assert!(registry().verify_at(&token, now).is_err());
            }

            #[test]
            fn verify_refuses_any_header_and_claims_signed_with_a_wrong_key(
                header in header(),
                claims in claims(),
                secret in wrong_secret(),
                algorithm in prop::sample::select(vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
                now in any_now(),
            ) {
                let token = signed(&header, &claims, &secret, algorithm);

                prop_assert!(registry().verify_at(&token, now).is_err(), "{header} {claims}");
            }

            #[test]
            fn a_token_verifies_exactly_when_signed_with_a_configured_secret(
                claims in claims(),
                secret in prop_oneof![
                    Just(SECRET.as_bytes().to_vec()),
                    Just(ROTATED.as_bytes().to_vec()),
                    wrong_secret(),
                ],
            ) {
                let mut claims = claims;
                let members = claims.as_object_mut().expect("claims are an object");
                for date in ["exp", "nbf", "iat"] {
                    members.remove(date);
                }
                let names_an_app = [json!(APP), json!("cs-reader")].contains(&members["appId"]);
                let configured = [SECRET.as_bytes(), ROTATED.as_bytes()].contains(&secret.as_slice());
                let token = signed(&json!({ "alg": "HS256", "typ": "JWT" }), &claims, &secret, Algorithm::HS256);

                let verified = registry().verify_at(&token, NOW);

                prop_assert_eq!(verified.is_ok(), names_an_app && configured, "{:?}", verified);
            }

            #[test]
            fn changing_any_one_character_of_a_valid_token_refuses_it(
                position in any::<prop::sample::Index>(),
                replacement in prop::char::range('!', '~'),
            ) {
                let token = hs256(json!({ "appId": APP, "exp": NOW + 60 }));
                let index = position.index(token.len());
                prop_assume!(token.as_bytes()[index] != replacement as u8);
                let mut tampered = token.into_bytes();
                tampered[index] = replacement as u8;
                let tampered = String::from_utf8(tampered).expect("ASCII");

                prop_assert!(registry().verify_at(&tampered, NOW).is_err(), "{tampered}");
            }

            #[test]
            fn date_claims_of_any_value_never_panic_and_expire_on_time(
                exp in prop_oneof![
                    (NOW - 1_000_000..NOW + 1_000_000).prop_map(Value::from),
                    json_value(),
                ],
                now in prop_oneof![NOW - 1_000_000..NOW + 1_000_000, any::<i64>()],
            ) {
                let token = hs256(json!({ "appId": APP, "exp": exp }));

                let verified = registry().verify_at(&token, now);

                if let Some(exp) = exp.as_i64().filter(|exp| exp.abs() < 100_000_000_000) {
                    prop_assert_eq!(verified.is_ok(), i128::from(now) <= i128::from(exp) + 60);
                } else if !exp.is_number() {
                    prop_assert_eq!(verified.err(), Some(AuthFailure::InvalidClaim));
                }
            }
        }
    }
}
