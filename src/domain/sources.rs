//! The other seed systems' requests (SPEC 7), parsed into the same [`IngestBatch`] the
//! hooks API gives, so that they are appended, sequenced and kept exactly like hook
//! events: Bright Pattern's `InteractionData` and transfer data, and the Salesforce
//! Einstein Bot's escalation and the client's transfer outcome.

use super::ingest::{
    Action, BodyError, ConversationId, Event, IngestBatch, MAX_EVENTS, MAX_TRANSFER_DATA_BYTES,
    Problems, scan,
};
use super::types::{Experience, Participant};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `InteractionData.state` values in the seed.
const INTERACTION_STATES: [&str; 9] = [
    "unknown",
    "queued",
    "ivr",
    "wrap_up",
    "wrap_up_hold",
    "delivered",
    "delivery_pending",
    "hold",
    "completed",
];
const CALL_DIRECTIONS: [&str; 2] = ["inbound", "outbound"];
const ORIGINATIONS: [&str; 12] = [
    "dialpad",
    "dialpad-search",
    "directory",
    "recent",
    "favorites",
    "workitem",
    "interaction",
    "contact-profile",
    "help",
    "conference",
    "auto",
    "integration-api",
];
/// The bot message types the service takes, as named in the error for any other.
const MESSAGE_TYPES: &str = "escalate, transferSucceeded, transferFailed";
const FAILURE_REASONS: [&str; 2] = ["NoAgentAvailable", "Error"];

/// A request body as an object of raw members, or the problems that say why not.
struct Body<'a> {
    raw: &'a RawValue,
    object: Map<String, Value>,
    problems: Problems,
}

impl<'a> Body<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, BodyError> {
        let raw: &RawValue = serde_json::from_slice(bytes)
            .map_err(|error| BodyError::Malformed(format!("body is not valid JSON: {error}")))?;
        let mut problems = Problems::default();
        let object = match serde_json::from_str::<Map<String, Value>>(raw.get()) {
            Ok(object) => object,
            Err(_) => {
                problems.add("", "must be a JSON object");
                return Err(problems.into_error());
            }
        };
        problems.merge_scanned(scan(raw.get()));
        Ok(Self {
            raw,
            object,
            problems,
        })
    }

    /// The batch of `events`, unless a problem was found.
    fn finish(
        self,
        bot_id: &str,
        conversation_id: Option<ConversationId>,
        events: Vec<Event>,
    ) -> Result<IngestBatch, BodyError> {
        match conversation_id {
            Some(conversation_id) if self.problems.is_empty() => Ok(IngestBatch {
                bot_id: bot_id.to_owned(),
                conversation_id,
                events,
            }),
            _ => Err(self.problems.into_error()),
        }
    }
}

/// A conversation id from the request path.
fn path_conversation(text: &str, problems: &mut Problems) -> Option<ConversationId> {
    ConversationId::parse(text)
        .map_err(|message| problems.add("", format!("the conversationId in the path {message}")))
        .ok()
}

/// SPEC 7.1, `ON_NEW_INTERACTION`: `{"agentId", "conversationId"?, "interaction"}`, stored as
/// one `INTERACTION_DATA` event of the conversation `conversationId`, else the
/// interaction's `interactionId`.
pub fn parse_interaction(bytes: &[u8], bot_id: &str) -> Result<IngestBatch, BodyError> {
    let mut body = Body::parse(bytes)?;
    let problems = &mut body.problems;
    let object = &body.object;
    let agent_id = text(object.get("agentId"), "/agentId", 1, 256, problems);
    let interaction = match object.get("interaction") {
        Some(Value::Object(interaction)) => Some(interaction.clone()),
        None | Some(Value::Null) => {
            problems.add("/interaction", "is required");
            None
        }
        Some(_) => {
            problems.add("/interaction", "must be an object");
            None
        }
    };
    let interaction_id = interaction.as_ref().and_then(|interaction| {
        check_interaction(interaction, problems);
        text(
            interaction.get("interactionId"),
            "/interaction/interactionId",
            1,
            256,
            problems,
        )
    });
    let conversation_id = match object.get("conversationId") {
        None | Some(Value::Null) => interaction_id
            .as_deref()
            .and_then(|id| ConversationId::parse(id).ok()),
        Some(Value::String(id)) => ConversationId::parse(id)
            .map_err(|message| problems.add("/conversationId", message))
            .ok(),
        Some(_) => {
            problems.add("/conversationId", "must be a string");
            None
        }
    };
    let (Some(agent_id), Some(interaction)) = (agent_id, interaction) else {
        return Err(body.problems.into_error());
    };
    let event = Event {
        action: Action::InteractionData {
            agent: Participant {
                identity: agent_id,
                name: String::new(),
                kind: "agent".to_owned(),
            },
            interaction,
        },
        language: None,
        experience: None,
        transfer_data: None,
        payload: body.raw.to_owned(),
    };
    body.finish(bot_id, conversation_id, vec![event])
}

