//! The OpenAPI 3.1 description of the HTTP API: the router mounts each documented handler
//! with its `#[utoipa::path]` (utoipa-axum), so a route and its description cannot part;
//! served at `GET /openapi.json`, printed by `agentassist-hooks openapi` and committed as
//! `docs/openapi.json`.

use super::paths;
use crate::error::Problem;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::openapi::RefOr;
use utoipa::openapi::example::Example;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// The vendor documentation's curl sample, as written.
const VENDOR_CURL_SAMPLE: &str = include_str!("../../docs/examples/vendor-sample.json");
/// The vendor documentation's JavaScript payloads, in the order of its scenarios.
const VENDOR_JAVASCRIPT_SAMPLES: &str = include_str!("../../docs/examples/vendor-javascript.json");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentassist-hooks",
        description = "Ingests Kore.ai Agent AI internal-transfer hooks (the vendor's \"Hooks API \
for Internal Transfers\" wire format, with its documented inconsistencies) and keeps \
per-conversation participant timelines that operations staff query.\n\n\
Authentication: a JWT (HS256 by default) naming the app in claim `appId` (else `iss`), sent \
in header `token`; headers `auth` and `Authorization: Bearer <jwt>` are accepted too, in that \
order of precedence. Ingest needs the app's `ingest` permission for the path's bot, the query \
API its `read` permission.\n\n\
Every error is `application/problem+json` (RFC 9457) and also carries the vendor-style `code` \
and `message`. Every response carries `x-request-id` (propagated when the request had one).\n\n\
`/healthz`, `/readyz`, `/metrics` and `/openapi.json` need no token; `/metrics` belongs on an \
internal network (firewall it, or set `server.metrics = false`).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&Security),
    tags(
        (name = "ingest", description = "Events in: the hooks API (SPEC 1), Bright Pattern and Salesforce (SPEC 7)"),
        (name = "query", description = "Timelines out, for operations staff (SPEC 4), and the change feed (SPEC 8)"),
        (name = "stats", description = "Operations metrics: per agent, queue and hour, and now (SPEC 11)"),
        (name = "operations", description = "Probes, metrics and this document (SPEC 5)"),
        (name = "webhooks", description = "The change feed pushed to subscribers: how delivery goes (SPEC 12)"),
        (name = "audit", description = "Who read which conversation (SPEC 13)"),
    )
)]
struct ApiDoc;

/// `GET /openapi.json`: the document, as served.
#[utoipa::path(
    get,
    path = paths::OPENAPI,
    tag = "operations",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    description = "The OpenAPI 3.1 description of every endpoint; no token needed. The same \
document is committed as `docs/openapi.json` and printed by `agentassist-hooks openapi`.",
    responses((status = 200, description = "The document.", body = Object, content_type = "application/json")),
    security(())
)]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

/// The document: what this module says of the API as a whole, the operations of every
/// documented route (see [`super::documented`]), and the ingest aliases and vendor samples.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(super::documented())
        .into_openapi();
    IngestAliases.modify(&mut document);
    VendorExamples.modify(&mut document);
    document
}

/// The document as pretty JSON with a final newline, exactly as `docs/openapi.json` holds it.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// The JWT header scheme.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "token",
                "A JWT signed with one of the app's secrets, naming the app in claim `appId` \
                 (else `iss`). Also accepted: header `auth`, or `Authorization: Bearer <jwt>`.",
            ))),
        );
    }
}

/// The ingest operation again at the two other paths the vendor's documentation uses.
struct IngestAliases;

impl Modify for IngestAliases {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(ingest) = openapi.paths.paths.get(paths::HOOKS).cloned() else {
            return;
        };
        let aliases = paths::HOOKS_ALIASES
            .into_iter()
            .zip(["ingestAgentai", "ingestShort"])
            .map(|(alias, operation_id)| {
                let mut item = ingest.clone();
                if let Some(operation) = item.post.as_mut() {
                    operation.operation_id = Some(operation_id.to_owned());
                    operation.summary =
                        Some(format!("Append hook events (alias of {})", paths::HOOKS));
                }
                (alias.to_owned(), item)
            });
        // Listed right after the canonical path.
        let others = std::mem::take(&mut openapi.paths.paths)
            .into_iter()
            .collect::<Vec<_>>();
        let (first, rest) = others.split_at(1);
        openapi.paths.paths = first
            .iter()
            .cloned()
            .chain(aliases)
            .chain(rest.iter().cloned())
            .collect();
    }
}

