//! SPEC 6: no input, however malformed, may produce a 500, crash the process or leave a
//! partial write. A corpus of hand-written hostile bodies, tokens, headers, paths and query
//! strings, each answered with a 4xx problem document and nothing stored, plus a bounded
//! random-body property test; all through the real router on both backends.

on_both_backends!(
    malformed_bodies_are_refused_with_a_4xx_problem_and_store_nothing,
    hostile_tokens_are_refused_with_401,
    hostile_headers_are_refused_with_a_4xx_problem,
    huge_and_numerous_unrelated_headers_do_not_disturb_a_valid_request,
    hostile_paths_are_refused_with_a_4xx_problem,
    garbage_query_strings_are_refused_with_a_4xx_problem,
    the_longest_values_the_spec_allows_are_stored_and_read_back,
    random_bodies_never_get_a_5xx_nor_store_what_was_refused,
);

use crate::common::*;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

const HOOKS: &str = "/agentassist/api/v1/hooks";
const CONVERSATION: &str = "c-hostile";

fn valid_body() -> Value {
    batch(CONVERSATION, vec![transfer("NA", "entry", "agentId1")])
}

fn valid_text() -> String {
    valid_body().to_string()
}

fn post_request(path: &str, token: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("token", token)
        .body(body.into())
        .unwrap()
}

fn post_bytes(body: impl Into<Vec<u8>>) -> Request<Body> {
    post_request(&format!("{HOOKS}/{BOT}"), &ingest_token(), body.into())
}

/// A post of the valid body with `header` set (replacing any default of that name).
fn post_valid_with(name: &str, value: HeaderValue) -> Request<Body> {
    let mut request = post_bytes(valid_text());
    request
        .headers_mut()
        .insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
    request
}

/// A post of the valid body whose only token is `value` in header `name`.
fn post_valid_with_token(name: &str, value: HeaderValue) -> Request<Body> {
    let mut request = post_valid_with(name, value);
    if name != "token" {
        request.headers_mut().remove("token");
    }
    request
}

/// Sends `request` and insists on a 4xx problem document.
async fn refused(app: &TestApp, case: &str, request: Request<Body>) -> TestResponse {
    let response = app.send(request).await;
    assert!(
        response.status.is_client_error(),
        "{case}: expected a 4xx, got {} {}",
        response.status,
        response.body
    );
    assert_eq!(
        response.headers["content-type"], "application/problem+json",
        "{case}"
    );
    assert_eq!(response.body["status"], response.status.as_u16(), "{case}");
    response
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(
        app.event_count().await,
        0,
        "a refused request stores nothing"
    );
    assert_eq!(
        app.conversation_count().await,
        0,
        "not even a conversation row"
    );
}

/// `body` with the value at JSON Pointer `at` replaced by `raw`, JSON text of any kind.
fn with_raw(at: &str, raw: &str) -> Vec<u8> {
    const MARK: &str = "\u{E000}mark\u{E000}";
    let mut body = valid_body();
    *body.pointer_mut(at).expect("pointer into the valid body") = json!(MARK);
    body.to_string()
        .replace(&json!(MARK).to_string(), raw)
        .into_bytes()
}

/// `body` with the raw bytes `bytes` in place of the conversation id's text.
fn with_bytes_in_conversation_id(bytes: &[u8]) -> Vec<u8> {
    let text = valid_text();
    let (before, after) = text.split_once(CONVERSATION).unwrap();
    [before.as_bytes(), bytes, after.as_bytes()].concat()
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

/// A token with the given header and claims JSON texts, HMAC-signed with `secret`.
fn token_with(header: &str, claims: &str, algorithm: Algorithm, secret: &str) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let key = EncodingKey::from_secret(secret.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm).unwrap();
    format!("{message}.{signature}")
}

