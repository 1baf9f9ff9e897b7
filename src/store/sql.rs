//! What both backends share: the list queries' SQL (`$n` placeholders work in both) and
//! the rows they read, generic over how each backend stores a time.

use super::{
    ConversationFilter, ConversationKey, ConversationSummary, EventsPage, ParticipantStint,
    StintKey, StoreError, StoredEvent, Window,
};
use crate::domain::{
    Anomaly, EventName, ExitType, Experience, Participant, Status, Stint, TransferType, Transfers,
    Transition,
};
use anyhow::Context;
use serde_json::value::RawValue;
use sqlx::FromRow;
use sqlx::types::Json;
use std::fmt::Write;
use time::OffsetDateTime;

/// A value bound to a placeholder; each backend binds times its own way.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Time(OffsetDateTime),
}

/// SQL text with its binds, in placeholder order.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        let _ = write!(self.text, "${}", self.binds.len());
        self
    }
}

pub const SUMMARY_COLUMNS: &str = "c.bot_id, c.conversation_id, c.status, c.experience,
    c.language, c.started_at, c.ended_at, c.last_event_at, c.event_count, c.anomaly_count,
    c.cold_transfers, c.warm_transfers, c.redial_transfers, c.participants_present";

/// SPEC 4.3: newest `lastEventAt` first, keyset-paged on `(last_event_at, conversation_id)`.
pub fn list_conversations(
    bot_id: &str,
    filter: &ConversationFilter,
    after: Option<&ConversationKey>,
    limit: i64,
    now: OffsetDateTime,
) -> Sql {
    let mut sql = Sql::new("");
    push_conversations(&mut sql, bot_id, filter, after, now);
    push_newest_first(&mut sql, limit);
    sql
}

/// [`list_conversations`] for PostgreSQL, whose indexes can answer a `from`/`to` window
/// without reading every conversation newer than it. The list is cut by `lastEventAt`
/// into parts that each come off an index in order, and are merged:
/// - conversations whose `[startedAt, lastEventAt]` spans `to` (those going on at that
///   instant, so few): the GiST index `conversations_spanning`, then sorted. It is a
///   materialised CTE so that no generic plan trades the GiST index for a long ordered scan;
/// - ended conversations last heard of in `[from, to)`: a range of the `lastEventAt` index
///   (an ended conversation's `lastEventAt` is at or after its `endedAt`, as `receivedAt`
///   does not decrease within a conversation);
/// - open conversations last heard of before `to`: the partial index of open ones.
///
/// Each part keeps every condition of [`list_conversations`], so the answers are the same.
pub fn list_conversations_pg(
    bot_id: &str,
    filter: &ConversationFilter,
    after: Option<&ConversationKey>,
    limit: i64,
    now: OffsetDateTime,
) -> Sql {
    if filter.from.is_none() && filter.to.is_none() {
        return list_conversations(bot_id, filter, after, limit, now);
    }
    let mut sql = Sql::new("");
    if let Some(to) = filter.to {
        sql.push("WITH spanning AS MATERIALIZED (");
        push_conversations(&mut sql, bot_id, filter, after, now);
        // Given `started_at < to`, exactly `last_event_at >= to`.
        sql.push(" AND tstzrange(LEAST(c.started_at, c.last_event_at), c.last_event_at, '(]') @> ")
            .bind(Bind::Time(to))
            .push(") SELECT * FROM ((SELECT * FROM spanning c");
        push_newest_first(&mut sql, limit);
        sql.push(") UNION ALL (");
    } else {
        sql.push("SELECT * FROM ((");
    }
    push_conversations(&mut sql, bot_id, filter, after, now);
    sql.push(" AND c.ended_at IS NOT NULL");
    if let Some(from) = filter.from {
        sql.push(" AND c.last_event_at >= ").bind(Bind::Time(from));
    }
    if let Some(to) = filter.to {
        sql.push(" AND c.last_event_at < ").bind(Bind::Time(to));
    }
    push_newest_first(&mut sql, limit);
    sql.push(") UNION ALL (");
    push_conversations(&mut sql, bot_id, filter, after, now);
    sql.push(" AND c.ended_at IS NULL");
    if let Some(to) = filter.to {
        sql.push(" AND c.last_event_at < ").bind(Bind::Time(to));
    }
    push_newest_first(&mut sql, limit);
    sql.push(")) c");
    push_newest_first(&mut sql, limit);
    sql
}

