//! What both backends share: a time both encode, the binds, the SQL where the dialects
//! agree (`$n` placeholders work in both), the rows it reads, and the reads themselves,
//! written once over either database.

use super::{
    BotRecord, Change, ChangeKind, ChangesPage, ConversationFilter, ConversationKey,
    ConversationRecord, EventRecord, EventsPage, FeedPosition, KeyRecord, ParticipantStint,
    Previous, StintKey, StoreError, TransferDataRecord, Window,
};
use crate::domain::{
    Anomaly, EventName, ExitType, Experience, Hop, HopKind, HopOutcome, Participant,
    ParticipantTimeline, PresentStint, Status, Stint, Stored, StoredParticipant, Summary,
    TransferType, Transfers, Transition,
};
use anyhow::Context;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::types::Json;
use sqlx::{
    AssertSqlSafe, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Postgres,
    Sqlite, Type,
};
use std::collections::HashMap;
use std::fmt::Write;
use time::OffsetDateTime;

/// A time as the stores keep it: `timestamptz` in PostgreSQL; in SQLite, microseconds
/// since the Unix epoch, so that times sort and compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime(pub OffsetDateTime);

impl DbTime {
    fn micros(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    fn from_micros(micros: i64) -> Self {
        Self(
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    /// The time as the stores keep it, to the microsecond.
    pub fn truncated(at: OffsetDateTime) -> OffsetDateTime {
        Self::from_micros(Self(at).micros()).0
    }
}

impl From<DbTime> for OffsetDateTime {
    fn from(DbTime(at): DbTime) -> Self {
        at
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <OffsetDateTime as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, Postgres> for DbTime {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Self(<OffsetDateTime as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.micros(), buf)
    }
}

impl Decode<'_, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Self::from_micros(<i64 as Decode<Sqlite>>::decode(value)?))
    }
}

/// A value bound to a placeholder of shared SQL: text, an integer or a time, each bound
/// as its own type.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Time(OffsetDateTime),
    /// A text column's NULL.
    NoText,
    /// Arrays (PostgreSQL only), for `UNNEST`.
    Ints(Vec<i64>),
    Texts(Vec<Option<String>>),
}

impl From<Option<String>> for Bind {
    fn from(text: Option<String>) -> Self {
        text.map_or(Self::NoText, Self::Text)
    }
}

impl Type<Postgres> for Bind {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Bind {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Text(text) => <String as Encode<Postgres>>::encode_by_ref(text, buf),
            Self::Int(number) => <i64 as Encode<Postgres>>::encode_by_ref(number, buf),
            Self::Time(at) => <DbTime as Encode<Postgres>>::encode_by_ref(&DbTime(*at), buf),
            Self::NoText => Ok(IsNull::Yes),
            Self::Ints(numbers) => <Vec<i64> as Encode<Postgres>>::encode_by_ref(numbers, buf),
            Self::Texts(texts) => {
                <Vec<Option<String>> as Encode<Postgres>>::encode_by_ref(texts, buf)
            }
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(match self {
            Self::Text(_) | Self::NoText => <String as Type<Postgres>>::type_info(),
            Self::Int(_) => <i64 as Type<Postgres>>::type_info(),
            Self::Ints(_) => <Vec<i64> as Type<Postgres>>::type_info(),
            Self::Texts(_) => <Vec<Option<String>> as Type<Postgres>>::type_info(),
            Self::Time(_) => <DbTime as Type<Postgres>>::type_info(),
        })
    }
}

impl Type<Sqlite> for Bind {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Bind {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Text(text) => <String as Encode<Sqlite>>::encode_by_ref(text, buf),
            Self::Int(number) => <i64 as Encode<Sqlite>>::encode_by_ref(number, buf),
            Self::Time(at) => <DbTime as Encode<Sqlite>>::encode_by_ref(&DbTime(*at), buf),
            Self::NoText => Ok(IsNull::Yes),
            Self::Ints(_) | Self::Texts(_) => Err("SQLite has no arrays".into()),
        }
    }

    fn produces(&self) -> Option<SqliteTypeInfo> {
        Some(match self {
            Self::Text(_) | Self::NoText | Self::Ints(_) | Self::Texts(_) => {
                <String as Type<Sqlite>>::type_info()
            }
            Self::Int(_) | Self::Time(_) => <i64 as Type<Sqlite>>::type_info(),
        })
    }
}

/// SQL text with its binds, in placeholder order.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub(super) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(super) fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        let _ = write!(self.text, "${}", self.binds.len());
        self
    }

    fn text(value: &str) -> Bind {
        Bind::Text(value.to_owned())
    }
}

