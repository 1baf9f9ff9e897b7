//! Validated domain values: once built, they cannot hold an invalid value.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// How an agent entered or left a conversation, as the vendor names it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE", ascii_case_insensitive)]
pub enum TransferType {
    Na,
    Cold,
    Warm,
    Redial,
}

/// Whether the participant entered or left.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum Transition {
    Entry,
    Exit,
}

/// The channel of the conversation.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum Experience {
    Chat,
    Voice,
    Email,
}

/// The names of stored events: the three of the hooks API, and those the other seed
/// systems' requests are stored as (SPEC 7).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
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
    /// The names a hooks request may send.
    pub fn parse_hook(text: &str) -> Option<Self> {
        Self::parse(text).filter(|name| {
            matches!(
                name,
                Self::InternalTransferEvent | Self::EndOfConversation | Self::TriggerSummaryEvent
            )
        })
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

spelled!(TransferType, Transition, Experience, EventName);

impl fmt::Display for TransferType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
