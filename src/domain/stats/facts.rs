//! The facts SPEC 11.1 counts, each at one instant, derived from a conversation's events in
//! `seq` order by the same fold that keeps its timeline (so a hop is a hop here exactly
//! when it is one in SPEC 7.3).

use crate::domain::{Anomaly, Event, Hop, HopKind, HopOutcome, Status, Timeline};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The dimensions a fact is grouped by; `None` where it is not known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dims {
    pub participant: Option<String>,
    pub queue: Option<String>,
    #[serde(flatten)]
    pub conversation: ConversationDims,
}

/// A conversation's own dimensions at some moment (SPEC 4.1 and 7.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationDims {
    pub experience: Option<String>,
    pub language: Option<String>,
    pub service: Option<String>,
}

impl ConversationDims {
    /// The part of these dimensions a grouping by `mask` keeps (bit 0 experience, bit 1
    /// language, bit 2 service).
    pub fn projected(&self, mask: usize) -> ConversationDims {
        let keep = |bit: usize, value: &Option<String>| {
            if mask & bit != 0 { value.clone() } else { None }
        };
        ConversationDims {
            experience: keep(1, &self.experience),
            language: keep(2, &self.language),
            service: keep(4, &self.service),
        }
    }
}

/// How many ways the conversation's dimensions can be grouped: every subset of three.
pub const CONVERSATION_GROUPINGS: usize = 8;

/// What a fact counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// The conversation's first event.
    Started,
    /// The conversation ended (again, if it was reopened).
    Ended,
    /// A stint closed, `micros` long. `previous[mask]` is when the conversation's stint
    /// closed before this one under the same dimensions of grouping `mask`: a bucket counts
    /// the conversation as handled at its first stint in the bucket, the one whose
    /// previous is before the bucket's start (or none).
    Stint {
        micros: i64,
        previous: [Option<i64>; CONVERSATION_GROUPINGS],
    },
    /// The first agent entered, `micros` after the conversation's first event.
    FirstAgent {
        micros: i64,
    },
    /// A hop from the fact's participant.
    Hop {
        kind: HopKind,
    },
    /// A hop to the fact's participant.
    HopIn,
    /// An escalation's outcome arrived.
    Outcome {
        completed: bool,
    },
    Anomaly(Anomaly),
}

/// One thing that happened, at one instant, under its dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub at: OffsetDateTime,
    pub dims: Dims,
    pub measure: Measure,
}

/// What the facts of a conversation's next events depend on: its timeline, and what the
/// timeline does not keep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationStats {
    timeline: Timeline,
    /// Each participant's queue as their latest stint opened with it.
    #[serde(default)]
    queues: BTreeMap<String, String>,
    #[serde(default)]
    first_agent_entered: bool,
    /// The latest stint close under each distinct set of dimensions, in microseconds.
    #[serde(default)]
    closes: Vec<(ConversationDims, i64)>,
    /// Hops whose `to` is not known yet (an escalation waits for its agent), with the
    /// conversation's dimensions when they happened.
    #[serde(default)]
    awaiting_to: BTreeMap<i64, ConversationDims>,
}

/// A stint open before an event: whose, and since when.
struct OpenStint {
    identity: String,
    joined_at: OffsetDateTime,
}

impl ConversationStats {
    /// Applies the conversation's next event, received `at`, and returns its facts.
    pub fn apply(&mut self, at: OffsetDateTime, event: &Event) -> Vec<Fact> {
        let first_event = self.timeline.summary.event_count == 0;
        let status_before = self.timeline.summary.status;
        let open_before = self.open_stints();
        let hops_before: Vec<Hop> = self.timeline.hops.clone();
        let anomalies = self.timeline.apply(at, event);
        let dims = self.conversation_dims();
        let mut facts = Vec::new();

        if first_event && let Some(started_at) = self.timeline.summary.started_at {
            facts.push(self.fact(started_at, None, &dims, Measure::Started));
        }
        self.closed_stints(&open_before, &dims, &mut facts);
        self.opened_stints(&open_before, event, &dims, &mut facts);
        self.hops(&hops_before, at, &dims, &mut facts);
        let participant = event.participant().map(|p| p.identity.clone());
        for code in anomalies {
            facts.push(self.fact(at, participant.clone(), &dims, Measure::Anomaly(code)));
        }
        if self.timeline.summary.status == Status::Ended
            && status_before != Status::Ended
            && let Some(ended_at) = self.timeline.summary.ended_at
        {
            facts.push(self.fact(ended_at, None, &dims, Measure::Ended));
        }
        facts
    }

