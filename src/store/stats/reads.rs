//! What a stats query, `stats/now` and the worker's metrics read of the stored stats.

use super::statements::{
    Dialect, at_micros, bot_and_position, dims_of, key_text, sql, stored_cuboid, stored_grouping,
    tally_of,
};
use super::{StatsNow, StatsProgress};
use crate::domain::stats::facts::micros_at;
use crate::domain::stats::{Cuboid, Dims, Fact, HandledMark, Level, Tally, slot_of};
use crate::store::codec::Bind;
use crate::store::{FeedPosition, Store, StoreError};
use time::OffsetDateTime;

impl Store {
    /// How far `bot_id`'s stats go.
    pub async fn stats_progress(&self, bot_id: &str) -> Result<StatsProgress, StoreError> {
        let row: Option<(String, i64, Option<i64>)> = self
            .fetch_rows(sql(
                "SELECT position, counted, caught_up_at FROM stats_positions WHERE bot_id = $1",
                [Bind::Text(bot_id.to_owned())],
            ))
            .await?
            .pop();
        let Some((position, counted, caught_up_at)) = row else {
            return Ok(StatsProgress {
                position: None,
                counted: 0,
                caught_up_at: None,
            });
        };
        let position: FeedPosition = serde_json::from_str(&position)
            .map_err(|error| anyhow::anyhow!("unreadable stats position: {error}"))?;
        Ok(StatsProgress {
            position: Some(position).filter(|position| *position != FeedPosition::beginning()),
            counted,
            caught_up_at: caught_up_at.map(at_micros),
        })
    }

    /// When `bot_id`'s latest event was received; `None` when it has none.
    pub async fn latest_event_at(
        &self,
        bot_id: &str,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let latest = match &self.backend {
            crate::store::Backend::Postgres(store) => {
                let query = "SELECT max(last_event_at) FROM conversations WHERE bot_id = $1";
                store
                    .deadlines()
                    .read(async {
                        Ok(sqlx::query_scalar::<_, Option<OffsetDateTime>>(query)
                            .bind(bot_id)
                            .fetch_one(store.pool())
                            .await?)
                    })
                    .await?
            }
            crate::store::Backend::Sqlite(store) => {
                let query = "SELECT max(last_event_at) FROM conversations WHERE bot_id = $1";
                sqlx::query_scalar::<_, Option<i64>>(query)
                    .bind(bot_id)
                    .fetch_one(store.reader())
                    .await?
                    .map(at_micros)
            }
        };
        Ok(latest)
    }

    /// When the first of `bot_id`'s events after `position` in its feed was received
    /// (`None`: no event follows it; the stats and the webhooks measure their lag by it).
    pub async fn first_event_after(
        &self,
        bot_id: &str,
        position: Option<&FeedPosition>,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let start = FeedPosition::beginning();
        let after = position.unwrap_or(&start);
        let query = "SELECT received_at FROM events
             WHERE bot_id = $1 AND (feed_txn, conversation_id, seq) > ($2, $3, $4)
             ORDER BY feed_txn, conversation_id, seq LIMIT 1";
        let first = match &self.backend {
            crate::store::Backend::Postgres(store) => {
                store
                    .deadlines()
                    .read(async {
                        Ok(sqlx::query_scalar::<_, OffsetDateTime>(query)
                            .bind(bot_id)
                            .bind(after.txn)
                            .bind(&after.conversation_id)
                            .bind(after.seq)
                            .fetch_optional(store.pool())
                            .await?)
                    })
                    .await?
            }
            crate::store::Backend::Sqlite(store) => sqlx::query_scalar::<_, i64>(query)
                .bind(bot_id)
                .bind(after.txn)
                .bind(&after.conversation_id)
                .bind(after.seq)
                .fetch_optional(store.reader())
                .await?
                .map(at_micros),
        };
        Ok(first)
    }

    /// Whether any event or tombstone of `bot_id` follows `position` in its feed, listed
    /// yet or not.
    pub(super) async fn feed_continues(
        &self,
        bot_id: &str,
        position: Option<&FeedPosition>,
    ) -> Result<bool, StoreError> {
        let follows = |table: &str| {
            format!(
                "SELECT 1 FROM {table} WHERE bot_id = $1 \
                 AND (feed_txn, conversation_id, seq) > ($2, $3, $4)"
            )
        };
        let found: Vec<(i64,)> = self
            .fetch_rows(sql(
                &format!(
                    "SELECT CAST(1 AS BIGINT) WHERE EXISTS ({}) OR EXISTS ({})",
                    follows("events"),
                    follows("erasures")
                ),
                bot_and_position(bot_id, position),
            ))
            .await?;
        Ok(!found.is_empty())
    }

    /// How many of `bot_id`'s events follow `position` in its feed.
    pub async fn events_after(
        &self,
        bot_id: &str,
        position: Option<&FeedPosition>,
    ) -> Result<i64, StoreError> {
        let counted: Option<(i64,)> = self
            .fetch_rows(sql(
                "SELECT count(*) FROM events
                 WHERE bot_id = $1 AND (feed_txn, conversation_id, seq) > ($2, $3, $4)",
                bot_and_position(bot_id, position),
            ))
            .await?
            .pop();
        Ok(counted.map_or(0, |(count,)| count))
    }