/// The seed's types, on the members that are present; unknown members are kept as sent.
fn check_interaction(interaction: &Map<String, Value>, problems: &mut Problems) {
    let at = |key: &str| format!("/interaction/{key}");
    match interaction.get("type") {
        Some(Value::String(kind)) if Experience::parse(kind).is_some() => {}
        None | Some(Value::Null) => problems.add(at("type"), "is required"),
        Some(_) => problems.add(at("type"), "must be one of voice, chat, email"),
    }
    for (key, allowed) in [
        ("state", &INTERACTION_STATES[..]),
        ("callDirection", &CALL_DIRECTIONS[..]),
        ("origination", &ORIGINATIONS[..]),
    ] {
        match interaction.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(value)) if allowed.contains(&value.as_str()) => {}
            Some(_) => problems.add(at(key), format!("must be one of {}", allowed.join(", "))),
        }
    }
    // The list filters on `service`, so it must be what the seed says it is.
    if !matches!(
        interaction.get("service"),
        None | Some(Value::Null | Value::String(_))
    ) {
        problems.add(at("service"), "must be a string");
    }
    for key in ["startTime", "endTime", "duration"] {
        if let Some(value) = interaction.get(key)
            && !value.is_null()
            && !value.is_number()
        {
            problems.add(at(key), "must be a number");
        }
    }
    match interaction.get("callParties") {
        None | Some(Value::Null) => {}
        Some(Value::Array(parties)) => {
            for (index, party) in parties.iter().enumerate() {
                let path = format!("/interaction/callParties/{index}");
                let Value::Object(party) = party else {
                    problems.add(path, "must be an object with string id, name and phone");
                    continue;
                };
                for key in ["id", "name", "phone"] {
                    if !matches!(party.get(key), Some(Value::String(_))) {
                        problems.add(format!("{path}/{key}"), "must be a string");
                    }
                }
                if !matches!(
                    party.get("userId"),
                    None | Some(Value::Null | Value::String(_))
                ) {
                    problems.add(format!("{path}/userId"), "must be a string");
                }
            }
        }
        Some(_) => problems.add(at("callParties"), "must be an array of call parties"),
    }
}

/// SPEC 7.1, `ON_REQUEST_TRANSFER_DATA`: `{"participant", "data"}`, stored as one
/// `TRANSFER_DATA` event whose `data` the transfer-data query answers.
pub fn parse_transfer_data(
    bytes: &[u8],
    bot_id: &str,
    conversation_id: &str,
) -> Result<IngestBatch, BodyError> {
    let mut body = Body::parse(bytes)?;
    let conversation_id = path_conversation(conversation_id, &mut body.problems);
    let participant = participant(
        body.object.get("participant"),
        "/participant",
        None,
        "agent",
        &mut body.problems,
    );
    let data = match body.object.get("data") {
        None | Some(Value::Null) => {
            body.problems.add("/data", "is required");
            None
        }
        Some(data) => {
            let size = serde_json::to_vec(data).map_or(usize::MAX, |bytes| bytes.len());
            if size > MAX_TRANSFER_DATA_BYTES {
                body.problems.add(
                    "/data",
                    format!("must be at most {MAX_TRANSFER_DATA_BYTES} bytes serialized"),
                );
            }
            // Kept as sent (key order, number spelling): it is handed on to the next agent.
            serde_json::from_str::<BTreeMap<String, &RawValue>>(body.raw.get())
                .ok()
                .and_then(|members| members.get("data").map(|raw| (*raw).to_owned()))
        }
    };
    let (Some(participant), Some(data)) = (participant, data) else {
        return Err(body.problems.into_error());
    };
    let event = Event {
        action: Action::TransferData { participant },
        language: None,
        experience: None,
        transfer_data: Some(data),
        payload: body.raw.to_owned(),
    };
    body.finish(bot_id, conversation_id, vec![event])
}

