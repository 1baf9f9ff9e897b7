//! Planning an append: SPEC 3 applied to a conversation as stored, giving exactly the rows
//! to write. It needs only the conversation's summary and the participants the new events
//! name, never the whole history, so an append costs the same at a conversation's tenth
//! participant and at its ten-thousandth. No I/O: the stores load a [`Stored`] and execute
//! the [`AppendPlan`].

use super::ingest::{Action, Event};
use super::timeline::{Anomaly, ExitType, Status, Stint, Transfers};
use super::types::{Experience, Participant, TransferType, Transition};
use time::OffsetDateTime;

/// The conversation-level state SPEC 3 keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub status: Status,
    pub experience: Option<Experience>,
    pub language: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    pub ended_at: Option<OffsetDateTime>,
    pub last_event_at: Option<OffsetDateTime>,
    pub event_count: i64,
    pub anomaly_count: i64,
    pub transfers: Transfers,
    /// Participants with an open stint.
    pub present_count: i64,
    /// Participants who ever entered: the next new one takes this position.
    pub participant_count: i64,
}

impl Default for Summary {
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
            present_count: 0,
            participant_count: 0,
        }
    }
}

/// A participant as an append finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredParticipant {
    pub identity: String,
    pub name: String,
    pub kind: String,
    /// Order of first entry, from 0.
    pub position: i64,
    /// Stints so far, an open one included: a new stint takes this ordinal.
    pub stint_count: i32,
    /// The last stint, when it is still open.
    pub open: Option<Stint>,
}

/// What an append reads of a conversation: its summary, and those of the participants
/// the new events name that it already has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub last_seq: i64,
    pub summary: Summary,
    pub participants: Vec<StoredParticipant>,
}

/// A participant row to write: a new participant, or a known one who entered again (their
/// name and type are the latest entry's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRow {
    pub identity: String,
    pub name: String,
    pub kind: String,
    pub position: i64,
    pub stint_count: i32,
}

/// A stint row to write, as it stands after the append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StintRow {
    pub identity: String,
    pub ordinal: i32,
    pub stint: Stint,
}

/// Everything an append writes.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendPlan {
    /// The conversation's `last_seq` the plan was made from; it holds only if unchanged.
    pub expected_seq: i64,
    /// The events get `first_seq`, `first_seq + 1`, … in order.
    pub first_seq: i64,
    pub received_at: OffsetDateTime,
    /// Each event's anomalies, in order.
    pub anomalies: Vec<Vec<Anomaly>>,
    /// The summary after the events.
    pub summary: Summary,
    pub participants: Vec<ParticipantRow>,
    /// Stints the events opened (some may be closed again by later events).
    pub opened: Vec<StintRow>,
    /// Stored stints the events closed.
    pub closed: Vec<StintRow>,
    /// When END_OF_CONVERSATION closed every other stored stint that was still open
    /// (their participants are not in [`Stored::participants`], so no row names them).
    pub end_open_stints_at: Option<OffsetDateTime>,
}

impl AppendPlan {
    pub fn last_seq(&self) -> i64 {
        self.first_seq + self.anomalies.len() as i64 - 1
    }

    /// Every anomaly of the events, in order.
    pub fn all_anomalies(&self) -> Vec<Anomaly> {
        self.anomalies.concat()
    }
}

/// Applies `events`, all received at `received_at`, to the conversation as `stored`.
/// `stored.participants` must hold every participant the events name that the
/// conversation has; others may be left out.
pub fn plan_append(stored: Stored, events: &[Event], received_at: OffsetDateTime) -> AppendPlan {
    let mut planner = Planner::new(stored);
    let anomalies = events
        .iter()
        .map(|event| planner.apply(received_at, event))
        .collect();
    planner.finish(received_at, anomalies)
}

/// A participant an append touches, and what it did to them.
struct Tracked {
    state: StoredParticipant,
    /// Whether the open stint in `state` is stored (opened before the append).
    open_is_stored: bool,
    entered: bool,
    opened: Vec<StintRow>,
    closed: Option<StintRow>,
}

struct Planner {
    expected_seq: i64,
    summary: Summary,
    tracked: Vec<Tracked>,
    /// Stored open stints of participants not tracked: only END_OF_CONVERSATION closes them.
    untracked_open: i64,
    end_open_stints_at: Option<OffsetDateTime>,
}

impl Planner {
    fn new(stored: Stored) -> Self {
        let tracked_open = stored
            .participants
            .iter()
            .filter(|participant| participant.open.is_some())
            .count() as i64;
        Self {
            expected_seq: stored.last_seq,
            untracked_open: stored.summary.present_count - tracked_open,
            summary: stored.summary,
            tracked: stored
                .participants
                .into_iter()
                .map(|state| Tracked {
                    open_is_stored: state.open.is_some(),
                    state,
                    entered: false,
                    opened: Vec::new(),
                    closed: None,
                })
                .collect(),
            end_open_stints_at: None,
        }
    }

