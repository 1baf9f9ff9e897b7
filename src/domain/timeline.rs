//! The participant timeline: a pure fold over a conversation's events in `seq` order (SPEC 3).

use super::append::{AppendPlan, PresentStint, Stored, StoredParticipant, Summary, plan_append};
use super::ingest::Event;
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

/// Everything SPEC 3 and 7 derive from a conversation's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub summary: Summary,
    /// Ordered by first entry.
    pub participants: Vec<ParticipantTimeline>,
    /// In `seq` order.
    pub hops: Vec<Hop>,
    /// Every delivered `InteractionData`, merged (latest wins per member), with
    /// `deliveredTo`.
    pub interaction: Option<serde_json::Map<String, serde_json::Value>>,
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
    /// SPEC 3 and 7 live in [`plan_append`]: this is the plan of one event, applied to the
    /// whole timeline in memory as the stores apply it to their rows.
    pub fn apply(&mut self, at: OffsetDateTime, event: &Event) -> Vec<Anomaly> {
        let mut plan = plan_append(self.stored(), std::slice::from_ref(event), at);
        let anomalies = plan.anomalies.pop().unwrap_or_default();
        self.absorb(plan);
        anomalies
    }

    /// The timeline as an append finds it, everything included.
    fn stored(&self) -> Stored {
        let mut present: Vec<PresentStint> = self
            .participants
            .iter()
            .enumerate()
            .filter_map(|(position, participant)| {
                let open = participant.stints.last().filter(|stint| stint.is_open())?;
                Some(PresentStint {
                    identity: participant.identity.clone(),
                    position: position as i64,
                    joined_at: open.joined_at,
                })
            })
            .collect();
        present.sort_by_key(|stint| (stint.joined_at, stint.position));
        Stored {
            last_seq: self.summary.event_count,
            summary: self.summary.clone(),
            participants: self
                .participants
                .iter()
                .enumerate()
                .map(|(position, participant)| StoredParticipant {
                    identity: participant.identity.clone(),
                    name: participant.name.clone(),
                    kind: participant.kind.clone(),
                    position: position as i64,
                    stint_count: participant.stints.len() as i32,
                    open: participant
                        .stints
                        .last()
                        .filter(|stint| stint.is_open())
                        .cloned(),
                })
                .collect(),
            present,
            interaction: self.interaction.clone(),
        }
    }

    /// Writes `plan` into the timeline, as a store writes it into its rows.
    fn absorb(&mut self, plan: AppendPlan) {
        self.summary = plan.summary;
        if let Some(at) = plan.end_open_stints_at {
            for stint in self
                .participants
                .iter_mut()
                .filter_map(|p| p.stints.last_mut())
            {
                if stint.is_open() {
                    stint.left_at = Some(at);
                    stint.exit_type = Some(ExitType::End);
                }
            }
        }
        for row in plan.participants {
            match self.participant_mut(&row.identity) {
                Some(known) => {
                    known.name = row.name;
                    known.kind = row.kind;
                }
                None => self.participants.push(ParticipantTimeline {
                    identity: row.identity,
                    name: row.name,
                    kind: row.kind,
                    stints: Vec::new(),
                }),
            }
        }
        for row in plan.closed.into_iter().chain(plan.opened) {
            let Some(participant) = self.participant_mut(&row.identity) else {
                continue;
            };
            match participant.stints.get_mut(row.ordinal as usize) {
                Some(stint) => *stint = row.stint,
                None => participant.stints.push(row.stint),
            }
        }
        for change in plan.hop_changes {
            if let Some(hop) = self
                .hops
                .iter_mut()
                .find(|hop| hop.ordinal == change.ordinal)
            {
                change.apply_to(hop);
            }
        }
        self.hops.extend(plan.hops);
        if let Some(interaction) = plan.interaction {
            self.interaction = Some(interaction);
        }
    }

    fn participant_mut(&mut self, identity: &str) -> Option<&mut ParticipantTimeline> {
        self.participants
            .iter_mut()
            .find(|participant| participant.identity == identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Experience;
    use crate::domain::ingest::IngestBatch;
    use serde_json::{Value, json};
    use time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-03-01 09:00:00 UTC);

    fn at(seconds: i64) -> OffsetDateTime {
        T0 + Duration::seconds(seconds)
    }

    /// One event, parsed from a hooks body exactly as the route would.
    fn parse(event: Value) -> Event {
        let body = json!({ "conversationId": "atesta-0001", "botId": "st-1", "events": [event] });
        let mut batch = IngestBatch::parse(body.to_string().as_bytes(), "st-1")
            .expect("the test body is a valid hooks request");
        batch.events.remove(0)
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
        let codes: Vec<_> = Anomaly::ALL.into_iter().map(Anomaly::as_str).collect();

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
        for anomaly in Anomaly::ALL {
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
