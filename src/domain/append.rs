//! Planning an append: SPEC 3 applied to a conversation as stored, giving exactly the rows
//! to write. It needs only the conversation's summary and the participants the new events
//! name, never the whole history, so an append costs the same at a conversation's tenth
//! participant and at its ten-thousandth. No I/O: the stores load a [`Stored`] and execute
//! the [`AppendPlan`].

use super::ingest::{Action, Event};
use super::timeline::{Anomaly, ExitType, Hop, HopKind, HopOutcome, Status, Stint, Transfers};
use super::timestamp;
use super::types::{Experience, Participant, TransferType, Transition};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

/// The conversation-level state SPEC 3 and 7 keep.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub status: Status,
    pub experience: Option<Experience>,
    /// Whether a hooks event gave `experience`: an interaction's `type` then no longer does.
    pub experience_from_events: bool,
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
    /// Participants with an open stint.
    pub present_count: i64,
    /// Participants who ever entered: the next new one takes this position.
    pub participant_count: i64,
    /// The merged interaction's `service`, for the list filter.
    pub service: Option<String>,
    /// Hops so far: the next one takes this ordinal.
    pub hop_count: i64,
    /// Who left the conversation empty, while it still is: a COLD entry's hop comes
    /// from them.
    pub last_emptied_by: Option<String>,
    /// Ordinals of the escalations still pending, oldest first.
    pub pending_escalations: Vec<i64>,
    /// A completed escalation whose agent has not entered yet: the next entry is its `to`.
    pub awaiting_agent: Option<i64>,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            status: Status::Idle,
            experience: None,
            experience_from_events: false,
            language: None,
            started_at: None,
            ended_at: None,
            last_event_at: None,
            event_count: 0,
            anomaly_count: 0,
            transfers: Transfers::default(),
            present_count: 0,
            participant_count: 0,
            service: None,
            hop_count: 0,
            last_emptied_by: None,
            pending_escalations: Vec::new(),
            awaiting_agent: None,
        }
    }
}

/// An open stint, as the present-longest rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentStint {
    pub identity: String,
    pub position: i64,
    pub joined_at: OffsetDateTime,
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

/// What an append reads of a conversation: its summary, those of the participants the
/// new events name that it already has, the [`present_needed`] longest-present
/// participants, and its interaction if the events bring one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub last_seq: i64,
    pub summary: Summary,
    pub participants: Vec<StoredParticipant>,
    /// Open stints, longest present first (ties in order of first entry): at least the
    /// first [`present_needed`] of them, or all.
    pub present: Vec<PresentStint>,
    /// The merged interaction; needed only when the events hold `INTERACTION_DATA`.
    pub interaction: Option<Map<String, Value>>,
}

/// How many of the longest-present participants an append of `events` needs: one more
/// than it can close before a WARM entry asks who is present longest, and two to know
/// whether exactly one other is present at a COLD entry.
pub fn present_needed(events: &[Event]) -> i64 {
    let exits = events
        .iter()
        .filter(|event| event.transition() == Some(Transition::Exit))
        .count();
    exits as i64 + 2
}

/// Whether an append of `events` reads and writes the conversation's interaction.
pub fn needs_interaction(events: &[Event]) -> bool {
    events
        .iter()
        .any(|event| matches!(event.action, Action::InteractionData { .. }))
}

/// A change to a stored hop — an escalation that completed or failed, or learned its
/// agent — naming only what changed (a field once set is never cleared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopChange {
    pub ordinal: i64,
    pub outcome: Option<HopOutcome>,
    pub to: Option<String>,
    pub reason: Option<String>,
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
    /// The participant's position (order of first entry).
    pub position: i64,
    pub ordinal: i32,
    pub stint: Stint,
}

