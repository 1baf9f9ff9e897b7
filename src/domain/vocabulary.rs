//! The words of the timeline (SPEC 3 and 7.3): statuses, anomalies, stints, transfers and
//! hops, as the fold makes them and the stores and the API show them.

use super::types::TransferType;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Conversation status, derived from presence and ends.
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
#[strum(serialize_all = "lowercase")]
pub enum Status {
    Active,
    Idle,
    Ended,
}

/// Something unexpected about an event; the event is stored and applied all the same.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Anomaly {
    DuplicateEntry,
    NaEntryWhileActive,
    ExitWithoutEntry,
    NaExitWhileOthersPresent,
    WarmExitLeftNobody,
    EntryAfterEnd,
    ClosedWithParticipantsPresent,
    /// A bot's transfer outcome with no escalation pending (SPEC 7.3).
    TransferOutcomeWithoutEscalation,
    /// The conversation ended with an escalation still pending.
    EscalationUnresolved,
}

/// How a stint ended: the exit's transfer type, or `END` when END_OF_CONVERSATION closed it.
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
#[strum(serialize_all = "UPPERCASE")]
pub enum ExitType {
    Na,
    Cold,
    Warm,
    Redial,
    End,
}

impl From<TransferType> for ExitType {
    fn from(transfer_type: TransferType) -> Self {
        match transfer_type {
            TransferType::Na => Self::Na,
            TransferType::Cold => Self::Cold,
            TransferType::Warm => Self::Warm,
            TransferType::Redial => Self::Redial,
        }
    }
}

/// One continuous presence of a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stint {
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub left_at: Option<OffsetDateTime>,
    pub entry_type: TransferType,
    pub exit_type: Option<ExitType>,
}

impl Stint {
    pub fn is_open(&self) -> bool {
        self.left_at.is_none()
    }

    /// Seconds present, counting an open stint up to `now`.
    pub fn duration_seconds(&self, now: OffsetDateTime) -> f64 {
        let end = self.left_at.unwrap_or(now);
        (end - self.joined_at).as_seconds_f64().max(0.0)
    }
}

/// A participant and all their stints, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantTimeline {
    pub identity: String,
    pub name: String,
    pub kind: String,
    pub stints: Vec<Stint>,
}

impl ParticipantTimeline {
    pub fn is_present(&self) -> bool {
        self.stints.last().is_some_and(Stint::is_open)
    }
}

/// Entries by transfer type, and the bot's escalations and how many failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transfers {
    pub cold: i64,
    pub warm: i64,
    pub redial: i64,
    /// Escalations the bot asked for.
    pub escalated: i64,
    /// Escalations the client reported failed.
    pub failed: i64,
}

/// What kind of hand-over a hop is (SPEC 7.3).
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
#[strum(serialize_all = "UPPERCASE")]
pub enum HopKind {
    Cold,
    Warm,
    Redial,
    Escalation,
}

/// Whether a hand-over happened.
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
#[strum(serialize_all = "lowercase")]
pub enum HopOutcome {
    Completed,
    Failed,
    Pending,
}

spelled!(Status, Anomaly, ExitType, HopKind, HopOutcome);

/// One hand-over, in `seq` order (SPEC 7.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// Its place among the conversation's hops, from 0.
    pub ordinal: i64,
    /// The event that made it.
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: HopKind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub outcome: HopOutcome,
    pub reason: Option<String>,
    /// An escalation's targets, as the bot sent them.
    pub targets: Option<Vec<serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::{EventName, Experience, Transition};

    /// Each word's serde spelling (the API) is its `as_str` (the stores), and parses back.
    macro_rules! assert_spelled_alike {
        ($($word:ty),*) => {$(
            for &word in <$word>::ALL {
                assert_eq!(serde_json::to_value(word).unwrap(), word.as_str(), "{word:?}");
                assert_eq!(<$word>::parse(word.as_str()), Some(word));
            }
        )*};
    }

    #[test]
    fn the_stores_and_the_wire_spell_every_word_alike() {
        assert_spelled_alike!(
            TransferType,
            Transition,
            Experience,
            EventName,
            Status,
            Anomaly,
            ExitType,
            HopKind,
            HopOutcome
        );
    }

    #[test]
    fn the_vendors_words_parse_in_either_case_and_the_stores_words_exactly() {
        assert_eq!(TransferType::parse("cold"), Some(TransferType::Cold));
        assert_eq!(Transition::parse("ENTRY"), Some(Transition::Entry));
        assert_eq!(Experience::parse("Voice"), Some(Experience::Voice));
        assert_eq!(Status::parse("Active"), None);
        assert_eq!(EventName::parse("internal_transfer_event"), None);
    }
}
