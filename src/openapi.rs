//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and the types they return; served at `GET /openapi.json`, printed by
//! `agentassist-hooks openapi` and committed as `docs/openapi.json`.

use crate::error::Problem;
use crate::routes::{conversations, health, hooks, paths};
use serde::Deserialize;
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::openapi::example::Example;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OneOfBuilder, RefOr, Schema, Type};
use utoipa::{Modify, OpenApi, ToSchema};

/// The vendor documentation's curl sample, as written.
const VENDOR_CURL_SAMPLE: &str = include_str!("../docs/examples/vendor-sample.json");
/// The vendor documentation's JavaScript payloads, in the order of its scenarios.
const VENDOR_JAVASCRIPT_SAMPLES: &str = include_str!("../docs/examples/vendor-javascript.json");

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
    paths(
        hooks::ingest,
        conversations::conversation,
        conversations::events,
        conversations::list,
        conversations::participant_stints,
        conversations::transfer_data,
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi,
    ),
    components(schemas(Problem)),
    modifiers(&Security, &IngestAliases, &VendorExamples),
    tags(
        (name = "ingest", description = "Hook events in (SPEC 1)"),
        (name = "query", description = "Timelines out, for operations staff (SPEC 4)"),
        (name = "operations", description = "Probes, metrics and this document (SPEC 5)"),
    )
)]
struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
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

// `domain::ingest` parses the body by hand, so that it can report every problem; the types
// below only describe it (their limits are checked against the parser's in the tests).

/// The hooks request body (SPEC 1.1): all of its events are stored, or none. Unknown
/// members are accepted, and every event is stored exactly as received.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    /// 1–256 characters, no control characters.
    #[schema(min_length = 1, max_length = 256, example = "c-xxxx")]
    pub conversation_id: String,
    /// Must equal the path's `botId`; at most 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128, example = "st-XXXX-XXXX-XXXX-XXXX")]
    pub bot_id: String,
    /// 1–100 events, stored in this order, all or none.
    #[schema(min_items = 1, max_items = 100)]
    pub events: Vec<HookEvent>,
}

/// One event, by `name`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "name")]
pub enum HookEvent {
    /// An agent entered or left the conversation.
    #[serde(rename = "INTERNAL_TRANSFER_EVENT")]
    InternalTransferEvent(TransferEvent),
    /// The conversation ended: open stints are closed with exit type `END`.
    #[serde(rename = "END_OF_CONVERSATION")]
    EndOfConversation(EndOfConversationEvent),
    /// Recorded only.
    #[serde(rename = "TRIGGER_SUMMARY_EVENT")]
    TriggerSummaryEvent(TriggerSummaryEvent),
}

/// An `INTERNAL_TRANSFER_EVENT`. Enumerated strings are matched case-insensitively (the
/// vendor's documentation writes both `cold` and `COLD`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferEvent {
    /// `NA`, `COLD`, `WARM` or `REDIAL`, in any case; `transferType` is accepted as an alias.
    #[serde(rename = "transfertype")]
    #[schema(
        pattern = "^([Nn][Aa]|[Cc][Oo][Ll][Dd]|[Ww][Aa][Rr][Mm]|[Rr][Ee][Dd][Ii][Aa][Ll])$",
        example = "COLD"
    )]
    pub transfertype: String,
    /// `entry` or `exit`, in any case.
    #[schema(
        pattern = "^([Ee][Nn][Tt][Rr][Yy]|[Ee][Xx][Ii][Tt])$",
        example = "entry"
    )]
    pub transition: String,
    /// A boolean, or the string `"true"` or `"false"` (the vendor's samples send both).
    #[serde(rename = "isExtAD")]
    #[schema(schema_with = is_ext_ad)]
    pub is_ext_ad: Value,
    /// `chat`, `voice` or `email`, in any case.
    #[schema(
        pattern = "^([Cc][Hh][Aa][Tt]|[Vv][Oo][Ii][Cc][Ee]|[Ee][Mm][Aa][Ii][Ll])$",
        example = "voice"
    )]
    pub experience: String,
    /// At most 35 characters; `null` counts as absent.
    #[schema(max_length = 35, example = "en")]
    pub language: Option<String>,
    pub participant: HookParticipant,
    /// Context the leaving agent hands to the next one: any JSON value, at most 16 KiB
    /// serialized; the latest is served by the transfer-data query.
    #[schema(value_type = Option<serde_json::Value>)]
    pub transfer_data: Option<Value>,
}

/// An `END_OF_CONVERSATION`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndOfConversationEvent {
    pub reason: Option<String>,
    #[schema(max_length = 35)]
    pub language: Option<String>,
    /// `chat`, `voice` or `email`, in any case.
    #[schema(pattern = "^([Cc][Hh][Aa][Tt]|[Vv][Oo][Ii][Cc][Ee]|[Ee][Mm][Aa][Ii][Ll])$")]
    pub experience: Option<String>,
    pub participant: Option<HookParticipant>,
}

/// A `TRIGGER_SUMMARY_EVENT`.
#[derive(Deserialize, ToSchema)]
pub struct TriggerSummaryEvent {
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

/// Who entered or left.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookParticipant {
    /// Participants are keyed by it.
    #[schema(min_length = 1, max_length = 256, example = "agentId1")]
    pub identity: String,
    #[schema(max_length = 256, example = "AgentName1")]
    pub name: String,
    /// e.g. `agent`, `bot`, `supervisor`.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 64, example = "agent")]
    pub kind: String,
    /// Free-form: `agentEmail`, `queueId`, `queueName`, …
    #[schema(value_type = Option<Object>)]
    pub custom_fields: Option<Value>,
}

/// `isExtAD`: a JSON boolean or the strings `"true"`/`"false"` in any case.
fn is_ext_ad() -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$")),
        )
        .description(Some(
            "A boolean, or the string \"true\" or \"false\" (the vendor's samples send both)",
        ))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::idempotency::MAX_KEY_LEN;
    use crate::domain::ingest::{MAX_BOT_ID_CHARS, MAX_CONVERSATION_ID_CHARS, MAX_EVENTS};

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
