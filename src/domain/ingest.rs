//! The hooks request body: wire JSON in, a validated [`IngestBatch`] out (SPEC 1.1).
//!
//! Every problem is collected with its JSON Pointer path instead of stopping at the first.

use super::types::{EventName, Experience, Participant, TransferType, Transition};
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use utoipa::ToSchema;

pub const MAX_EVENTS: usize = 100;
pub const MAX_CONVERSATION_ID_CHARS: usize = 256;
/// Bounded so that the keys that hold it stay within PostgreSQL's index row size.
pub const MAX_BOT_ID_CHARS: usize = 128;
pub const MAX_TRANSFER_DATA_BYTES: usize = 16 * 1024;
/// Problems found by the whole-body scan are reported up to this many.
const MAX_SCAN_PROBLEMS: usize = 100;

/// One problem in a request body; `path` is a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
    /// Bright Pattern's `InteractionData`, delivered to `agent` (SPEC 7.1): no presence
    /// changes; its members merge into the conversation's `interaction`.
    InteractionData {
        agent: Participant,
        interaction: Map<String, Value>,
    },
    /// Data an agent hands over on a transfer (SPEC 7.1), kept in the event's
    /// `transfer_data`.
    TransferData {
        participant: Participant,
    },
    /// The bot asks to hand the session over to one of `targets` (SPEC 7.2).
    BotEscalation {
        bot: Participant,
        targets: Vec<Value>,
    },
    /// The client routed the session the bot escalated.
    BotTransferSucceeded {
        bot: Participant,
    },
    /// Routing failed, for `reason`.
    BotTransferFailed {
        bot: Participant,
        reason: String,
    },
}

/// A validated event, with the exact JSON text it arrived as.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: Action,
    pub language: Option<String>,
    pub experience: Option<Experience>,
    /// `transferData` exactly as received.
    pub transfer_data: Option<Box<RawValue>>,
    /// The event object exactly as received.
    pub payload: Box<RawValue>,
}

impl Event {
    /// Parses one stored event object again (its `payload`), as ingest did.
    pub fn reparse(payload: &RawValue) -> Result<Self, Vec<FieldError>> {
        let mut problems = Problems::default();
        let value = serde_json::from_str(payload.get()).unwrap_or(Value::Null);
        parse_event(payload, &value, "", &mut problems).ok_or(problems.0)
    }

    /// The queue its participant came from: `customFields.queueName`, else `queueId` (a
    /// string or a number), as the agent desktop sends them (SPEC 11.1).
    pub fn queue(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Sent {
            participant: Option<SentParticipant>,
        }
        #[derive(serde::Deserialize)]
        struct SentParticipant {
            #[serde(rename = "customFields")]
            custom_fields: Option<Map<String, Value>>,
        }
        let sent: Sent = serde_json::from_str(self.payload.get()).ok()?;
        let fields = sent.participant?.custom_fields?;
        let text = |name: &str| match fields.get(name)? {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        };
        text("queueName").or_else(|| text("queueId"))
    }

    pub fn name(&self) -> EventName {
        match self.action {
            Action::Transfer { .. } => EventName::InternalTransferEvent,
            Action::EndOfConversation { .. } => EventName::EndOfConversation,
            Action::TriggerSummary => EventName::TriggerSummaryEvent,
            Action::InteractionData { .. } => EventName::InteractionData,
            Action::TransferData { .. } => EventName::TransferData,
            Action::BotEscalation { .. } => EventName::BotEscalation,
            Action::BotTransferSucceeded { .. } => EventName::BotTransferSucceeded,
            Action::BotTransferFailed { .. } => EventName::BotTransferFailed,
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
            Action::Transfer { participant, .. } | Action::TransferData { participant } => {
                Some(participant)
            }
            Action::EndOfConversation { participant } => participant.as_ref(),
            Action::TriggerSummary => None,
            Action::InteractionData { agent, .. } => Some(agent),
            Action::BotEscalation { bot, .. }
            | Action::BotTransferSucceeded { bot }
            | Action::BotTransferFailed { bot, .. } => Some(bot),
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
        Self::parse_fingerprinted(body, path_bot_id, false).0
    }

    /// As [`IngestBatch::parse`], and with `fingerprint` the body's
    /// [`body_fingerprint`](super::idempotency::body_fingerprint) too, from the same read.
    ///
    /// The body is read once: its members and each event's value are built by the visitor
    /// that also finds what no field rule sees ([`scan`]), each event's exact text is cut
    /// out on the way (the stored payload), and the canonical form is written from the
    /// values. Only a body that read cannot take whole (not JSON, or a value serde_json
    /// cannot hold) is read again, member by member, so that every problem is reported.
    pub fn parse_fingerprinted(
        body: &[u8],
        path_bot_id: &str,
        fingerprint: bool,
    ) -> (Result<Self, BodyError>, Option<String>) {
        match read_once(body) {
            Some(Ok(read)) => {
                let fingerprint = fingerprint.then(|| read.fingerprint());
                (read.validate(path_bot_id), fingerprint)
            }
            Some(Err(())) => {
                let mut problems = Problems::default();
                problems.add("", "must be a JSON object");
                (Err(problems.into_error()), None)
            }
            None => (read_member_by_member(body, path_bot_id), None),
        }
    }
}

/// What a hooks body holds, as the rules need it.
struct Read<'a> {
    /// The top-level members, by name (the last of a repeated name).
    members: BTreeMap<String, Member<'a>>,
    /// What no field rule sees ([`scan`]).
    scanned: Vec<FieldError>,
}