/// The vendor's samples as request examples: the curl body and the JavaScript payloads.
struct VendorExamples;

#[derive(Deserialize)]
struct NamedExample {
    name: String,
    summary: String,
    value: Value,
}

impl Modify for VendorExamples {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let curl: Value =
            serde_json::from_str(VENDOR_CURL_SAMPLE).expect("the vendor curl sample is JSON");
        let javascript: Vec<NamedExample> = serde_json::from_str(VENDOR_JAVASCRIPT_SAMPLES)
            .expect("the vendor JavaScript samples are a list of named examples");
        let examples = std::iter::once(NamedExample {
            name: "vendorCurl".to_owned(),
            summary: "The vendor's curl sample: isExtAD as a string".to_owned(),
            value: curl,
        })
        .chain(javascript);

        let Some(content) = openapi
            .paths
            .paths
            .get_mut(paths::HOOKS)
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut())
            .and_then(|body| body.content.get_mut("application/json"))
        else {
            return;
        };
        for example in examples {
            let mut documented = Example::new();
            documented.summary = example.summary;
            documented.value = Some(example.value);
            content.examples.insert(example.name, RefOr::T(documented));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::idempotency::MAX_KEY_LEN;
    use crate::domain::ingest::{MAX_BOT_ID_CHARS, MAX_CONVERSATION_ID_CHARS, MAX_EVENTS};
    use crate::routes::conversations;
    use crate::routes::hooks::HookRequest;

    fn doc() -> Value {
        serde_json::from_str(json()).unwrap()
    }

    #[test]
    fn request_limits_match_the_parser() {
        let doc = doc();
        let request = &doc["components"]["schemas"]["HookRequest"]["properties"];
        assert_eq!(request["events"]["maxItems"], MAX_EVENTS);
        assert_eq!(
            request["conversationId"]["maxLength"],
            MAX_CONVERSATION_ID_CHARS
        );
        assert_eq!(request["botId"]["maxLength"], MAX_BOT_ID_CHARS);
        let key = doc["paths"][paths::HOOKS]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == "Idempotency-Key")
            .unwrap()
            .clone();
        assert_eq!(key["schema"]["maxLength"], MAX_KEY_LEN);
        assert_eq!(
            doc["components"]["schemas"]["IngestResponse"]["properties"]["accepted"]["maximum"],
            MAX_EVENTS
        );
    }

    #[test]
    fn query_limits_match_the_handlers() {
        let doc = doc();
        let limit = |path: &str| {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|parameter| parameter["name"] == "limit")
                .map(|parameter| parameter["schema"].clone())
                .unwrap()
        };
        for (path, (default, max)) in [
            (paths::EVENTS, conversations::EVENTS_LIMIT),
            (paths::CONVERSATIONS, conversations::LIST_LIMIT),
            (paths::STINTS, conversations::LIST_LIMIT),
        ] {
            let schema = limit(path);
            assert_eq!(schema["default"], default, "{path}");
            assert_eq!(schema["maximum"], max, "{path}");
            assert_eq!(schema["minimum"], 1, "{path}");
        }
    }

    #[test]
    fn vendor_samples_fit_the_request_type() {
        let curl: Result<HookRequest, _> = serde_json::from_str(VENDOR_CURL_SAMPLE);
        assert!(curl.is_ok(), "{:?}", curl.err());
        let samples: Vec<NamedExample> = serde_json::from_str(VENDOR_JAVASCRIPT_SAMPLES).unwrap();
        for sample in samples {
            let parsed: Result<HookRequest, _> = serde_json::from_value(sample.value);
            assert!(parsed.is_ok(), "{}: {:?}", sample.name, parsed.err());
        }
    }
}
