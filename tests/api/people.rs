//! People signing in through an OpenID Connect provider, and the audit log (SPEC 13).
//!
//! The provider here is a small HTTP server of the test's own (discovery and a key set it
//! can rotate, counting the key-set fetches), signing with RSA, P-256 and Ed25519 keys
//! made by aws-lc-rs. `console/test/signin.test.mjs` signs people in through the real
//! `oidc-provider` in a browser.

use crate::common::*;
use crate::process::{PATIENCE, Service};
use agentassist_hooks::audit;
use agentassist_hooks::auth::AuthFailure;
use agentassist_hooks::config::{
    AuthSettings, OidcSettings, Permission, RoleMapping, ServerSettings,
};
use agentassist_hooks::oidc::People;
use agentassist_hooks::store::{AuditFilter, AuditRecord};
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tower::ServiceExt;

const AUDIENCE: &str = "agentassist-api";
const SUPERVISORS: &str = "cc-supervisors";
const AUDITORS: &str = "cc-auditors";
const SUBJECT: &str = "248289761001";

/// The test's identity provider: discovery and a key set, on a free port.
struct Provider {
    issuer: String,
    keys: Arc<RwLock<Vec<Jwk>>>,
    key_set_fetches: Arc<AtomicUsize>,
    _server: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let published: Arc<RwLock<Vec<Jwk>>> =
            Arc::new(RwLock::new(keys.iter().map(|key| key.jwk()).collect()));
        let key_set_fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get({
                    let (published, fetches) = (published.clone(), key_set_fetches.clone());
                    move || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let keys = published.read().unwrap().clone();
                        axum::Json(JwkSet { keys })
                    }
                }),
            );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            issuer,
            keys: published,
            key_set_fetches,
            _server: AbortOnDrop(server),
        }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.write().unwrap() = keys.iter().map(|key| key.jwk()).collect();
    }

    fn fetches(&self) -> usize {
        self.key_set_fetches.load(Ordering::SeqCst)
    }

    fn settings(&self) -> OidcSettings {
        OidcSettings {
            issuer: self.issuer.clone(),
            audience: AUDIENCE.to_owned(),
            client_id: "agentassist-console".to_owned(),
            name: None,
            scopes: vec!["openid".to_owned()],
            roles_claim: "groups".to_owned(),
            roles: vec![
                RoleMapping {
                    value: SUPERVISORS.to_owned(),
                    bots: vec![BOT.to_owned()],
                    permissions: vec![Permission::Read],
                },
                RoleMapping {
                    value: AUDITORS.to_owned(),
                    bots: vec!["*".to_owned()],
                    permissions: vec![Permission::Audit],
                },
            ],
        }
    }

    /// The people of this provider, their keys fetched.
    async fn people(&self) -> Arc<People> {
        let people = People::new(&self.settings(), 60).expect("valid settings");
        people.warm_up().await;
        Arc::new(people)
    }

    /// A person's claims, valid for five minutes, in `groups`.
    fn claims(&self, groups: &[&str]) -> Value {
        let now = unix_now();
        json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": SUBJECT,
            "name": "Dana Scully",
            "email": "dana@example.com",
            "groups": groups,
            "iat": now,
            "exp": now + 300,
        })
    }
}