/// Writes a conversation's summary row after an append, if its `last_seq` is still `$3`
/// (the plan's expected seq): `$1` bot, `$2` conversation, `$4` the new `last_seq`, then
/// the summary columns in table order. Both writers bind it the same way.
macro_rules! upsert_conversation {
    () => {
        "INSERT INTO conversations AS c
             (bot_id, conversation_id, last_seq, status, experience, language, started_at,
              ended_at, last_event_at, event_count, anomaly_count, cold_transfers,
              warm_transfers, redial_transfers, present_count, participant_count,
              experience_from_events, escalated_transfers, failed_transfers, hop_count,
              last_emptied_by, pending_escalations, awaiting_agent, service, interaction)
         VALUES ($1, $2, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20, $21, $22, $23, $24, $25, $26)
         ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
             last_seq = excluded.last_seq, status = excluded.status,
             experience = excluded.experience, language = excluded.language,
             started_at = excluded.started_at, ended_at = excluded.ended_at,
             last_event_at = excluded.last_event_at, event_count = excluded.event_count,
             anomaly_count = excluded.anomaly_count, cold_transfers = excluded.cold_transfers,
             warm_transfers = excluded.warm_transfers,
             redial_transfers = excluded.redial_transfers,
             present_count = excluded.present_count,
             participant_count = excluded.participant_count,
             experience_from_events = excluded.experience_from_events,
             escalated_transfers = excluded.escalated_transfers,
             failed_transfers = excluded.failed_transfers, hop_count = excluded.hop_count,
             last_emptied_by = excluded.last_emptied_by,
             pending_escalations = excluded.pending_escalations,
             awaiting_agent = excluded.awaiting_agent, service = excluded.service,
             interaction = COALESCE(excluded.interaction, c.interaction)
         WHERE c.last_seq = $3"
    };
}
pub(super) use upsert_conversation;

/// As [`upsert_conversation!`], for a conversation that had events when the plan was made:
/// only updates, so that a conversation erased meanwhile is not written back from the stale
/// plan (the append then starts it again, from `seq` 1). Binds the same way.
macro_rules! update_conversation {
    () => {
        "UPDATE conversations AS c SET
             (last_seq, status, experience, language, started_at, ended_at, last_event_at,
              event_count, anomaly_count, cold_transfers, warm_transfers, redial_transfers,
              present_count, participant_count, experience_from_events, escalated_transfers,
              failed_transfers, hop_count, last_emptied_by, pending_escalations,
              awaiting_agent, service, interaction)
           = ($4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
              $21, $22, $23, $24, $25, COALESCE($26, c.interaction))
         WHERE c.bot_id = $1 AND c.conversation_id = $2 AND c.last_seq = $3"
    };
}
pub(super) use update_conversation;

/// Binds `$1`–`$26` of [`upsert_conversation!`] for the append of `batch` by `plan`; the
/// interaction only when the plan changed it (the row keeps its own otherwise).
pub fn bind_conversation<'q, DB>(
    query: sqlx::query::QueryScalar<'q, DB, i64, DB::Arguments>,
    batch: &'q crate::domain::IngestBatch,
    plan: &'q crate::domain::AppendPlan,
) -> sqlx::query::QueryScalar<'q, DB, i64, DB::Arguments>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    DbTime: Encode<'q, DB> + Type<DB>,
    Option<DbTime>: Encode<'q, DB> + Type<DB>,
    Json<&'q Vec<i64>>: Encode<'q, DB> + Type<DB>,
    Option<Json<&'q Map<String, Value>>>: Encode<'q, DB> + Type<DB>,
{
    let summary = &plan.summary;
    query
        .bind(batch.bot_id.as_str())
        .bind(batch.conversation_id.as_str())
        .bind(plan.expected_seq)
        .bind(plan.last_seq())
        .bind(summary.status.as_str())
        .bind(summary.experience.map(|experience| experience.as_str()))
        .bind(summary.language.as_deref())
        .bind(DbTime(summary.started_at.unwrap_or(plan.received_at)))
        .bind(summary.ended_at.map(DbTime))
        .bind(DbTime(summary.last_event_at.unwrap_or(plan.received_at)))
        .bind(summary.event_count)
        .bind(summary.anomaly_count)
        .bind(summary.transfers.cold)
        .bind(summary.transfers.warm)
        .bind(summary.transfers.redial)
        .bind(summary.present_count)
        .bind(summary.participant_count)
        .bind(summary.experience_from_events)
        .bind(summary.transfers.escalated)
        .bind(summary.transfers.failed)
        .bind(summary.hop_count)
        .bind(summary.last_emptied_by.as_deref())
        .bind(Json(&summary.pending_escalations))
        .bind(summary.awaiting_agent)
        .bind(summary.service.as_deref())
        .bind(plan.interaction.as_ref().map(Json))
}

/// The summary columns of a conversation, as [`SummaryRow`] reads them.
const SUMMARY_COLUMNS: &str = concat!(
    summary_columns!(),
    ", CAST(c.interaction AS TEXT) AS interaction"
);

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
    .bind(Sql::text(bot_id));
    if let Some(status) = filter.status {
        sql.push(" AND c.status = ")
            .bind(Sql::text(status.as_str()));
    }
    if let Some(service) = &filter.service {
        sql.push(" AND c.service = ").bind(Sql::text(service));
    }
    if let Some(identity) = &filter.participant {
        sql.push(
            " AND EXISTS (SELECT 1 FROM participants p WHERE p.bot_id = c.bot_id
              AND p.conversation_id = c.conversation_id AND p.identity = ",
        )
        .bind(Sql::text(identity))
        .push(")");
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
            .bind(Sql::text(&after.conversation_id))
            .push(")");
    }
}

fn push_newest_first(sql: &mut Sql, limit: i64) {
    sql.push(" ORDER BY c.last_event_at DESC, c.conversation_id DESC LIMIT ")
        .bind(Bind::Int(limit));
}

/// SPEC 4.4: newest `joinedAt` first, keyset-paged on `(joined_at, conversation_id, ordinal)`.
fn list_stints(
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
    sql.bind(Sql::text(bot_id))
        .push(" AND identity = ")
        .bind(Sql::text(identity));
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
            .bind(Sql::text(&after.conversation_id))
            .push(", ")
            .bind(Bind::Int(i64::from(after.ordinal)))
            .push(")");
    }
    sql.push(" ORDER BY joined_at DESC, conversation_id DESC, ordinal DESC LIMIT ")
        .bind(Bind::Int(limit));
    sql
}