    fn apply(&mut self, at: OffsetDateTime, event: &Event) -> Vec<Anomaly> {
        let summary = &mut self.summary;
        summary.event_count += 1;
        summary.started_at.get_or_insert(at);
        summary.last_event_at = Some(at);
        // TRIGGER_SUMMARY_EVENT is recorded only: a `language` on it is just an extra field.
        if !matches!(event.action, Action::TriggerSummary) {
            if let Some(experience) = event.experience {
                summary.experience = Some(experience);
            }
            if let Some(language) = &event.language {
                summary.language = Some(language.clone());
            }
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
        self.summary.anomaly_count += anomalies.len() as i64;
        anomalies
    }

    fn enter(
        &mut self,
        at: OffsetDateTime,
        entry_type: TransferType,
        participant: &Participant,
        anomalies: &mut Vec<Anomaly>,
    ) {
        let summary = &mut self.summary;
        match entry_type {
            TransferType::Cold => summary.transfers.cold += 1,
            TransferType::Warm => summary.transfers.warm += 1,
            TransferType::Redial => summary.transfers.redial += 1,
            TransferType::Na => {}
        }
        if summary.status == Status::Ended {
            if entry_type != TransferType::Redial {
                anomalies.push(Anomaly::EntryAfterEnd);
            }
            summary.ended_at = None;
        }
        let index = self.tracked_index_or_new(participant);
        let present = self.tracked[index].state.open.is_some();
        let others_present = self.summary.present_count - i64::from(present) > 0;
        if entry_type == TransferType::Na && others_present {
            anomalies.push(Anomaly::NaEntryWhileActive);
        }

        let tracked = &mut self.tracked[index];
        tracked.entered = true;
        tracked.state.name.clone_from(&participant.name);
        tracked.state.kind.clone_from(&participant.kind);
        if present {
            anomalies.push(Anomaly::DuplicateEntry);
        } else {
            let stint = Stint {
                joined_at: at,
                left_at: None,
                entry_type,
                exit_type: None,
            };
            tracked.opened.push(StintRow {
                identity: participant.identity.clone(),
                ordinal: tracked.state.stint_count,
                stint: stint.clone(),
            });
            tracked.state.stint_count += 1;
            tracked.state.open = Some(stint);
            tracked.open_is_stored = false;
            self.summary.present_count += 1;
        }
        self.summary.status = Status::Active;
    }

    fn exit(
        &mut self,
        at: OffsetDateTime,
        exit_type: TransferType,
        participant: &Participant,
        anomalies: &mut Vec<Anomaly>,
    ) {
        let closed = match self.tracked_index(&participant.identity) {
            Some(index) => self.tracked[index].close(at, exit_type.into()),
            None => false,
        };
        if closed {
            self.summary.present_count -= 1;
        } else {
            anomalies.push(Anomaly::ExitWithoutEntry);
        }

        let anyone_present = self.summary.present_count > 0;
        // An exit that closed nothing changed no presence, so only its own anomaly applies.
        match exit_type {
            TransferType::Na if closed && anyone_present => {
                anomalies.push(Anomaly::NaExitWhileOthersPresent);
            }
            TransferType::Warm if closed && !anyone_present => {
                anomalies.push(Anomaly::WarmExitLeftNobody);
            }
            _ => {}
        }

        let summary = &mut self.summary;
        if anyone_present {
            summary.status = Status::Active;
        } else if summary.status != Status::Ended {
            // An NA exit is the vendor's "last agent leaves": it ends the conversation.
            if exit_type == TransferType::Na {
                summary.status = Status::Ended;
                summary.ended_at = Some(at);
            } else {
                summary.status = Status::Idle;
            }
        }
    }

    fn end(&mut self, at: OffsetDateTime, anomalies: &mut Vec<Anomaly>) {
        if self.summary.present_count > 0 {
            anomalies.push(Anomaly::ClosedWithParticipantsPresent);
        }
        for tracked in &mut self.tracked {
            tracked.close(at, ExitType::End);
        }
        if self.untracked_open > 0 {
            self.end_open_stints_at = Some(at);
            self.untracked_open = 0;
        }
        let summary = &mut self.summary;
        summary.present_count = 0;
        if summary.status != Status::Ended {
            summary.status = Status::Ended;
            summary.ended_at = Some(at);
        }
    }

    fn tracked_index(&self, identity: &str) -> Option<usize> {
        self.tracked
            .iter()
            .position(|tracked| tracked.state.identity == identity)
    }

    fn tracked_index_or_new(&mut self, participant: &Participant) -> usize {
        if let Some(index) = self.tracked_index(&participant.identity) {
            return index;
        }
        self.tracked.push(Tracked {
            state: StoredParticipant {
                identity: participant.identity.clone(),
                name: participant.name.clone(),
                kind: participant.kind.clone(),
                position: self.summary.participant_count,
                stint_count: 0,
                open: None,
            },
            open_is_stored: false,
            entered: false,
            opened: Vec::new(),
            closed: None,
        });
        self.summary.participant_count += 1;
        self.tracked.len() - 1
    }

    fn finish(self, received_at: OffsetDateTime, anomalies: Vec<Vec<Anomaly>>) -> AppendPlan {
        let mut plan = AppendPlan {
            expected_seq: self.expected_seq,
            first_seq: self.expected_seq + 1,
            received_at,
            anomalies,
            summary: self.summary,
            participants: Vec::new(),
            opened: Vec::new(),
            closed: Vec::new(),
            end_open_stints_at: self.end_open_stints_at,
        };
        for tracked in self.tracked {
            if tracked.entered {
                let state = tracked.state;
                plan.participants.push(ParticipantRow {
                    identity: state.identity,
                    name: state.name,
                    kind: state.kind,
                    position: state.position,
                    stint_count: state.stint_count,
                });
            }
            plan.opened.extend(tracked.opened);
            plan.closed.extend(tracked.closed);
        }
        plan
    }
}

impl Tracked {
    /// Closes the participant's open stint, if any; whether there was one.
    fn close(&mut self, at: OffsetDateTime, exit_type: ExitType) -> bool {
        let Some(mut stint) = self.state.open.take() else {
            return false;
        };
        stint.left_at = Some(at);
        stint.exit_type = Some(exit_type);
        let ordinal = self.state.stint_count - 1;
        if self.open_is_stored {
            self.open_is_stored = false;
            self.closed = Some(StintRow {
                identity: self.state.identity.clone(),
                ordinal,
                stint,
            });
        } else if let Some(row) = self.opened.last_mut() {
            row.stint = stint;
        }
        true
    }
}
