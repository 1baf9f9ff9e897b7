//! The rows the reads return, and how each becomes the domain's value.

use super::codec::DbTime;
use super::{
    Change, ChangeKind, ConversationRecord, EventRecord, FeedPosition, ParticipantStint, StoreError,
};
use crate::domain::{
    Anomaly, EventName, ExitType, Experience, Hop, HopKind, HopOutcome, Participant, PresentStint,
    Status, Stint, Stored, StoredParticipant, Summary, TransferType, Transfers, Transition,
};
use anyhow::Context;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::FromRow;
use sqlx::types::Json;
use time::OffsetDateTime;

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

    pub(super) fn into_record(
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

#[derive(FromRow)]
pub struct HopRow {
    pub(super) conversation_id: String,
    pub(super) ordinal: i64,
    pub(super) seq: i64,
    pub(super) at: DbTime,
    pub(super) kind: String,
    pub(super) from_identity: Option<String>,
    pub(super) to_identity: Option<String>,
    pub(super) outcome: String,
    pub(super) reason: Option<String>,
    pub(super) targets: Option<String>,
}

impl HopRow {
    pub(super) fn into_hop(self) -> anyhow::Result<Hop> {
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
    pub(super) identity: String,
    pub(super) position: i64,
    #[serde(deserialize_with = "rfc3339_time")]
    pub(super) joined_at: Option<DbTime>,
}

impl PresentStintRow {
    pub(super) fn into_present(self) -> PresentStint {
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
    pub(super) identity: String,
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) position: i64,
    pub(super) stint_count: i32,
    #[serde(deserialize_with = "rfc3339_time")]
    pub(super) joined_at: Option<DbTime>,
    pub(super) entry_type: Option<String>,
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
    pub(super) conversation_id: String,
    pub(super) identity: String,
}

#[derive(FromRow)]
pub struct ParticipantStintRow {
    pub(super) identity: String,
    pub(super) name: String,
    pub(super) kind: String,
    pub(super) ordinal: Option<i32>,
    pub(super) joined_at: Option<DbTime>,
    pub(super) left_at: Option<DbTime>,
    pub(super) entry_type: Option<String>,
    pub(super) exit_type: Option<String>,
}

#[derive(FromRow)]
pub struct EventRow {
    pub(super) seq: i64,
    pub(super) received_at: DbTime,
    pub(super) name: String,
    pub(super) transfer_type: Option<String>,
    pub(super) transition: Option<String>,
    pub(super) participant: Option<Json<Participant>>,
    /// Null only for a tombstone in the change feed.
    pub(super) anomalies: Option<Json<Vec<Anomaly>>>,
    pub(super) payload: String,
    pub(super) in_window: i64,
}

impl EventRow {
    pub(super) fn into_event(self) -> anyhow::Result<EventRecord> {
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
    pub(super) feed_txn: i64,
    pub(super) conversation_id: String,
    pub(super) status_after: Option<String>,
    #[sqlx(flatten)]
    pub(super) event: EventRow,
}

/// The `name` of a feed row that is an erasure's tombstone, not an event.
pub(super) const ERASED: &str = "conversation.erased";

impl ChangeRow {
    pub(super) fn into_change(self) -> anyhow::Result<Change> {
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
    pub(super) fn into_stint(self) -> anyhow::Result<ParticipantStint> {
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
    pub(super) seq: i64,
    pub(super) received_at: DbTime,
    pub(super) participant: Option<Json<Participant>>,
    pub(super) data: String,
}

#[derive(FromRow)]
pub struct BotRow {
    pub(super) bot_id: String,
    pub(super) last_event_at: DbTime,
}

/// Converts rows, reporting the first one that does not read back.
pub(super) fn convert<R, T>(
    rows: Vec<R>,
    into: impl Fn(R) -> anyhow::Result<T>,
) -> Result<Vec<T>, StoreError> {
    rows.into_iter()
        .map(into)
        .collect::<anyhow::Result<_>>()
        .map_err(StoreError::Other)
}