/// The identities present in the conversations `ids` of a bot, in order of first entry.
fn present_in(bot_id: &str, ids: &[&str]) -> Sql {
    let mut sql = Sql::new(
        "SELECT s.conversation_id, s.identity
         FROM stints s JOIN participants p ON p.bot_id = s.bot_id
             AND p.conversation_id = s.conversation_id AND p.identity = s.identity
         WHERE s.left_at IS NULL AND s.bot_id = ",
    );
    sql.bind(Sql::text(bot_id))
        .push(" AND s.conversation_id IN (");
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            sql.push(", ");
        }
        sql.bind(Sql::text(id));
    }
    sql.push(") ORDER BY s.conversation_id, p.position");
    sql
}

/// A conversation's summary row, as [`SummaryRow`] reads it: `SUMMARY_COLUMNS` spelled out.
macro_rules! summary_columns {
    () => {
        "c.bot_id, c.conversation_id, c.last_seq, c.status, c.experience, c.language,
         c.started_at, c.ended_at, c.last_event_at, c.event_count, c.anomaly_count,
         c.cold_transfers, c.warm_transfers, c.redial_transfers, c.present_count,
         c.participant_count, c.experience_from_events, c.escalated_transfers,
         c.failed_transfers, c.hop_count, c.last_emptied_by,
         CAST(c.pending_escalations AS TEXT) AS pending_escalations, c.awaiting_agent, c.service"
    };
}
pub(super) use summary_columns;

const CONVERSATION: &str = concat!(
    "SELECT ",
    summary_columns!(),
    ", CAST(c.interaction AS TEXT) AS interaction
     FROM conversations c WHERE c.bot_id = $1 AND c.conversation_id = $2"
);

/// Up to `$4` participants after position `$3`, each with every stint, in order.
const PARTICIPANTS_PAGE: &str = "
    SELECT p.position, p.identity, p.name, p.kind, s.ordinal, s.joined_at, s.left_at,
           s.entry_type, s.exit_type
    FROM (SELECT * FROM participants
          WHERE bot_id = $1 AND conversation_id = $2 AND position > $3
          ORDER BY position LIMIT $4) p
    LEFT JOIN stints s ON s.bot_id = p.bot_id AND s.conversation_id = p.conversation_id
        AND s.identity = p.identity
    ORDER BY p.position, s.ordinal";

/// SPEC 4.2: up to `$4` events with `seq > $3`, cut short once the payloads before an
/// event reach `$5` bytes (so the first event always comes). `in_window` is how many the
/// count alone would have given, so that a page cut by bytes knows that more follow.
/// Payload sizes are read without reading the payloads themselves.
const EVENTS_PAGE: &str = "
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

/// Which events the change feed may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// Those of transactions older than the oldest one still running (PostgreSQL).
    Running,
    /// Every committed one: SQLite's writers commit one at a time, in the order of the
    /// feed counter they take.
    Committed,
}