    /// The participants who are present, with their open stint.
    fn open_stints(&self) -> Vec<OpenStint> {
        self.timeline
            .participants
            .iter()
            .filter_map(|participant| {
                let stint = participant.stints.last().filter(|stint| stint.is_open())?;
                Some(OpenStint {
                    identity: participant.identity.clone(),
                    joined_at: stint.joined_at,
                })
            })
            .collect()
    }

    fn conversation_dims(&self) -> ConversationDims {
        let summary = &self.timeline.summary;
        ConversationDims {
            experience: summary.experience.map(|e| e.as_str().to_owned()),
            language: summary.language.clone(),
            service: summary.service.clone(),
        }
    }

    /// A fact of `participant` (with their latest queue) under `dims`.
    fn fact(
        &self,
        at: OffsetDateTime,
        participant: Option<String>,
        dims: &ConversationDims,
        measure: Measure,
    ) -> Fact {
        let queue = participant
            .as_ref()
            .and_then(|identity| self.queues.get(identity).cloned());
        Fact {
            at,
            dims: Dims {
                participant,
                queue,
                conversation: dims.clone(),
            },
            measure,
        }
    }

    /// A stint open before the event and closed now, at its `leftAt`, with its queue.
    fn closed_stints(
        &mut self,
        open_before: &[OpenStint],
        dims: &ConversationDims,
        facts: &mut Vec<Fact>,
    ) {
        for open in open_before {
            let left_at = self
                .timeline
                .participants
                .iter()
                .find(|participant| participant.identity == open.identity)
                .and_then(|participant| {
                    participant
                        .stints
                        .iter()
                        .rev()
                        .find(|stint| stint.joined_at == open.joined_at)
                })
                .and_then(|stint| stint.left_at);
            let Some(left_at) = left_at else { continue };
            let micros = micros_at(left_at) - micros_at(open.joined_at);
            let previous = self.close(dims, micros_at(left_at));
            let measure = Measure::Stint { micros, previous };
            facts.push(self.fact(left_at, Some(open.identity.clone()), dims, measure));
        }
    }

    /// Records a stint's close under `dims`; when the conversation's stints closed before
    /// under each grouping of them.
    fn close(&mut self, dims: &ConversationDims, at: i64) -> [Option<i64>; CONVERSATION_GROUPINGS] {
        let previous = std::array::from_fn(|mask| {
            let projected = dims.projected(mask);
            self.closes
                .iter()
                .filter(|(seen, _)| seen.projected(mask) == projected)
                .map(|(_, at)| *at)
                .max()
        });
        match self.closes.iter_mut().find(|(seen, _)| seen == dims) {
            Some((_, latest)) => *latest = at,
            None => self.closes.push((dims.clone(), at)),
        }
        previous
    }

    /// A stint the event opened: its queue becomes the participant's, and the
    /// conversation's first agent is timed.
    fn opened_stints(
        &mut self,
        open_before: &[OpenStint],
        event: &Event,
        dims: &ConversationDims,
        facts: &mut Vec<Fact>,
    ) {
        let opened: Vec<(String, String, OffsetDateTime)> = self
            .timeline
            .participants
            .iter()
            .filter_map(|participant| {
                let stint = participant.stints.last().filter(|stint| stint.is_open())?;
                let was_open = open_before.iter().any(|open| {
                    open.identity == participant.identity && open.joined_at == stint.joined_at
                });
                (!was_open).then(|| {
                    (
                        participant.identity.clone(),
                        participant.kind.clone(),
                        stint.joined_at,
                    )
                })
            })
            .collect();
        for (identity, kind, joined_at) in opened {
            match event.queue() {
                Some(queue) => self.queues.insert(identity.clone(), queue),
                None => self.queues.remove(&identity),
            };
            if !self.first_agent_entered && kind.eq_ignore_ascii_case("agent") {
                self.first_agent_entered = true;
                if let Some(started_at) = self.timeline.summary.started_at {
                    let micros = micros_at(joined_at) - micros_at(started_at);
                    let measure = Measure::FirstAgent { micros };
                    facts.push(self.fact(joined_at, Some(identity), dims, measure));
                }
            }
        }
    }