impl HopChange {
    /// The hop as this change leaves it.
    pub fn apply_to(&self, hop: &mut Hop) {
        if let Some(outcome) = self.outcome {
            hop.outcome = outcome;
        }
        if let Some(to) = &self.to {
            hop.to = Some(to.clone());
        }
        if let Some(reason) = &self.reason {
            hop.reason = Some(reason.clone());
        }
    }
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
    /// The conversation's status after each event, in order (the change feed shows it).
    pub statuses: Vec<Status>,
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
    /// Hops the events made, as they stand after them.
    pub hops: Vec<Hop>,
    /// Stored hops the events changed, with every field as it stands after them.
    pub hop_changes: Vec<HopChange>,
    /// The merged interaction, when the events changed it.
    pub interaction: Option<Map<String, Value>>,
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

/// The member of a conversation's interaction that lists its deliveries.
const DELIVERED_TO: &str = "deliveredTo";

/// Applies `events`, all received at `received_at`, to the conversation as `stored`.
/// `stored.participants` must hold every participant the events name that the
/// conversation has; others may be left out.
pub fn plan_append(stored: Stored, events: &[Event], received_at: OffsetDateTime) -> AppendPlan {
    let mut planner = Planner::new(stored);
    let first_seq = planner.expected_seq + 1;
    let mut statuses = Vec::with_capacity(events.len());
    let anomalies = (first_seq..)
        .zip(events)
        .map(|(seq, event)| {
            let anomalies = planner.apply(seq, received_at, event);
            statuses.push(planner.summary.status);
            anomalies
        })
        .collect();
    let mut plan = planner.finish(received_at, anomalies);
    plan.statuses = statuses;
    plan
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
    /// Who is present, longest first, as far as the append knows.
    present: Vec<PresentStint>,
    hops: Vec<Hop>,
    hop_changes: Vec<HopChange>,
    interaction: Option<Map<String, Value>>,
    interaction_changed: bool,
}

impl Planner {
    fn new(stored: Stored) -> Self {
        let tracked_open = stored
            .participants
            .iter()
            .filter(|participant| participant.open.is_some())
            .count() as i64;
        let mut present = stored.present;
        for participant in &stored.participants {
            if let Some(open) = &participant.open
                && !present
                    .iter()
                    .any(|known| known.identity == participant.identity)
            {
                present.push(PresentStint {
                    identity: participant.identity.clone(),
                    position: participant.position,
                    joined_at: open.joined_at,
                });
            }
        }
        present.sort_by_key(|stint| (stint.joined_at, stint.position));
        Self {
            expected_seq: stored.last_seq,
            untracked_open: stored.summary.present_count - tracked_open,
            present,
            hops: Vec::new(),
            hop_changes: Vec::new(),
            interaction: stored.interaction,
            interaction_changed: false,
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

    fn apply(&mut self, seq: i64, at: OffsetDateTime, event: &Event) -> Vec<Anomaly> {
        let summary = &mut self.summary;
        summary.event_count += 1;
        summary.started_at.get_or_insert(at);
        summary.last_event_at = Some(at);
        // TRIGGER_SUMMARY_EVENT is recorded only: a `language` on it is just an extra field.
        if !matches!(event.action, Action::TriggerSummary) {
            if let Some(experience) = event.experience {
                summary.experience = Some(experience);
                summary.experience_from_events = true;
            }
            if let Some(language) = &event.language {
                summary.language = Some(language.clone());
            }
        }

        let mut anomalies = Vec::new();
        let was_ended = self.summary.status == Status::Ended;
        match &event.action {
            Action::Transfer {
                transfer_type,
                transition: Transition::Entry,
                participant,
            } => self.enter(seq, at, *transfer_type, participant, &mut anomalies),
            Action::Transfer {
                transfer_type,
                transition: Transition::Exit,
                participant,
            } => self.exit(at, *transfer_type, participant, &mut anomalies),
            Action::EndOfConversation { .. } => self.end(at, &mut anomalies),
            Action::TriggerSummary | Action::TransferData { .. } => {}
            Action::InteractionData { agent, interaction } => {
                self.deliver(at, &agent.identity, interaction);
            }
            Action::BotEscalation { bot, targets } => {
                self.summary.transfers.escalated += 1;
                let ordinal = self.new_hop(seq, at, HopKind::Escalation, Some(&bot.identity));
                let hop = self.hops.last_mut().expect("just made");
                hop.outcome = HopOutcome::Pending;
                hop.to = None;
                hop.targets = Some(targets.clone());
                self.summary.pending_escalations.push(ordinal);
            }
            Action::BotTransferSucceeded { .. } => match self.summary.pending_escalations.pop() {
                Some(ordinal) => {
                    let completed = HopChange {
                        outcome: Some(HopOutcome::Completed),
                        ..HopChange::default()
                    };
                    self.change_hop(ordinal, completed);
                    self.summary.awaiting_agent = Some(ordinal);
                }
                None => anomalies.push(Anomaly::TransferOutcomeWithoutEscalation),
            },
            Action::BotTransferFailed { reason, .. } => {
                match self.summary.pending_escalations.pop() {
                    Some(ordinal) => {
                        self.summary.transfers.failed += 1;
                        let failed = HopChange {
                            outcome: Some(HopOutcome::Failed),
                            reason: Some(reason.clone()),
                            ..HopChange::default()
                        };
                        self.change_hop(ordinal, failed);
                    }
                    None => anomalies.push(Anomaly::TransferOutcomeWithoutEscalation),
                }
            }
        }
        let ends = matches!(event.action, Action::EndOfConversation { .. })
            || (!was_ended && self.summary.status == Status::Ended);
        if ends && !self.summary.pending_escalations.is_empty() {
            anomalies.push(Anomaly::EscalationUnresolved);
        }
        self.summary.anomaly_count += anomalies.len() as i64;
        anomalies
    }

    /// Merges a delivered interaction into the conversation's, member by member, and
    /// notes who it was delivered to and when.
    fn deliver(&mut self, at: OffsetDateTime, agent: &str, delivered: &Map<String, Value>) {
        let merged = self.interaction.get_or_insert_with(Map::new);
        for (key, value) in delivered {
            if key != DELIVERED_TO {
                merged.insert(key.clone(), value.clone());
            }
        }
        let delivery = json!({ "agentId": agent, "at": timestamp::format(at) });
        match merged.get_mut(DELIVERED_TO) {
            Some(Value::Array(deliveries)) => deliveries.push(delivery),
            _ => {
                merged.insert(DELIVERED_TO.to_owned(), Value::Array(vec![delivery]));
            }
        }
        self.summary.service = merged
            .get("service")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if !self.summary.experience_from_events
            && let Some(experience) = delivered
                .get("type")
                .and_then(Value::as_str)
                .and_then(Experience::parse)
        {
            self.summary.experience = Some(experience);
        }
        self.interaction_changed = true;
    }

    /// Starts a completed hop of `kind` from `from` at the event `seq`; its ordinal.
    fn new_hop(&mut self, seq: i64, at: OffsetDateTime, kind: HopKind, from: Option<&str>) -> i64 {
        let ordinal = self.summary.hop_count;
        self.summary.hop_count += 1;
        self.hops.push(Hop {
            ordinal,
            seq,
            at,
            kind,
            from: from.map(str::to_owned),
            to: None,
            outcome: HopOutcome::Completed,
            reason: None,
            targets: None,
        });
        ordinal
    }

    /// Changes the hop `ordinal`, made by this append or stored before it.
    fn change_hop(&mut self, ordinal: i64, change: HopChange) {
        if let Some(hop) = self.hops.iter_mut().find(|hop| hop.ordinal == ordinal) {
            change.apply_to(hop);
            return;
        }
        match self
            .hop_changes
            .iter_mut()
            .find(|known| known.ordinal == ordinal)
        {
            Some(known) => {
                known.outcome = change.outcome.or(known.outcome);
                known.to = change.to.or(known.to.take());
                known.reason = change.reason.or(known.reason.take());
            }
            None => self.hop_changes.push(HopChange { ordinal, ..change }),
        }
    }

    fn enter(
        &mut self,
        seq: i64,
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
            self.hop_for_entry(seq, at, entry_type, participant);
            let tracked = &mut self.tracked[index];
            let stint = Stint {
                joined_at: at,
                left_at: None,
                entry_type,
                exit_type: None,
            };
            tracked.opened.push(StintRow {
                identity: participant.identity.clone(),
                position: tracked.state.position,
                ordinal: tracked.state.stint_count,
                stint: stint.clone(),
            });
            tracked.state.stint_count += 1;
            tracked.state.open = Some(stint);
            tracked.open_is_stored = false;
            let stint = PresentStint {
                identity: participant.identity.clone(),
                position: tracked.state.position,
                joined_at: at,
            };
            let place = self
                .present
                .partition_point(|known| (known.joined_at, known.position) <= (at, stint.position));
            self.present.insert(place, stint);
            self.summary.present_count += 1;
        }
        self.summary.last_emptied_by = None;
        self.summary.status = Status::Active;
    }

    /// The hop an entry that opened a stint makes, before it is counted present (SPEC
    /// 7.3). The agent a completed escalation waits for makes none of its own: the
    /// escalation is the hand-over.
    fn hop_for_entry(
        &mut self,
        seq: i64,
        at: OffsetDateTime,
        entry_type: TransferType,
        participant: &Participant,
    ) {
        if let Some(ordinal) = self.summary.awaiting_agent
            && participant.kind != "bot"
        {
            self.summary.awaiting_agent = None;
            let agent = HopChange {
                to: Some(participant.identity.clone()),
                ..HopChange::default()
            };
            self.change_hop(ordinal, agent);
            return;
        }
        let others: Vec<&PresentStint> = self
            .present
            .iter()
            .filter(|stint| stint.identity != participant.identity)
            .collect();
        let (kind, from) = match entry_type {
            TransferType::Na => return,
            TransferType::Cold => {
                let from = match (&self.summary.last_emptied_by, others.as_slice()) {
                    (Some(emptied_by), []) => Some(emptied_by.clone()),
                    (_, [only]) => Some(only.identity.clone()),
                    _ => None,
                };
                (HopKind::Cold, from)
            }
            // The one who invited: present longest.
            TransferType::Warm => (
                HopKind::Warm,
                others.first().map(|stint| stint.identity.clone()),
            ),
            TransferType::Redial => (HopKind::Redial, None),
        };
        self.new_hop(seq, at, kind, from.as_deref());
        self.hops.last_mut().expect("just made").to = Some(participant.identity.clone());
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
            self.present
                .retain(|stint| stint.identity != participant.identity);
            if self.summary.present_count == 0 {
                self.summary.last_emptied_by = Some(participant.identity.clone());
            }
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
        self.present.clear();
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
            statuses: Vec::new(),
            summary: self.summary,
            participants: Vec::new(),
            opened: Vec::new(),
            closed: Vec::new(),
            end_open_stints_at: self.end_open_stints_at,
            hops: self.hops,
            hop_changes: self.hop_changes,
            interaction: self.interaction.filter(|_| self.interaction_changed),
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
                position: self.state.position,
                ordinal,
                stint,
            });
        } else if let Some(row) = self.opened.last_mut() {
            row.stint = stint;
        }
        true
    }
}