/// SPEC 8, the change feed: up to `limit` of the bot's events and erasure tombstones after
/// `after`, in the order of `(feed_txn, conversation_id, seq)`, cut short by payload bytes
/// as [`EVENTS_PAGE`]. A tombstone takes the place after its conversation's last event (at
/// least its feed transaction, one past its `seq`), and the first event of a conversation
/// started again comes after the tombstone, so the same rule covers both.
///
/// Why a consumer passing the last position it got sees every event exactly once, with
/// any number of replicas writing (PostgreSQL): an event's `feed_txn` is at least the id of
/// the transaction that wrote it (see `postgres::write`). The query lists only events with
/// `feed_txn` below the oldest transaction id still running when its snapshot was taken;
/// every transaction with a smaller id has then ended, so those events are all visible
/// now, and every transaction still running or yet to start has a larger id and can only
/// write events with a larger `feed_txn`. The listed part of the order never changes
/// afterwards: nothing is ever inserted before a position a consumer has passed. Along a
/// conversation, `feed_txn` never decreases, so its events come in `seq` order. The cost
/// on ingest: two columns and one index lookup of the conversation's previous event; no
/// lock, counter or notification inside the transaction. A transaction anywhere in the
/// cluster that runs long holds the feed back (never loses it) until it ends.
pub fn changes(
    bot_id: &str,
    after: Option<&FeedPosition>,
    limit: i64,
    max_bytes: i64,
    horizon: Horizon,
) -> Sql {
    let start = FeedPosition::beginning();
    let after = after.unwrap_or(&start);
    let mut sql = Sql::new(
        "SELECT feed_txn, conversation_id, status_after, seq, received_at, name, transfer_type,
                transition, participant, anomalies, payload, in_window
         FROM (SELECT e.*,
                      sum(octet_length(e.payload)) OVER (
                          ORDER BY e.feed_txn, e.conversation_id, e.seq ROWS UNBOUNDED PRECEDING)
                          - octet_length(e.payload) AS bytes_before,
                      count(*) OVER () AS in_window
               FROM (SELECT * FROM (",
    );
    // Each part is read in feed order from its own index and cut at the page size, so
    // that only two pages are ever merged, however long the feed.
    sql.push(
        "SELECT feed_txn, conversation_id, status_after, seq, received_at, name, transfer_type,
                transition, participant, anomalies, CAST(payload AS TEXT) AS payload
         FROM events",
    );
    feed_part(&mut sql, bot_id, after, limit, horizon);
    sql.push(
        ") tail_events UNION ALL SELECT * FROM (
         SELECT feed_txn, conversation_id, CAST(NULL AS TEXT) AS status_after, seq,
                erased_at AS received_at, '",
    )
    .push(ERASED)
    .push(
        "' AS name, CAST(NULL AS TEXT) AS transfer_type, CAST(NULL AS TEXT) AS transition,
                CAST(NULL AS jsonb) AS participant, CAST(NULL AS jsonb) AS anomalies,
                'null' AS payload
         FROM erasures",
    );
    feed_part(&mut sql, bot_id, after, limit, horizon);
    sql.push(") tail_erasures ORDER BY feed_txn, conversation_id, seq LIMIT ")
        .bind(Bind::Int(limit + 1))
        .push(") e) page WHERE bytes_before < ")
        .bind(Bind::Int(max_bytes))
        .push(" ORDER BY feed_txn, conversation_id, seq");
    sql
}

/// The bot's last listed position (its feed's end now), if any: every event or tombstone
/// listed later comes after it, as nothing is ever placed before a listed position.
pub fn feed_end(bot_id: &str, horizon: Horizon) -> Sql {
    let mut sql = Sql::new("SELECT feed_txn, conversation_id, seq FROM (SELECT * FROM (");
    for (index, table) in ["events", "erasures"].into_iter().enumerate() {
        if index > 0 {
            sql.push(") last_event UNION ALL SELECT * FROM (");
        }
        sql.push("SELECT feed_txn, conversation_id, seq FROM ")
            .push(table)
            .push(" WHERE bot_id = ")
            .bind(Sql::text(bot_id));
        if horizon == Horizon::Running {
            sql.push(BELOW_RUNNING);
        }
        sql.push(" ORDER BY feed_txn DESC, conversation_id DESC, seq DESC LIMIT 1");
    }
    sql.push(") last_erasure) ends ORDER BY feed_txn DESC, conversation_id DESC, seq DESC LIMIT 1");
    sql
}

/// Only rows of transactions older than the oldest one running; a subquery, so that it is
/// computed once, from the statement's own snapshot.
const BELOW_RUNNING: &str =
    " AND feed_txn < (SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT)
                                  AS BIGINT))";

/// ` WHERE` the bot's rows after `after`, below the horizon, in feed order, at most a page.
fn feed_part(sql: &mut Sql, bot_id: &str, after: &FeedPosition, limit: i64, horizon: Horizon) {
    sql.push(" WHERE bot_id = ")
        .bind(Sql::text(bot_id))
        .push(" AND (feed_txn, conversation_id, seq) > (")
        .bind(Bind::Int(after.txn))
        .push(", ")
        .bind(Sql::text(&after.conversation_id))
        .push(", ")
        .bind(Bind::Int(after.seq))
        .push(")");
    if horizon == Horizon::Running {
        sql.push(BELOW_RUNNING);
    }
    sql.push(" ORDER BY feed_txn, conversation_id, seq LIMIT ")
        .bind(Bind::Int(limit + 1));
}

const EXISTS: &str =
    "SELECT count(*) FROM conversations WHERE bot_id = $1 AND conversation_id = $2";

/// The bots that have conversations, by id, each with its latest event's time: a loose
/// index scan (one probe per bot, not a read of every conversation).
const BOTS: &str = "WITH RECURSIVE bots(bot_id) AS (
        SELECT (SELECT bot_id FROM conversations ORDER BY bot_id LIMIT 1)
        UNION ALL
        SELECT (SELECT c.bot_id FROM conversations c WHERE c.bot_id > b.bot_id
                ORDER BY c.bot_id LIMIT 1)
        FROM bots b WHERE b.bot_id IS NOT NULL)
    SELECT b.bot_id,
        (SELECT c.last_event_at FROM conversations c WHERE c.bot_id = b.bot_id
         ORDER BY c.last_event_at DESC LIMIT 1) AS last_event_at
    FROM bots b WHERE b.bot_id IS NOT NULL
    LIMIT $1";

const TRANSFER_DATA: &str = "SELECT seq, received_at, participant,
        CAST(transfer_data AS TEXT) AS data
    FROM events
    WHERE bot_id = $1 AND conversation_id = $2 AND transfer_data IS NOT NULL
    ORDER BY seq DESC LIMIT 1";

/// A key's stored outcome, unless it has expired.
const READ_KEY: &str = "SELECT fingerprint, conversation_id, accepted, first_seq, last_seq,
         conversation_status
     FROM idempotency_keys WHERE bot_id = $1 AND key = $2 AND created_at >= $3";

/// Records an outcome, in the transaction that stored its events; replaces an expired one.
const SAVE_KEY: &str = "INSERT INTO idempotency_keys (bot_id, key, fingerprint, created_at,
         conversation_id, accepted, first_seq, last_seq, conversation_status)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (bot_id, key) DO UPDATE SET
         fingerprint = excluded.fingerprint, created_at = excluded.created_at,
         conversation_id = excluded.conversation_id, accepted = excluded.accepted,
         first_seq = excluded.first_seq, last_seq = excluded.last_seq,
         conversation_status = excluded.conversation_status";

/// Up to `$2` keys created before `$1`.
const PURGE_KEYS: &str = "DELETE FROM idempotency_keys
    WHERE (bot_id, key) IN (SELECT bot_id, key FROM idempotency_keys
                            WHERE created_at < $1 LIMIT $2)
    RETURNING CAST(1 AS BIGINT)";
const PURGE_BATCH: i64 = 1000;

