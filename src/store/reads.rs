//! The reads, written once over either database.

use super::codec::{Bind, Sql};
use super::keys::{KeyRow, PURGE_BATCH, PURGE_KEYS, read_key};
use super::queries::*;
use super::rows::{
    BotRow, ChangeRow, EventRow, HopRow, ParticipantStintRow, PresentRow, StintRow, SummaryRow,
    TransferDataRow, convert, stint,
};
use super::{
    BotRecord, ChangesPage, ConversationRecord, EventsPage, FeedPosition, KeyRecord,
    ParticipantStint, Previous, StintKey, StoreError, TransferDataRecord, Window,
};
use crate::domain::{Hop, ParticipantTimeline};
use anyhow::Context;
use serde_json::value::RawValue;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};
use std::collections::HashMap;
use time::OffsetDateTime;

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