/// A provider's signing key.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    fn rsa(kid: &str) -> Self {
        use aws_lc_rs::encoding::AsDer;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let pkcs1 = rsa_private_key_of(pkcs8.as_ref());
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(pkcs1))
    }

    fn p256(kid: &str) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
    }

    fn ed25519(kid: &str) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap();
        Self::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(pkcs8.as_ref()),
        )
    }

    fn new(kid: &str, algorithm: Algorithm, key: EncodingKey) -> Self {
        Self {
            kid: kid.to_owned(),
            algorithm,
            key,
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (RFC 5208): the octet
/// string after the version and the algorithm identifier.
fn rsa_private_key_of(pkcs8: &[u8]) -> &[u8] {
    /// A DER element's tag, and its contents and what follows it.
    fn element(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (der[0], der[1]);
        let (length, start) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let bytes = usize::from(first & 0x7f);
            let length = der[2..2 + bytes]
                .iter()
                .fold(0, |length, byte| length << 8 | usize::from(*byte));
            (length, 2 + bytes)
        };
        (tag, &der[start..start + length], &der[start + length..])
    }
    let (_, info, _) = element(pkcs8);
    let (_, _version, rest) = element(info);
    let (_, _algorithm, rest) = element(rest);
    let (tag, key, _) = element(rest);
    assert_eq!(tag, 0x04, "an octet string holds the key");
    key
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn get_bearer(app: &TestApp, path: &str, token: &str) -> TestResponse {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    app.send(request).await
}

async fn app_for(backend: &Backend, people: Arc<People>) -> TestApp {
    backend
        .app()
        .await
        .rebuilt(|state| state.with_people(Some(people)))
}

/// A conversation of BOT with one agent, `agentId1`.
async fn seed(app: &TestApp, conversation: &str) {
    post(app, conversation, vec![transfer("NA", "entry", "agentId1")]).await;
}

#[tokio::test]
async fn a_persons_token_is_accepted_when_signed_with_rs256_es256_or_eddsa() {
    let keys = [
        SigningKey::rsa("rsa-1"),
        SigningKey::p256("ec-1"),
        SigningKey::ed25519("ed-1"),
    ];
    let provider = Provider::start(&keys.iter().collect::<Vec<_>>()).await;
    let backend = Backend::sqlite().await;
    let app = app_for(&backend, provider.people().await).await;
    seed(&app, "c-people").await;

    for key in &keys {
        let token = key.sign(&provider.claims(&[SUPERVISORS]));
        let read = get_bearer(&app, &conversation_path("c-people"), &token).await;
        assert_eq!(read.status, 200, "{:?}: {}", key.algorithm, read.body);
        let bots = get_bearer(&app, "/api/v1/bots", &token).await;
        assert_eq!(bots.body["items"][0]["botId"], BOT);
        // Read on BOT only: another bot's conversation is as good as missing.
        let other = get_bearer(
            &app,
            &format!("/api/v1/bots/{OTHER_BOT}/conversations/c-people"),
            &token,
        )
        .await;
        assert_eq!(other.status, 404);
    }
    // Keys were fetched once, at warm-up: known kids need no fetch.
    assert_eq!(provider.fetches(), 1);
    // App tokens keep working beside people's.
    let app_read = app.get(&conversation_path("c-people"), &read_token()).await;
    assert_eq!(app_read.status, 200);
}

#[tokio::test]
async fn the_apis_audience_must_not_be_the_consoles_client() {
    let provider = Provider::start(&[]).await;
    let mut settings = provider.settings();
    settings.audience = settings.client_id.clone();
    let refused = People::new(&settings, 60).err().expect("refused");
    assert!(refused.to_string().contains("audience"), "{refused}");
}

#[tokio::test]
async fn a_person_without_a_mapped_group_is_forbidden() {
    let key = SigningKey::p256("ec-1");
    let provider = Provider::start(&[&key]).await;
    let backend = Backend::sqlite().await;
    let app = app_for(&backend, provider.people().await).await;
    let token = key.sign(&provider.claims(&["cc-visitors"]));
    get_bearer(&app, "/api/v1/bots", &token)
        .await
        .assert_problem(403);
    // Without any groups claim at all, the same.
    let mut claims = provider.claims(&[]);
    claims.as_object_mut().unwrap().remove("groups");
    get_bearer(&app, "/api/v1/bots", &key.sign(&claims))
        .await
        .assert_problem(403);
}

#[tokio::test]
async fn tokens_the_provider_did_not_issue_for_us_are_refused() {
    let key = SigningKey::rsa("rsa-1");
    let provider = Provider::start(&[&key]).await;
    let backend = Backend::sqlite().await;
    let app = app_for(&backend, provider.people().await).await;
    seed(&app, "c-refused").await;
    let path = conversation_path("c-refused");
    let claims = provider.claims(&[SUPERVISORS]);
    let with = |name: &str, value: Value| {
        let mut claims = claims.clone();
        claims[name] = value;
        claims
    };
    let now = unix_now();

    let mut refused = vec![
        (
            "wrong iss",
            key.sign(&with("iss", json!("https://evil.example.com"))),
        ),
        ("wrong aud", key.sign(&with("aud", json!("another-api")))),
        ("expired", key.sign(&with("exp", json!(now - 3600)))),
        ("not yet valid", key.sign(&with("nbf", json!(now + 3600)))),
    ];
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    refused.push(("no exp", key.sign(&no_exp)));

    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    refused.push((
        "alg none",
        format!(
            "{}.{}.",
            encode(&json!({"alg": "none", "typ": "JWT"})),
            encode(&claims)
        ),
    ));
    // The classic confusion: HMAC keyed with the provider's public key.
    let public_key = serde_json::to_vec(&key.jwk()).unwrap();
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(key.kid.clone());
    refused.push((
        "HS256 with the public key as secret",
        jsonwebtoken::encode(&hs256, &claims, &EncodingKey::from_secret(&public_key)).unwrap(),
    ));
    // A token carrying its own key, signed with it.
    let intruder = SigningKey::rsa("rsa-1");
    let mut embedded = Header::new(Algorithm::RS256);
    embedded.kid = Some(key.kid.clone());
    embedded.jwk = Some(intruder.jwk());
    refused.push(("embedded jwk", intruder.sign_with(embedded, &claims)));
    let mut jku = Header::new(Algorithm::RS256);
    jku.kid = Some(key.kid.clone());
    jku.jku = Some("https://evil.example.com/jwks".to_owned());
    refused.push(("jku", intruder.sign_with(jku, &claims)));
    // Signed by another key under the provider's kid.
    refused.push(("forged signature", intruder.sign(&claims)));

    for (what, token) in refused {
        let response = get_bearer(&app, &path, &token).await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        assert_eq!(response.body["detail"], "invalid token", "{what}");
    }
    // Each check on its own, where routing by `iss` or a failed signature would hide it:
    // the provider's own key, with only the one thing wrong.
    let people = provider.people().await;
    let reason = |token: String| {
        let people = people.clone();
        async move { people.verify(&token).await.map(|_| ()).unwrap_err() }
    };
    let mut carrying = Header::new(Algorithm::RS256);
    carrying.kid = Some(key.kid.clone());
    carrying.jwk = Some(key.jwk());
    assert_eq!(
        reason(key.sign_with(carrying, &claims)).await,
        AuthFailure::EmbeddedKey
    );
    assert_eq!(
        reason(key.sign(&with("iss", json!("https://evil.example.com")))).await,
        AuthFailure::WrongIssuer
    );
    assert_eq!(
        reason(key.sign(&with("aud", json!("another-api")))).await,
        AuthFailure::WrongAudience
    );
    assert_eq!(reason(key.sign(&no_exp)).await, AuthFailure::MissingExp);
    // A provider that leaves `kid` out of its tokens: its keys are tried.
    let no_kid = Header::new(Algorithm::RS256);
    assert!(people.verify(&key.sign_with(no_kid, &claims)).await.is_ok());
    // The one token that should pass does.
    assert_eq!(
        get_bearer(&app, &path, &key.sign(&claims)).await.status,
        200
    );
}

#[tokio::test]
async fn a_burst_of_unknown_kids_fetches_the_key_set_once() {
    let key = SigningKey::p256("ec-1");
    let provider = Provider::start(&[&key]).await;
    let backend = Backend::sqlite().await;
    // Room for the whole burst at once, so that none is shed.
    let server = ServerSettings {
        concurrency_limit: 2000,
        ..ServerSettings::default()
    };
    let people = provider.people().await;
    let app = backend
        .app_with(AuthSettings::default(), server)
        .await
        .rebuilt(|state| state.with_people(Some(people)));
    assert_eq!(provider.fetches(), 1, "the warm-up fetch");

    let unknown = SigningKey::p256("not-at-the-provider");
    let token = unknown.sign(&provider.claims(&[SUPERVISORS]));
    let requests = (0..1000).map(|_| {
        let request = Request::get("/api/v1/bots")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        app.router.clone().oneshot(request)
    });
    let responses = futures_util::future::join_all(requests).await;
    assert!(
        responses
            .iter()
            .all(|response| response.as_ref().unwrap().status() == 401)
    );
    assert_eq!(
        provider.fetches(),
        2,
        "one fetch for the unknown kid, none more within the minute"
    );
}

#[tokio::test]
async fn a_key_rotated_at_the_provider_is_accepted_without_a_restart() {
    let old = SigningKey::rsa("2026-11");
    let provider = Provider::start(&[&old]).await;
    let backend = Backend::sqlite().await;
    let app = app_for(&backend, provider.people().await).await;
    let claims = provider.claims(&[SUPERVISORS]);
    assert_eq!(
        get_bearer(&app, "/api/v1/bots", &old.sign(&claims))
            .await
            .status,
        200
    );

    let new = SigningKey::ed25519("2026-12");
    provider.publish(&[&new]);
    assert_eq!(
        get_bearer(&app, "/api/v1/bots", &new.sign(&claims))
            .await
            .status,
        200
    );
    assert_eq!(provider.fetches(), 2);
}

#[tokio::test]
async fn app_tokens_work_while_the_provider_is_down() {
    let key = SigningKey::p256("ec-1");
    let provider = Provider::start(&[&key]).await;
    let settings = provider.settings();
    drop(provider);
    let people = People::new(&settings, 60).unwrap();
    people.warm_up().await;
    let backend = Backend::sqlite().await;
    let app = app_for(&backend, Arc::new(people)).await;
    seed(&app, "c-down").await;

    let app_read = app.get(&conversation_path("c-down"), &read_token()).await;
    assert_eq!(app_read.status, 200);
    let token = key.sign(&json!({
        "iss": settings.issuer, "aud": AUDIENCE, "sub": SUBJECT,
        "exp": unix_now() + 300, "groups": [SUPERVISORS],
    }));
    get_bearer(&app, &conversation_path("c-down"), &token)
        .await
        .assert_problem(401);
}

async fn reads_are_audited_with_their_actors(backend: Backend) {
    let key = SigningKey::p256("ec-1");
    let provider = Provider::start(&[&key]).await;
    let people = provider.people().await;
    let app = backend.app().await;
    let (recorder, writer) = audit::spawn(app.store.clone());
    let app = app.rebuilt(|state| state.with_people(Some(people)).with_audit(recorder));
    seed(&app, "c-audited").await;
    seed(&app, "c-other").await;

    let person = key.sign(&provider.claims(&[SUPERVISORS]));
    let auditor = key.sign(&provider.claims(&[AUDITORS]));
    assert_eq!(
        get_bearer(&app, &conversation_path("c-audited"), &person)
            .await
            .status,
        200
    );
    let events = format!("{}/events", conversation_path("c-audited"));
    assert_eq!(app.get(&events, &read_token()).await.status, 200);
    let stints = format!("/api/v1/bots/{BOT}/participants/agentId1/stints");
    assert_eq!(get_bearer(&app, &stints, &person).await.status, 200);
    assert_eq!(
        get_bearer(&app, &conversation_path("c-other"), &person)
            .await
            .status,
        200
    );
    // Refused reads are recorded with their status; a request without a valid token names
    // no one and is not.
    let elsewhere = format!("/api/v1/bots/{OTHER_BOT}/conversations/c-audited");
    assert_eq!(get_bearer(&app, &elsewhere, &person).await.status, 404);
    assert_eq!(app.get(&events, "not-a-token").await.status, 401);
    // Not a read of conversation data: not recorded.
    assert_eq!(get_bearer(&app, "/api/v1/bots", &person).await.status, 200);
    // HEAD runs the same query: recorded, as itself.
    let head = Request::head(conversation_path("c-other"))
        .header("token", read_token())
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(head).await.status, 200);

    // Shutdown writes what is queued.
    writer.finish(Duration::from_secs(10)).await;

    let page = get_bearer(&app, "/api/v1/audit?conversationId=c-audited", &auditor).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let items = page.body["items"].as_array().unwrap();
    let seen: Vec<(&str, &str, u64)> = items
        .iter()
        .map(|item| {
            (
                item["actor"].as_str().unwrap(),
                item["route"].as_str().unwrap(),
                item["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let person_actor = format!("user:{SUBJECT}");
    let app_actor = format!("app:{READ_APP}");
    assert_eq!(
        seen,
        [
            (
                person_actor.as_str(),
                "/api/v1/bots/{botId}/conversations/{conversationId}",
                404
            ),
            (
                app_actor.as_str(),
                "/api/v1/bots/{botId}/conversations/{conversationId}/events",
                200
            ),
            (
                person_actor.as_str(),
                "/api/v1/bots/{botId}/conversations/{conversationId}",
                200
            ),
        ],
        "newest first"
    );
    let person_read = &items[2];
    assert_eq!(person_read["actorName"], "Dana Scully");
    assert_eq!(person_read["actorEmail"], "dana@example.com");
    assert_eq!(person_read["botId"], BOT);
    assert_eq!(person_read["method"], "GET");
    assert_eq!(items[1]["actorName"], Value::Null);

    // By actor: the person's four reads, the stints naming the participant.
    let by_actor = get_bearer(
        &app,
        &format!("/api/v1/audit?actor=user:{SUBJECT}&limit=2"),
        &auditor,
    )
    .await;
    let first = by_actor.body["items"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    let cursor = by_actor.body["nextCursor"].as_str().expect("a next page");
    let rest = get_bearer(
        &app,
        &format!("/api/v1/audit?actor=user:{SUBJECT}&limit=2&cursor={cursor}"),
        &auditor,
    )
    .await;
    let second = rest.body["items"].as_array().unwrap().clone();
    assert_eq!(second.len(), 2);
    assert_eq!(rest.body["nextCursor"], Value::Null);
    let routes: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|item| item["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        [
            "/api/v1/bots/{botId}/conversations/{conversationId}",
            "/api/v1/bots/{botId}/conversations/{conversationId}",
            "/api/v1/bots/{botId}/participants/{identity}/stints",
            "/api/v1/bots/{botId}/conversations/{conversationId}",
        ]
    );
    assert_eq!(second[0]["participant"], "agentId1");
    assert_eq!(second[0]["conversationId"], Value::Null);

    let other = get_bearer(&app, "/api/v1/audit?conversationId=c-other", &auditor).await;
    let methods: Vec<(&str, &str)> = other.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["actor"].as_str().unwrap(),
                item["method"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [(app_actor.as_str(), "HEAD"), (person_actor.as_str(), "GET")]
    );

    // Reading the audit log needs `audit`.
    get_bearer(&app, "/api/v1/audit", &person)
        .await
        .assert_problem(403);
    app.get("/api/v1/audit", &read_token())
        .await
        .assert_problem(403);
    get_bearer(&app, "/api/v1/audit?cursor=nonsense", &auditor)
        .await
        .assert_problem(400);
}

on_both_backends!(reads_are_audited_with_their_actors);

/// The records of reads made just before SIGTERM are written before the process ends.
#[sqlx::test(migrations = false)]
async fn audit_records_survive_sigterm_right_after_the_reads(pool: PgPool) {
    let config = format!(
        "[[apps]]\napp_id = \"{WILDCARD_APP}\"\nsecret_env = \"WILDCARD_SECRET\"\nbots = [\"*\"]\n\
         permissions = [\"ingest\", \"read\"]\n"
    );
    let url = test_database_url(&pool);
    let mut service = Service::start(
        &config,
        &[("DATABASE_URL", &url), ("WILDCARD_SECRET", WILDCARD_SECRET)],
    );
    service.wait_for("/readyz", 200).await;
    let token = wildcard_token();
    let client = reqwest::Client::new();
    let posted = client
        .post(format!("{}/agentassist/api/v1/hooks/{BOT}", service.base))
        .header("token", &token)
        .header("content-type", "application/json")
        .body(batch("c-sigterm", vec![transfer("NA", "entry", "agentId1")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    for _ in 0..50 {
        let read = client
            .get(format!(
                "{}{}",
                service.base,
                conversation_path("c-sigterm")
            ))
            .header("token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
    }
    service.terminate();
    let exit = service.exit_within(PATIENCE).await.expect("it stops");
    assert!(exit.success(), "{}", service.output());
    // Each read's log line names who made it.
    let actor = format!("\"actor\":\"app:{WILDCARD_APP}\"");
    assert!(
        service
            .output()
            .lines()
            .any(|line| line.contains("finished processing request") && line.contains(&actor)),
        "{}",
        service.output()
    );

    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT actor, route, client_address FROM audit_log WHERE conversation_id = 'c-sigterm'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 50, "every read's record was written");
    for (actor, route, address) in rows {
        assert_eq!(actor, format!("app:{WILDCARD_APP}"));
        assert_eq!(route, "/api/v1/bots/{botId}/conversations/{conversationId}");
        assert_eq!(address.as_deref(), Some("127.0.0.1"));
    }
}

async fn audit_records_outlive_an_erasure_and_go_with_retention(backend: Backend) {
    let app = backend.app().await;
    let (recorder, writer) = audit::spawn(app.store.clone());
    let app = app.rebuilt(|state| state.with_audit(recorder));
    seed(&app, "c-erased").await;
    let path = conversation_path("c-erased");
    assert_eq!(app.get(&path, &erase_token()).await.status, 200);
    let erase = Request::delete(&path)
        .header("token", erase_token())
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(erase).await.status, 204);
    writer.finish(Duration::from_secs(10)).await;

    let of_conversation = AuditFilter {
        conversation_id: Some("c-erased".to_owned()),
        ..AuditFilter::default()
    };
    let kept = app.store.audit_page(&of_conversation, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "the read's record stays after the erasure");
    assert_eq!(kept[0].record.actor, format!("app:{ERASE_APP}"));

    // A record past retention goes; the recent one stays.
    let now = time::OffsetDateTime::now_utc();
    let old = AuditRecord {
        at: now - time::Duration::days(400),
        ..kept[0].record.clone()
    };
    app.store.audit_append(&[old]).await.unwrap();
    assert_eq!(
        app.store
            .audit_page(&of_conversation, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    let purged = app
        .store
        .audit_purge(now - time::Duration::days(365))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left = app.store.audit_page(&of_conversation, 10).await.unwrap();
    assert_eq!(left, kept);
}

mod retention {
    use super::*;
    on_both_backends!(audit_records_outlive_an_erasure_and_go_with_retention);
}