/// The advisory lock that marks a key as in use (PostgreSQL), from the bot and the key.
pub fn key_lock_id(key: &KeyRecord) -> i64 {
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

/// The summary columns of a conversation.
#[derive(FromRow)]
pub struct SummaryRow {
    pub bot_id: String,
    pub conversation_id: String,
    pub last_seq: i64,
    pub status: String,
    pub experience: Option<String>,
    pub language: Option<String>,
    pub started_at: DbTime,
    pub ended_at: Option<DbTime>,
    pub last_event_at: DbTime,
    pub event_count: i64,
    pub anomaly_count: i64,
    pub cold_transfers: i64,
    pub warm_transfers: i64,
    pub redial_transfers: i64,
    pub present_count: i64,
    pub participant_count: i64,
    pub experience_from_events: bool,
    pub escalated_transfers: i64,
    pub failed_transfers: i64,
    pub hop_count: i64,
    pub last_emptied_by: Option<String>,
    pub pending_escalations: String,
    pub awaiting_agent: Option<i64>,
    pub service: Option<String>,
    /// The merged interaction, when the query read it.
    pub interaction: Option<String>,
}

impl SummaryRow {
    pub fn summary(&self) -> anyhow::Result<Summary> {
        Ok(Summary {
            status: Status::parse(&self.status).context("unknown stored status")?,
            experience: self.experience.as_deref().and_then(Experience::parse),
            experience_from_events: self.experience_from_events,
            language: self.language.clone(),
            started_at: Some(self.started_at.into()),
            ended_at: self.ended_at.map(Into::into),
            last_event_at: Some(self.last_event_at.into()),
            event_count: self.event_count,
            anomaly_count: self.anomaly_count,
            transfers: Transfers {
                cold: self.cold_transfers,
                warm: self.warm_transfers,
                redial: self.redial_transfers,
                escalated: self.escalated_transfers,
                failed: self.failed_transfers,
            },
            present_count: self.present_count,
            participant_count: self.participant_count,
            service: self.service.clone(),
            hop_count: self.hop_count,
            last_emptied_by: self.last_emptied_by.clone(),
            pending_escalations: serde_json::from_str(&self.pending_escalations)
                .context("stored pending escalations are not a list of ordinals")?,
            awaiting_agent: self.awaiting_agent,
        })
    }

    /// The merged interaction, when the query read it.
    pub fn interaction(&self) -> anyhow::Result<Option<Map<String, Value>>> {
        self.interaction
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .context("stored interaction is not a JSON object")
    }

    fn into_record(
        self,
        present: Vec<String>,
        hops: Vec<Hop>,
    ) -> anyhow::Result<ConversationRecord> {
        Ok(ConversationRecord {
            summary: self.summary()?,
            interaction: self.interaction()?,
            bot_id: self.bot_id,
            conversation_id: self.conversation_id,
            present,
            hops,
        })
    }
}

/// The hops of the conversations `ids` of a bot, in order.
fn hops_in(bot_id: &str, ids: &[&str]) -> Sql {
    let mut sql = Sql::new(
        "SELECT conversation_id, ordinal, seq, at, kind, from_identity, to_identity, outcome,
                reason, CAST(targets AS TEXT) AS targets
         FROM hops WHERE bot_id = ",
    );
    sql.bind(Sql::text(bot_id))
        .push(" AND conversation_id IN (");
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            sql.push(", ");
        }
        sql.bind(Sql::text(id));
    }
    sql.push(") ORDER BY conversation_id, ordinal");
    sql
}

#[derive(FromRow)]
pub struct HopRow {
    conversation_id: String,
    ordinal: i64,
    seq: i64,
    at: DbTime,
    kind: String,
    from_identity: Option<String>,
    to_identity: Option<String>,
    outcome: String,
    reason: Option<String>,
    targets: Option<String>,
}

impl HopRow {
    fn into_hop(self) -> anyhow::Result<Hop> {
        Ok(Hop {
            ordinal: self.ordinal,
            seq: self.seq,
            at: self.at.into(),
            kind: HopKind::parse(&self.kind).context("unknown stored hop kind")?,
            from: self.from_identity,
            to: self.to_identity,
            outcome: HopOutcome::parse(&self.outcome).context("unknown stored hop outcome")?,
            reason: self.reason,
            targets: self
                .targets
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .context("stored hop targets are not a JSON array")?,
        })
    }
}

/// The longest-present participant an append reads (see [`Stored::present`]).
#[derive(FromRow, serde::Deserialize)]
pub struct PresentStintRow {
    identity: String,
    position: i64,
    #[serde(deserialize_with = "rfc3339_time")]
    joined_at: Option<DbTime>,
}

impl PresentStintRow {
    fn into_present(self) -> PresentStint {
        PresentStint {
            identity: self.identity,
            position: self.position,
            joined_at: self
                .joined_at
                .map_or(OffsetDateTime::UNIX_EPOCH, Into::into),
        }
    }
}

/// A participant an append reads, with its open stint if any: a row in SQLite, an
/// element of a JSON array in PostgreSQL (which reads them in the summary's round trip).
#[derive(FromRow, serde::Deserialize)]
pub struct StateParticipant {
    identity: String,
    name: String,
    kind: String,
    position: i64,
    stint_count: i32,
    #[serde(deserialize_with = "rfc3339_time")]
    joined_at: Option<DbTime>,
    entry_type: Option<String>,
}

fn rfc3339_time<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DbTime>, D::Error> {
    Ok(time::serde::rfc3339::option::deserialize(deserializer)?.map(DbTime))
}

