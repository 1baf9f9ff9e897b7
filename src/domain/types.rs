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

/// The three event names the hooks API supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventName {
    InternalTransferEvent,
    EndOfConversation,
    TriggerSummaryEvent,
}

impl EventName {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "INTERNAL_TRANSFER_EVENT" => Some(Self::InternalTransferEvent),
            "END_OF_CONVERSATION" => Some(Self::EndOfConversation),
            "TRIGGER_SUMMARY_EVENT" => Some(Self::TriggerSummaryEvent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InternalTransferEvent => "INTERNAL_TRANSFER_EVENT",
            Self::EndOfConversation => "END_OF_CONVERSATION",
            Self::TriggerSummaryEvent => "TRIGGER_SUMMARY_EVENT",
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
