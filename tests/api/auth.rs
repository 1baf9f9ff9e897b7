//! SPEC 2 through HTTP: which tokens get in (200), which are refused (401) and which are
//! authenticated but not allowed (403). The fine-grained rules are unit-tested in `auth.rs`.

on_both_backends!(
    valid_tokens_are_accepted,
    invalid_tokens_are_refused_with_401,
    enabled_algorithms_and_strict_options_apply,
    an_app_without_the_bot_or_the_permission_gets_403,
);

use crate::common::*;
use agentassist_hooks::config::AuthSettings;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed(algorithm: Algorithm, claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn hs256(claims: Value) -> String {
    signed(Algorithm::HS256, &claims, INGEST_SECRET)
}

async fn status_for(app: &TestApp, token: &str) -> u16 {
    let body = batch("c-auth", vec![transfer("NA", "entry", "a1")]).to_string();
    let response = app.send(hooks_request(BOT, token, body)).await;
    if response.status != 200 {
        response.assert_problem(response.status.as_u16());
        if response.status == 401 {
            assert_eq!(
                response.body["detail"], "invalid token",
                "no hint which check failed"
            );
        }
    }
    response.status.as_u16()
}

async fn valid_tokens_are_accepted(backend: Backend) {
    let app = backend.app().await;
    let accepted = [
        (
            "HS256 with appId only, like the vendor's sample",
            hs256(json!({ "appId": INGEST_APP })),
        ),
        (
            "signed with the rotated secret",
            signed(
                Algorithm::HS256,
                &json!({ "appId": INGEST_APP }),
                ROTATED_SECRET,
            ),
        ),
        ("app named by iss", hs256(json!({ "iss": INGEST_APP }))),
        (
            "future exp",
            hs256(json!({ "appId": INGEST_APP, "exp": now() + 600 })),
        ),
        (
            "millisecond dates",
            hs256(json!({ "appId": INGEST_APP, "iat": now() * 1000, "exp": (now() + 600) * 1000 })),
        ),
        (
            "nbf in the past",
            hs256(json!({ "appId": INGEST_APP, "nbf": now() - 10 })),
        ),
    ];

    for (case, token) in accepted {
        assert_eq!(status_for(&app, &token).await, 200, "{case}");
    }
}

async fn invalid_tokens_are_refused_with_401(backend: Backend) {
    let app = backend.app().await;
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({ "appId": INGEST_APP }).to_string())
    );
    let refused = [
        ("empty token", String::new()),
        ("garbage", "not-a-jwt".to_owned()),
        (
            "bad signature",
            signed(
                Algorithm::HS256,
                &json!({ "appId": INGEST_APP }),
                "some-other-secret-some-other-secret",
            ),
        ),
        ("alg none", unsigned),
        (
            "HS512, not enabled",
            signed(
                Algorithm::HS512,
                &json!({ "appId": INGEST_APP }),
                INGEST_SECRET,
            ),
        ),
        ("unknown app", hs256(json!({ "appId": "cs-unknown" }))),
        ("no app claim", hs256(json!({ "sub": "someone" }))),
        (
            "expired",
            hs256(json!({ "appId": INGEST_APP, "exp": now() - 3600 })),
        ),
        (
            "expired in milliseconds",
            hs256(json!({ "appId": INGEST_APP, "exp": (now() - 3600) * 1000 })),
        ),
        (
            "exp as a string",
            hs256(json!({ "appId": INGEST_APP, "exp": (now() + 600).to_string() })),
        ),
        (
            "iat in the future",
            hs256(json!({ "appId": INGEST_APP, "iat": now() + 3600 })),
        ),
        (
            "nbf in the future",
            hs256(json!({ "appId": INGEST_APP, "nbf": now() + 3600 })),
        ),
    ];

    for (case, token) in refused {
        assert_eq!(status_for(&app, &token).await, 401, "{case}");
    }
}

async fn enabled_algorithms_and_strict_options_apply(backend: Backend) {
    let auth = AuthSettings {
        algorithms: vec!["HS256".into(), "HS512".into()],
        require_exp: true,
        max_token_age_seconds: Some(300),
        ..Default::default()
    };
    let app = backend.app_with(auth, Default::default()).await;

    let hs512 = signed(
        Algorithm::HS512,
        &json!({ "appId": INGEST_APP, "iat": now(), "exp": now() + 60 }),
        INGEST_SECRET,
    );
    let without_exp = hs256(json!({ "appId": INGEST_APP, "iat": now() }));
    let too_old = hs256(json!({ "appId": INGEST_APP, "iat": now() - 3600, "exp": now() + 60 }));

    assert_eq!(status_for(&app, &hs512).await, 200, "HS512 once enabled");
    assert_eq!(status_for(&app, &without_exp).await, 401, "require_exp");
    assert_eq!(
        status_for(&app, &too_old).await,
        401,
        "max_token_age_seconds"
    );
}

async fn an_app_without_the_bot_or_the_permission_gets_403(backend: Backend) {
    let app = backend.app().await;
    let body = |bot: &str| {
        let mut body = batch("c-auth", vec![transfer("NA", "entry", "a1")]);
        body["botId"] = json!(bot);
        body.to_string()
    };

    let other_bot = app
        .send(hooks_request(OTHER_BOT, &ingest_token(), body(OTHER_BOT)))
        .await;
    let read_only = app.send(hooks_request(BOT, &read_token(), body(BOT))).await;
    let wildcard = app
        .send(hooks_request(OTHER_BOT, &wildcard_token(), body(OTHER_BOT)))
        .await;

    other_bot.assert_problem(403);
    read_only.assert_problem(403);
    assert_eq!(wildcard.status, 200, "\"*\" allows every bot");
    assert_eq!(app.event_count().await, 1);
}
