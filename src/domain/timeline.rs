//! The participant timeline: a pure fold over a conversation's events in `seq` order (SPEC 3).

use super::ingest::{Action, Event};
use super::types::{Experience, Participant, TransferType, Transition};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Conversation status, derived from presence and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    DuplicateEntry,
    NaEntryWhileActive,
    ExitWithoutEntry,
    NaExitWhileOthersPresent,
    WarmExitLeftNobody,
    EntryAfterEnd,
    ClosedWithParticipantsPresent,
}

impl Anomaly {
    pub const ALL: [Anomaly; 7] = [
        Self::DuplicateEntry,
        Self::NaEntryWhileActive,
        Self::ExitWithoutEntry,
        Self::NaExitWhileOthersPresent,
        Self::WarmExitLeftNobody,
        Self::EntryAfterEnd,
        Self::ClosedWithParticipantsPresent,
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
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|anomaly| anomaly.as_str() == text)
    }
}

/// How a stint ended: the exit's transfer type, or `END` when END_OF_CONVERSATION closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// Entries by transfer type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfers {
    pub cold: i64,
    pub warm: i64,
    pub redial: i64,
}

/// Everything SPEC 3 derives from a conversation's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub status: Status,
    pub experience: Option<Experience>,
    pub language: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
    pub event_count: i64,
    pub anomaly_count: i64,
    pub transfers: Transfers,
    /// Ordered by first entry.
    pub participants: Vec<ParticipantTimeline>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            status: Status::Idle,
            experience: None,
            language: None,
            started_at: None,
            ended_at: None,
            last_event_at: None,
            event_count: 0,
            anomaly_count: 0,
            transfers: Transfers::default(),
            participants: Vec::new(),
        }
    }
}

impl Timeline {
    /// The timeline of `events`, each with the time it was received, in `seq` order,
    /// and the anomalies of each event.
    pub fn fold<'a>(
        events: impl IntoIterator<Item = (OffsetDateTime, &'a Event)>,
    ) -> (Self, Vec<Vec<Anomaly>>) {
        let mut timeline = Self::default();
        let anomalies = events
            .into_iter()
            .map(|(at, event)| timeline.apply(at, event))
            .collect();
        (timeline, anomalies)
    }

    /// Identities present now, in order of first entry.
    pub fn present(&self) -> impl Iterator<Item = &str> {
        self.participants
            .iter()
            .filter(|participant| participant.is_present())
            .map(|participant| participant.identity.as_str())
    }

    /// Applies the next event, received at `at`, and returns what looked wrong about it.
    pub fn apply(&mut self, at: OffsetDateTime, event: &Event) -> Vec<Anomaly> {
        self.event_count += 1;
        self.started_at.get_or_insert(at);
        self.last_event_at = Some(at);
        if let Some(experience) = event.experience {
            self.experience = Some(experience);
        }
        if let Some(language) = &event.language {
            self.language = Some(language.clone());
        }

        let mut anomalies = Vec::new();
        match &event.action {
            Action::Transfer {
                transfer_type,
                transition: Transition::Entry,
                participant,
            } => self.enter(at, *transfer_type, participant, &mut anomalies),
            Action::Transfer {
                transfer_type,
                transition: Transition::Exit,
                participant,
            } => self.exit(at, *transfer_type, participant, &mut anomalies),
            Action::EndOfConversation { .. } => self.end(at, &mut anomalies),
            Action::TriggerSummary => {}
        }
        self.anomaly_count += anomalies.len() as i64;
        anomalies
    }

    fn enter(
        &mut self,
        at: OffsetDateTime,
        entry_type: TransferType,
        participant: &Participant,
        anomalies: &mut Vec<Anomaly>,
    ) {
        match entry_type {
            TransferType::Cold => self.transfers.cold += 1,
            TransferType::Warm => self.transfers.warm += 1,
            TransferType::Redial => self.transfers.redial += 1,
            TransferType::Na => {}
        }
        if self.status == Status::Ended {
            if entry_type != TransferType::Redial {
                anomalies.push(Anomaly::EntryAfterEnd);
            }
            self.ended_at = None;
        }
        if entry_type == TransferType::Na
            && self
                .present()
                .any(|identity| identity != participant.identity)
        {
            anomalies.push(Anomaly::NaEntryWhileActive);
        }

        let stint = Stint {
            joined_at: at,
            left_at: None,
            entry_type,
            exit_type: None,
        };
        match self.participant_mut(&participant.identity) {
            Some(known) => {
                known.name.clone_from(&participant.name);
                known.kind.clone_from(&participant.kind);
                if known.is_present() {
                    anomalies.push(Anomaly::DuplicateEntry);
                } else {
                    known.stints.push(stint);
                }
            }
            None => self.participants.push(ParticipantTimeline {
                identity: participant.identity.clone(),
                name: participant.name.clone(),
                kind: participant.kind.clone(),
                stints: vec![stint],
            }),
        }
        self.status = Status::Active;
    }

    fn exit(
        &mut self,
        at: OffsetDateTime,
        exit_type: TransferType,
        participant: &Participant,
        anomalies: &mut Vec<Anomaly>,
    ) {
        let open_stint = self
            .participant_mut(&participant.identity)
            .and_then(|known| known.stints.last_mut())
            .filter(|stint| stint.is_open());
        match open_stint {
            Some(stint) => {
                stint.left_at = Some(at);
                stint.exit_type = Some(exit_type.into());
            }
            None => anomalies.push(Anomaly::ExitWithoutEntry),
        }

        let anyone_present = self.present().next().is_some();
        match exit_type {
            TransferType::Na if anyone_present => anomalies.push(Anomaly::NaExitWhileOthersPresent),
            TransferType::Warm if !anyone_present => anomalies.push(Anomaly::WarmExitLeftNobody),
            _ => {}
        }

        if anyone_present {
            self.status = Status::Active;
        } else if self.status != Status::Ended {
            // An NA exit is the vendor's "last agent leaves": it ends the conversation.
            if exit_type == TransferType::Na {
                self.status = Status::Ended;
                self.ended_at = Some(at);
            } else {
                self.status = Status::Idle;
            }
        }
    }

    fn end(&mut self, at: OffsetDateTime, anomalies: &mut Vec<Anomaly>) {
        let mut closed_any = false;
        for stint in self
            .participants
            .iter_mut()
            .filter_map(|participant| participant.stints.last_mut())
            .filter(|stint| stint.is_open())
        {
            stint.left_at = Some(at);
            stint.exit_type = Some(ExitType::End);
            closed_any = true;
        }
        if closed_any {
            anomalies.push(Anomaly::ClosedWithParticipantsPresent);
        }
        if self.status != Status::Ended {
            self.status = Status::Ended;
            self.ended_at = Some(at);
        }
    }

    fn participant_mut(&mut self, identity: &str) -> Option<&mut ParticipantTimeline> {
        self.participants
            .iter_mut()
            .find(|participant| participant.identity == identity)
    }
}