/// SPEC 7.2: the body the client sent to the bot — a v5 `{"message": {…}}` or a v4
/// `{"messages": [{…}, …]}` — with an optional `participant` for the bot; one event per
/// message, in order.
pub fn parse_bot_messages(
    bytes: &[u8],
    bot_id: &str,
    conversation_id: &str,
) -> Result<IngestBatch, BodyError> {
    let mut body = Body::parse(bytes)?;
    let conversation_id = path_conversation(conversation_id, &mut body.problems);
    let bot = participant(
        body.object.get("participant"),
        "/participant",
        Some(&format!("bot:{bot_id}")),
        "bot",
        &mut body.problems,
    );
    let members: BTreeMap<String, &RawValue> =
        serde_json::from_str(body.raw.get()).unwrap_or_default();
    let messages: Vec<(String, &RawValue)> = match (members.get("message"), members.get("messages"))
    {
        (Some(message), None) => vec![("/message".to_owned(), *message)],
        (None, Some(messages)) => match serde_json::from_str::<Vec<&RawValue>>(messages.get()) {
            Ok(messages) if (1..=MAX_EVENTS).contains(&messages.len()) => messages
                .into_iter()
                .enumerate()
                .map(|(index, message)| (format!("/messages/{index}"), message))
                .collect(),
            _ => {
                body.problems.add(
                    "/messages",
                    format!("must be an array of 1 to {MAX_EVENTS} messages"),
                );
                Vec::new()
            }
        },
        _ => {
            body.problems.add(
                "",
                "must hold either message (v5) or messages (v4), not both",
            );
            Vec::new()
        }
    };
    let events: Vec<Event> = messages
        .into_iter()
        .filter_map(|(path, raw)| {
            let action = bot_message(raw, &path, bot.clone()?, &mut body.problems)?;
            Some(Event {
                action,
                language: None,
                experience: None,
                transfer_data: None,
                payload: raw.to_owned(),
            })
        })
        .collect();
    body.finish(bot_id, conversation_id, events)
}

fn bot_message(
    raw: &RawValue,
    path: &str,
    bot: Participant,
    problems: &mut Problems,
) -> Option<Action> {
    let Ok(message) = serde_json::from_str::<Map<String, Value>>(raw.get()) else {
        problems.add(path, "must be an object");
        return None;
    };
    let at = |key: &str| format!("{path}/{key}");
    let kind = match message.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        None | Some(Value::Null) => {
            problems.add(at("type"), format!("is required; one of {MESSAGE_TYPES}"));
            return None;
        }
        Some(_) => {
            problems.add(at("type"), format!("must be one of {MESSAGE_TYPES}"));
            return None;
        }
    };
    let sequence_id = |problems: &mut Problems| match message.get("sequenceId") {
        Some(Value::Number(number)) if number.is_i64() => Some(()),
        None | Some(Value::Null) => {
            problems.add(at("sequenceId"), "is required");
            None
        }
        Some(_) => {
            problems.add(at("sequenceId"), "must be a 64-bit integer");
            None
        }
    };
    match kind {
        "escalate" => {
            let targets = match message.get("targets") {
                Some(Value::Array(targets)) => {
                    for (index, target) in targets.iter().enumerate() {
                        let valid = target.as_object().is_some_and(|target| {
                            matches!(target.get("type"), Some(Value::String(_)))
                                && matches!(target.get("value"), Some(Value::String(_)))
                        });
                        if !valid {
                            problems.add(
                                format!("{path}/targets/{index}"),
                                "must be an object with string type and value",
                            );
                        }
                    }
                    Some(targets.clone())
                }
                None | Some(Value::Null) => {
                    problems.add(at("targets"), "is required");
                    None
                }
                Some(_) => {
                    problems.add(at("targets"), "must be an array of {type, value}");
                    None
                }
            };
            Some(Action::BotEscalation {
                bot,
                targets: targets?,
            })
        }
        "transferSucceeded" => {
            sequence_id(problems)?;
            Some(Action::BotTransferSucceeded { bot })
        }
        "transferFailed" => {
            let sequence = sequence_id(problems);
            let reason = match message.get("reason") {
                Some(Value::String(reason)) if FAILURE_REASONS.contains(&reason.as_str()) => {
                    Some(reason.clone())
                }
                None | Some(Value::Null) => {
                    problems.add(at("reason"), "is required");
                    None
                }
                Some(_) => {
                    problems.add(at("reason"), "must be one of NoAgentAvailable, Error");
                    None
                }
            };
            if !matches!(
                message.get("description"),
                None | Some(Value::Null | Value::String(_))
            ) {
                problems.add(at("description"), "must be a string");
            }
            sequence?;
            Some(Action::BotTransferFailed {
                bot,
                reason: reason?,
            })
        }
        _ => {
            problems.add(
                at("type"),
                format!("unsupported message type; must be one of {MESSAGE_TYPES}"),
            );
            None
        }
    }
}

