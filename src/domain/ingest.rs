//! The hooks request body: wire JSON in, a validated [`IngestBatch`] out (SPEC 1.1).
//!
//! Every problem is collected with its JSON Pointer path instead of stopping at the first.

use super::types::{EventName, Experience, Participant, TransferType, Transition};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const MAX_EVENTS: usize = 100;
pub const MAX_CONVERSATION_ID_CHARS: usize = 256;
pub const MAX_TRANSFER_DATA_BYTES: usize = 16 * 1024;

/// One problem in a request body; `path` is a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all.
    Malformed(String),
    /// JSON, but breaking the rules of SPEC 1.1.
    Invalid(Vec<FieldError>),
}

/// A conversation id: 1–256 characters, none of them control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationId(String);

impl ConversationId {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_CONVERSATION_ID_CHARS {
            Err("must be 1 to 256 characters")
        } else if text.chars().any(char::is_control) {
            Err("must not contain control characters")
        } else {
            Ok(Self(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an event does to the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Transfer {
        transfer_type: TransferType,
        transition: Transition,
        participant: Participant,
    },
    EndOfConversation {
        participant: Option<Participant>,
    },
    TriggerSummary,
}

/// A validated event, with the exact JSON text it arrived as.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: Action,
    pub language: Option<String>,
    pub experience: Option<Experience>,
    pub transfer_data: Option<Value>,
    /// The event object exactly as received.
    pub payload: Box<RawValue>,
}

impl Event {
    /// Parses one stored event object again (its `payload`), as ingest did.
    pub fn reparse(payload: &RawValue) -> Result<Self, Vec<FieldError>> {
        let mut problems = Problems::default();
        parse_event(payload, "", &mut problems).ok_or(problems.0)
    }

    pub fn name(&self) -> EventName {
        match self.action {
            Action::Transfer { .. } => EventName::InternalTransferEvent,
            Action::EndOfConversation { .. } => EventName::EndOfConversation,
            Action::TriggerSummary => EventName::TriggerSummaryEvent,
        }
    }

    pub fn transfer_type(&self) -> Option<TransferType> {
        match self.action {
            Action::Transfer { transfer_type, .. } => Some(transfer_type),
            _ => None,
        }
    }

    pub fn transition(&self) -> Option<Transition> {
        match self.action {
            Action::Transfer { transition, .. } => Some(transition),
            _ => None,
        }
    }

    pub fn participant(&self) -> Option<&Participant> {
        match &self.action {
            Action::Transfer { participant, .. } => Some(participant),
            Action::EndOfConversation { participant } => participant.as_ref(),
            Action::TriggerSummary => None,
        }
    }
}

/// A validated request: every event of it is stored, or none.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub bot_id: String,
    pub conversation_id: ConversationId,
    pub events: Vec<Event>,
}

impl IngestBatch {
    /// Parses a hooks request body posted to `/hooks/{path_bot_id}`.
    pub fn parse(body: &[u8], path_bot_id: &str) -> Result<Self, BodyError> {
        let root: &RawValue = serde_json::from_slice(body)
            .map_err(|error| BodyError::Malformed(format!("body is not valid JSON: {error}")))?;
        let mut problems = Problems::default();
        let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(root.get()) else {
            problems.add("", "must be a JSON object");
            return Err(problems.into_error());
        };

        let conversation_id = match string_field(&fields, "conversationId", "", &mut problems) {
            Some(text) => ConversationId::parse(&text)
                .map_err(|message| problems.add("/conversationId", message))
                .ok(),
            None => None,
        };
        let bot_id = string_field(&fields, "botId", "", &mut problems);
        if let Some(bot_id) = &bot_id
            && bot_id != path_bot_id
        {
            problems.add("/botId", "must equal the botId in the request path");
        }
        let events = parse_events(fields.get("events").copied(), &mut problems);

        match (conversation_id, bot_id, events) {
            (Some(conversation_id), Some(bot_id), Some(events)) if problems.is_empty() => {
                Ok(Self {
                    bot_id,
                    conversation_id,
                    events,
                })
            }
            _ => Err(problems.into_error()),
        }
    }
}

#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_error(self) -> BodyError {
        BodyError::Invalid(self.0)
    }
}

