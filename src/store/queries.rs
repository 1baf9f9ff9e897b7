//! The SQL where the dialects agree (`$n` placeholders work in both): the text of every
//! shared read, built with its binds.

use super::codec::{Bind, Sql};
use super::rows::ERASED;
use super::{ConversationFilter, ConversationKey, FeedPosition, StintKey, Window};
use time::OffsetDateTime;

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
pub(super) fn list_stints(
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
pub(super) fn present_in(bot_id: &str, ids: &[&str]) -> Sql {
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

pub(super) const CONVERSATION: &str = concat!(
    "SELECT ",
    summary_columns!(),
    ", CAST(c.interaction AS TEXT) AS interaction
     FROM conversations c WHERE c.bot_id = $1 AND c.conversation_id = $2"
);

/// Up to `$4` participants after position `$3`, each with every stint, in order.
pub(super) const PARTICIPANTS_PAGE: &str = "
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
pub(super) const EVENTS_PAGE: &str = "
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
/// the transaction that wrote it (see `postgres/write.rs`). The query lists only events with
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

pub(super) const EXISTS: &str =
    "SELECT count(*) FROM conversations WHERE bot_id = $1 AND conversation_id = $2";

/// The bots that have conversations, by id, each with its latest event's time: a loose
/// index scan (one probe per bot, not a read of every conversation).
pub(super) const BOTS: &str = "WITH RECURSIVE bots(bot_id) AS (
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

pub(super) const TRANSFER_DATA: &str = "SELECT seq, received_at, participant,
        CAST(transfer_data AS TEXT) AS data
    FROM events
    WHERE bot_id = $1 AND conversation_id = $2 AND transfer_data IS NOT NULL
    ORDER BY seq DESC LIMIT 1";

/// The hops of the conversations `ids` of a bot, in order.
pub(super) fn hops_in(bot_id: &str, ids: &[&str]) -> Sql {
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