impl StateParticipant {
    pub fn into_stored(self) -> anyhow::Result<StoredParticipant> {
        let open = match (self.joined_at, self.entry_type) {
            (Some(joined_at), Some(entry_type)) => Some(stint(joined_at, None, &entry_type, None)?),
            _ => None,
        };
        Ok(StoredParticipant {
            identity: self.identity,
            name: self.name,
            kind: self.kind,
            position: self.position,
            stint_count: self.stint_count,
            open,
        })
    }
}

/// What an append reads: the conversation's summary row (`last_seq` 0 for one that has no
/// events yet, whatever the row says) and the participants its events name.
pub fn stored(
    row: &SummaryRow,
    participants: Vec<StateParticipant>,
    present: Vec<PresentStintRow>,
) -> anyhow::Result<Stored> {
    if row.last_seq == 0 {
        return Ok(Stored::default());
    }
    Ok(Stored {
        last_seq: row.last_seq,
        summary: row.summary()?,
        participants: participants
            .into_iter()
            .map(StateParticipant::into_stored)
            .collect::<anyhow::Result<_>>()?,
        present: present
            .into_iter()
            .map(PresentStintRow::into_present)
            .collect(),
        interaction: row.interaction()?,
    })
}

#[derive(FromRow)]
pub struct PresentRow {
    conversation_id: String,
    identity: String,
}

#[derive(FromRow)]
pub struct ParticipantStintRow {
    identity: String,
    name: String,
    kind: String,
    ordinal: Option<i32>,
    joined_at: Option<DbTime>,
    left_at: Option<DbTime>,
    entry_type: Option<String>,
    exit_type: Option<String>,
}

#[derive(FromRow)]
pub struct EventRow {
    seq: i64,
    received_at: DbTime,
    name: String,
    transfer_type: Option<String>,
    transition: Option<String>,
    participant: Option<Json<Participant>>,
    /// Null only for a tombstone in the change feed.
    anomalies: Option<Json<Vec<Anomaly>>>,
    payload: String,
    in_window: i64,
}

impl EventRow {
    fn into_event(self) -> anyhow::Result<EventRecord> {
        Ok(EventRecord {
            seq: self.seq,
            received_at: self.received_at.into(),
            name: EventName::parse(&self.name).context("unknown stored event name")?,
            transfer_type: self.transfer_type.as_deref().and_then(TransferType::parse),
            transition: self.transition.as_deref().and_then(Transition::parse),
            participant: self.participant.map(|Json(participant)| participant),
            anomalies: self.anomalies.map(|Json(codes)| codes).unwrap_or_default(),
            payload: RawValue::from_string(self.payload).context("stored payload is not JSON")?,
        })
    }
}

#[derive(FromRow)]
pub struct ChangeRow {
    feed_txn: i64,
    conversation_id: String,
    status_after: Option<String>,
    #[sqlx(flatten)]
    event: EventRow,
}

/// The `name` of a feed row that is an erasure's tombstone, not an event.
const ERASED: &str = "conversation.erased";

impl ChangeRow {
    fn into_change(self) -> anyhow::Result<Change> {
        let position = FeedPosition {
            txn: self.feed_txn,
            conversation_id: self.conversation_id,
            seq: self.event.seq,
        };
        if self.event.name == ERASED {
            return Ok(Change {
                position,
                kind: ChangeKind::Erased {
                    at: self.event.received_at.into(),
                },
            });
        }
        Ok(Change {
            position,
            kind: ChangeKind::Event {
                conversation_status: self
                    .status_after
                    .map(|status| Status::parse(&status).context("unknown stored status"))
                    .transpose()?,
                event: self.event.into_event()?,
            },
        })
    }
}

/// A stint row read back.
#[derive(FromRow)]
pub struct StintRow {
    pub conversation_id: String,
    pub ordinal: i32,
    pub joined_at: DbTime,
    pub left_at: Option<DbTime>,
    pub entry_type: String,
    pub exit_type: Option<String>,
}

/// A stint from its stored columns.
pub fn stint(
    joined_at: DbTime,
    left_at: Option<DbTime>,
    entry_type: &str,
    exit_type: Option<&str>,
) -> anyhow::Result<Stint> {
    Ok(Stint {
        joined_at: joined_at.into(),
        left_at: left_at.map(Into::into),
        entry_type: TransferType::parse(entry_type).context("unknown stored entry type")?,
        exit_type: exit_type.and_then(ExitType::parse),
    })
}

impl StintRow {
    fn into_stint(self) -> anyhow::Result<ParticipantStint> {
        Ok(ParticipantStint {
            stint: stint(
                self.joined_at,
                self.left_at,
                &self.entry_type,
                self.exit_type.as_deref(),
            )?,
            conversation_id: self.conversation_id,
            ordinal: self.ordinal,
        })
    }
}

#[derive(FromRow)]
pub struct TransferDataRow {
    seq: i64,
    received_at: DbTime,
    participant: Option<Json<Participant>>,
    data: String,
}

#[derive(FromRow)]
pub struct BotRow {
    bot_id: String,
    last_event_at: DbTime,
}

#[derive(FromRow)]
pub struct KeyRow {
    fingerprint: String,
    conversation_id: String,
    accepted: i64,
    first_seq: i64,
    last_seq: i64,
    conversation_status: String,
}