    /// New hops (from their `from`, and to their `to` when known), outcomes that arrived
    /// now, and agents that arrived for an escalation (a hop `in` at the hop's time).
    fn hops(
        &mut self,
        hops_before: &[Hop],
        at: OffsetDateTime,
        dims: &ConversationDims,
        facts: &mut Vec<Fact>,
    ) {
        let hops = self.timeline.hops.clone();
        for (hop, before) in hops.iter().zip(hops_before) {
            if before.outcome == HopOutcome::Pending && hop.outcome != HopOutcome::Pending {
                let completed = hop.outcome == HopOutcome::Completed;
                let measure = Measure::Outcome { completed };
                facts.push(self.fact(at, hop.from.clone(), dims, measure));
            }
            if before.to.is_none() && hop.to.is_some() {
                let then = self.awaiting_to.remove(&hop.ordinal).unwrap_or_default();
                facts.push(self.fact(hop.at, hop.to.clone(), &then, Measure::HopIn));
            }
        }
        for hop in &hops[hops_before.len().min(hops.len())..] {
            let measure = Measure::Hop { kind: hop.kind };
            facts.push(self.fact(hop.at, hop.from.clone(), dims, measure));
            match &hop.to {
                Some(to) => facts.push(self.fact(hop.at, Some(to.clone()), dims, Measure::HopIn)),
                None => {
                    self.awaiting_to.insert(hop.ordinal, dims.clone());
                }
            }
        }
    }
}

impl ConversationStats {
    /// Who is present now: identity, the queue their stint opened with, and since when.
    pub fn present(&self) -> Vec<(String, Option<String>, OffsetDateTime)> {
        self.open_stints()
            .into_iter()
            .map(|open| {
                let queue = self.queues.get(&open.identity).cloned();
                (open.identity, queue, open.joined_at)
            })
            .collect()
    }

    /// The conversation's status now, and its latest event's time.
    pub fn status(&self) -> (Status, Option<OffsetDateTime>) {
        let summary = &self.timeline.summary;
        (summary.status, summary.last_event_at)
    }
}