enum Member<'a> {
    Value(Value),
    /// An array of events: each one's exact text and its value.
    Events(Vec<(&'a RawValue, Value)>),
    /// Not readable as a value (only when read member by member).
    Unreadable,
}

impl Read<'_> {
    fn validate(self, path_bot_id: &str) -> Result<IngestBatch, BodyError> {
        let mut problems = Problems::default();
        let conversation_id = match string_member(
            self.members.get("conversationId"),
            "/conversationId",
            &mut problems,
        ) {
            Some(text) => ConversationId::parse(&text)
                .map_err(|message| problems.add("/conversationId", message))
                .ok(),
            None => None,
        };
        let bot_id = string_member(self.members.get("botId"), "/botId", &mut problems);
        if let Some(bot_id) = &bot_id {
            if bot_id != path_bot_id {
                problems.add("/botId", "must equal the botId in the request path");
            } else if bot_id.chars().count() > MAX_BOT_ID_CHARS
                || bot_id.chars().any(char::is_control)
            {
                problems.add(
                    "/botId",
                    format!(
                        "must be at most {MAX_BOT_ID_CHARS} characters, none of them control characters"
                    ),
                );
            }
        }
        let events = parse_events(self.members.get("events"), &mut problems);
        problems.merge_scanned(self.scanned);

        match (conversation_id, bot_id, events) {
            (Some(conversation_id), Some(bot_id), Some(events)) if problems.is_empty() => {
                Ok(IngestBatch {
                    bot_id,
                    conversation_id,
                    events,
                })
            }
            _ => Err(problems.into_error()),
        }
    }

    /// The body's fingerprint, as `body_fingerprint` computes it from the whole body.
    fn fingerprint(&self) -> String {
        let mut canonical = String::from("{");
        for (index, (name, member)) in self.members.iter().enumerate() {
            if index > 0 {
                canonical.push(',');
            }
            canonical.push_str(&Value::String(name.clone()).to_string());
            canonical.push(':');
            match member {
                Member::Value(value) => super::idempotency::write_canonical(value, &mut canonical),
                Member::Events(events) => {
                    canonical.push('[');
                    for (index, (_, value)) in events.iter().enumerate() {
                        if index > 0 {
                            canonical.push(',');
                        }
                        super::idempotency::write_canonical(value, &mut canonical);
                    }
                    canonical.push(']');
                }
                Member::Unreadable => {}
            }
        }
        canonical.push('}');
        super::idempotency::json_fingerprint(&canonical)
    }
}

/// The one read: `None` when the body is not JSON, or holds a value serde_json cannot
/// (the slower read then says where); `Some(Err(()))` when it is JSON but not an object.
fn read_once(body: &[u8]) -> Option<Result<Read<'_>, ()>> {
    let mut path = String::new();
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let top = TopLevel {
        path: &mut path,
        found: &mut found,
    }
    .deserialize(&mut deserializer)
    .ok()?;
    deserializer.end().ok()?;
    Some(top.map(|members| Read {
        members,
        scanned: found,
    }))
}

/// The same, member by member, for a body the one read could not take whole: every
/// member that can be read is, so that every problem is reported with its place.
fn read_member_by_member(body: &[u8], path_bot_id: &str) -> Result<IngestBatch, BodyError> {
    let root: &RawValue = serde_json::from_slice(body)
        .map_err(|error| BodyError::Malformed(format!("body is not valid JSON: {error}")))?;
    let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(root.get()) else {
        let mut problems = Problems::default();
        problems.add("", "must be a JSON object");
        return Err(problems.into_error());
    };
    let members = fields
        .into_iter()
        .map(|(name, raw)| {
            let member = if name == "events" {
                match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
                    Ok(items) => Member::Events(
                        items
                            .into_iter()
                            .map(|item| {
                                (
                                    item,
                                    serde_json::from_str(item.get()).unwrap_or(Value::Null),
                                )
                            })
                            .collect(),
                    ),
                    Err(_) => {
                        serde_json::from_str(raw.get()).map_or(Member::Unreadable, Member::Value)
                    }
                }
            } else {
                serde_json::from_str(raw.get()).map_or(Member::Unreadable, Member::Value)
            };
            (name, member)
        })
        .collect();
    Read {
        members,
        scanned: scan(root.get()),
    }
    .validate(path_bot_id)
}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<FieldError>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the problems `scan` found that no field rule reported at the same place.
    pub(super) fn merge_scanned(&mut self, scanned: Vec<FieldError>) {
        for problem in scanned {
            if !self.0.iter().any(|known| known.path == problem.path) {
                self.0.push(problem);
            }
        }
    }

    pub(super) fn into_error(self) -> BodyError {
        BodyError::Invalid(self.0)
    }
}