/// `SELECT` of the conversations that `filter` and `after` keep, without an order.
fn push_conversations(
    sql: &mut Sql,
    bot_id: &str,
    filter: &ConversationFilter,
    after: Option<&ConversationKey>,
    now: OffsetDateTime,
) {
    sql.push(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM conversations c WHERE c.bot_id = "
    ))
    .bind(Bind::Text(bot_id.to_owned()));
    if let Some(status) = filter.status {
        sql.push(" AND c.status = ")
            .bind(Bind::Text(status.as_str().to_owned()));
    }
    if let Some(identity) = &filter.participant {
        sql.push(" AND EXISTS (SELECT 1 FROM stints s WHERE s.bot_id = c.bot_id AND s.identity = ")
            .bind(Bind::Text(identity.clone()))
            .push(" AND s.conversation_id = c.conversation_id)");
    }
    if let Some(from) = filter.from {
        sql.push(" AND COALESCE(c.ended_at, ")
            .bind(Bind::Time(now))
            .push(") >= ")
            .bind(Bind::Time(from));
    }
    if let Some(to) = filter.to {
        sql.push(" AND c.started_at < ").bind(Bind::Time(to));
    }
    if let Some(after) = after {
        sql.push(" AND (c.last_event_at, c.conversation_id) < (")
            .bind(Bind::Time(after.last_event_at))
            .push(", ")
            .bind(Bind::Text(after.conversation_id.clone()))
            .push(")");
    }
}

fn push_newest_first(sql: &mut Sql, limit: i64) {
    sql.push(" ORDER BY c.last_event_at DESC, c.conversation_id DESC LIMIT ")
        .bind(Bind::Int(limit));
}

/// SPEC 4.4: newest `joinedAt` first, keyset-paged on `(joined_at, conversation_id, ordinal)`.
pub fn list_stints(
    bot_id: &str,
    identity: &str,
    window: Window,
    after: Option<&StintKey>,
    limit: i64,
    now: OffsetDateTime,
) -> Sql {
    let mut sql = Sql::new(
        "SELECT conversation_id, ordinal, joined_at, left_at, entry_type, exit_type
         FROM stints WHERE bot_id = ",
    );
    sql.bind(Bind::Text(bot_id.to_owned()))
        .push(" AND identity = ")
        .bind(Bind::Text(identity.to_owned()));
    if let Some(to) = window.to {
        sql.push(" AND joined_at < ").bind(Bind::Time(to));
    }
    if let Some(from) = window.from {
        sql.push(" AND COALESCE(left_at, ")
            .bind(Bind::Time(now))
            .push(") >= ")
            .bind(Bind::Time(from));
    }
    if let Some(after) = after {
        sql.push(" AND (joined_at, conversation_id, ordinal) < (")
            .bind(Bind::Time(after.joined_at))
            .push(", ")
            .bind(Bind::Text(after.conversation_id.clone()))
            .push(", ")
            .bind(Bind::Int(i64::from(after.ordinal)))
            .push(")");
    }
    sql.push(" ORDER BY joined_at DESC, conversation_id DESC, ordinal DESC LIMIT ")
        .bind(Bind::Int(limit));
    sql
}

#[derive(FromRow)]
pub struct EventRow<T> {
    pub seq: i64,
    pub received_at: T,
    pub name: String,
    pub transfer_type: Option<String>,
    pub transition: Option<String>,
    pub participant: Option<Json<Participant>>,
    pub anomalies: Json<Vec<Anomaly>>,
    pub payload: String,
}

/// SPEC 4.2: up to `$4` events with `seq > $3`, cut short once the payloads before an
/// event reach `$5` bytes (so the first event always comes). `in_window` is how many the
/// count alone would have given, so that a page cut by bytes knows that more follow.
/// Payload sizes are read without reading the payloads themselves.
pub const EVENTS_PAGE: &str = "
    SELECT seq, received_at, name, transfer_type, transition, participant, anomalies, payload,
           in_window
    FROM (SELECT e.*,
                 sum(octet_length(e.payload)) OVER (ORDER BY e.seq ROWS UNBOUNDED PRECEDING)
                     - octet_length(e.payload) AS bytes_before,
                 count(*) OVER () AS in_window
          FROM (SELECT seq, received_at, name, transfer_type, transition, participant,
                       anomalies, CAST(payload AS TEXT) AS payload
                FROM events
                WHERE bot_id = $1 AND conversation_id = $2 AND seq > $3
                ORDER BY seq LIMIT $4) e) page
    WHERE bytes_before < $5
    ORDER BY seq";

/// A row of [`EVENTS_PAGE`].
#[derive(FromRow)]
pub struct PagedEventRow<T> {
    #[sqlx(flatten)]
    pub event: EventRow<T>,
    pub in_window: i64,
}

/// The page that [`EVENTS_PAGE`] rows make, asked for with a count of `limit + 1`.
pub fn events_page<T: Into<OffsetDateTime>>(
    rows: Vec<PagedEventRow<T>>,
    limit: i64,
) -> Result<EventsPage, StoreError> {
    let in_window = rows.first().map_or(0, |row| row.in_window);
    let mut events = convert(rows, |row| row.event.into_event())?;
    events.truncate(usize::try_from(limit).unwrap_or(0));
    let more = usize::try_from(in_window).unwrap_or(0) > events.len();
    Ok(EventsPage { events, more })
}

