//! The OpenAPI document: the committed `docs/openapi.json` is what the service serves, every
//! documented operation is routed, and the vendor samples it shows as examples are accepted.

use crate::common::*;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::Value;

const COMMITTED: &str = include_str!("../../docs/openapi.json");
const REGENERATE: &str = "cargo run -q -- openapi > docs/openapi.json";

async fn served(app: &TestApp) -> Value {
    let response = app.get("/openapi.json", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "application/json");
    response.body
}

#[tokio::test]
async fn the_committed_document_is_what_the_service_serves() {
    let app = Backend::sqlite().await.app().await;

    let served = served(&app).await;

    let committed: Value = serde_json::from_str(COMMITTED).expect("docs/openapi.json is JSON");
    assert!(
        committed == served,
        "docs/openapi.json differs from the document the service serves at /openapi.json; \
         regenerate it with `{REGENERATE}` and commit it"
    );
    assert_eq!(served["openapi"], "3.1.0");
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = Backend::sqlite().await.app().await;
    let document = served(&app).await;

    let paths = document["paths"].as_object().unwrap();
    let mut operations = 0;
    for (template, item) in paths {
        // Any value routes: path parameters are single segments.
        let path = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            operations += 1;
            let request = Request::builder()
                .method(method.clone())
                .uri(&path)
                .body(Body::empty())
                .unwrap();

            let response = app.send(request).await;

            // Without a token a routed API path answers 401; the probes answer 200 (or 503
            // while the database is away).
            let secured = operation.get("security").is_some_and(|security| {
                security
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|requirement| requirement.get("token").is_some())
            });
            let expected: &[u16] = if secured { &[401] } else { &[200, 503] };
            assert!(
                expected.contains(&response.status.as_u16()),
                "{method} {template} answered {}: is it routed? {}",
                response.status,
                response.body
            );
        }
    }
    assert_eq!(
        operations, 23,
        "3 hooks paths, 3 for Bright Pattern and Salesforce, the bots and 5 queries, the erasure, \
         the change feed and its stream, the stats and now, the webhooks, the audit log, 4 operator \
         endpoints"
    );
}

#[tokio::test]
async fn the_vendor_samples_shown_as_examples_are_accepted() {
    let app = Backend::sqlite().await.app().await;
    let document = served(&app).await;
    let examples = document["paths"]["/agentassist/api/v1/hooks/{botId}"]["post"]
        ["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .unwrap()
        .clone();
    // The curl sample, then the JavaScript payloads in the order of the vendor's scenarios.
    let names = [
        "vendorCurl",
        "naEntry",
        "coldEntry",
        "coldExit",
        "warmEntry",
        "warmExit",
        "naExit",
    ];
    let mut listed: Vec<&str> = examples.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut expected = names.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected);

    let mut statuses = Vec::new();
    for name in names {
        let body = &examples[name]["value"];
        let bot = body["botId"].as_str().unwrap();

        let response = app
            .send(hooks_request(bot, &wildcard_token(), body.to_string()))
            .await;

        assert_eq!(response.status, 200, "{name}: {}", response.body);
        statuses.push((name, response.body["conversationStatus"].clone()));
    }
    assert_eq!(
        statuses.last().unwrap(),
        &("naExit", Value::from("ended")),
        "the JavaScript scenario ends the conversation: {statuses:?}"
    );
}