/// A required string member of the top-level object.
fn string_member(member: Option<&Member>, path: &str, problems: &mut Problems) -> Option<String> {
    match member {
        None | Some(Member::Value(Value::Null)) => {
            problems.add(path, "is required");
            None
        }
        Some(Member::Value(Value::String(text))) => Some(text.clone()),
        Some(_) => {
            problems.add(path, "must be a string");
            None
        }
    }
}

fn parse_events(member: Option<&Member>, problems: &mut Problems) -> Option<Vec<Event>> {
    let items = match member {
        None | Some(Member::Value(Value::Null)) => {
            problems.add("/events", "is required");
            return None;
        }
        Some(Member::Events(items)) => items,
        Some(_) => {
            problems.add("/events", "must be an array");
            return None;
        }
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        problems.add("/events", format!("must hold 1 to {MAX_EVENTS} events"));
        return None;
    }
    let before = problems.0.len();
    let events: Vec<Event> = items
        .iter()
        .enumerate()
        .filter_map(|(index, (raw, value))| {
            parse_event(raw, value, &format!("/events/{index}"), problems)
        })
        .collect();
    (problems.0.len() == before).then_some(events)
}

fn parse_event(
    raw: &RawValue,
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<Event> {
    let Value::Object(object) = value else {
        problems.add(path, "must be an object");
        return None;
    };
    let fields = Fields { object, path };
    let before = problems.0.len();
    let name = match object.get("name") {
        None | Some(Value::Null) => {
            problems.add(format!("{path}/name"), "is required");
            None
        }
        Some(Value::String(name)) => {
            let parsed = EventName::parse_hook(name);
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
        // `EventName::parse_hook` gives only the three above; the others come from
        // their own requests (`domain::sources`).
        _ => return None,
    };

    if problems.0.len() != before {
        return None;
    }
    // Kept as sent (key order, number spelling): it is handed on to the next agent.
    let transfer_data = transfer_data.and_then(|()| {
        serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get())
            .ok()?
            .get("transferData")
            .map(|data| (*data).to_owned())
    });
    Some(Event {
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

    /// `Some(())` when the event carries `transferData` within the size limit.
    fn transfer_data(&self, problems: &mut Problems) -> Option<()> {
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
        Some(())
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

/// What no field rule sees, anywhere in the body: a member name repeated within one object
/// (the stored payload and its normalised form could disagree about which one counts),
/// U+0000 in a string or name (PostgreSQL text and jsonb cannot hold it), and values that
/// JSON text allows but serde_json cannot hold (numbers beyond f64, lone surrogates, nesting
/// past its recursion limit).
pub(super) fn scan(json: &str) -> Vec<FieldError> {
    let mut path = String::new();
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let reader = Reader {
        path: &mut path,
        found: &mut found,
        depth: 0,
    };
    if let Err(error) = reader.deserialize(&mut deserializer)
        && found.len() < MAX_SCAN_PROBLEMS
    {
        // On error the path was left pointing where reading stopped.
        found.push(FieldError {
            path,
            message: format!("cannot be read: {error}"),
        });
    }
    found
}

/// Reads a JSON value as serde_json's `Value` does (the last of a repeated member name
/// wins), noting on the way what [`scan`] reports.
struct Reader<'a> {
    path: &'a mut String,
    found: &'a mut Vec<FieldError>,
    /// Arrays and objects open around the value in the whole body: an event is read from
    /// its own text, and must still fail where serde_json reading the body would.
    depth: usize,
}

/// serde_json's recursion limit: its 128th nested array or object is an error.
const MAX_DEPTH: usize = 128;

impl Reader<'_> {
    fn report(&mut self, message: &str) {
        if self.found.len() < MAX_SCAN_PROBLEMS {
            self.found.push(FieldError {
                path: self.path.clone(),
                message: message.to_owned(),
            });
        }
    }

    fn nested(&mut self) -> Reader<'_> {
        Reader {
            path: self.path,
            found: self.found,
            depth: self.depth,
        }
    }

    /// A reader of the values inside the array or object it is at.
    fn inside<E: serde::de::Error>(&mut self) -> Result<Reader<'_>, E> {
        if self.depth + 1 >= MAX_DEPTH {
            return Err(E::custom("recursion limit exceeded"));
        }
        Ok(Reader {
            path: self.path,
            found: self.found,
            depth: self.depth + 1,
        })
    }

    /// The next member's name, with the path moved to it and its own problems noted;
    /// `None` after the last. The caller truncates the path back to `parent`.
    fn member_name<'de, A: MapAccess<'de>>(
        &mut self,
        members: &mut A,
        names: &mut HashSet<String>,
    ) -> Result<Option<String>, A::Error> {
        let Some(name) = members.next_key::<String>()? else {
            return Ok(None);
        };
        push_pointer_token(self.path, &name);
        if name.contains('\0') {
            self.report("member name must not contain U+0000");
        }
        if !names.insert(name.clone()) {
            self.report("duplicate member name");
        }
        Ok(Some(name))
    }
}

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Value, E> {
        Ok(Value::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Value, E> {
        Ok(Value::from(number))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Value, E> {
        Ok(Value::from(number))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(mut self, text: &str) -> Result<Value, E> {
        if text.contains('\0') {
            self.report("must not contain U+0000");
        }
        Ok(Value::String(text.to_owned()))
    }

    fn visit_string<E>(mut self, text: String) -> Result<Value, E> {
        if text.contains('\0') {
            self.report("must not contain U+0000");
        }
        Ok(Value::String(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        let mut inside = self.inside()?;
        for index in 0.. {
            let parent = inside.path.len();
            let _ = write!(inside.path, "/{index}");
            let item = items.next_element_seed(inside.nested())?;
            inside.path.truncate(parent);
            match item {
                Some(item) => values.push(item),
                None => break,
            }
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut members: A) -> Result<Value, A::Error> {
        let mut names = HashSet::new();
        let mut object = Map::new();
        let mut inside = self.inside()?;
        loop {
            let parent = inside.path.len();
            let Some(name) = inside.member_name(&mut members, &mut names)? else {
                break;
            };
            let value = members.next_value_seed(inside.nested())?;
            inside.path.truncate(parent);
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

/// Reads a hooks body's top level: its members, with `events`, when it is an array, kept
/// as each event's exact text and its value. `Err(())`: the body is not an object.
struct TopLevel<'a> {
    path: &'a mut String,
    found: &'a mut Vec<FieldError>,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Result<BTreeMap<String, Member<'de>>, ()>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Result<BTreeMap<String, Member<'de>>, ()>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Self::Value, A::Error> {
        // Inside the body's object.
        let mut reader = Reader {
            path: self.path,
            found: self.found,
            depth: 1,
        };
        let mut names = HashSet::new();
        let mut read = BTreeMap::new();
        loop {
            let parent = reader.path.len();
            let Some(name) = reader.member_name(&mut members, &mut names)? else {
                break;
            };
            let member = if name == "events" {
                members.next_value_seed(Events(reader.nested()))?
            } else {
                Member::Value(members.next_value_seed(reader.nested())?)
            };
            reader.path.truncate(parent);
            read.insert(name, member);
        }
        Ok(Ok(read))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, items: A) -> Result<Self::Value, A::Error> {
        Reader {
            path: self.path,
            found: self.found,
            depth: 0,
        }
        .visit_seq(items)
        .map(|_| Err(()))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(()))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(()))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(()))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(()))
    }
}

/// The `events` member: an array's elements each cut out as its exact text and read from
/// it; anything else read as a value (the rules then refuse it).
struct Events<'a>(Reader<'a>);

impl<'de> DeserializeSeed<'de> for Events<'_> {
    type Value = Member<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Member<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Events<'_> {
    type Value = Member<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Member<'de>, A::Error> {
        let Events(mut reader) = self;
        let mut reader = reader.inside()?;
        let mut events = Vec::new();
        for index in 0.. {
            let Some(raw) = items.next_element::<&'de RawValue>()? else {
                break;
            };
            let parent = reader.path.len();
            let _ = write!(reader.path, "/{index}");
            let mut deserializer = serde_json::Deserializer::from_str(raw.get());
            let value = reader
                .nested()
                .deserialize(&mut deserializer)
                .map_err(serde::de::Error::custom)?;
            reader.path.truncate(parent);
            events.push((raw, value));
        }
        Ok(Member::Events(events))
    }

    fn visit_bool<E: serde::de::Error>(self, flag: bool) -> Result<Member<'de>, E> {
        self.0.visit_bool(flag).map(Member::Value)
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Member<'de>, E> {
        self.0.visit_i64(number).map(Member::Value)
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Member<'de>, E> {
        self.0.visit_u64(number).map(Member::Value)
    }

    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Member<'de>, E> {
        self.0.visit_f64(number).map(Member::Value)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Member<'de>, E> {
        self.0.visit_unit().map(Member::Value)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Member<'de>, E> {
        self.0.visit_str(text).map(Member::Value)
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Member<'de>, E> {
        self.0.visit_string(text).map(Member::Value)
    }

    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<Member<'de>, A::Error> {
        self.0.visit_map(members).map(Member::Value)
    }
}

