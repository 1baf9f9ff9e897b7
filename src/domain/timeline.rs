//! The participant timeline: a pure fold over a conversation's events in `seq` order (SPEC 3).

use super::append::{AppendPlan, PresentStint, Stored, StoredParticipant, Summary, plan_append};
use super::ingest::Event;
use super::vocabulary::{Anomaly, ExitType, Hop, ParticipantTimeline};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

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