/// A participant object whose `identity` is required unless `default_identity` is given
/// (then the whole object may be absent); `name` and `type` are optional.
fn participant(
    value: Option<&Value>,
    path: &str,
    default_identity: Option<&str>,
    default_kind: &str,
    problems: &mut Problems,
) -> Option<Participant> {
    let object = match value {
        None | Some(Value::Null) => match default_identity {
            Some(identity) => {
                return Some(Participant {
                    identity: identity.to_owned(),
                    name: String::new(),
                    kind: default_kind.to_owned(),
                });
            }
            None => {
                problems.add(path, "is required");
                return None;
            }
        },
        Some(Value::Object(object)) => object,
        Some(_) => {
            problems.add(path, "must be an object");
            return None;
        }
    };
    let identity = text(
        object.get("identity"),
        &format!("{path}/identity"),
        1,
        256,
        problems,
    );
    let name = optional_text(
        object.get("name"),
        &format!("{path}/name"),
        0,
        256,
        problems,
    );
    let kind = optional_text(object.get("type"), &format!("{path}/type"), 1, 64, problems);
    Some(Participant {
        identity: identity?,
        name: name?.unwrap_or_default(),
        kind: kind?.unwrap_or_else(|| default_kind.to_owned()),
    })
}

/// A required string of `min` to `max` characters.
fn text(
    value: Option<&Value>,
    path: &str,
    min: usize,
    max: usize,
    problems: &mut Problems,
) -> Option<String> {
    match optional_text(value, path, min, max, problems)? {
        Some(text) => Some(text),
        None => {
            problems.add(path, "is required");
            None
        }
    }
}

/// An optional string of `min` to `max` characters: `Some(None)` when absent, `None` when
/// it is there but wrong.
fn optional_text(
    value: Option<&Value>,
    path: &str,
    min: usize,
    max: usize,
    problems: &mut Problems,
) -> Option<Option<String>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text))
            if (min..=max).contains(&text.chars().count())
                && !text.chars().any(char::is_control) =>
        {
            Some(Some(text.clone()))
        }
        Some(Value::String(_)) => {
            problems.add(
                path,
                format!("must be {min} to {max} characters, none of them control characters"),
            );
            None
        }
        Some(_) => {
            problems.add(path, "must be a string");
            None
        }
    }
}

/// A stored event as its source sent it, parsed again: from its name, its normalised
/// participant and its payload (a hooks event object, an interaction or transfer-data
/// body, or a bot message, whose bot the participant names). The stats worker folds the
/// events it follows in the change feed with it.
pub fn parse_stored(
    name: super::EventName,
    participant: Option<&Participant>,
    payload: &RawValue,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Event, String> {
    use super::EventName::*;
    let first = |batch: Result<IngestBatch, BodyError>| {
        batch
            .map_err(|error| format!("{error:?}"))?
            .events
            .into_iter()
            .next()
            .ok_or_else(|| "no event".to_owned())
    };
    match name {
        InternalTransferEvent | EndOfConversation | TriggerSummaryEvent => {
            Event::reparse(payload).map_err(|problems| format!("{problems:?}"))
        }
        InteractionData => first(parse_interaction(payload.get().as_bytes(), bot_id)),
        TransferData => first(parse_transfer_data(
            payload.get().as_bytes(),
            bot_id,
            conversation_id,
        )),
        BotEscalation | BotTransferSucceeded | BotTransferFailed => {
            let message: Value =
                serde_json::from_str(payload.get()).map_err(|error| error.to_string())?;
            let body = serde_json::json!({ "message": message, "participant": participant });
            first(parse_bot_messages(
                body.to_string().as_bytes(),
                bot_id,
                conversation_id,
            ))
        }
    }
}