impl<T: Into<OffsetDateTime>> EventRow<T> {
    pub fn into_event(self) -> anyhow::Result<StoredEvent> {
        Ok(StoredEvent {
            seq: self.seq,
            received_at: self.received_at.into(),
            name: EventName::parse(&self.name).context("unknown stored event name")?,
            transfer_type: self.transfer_type.as_deref().and_then(TransferType::parse),
            transition: self.transition.as_deref().and_then(Transition::parse),
            participant: self.participant.map(|Json(participant)| participant),
            anomalies: self.anomalies.0,
            payload: RawValue::from_string(self.payload).context("stored payload is not JSON")?,
        })
    }
}

#[derive(FromRow)]
pub struct SummaryRow<T> {
    pub bot_id: String,
    pub conversation_id: String,
    pub status: String,
    pub experience: Option<String>,
    pub language: Option<String>,
    pub started_at: T,
    pub ended_at: Option<T>,
    pub last_event_at: T,
    pub event_count: i64,
    pub anomaly_count: i64,
    pub cold_transfers: i64,
    pub warm_transfers: i64,
    pub redial_transfers: i64,
    pub participants_present: Json<Vec<String>>,
}

impl<T: Into<OffsetDateTime>> SummaryRow<T> {
    pub fn into_summary(self) -> anyhow::Result<ConversationSummary> {
        Ok(ConversationSummary {
            bot_id: self.bot_id,
            conversation_id: self.conversation_id,
            status: Status::parse(&self.status).context("unknown stored status")?,
            experience: self.experience.as_deref().and_then(Experience::parse),
            language: self.language,
            started_at: self.started_at.into(),
            ended_at: self.ended_at.map(Into::into),
            last_event_at: self.last_event_at.into(),
            event_count: self.event_count,
            anomaly_count: self.anomaly_count,
            transfers: Transfers {
                cold: self.cold_transfers,
                warm: self.warm_transfers,
                redial: self.redial_transfers,
            },
            participants_present: self.participants_present.0,
        })
    }
}

#[derive(FromRow)]
pub struct StintRow<T> {
    pub conversation_id: String,
    pub ordinal: i32,
    pub joined_at: T,
    pub left_at: Option<T>,
    pub entry_type: String,
    pub exit_type: Option<String>,
}

impl<T: Into<OffsetDateTime>> StintRow<T> {
    pub fn into_stint(self) -> anyhow::Result<ParticipantStint> {
        Ok(ParticipantStint {
            conversation_id: self.conversation_id,
            ordinal: self.ordinal,
            stint: Stint {
                joined_at: self.joined_at.into(),
                left_at: self.left_at.map(Into::into),
                entry_type: TransferType::parse(&self.entry_type)
                    .context("unknown stored entry type")?,
                exit_type: self.exit_type.as_deref().and_then(ExitType::parse),
            },
        })
    }
}

/// Converts rows, reporting the first one that does not read back.
pub fn convert<R, T>(
    rows: Vec<R>,
    into: impl Fn(R) -> anyhow::Result<T>,
) -> Result<Vec<T>, super::StoreError> {
    rows.into_iter()
        .map(into)
        .collect::<anyhow::Result<_>>()
        .map_err(super::StoreError::Other)
}

/// A key's stored outcome, unless it has expired.
pub const READ_KEY: &str = "SELECT fingerprint, conversation_id, accepted, first_seq, last_seq,
         conversation_status
     FROM idempotency_keys WHERE bot_id = $1 AND key = $2 AND created_at >= $3";

/// Records an outcome, in the transaction that stored its events; replaces an expired one.
pub const SAVE_KEY: &str = "INSERT INTO idempotency_keys (bot_id, key, fingerprint, created_at,
         conversation_id, accepted, first_seq, last_seq, conversation_status)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (bot_id, key) DO UPDATE SET
         fingerprint = excluded.fingerprint, created_at = excluded.created_at,
         conversation_id = excluded.conversation_id, accepted = excluded.accepted,
         first_seq = excluded.first_seq, last_seq = excluded.last_seq,
         conversation_status = excluded.conversation_status";

/// The advisory lock that marks a key as in use (PostgreSQL), from the bot and the key.
pub fn key_lock_id(key: &super::KeyRecord) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(key.bot_id.as_bytes())
        .chain_update([0])
        .chain_update(key.key.as_bytes())
        .finalize();
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(id)
}

pub const PURGE_KEYS: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";

#[derive(FromRow)]
pub struct KeyRow {
    pub fingerprint: String,
    pub conversation_id: String,
    pub accepted: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub conversation_status: String,
}

impl KeyRow {
    /// What a request with `fingerprint` finds under this key.
    pub fn into_previous(self, fingerprint: &str) -> anyhow::Result<super::Previous> {
        if self.fingerprint != fingerprint {
            return Ok(super::Previous::OtherBody);
        }
        Ok(super::Previous::SameBody(super::Outcome {
            conversation_id: self.conversation_id,
            accepted: self.accepted,
            appended: super::Appended {
                first_seq: self.first_seq,
                last_seq: self.last_seq,
                status: Status::parse(&self.conversation_status)
                    .context("unknown stored status")?,
                anomalies: Vec::new(),
            },
        }))
    }
}
