//! Validated domain values: once built, they cannot hold an invalid value.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// How an agent entered or left a conversation, as the vendor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TransferType {
    Na,
    Cold,
    Warm,
    Redial,
}

impl TransferType {
    /// Case-insensitive, because the vendor's documentation writes both `cold` and `COLD`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "NA" => Some(Self::Na),
            "COLD" => Some(Self::Cold),
            "WARM" => Some(Self::Warm),
            "REDIAL" => Some(Self::Redial),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Na => "NA",
            Self::Cold => "COLD",
            Self::Warm => "WARM",
            Self::Redial => "REDIAL",
        }
    }
}

/// Whether the participant entered or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Entry,
    Exit,
}

impl Transition {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "entry" => Some(Self::Entry),
            "exit" => Some(Self::Exit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entry => "entry",
            Self::Exit => "exit",
        }
    }
}

/// The channel of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Experience {
    Chat,
    Voice,
    Email,
}

impl Experience {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "chat" => Some(Self::Chat),
            "voice" => Some(Self::Voice),
            "email" => Some(Self::Email),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Voice => "voice",
            Self::Email => "email",
        }
    }
}

/// The names of stored events: the three of the hooks API, and those the other seed
/// systems' requests are stored as (SPEC 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventName {
    InternalTransferEvent,
    EndOfConversation,
    TriggerSummaryEvent,
    /// Bright Pattern: an interaction delivered to an agent.
    InteractionData,
    /// Bright Pattern: the data an agent hands over on a transfer.
    TransferData,
    /// Salesforce: the bot asks to hand the session over.
    BotEscalation,
    /// Salesforce: the client routed the session.
    BotTransferSucceeded,
    /// Salesforce: routing failed.
    BotTransferFailed,
}

impl EventName {
    pub const ALL: [EventName; 8] = [
        Self::InternalTransferEvent,
        Self::EndOfConversation,
        Self::TriggerSummaryEvent,
        Self::InteractionData,
        Self::TransferData,
        Self::BotEscalation,
        Self::BotTransferSucceeded,
        Self::BotTransferFailed,
    ];

    /// Any stored event's name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|name| name.as_str() == text)
    }

    /// The names a hooks request may send.
    pub fn parse_hook(text: &str) -> Option<Self> {
        Self::parse(text).filter(|name| {
            matches!(
                name,
                Self::InternalTransferEvent | Self::EndOfConversation | Self::TriggerSummaryEvent
            )
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InternalTransferEvent => "INTERNAL_TRANSFER_EVENT",
            Self::EndOfConversation => "END_OF_CONVERSATION",
            Self::TriggerSummaryEvent => "TRIGGER_SUMMARY_EVENT",
            Self::InteractionData => "INTERACTION_DATA",
            Self::TransferData => "TRANSFER_DATA",
            Self::BotEscalation => "BOT_ESCALATION",
            Self::BotTransferSucceeded => "BOT_TRANSFER_SUCCEEDED",
            Self::BotTransferFailed => "BOT_TRANSFER_FAILED",
        }
    }
}

/// Who entered or left. `kind` is the wire's `type` (`agent`, `bot`, `supervisor`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Participant {
    pub identity: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl fmt::Display for TransferType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
