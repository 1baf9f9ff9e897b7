//! What the store hands the routes: conversations, events, stints, feed items, keys.

use crate::domain::{
    Anomaly, AppendPlan, EventName, Hop, Participant, Status, Stint, Summary, TransferType,
    Transition,
};
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// What an append stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub first_seq: i64,
    pub last_seq: i64,
    pub status: Status,
    /// Every anomaly the appended events raised, in `seq` order (for metrics); empty for
    /// an outcome replayed from an `Idempotency-Key`, which stored nothing.
    pub anomalies: Vec<Anomaly>,
}

impl Appended {
    pub(super) fn of(plan: &AppendPlan) -> Self {
        Self {
            first_seq: plan.first_seq,
            last_seq: plan.last_seq(),
            status: plan.summary.status,
            anomalies: plan.all_anomalies(),
        }
    }
}

/// A conversation's summary, who is present in it, its hops and its interaction: a SPEC
/// 4.3 list item.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    pub bot_id: String,
    pub conversation_id: String,
    pub summary: Summary,
    /// Identities with an open stint, in order of first entry.
    pub present: Vec<String>,
    /// In `seq` order.
    pub hops: Vec<Hop>,
    pub interaction: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A stored event (SPEC 4.2).
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub seq: i64,
    pub received_at: OffsetDateTime,
    pub name: EventName,
    pub transfer_type: Option<TransferType>,
    pub transition: Option<Transition>,
    pub participant: Option<Participant>,
    pub anomalies: Vec<Anomaly>,
    /// The event exactly as received.
    pub payload: Box<RawValue>,
}

/// A page of a conversation's events (SPEC 4.2).
#[derive(Debug)]
pub struct EventsPage {
    pub events: Vec<EventRecord>,
    /// Whether more events follow the last one.
    pub more: bool,
}

/// A place in a bot's change feed (SPEC 8): just after the event `seq` of conversation
/// `conversation_id` written in feed transaction `txn`. The feed is in this order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FeedPosition {
    #[serde(rename = "t")]
    pub txn: i64,
    #[serde(rename = "c")]
    pub conversation_id: String,
    #[serde(rename = "s")]
    pub seq: i64,
}

impl FeedPosition {
    /// Before every item of every feed.
    pub fn beginning() -> Self {
        Self {
            txn: -1,
            conversation_id: String::new(),
            seq: 0,
        }
    }
}

/// An item of the change feed.
#[derive(Debug, Clone)]
pub struct Change {
    pub position: FeedPosition,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone)]
pub enum ChangeKind {
    /// A stored event of the conversation.
    Event {
        /// The conversation's status after the event; unknown for an event stored before
        /// the feed existed, other than its conversation's last.
        conversation_status: Option<Status>,
        event: EventRecord,
    },
    /// The conversation was erased (SPEC 10): consumers delete their copies of it.
    Erased { at: OffsetDateTime },
}

/// A page of the change feed.
#[derive(Debug)]
pub struct ChangesPage {
    pub changes: Vec<Change>,
    /// Whether more changes visible now follow the last one.
    pub more: bool,
    /// Whether committed changes follow that are not listed yet, because a transaction
    /// that could still precede them is running (PostgreSQL): they come once it ends.
    pub held_back: bool,
}

/// One stint of a participant, with the conversation it belongs to (SPEC 4.4).
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantStint {
    pub conversation_id: String,
    pub ordinal: i32,
    pub stint: Stint,
}

/// A bot that has conversations (SPEC 9: the bots the console offers).
#[derive(Debug, Clone, PartialEq)]
pub struct BotRecord {
    pub bot_id: String,
    /// When its latest event arrived.
    pub last_event_at: OffsetDateTime,
}

/// The latest `transferData` of a conversation (SPEC 4.5).
#[derive(Debug, Clone)]
pub struct TransferDataRecord {
    pub seq: i64,
    pub received_at: OffsetDateTime,
    pub participant: Option<Participant>,
    /// Exactly as sent: any JSON value.
    pub data: Box<RawValue>,
}

/// Filters of the conversation list. A conversation's lifetime is
/// `[startedAt, endedAt or now]`; `from`/`to` keep those overlapping `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationFilter {
    pub status: Option<Status>,
    /// Conversations whose interaction names this service.
    pub service: Option<String>,
    pub participant: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Where the previous page of conversations ended (newest `lastEventAt` first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConversationKey {
    #[serde(with = "time::serde::rfc3339")]
    pub last_event_at: OffsetDateTime,
    pub conversation_id: String,
}

/// Where the previous page of stints ended (newest `joinedAt` first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StintKey {
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    pub conversation_id: String,
    pub ordinal: i32,
}

/// A time window `[from, to)`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// An `Idempotency-Key` as a request presents it: scoped by bot, with the fingerprint of
/// its body and the times that decide whether an earlier use still counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub bot_id: String,
    pub key: String,
    pub fingerprint: String,
    pub now: OffsetDateTime,
    /// Uses of the key before this time have expired.
    pub expired_before: OffsetDateTime,
}

/// An earlier, finished request with the same key.
#[derive(Debug, Clone, PartialEq)]
pub enum Previous {
    SameBody(Outcome),
    OtherBody,
}

/// A finished append, kept with its key for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub conversation_id: String,
    pub accepted: i64,
    pub appended: Appended,
}

/// What an append with an idempotency key did.
#[derive(Debug, Clone, PartialEq)]
pub enum Keyed {
    /// The events were stored and the outcome kept under the key.
    Stored(Appended),
    /// The key was used before; nothing was stored.
    Used(Previous),
    /// Another request with the key is running right now; nothing was stored.
    InFlight,
}

/// How one connection pool is used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool: `primary` (PostgreSQL), or SQLite's `writer` and `reader`.
    pub pool: &'static str,
    /// Open connections, idle or in use.
    pub size: u32,
    pub idle: u32,
    /// The most connections the pool will open.
    pub max: u32,
}

impl PoolStats {
    pub(super) fn of<DB: sqlx::Database>(pool: &'static str, connections: &sqlx::Pool<DB>) -> Self {
        Self {
            pool,
            size: connections.size(),
            idle: u32::try_from(connections.num_idle()).unwrap_or(u32::MAX),
            max: connections.options().get_max_connections(),
        }
    }
}
