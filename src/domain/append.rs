//! Planning an append: SPEC 3 applied to a conversation as stored, giving exactly the rows
//! to write. It needs only the conversation's summary and the participants the new events
//! name, never the whole history, so an append costs the same at a conversation's tenth
//! participant and at its ten-thousandth. No I/O: the stores load a [`Stored`] and execute
//! the [`AppendPlan`].

use super::ingest::{Action, Event};
use super::timestamp;
use super::types::{Experience, Participant, TransferType, Transition};
use super::vocabulary::{Anomaly, ExitType, Hop, HopKind, HopOutcome, Status, Stint, Transfers};
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

#[cfg(test)]
mod rule_tests {
    //! SPEC 3 and 7.3, rule by rule, through the fold that applies [`plan_append`].
    use super::*;
    use crate::domain::Experience;
    use crate::domain::ingest::parsed_event as parse;
    use crate::domain::timeline::Timeline;
    use crate::domain::vocabulary::*;
    use serde_json::{Value, json};
    use time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-03-01 09:00:00 UTC);

    fn at(seconds: i64) -> OffsetDateTime {
        T0 + Duration::seconds(seconds)
    }

    fn transfer(transfer_type: &str, transition: &str, agent: u8) -> Event {
        parse(json!({
            "name": "INTERNAL_TRANSFER_EVENT",
            "transfertype": transfer_type,
            "transition": transition,
            "isExtAD": true,
            "language": "en",
            "experience": "voice",
            "participant": {
                "identity": format!("agentId{agent}"),
                "name": format!("AgentName{agent}"),
                "type": "agent"
            }
        }))
    }

    fn entry(transfer_type: &str, agent: u8) -> Event {
        transfer(transfer_type, "entry", agent)
    }

    fn exit(transfer_type: &str, agent: u8) -> Event {
        transfer(transfer_type, "exit", agent)
    }

    fn end_of_conversation() -> Event {
        parse(json!({ "name": "END_OF_CONVERSATION", "reason": "customer hung up" }))
    }

    fn trigger_summary() -> Event {
        parse(json!({ "name": "TRIGGER_SUMMARY_EVENT", "data": { "summary": "billing" } }))
    }

    /// Folds `events`, the n-th received `n` seconds after T0.
    fn fold(events: &[Event]) -> (Timeline, Vec<Vec<Anomaly>>) {
        Timeline::fold(
            events
                .iter()
                .enumerate()
                .map(|(index, event)| (at(index as i64), event)),
        )
    }

    /// The status after each of `events`.
    fn statuses(events: &[Event]) -> Vec<Status> {
        let mut timeline = Timeline::default();
        events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                timeline.apply(at(index as i64), event);
                timeline.summary.status
            })
            .collect()
    }

    fn none(events: usize) -> Vec<Vec<Anomaly>> {
        vec![Vec::new(); events]
    }

    /// `events` anomaly lists, all empty but the one at `index`.
    fn only_at(events: usize, index: usize, anomalies: &[Anomaly]) -> Vec<Vec<Anomaly>> {
        let mut expected = none(events);
        expected[index] = anomalies.to_vec();
        expected
    }

    fn stints(timeline: &Timeline, agent: u8) -> &[Stint] {
        let identity = format!("agentId{agent}");
        &timeline
            .participants
            .iter()
            .find(|participant| participant.identity == identity)
            .unwrap_or_else(|| panic!("{identity} has a timeline"))
            .stints
    }

    fn identities(timeline: &Timeline) -> Vec<&str> {
        timeline
            .participants
            .iter()
            .map(|participant| participant.identity.as_str())
            .collect()
    }

    fn exit_types(stints: &[Stint]) -> Vec<(TransferType, Option<ExitType>)> {
        stints
            .iter()
            .map(|stint| (stint.entry_type, stint.exit_type))
            .collect()
    }

    /// The seed's "Cold Transfer Flow", in the order it lists the steps.
    fn cold_transfer_flow() -> Vec<Event> {
        vec![
            entry("NA", 1),
            exit("cold", 1),
            entry("cold", 2),
            exit("cold", 2),
            entry("cold", 3),
            exit("NA", 3),
        ]
    }

    /// The seed's "Warm Transfer Flow".
    fn warm_transfer_flow() -> Vec<Event> {
        vec![
            entry("NA", 1),
            entry("warm", 2),
            entry("warm", 3),
            exit("warm", 2),
            exit("warm", 3),
            exit("NA", 1),
        ]
    }

    /// A Salesforce bot message, parsed from a bot-messages body as the route would.
    fn bot(message: Value) -> Event {
        let body = json!({ "message": message });
        let mut batch = crate::domain::sources::parse_bot_messages(
            body.to_string().as_bytes(),
            "st-1",
            "atesta-0001",
        )
        .expect("the test body is a valid bot-messages request");
        batch.events.remove(0)
    }

    fn escalate() -> Event {
        bot(json!({ "type": "escalate", "targets": [{ "type": "Skill", "value": "billing" }] }))
    }

    fn transfer_succeeded() -> Event {
        bot(json!({ "type": "transferSucceeded", "sequenceId": 2 }))
    }

    fn transfer_failed(reason: &str) -> Event {
        bot(json!({ "type": "transferFailed", "sequenceId": 2, "reason": reason }))
    }

    /// `(kind, from, to, outcome, reason)` of a hop.
    type HopColumns<'a> = (
        HopKind,
        Option<&'a str>,
        Option<&'a str>,
        HopOutcome,
        Option<&'a str>,
    );

    fn hops(timeline: &Timeline) -> Vec<HopColumns<'_>> {
        timeline
            .hops
            .iter()
            .map(|hop| {
                (
                    hop.kind,
                    hop.from.as_deref(),
                    hop.to.as_deref(),
                    hop.outcome,
                    hop.reason.as_deref(),
                )
            })
            .collect()
    }

    // Hops (SPEC 7.3).

    #[test]
    fn the_cold_flow_hands_over_from_each_agent_to_the_next() {
        let (timeline, anomalies) = fold(&cold_transfer_flow());

        use HopOutcome::Completed;
        assert_eq!(
            hops(&timeline),
            [
                (
                    HopKind::Cold,
                    Some("agentId1"),
                    Some("agentId2"),
                    Completed,
                    None
                ),
                (
                    HopKind::Cold,
                    Some("agentId2"),
                    Some("agentId3"),
                    Completed,
                    None
                ),
            ]
        );
        let seqs: Vec<i64> = timeline.hops.iter().map(|hop| hop.seq).collect();
        assert_eq!(seqs, [3, 5], "each hop is at its COLD entry");
        assert_eq!(anomalies, none(6));
    }

    #[test]
    fn the_warm_flow_hands_over_from_the_inviting_agent_to_each_consultant() {
        let (timeline, _) = fold(&warm_transfer_flow());

        use HopOutcome::Completed;
        assert_eq!(
            hops(&timeline),
            [
                (
                    HopKind::Warm,
                    Some("agentId1"),
                    Some("agentId2"),
                    Completed,
                    None
                ),
                (
                    HopKind::Warm,
                    Some("agentId1"),
                    Some("agentId3"),
                    Completed,
                    None
                ),
            ]
        );
    }

    #[test]
    fn a_cold_entry_before_the_previous_agent_leaves_comes_from_that_agent() {
        let (timeline, _) = fold(&[entry("NA", 1), entry("cold", 2), exit("cold", 1)]);

        assert_eq!(
            hops(&timeline),
            [(
                HopKind::Cold,
                Some("agentId1"),
                Some("agentId2"),
                HopOutcome::Completed,
                None
            )]
        );
    }

    #[test]
    fn a_cold_entry_among_several_present_comes_from_nobody_known() {
        let (timeline, _) = fold(&[entry("NA", 1), entry("warm", 2), entry("cold", 3)]);

        assert_eq!(timeline.hops[1].from, None);
    }

    #[test]
    fn a_redial_comes_from_nobody_and_na_entries_make_no_hop() {
        let (timeline, _) = fold(&[entry("NA", 1), exit("NA", 1), entry("redial", 1)]);

        assert_eq!(
            hops(&timeline),
            [(
                HopKind::Redial,
                None,
                Some("agentId1"),
                HopOutcome::Completed,
                None
            )]
        );
    }

    #[test]
    fn an_escalation_that_succeeded_is_one_completed_hop_from_the_bot_to_the_next_agent() {
        let events = [escalate(), transfer_succeeded(), entry("NA", 1)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(
            hops(&timeline),
            [(
                HopKind::Escalation,
                Some("bot:st-1"),
                Some("agentId1"),
                HopOutcome::Completed,
                None
            )]
        );
        assert_eq!(
            timeline.hops[0].targets,
            Some(vec![json!({ "type": "Skill", "value": "billing" })])
        );
        assert_eq!(timeline.summary.transfers.escalated, 1);
        assert_eq!(timeline.summary.transfers.failed, 0);
        assert_eq!(anomalies, none(3));
    }

    #[test]
    fn the_agent_of_a_succeeded_escalation_entering_cold_makes_no_second_hop() {
        let (timeline, _) = fold(&[escalate(), transfer_succeeded(), entry("cold", 2)]);

        assert_eq!(timeline.hops.len(), 1);
        assert_eq!(timeline.hops[0].to.as_deref(), Some("agentId2"));
    }

    #[test]
    fn an_escalation_that_failed_is_a_failed_hop_with_its_reason() {
        let (timeline, anomalies) = fold(&[escalate(), transfer_failed("NoAgentAvailable")]);

        assert_eq!(
            hops(&timeline),
            [(
                HopKind::Escalation,
                Some("bot:st-1"),
                None,
                HopOutcome::Failed,
                Some("NoAgentAvailable")
            )]
        );
        assert_eq!(timeline.summary.transfers.failed, 1);
        assert_eq!(anomalies, none(2));
    }

    #[test]
    fn a_transfer_outcome_without_an_escalation_is_flagged() {
        let (timeline, anomalies) = fold(&[transfer_succeeded(), transfer_failed("Error")]);

        let flagged = [Anomaly::TransferOutcomeWithoutEscalation];
        assert_eq!(anomalies, [flagged.to_vec(), flagged.to_vec()]);
        assert!(timeline.hops.is_empty());
    }

    #[test]
    fn an_escalation_still_pending_at_the_end_is_flagged_on_the_ending_event() {
        let ended_by_na_exit = [entry("NA", 1), escalate(), exit("NA", 1)];
        let ended_by_end = [escalate(), end_of_conversation()];

        let (timeline, anomalies) = fold(&ended_by_na_exit);
        let (_, ended) = fold(&ended_by_end);

        assert_eq!(anomalies, only_at(3, 2, &[Anomaly::EscalationUnresolved]));
        assert_eq!(timeline.hops[0].outcome, HopOutcome::Pending);
        assert_eq!(ended, only_at(2, 1, &[Anomaly::EscalationUnresolved]));
    }

    // The vendor's flows.

    #[test]
    fn cold_transfer_flow_gives_each_agent_one_stint() {
        let (timeline, _) = fold(&cold_transfer_flow());

        assert_eq!(identities(&timeline), ["agentId1", "agentId2", "agentId3"]);
        assert_eq!(
            exit_types(stints(&timeline, 1)),
            [(TransferType::Na, Some(ExitType::Cold))]
        );
        assert_eq!(
            exit_types(stints(&timeline, 2)),
            [(TransferType::Cold, Some(ExitType::Cold))]
        );
        assert_eq!(
            exit_types(stints(&timeline, 3)),
            [(TransferType::Cold, Some(ExitType::Na))]
        );
    }

    #[test]
    fn cold_transfer_flow_stints_run_from_entry_to_exit() {
        let (timeline, _) = fold(&cold_transfer_flow());

        let spans: Vec<_> = (1..=3)
            .map(|agent| {
                (
                    stints(&timeline, agent)[0].joined_at,
                    stints(&timeline, agent)[0].left_at,
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                (at(0), Some(at(1))),
                (at(2), Some(at(3))),
                (at(4), Some(at(5)))
            ]
        );
    }

    #[test]
    fn cold_transfer_flow_goes_idle_between_agents_and_ends_on_the_last_na_exit() {
        let statuses = statuses(&cold_transfer_flow());

        assert_eq!(
            statuses,
            [
                Status::Active,
                Status::Idle,
                Status::Active,
                Status::Idle,
                Status::Active,
                Status::Ended
            ]
        );
    }

    #[test]
    fn cold_transfer_flow_counts_two_cold_transfers_and_no_anomalies() {
        let (timeline, anomalies) = fold(&cold_transfer_flow());

        assert_eq!(
            timeline.summary.transfers,
            Transfers {
                cold: 2,
                warm: 0,
                redial: 0,
                ..Transfers::default()
            }
        );
        assert_eq!(anomalies, none(6));
        assert_eq!(timeline.summary.anomaly_count, 0);
    }

    #[test]
    fn cold_transfer_flow_ends_at_the_last_events_time() {
        let (timeline, _) = fold(&cold_transfer_flow());

        assert_eq!(timeline.summary.ended_at, Some(at(5)));
        assert_eq!(timeline.present().count(), 0);
    }

    #[test]
    fn cold_entry_before_the_previous_agents_cold_exit_is_normal() {
        let events = [
            entry("NA", 1),
            entry("COLD", 2),
            exit("COLD", 1),
            entry("COLD", 3),
            exit("COLD", 2),
            exit("NA", 3),
        ];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, none(6));
        assert_eq!(
            statuses(&events),
            [
                Status::Active,
                Status::Active,
                Status::Active,
                Status::Active,
                Status::Active,
                Status::Ended
            ]
        );
        assert_eq!(timeline.summary.transfers.cold, 2);
        assert_eq!(
            exit_types(stints(&timeline, 2)),
            [(TransferType::Cold, Some(ExitType::Cold))]
        );
    }

    #[test]
    fn warm_transfer_flow_stays_active_until_the_last_na_exit() {
        let statuses = statuses(&warm_transfer_flow());

        assert_eq!(
            statuses,
            [
                Status::Active,
                Status::Active,
                Status::Active,
                Status::Active,
                Status::Active,
                Status::Ended
            ]
        );
    }

    #[test]
    fn warm_transfer_flow_counts_two_warm_transfers_and_no_anomalies() {
        let (timeline, anomalies) = fold(&warm_transfer_flow());

        assert_eq!(
            timeline.summary.transfers,
            Transfers {
                cold: 0,
                warm: 2,
                redial: 0,
                ..Transfers::default()
            }
        );
        assert_eq!(anomalies, none(6));
        assert_eq!(timeline.summary.ended_at, Some(at(5)));
    }

    #[test]
    fn warm_transfer_flow_records_how_each_agent_came_and_went() {
        let (timeline, _) = fold(&warm_transfer_flow());

        assert_eq!(
            exit_types(stints(&timeline, 1)),
            [(TransferType::Na, Some(ExitType::Na))]
        );
        assert_eq!(
            exit_types(stints(&timeline, 2)),
            [(TransferType::Warm, Some(ExitType::Warm))]
        );
        assert_eq!(
            exit_types(stints(&timeline, 3)),
            [(TransferType::Warm, Some(ExitType::Warm))]
        );
    }

    // One test per anomaly code.

    #[test]
    fn anomaly_codes_are_the_ones_spec_names() {
        let codes: Vec<_> = Anomaly::ALL.iter().copied().map(Anomaly::as_str).collect();

        assert_eq!(
            codes,
            [
                "duplicate_entry",
                "na_entry_while_active",
                "exit_without_entry",
                "na_exit_while_others_present",
                "warm_exit_left_nobody",
                "entry_after_end",
                "closed_with_participants_present",
                "transfer_outcome_without_escalation",
                "escalation_unresolved"
            ]
        );
        for &anomaly in Anomaly::ALL {
            assert_eq!(Anomaly::parse(anomaly.as_str()), Some(anomaly));
            assert_eq!(
                serde_json::to_value(anomaly).unwrap(),
                json!(anomaly.as_str())
            );
        }
    }

    #[test]
    fn entering_twice_is_a_duplicate_entry_and_opens_no_second_stint() {
        let events = [entry("NA", 1), entry("COLD", 1)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, only_at(2, 1, &[Anomaly::DuplicateEntry]));
        assert_eq!(stints(&timeline, 1).len(), 1);
        assert_eq!(stints(&timeline, 1)[0].entry_type, TransferType::Na);
        assert_eq!(timeline.summary.status, Status::Active);
    }

    #[test]
    fn na_entry_while_another_agent_is_present_is_flagged() {
        let events = [entry("NA", 1), entry("NA", 2)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, only_at(2, 1, &[Anomaly::NaEntryWhileActive]));
        assert_eq!(
            timeline.present().collect::<Vec<_>>(),
            ["agentId1", "agentId2"]
        );
    }

    #[test]
    fn exit_of_someone_never_present_is_flagged_and_closes_nothing() {
        let events = [entry("NA", 1), exit("COLD", 2)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, only_at(2, 1, &[Anomaly::ExitWithoutEntry]));
        assert_eq!(identities(&timeline), ["agentId1"]);
        assert!(stints(&timeline, 1)[0].is_open());
        assert_eq!(timeline.summary.status, Status::Active);
    }

    #[test]
    fn exiting_twice_is_flagged_and_keeps_the_first_exit() {
        let events = [
            entry("NA", 1),
            exit("COLD", 1),
            exit("COLD", 1),
            entry("COLD", 2),
        ];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, only_at(4, 2, &[Anomaly::ExitWithoutEntry]));
        assert_eq!(stints(&timeline, 1)[0].left_at, Some(at(1)));
        assert_eq!(stints(&timeline, 1)[0].exit_type, Some(ExitType::Cold));
    }

    #[test]
    fn an_exit_that_closed_nothing_carries_only_exit_without_entry() {
        let events = [
            entry("NA", 1),
            exit("WARM", 2),
            entry("WARM", 3),
            exit("NA", 4),
        ];

        let (_, anomalies) = fold(&events);

        assert_eq!(anomalies[1], [Anomaly::ExitWithoutEntry]);
        assert_eq!(anomalies[3], [Anomaly::ExitWithoutEntry]);
    }

    #[test]
    fn na_exit_while_others_remain_is_flagged_and_keeps_the_conversation_active() {
        let events = [entry("NA", 1), entry("WARM", 2), exit("NA", 1)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(
            anomalies,
            only_at(3, 2, &[Anomaly::NaExitWhileOthersPresent])
        );
        assert_eq!(stints(&timeline, 1)[0].exit_type, Some(ExitType::Na));
        assert_eq!(timeline.summary.status, Status::Active);
        assert_eq!(timeline.summary.ended_at, None);
    }

    #[test]
    fn warm_exit_of_the_last_agent_is_flagged_and_idles_the_conversation() {
        let events = [
            entry("NA", 1),
            entry("WARM", 2),
            exit("WARM", 1),
            exit("WARM", 2),
        ];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, only_at(4, 3, &[Anomaly::WarmExitLeftNobody]));
        assert_eq!(stints(&timeline, 2)[0].exit_type, Some(ExitType::Warm));
        assert_eq!(timeline.summary.status, Status::Idle);
    }

    #[test]
    fn entry_after_the_end_is_flagged_and_reopens_the_conversation() {
        let events = [entry("NA", 1), exit("NA", 1), entry("COLD", 2)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, only_at(3, 2, &[Anomaly::EntryAfterEnd]));
        assert_eq!(timeline.summary.status, Status::Active);
        assert_eq!(timeline.summary.ended_at, None);
        assert_eq!(timeline.present().collect::<Vec<_>>(), ["agentId2"]);
    }

    #[test]
    fn redial_entry_after_the_end_reopens_without_an_anomaly() {
        let events = [entry("NA", 1), exit("NA", 1), entry("REDIAL", 1)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, none(3));
        assert_eq!(timeline.summary.status, Status::Active);
        assert_eq!(timeline.summary.ended_at, None);
        assert_eq!(timeline.summary.transfers.redial, 1);
        assert_eq!(
            exit_types(stints(&timeline, 1)),
            [
                (TransferType::Na, Some(ExitType::Na)),
                (TransferType::Redial, None)
            ]
        );
    }

    #[test]
    fn end_of_conversation_with_agents_present_is_flagged_and_closes_their_stints() {
        let events = [entry("NA", 1), entry("WARM", 2), end_of_conversation()];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(
            anomalies,
            only_at(3, 2, &[Anomaly::ClosedWithParticipantsPresent])
        );
        for agent in [1, 2] {
            assert_eq!(stints(&timeline, agent)[0].exit_type, Some(ExitType::End));
            assert_eq!(stints(&timeline, agent)[0].left_at, Some(at(2)));
        }
        assert_eq!(timeline.summary.status, Status::Ended);
        assert_eq!(timeline.summary.ended_at, Some(at(2)));
    }

    #[test]
    fn end_of_conversation_after_everyone_left_is_not_flagged() {
        let events = [entry("NA", 1), exit("COLD", 1), end_of_conversation()];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, none(3));
        assert_eq!(stints(&timeline, 1)[0].exit_type, Some(ExitType::Cold));
    }

    // Every status transition.

    #[test]
    fn a_new_timeline_is_idle_and_empty() {
        let timeline = Timeline::default();

        assert_eq!(timeline.summary.status, Status::Idle);
        assert_eq!(timeline.summary.event_count, 0);
        assert_eq!(timeline.summary.started_at, None);
        assert!(timeline.participants.is_empty());
    }

    #[test]
    fn first_entry_makes_a_new_conversation_active() {
        assert_eq!(statuses(&[entry("NA", 1)]), [Status::Active]);
    }

    #[test]
    fn cold_exit_of_the_last_agent_makes_the_conversation_idle() {
        let events = [entry("NA", 1), exit("COLD", 1)];

        let (timeline, _) = fold(&events);

        assert_eq!(timeline.summary.status, Status::Idle);
        assert_eq!(timeline.summary.ended_at, None);
    }

    #[test]
    fn entry_makes_an_idle_conversation_active_again() {
        let events = [entry("NA", 1), exit("COLD", 1), entry("COLD", 2)];

        assert_eq!(
            statuses(&events),
            [Status::Active, Status::Idle, Status::Active]
        );
    }

    #[test]
    fn na_exit_of_the_last_agent_ends_the_conversation() {
        let events = [entry("NA", 1), exit("NA", 1)];

        let (timeline, _) = fold(&events);

        assert_eq!(timeline.summary.status, Status::Ended);
        assert_eq!(timeline.summary.ended_at, Some(at(1)));
    }

    #[test]
    fn end_of_conversation_ends_an_active_conversation() {
        let events = [entry("NA", 1), end_of_conversation()];

        assert_eq!(statuses(&events), [Status::Active, Status::Ended]);
    }

    #[test]
    fn end_of_conversation_ends_an_idle_conversation() {
        let events = [entry("NA", 1), exit("COLD", 1), end_of_conversation()];

        let (timeline, _) = fold(&events);

        assert_eq!(
            statuses(&events),
            [Status::Active, Status::Idle, Status::Ended]
        );
        assert_eq!(timeline.summary.ended_at, Some(at(2)));
    }

    #[test]
    fn end_of_conversation_after_the_last_na_exit_keeps_the_first_end_time() {
        let events = [entry("NA", 1), exit("NA", 1), end_of_conversation()];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, none(3));
        assert_eq!(timeline.summary.status, Status::Ended);
        assert_eq!(timeline.summary.ended_at, Some(at(1)));
    }

    #[test]
    fn entry_reopens_an_ended_conversation() {
        let events = [entry("NA", 1), end_of_conversation(), entry("NA", 1)];

        assert_eq!(
            statuses(&events),
            [Status::Active, Status::Ended, Status::Active]
        );
    }

    #[test]
    fn trigger_summary_leaves_an_ended_conversation_ended() {
        let events = [entry("NA", 1), exit("NA", 1), trigger_summary()];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, none(3));
        assert_eq!(timeline.summary.status, Status::Ended);
        assert_eq!(timeline.summary.ended_at, Some(at(1)));
    }

    #[test]
    fn exit_without_entry_leaves_an_ended_conversation_ended() {
        let events = [entry("NA", 1), exit("NA", 1), exit("COLD", 2)];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(anomalies, only_at(3, 2, &[Anomaly::ExitWithoutEntry]));
        assert_eq!(timeline.summary.status, Status::Ended);
        assert_eq!(timeline.summary.ended_at, Some(at(1)));
    }

    #[test]
    fn trigger_summary_changes_only_the_event_count_and_last_event_time() {
        let (before, _) = fold(&[entry("NA", 1), entry("WARM", 2)]);
        let summary = parse(json!({
            "name": "TRIGGER_SUMMARY_EVENT",
            "language": "fr",
            "experience": "chat",
            "data": { "summary": "billing" }
        }));
        let mut after = before.clone();

        let anomalies = after.apply(at(7), &summary);

        assert!(anomalies.is_empty());
        assert_eq!(
            after,
            Timeline {
                summary: Summary {
                    event_count: 3,
                    last_event_at: Some(at(7)),
                    ..before.summary.clone()
                },
                ..before
            }
        );
    }

    // Counts and durations.

    #[test]
    fn event_and_anomaly_counts_cover_every_event() {
        let events = [
            entry("NA", 1),
            entry("NA", 1),
            trigger_summary(),
            exit("COLD", 2),
            end_of_conversation(),
        ];

        let (timeline, anomalies) = fold(&events);

        assert_eq!(timeline.summary.event_count, 5);
        assert_eq!(
            anomalies,
            [
                vec![],
                vec![Anomaly::DuplicateEntry],
                vec![],
                vec![Anomaly::ExitWithoutEntry],
                vec![Anomaly::ClosedWithParticipantsPresent]
            ]
        );
        assert_eq!(timeline.summary.anomaly_count, 3);
    }

    #[test]
    fn started_at_is_the_first_event_and_last_event_at_the_latest() {
        let events = [trigger_summary(), entry("NA", 1), exit("COLD", 1)];

        let (timeline, _) = fold(&events);

        assert_eq!(timeline.summary.started_at, Some(at(0)));
        assert_eq!(timeline.summary.last_event_at, Some(at(2)));
    }

    #[test]
    fn experience_and_language_follow_the_latest_event_that_gives_them() {
        let chat_in_french = parse(json!({
            "name": "INTERNAL_TRANSFER_EVENT",
            "transfertype": "COLD",
            "transition": "entry",
            "isExtAD": "false",
            "language": "fr",
            "experience": "CHAT",
            "participant": { "identity": "agentId2", "name": "AgentName2", "type": "agent" }
        }));
        let events = [entry("NA", 1), chat_in_french, end_of_conversation()];

        let (timeline, _) = fold(&events);

        assert_eq!(timeline.summary.experience, Some(Experience::Chat));
        assert_eq!(timeline.summary.language.as_deref(), Some("fr"));
    }

    #[test]
    fn transfers_count_entries_of_their_type_only() {
        let events = [
            entry("NA", 1),
            entry("WARM", 2),
            exit("WARM", 2),
            entry("COLD", 3),
            exit("COLD", 1),
            exit("NA", 3),
            entry("REDIAL", 3),
        ];

        let (timeline, _) = fold(&events);

        assert_eq!(
            timeline.summary.transfers,
            Transfers {
                cold: 1,
                warm: 1,
                redial: 1,
                ..Transfers::default()
            }
        );
    }

    #[test]
    fn a_closed_stint_lasts_from_its_entry_to_its_exit() {
        let stint = Stint {
            joined_at: at(0),
            left_at: Some(at(12) + Duration::milliseconds(345)),
            entry_type: TransferType::Na,
            exit_type: Some(ExitType::Cold),
        };

        assert_eq!(stint.duration_seconds(at(100)), 12.345);
    }

    #[test]
    fn an_open_stint_is_counted_up_to_now() {
        let stint = Stint {
            joined_at: at(10),
            left_at: None,
            entry_type: TransferType::Warm,
            exit_type: None,
        };

        assert_eq!(stint.duration_seconds(at(40)), 30.0);
    }

    #[test]
    fn an_open_stint_counted_to_a_now_before_its_entry_lasts_nothing() {
        let stint = Stint {
            joined_at: at(10),
            left_at: None,
            entry_type: TransferType::Cold,
            exit_type: None,
        };

        assert_eq!(stint.duration_seconds(at(5)), 0.0);
    }

    // Properties over random event histories.

    mod properties {
        use super::*;
        use crate::domain::Experience;
        use crate::domain::{
            Action, Participant, ParticipantRow, Transition, needs_interaction, present_needed,
        };
        use proptest::prelude::*;
        use serde_json::value::RawValue;

        fn transfer_type() -> impl Strategy<Value = TransferType> {
            prop::sample::select(vec![
                TransferType::Na,
                TransferType::Cold,
                TransferType::Warm,
                TransferType::Redial,
            ])
        }

        fn transition() -> impl Strategy<Value = Transition> {
            prop::sample::select(vec![Transition::Entry, Transition::Exit])
        }

        fn action() -> impl Strategy<Value = Action> {
            prop_oneof![
                8 => (transfer_type(), transition(), 1..=4u8).prop_map(
                    |(transfer_type, transition, agent)| Action::Transfer {
                        transfer_type,
                        transition,
                        participant: Participant {
                            identity: format!("agentId{agent}"),
                            name: format!("AgentName{agent}"),
                            kind: "agent".to_owned(),
                        },
                    }
                ),
                1 => Just(Action::EndOfConversation { participant: None }),
                1 => Just(Action::TriggerSummary),
                1 => bot_action(),
                1 => (prop::sample::select(vec!["voice", "chat"]),
                      prop::sample::select(vec!["billing", "sales"]), 1..=4u8)
                    .prop_map(|(kind, service, agent)| Action::InteractionData {
                        agent: Participant {
                            identity: format!("agentId{agent}"),
                            name: String::new(),
                            kind: "agent".to_owned(),
                        },
                        interaction: serde_json::json!({
                            "interactionId": "i-1", "type": kind, "service": service
                        })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    }),
            ]
        }

        fn bot_action() -> impl Strategy<Value = Action> {
            let bot = Participant {
                identity: "bot:st-1".to_owned(),
                name: String::new(),
                kind: "bot".to_owned(),
            };
            prop_oneof![
                Just(Action::BotEscalation {
                    bot: bot.clone(),
                    targets: vec![serde_json::json!({ "type": "Agent", "value": "queue-1" })],
                }),
                Just(Action::BotTransferSucceeded { bot: bot.clone() }),
                Just(Action::BotTransferFailed {
                    bot,
                    reason: "NoAgentAvailable".to_owned(),
                }),
            ]
        }

        fn event() -> impl Strategy<Value = Event> {
            let language = prop::option::of(prop::sample::select(vec!["en", "fr"]));
            let experience = prop::option::of(prop::sample::select(vec![
                Experience::Chat,
                Experience::Voice,
                Experience::Email,
            ]));
            (action(), language, experience).prop_map(|(action, language, experience)| Event {
                action,
                language: language.map(str::to_owned),
                experience,
                transfer_data: None,
                payload: RawValue::from_string("{}".to_owned()).unwrap(),
            })
        }

        /// Up to 60 events with non-decreasing, microsecond-precision receive times.
        fn history() -> impl Strategy<Value = Vec<(OffsetDateTime, Event)>> {
            prop::collection::vec((0..5_000_000i64, event()), 0..60).prop_map(|steps| {
                let mut now = T0 + Duration::microseconds(123_456);
                steps
                    .into_iter()
                    .map(|(gap, event)| {
                        now += Duration::microseconds(gap);
                        (now, event)
                    })
                    .collect()
            })
        }

        fn events(
            history: &[(OffsetDateTime, Event)],
        ) -> impl Iterator<Item = (OffsetDateTime, &Event)> {
            history.iter().map(|(at, event)| (*at, event))
        }

        /// A conversation's rows as a store keeps them, written only from plans.
        #[derive(Default)]
        struct Rows {
            last_seq: i64,
            summary: Summary,
            participants: Vec<ParticipantRow>,
            stints: std::collections::BTreeMap<(String, i32), Stint>,
            hops: Vec<Hop>,
            interaction: Option<serde_json::Map<String, serde_json::Value>>,
        }

        impl Rows {
            /// What a store loads for an append of `events`: only the participants they
            /// name, only as many of those present longest as it needs, and the interaction
            /// only for an interaction.
            fn load(&self, events: &[Event]) -> Stored {
                let named: Vec<&str> = events
                    .iter()
                    .filter_map(|event| event.participant())
                    .map(|participant| participant.identity.as_str())
                    .collect();
                let position_of = |identity: &str| {
                    self.participants
                        .iter()
                        .find(|row| row.identity == identity)
                        .map_or(0, |row| row.position)
                };
                let mut present: Vec<PresentStint> = self
                    .stints
                    .iter()
                    .filter(|(_, stint)| stint.is_open())
                    .map(|((identity, _), stint)| PresentStint {
                        identity: identity.clone(),
                        position: position_of(identity),
                        joined_at: stint.joined_at,
                    })
                    .collect();
                present.sort_by_key(|stint| (stint.joined_at, stint.position));
                present.truncate(present_needed(events) as usize);
                Stored {
                    last_seq: self.last_seq,
                    summary: self.summary.clone(),
                    participants: self
                        .participants
                        .iter()
                        .filter(|row| named.contains(&row.identity.as_str()))
                        .map(|row| StoredParticipant {
                            identity: row.identity.clone(),
                            name: row.name.clone(),
                            kind: row.kind.clone(),
                            position: row.position,
                            stint_count: row.stint_count,
                            open: self
                                .stints
                                .get(&(row.identity.clone(), row.stint_count - 1))
                                .filter(|stint| stint.is_open())
                                .cloned(),
                        })
                        .collect(),
                    present,
                    interaction: needs_interaction(events)
                        .then(|| self.interaction.clone())
                        .flatten(),
                }
            }

            /// Executes `plan` in the order the stores do.
            fn write(&mut self, plan: AppendPlan) {
                self.last_seq = plan.last_seq();
                self.summary = plan.summary;
                for row in plan.closed {
                    self.stints.insert((row.identity, row.ordinal), row.stint);
                }
                if let Some(at) = plan.end_open_stints_at {
                    for stint in self.stints.values_mut().filter(|stint| stint.is_open()) {
                        stint.left_at = Some(at);
                        stint.exit_type = Some(ExitType::End);
                    }
                }
                for row in plan.opened {
                    self.stints.insert((row.identity, row.ordinal), row.stint);
                }
                for row in plan.participants {
                    self.participants
                        .retain(|known| known.identity != row.identity);
                    self.participants.push(row);
                }
                for change in plan.hop_changes {
                    change.apply_to(&mut self.hops[change.ordinal as usize]);
                }
                self.hops.extend(plan.hops);
                if let Some(interaction) = plan.interaction {
                    self.interaction = Some(interaction);
                }
            }

            /// The timeline the rows make, as the store reads it.
            fn timeline(&self) -> Timeline {
                let mut participants = self.participants.clone();
                participants.sort_by_key(|row| row.position);
                Timeline {
                    summary: self.summary.clone(),
                    participants: participants
                        .into_iter()
                        .map(|row| ParticipantTimeline {
                            stints: (0..row.stint_count)
                                .filter_map(|ordinal| {
                                    self.stints.get(&(row.identity.clone(), ordinal)).cloned()
                                })
                                .collect(),
                            identity: row.identity,
                            name: row.name,
                            kind: row.kind,
                        })
                        .collect(),
                    hops: self.hops.clone(),
                    interaction: self.interaction.clone(),
                }
            }
        }

        fn check_invariants(
            timeline: &Timeline,
            events_seen: usize,
            anomalies_seen: usize,
        ) -> Result<(), TestCaseError> {
            for participant in &timeline.participants {
                let open = participant
                    .stints
                    .iter()
                    .filter(|stint| stint.is_open())
                    .count();
                prop_assert!(open <= 1, "{} has {open} open stints", participant.identity);
                let closed = &participant.stints[..participant.stints.len().saturating_sub(1)];
                prop_assert!(closed.iter().all(|stint| !stint.is_open()));
                for stint in &participant.stints {
                    match stint.left_at {
                        Some(left_at) => {
                            prop_assert!(left_at >= stint.joined_at);
                            prop_assert!(stint.exit_type.is_some());
                        }
                        None => prop_assert!(stint.exit_type.is_none()),
                    }
                }
            }
            let someone_present = timeline.present().next().is_some();
            prop_assert_eq!(timeline.summary.status == Status::Active, someone_present);
            prop_assert!(!(timeline.summary.status == Status::Idle && someone_present));
            prop_assert_eq!(
                timeline.summary.ended_at.is_some(),
                timeline.summary.status == Status::Ended
            );
            prop_assert_eq!(timeline.summary.event_count, events_seen as i64);
            prop_assert_eq!(timeline.summary.anomaly_count, anomalies_seen as i64);
            Ok(())
        }

        proptest! {
            #[test]
            fn the_fold_keeps_its_invariants_after_every_event(history in history()) {
                let mut timeline = Timeline::default();
                let mut anomalies_seen = 0;

                for (index, (at, event)) in history.iter().enumerate() {
                    anomalies_seen += timeline.apply(*at, event).len();
                    check_invariants(&timeline, index + 1, anomalies_seen)?;
                }
            }

            #[test]
            fn folding_equals_applying_events_one_by_one(history in history()) {
                let mut applied = Timeline::default();
                let applied_anomalies: Vec<_> = events(&history)
                    .map(|(at, event)| applied.apply(at, event))
                    .collect();

                let (folded, folded_anomalies) = Timeline::fold(events(&history));

                prop_assert_eq!(folded, applied);
                prop_assert_eq!(folded_anomalies, applied_anomalies);
            }

            #[test]
            fn appends_that_read_only_the_participants_they_name_build_the_full_fold(
                history in history(),
                sizes in prop::collection::vec(1usize..=6, 60),
            ) {
                let mut rows = Rows::default();
                let mut appended_anomalies = Vec::new();
                let mut timed = Vec::new();
                let mut rest = &history[..];
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (batch, after) = rest.split_at((*size).min(rest.len()));
                    rest = after;
                    // One request: its events share the time it was received.
                    let at = batch[0].0;
                    let events: Vec<Event> = batch.iter().map(|(_, event)| event.clone()).collect();
                    let plan = plan_append(rows.load(&events), &events, at);
                    appended_anomalies.extend(plan.anomalies.clone());
                    rows.write(plan);
                    timed.extend(events.into_iter().map(|event| (at, event)));
                }

                let (folded, anomalies) = Timeline::fold(events(&timed));

                prop_assert_eq!(rows.timeline(), folded);
                prop_assert_eq!(appended_anomalies, anomalies);
            }

            #[test]
            fn transfers_count_every_entry_of_their_type(history in history()) {
                let entries_of = |wanted: TransferType| {
                    history
                        .iter()
                        .filter(|(_, event)| {
                            event.transfer_type() == Some(wanted)
                                && event.transition() == Some(Transition::Entry)
                        })
                        .count() as i64
                };

                let (timeline, _) = Timeline::fold(events(&history));

                let transfers = timeline.summary.transfers;
                prop_assert_eq!(
                    (transfers.cold, transfers.warm, transfers.redial),
                    (
                        entries_of(TransferType::Cold),
                        entries_of(TransferType::Warm),
                        entries_of(TransferType::Redial),
                    )
                );
            }
        }
    }
}