async fn malformed_bodies_are_refused_with_a_4xx_problem_and_store_nothing(backend: Backend) {
    let app = backend.app().await;
    let valid = valid_text();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty body".into(), vec![]),
        (
            "conversationId cut mid-way".into(),
            br#"{"conversationId":"#.to_vec(),
        ),
        ("null".into(), b"null".to_vec()),
        ("an empty array".into(), b"[]".to_vec()),
        ("a string".into(), br#""string""#.to_vec()),
        ("a number".into(), b"0".to_vec()),
        ("true".into(), b"true".to_vec()),
        ("an empty object".into(), b"{}".to_vec()),
        ("whitespace only".into(), b" \n\t\r ".to_vec()),
        ("a raw NUL byte".into(), b"\0".to_vec()),
        (
            "raw NUL bytes between tokens".into(),
            valid.replace(',', ",\0").into_bytes(),
        ),
        (
            "a raw NUL byte inside a string".into(),
            with_bytes_in_conversation_id(b"c\0d"),
        ),
        (
            "an escaped NUL in conversationId".into(),
            with_raw("/conversationId", r#""c\u0000""#),
        ),
        (
            "an escaped NUL in the participant identity".into(),
            with_raw("/events/0/participant/identity", r#""agent\u0000""#),
        ),
        (
            "an escaped NUL in the participant name".into(),
            with_raw("/events/0/participant/name", r#""\u0000""#),
        ),
        (
            "an escaped NUL in language".into(),
            with_raw("/events/0/language", r#""e\u0000n""#),
        ),
        (
            "an escaped NUL in transferData".into(),
            with_raw(
                "/events/0/language",
                r#""en","transferData":{"k":"\u0000"}"#,
            ),
        ),
        (
            "an escaped NUL in a member name".into(),
            with_raw("/events/0/language", r#""en","\u0000":1"#),
        ),
        (
            "a lone high surrogate in conversationId".into(),
            with_raw("/conversationId", r#""\ud800""#),
        ),
        (
            "a lone low surrogate in the identity".into(),
            with_raw("/events/0/participant/identity", r#""\udc00""#),
        ),
        (
            "reversed surrogates in a member name".into(),
            with_raw("/events/0/language", r#""en","\udc00\ud800":1"#),
        ),
        (
            "a lone surrogate in an ignored top-level member".into(),
            with_raw("/botId", r#""st-1234","extra":"\ud800""#),
        ),
        (
            "invalid UTF-8 inside a string".into(),
            with_bytes_in_conversation_id(b"\xff\xfe"),
        ),
        (
            "an overlong UTF-8 encoding".into(),
            with_bytes_in_conversation_id(b"\xc0\xaf"),
        ),
        (
            "a truncated UTF-8 sequence".into(),
            with_bytes_in_conversation_id(b"\xe2\x82"),
        ),
        (
            "a UTF-8 encoded surrogate".into(),
            with_bytes_in_conversation_id(b"\xed\xa0\x80"),
        ),
        (
            "invalid UTF-8 outside strings".into(),
            b"\xff\xfe{}".to_vec(),
        ),
        (
            "1e400 as conversationId".into(),
            with_raw("/conversationId", "1e400"),
        ),
        (
            "2^64 as conversationId".into(),
            with_raw("/conversationId", "18446744073709551616"),
        ),
        (
            "-0 as conversationId".into(),
            with_raw("/conversationId", "-0"),
        ),
        (
            "1e400 as isExtAD".into(),
            with_raw("/events/0/isExtAD", "1e400"),
        ),
        (
            "-1e400 as transferData".into(),
            with_raw("/events/0/language", r#""en","transferData":-1e400"#),
        ),
        (
            "1e400 in an ignored top-level member".into(),
            with_raw("/botId", r#""st-1234","extra":1e400"#),
        ),
        (
            "a 1000-digit integer".into(),
            with_raw("/events/0/participant/name", &"9".repeat(1000)),
        ),
        ("10,000 nested arrays".into(), nested(10_000).into_bytes()),
        (
            "10,000 nested objects".into(),
            format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)).into_bytes(),
        ),
        (
            "10,000 unclosed arrays".into(),
            "[".repeat(10_000).into_bytes(),
        ),
        (
            "10,000 nested arrays as transferData".into(),
            with_raw(
                "/events/0/language",
                &format!(r#""en","transferData":{}"#, nested(10_000)),
            ),
        ),
        (
            "10,000 nested arrays in an ignored top-level member".into(),
            with_raw(
                "/botId",
                &format!(r#""st-1234","extra":{}"#, nested(10_000)),
            ),
        ),
        (
            "101 events".into(),
            batch(CONVERSATION, vec![transfer("NA", "entry", "a"); 101])
                .to_string()
                .into_bytes(),
        ),
        (
            "a duplicate top-level key".into(),
            with_raw("/botId", r#""st-1234","conversationId":"c-other""#),
        ),
        (
            "a duplicate event key".into(),
            with_raw("/events/0/language", r#""en","transition":"exit""#),
        ),
        (
            "a duplicate participant key".into(),
            with_raw(
                "/events/0/participant/identity",
                r#""agentId1","identity":"agentId2""#,
            ),
        ),
        (
            "a byte order mark before the JSON".into(),
            [b"\xef\xbb\xbf".as_slice(), valid.as_bytes()].concat(),
        ),
        ("trailing garbage".into(), format!("{valid}x").into_bytes()),
        ("a trailing brace".into(), format!("{valid}}}").into_bytes()),
        (
            "two JSON documents".into(),
            format!("{valid}{valid}").into_bytes(),
        ),
        (
            "a trailing NUL byte".into(),
            [valid.as_bytes(), b"\0"].concat(),
        ),
        (
            "a 100,000-character conversationId".into(),
            with_raw("/conversationId", &json!("c".repeat(100_000)).to_string()),
        ),
        (
            "257 non-BMP characters as conversationId".into(),
            with_raw("/conversationId", &json!("🦀".repeat(257)).to_string()),
        ),
        (
            "a 100,000-character botId".into(),
            with_raw("/botId", &json!("b".repeat(100_000)).to_string()),
        ),
        ("single quotes".into(), valid.replace('"', "'").into_bytes()),
        (
            "a trailing comma".into(),
            valid.replace("]}", "],}").into_bytes(),
        ),
        ("a comment".into(), format!("/* hi */{valid}").into_bytes()),
        ("NaN".into(), with_raw("/events/0/isExtAD", "NaN")),
        ("Infinity".into(), with_raw("/events/0/isExtAD", "Infinity")),
        ("a hex number".into(), with_raw("/events/0/isExtAD", "0x1")),
    ];
    for cut in 0..valid.len() {
        cases.push((
            format!("truncated after {cut} bytes"),
            valid.as_bytes()[..cut].to_vec(),
        ));
    }
    let required = [
        "/conversationId",
        "/botId",
        "/events",
        "/events/0",
        "/events/0/name",
        "/events/0/transfertype",
        "/events/0/transition",
        "/events/0/isExtAD",
        "/events/0/experience",
        "/events/0/participant",
        "/events/0/participant/identity",
        "/events/0/participant/name",
        "/events/0/participant/type",
        "/events/0/language",
    ];
    let wrong_types = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1.5),
        json!([]),
        json!(["x"]),
        json!({}),
        json!({ "x": "y" }),
    ];
    for at in required {
        for wrong in &wrong_types {
            let fine = (at == "/events/0/isExtAD" && wrong.is_boolean())
                || (at == "/events/0/language" && wrong.is_null());
            if !fine {
                cases.push((format!("{wrong} at {at}"), with_raw(at, &wrong.to_string())));
            }
        }
    }

    for (case, body) in cases {
        let response = refused(&app, &case, post_bytes(body)).await;

        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{case}");
    }
    let over_the_limit = with_raw(
        "/events/0/language",
        &format!(r#""en","padding":"{}""#, "x".repeat(300 * 1024)),
    );
    let response = refused(&app, "a 300 KiB body", post_bytes(over_the_limit)).await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_nothing_stored(&app).await;
}

async fn hostile_tokens_are_refused_with_401(backend: Backend) {
    let app = backend.app().await;
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = format!(r#"{{"appId":"{INGEST_APP}"}}"#);
    let signed =
        |header: &str, claims: &str| token_with(header, claims, Algorithm::HS256, INGEST_SECRET);
    let text = |value: &str| HeaderValue::from_str(value).unwrap();
    let cases: Vec<(&str, &str, HeaderValue)> = vec![
        ("empty token", "token", text("")),
        ("empty auth", "auth", text("")),
        ("Bearer alone", "authorization", text("Bearer")),
        ("Bearer and spaces", "authorization", text("Bearer    ")),
        ("Bearer in the token header", "token", text("Bearer")),
        (
            "another scheme",
            "authorization",
            text("Basic dXNlcjpwYXNz"),
        ),
        ("three dots", "token", text("...")),
        ("two dots", "token", text("..")),
        ("no dots", "token", text("abc")),
        (
            "three empty parts, Bearer",
            "authorization",
            text("Bearer .."),
        ),
        (
            "a 20 KB token",
            "token",
            text(&format!(
                "{}.{}.c2ln",
                "a".repeat(10_000),
                "b".repeat(10_000)
            )),
        ),
        (
            "non-ASCII bytes in token",
            "token",
            HeaderValue::from_bytes(b"\xff\xfe.\x80.\xc3\xa9").unwrap(),
        ),
        (
            "non-ASCII bytes in auth",
            "auth",
            HeaderValue::from_bytes(b"eyJ\xe9.eyJ\xe9.sig").unwrap(),
        ),
        (
            "non-ASCII bytes after Bearer",
            "authorization",
            HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap(),
        ),
        (
            "alg none without a signature",
            "token",
            text(&format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&claims))),
        ),
        (
            "alg none with a signature",
            "token",
            text(&format!(
                "{}.{}.c2ln",
                b64(r#"{"alg":"none"}"#),
                b64(&claims)
            )),
        ),
        (
            "alg NONE",
            "token",
            text(&format!("{}.{}.", b64(r#"{"alg":"NONE"}"#), b64(&claims))),
        ),
        (
            "alg RS256, HMAC-signed with the app's secret",
            "token",
            text(&signed(r#"{"alg":"RS256"}"#, &claims)),
        ),
        (
            "alg HS512, not enabled",
            "token",
            text(&token_with(
                r#"{"alg":"HS512"}"#,
                &claims,
                Algorithm::HS512,
                INGEST_SECRET,
            )),
        ),
        (
            "claims that are an array",
            "token",
            text(&signed(hs256, &format!(r#"["{INGEST_APP}"]"#))),
        ),
        (
            "claims that are a string",
            "token",
            text(&signed(hs256, &format!(r#""{INGEST_APP}""#))),
        ),
        (
            "a header that is an array",
            "token",
            text(&signed(r#"["HS256"]"#, &claims)),
        ),
        (
            "exp: 1e400",
            "token",
            text(&signed(
                hs256,
                &format!(r#"{{"appId":"{INGEST_APP}","exp":1e400}}"#),
            )),
        ),
        (
            "exp as a string",
            "token",
            text(&signed(
                hs256,
                &format!(r#"{{"appId":"{INGEST_APP}","exp":"never"}}"#),
            )),
        ),
        (
            "exp in 1970",
            "token",
            text(&signed(
                hs256,
                &format!(r#"{{"appId":"{INGEST_APP}","exp":1}}"#),
            )),
        ),
        (
            "nbf far in the future",
            "token",
            text(&signed(
                hs256,
                &format!(r#"{{"appId":"{INGEST_APP}","nbf":99999999999}}"#),
            )),
        ),
        (
            "an appId with a lone surrogate",
            "token",
            text(&signed(hs256, r#"{"appId":"\ud800"}"#)),
        ),
        (
            "an appId that is a number",
            "token",
            text(&signed(hs256, r#"{"appId":7}"#)),
        ),
        (
            "signed with another app's secret",
            "token",
            text(&token_with(hs256, &claims, Algorithm::HS256, READ_SECRET)),
        ),
        (
            "signed with an empty secret",
            "token",
            text(&token_with(hs256, &claims, Algorithm::HS256, "")),
        ),
        (
            "a signature that is not base64url",
            "token",
            text(&format!("{}.{}.!!!!", b64(hs256), b64(&claims))),
        ),
        (
            "header and claims that are not base64url",
            "token",
            text("e30=.e30=.e30="),
        ),
        (
            "a valid token with a fourth part",
            "token",
            text(&format!("{}.extra", ingest_token())),
        ),
    ];

    for (case, name, value) in cases {
        let response = refused(&app, case, post_valid_with_token(name, value)).await;

        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(response.body["detail"], "invalid token", "{case}");
    }
    let mut no_token = post_bytes(valid_text());
    no_token.headers_mut().remove("token");
    let response = refused(&app, "no token header", no_token).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_nothing_stored(&app).await;
}

async fn hostile_headers_are_refused_with_a_4xx_problem(backend: Backend) {
    let app = backend.app().await;
    let text = |value: &str| HeaderValue::from_str(value).unwrap();
    let big = "x".repeat(60 * 1024);
    let cases: Vec<(&str, &str, HeaderValue)> = vec![
        ("a 60 KB token header", "token", text(&big)),
        (
            "a 60 KB Authorization header",
            "authorization",
            text(&format!("Bearer {big}")),
        ),
        (
            "a 60 KB Content-Type",
            "content-type",
            text(&format!("application/json{big}")),
        ),
        (
            "a 60 KB charset",
            "content-type",
            text(&format!("application/json; charset={big}")),
        ),
        ("no media type", "content-type", text("")),
        ("text/plain", "content-type", text("text/plain")),
        ("a wildcard", "content-type", text("*/*")),
        (
            "problem+json",
            "content-type",
            text("application/problem+json"),
        ),
        (
            "a UTF-16 charset",
            "content-type",
            text("application/json; charset=utf-16"),
        ),
        (
            "an empty charset",
            "content-type",
            text(r#"application/json; charset="""#),
        ),
        (
            "garbage parameters and a second, wrong charset",
            "content-type",
            text(r#"application/json;;; =;"; charset=utf-8; charset=latin1"#),
        ),
        (
            "non-ASCII bytes in Content-Type",
            "content-type",
            HeaderValue::from_bytes(b"application/json; charset=utf-8\xff").unwrap(),
        ),
        (
            "a media type with trailing garbage",
            "content-type",
            text("application/json\\u0000"),
        ),
    ];
    for (case, name, value) in cases {
        if name == "content-type" {
            refused(&app, case, post_valid_with(name, value)).await;
        } else {
            refused(&app, case, post_valid_with_token(name, value)).await;
        }
    }

    let mut no_content_type = post_bytes(valid_text());
    no_content_type.headers_mut().remove("content-type");
    refused(&app, "no Content-Type", no_content_type).await;

    let mut many_tokens = post_bytes(valid_text());
    many_tokens.headers_mut().remove("token");
    for index in 0..90 {
        many_tokens
            .headers_mut()
            .append("token", text(&format!("garbage-{index}")));
    }
    many_tokens
        .headers_mut()
        .append("token", text(&ingest_token()));
    let response = refused(&app, "90 garbage token headers first", many_tokens).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);

    let mut many_content_types = post_bytes(valid_text());
    many_content_types.headers_mut().remove("content-type");
    for _ in 0..90 {
        many_content_types
            .headers_mut()
            .append("content-type", text("text/plain"));
    }
    refused(&app, "90 text/plain Content-Types", many_content_types).await;

    let mut many_headers_and_garbage = post_bytes("{garbage");
    for index in 0..90 {
        many_headers_and_garbage.headers_mut().insert(
            HeaderName::from_bytes(format!("x-junk-{index}").as_bytes()).unwrap(),
            text(&big[..600]),
        );
    }
    refused(
        &app,
        "90 headers and a garbage body",
        many_headers_and_garbage,
    )
    .await;
    assert_nothing_stored(&app).await;
}

async fn huge_and_numerous_unrelated_headers_do_not_disturb_a_valid_request(backend: Backend) {
    let app = backend.app().await;
    let mut request = post_bytes(valid_text());
    let headers = request.headers_mut();
    headers.insert(
        "x-huge",
        HeaderValue::from_str(&"x".repeat(30 * 1024)).unwrap(),
    );
    headers.insert(
        "x-binary",
        HeaderValue::from_bytes(b"\xff\xfe\x80").unwrap(),
    );
    for index in 0..90 {
        headers.insert(
            HeaderName::from_bytes(format!("x-extra-{index}").as_bytes()).unwrap(),
            HeaderValue::from_static("value"),
        );
    }

    let response = app.send(request).await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(app.event_count().await, 1);
}

async fn hostile_paths_are_refused_with_a_4xx_problem(backend: Backend) {
    let app = backend.app().await;
    let body_for = |bot: &str| {
        let mut body = valid_body();
        body["botId"] = json!(bot);
        body.to_string()
    };
    let long = "b".repeat(60_000);
    let ingest_cases: Vec<(&str, String, String, String)> = vec![
        (
            "invalid UTF-8 in botId",
            format!("{HOOKS}/%FF%FE"),
            wildcard_token(),
            body_for("\u{FFFD}\u{FFFD}"),
        ),
        (
            "a percent-encoded NUL in botId",
            format!("{HOOKS}/%00"),
            wildcard_token(),
            body_for("\0"),
        ),
        (
            "a percent-encoded NUL after the bot id",
            format!("{HOOKS}/{BOT}%00"),
            wildcard_token(),
            body_for(&format!("{BOT}\0")),
        ),
        (
            "a 1,000-character botId that does not compress",
            format!("{HOOKS}/{}", percent_encode(&wide_text(1000, 9))),
            wildcard_token(),
            body_for(&wide_text(1000, 9)),
        ),
        (
            "a 60,000-character botId",
            format!("{HOOKS}/{long}"),
            wildcard_token(),
            body_for(&long),
        ),
        (
            "an encoded slash and dot-dot in botId",
            format!("{HOOKS}/..%2F..%2F{BOT}"),
            ingest_token(),
            body_for(&format!("../../{BOT}")),
        ),
        (
            "an empty botId",
            format!("{HOOKS}/"),
            wildcard_token(),
            body_for(""),
        ),
        (
            "an extra path segment",
            format!("{HOOKS}/{BOT}/extra"),
            ingest_token(),
            valid_text(),
        ),
        (
            "a stray percent sign",
            format!("{HOOKS}/{BOT}%%%"),
            ingest_token(),
            body_for(&format!("{BOT}%%%")),
        ),
    ];
    for (case, path, token, body) in ingest_cases {
        refused(&app, case, post_request(&path, &token, body)).await;
    }

    let mut read_cases = vec![
        format!("/api/v1/bots/%FF/conversations"),
        format!("/api/v1/bots/%00/conversations"),
        format!("/api/v1/bots/{BOT}/conversations/%FF%FE"),
        format!("/api/v1/bots/{BOT}/conversations/%00"),
        format!("/api/v1/bots/{BOT}/conversations/c%00/events"),
        format!("/api/v1/bots/{BOT}/conversations/%00/transfer-data"),
        format!("/api/v1/bots/{BOT}/participants/%00/stints"),
        format!("/api/v1/bots/{BOT}/participants/%C0%AF/stints"),
        format!("/api/v1/bots/{BOT}/conversations/{long}"),
        format!("/api/v1/bots/{BOT}/conversations/{long}/events"),
        format!("/api/v1/bots/{long}/conversations/c-1"),
        format!("/api/v1/bots/{BOT}/conversations/%"),
        "/%%%".to_owned(),
        format!("/{long}"),
    ];
    read_cases.push(format!(
        "/api/v1/bots/{BOT}/conversations/{}",
        "%F0%9F".repeat(1000)
    ));
    for path in read_cases {
        refused(&app, &path, get_with(&path, &wildcard_token())).await;
    }

    let wrong_method = Request::put(format!("{HOOKS}/{BOT}"))
        .header("token", ingest_token())
        .body(Body::from(valid_text()))
        .unwrap();
    refused(&app, "PUT on the hooks path", wrong_method).await;
    assert_nothing_stored(&app).await;
}

fn get_with(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header("token", token)
        .body(Body::empty())
        .unwrap()
}

async fn garbage_query_strings_are_refused_with_a_4xx_problem(backend: Backend) {
    let app = backend.app().await;
    let list = format!("/api/v1/bots/{BOT}/conversations");
    let stints = format!("/api/v1/bots/{BOT}/participants/agentId1/stints");
    let events = format!("/api/v1/bots/{BOT}/conversations/c-1/events");
    let cursor = |json: Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let cases = vec![
        format!("{list}?limit=-1"),
        format!("{list}?limit=0"),
        format!("{list}?limit=501"),
        format!("{list}?limit=99999999999999999999"),
        format!("{list}?limit=1e3"),
        format!("{list}?limit="),
        format!("{list}?limit=%00"),
        format!("{list}?limit=%FF"),
        format!("{list}?limit=1&limit=abc"),
        format!("{list}?cursor=%%%"),
        format!("{list}?cursor="),
        format!("{list}?cursor=AAAA"),
        format!("{list}?cursor={}", "A".repeat(10_000)),
        format!(
            "{list}?cursor={}",
            cursor(json!({ "last_event_at": "yesterday", "conversation_id": "c" }))
        ),
        format!(
            "{list}?cursor={}",
            cursor(json!({ "last_event_at": "2026-01-01T00:00:00Z", "conversation_id": "c\u{0}" }))
        ),
        format!(
            "{list}?cursor={}",
            cursor(json!({ "last_event_at": "9999-12-31T23:59:59-23:59", "conversation_id": "c" }))
        ),
        format!("{list}?from=yesterday"),
        format!("{list}?to=2026-13-45T00:00:00Z"),
        format!("{list}?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
        format!("{list}?from=9999-12-31T23:59:59-23:59"),
        format!("{list}?to=9999-12-31T23:59:59.999999999-00:01"),
        format!("{list}?from=%00"),
        format!("{list}?status=deleted"),
        format!("{list}?status=%00"),
        format!("{list}?participant="),
        format!("{list}?participant=%00"),
        format!("{list}?participant=agent%00"),
        format!("{stints}?limit=-1"),
        format!("{stints}?from=yesterday"),
        format!("{stints}?from=9999-12-31T23:59:59-23:59"),
        format!(
            "{stints}?cursor={}",
            cursor(
                json!({ "joined_at": "2026-01-01T00:00:00Z", "conversation_id": "c\u{0}", "ordinal": 1 })
            )
        ),
        format!(
            "{stints}?cursor={}",
            cursor(
                json!({ "joined_at": "9999-12-31T23:59:59-23:59", "conversation_id": "c", "ordinal": 1 })
            )
        ),
        format!(
            "{stints}?cursor={}",
            b64(r#"{"joined_at":"2026-01-01T00:00:00Z","conversation_id":"c","ordinal":1e400}"#)
        ),
        format!(
            "{stints}?cursor={}",
            b64(
                r#"{"joined_at":"2026-01-01T00:00:00Z","conversation_id":"c","ordinal":4294967296}"#
            )
        ),
        format!("{events}?afterSeq=-1"),
        format!("{events}?afterSeq=abc"),
        format!("{events}?afterSeq=99999999999999999999"),
        format!("{events}?limit=1001"),
    ];
    for path in cases {
        refused(&app, &path, get_with(&path, &read_token())).await;
    }
}

/// Characters of four UTF-8 bytes each that do not compress, to reach the byte limits
/// of database indexes with the longest values SPEC 1.1 allows.
fn wide_text(chars: usize, salt: u32) -> String {
    (0..chars as u32)
        .map(|index| char::from_u32(0x1_0000 + (index * 7919 + salt * 104_729) % 0xF_0000).unwrap())
        .collect()
}

async fn the_longest_values_the_spec_allows_are_stored_and_read_back(backend: Backend) {
    let app = backend.app().await;
    let conversation = wide_text(256, 1);
    let identity = wide_text(256, 2);
    let mut event = transfer("COLD", "entry", &identity);
    event["participant"]["name"] = json!(wide_text(256, 3));
    event["participant"]["type"] = json!(wide_text(64, 4));
    event["language"] = json!(wide_text(35, 5));
    let body = batch(&conversation, vec![event]);

    let response = app.post_events(BOT, &body).await;

    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(app.event_count().await, 1);
    let stints = app
        .get(
            &format!(
                "/api/v1/bots/{BOT}/participants/{}/stints",
                percent_encode(&identity)
            ),
            &read_token(),
        )
        .await;
    assert_eq!(stints.status, StatusCode::OK, "{}", stints.body);
    assert_eq!(
        stints.body["items"][0]["conversationId"],
        json!(conversation)
    );

    let widest_bot = wide_text(128, 6);
    let mut body = body;
    body["botId"] = json!(widest_bot);
    let path = format!("{HOOKS}/{}", percent_encode(&widest_bot));
    let response = app
        .send(post_request(&path, &wildcard_token(), body.to_string()))
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    let too_wide = wide_text(129, 6);
    body["botId"] = json!(too_wide);
    let path = format!("{HOOKS}/{}", percent_encode(&too_wide));
    let response = refused(
        &app,
        "a 129-character botId",
        post_request(&path, &wildcard_token(), body.to_string()),
    )
    .await;
    assert_eq!(response.error_paths(), ["/botId"]);
    assert_eq!(app.event_count().await, 2);
}

fn percent_encode(text: &str) -> String {
    text.bytes().map(|byte| format!("%{byte:02X}")).collect()
}

/// Random bodies, from byte soup to one-byte edits of a valid body: never a 5xx, and the
/// store grows only by what a 200 said it accepted. Deterministic, 64 cases.
async fn random_bodies_never_get_a_5xx_nor_store_what_was_refused(backend: Backend) {
    let app = backend.app().await;
    let valid = valid_text().into_bytes();
    let edited = valid.clone();
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(
            prop::sample::select(vec![
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"",
                "\\u0000",
                "\\ud800",
                "1e400",
                "-0",
                "null",
                "\"events\"",
                "\"conversationId\"",
                "\"botId\"",
                "\"st-1234\"",
                "\"name\"",
                "\"INTERNAL_TRANSFER_EVENT\"",
                "\u{feff}",
                "\u{0}",
                " ",
            ]),
            0..48,
        )
        .prop_map(|tokens| tokens.concat().into_bytes()),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(move |(at, byte)| {
            let mut body = edited.clone();
            let index = at.index(body.len());
            body[index] = byte;
            body
        }),
        any::<prop::sample::Index>().prop_map(move |at| valid[..at.index(valid.len())].to_vec()),
    ];
    let mut runner = TestRunner::deterministic();
    let mut stored = 0;

    for _ in 0..64 {
        let body = bodies.new_tree(&mut runner).expect("a body").current();

        let response = app.send(post_bytes(body.clone())).await;

        let shown = String::from_utf8_lossy(&body);
        assert!(
            response.status.as_u16() < 500,
            "{shown:?}: {} {}",
            response.status,
            response.body
        );
        if response.status == StatusCode::OK {
            stored += response.body["accepted"].as_i64().expect("accepted count");
        } else {
            assert_eq!(
                response.headers["content-type"], "application/problem+json",
                "{shown:?}"
            );
        }
        assert_eq!(app.event_count().await, stored, "{shown:?}");
    }
}
