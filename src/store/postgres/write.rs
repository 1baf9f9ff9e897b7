//! The write of an append's plans, a round of them in one statement (see [`super::append`]).
//!
//! Each event carries its feed transaction (SPEC 8, see `queries::changes`): this
//! transaction's id, or the previous event's feed transaction if that is larger. An id is
//! taken when a transaction first writes, which may be before it waits for the row lock,
//! so a later append to the conversation can have a smaller id; the previous event is
//! visible here, as the compare-and-set only writes when `last_seq` is the one the plan
//! read. So feed transactions never decrease along a conversation's `seq`, and none is
//! ever below the id of the transaction that wrote it. The first event of a conversation
//! started again after an erasure goes after the erasure's tombstone, for the same reason.

use crate::domain::{Anomaly, AppendPlan, IngestBatch, Participant, StintRow};
use crate::store::StoreError;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

/// The rows of a round's plans, column by column, each row with the number (from 1) of its
/// append in the round.
#[derive(Default)]
struct RoundRows<'a> {
    events: EventColumns<'a>,
    participants: ParticipantColumns<'a>,
    closed: StintColumns<'a>,
    opened: StintColumns<'a>,
    hops: HopColumns<'a>,
    changes: HopChangeColumns<'a>,
}

#[derive(Default)]
struct EventColumns<'a> {
    n: Vec<i64>,
    seq: Vec<i64>,
    name: Vec<&'a str>,
    transfer_type: Vec<Option<&'a str>>,
    transition: Vec<Option<&'a str>>,
    identity: Vec<Option<&'a str>>,
    participant: Vec<Option<Json<&'a Participant>>>,
    anomalies: Vec<Json<&'a [Anomaly]>>,
    transfer_data: Vec<Option<&'a str>>,
    payload: Vec<&'a str>,
    status_after: Vec<&'static str>,
}

#[derive(Default)]
struct ParticipantColumns<'a> {
    n: Vec<i64>,
    identity: Vec<&'a str>,
    position: Vec<i64>,
    name: Vec<&'a str>,
    kind: Vec<&'a str>,
    stint_count: Vec<i32>,
}

#[derive(Default)]
struct StintColumns<'a> {
    n: Vec<i64>,
    identity: Vec<&'a str>,
    ordinal: Vec<i32>,
    joined_at: Vec<time::OffsetDateTime>,
    left_at: Vec<Option<time::OffsetDateTime>>,
    entry_type: Vec<&'static str>,
    exit_type: Vec<Option<&'static str>>,
    position: Vec<i64>,
}

#[derive(Default)]
struct HopColumns<'a> {
    n: Vec<i64>,
    ordinal: Vec<i64>,
    seq: Vec<i64>,
    at: Vec<time::OffsetDateTime>,
    kind: Vec<&'static str>,
    from: Vec<Option<&'a str>>,
    to: Vec<Option<&'a str>>,
    outcome: Vec<&'static str>,
    reason: Vec<Option<&'a str>>,
    targets: Vec<Option<Json<&'a Vec<serde_json::Value>>>>,
}

#[derive(Default)]
struct HopChangeColumns<'a> {
    n: Vec<i64>,
    ordinal: Vec<i64>,
    outcome: Vec<Option<&'static str>>,
    to: Vec<Option<&'a str>>,
    reason: Vec<Option<&'a str>>,
}

impl<'a> StintColumns<'a> {
    fn push(&mut self, n: i64, rows: &'a [StintRow]) {
        for (row, exit_type) in rows.iter().zip(exit_types(rows)) {
            self.n.push(n);
            self.identity.push(&row.identity);
            self.ordinal.push(row.ordinal);
            self.joined_at.push(row.stint.joined_at);
            self.left_at.push(row.stint.left_at);
            self.entry_type.push(row.stint.entry_type.as_str());
            self.exit_type.push(exit_type);
            self.position.push(row.position);
        }
    }
}