/// Microseconds since the epoch (the stores' precision).
pub fn micros_at(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ingest::parsed_event as parse;
    use serde_json::{Value, json};
    use time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-01 09:00:00 UTC);

    fn at(seconds: i64) -> OffsetDateTime {
        T0 + Duration::seconds(seconds)
    }

    fn transfer(kind: &str, transition: &str, agent: &str, queue: Option<&str>) -> Event {
        let mut participant = json!({ "identity": agent, "name": agent, "type": "agent" });
        if let Some(queue) = queue {
            participant["customFields"] = json!({ "queueId": "q-1", "queueName": queue });
        }
        parse(json!({
            "name": "INTERNAL_TRANSFER_EVENT", "transfertype": kind, "transition": transition,
            "isExtAD": "true", "experience": "voice", "language": "en",
            "participant": participant
        }))
    }

    fn bot(message: Value) -> Event {
        let body = json!({ "message": message });
        let mut batch =
            crate::domain::sources::parse_bot_messages(body.to_string().as_bytes(), "st-1", "c-1")
                .unwrap();
        batch.events.remove(0)
    }

    /// The facts of `events`, the n-th received at its second.
    fn facts(events: &[(i64, Event)]) -> Vec<Fact> {
        let mut stats = ConversationStats::default();
        events
            .iter()
            .flat_map(|(second, event)| stats.apply(at(*second), event))
            .collect()
    }

    /// `(second, participant, queue, measure)` of each fact, the previous closes left out.
    fn summary(facts: &[Fact]) -> Vec<(i64, Option<&str>, Option<&str>, Measure)> {
        facts
            .iter()
            .map(|fact| {
                let measure = match &fact.measure {
                    Measure::Stint { micros, .. } => Measure::Stint {
                        micros: *micros,
                        previous: [None; CONVERSATION_GROUPINGS],
                    },
                    other => other.clone(),
                };
                (
                    (fact.at - T0).whole_seconds(),
                    fact.dims.participant.as_deref(),
                    fact.dims.queue.as_deref(),
                    measure,
                )
            })
            .collect()
    }

    fn stint(seconds: i64) -> Measure {
        Measure::Stint {
            micros: seconds * 1_000_000,
            previous: [None; CONVERSATION_GROUPINGS],
        }
    }

    #[test]
    fn a_cold_transfer_is_two_stints_a_hop_out_and_in_and_the_first_agent_timed() {
        let events = [
            (0, transfer("NA", "entry", "a1", Some("Billing"))),
            (60, transfer("COLD", "exit", "a1", Some("Billing"))),
            (70, transfer("COLD", "entry", "a2", Some("Tech"))),
            (200, transfer("NA", "exit", "a2", Some("Tech"))),
        ];

        let facts = facts(&events);

        assert_eq!(
            summary(&facts),
            [
                (0, None, None, Measure::Started),
                (
                    0,
                    Some("a1"),
                    Some("Billing"),
                    Measure::FirstAgent { micros: 0 }
                ),
                (60, Some("a1"), Some("Billing"), stint(60)),
                (
                    70,
                    Some("a1"),
                    Some("Billing"),
                    Measure::Hop {
                        kind: HopKind::Cold
                    }
                ),
                (70, Some("a2"), Some("Tech"), Measure::HopIn),
                (200, Some("a2"), Some("Tech"), stint(130)),
                (200, None, None, Measure::Ended),
            ]
        );
        assert!(
            facts.iter().all(
                |fact| fact.dims.conversation.experience.as_deref() == Some("voice")
                    && fact.dims.conversation.language.as_deref() == Some("en")
            )
        );
    }

    #[test]
    fn an_escalation_counts_when_raised_its_outcome_when_it_arrives_and_its_agent_at_the_hop() {
        let events = [
            (
                0,
                bot(json!({ "type": "escalate", "targets": [{ "type": "Skill", "value": "b" }] })),
            ),
            (
                10,
                bot(json!({ "type": "transferSucceeded", "sequenceId": 2 })),
            ),
            (25, transfer("NA", "entry", "a1", Some("Billing"))),
            (
                30,
                bot(json!({ "type": "escalate", "targets": [{ "type": "Skill", "value": "b" }] })),
            ),
            (
                40,
                bot(
                    json!({ "type": "transferFailed", "sequenceId": 3, "reason": "NoAgentAvailable" }),
                ),
            ),
        ];

        let facts = facts(&events);

        let bot_identity = Some("bot:st-1");
        assert_eq!(
            summary(&facts),
            [
                (0, None, None, Measure::Started),
                (
                    0,
                    bot_identity,
                    None,
                    Measure::Hop {
                        kind: HopKind::Escalation
                    }
                ),
                (10, bot_identity, None, Measure::Outcome { completed: true }),
                (
                    25,
                    Some("a1"),
                    Some("Billing"),
                    Measure::FirstAgent { micros: 25_000_000 }
                ),
                (0, Some("a1"), Some("Billing"), Measure::HopIn),
                (
                    30,
                    bot_identity,
                    None,
                    Measure::Hop {
                        kind: HopKind::Escalation
                    }
                ),
                (
                    40,
                    bot_identity,
                    None,
                    Measure::Outcome { completed: false }
                ),
            ]
        );
    }

    #[test]
    fn a_conversation_reopened_ends_again_and_its_later_close_remembers_the_earlier_one() {
        let events = [
            (0, transfer("NA", "entry", "a1", None)),
            (10, transfer("NA", "exit", "a1", None)),
            (20, transfer("REDIAL", "entry", "a1", None)),
            (50, transfer("NA", "exit", "a1", None)),
        ];

        let facts = facts(&events);

        let ended = facts.iter().filter(|f| f.measure == Measure::Ended).count();
        assert_eq!(ended, 2, "each end counts");
        let closes: Vec<&[Option<i64>; CONVERSATION_GROUPINGS]> = facts
            .iter()
            .filter_map(|fact| match &fact.measure {
                Measure::Stint { previous, .. } => Some(previous),
                _ => None,
            })
            .collect();
        assert_eq!(closes[0], &[None; CONVERSATION_GROUPINGS]);
        assert_eq!(
            closes[1],
            &[Some(micros_at(at(10))); CONVERSATION_GROUPINGS]
        );
    }

    #[test]
    fn an_anomaly_is_the_events_participant_s_in_their_latest_queue() {
        let events = [
            (0, transfer("NA", "entry", "a1", Some("Billing"))),
            (5, transfer("COLD", "entry", "a1", Some("Tech"))),
        ];

        let facts = facts(&events);

        let anomaly = facts.last().unwrap();
        assert_eq!(anomaly.measure, Measure::Anomaly(Anomaly::DuplicateEntry));
        assert_eq!(anomaly.dims.participant.as_deref(), Some("a1"));
        assert_eq!(
            anomaly.dims.queue.as_deref(),
            Some("Billing"),
            "a duplicate entry opens no stint, so the queue stays the open stint's"
        );
    }

    #[test]
    fn a_state_survives_its_json_and_goes_on_as_before() {
        let mut stats = ConversationStats::default();
        stats.apply(at(0), &transfer("NA", "entry", "a1", Some("Billing")));
        let mut reloaded: ConversationStats =
            serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();

        let exit = transfer("NA", "exit", "a1", Some("Billing"));
        assert_eq!(reloaded.apply(at(9), &exit), stats.apply(at(9), &exit));
    }
}
