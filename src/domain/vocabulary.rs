//! The words of the timeline (SPEC 3 and 7.3): statuses, anomalies, stints, transfers and
//! hops, as the fold makes them and the stores and the API show them.

use super::types::TransferType;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Conversation status, derived from presence and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Idle,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Idle => "idle",
            Self::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "idle" => Some(Self::Idle),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// Something unexpected about an event; the event is stored and applied all the same.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
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

impl Anomaly {
    pub const ALL: [Anomaly; 9] = [
        Self::DuplicateEntry,
        Self::NaEntryWhileActive,
        Self::ExitWithoutEntry,
        Self::NaExitWhileOthersPresent,
        Self::WarmExitLeftNobody,
        Self::EntryAfterEnd,
        Self::ClosedWithParticipantsPresent,
        Self::TransferOutcomeWithoutEscalation,
        Self::EscalationUnresolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateEntry => "duplicate_entry",
            Self::NaEntryWhileActive => "na_entry_while_active",
            Self::ExitWithoutEntry => "exit_without_entry",
            Self::NaExitWhileOthersPresent => "na_exit_while_others_present",
            Self::WarmExitLeftNobody => "warm_exit_left_nobody",
            Self::EntryAfterEnd => "entry_after_end",
            Self::ClosedWithParticipantsPresent => "closed_with_participants_present",
            Self::TransferOutcomeWithoutEscalation => "transfer_outcome_without_escalation",
            Self::EscalationUnresolved => "escalation_unresolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|anomaly| anomaly.as_str() == text)
    }
}

/// How a stint ended: the exit's transfer type, or `END` when END_OF_CONVERSATION closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExitType {
    Na,
    Cold,
    Warm,
    Redial,
    End,
}

impl ExitType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Na => "NA",
            Self::Cold => "COLD",
            Self::Warm => "WARM",
            Self::Redial => "REDIAL",
            Self::End => "END",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "END" => Some(Self::End),
            other => TransferType::parse(other).map(Self::from),
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HopKind {
    Cold,
    Warm,
    Redial,
    Escalation,
}

impl HopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "COLD",
            Self::Warm => "WARM",
            Self::Redial => "REDIAL",
            Self::Escalation => "ESCALATION",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Cold, Self::Warm, Self::Redial, Self::Escalation]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Whether a hand-over happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HopOutcome {
    Completed,
    Failed,
    Pending,
}

impl HopOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Pending => "pending",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Completed, Self::Failed, Self::Pending]
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}

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