impl<'a> RoundRows<'a> {
    fn of(batches: &[&'a IngestBatch], plans: &'a [AppendPlan]) -> Self {
        let mut rows = Self::default();
        for (n, (batch, plan)) in (1..).zip(batches.iter().zip(plans)) {
            let events = &batch.events;
            let seqs = plan.first_seq..;
            for (((seq, event), anomalies), status) in
                seqs.zip(events).zip(&plan.anomalies).zip(&plan.statuses)
            {
                let columns = &mut rows.events;
                columns.n.push(n);
                columns.seq.push(seq);
                columns.name.push(event.name().as_str());
                columns
                    .transfer_type
                    .push(event.transfer_type().map(|kind| kind.as_str()));
                columns
                    .transition
                    .push(event.transition().map(|transition| transition.as_str()));
                columns.identity.push(
                    event
                        .participant()
                        .map(|participant| participant.identity.as_str()),
                );
                columns.participant.push(event.participant().map(Json));
                columns.anomalies.push(Json(&anomalies[..]));
                columns
                    .transfer_data
                    .push(event.transfer_data.as_ref().map(|data| data.get()));
                columns.payload.push(event.payload.get());
                columns.status_after.push(status.as_str());
            }
            for row in &plan.participants {
                let columns = &mut rows.participants;
                columns.n.push(n);
                columns.identity.push(&row.identity);
                columns.position.push(row.position);
                columns.name.push(&row.name);
                columns.kind.push(&row.kind);
                columns.stint_count.push(row.stint_count);
            }
            rows.closed.push(n, &plan.closed);
            rows.opened.push(n, &plan.opened);
            for hop in &plan.hops {
                let columns = &mut rows.hops;
                columns.n.push(n);
                columns.ordinal.push(hop.ordinal);
                columns.seq.push(hop.seq);
                columns.at.push(hop.at);
                columns.kind.push(hop.kind.as_str());
                columns.from.push(hop.from.as_deref());
                columns.to.push(hop.to.as_deref());
                columns.outcome.push(hop.outcome.as_str());
                columns.reason.push(hop.reason.as_deref());
                columns.targets.push(hop.targets.as_ref().map(Json));
            }
            for change in &plan.hop_changes {
                let columns = &mut rows.changes;
                columns.n.push(n);
                columns.ordinal.push(change.ordinal);
                columns
                    .outcome
                    .push(change.outcome.map(|outcome| outcome.as_str()));
                columns.to.push(change.to.as_deref());
                columns.reason.push(change.reason.as_deref());
            }
        }
        rows
    }
}

/// Writes a round's plans (at most one per conversation) in one statement: each
/// conversation's row if its `last_seq` is still the planned one (it is: it is locked),
/// then the events, participants, stints and hops of those written. How many were.
pub(super) async fn write_round(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[&IngestBatch],
    plans: &[AppendPlan],
) -> Result<usize, StoreError> {
    let rows = RoundRows::of(batches, plans);
    let written: Vec<i64> = sqlx::query_scalar(WRITE_ROUND)
        .bind((1..=plans.len() as i64).collect::<Vec<_>>())
        .bind(column(batches, |batch| batch.bot_id.as_str()))
        .bind(column(batches, |batch| batch.conversation_id.as_str()))
        .bind(column(plans, |plan| plan.expected_seq))
        .bind(column(plans, AppendPlan::last_seq))
        .bind(column(plans, |plan| plan.summary.status.as_str()))
        .bind(column(plans, |plan| {
            plan.summary
                .experience
                .map(|experience| experience.as_str())
        }))
        .bind(column(plans, |plan| plan.summary.language.as_deref()))
        .bind(column(plans, |plan| {
            plan.summary.started_at.unwrap_or(plan.received_at)
        }))
        .bind(column(plans, |plan| plan.summary.ended_at))
        .bind(column(plans, |plan| {
            plan.summary.last_event_at.unwrap_or(plan.received_at)
        }))
        .bind(column(plans, |plan| plan.summary.event_count))
        .bind(column(plans, |plan| plan.summary.anomaly_count))
        .bind(column(plans, |plan| plan.summary.transfers.cold))
        .bind(column(plans, |plan| plan.summary.transfers.warm))
        .bind(column(plans, |plan| plan.summary.transfers.redial))
        .bind(column(plans, |plan| plan.summary.present_count))
        .bind(column(plans, |plan| plan.summary.participant_count))
        .bind(column(plans, |plan| plan.summary.experience_from_events))
        .bind(column(plans, |plan| plan.summary.transfers.escalated))
        .bind(column(plans, |plan| plan.summary.transfers.failed))
        .bind(column(plans, |plan| plan.summary.hop_count))
        .bind(column(plans, |plan| {
            plan.summary.last_emptied_by.as_deref()
        }))
        .bind(column(plans, |plan| {
            Json(&plan.summary.pending_escalations)
        }))
        .bind(column(plans, |plan| plan.summary.awaiting_agent))
        .bind(column(plans, |plan| plan.summary.service.as_deref()))
        .bind(column(plans, |plan| plan.interaction.as_ref().map(Json)))
        .bind(column(plans, |plan| plan.received_at))
        .bind(column(plans, |plan| plan.end_open_stints_at))
        .bind(column(plans, |plan| plan.first_seq))
        .bind(&rows.events.n)
        .bind(&rows.events.seq)
        .bind(&rows.events.name)
        .bind(&rows.events.transfer_type)
        .bind(&rows.events.transition)
        .bind(&rows.events.identity)
        .bind(&rows.events.participant)
        .bind(&rows.events.anomalies)
        .bind(&rows.events.transfer_data)
        .bind(&rows.events.payload)
        .bind(&rows.events.status_after)
        .bind(&rows.participants.n)
        .bind(&rows.participants.identity)
        .bind(&rows.participants.position)
        .bind(&rows.participants.name)
        .bind(&rows.participants.kind)
        .bind(&rows.participants.stint_count)
        .bind(&rows.closed.n)
        .bind(&rows.closed.identity)
        .bind(&rows.closed.ordinal)
        .bind(&rows.closed.left_at)
        .bind(&rows.closed.exit_type)
        .bind(&rows.opened.n)
        .bind(&rows.opened.identity)
        .bind(&rows.opened.ordinal)
        .bind(&rows.opened.joined_at)
        .bind(&rows.opened.left_at)
        .bind(&rows.opened.entry_type)
        .bind(&rows.opened.exit_type)
        .bind(&rows.opened.position)
        .bind(&rows.hops.n)
        .bind(&rows.hops.ordinal)
        .bind(&rows.hops.seq)
        .bind(&rows.hops.at)
        .bind(&rows.hops.kind)
        .bind(&rows.hops.from)
        .bind(&rows.hops.to)
        .bind(&rows.hops.outcome)
        .bind(&rows.hops.reason)
        .bind(&rows.hops.targets)
        .bind(&rows.changes.n)
        .bind(&rows.changes.ordinal)
        .bind(&rows.changes.outcome)
        .bind(&rows.changes.to)
        .bind(&rows.changes.reason)
        .fetch_all(&mut **tx)
        .await?;
    Ok(written.len())
}

/// The statement of [`write_round`]: `$1`–`$30` the conversations, `$31`–`$41` the events,
/// `$42`–`$47` the participants, `$48`–`$52` the stints closed, `$53`–`$60` those opened,
/// `$61`–`$70` the hops, `$71`–`$75` the hops changed. Closed stints are found from the
/// plan's rows, as the participants are when the plan is read. The conversation's row is
/// only ever updated (`create_conversations` makes it): a stale plan must not write back a
/// conversation erased meanwhile.
const WRITE_ROUND: &str = "WITH conversation AS (
    UPDATE conversations AS c SET
        (last_seq, status, experience, language, started_at, ended_at, last_event_at,
         event_count, anomaly_count, cold_transfers, warm_transfers, redial_transfers,
         present_count, participant_count, experience_from_events, escalated_transfers,
         failed_transfers, hop_count, last_emptied_by, pending_escalations,
         awaiting_agent, service, interaction)
      = (x.last_seq, x.status, x.experience, x.language, x.started_at, x.ended_at,
         x.last_event_at, x.event_count, x.anomaly_count, x.cold, x.warm, x.redial,
         x.present_count, x.participant_count, x.experience_from_events, x.escalated,
         x.failed, x.hop_count, x.last_emptied_by, x.pending_escalations, x.awaiting_agent,
         x.service, COALESCE(x.interaction, c.interaction))
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[],
                $11::timestamptz[], $12::bigint[], $13::bigint[], $14::bigint[],
                $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bool[],
                $20::bigint[], $21::bigint[], $22::bigint[], $23::text[], $24::jsonb[],
                $25::bigint[], $26::text[], $27::jsonb[], $28::timestamptz[],
                $29::timestamptz[], $30::bigint[])
        AS x(n, bot_id, conversation_id, expected, last_seq, status, experience, language,
             started_at, ended_at, last_event_at, event_count, anomaly_count, cold, warm,
             redial, present_count, participant_count, experience_from_events, escalated,
             failed, hop_count, last_emptied_by, pending_escalations, awaiting_agent,
             service, interaction, received_at, end_open_stints_at, first_seq)
    WHERE c.bot_id = x.bot_id AND c.conversation_id = x.conversation_id
        AND c.last_seq = x.expected
    RETURNING x.n, x.bot_id, x.conversation_id, x.received_at, x.end_open_stints_at,
              x.first_seq
), new_events AS (
    INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
        transition, participant_identity, participant, anomalies, transfer_data, payload,
        status_after, feed_txn)
    SELECT w.bot_id, w.conversation_id, e.seq, w.received_at, e.name, e.transfer_type,
           e.transition, e.identity, e.participant, e.anomalies, e.transfer_data::json,
           e.payload::json, e.status_after,
           GREATEST((pg_current_xact_id()::text)::bigint, COALESCE(
               (SELECT previous.feed_txn FROM events previous
                WHERE previous.bot_id = w.bot_id AND previous.conversation_id = w.conversation_id
                    AND previous.seq = w.first_seq - 1),
               (SELECT max(erased.feed_txn) + 1 FROM erasures erased
                WHERE erased.bot_id = w.bot_id AND erased.conversation_id = w.conversation_id),
               0))
    FROM UNNEST($31::bigint[], $32::bigint[], $33::text[], $34::text[], $35::text[],
                $36::text[], $37::jsonb[], $38::jsonb[], $39::text[], $40::text[],
                $41::text[])
        AS e(n, seq, name, transfer_type, transition, identity, participant, anomalies,
             transfer_data, payload, status_after)
    JOIN conversation w ON w.n = e.n
), participant_rows AS (
    INSERT INTO participants (bot_id, conversation_id, identity, position, name, kind,
        stint_count)
    SELECT w.bot_id, w.conversation_id, p.identity, p.position, p.name, p.kind, p.stint_count
    FROM UNNEST($42::bigint[], $43::text[], $44::bigint[], $45::text[], $46::text[],
                $47::integer[])
        AS p(n, identity, position, name, kind, stint_count)
    JOIN conversation w ON w.n = p.n
    ON CONFLICT (bot_id, conversation_id, identity) DO UPDATE SET
        name = EXCLUDED.name, kind = EXCLUDED.kind, stint_count = EXCLUDED.stint_count
), closing_rows AS (
    SELECT * FROM UNNEST($48::bigint[], $49::text[], $50::integer[], $51::timestamptz[],
                         $52::text[])
        AS x(n, identity, ordinal, left_at, exit_type)
), closing AS (
    SELECT found.row_id, x.left_at, x.exit_type
    FROM closing_rows x
    JOIN conversation w ON w.n = x.n
    CROSS JOIN LATERAL (
        SELECT s.ctid AS row_id FROM stints s
        WHERE s.bot_id = w.bot_id AND s.conversation_id = w.conversation_id
            AND s.identity = x.identity AND s.ordinal = x.ordinal
        LIMIT 1) found
), closed_stints AS (
    UPDATE stints s SET left_at = closing.left_at, exit_type = closing.exit_type
    FROM closing WHERE s.ctid = closing.row_id
), ended_stints AS (
    UPDATE stints s SET left_at = w.end_open_stints_at, exit_type = 'END'
    FROM conversation w
    WHERE w.end_open_stints_at IS NOT NULL AND s.bot_id = w.bot_id
        AND s.conversation_id = w.conversation_id AND s.left_at IS NULL
        AND NOT EXISTS (SELECT 1 FROM closing_rows x
                        WHERE x.n = w.n AND x.identity = s.identity)
), opened_stints AS (
    INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
        entry_type, exit_type, position)
    SELECT w.bot_id, w.conversation_id, o.identity, o.ordinal, o.joined_at, o.left_at,
           o.entry_type, o.exit_type, o.position
    FROM UNNEST($53::bigint[], $54::text[], $55::integer[], $56::timestamptz[],
                $57::timestamptz[], $58::text[], $59::text[], $60::bigint[])
        AS o(n, identity, ordinal, joined_at, left_at, entry_type, exit_type, position)
    JOIN conversation w ON w.n = o.n
), new_hops AS (
    INSERT INTO hops (bot_id, conversation_id, ordinal, seq, at, kind, from_identity,
        to_identity, outcome, reason, targets)
    SELECT w.bot_id, w.conversation_id, h.ordinal, h.seq, h.at, h.kind, h.from_identity,
           h.to_identity, h.outcome, h.reason, h.targets
    FROM UNNEST($61::bigint[], $62::bigint[], $63::bigint[], $64::timestamptz[],
                $65::text[], $66::text[], $67::text[], $68::text[], $69::text[],
                $70::jsonb[])
        AS h(n, ordinal, seq, at, kind, from_identity, to_identity, outcome, reason,
             targets)
    JOIN conversation w ON w.n = h.n
), changing AS (
    SELECT found.row_id, x.outcome, x.to_identity, x.reason
    FROM UNNEST($71::bigint[], $72::bigint[], $73::text[], $74::text[], $75::text[])
        AS x(n, ordinal, outcome, to_identity, reason)
    JOIN conversation w ON w.n = x.n
    CROSS JOIN LATERAL (
        SELECT h.ctid AS row_id FROM hops h
        WHERE h.bot_id = w.bot_id AND h.conversation_id = w.conversation_id
            AND h.ordinal = x.ordinal
        LIMIT 1) found
), changed_hops AS (
    UPDATE hops h SET outcome = COALESCE(changing.outcome, h.outcome),
        to_identity = COALESCE(changing.to_identity, h.to_identity),
        reason = COALESCE(changing.reason, h.reason)
    FROM changing WHERE h.ctid = changing.row_id
)
SELECT n FROM conversation";

fn exit_types(rows: &[StintRow]) -> Vec<Option<&'static str>> {
    rows.iter()
        .map(|row| row.stint.exit_type.map(|exit| exit.as_str()))
        .collect()
}

/// A bind's column: `value` of each of `items`, in order.
pub(super) fn column<'a, T, U>(items: &'a [T], value: impl Fn(&'a T) -> U) -> Vec<U> {
    items.iter().map(value).collect()
}