/// A required string member of the top-level object.
fn string_field(
    fields: &BTreeMap<String, &RawValue>,
    key: &str,
    parent: &str,
    problems: &mut Problems,
) -> Option<String> {
    let path = format!("{parent}/{key}");
    match fields
        .get(key)
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
    {
        None | Some(Ok(Value::Null)) => {
            problems.add(path, "is required");
            None
        }
        Some(Ok(Value::String(text))) => Some(text),
        Some(_) => {
            problems.add(path, "must be a string");
            None
        }
    }
}

fn parse_events(raw: Option<&RawValue>, problems: &mut Problems) -> Option<Vec<Event>> {
    let Some(raw) = raw.filter(|raw| raw.get() != "null") else {
        problems.add("/events", "is required");
        return None;
    };
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
        problems.add("/events", "must be an array");
        return None;
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        problems.add("/events", format!("must hold 1 to {MAX_EVENTS} events"));
        return None;
    }
    let before = problems.0.len();
    let events: Vec<Event> = items
        .into_iter()
        .enumerate()
        .filter_map(|(index, raw)| parse_event(raw, &format!("/events/{index}"), problems))
        .collect();
    (problems.0.len() == before).then_some(events)
}

fn parse_event(raw: &RawValue, path: &str, problems: &mut Problems) -> Option<Event> {
    let Ok(object) = serde_json::from_str::<Map<String, Value>>(raw.get()) else {
        problems.add(path, "must be an object");
        return None;
    };
    let fields = Fields {
        object: &object,
        path,
    };
    let before = problems.0.len();
    let name = match object.get("name") {
        None | Some(Value::Null) => {
            problems.add(format!("{path}/name"), "is required");
            None
        }
        Some(Value::String(name)) => {
            let parsed = EventName::parse(name);
            if parsed.is_none() {
                problems.add(
                    format!("{path}/name"),
                    "unsupported event; must be one of INTERNAL_TRANSFER_EVENT, END_OF_CONVERSATION, TRIGGER_SUMMARY_EVENT",
                );
            }
            parsed
        }
        Some(_) => {
            problems.add(format!("{path}/name"), "must be a string");
            None
        }
    }?;

    let language = fields.optional_string("language", 35, problems);
    let (action, experience, transfer_data) = match name {
        EventName::InternalTransferEvent => {
            // The vendor's field is `transfertype`; `transferType` is tolerated as an alias.
            let transfer_type_key = if object.contains_key("transfertype") {
                "transfertype"
            } else if object.contains_key("transferType") {
                "transferType"
            } else {
                "transfertype"
            };
            let transfer_type = fields.required_enum(
                transfer_type_key,
                TransferType::parse,
                "must be one of NA, COLD, WARM, REDIAL",
                problems,
            );
            let transition = fields.required_enum(
                "transition",
                Transition::parse,
                "must be one of entry, exit",
                problems,
            );
            fields.required_flag("isExtAD", problems);
            let experience = fields.required_enum(
                "experience",
                Experience::parse,
                "must be one of chat, voice, email",
                problems,
            );
            let participant = match object.get("participant") {
                None | Some(Value::Null) => {
                    problems.add(format!("{path}/participant"), "is required");
                    None
                }
                Some(value) => parse_participant(value, &format!("{path}/participant"), problems),
            };
            let transfer_data = fields.transfer_data(problems);
            let action = match (transfer_type, transition, participant) {
                (Some(transfer_type), Some(transition), Some(participant)) => Action::Transfer {
                    transfer_type,
                    transition,
                    participant,
                },
                _ => return None,
            };
            (action, experience, transfer_data)
        }
        EventName::EndOfConversation => {
            fields.optional_string("reason", usize::MAX, problems);
            let experience = match object.get("experience") {
                None | Some(Value::Null) => None,
                Some(_) => fields.required_enum(
                    "experience",
                    Experience::parse,
                    "must be one of chat, voice, email",
                    problems,
                ),
            };
            let participant = match object.get("participant") {
                None | Some(Value::Null) => None,
                Some(value) => parse_participant(value, &format!("{path}/participant"), problems),
            };
            (Action::EndOfConversation { participant }, experience, None)
        }
        EventName::TriggerSummaryEvent => {
            if let Some(data) = object.get("data")
                && !data.is_object()
                && !data.is_null()
            {
                problems.add(format!("{path}/data"), "must be an object");
            }
            (Action::TriggerSummary, None, None)
        }
    };

    (problems.0.len() == before).then(|| Event {
        action,
        language,
        experience,
        transfer_data,
        payload: raw.to_owned(),
    })
}