    /// The stored tallies of `cuboid` in the periods `slots` of `level`: every key's, or
    /// `only` one's.
    pub async fn stats_slots(
        &self,
        bot_id: &str,
        level: Level,
        cuboid: Cuboid,
        only: Option<Dims>,
        slots: std::ops::Range<i64>,
    ) -> Result<Vec<(i64, Dims, Tally)>, StoreError> {
        let mut text = "SELECT slot, key, tally FROM stats_slots
             WHERE bot_id = $1 AND cuboid = $2 AND slot >= $3 AND slot < $4"
            .to_owned();
        let mut binds = vec![
            Bind::Text(bot_id.to_owned()),
            Bind::Int(stored_cuboid(level, cuboid)),
            Bind::Int(slots.start),
            Bind::Int(slots.end),
        ];
        if let Some(dims) = only {
            text.push_str(" AND key = $5");
            binds.push(Bind::Text(key_text(&dims)));
        }
        let rows: Vec<(i64, String, String)> = self.fetch_rows(sql(&text, binds)).await?;
        rows.into_iter()
            .map(|(slot, key, tally)| Ok((slot, dims_of(&key)?, tally_of(&tally)?)))
            .collect()
    }

    /// The stored `handled` marks of grouping `mask` in the periods `slots` of `level`.
    pub async fn stats_handled(
        &self,
        bot_id: &str,
        level: Level,
        mask: usize,
        slots: std::ops::Range<i64>,
    ) -> Result<Vec<(HandledMark, u64)>, StoreError> {
        let rows: Vec<(i64, String, i64, i64)> = self
            .fetch_rows(sql(
                "SELECT slot, key, previous_slot, count FROM stats_handled
                 WHERE bot_id = $1 AND grouping = $2 AND slot >= $3 AND slot < $4",
                [
                    Bind::Text(bot_id.to_owned()),
                    Bind::Int(stored_grouping(level, mask)),
                    Bind::Int(slots.start),
                    Bind::Int(slots.end),
                ],
            ))
            .await?;
        rows.into_iter()
            .map(|(slot, key, previous_slot, count)| {
                let key = serde_json::from_str(&key)
                    .map_err(|error| anyhow::anyhow!("unreadable handled key: {error}"))?;
                let mark = HandledMark {
                    level,
                    mask,
                    slot,
                    key,
                    previous_slot: (previous_slot >= 0).then_some(previous_slot),
                };
                Ok((mark, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }

    /// Every fact of `bot_id` in `[from, to)` (microseconds).
    pub async fn stats_facts(
        &self,
        bot_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Fact>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let rows: Vec<(String,)> = self
            .fetch_rows(sql(
                "SELECT facts FROM stats_facts WHERE bot_id = $1 AND slot >= $2 AND slot <= $3",
                [
                    Bind::Text(bot_id.to_owned()),
                    Bind::Int(slot_of(from)),
                    Bind::Int(slot_of(to - 1)),
                ],
            ))
            .await?;
        let mut facts = Vec::new();
        for (batch,) in rows {
            let batch: Vec<Fact> = serde_json::from_str(&batch)
                .map_err(|error| anyhow::anyhow!("unreadable stats facts: {error}"))?;
            facts.extend(batch.into_iter().filter(|fact| {
                let at = micros_at(fact.at);
                from <= at && at < to
            }));
        }
        Ok(facts)
    }

    /// What is happening now in `bot_id`'s conversations, as the worker last counted.
    pub async fn stats_now(&self, bot_id: &str) -> Result<StatsNow, StoreError> {
        let bot = || [Bind::Text(bot_id.to_owned())];
        let statuses: Vec<(String, i64)> = self
            .fetch_rows(sql(
                "SELECT status, count(*) FROM stats_open_conversations WHERE bot_id = $1
                 GROUP BY status",
                bot(),
            ))
            .await?;
        let count = |wanted: &str| {
            statuses
                .iter()
                .find(|(status, _)| status == wanted)
                .map_or(0, |(_, count)| *count)
        };
        let by_queue: Vec<(Option<String>, i64, i64)> = self
            .fetch_rows(sql(
                "SELECT queue, count(*), count(DISTINCT conversation_id) FROM stats_present
                 WHERE bot_id = $1 GROUP BY queue ORDER BY queue IS NULL, queue",
                bot(),
            ))
            .await?;
        let longest: Option<(String, String, i64)> = self
            .fetch_rows(sql(
                "SELECT identity, conversation_id, joined_at FROM stats_present
                 WHERE bot_id = $1 ORDER BY joined_at, conversation_id, identity LIMIT 1",
                bot(),
            ))
            .await?
            .pop();
        let oldest_idle: Option<(String, i64)> = self
            .fetch_rows(sql(
                "SELECT conversation_id, since FROM stats_open_conversations
                 WHERE bot_id = $1 AND status = 'idle' ORDER BY since, conversation_id LIMIT 1",
                bot(),
            ))
            .await?
            .pop();
        Ok(StatsNow {
            active: count("active"),
            idle: count("idle"),
            present: by_queue.iter().map(|(_, present, _)| present).sum(),
            by_queue,
            longest_open_stint: longest
                .map(|(identity, conversation, at)| (identity, conversation, at_micros(at))),
            oldest_idle: oldest_idle.map(|(conversation, at)| (conversation, at_micros(at))),
        })
    }

    pub(super) fn dialect(&self) -> Dialect {
        match &self.backend {
            crate::store::Backend::Postgres(_) => Dialect::Postgres,
            crate::store::Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }
}