impl KeyRow {
    /// What a request with `fingerprint` finds under this key.
    pub fn into_previous(self, fingerprint: &str) -> anyhow::Result<Previous> {
        if self.fingerprint != fingerprint {
            return Ok(Previous::OtherBody);
        }
        Ok(Previous::SameBody(super::Outcome {
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

/// Converts rows, reporting the first one that does not read back.
fn convert<R, T>(
    rows: Vec<R>,
    into: impl Fn(R) -> anyhow::Result<T>,
) -> Result<Vec<T>, StoreError> {
    rows.into_iter()
        .map(into)
        .collect::<anyhow::Result<_>>()
        .map_err(StoreError::Other)
}

/// The reads, over a pool of either database.
pub struct Reads<'p, DB: Database>(pub &'p Pool<DB>);

impl<DB> Reads<'_, DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    SummaryRow: for<'r> FromRow<'r, DB::Row>,
    PresentRow: for<'r> FromRow<'r, DB::Row>,
    HopRow: for<'r> FromRow<'r, DB::Row>,
    ParticipantStintRow: for<'r> FromRow<'r, DB::Row>,
    EventRow: for<'r> FromRow<'r, DB::Row>,
    ChangeRow: for<'r> FromRow<'r, DB::Row>,
    StintRow: for<'r> FromRow<'r, DB::Row>,
    TransferDataRow: for<'r> FromRow<'r, DB::Row>,
    BotRow: for<'r> FromRow<'r, DB::Row>,
    KeyRow: for<'r> FromRow<'r, DB::Row>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    (i64, String, i64): for<'r> FromRow<'r, DB::Row>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    async fn fetch<R>(&self, sql: Sql) -> Result<Vec<R>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        let mut query = sqlx::query_as::<DB, R>(AssertSqlSafe(sql.text));
        for bind in sql.binds {
            query = query.bind(bind);
        }
        query.fetch_all(self.0).await
    }

    /// SQL with the binds given, in order.
    fn sql(text: &str, binds: impl IntoIterator<Item = Bind>) -> Sql {
        Sql {
            text: text.to_owned(),
            binds: binds.into_iter().collect(),
        }
    }

    pub async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let ids = [Sql::text(bot_id), Sql::text(conversation_id)];
        let Some(row) = self
            .fetch::<SummaryRow>(Self::sql(CONVERSATION, ids))
            .await?
            .pop()
        else {
            return Ok(None);
        };
        Ok(self.records(bot_id, vec![row]).await?.pop())
    }

    /// Each summary row with who is present in its conversation and its hops.
    async fn records(
        &self,
        bot_id: &str,
        rows: Vec<SummaryRow>,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = rows
            .iter()
            .map(|row| row.conversation_id.as_str())
            .collect();
        let mut present: HashMap<String, Vec<String>> = HashMap::new();
        for found in self.fetch::<PresentRow>(present_in(bot_id, &ids)).await? {
            present
                .entry(found.conversation_id)
                .or_default()
                .push(found.identity);
        }
        let mut hops: HashMap<String, Vec<Hop>> = HashMap::new();
        for found in self.fetch::<HopRow>(hops_in(bot_id, &ids)).await? {
            let conversation_id = found.conversation_id.clone();
            hops.entry(conversation_id)
                .or_default()
                .push(found.into_hop()?);
        }
        rows.into_iter()
            .map(|row| {
                let here = present.remove(&row.conversation_id).unwrap_or_default();
                let made = hops.remove(&row.conversation_id).unwrap_or_default();
                row.into_record(here, made)
            })
            .collect::<anyhow::Result<_>>()
            .map_err(StoreError::Other)
    }

    /// Up to `limit` participants after `after` (a position), each with all their stints.
    pub async fn participants(
        &self,
        bot_id: &str,
        conversation_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ParticipantTimeline>, StoreError> {
        let binds = [
            Sql::text(bot_id),
            Sql::text(conversation_id),
            Bind::Int(after),
            Bind::Int(limit),
        ];
        let rows: Vec<ParticipantStintRow> =
            self.fetch(Self::sql(PARTICIPANTS_PAGE, binds)).await?;
        let mut participants: Vec<ParticipantTimeline> = Vec::new();
        for row in rows {
            if participants
                .last()
                .is_none_or(|last| last.identity != row.identity)
            {
                participants.push(ParticipantTimeline {
                    identity: row.identity.clone(),
                    name: row.name,
                    kind: row.kind,
                    stints: Vec::new(),
                });
            }
            if let (Some(_), Some(joined_at), Some(entry_type)) =
                (row.ordinal, row.joined_at, row.entry_type)
            {
                let stint = stint(
                    joined_at,
                    row.left_at,
                    &entry_type,
                    row.exit_type.as_deref(),
                )?;
                if let Some(participant) = participants.last_mut() {
                    participant.stints.push(stint);
                }
            }
        }
        Ok(participants)
    }

    pub async fn events(
        &self,
        bot_id: &str,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Option<EventsPage>, StoreError> {
        let binds = [
            Sql::text(bot_id),
            Sql::text(conversation_id),
            Bind::Int(after_seq),
            Bind::Int(limit + 1),
            Bind::Int(max_bytes),
        ];
        let rows: Vec<EventRow> = self.fetch(Self::sql(EVENTS_PAGE, binds)).await?;
        if rows.is_empty() && !self.exists(bot_id, conversation_id).await? {
            return Ok(None);
        }
        let in_window = rows.first().map_or(0, |row| row.in_window);
        let mut events = convert(rows, EventRow::into_event)?;
        events.truncate(usize::try_from(limit).unwrap_or(0));
        let more = usize::try_from(in_window).unwrap_or(0) > events.len();
        Ok(Some(EventsPage { events, more }))
    }

    /// The page of the change feed that `sql` ([`changes`]) reads.
    pub async fn changes(&self, sql: Sql, limit: i64) -> Result<ChangesPage, StoreError> {
        let rows: Vec<ChangeRow> = self.fetch(sql).await?;
        let in_window = rows.first().map_or(0, |row| row.event.in_window);
        let mut changes = convert(rows, ChangeRow::into_change)?;
        changes.truncate(usize::try_from(limit).unwrap_or(0));
        let more = usize::try_from(in_window).unwrap_or(0) > changes.len();
        Ok(ChangesPage {
            changes,
            more,
            held_back: false,
        })
    }

    pub async fn feed_end(&self, sql: Sql) -> Result<Option<FeedPosition>, StoreError> {
        let end: Option<(i64, String, i64)> = self.fetch(sql).await?.pop();
        Ok(end.map(|(txn, conversation_id, seq)| FeedPosition {
            txn,
            conversation_id,
            seq,
        }))
    }

    async fn exists(&self, bot_id: &str, conversation_id: &str) -> Result<bool, StoreError> {
        let ids = [Sql::text(bot_id), Sql::text(conversation_id)];
        let counted: Vec<(i64,)> = self.fetch(Self::sql(EXISTS, ids)).await?;
        Ok(counted.first().is_some_and(|(count,)| *count > 0))
    }

    /// The conversations `sql` lists, each with who is present in it.
    pub async fn conversations(
        &self,
        bot_id: &str,
        sql: Sql,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let rows: Vec<SummaryRow> = self.fetch(sql).await?;
        self.records(bot_id, rows).await
    }

    pub async fn stints(
        &self,
        bot_id: &str,
        identity: &str,
        window: Window,
        after: Option<&StintKey>,
        limit: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<ParticipantStint>, StoreError> {
        let sql = list_stints(bot_id, identity, window, after, limit, now);
        convert(self.fetch(sql).await?, StintRow::into_stint)
    }

    pub async fn transfer_data(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<TransferDataRecord>, StoreError> {
        let ids = [Sql::text(bot_id), Sql::text(conversation_id)];
        let Some(row) = self
            .fetch::<TransferDataRow>(Self::sql(TRANSFER_DATA, ids))
            .await?
            .pop()
        else {
            return Ok(None);
        };
        Ok(Some(TransferDataRecord {
            seq: row.seq,
            received_at: row.received_at.into(),
            participant: row.participant.map(|Json(participant)| participant),
            data: RawValue::from_string(row.data).context("stored transferData is not JSON")?,
        }))
    }

    /// Up to `limit` bots that have conversations, by id.
    pub async fn bots(&self, limit: i64) -> Result<Vec<BotRecord>, StoreError> {
        let rows = self
            .fetch::<BotRow>(Self::sql(BOTS, [Bind::Int(limit)]))
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| BotRecord {
                bot_id: row.bot_id,
                last_event_at: row.last_event_at.into(),
            })
            .collect())
    }

    pub async fn previous_use(&self, key: &KeyRecord) -> Result<Option<Previous>, StoreError> {
        read_key(self.0, key).await
    }

    /// Forgets expired keys a bounded batch at a time, so that no delete holds its locks
    /// for long; how many.
    pub async fn purge_keys(&self, expired_before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let sql = Self::sql(
                PURGE_KEYS,
                [Bind::Time(expired_before), Bind::Int(PURGE_BATCH)],
            );
            let batch = self.fetch::<(i64,)>(sql).await?.len() as u64;
            purged += batch;
            if batch < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}

/// An earlier, unexpired use of `key`, read through `executor` (a pool, or the
/// transaction that is about to use the key).
pub async fn read_key<'c, DB, E>(
    executor: E,
    key: &KeyRecord,
) -> Result<Option<Previous>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    KeyRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let row: Option<KeyRow> = sqlx::query_as::<DB, KeyRow>(READ_KEY)
        .bind(Sql::text(&key.bot_id))
        .bind(Sql::text(&key.key))
        .bind(Bind::Time(key.expired_before))
        .fetch_optional(executor)
        .await?;
    Ok(row
        .map(|row| row.into_previous(&key.fingerprint))
        .transpose()?)
}

/// With `key` held by this transaction: replays its earlier use, else appends `batch`
/// with `append` and records the outcome under the key, in the same transaction.
pub async fn append_once<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    batch: &crate::domain::IngestBatch,
    key: &KeyRecord,
    append: impl AsyncFnOnce(&mut sqlx::Transaction<'_, DB>) -> Result<super::Appended, StoreError>,
) -> Result<super::Keyed, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    KeyRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    if let Some(previous) = read_key(&mut **tx, key).await? {
        return Ok(super::Keyed::Used(previous));
    }
    let appended = append(&mut *tx).await?;
    sqlx::query::<DB>(SAVE_KEY)
        .bind(Sql::text(&key.bot_id))
        .bind(Sql::text(&key.key))
        .bind(Sql::text(&key.fingerprint))
        .bind(Bind::Time(key.now))
        .bind(Sql::text(batch.conversation_id.as_str()))
        .bind(Bind::Int(batch.events.len() as i64))
        .bind(Bind::Int(appended.first_seq))
        .bind(Bind::Int(appended.last_seq))
        .bind(Sql::text(appended.status.as_str()))
        .execute(&mut **tx)
        .await?;
    Ok(super::Keyed::Stored(appended))
}