/// Appends `/name` to a JSON Pointer, escaping `~` and `/` (RFC 6901).
fn push_pointer_token(path: &mut String, name: &str) {
    path.push('/');
    for character in name.chars() {
        match character {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            other => path.push(other),
        }
    }
}

/// One event, parsed from a hooks body exactly as the route would (for the domain's tests).
#[cfg(test)]
pub(crate) fn parsed_event(event: Value) -> Event {
    let body = serde_json::json!({ "conversationId": "c-1", "botId": "st-1", "events": [event] });
    let mut batch = IngestBatch::parse(body.to_string().as_bytes(), "st-1")
        .expect("the test body is a valid hooks request");
    batch.events.remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::idempotency::body_fingerprint;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use serde_json::json;

    const BOT: &str = "st-1234";
    /// Stands in a generated body for raw JSON text that a `Value` cannot hold.
    const RAW_MARK: &str = "\u{E000}raw\u{E000}";

    /// A fixed budget so CI time is bounded; no regression files written into src/.
    fn budget(cases: u32) -> Config {
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        }
    }

    /// Strings with the characters that break naive code: controls, NUL, quotes,
    /// backslashes, pointer syntax, non-BMP characters and noncharacters.
    fn hostile_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,12}",
            "[\\x00-\\x1f\"\\\\/~]{0,6}",
            "[a-z\u{0}\u{7f}\u{80}\u{ffff}\u{fffe}\u{feff}\u{10000}\u{1f980}\u{10ffff}]{0,12}",
            Just("INTERNAL_TRANSFER_EVENT".to_owned()),
            Just("END_OF_CONVERSATION".to_owned()),
            Just("entry".to_owned()),
            Just("cOlD".to_owned()),
            Just("true".to_owned()),
            Just("x".repeat(300)),
        ]
    }

    /// Member names: mostly the ones the parser looks for, so that values land on real rules.
    fn member_name() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "conversationId", "botId", "events", "name", "transfertype", "transferType",
                "transition", "isExtAD", "experience", "language", "participant", "identity",
                "type", "customFields", "transferData", "reason", "data",
            ])
            .prop_map(str::to_owned),
            1 => hostile_string(),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |float| {
                serde_json::Number::from_f64(float).map(Value::Number)
            }),
            hostile_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((member_name(), inner), 0..8)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn case_variants(word: &'static str) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
            word.chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect()
        })
    }

    fn one_of_words(words: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop::sample::select(words).prop_flat_map(case_variants)
    }

    /// Text of 1..=max characters, any of them allowed, NUL excepted.
    fn free_text(min: usize, max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            any::<char>().prop_filter("no NUL", |c| *c != '\0'),
            min..=max,
        )
        .prop_map(String::from_iter)
    }

    fn participant() -> impl Strategy<Value = Value> {
        (
            free_text(1, 40),
            free_text(0, 40),
            free_text(1, 20),
            prop::option::of(Just(
                json!({ "agentEmail": "a@example.com", "queueId": "q" }),
            )),
        )
            .prop_map(|(identity, name, kind, custom)| {
                let mut participant = json!({ "identity": identity, "name": name, "type": kind });
                if let Some(custom) = custom {
                    participant["customFields"] = custom;
                }
                participant
            })
    }

    fn valid_event() -> impl Strategy<Value = Value> {
        let transfer = (
            one_of_words(&["na", "cold", "warm", "redial"]),
            one_of_words(&["entry", "exit"]),
            prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                one_of_words(&["true", "false"]).prop_map(Value::String),
            ],
            one_of_words(&["chat", "voice", "email"]),
            prop::option::of(free_text(0, 35)),
            participant(),
            prop::option::of(json_value()),
        )
            .prop_map(
                |(transfer_type, transition, flag, experience, language, participant, data)| {
                    let mut event = json!({
                        "name": "INTERNAL_TRANSFER_EVENT",
                        "transfertype": transfer_type,
                        "transition": transition,
                        "isExtAD": flag,
                        "experience": experience,
                        "participant": participant,
                        "somethingNew": { "kept": true },
                    });
                    if let Some(language) = language {
                        event["language"] = Value::String(language);
                    }
                    let fits = |data: &Value| data.to_string().len() <= MAX_TRANSFER_DATA_BYTES;
                    if let Some(data) = data.filter(|data| !has_nul(data) && fits(data)) {
                        event["transferData"] = data;
                    }
                    event
                },
            );
        let end = (
            prop::option::of(free_text(0, 80)),
            prop::option::of(participant()),
        )
            .prop_map(|(reason, participant)| {
                let mut event = json!({ "name": "END_OF_CONVERSATION" });
                if let Some(reason) = reason {
                    event["reason"] = Value::String(reason);
                }
                if let Some(participant) = participant {
                    event["participant"] = participant;
                }
                event
            });
        let summary = Just(json!({ "name": "TRIGGER_SUMMARY_EVENT", "data": { "k": [1, 2.5] } }));
        prop_oneof![6 => transfer, 1 => end, 1 => summary]
    }

    fn valid_body() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(
                any::<char>().prop_filter("no control", |c| !c.is_control()),
                1..=256,
            ),
            prop::collection::vec(valid_event(), 1..=12),
        )
            .prop_map(|(conversation, events)| {
                json!({
                    "conversationId": String::from_iter(conversation),
                    "botId": BOT,
                    "events": events,
                })
            })
    }

    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(members) => members
                .iter()
                .any(|(name, value)| name.contains('\0') || has_nul(value)),
            _ => false,
        }
    }

    /// Every JSON Pointer to a value inside `value`, the root included.
    fn pointers(value: &Value, at: &str, into: &mut Vec<String>) {
        into.push(at.to_owned());
        match value {
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    pointers(item, &format!("{at}/{index}"), into);
                }
            }
            Value::Object(members) => {
                for (name, member) in members {
                    let mut path = at.to_owned();
                    push_pointer_token(&mut path, name);
                    pointers(member, &path, into);
                }
            }
            _ => {}
        }
    }

    /// Raw JSON texts a `Value` cannot hold or that trip naive parsers.
    fn hostile_raw() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "1e400",
                "-1e400",
                "1e-400",
                "-0",
                "-0.0",
                "18446744073709551616",
                "-9223372036854775809",
                "123456789012345678901234567890",
                "0.000000000000000000000000000000000000000000000000000001",
                r#""\ud800""#,
                r#""\udc00\ud800""#,
                r#""\u0000""#,
                r#""a\u0000b""#,
                r#""\ud83e\udd80""#,
                r#"{"a":1,"a":2}"#,
                r#"{"\u0000":1}"#,
                r#"{"~/":1}"#,
                "[]",
                "{}",
                "null",
                "true",
                r#""""#,
            ])
            .prop_map(str::to_owned),
            (1usize..200).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
            json_value().prop_map(|value| value.to_string()),
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Remove,
        Replace(Value),
        ReplaceRaw(String),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            Just(Mutation::Remove),
            json_value().prop_map(Mutation::Replace),
            hostile_raw().prop_map(Mutation::ReplaceRaw),
        ]
    }

    /// Applies `mutation` at the `pick`-th pointer of `body`: the body text, and the value
    /// whose structure that text has (raw replacements stand as RAW_MARK strings there).
    fn mutate(mut body: Value, pick: prop::sample::Index, mutation: &Mutation) -> (String, Value) {
        let mut all = Vec::new();
        pointers(&body, "", &mut all);
        let target = all[pick.index(all.len())].clone();
        let (parent, last) = match target.rfind('/') {
            Some(slash) => (target[..slash].to_owned(), target[slash + 1..].to_owned()),
            None => (String::new(), String::new()),
        };
        let name = last.replace("~1", "/").replace("~0", "~");
        let replacement = match mutation {
            Mutation::Remove => None,
            Mutation::Replace(value) => Some(value.clone()),
            Mutation::ReplaceRaw(_) => Some(Value::String(RAW_MARK.to_owned())),
        };
        match (replacement, target.is_empty()) {
            (Some(value), true) => body = value,
            (None, true) => body = Value::Null,
            (replacement, false) => match body.pointer_mut(&parent) {
                Some(Value::Array(items)) => {
                    let index: usize = name.parse().expect("array index");
                    match replacement {
                        Some(value) => items[index] = value,
                        None => {
                            items.remove(index);
                        }
                    }
                }
                Some(Value::Object(members)) => match replacement {
                    Some(value) => {
                        members.insert(name, value);
                    }
                    None => {
                        members.remove(&name);
                    }
                },
                _ => unreachable!("a pointer's parent is a container"),
            },
        }
        let mut text = body.to_string();
        if let Mutation::ReplaceRaw(raw) = mutation {
            text = text.replace(&Value::String(RAW_MARK.to_owned()).to_string(), raw);
        }
        (text, body)
    }

    /// Each reported path is a JSON Pointer to a value of `shape`, or to a missing member
    /// of an object in it.
    fn assert_paths_point_into(errors: &[FieldError], shape: &Value) -> Result<(), TestCaseError> {
        prop_assert!(!errors.is_empty(), "a refusal names at least one problem");
        for error in errors {
            let path = &error.path;
            prop_assert!(
                path.is_empty() || path.starts_with('/'),
                "not a JSON Pointer: {path:?}"
            );
            let mut escapes = path.split('~').skip(1);
            prop_assert!(
                escapes.all(|rest| rest.starts_with('0') || rest.starts_with('1')),
                "bad escape in {path:?}"
            );
            let parent = &path[..path.rfind('/').unwrap_or(0)];
            let under_raw = path
                .match_indices('/')
                .any(|(slash, _)| shape.pointer(&path[..slash]) == Some(&json!(RAW_MARK)));
            prop_assert!(
                under_raw
                    || shape.pointer(path).is_some()
                    || shape.pointer(parent).is_some_and(Value::is_object),
                "{path:?} ({}) points nowhere in {shape}",
                error.message
            );
        }
        Ok(())
    }

    /// What an accepted `text` must give: its own events, each kept as received.
    fn check_accepted(batch: &IngestBatch, text: &str) -> Result<(), TestCaseError> {
        // Read back from the text, not taken from the generator: serde_json's float parsing
        // does not round-trip every f64 exactly.
        let input: Value = serde_json::from_str(text)
            .map_err(|error| TestCaseError::fail(format!("accepted unreadable JSON: {error}")))?;
        let events = input["events"]
            .as_array()
            .expect("accepted events are an array");
        prop_assert_eq!(batch.events.len(), events.len());
        prop_assert!((1..=MAX_EVENTS).contains(&batch.events.len()));
        prop_assert_eq!(&batch.bot_id, BOT);
        prop_assert_eq!(
            Some(batch.conversation_id.as_str()),
            input["conversationId"].as_str()
        );
        for (event, sent) in batch.events.iter().zip(events) {
            let payload: Value =
                serde_json::from_str(event.payload.get()).expect("payload is JSON");
            prop_assert_eq!(&payload, sent);
            prop_assert!(!has_nul(&payload), "PostgreSQL cannot store U+0000");
            prop_assert_eq!(Some(event.name().as_str()), sent["name"].as_str());
            let again = Event::reparse(&event.payload).expect("a stored payload parses again");
            prop_assert_eq!(&again.action, &event.action);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(budget(512))]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = IngestBatch::parse(&body, BOT);
        }

        #[test]
        fn parse_never_panics_on_json_shaped_bytes(
            tokens in prop::collection::vec(
                prop::sample::select(vec![
                    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "d800", "0000", "null",
                    "1e400", "-0", "\"events\"", "\"conversationId\"", "\"botId\"",
                    "\"st-1234\"", "\"name\"", "\"INTERNAL_TRANSFER_EVENT\"", " ", "\u{0}",
                    "\u{feff}", "\u{1f980}", "\u{ff}",
                ]),
                0..64,
            ),
        ) {
            let _ = IngestBatch::parse(tokens.concat().as_bytes(), BOT);
        }

        #[test]
        fn arbitrary_json_values_are_refused_with_pointers_into_them(value in json_value()) {
            match IngestBatch::parse(value.to_string().as_bytes(), BOT) {
                Ok(batch) => check_accepted(&batch, &value.to_string())?,
                Err(BodyError::Invalid(errors)) => assert_paths_point_into(&errors, &value)?,
                Err(BodyError::Malformed(reason)) => {
                    prop_assert!(false, "serialized JSON called malformed: {reason}");
                }
            }
        }

        #[test]
        fn json_objects_with_the_expected_members_are_refused_with_pointers_into_them(
            conversation in json_value(),
            bot in prop_oneof![Just(json!(BOT)), json_value()],
            events in prop::collection::vec(
                prop::collection::vec((member_name(), json_value()), 0..10)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
                0..4,
            ),
        ) {
            let value = json!({ "conversationId": conversation, "botId": bot, "events": events });
            match IngestBatch::parse(value.to_string().as_bytes(), BOT) {
                Ok(batch) => check_accepted(&batch, &value.to_string())?,
                Err(BodyError::Invalid(errors)) => assert_paths_point_into(&errors, &value)?,
                Err(BodyError::Malformed(reason)) => {
                    prop_assert!(false, "serialized JSON called malformed: {reason}");
                }
            }
        }

        #[test]
        fn valid_bodies_are_accepted_with_each_event_kept_as_its_exact_text(
            body in valid_body(),
            pretty in any::<bool>(),
            padding in prop::sample::select(vec!["", " ", "\n\t ", "\r\n"]),
        ) {
            let events = body["events"].as_array().expect("events");
            let texts: Vec<String> = events
                .iter()
                .map(|event| {
                    if pretty {
                        serde_json::to_string_pretty(event).expect("serializes")
                    } else {
                        event.to_string()
                    }
                })
                .collect();
            let text = format!(
                "{padding}{{{padding}\"conversationId\":{},\"botId\"{padding}:{padding}\"{BOT}\",\"events\":[{padding}{}{padding}]}}{padding}",
                body["conversationId"],
                texts.join(&format!("{padding},{padding}")),
            );

            let batch = IngestBatch::parse(text.as_bytes(), BOT)
                .map_err(|error| TestCaseError::fail(format!("{error:?} for {text}")))?;

            check_accepted(&batch, &text)?;
            for (event, sent) in batch.events.iter().zip(&texts) {
                prop_assert_eq!(event.payload.get(), sent.as_str());
            }
            // The fingerprint comes from the same read, and is the one a stored key has.
            let (_, fingerprint) = IngestBatch::parse_fingerprinted(text.as_bytes(), BOT, true);
            prop_assert_eq!(fingerprint, Some(body_fingerprint(text.as_bytes())));
        }

        #[test]
        fn the_fingerprint_of_the_one_read_is_the_whole_body_fingerprint(
            body in valid_body(),
            pick in any::<prop::sample::Index>(),
            mutation in mutation(),
        ) {
            let (text, _) = mutate(body, pick, &mutation);
            let (parsed, fingerprint) = IngestBatch::parse_fingerprinted(text.as_bytes(), BOT, true);
            prop_assert_eq!(
                format!("{:?}", parsed),
                format!("{:?}", IngestBatch::parse(text.as_bytes(), BOT))
            );
            if let Some(fingerprint) = fingerprint {
                prop_assert_eq!(fingerprint, body_fingerprint(text.as_bytes()));
            }
        }

        #[test]
        fn mutated_valid_bodies_never_panic_and_point_at_what_they_refuse(
            body in valid_body(),
            pick in any::<prop::sample::Index>(),
            mutation in mutation(),
        ) {
            let (text, shape) = mutate(body, pick, &mutation);
            match IngestBatch::parse(text.as_bytes(), BOT) {
                Ok(batch) => check_accepted(&batch, &text)?,
                Err(BodyError::Invalid(errors)) => assert_paths_point_into(&errors, &shape)?,
                Err(BodyError::Malformed(reason)) => {
                    prop_assert!(false, "mutated JSON text called malformed: {reason}: {text}");
                }
            }
        }
    }

    fn problems_of(body: &str) -> Vec<FieldError> {
        match IngestBatch::parse(body.as_bytes(), BOT) {
            Err(BodyError::Invalid(errors)) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn one_event_body(event: &str) -> String {
        format!(r#"{{"conversationId":"c-1","botId":"{BOT}","events":[{event}]}}"#)
    }

    const TRANSFER: &str = r#""name":"INTERNAL_TRANSFER_EVENT","transfertype":"NA","isExtAD":true,"experience":"voice","participant":{"identity":"a1","name":"A","type":"agent"}"#;

    #[test]
    fn a_repeated_member_name_is_refused_at_its_pointer() {
        let body = one_event_body(&format!(
            r#"{{{TRANSFER},"transition":"entry","transition":"exit"}}"#
        ));

        let problems = problems_of(&body);

        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "/events/0/transition");
        assert_eq!(problems[0].message, "duplicate member name");
    }

    #[test]
    fn nul_in_any_string_or_name_is_refused_at_its_pointer() {
        let in_identity = one_event_body(&format!(
            r#"{{{},"transition":"entry"}}"#,
            TRANSFER.replace(r#""a1""#, r#""a\u0000""#)
        ));
        let in_a_name = one_event_body(&format!(
            r#"{{{TRANSFER},"transition":"entry","x/~\u0000":1}}"#
        ));

        assert_eq!(
            problems_of(&in_identity)[0].path,
            "/events/0/participant/identity"
        );
        assert_eq!(problems_of(&in_a_name)[0].path, "/events/0/x~1~0\u{0}");
    }

    #[test]
    fn values_serde_json_cannot_hold_are_refused_even_where_ignored() {
        for (raw, path) in [
            ("1e400", "/ignored"),
            (r#""\ud800""#, "/ignored"),
            (
                &format!("{}{}", "[".repeat(200), "]".repeat(200)),
                "/ignored/0/0/0",
            ),
        ] {
            let body = format!(
                r#"{{"conversationId":"c-1","botId":"{BOT}","ignored":{raw},"events":[{{{TRANSFER},"transition":"entry"}}]}}"#
            );

            let problems = problems_of(&body);

            assert!(problems[0].path.starts_with(path), "{raw}: {problems:?}");
            assert!(
                problems[0].message.starts_with("cannot be read"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn a_repeated_member_counts_its_last_value_in_the_fingerprint_as_in_body_fingerprint() {
        let body = one_event_body(&format!(
            r#"{{{TRANSFER},"transition":"entry","language":"en","language":"fr"}}"#
        ));
        let padded = format!(
            r#"{{"x":1,"x":[1.5e3,-0,18446744073709551615],{}"#,
            &body[1..]
        );

        let (refused, fingerprint) = IngestBatch::parse_fingerprinted(padded.as_bytes(), BOT, true);

        assert!(refused.is_err());
        assert_eq!(fingerprint, Some(body_fingerprint(padded.as_bytes())));
    }

    #[test]
    fn an_event_fails_at_the_depth_where_reading_the_whole_body_would() {
        for depth in [123, 124, 125, 126] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = one_event_body(&format!(
                r#"{{{TRANSFER},"transition":"entry","transferData":{{"x":{nested}}}}}"#
            ));
            let whole = serde_json::from_str::<Value>(&body).is_ok();

            let (parsed, fingerprint) =
                IngestBatch::parse_fingerprinted(body.as_bytes(), BOT, true);

            assert_eq!(parsed.is_ok(), whole, "{depth} arrays deep");
            assert_eq!(fingerprint.is_some(), whole, "{depth} arrays deep");
            if let Some(fingerprint) = fingerprint {
                assert_eq!(fingerprint, body_fingerprint(body.as_bytes()));
            }
        }
    }

    #[test]
    fn ten_thousand_nested_arrays_are_refused_without_overflowing_the_stack() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let in_event = one_event_body(&format!(
            r#"{{{TRANSFER},"transition":"entry","transferData":{deep}}}"#
        ));

        assert!(IngestBatch::parse(deep.as_bytes(), BOT).is_err());
        assert!(IngestBatch::parse(in_event.as_bytes(), BOT).is_err());
    }
}