/// The members of one event object, with the path to report problems at.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    path: &'a str,
}

impl Fields<'_> {
    fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.path)
    }

    fn required_enum<T>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
        expected: &str,
        problems: &mut Problems,
    ) -> Option<T> {
        match self.object.get(key) {
            None | Some(Value::Null) => {
                problems.add(self.at(key), "is required");
                None
            }
            Some(Value::String(text)) => {
                let parsed = parse(text);
                if parsed.is_none() {
                    problems.add(self.at(key), expected);
                }
                parsed
            }
            Some(_) => {
                problems.add(self.at(key), format!("must be a string; {expected}"));
                None
            }
        }
    }

    /// A boolean, or the strings `"true"`/`"false"`, as the vendor's samples send both.
    fn required_flag(&self, key: &str, problems: &mut Problems) -> Option<bool> {
        match self.object.get(key) {
            None | Some(Value::Null) => {
                problems.add(self.at(key), "is required");
                None
            }
            Some(Value::Bool(flag)) => Some(*flag),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Some(true),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Some(false),
            Some(_) => {
                problems.add(self.at(key), "must be true or false");
                None
            }
        }
    }

    fn optional_string(
        &self,
        key: &str,
        max_chars: usize,
        problems: &mut Problems,
    ) -> Option<String> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.chars().count() <= max_chars => Some(text.clone()),
            Some(Value::String(_)) => {
                problems.add(
                    self.at(key),
                    format!("must be at most {max_chars} characters"),
                );
                None
            }
            Some(_) => {
                problems.add(self.at(key), "must be a string");
                None
            }
        }
    }

    fn transfer_data(&self, problems: &mut Problems) -> Option<Value> {
        let data = self.object.get("transferData")?;
        if data.is_null() {
            return None;
        }
        let size = serde_json::to_vec(data).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_TRANSFER_DATA_BYTES {
            problems.add(
                self.at("transferData"),
                format!("must be at most {MAX_TRANSFER_DATA_BYTES} bytes serialized"),
            );
            return None;
        }
        Some(data.clone())
    }
}

fn parse_participant(value: &Value, path: &str, problems: &mut Problems) -> Option<Participant> {
    let Value::Object(object) = value else {
        problems.add(path, "must be an object");
        return None;
    };
    let mut text = |key: &str, min: usize, max: usize| match object.get(key) {
        None | Some(Value::Null) => {
            problems.add(format!("{path}/{key}"), "is required");
            None
        }
        Some(Value::String(text)) => {
            let chars = text.chars().count();
            if (min..=max).contains(&chars) {
                Some(text.clone())
            } else {
                problems.add(
                    format!("{path}/{key}"),
                    format!("must be {min} to {max} characters"),
                );
                None
            }
        }
        Some(_) => {
            problems.add(format!("{path}/{key}"), "must be a string");
            None
        }
    };
    let identity = text("identity", 1, 256);
    let name = text("name", 0, 256);
    let kind = text("type", 1, 64);
    if let Some(custom) = object.get("customFields")
        && !custom.is_object()
        && !custom.is_null()
    {
        problems.add(format!("{path}/customFields"), "must be an object");
        return None;
    }
    Some(Participant {
        identity: identity?,
        name: name?,
        kind: kind?,
    })
}
