//! The stats worker's storage (SPEC 11): a page of a bot's change feed counted in one
//! transaction with the feed position it reached, and what a stats query reads. The same
//! SQL on both stores: times are integer microseconds and documents are JSON text.

use super::codec::{Bind, Sql};
use super::{Change, ChangeKind, FeedPosition, Store, StoreError};
use crate::domain::Status;
use crate::domain::sources::parse_stored;
use crate::domain::stats::facts::micros_at;
use crate::domain::stats::{
    ConversationStats, Cuboid, Dims, Fact, HandledMark, Level, Rollup, Tally, slot_of,
};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Database, Encode, Executor, FromRow, IntoArguments, Type};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// Feed items counted in one transaction.
pub const PAGE: i64 = 2000;
/// At most this much payload in a page of the feed (its first item always comes).
const PAGE_BYTES: i64 = 4 * 1024 * 1024;

/// What counting a page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// `items` were counted; `more` when the feed held more than the page.
    Page { items: usize, more: bool },
    /// Nothing is left to count: everything committed is counted.
    CaughtUp,
    /// Another replica is counting this bot, or counted past where this one read.
    Elsewhere,
}

/// How far the stats of a bot go.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsProgress {
    pub position: Option<FeedPosition>,
    pub counted: i64,
    /// When the worker last found nothing left to count.
    pub caught_up_at: Option<OffsetDateTime>,
}

/// What is happening now (SPEC 11.2), as of the worker's progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsNow {
    pub active: i64,
    pub idle: i64,
    pub present: i64,
    /// `(queue, present, active conversations)`.
    pub by_queue: Vec<(Option<String>, i64, i64)>,
    /// `(identity, conversation, joined at)`.
    pub longest_open_stint: Option<(String, String, OffsetDateTime)>,
    /// `(conversation, since)`.
    pub oldest_idle: Option<(String, OffsetDateTime)>,
}

/// What this process last wrote for each bot's stats: the tallies of its last page, with
/// the position it reached. While the bot's position is still that one, nobody else wrote
/// since (tallies are only ever written with the position), so the next page takes them
/// from here rather than reading back what was just written. Conversation states are not
/// kept: an erasure deletes them without moving the position.
#[derive(Default)]
pub(super) struct Written {
    bots: std::sync::Mutex<std::collections::HashMap<String, LastPage>>,
}

struct LastPage {
    position: String,
    tallies: BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
}

impl Written {
    /// The bot's last page, if its position is still `position`; forgotten either way.
    fn take(&self, bot_id: &str, position: &str) -> Option<LastPage> {
        let mut bots = self
            .bots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bots.remove(bot_id).filter(|last| last.position == position)
    }

    fn keep(&self, bot_id: &str, last: LastPage) {
        let mut bots = self
            .bots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bots.insert(bot_id.to_owned(), last);
    }
}

/// Everything a page of the feed changes in the stats tables.
#[derive(Debug, Default)]
struct PageWrites {
    rollup: Rollup,
    facts: Vec<Fact>,
    /// Each conversation's state after the page; `None` when it was erased.
    states: BTreeMap<String, Option<ConversationStats>>,
}

impl Store {
    /// Counts the next page of `bot_id`'s feed, and stores it with the position reached, in
    /// one transaction. The reads and the counting happen before it, so that it is short
    /// (and SQLite's one writer is not held up): it commits only if the position is still
    /// the one they started from.
    pub async fn count_stats_page(&self, bot_id: &str) -> Result<Counted, StoreError> {
        let progress = self.stats_progress(bot_id).await?;
        // Taken before the feed is read: everything committed before it is in the page or
        // follows it.
        let looked_at = now_micros();
        let page = self
            .changes(bot_id, progress.position.as_ref(), PAGE, PAGE_BYTES)
            .await?;
        let last_listed = page.changes.last().map(|change| &change.position);
        // `held_back` is judged in a snapshot taken after the page's: a transaction that held
        // events back from the page may have ended in between, and they would be missed. So
        // the stats count as caught up only when nothing at all follows the page.
        let caught_up = !page.more
            && !page.held_back
            && !self
                .feed_continues(bot_id, last_listed.or(progress.position.as_ref()))
                .await?;
        let Some(last) = page.changes.last() else {
            if !caught_up {
                return Ok(Counted::Page {
                    items: 0,
                    more: false,
                });
            }
            let statements = vec![mark_caught_up(bot_id, looked_at)];
            self.holding_position(bot_id, &progress.position, statements)
                .await?;
            return Ok(Counted::CaughtUp);
        };
        let reached = last.position.clone();
        let counted = page.changes.len();
        let expected = position_text(
            progress
                .position
                .as_ref()
                .unwrap_or(&FeedPosition::beginning()),
        );
        let known_tallies = self
            .stats_written
            .take(bot_id, &expected)
            .map(|last| last.tallies)
            .unwrap_or_default();
        let mut writes = self.fold_page(bot_id, &page.changes).await?;
        let stored = self
            .stored_tallies(bot_id, &writes.rollup, known_tallies)
            .await?;
        let tallies = merged(stored, std::mem::take(&mut writes.rollup.tallies));
        let mut statements = page_statements(self.dialect(), bot_id, &writes, &tallies);
        let caught_up_at = caught_up.then_some(looked_at);
        statements.push(save_position(bot_id, &reached, counted, caught_up_at));
        let ran = self
            .holding_position(bot_id, &progress.position, statements)
            .await?;
        if !ran {
            return Ok(Counted::Elsewhere);
        }
        let position = position_text(&reached);
        self.stats_written
            .keep(bot_id, LastPage { position, tallies });
        Ok(Counted::Page {
            items: counted,
            more: page.more,
        })
    }

    /// Runs `statements` in a transaction that holds `bot_id`'s position, if that is still
    /// `expected`; whether they ran.
    async fn holding_position(
        &self,
        bot_id: &str,
        expected: &Option<FeedPosition>,
        statements: Vec<Sql>,
    ) -> Result<bool, StoreError> {
        let expected = position_text(expected.as_ref().unwrap_or(&FeedPosition::beginning()));
        let bot = || [Bind::Text(bot_id.to_owned())];
        match &self.backend {
            super::Backend::Postgres(store) => {
                let mut connection = super::Checkout::acquire(store.pool()).await?;
                let outcome = async {
                    let mut tx = sqlx::Connection::begin(&mut *connection).await?;
                    let outcome = async {
                        execute_pg(&mut tx, new_position_row(bot_id)).await?;
                        // Skipped while another replica counts this bot.
                        let held = position_pg(
                            &mut tx,
                            sql(
                                "SELECT position FROM stats_positions WHERE bot_id = $1 \
                                 FOR UPDATE SKIP LOCKED",
                                bot(),
                            ),
                        )
                        .await?;
                        if held.is_none_or(|position| position != expected) {
                            return Ok(false);
                        }
                        for statement in statements {
                            execute_pg(&mut tx, statement).await?;
                        }
                        Ok(true)
                    }
                    .await;
                    super::finish(tx, outcome, |ran| *ran).await
                }
                .await;
                connection.reuse_if_ok(&outcome);
                outcome
            }
            super::Backend::Sqlite(store) => {
                store
                    .write(
                        async |tx| {
                            execute_sqlite(tx, new_position_row(bot_id)).await?;
                            let held = position_sqlite(
                                tx,
                                sql(
                                    "SELECT position FROM stats_positions WHERE bot_id = $1",
                                    bot(),
                                ),
                            )
                            .await?;
                            if held.is_none_or(|position| position != expected) {
                                return Ok(false);
                            }
                            for statement in statements {
                                execute_sqlite(tx, statement).await?;
                            }
                            Ok(true)
                        },
                        |ran| *ran,
                    )
                    .await
            }
        }
    }

    /// Folds the page's events into each conversation's stats state, and gathers what to
    /// write.
    async fn fold_page(&self, bot_id: &str, changes: &[Change]) -> Result<PageWrites, StoreError> {
        let conversations: BTreeSet<&str> = changes
            .iter()
            .map(|change| change.position.conversation_id.as_str())
            .collect();
        let mut states = self.stats_states(bot_id, &conversations).await?;
        let mut writes = PageWrites::default();
        for change in changes {
            let conversation = &change.position.conversation_id;
            match &change.kind {
                ChangeKind::Erased { .. } => {
                    states.insert(conversation.clone(), None);
                }
                ChangeKind::Event { event, .. } => {
                    let parsed = parse_stored(
                        event.name,
                        event.participant.as_ref(),
                        &event.payload,
                        bot_id,
                        conversation,
                    )
                    .map_err(|problems| {
                        anyhow::anyhow!(
                            "stored event {conversation}#{} does not parse again: {problems}",
                            event.seq
                        )
                    })?;
                    let state = states
                        .entry(conversation.clone())
                        .or_insert(None)
                        .get_or_insert_with(ConversationStats::default);
                    for fact in state.apply(event.received_at, &parsed) {
                        writes.rollup.add(&fact);
                        writes.facts.push(fact);
                    }
                }
            }
        }
        writes.states = states;
        Ok(writes)
    }

    async fn stats_states(
        &self,
        bot_id: &str,
        conversations: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, Option<ConversationStats>>, StoreError> {
        let ids: Vec<Value> = conversations.iter().map(|id| json!([id])).collect();
        let (select, binds) = self.dialect().rows(2, &[("conversation_id", "text")], &ids);
        let text = format!(
            "SELECT conversation_id, state FROM stats_conversations
             WHERE bot_id = $1 AND conversation_id IN ({select})"
        );
        let mut all = vec![Bind::Text(bot_id.to_owned())];
        all.extend(binds);
        let rows: Vec<(String, String)> = self.stats_fetch(sql(&text, all)).await?;
        let mut states = BTreeMap::new();
        for (conversation, state) in rows {
            let state: ConversationStats = serde_json::from_str(&state)
                .map_err(|error| anyhow::anyhow!("unreadable stats state: {error}"))?;
            states.insert(conversation, Some(state));
        }
        Ok(states)
    }

    /// The stored tallies of the slots and groups `rollup` adds to.
    async fn stored_tallies(
        &self,
        bot_id: &str,
        rollup: &Rollup,
        mut known: BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
    ) -> Result<BTreeMap<(Level, Cuboid, i64, Dims), Tally>, StoreError> {
        let mut stored = BTreeMap::new();
        let missing: Vec<&(Level, Cuboid, i64, Dims)> = rollup
            .tallies
            .keys()
            .filter(|key| match known.remove(*key) {
                Some(tally) => {
                    stored.insert((*key).clone(), tally);
                    false
                }
                None => true,
            })
            .collect();
        if missing.is_empty() {
            return Ok(stored);
        }
        let keys: Vec<Value> = missing
            .into_iter()
            .map(|(level, cuboid, slot, dims)| {
                json!([stored_cuboid(*level, *cuboid), slot, key_text(dims)])
            })
            .collect();
        let columns = [("cuboid", "smallint"), ("slot", "bigint"), ("key", "text")];
        let (select, binds) = self.dialect().rows(2, &columns, &keys);
        let text = format!(
            "SELECT CAST(s.cuboid AS BIGINT), s.slot, s.key, s.tally
             FROM stats_slots s JOIN ({select}) AS k
                 ON s.bot_id = $1 AND s.cuboid = k.cuboid AND s.slot = k.slot
                     AND s.key = k.key"
        );
        let mut all = vec![Bind::Text(bot_id.to_owned())];
        all.extend(binds);
        let rows: Vec<(i64, i64, String, String)> = self.stats_fetch(sql(&text, all)).await?;
        for (cuboid, slot, key, tally) in rows {
            let (level, cuboid) = level_and_cuboid(cuboid)?;
            stored.insert((level, cuboid, slot, dims_of(&key)?), tally_of(&tally)?);
        }
        Ok(stored)
    }

    /// How far `bot_id`'s stats go.
    pub async fn stats_progress(&self, bot_id: &str) -> Result<StatsProgress, StoreError> {
        let row: Option<(String, i64, Option<i64>)> = self
            .stats_fetch(sql(
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
            super::Backend::Postgres(store) => {
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
            super::Backend::Sqlite(store) => {
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
    /// (`None`: every visible event is counted).
    pub async fn stats_first_uncounted_at(
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
            super::Backend::Postgres(store) => {
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
            super::Backend::Sqlite(store) => sqlx::query_scalar::<_, i64>(query)
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
    async fn feed_continues(
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
            .stats_fetch(sql(
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
    pub async fn stats_lag_events(
        &self,
        bot_id: &str,
        position: Option<&FeedPosition>,
    ) -> Result<i64, StoreError> {
        let counted: Option<(i64,)> = self
            .stats_fetch(sql(
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
        let rows: Vec<(i64, String, String)> = self.stats_fetch(sql(&text, binds)).await?;
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
            .stats_fetch(sql(
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
            .stats_fetch(sql(
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
            .stats_fetch(sql(
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
            .stats_fetch(sql(
                "SELECT queue, count(*), count(DISTINCT conversation_id) FROM stats_present
                 WHERE bot_id = $1 GROUP BY queue ORDER BY queue IS NULL, queue",
                bot(),
            ))
            .await?;
        let longest: Option<(String, String, i64)> = self
            .stats_fetch(sql(
                "SELECT identity, conversation_id, joined_at FROM stats_present
                 WHERE bot_id = $1 ORDER BY joined_at, conversation_id, identity LIMIT 1",
                bot(),
            ))
            .await?
            .pop();
        let oldest_idle: Option<(String, i64)> = self
            .stats_fetch(sql(
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

    fn dialect(&self) -> Dialect {
        match &self.backend {
            super::Backend::Postgres(_) => Dialect::Postgres,
            super::Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }

    async fn stats_fetch<R>(&self, query: Sql) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        match &self.backend {
            super::Backend::Postgres(store) => {
                store
                    .deadlines()
                    .read(async { Ok(fetch_all(store.pool(), query).await?) })
                    .await
            }
            super::Backend::Sqlite(store) => Ok(fetch_all(store.reader(), query).await?),
        }
    }
}

/// `$1` the bot, `$2`–`$4` a place in its feed (its start when `None`).
fn bot_and_position(bot_id: &str, position: Option<&FeedPosition>) -> [Bind; 4] {
    let start = FeedPosition::beginning();
    let after = position.unwrap_or(&start);
    [
        Bind::Text(bot_id.to_owned()),
        Bind::Int(after.txn),
        Bind::Text(after.conversation_id.clone()),
        Bind::Int(after.seq),
    ]
}

fn mark_caught_up(bot_id: &str, looked_at: i64) -> Sql {
    sql(
        "UPDATE stats_positions SET caught_up_at = $2, updated_at = $3 WHERE bot_id = $1",
        [
            Bind::Text(bot_id.to_owned()),
            Bind::Int(looked_at),
            Bind::Int(now_micros()),
        ],
    )
}

fn save_position(
    bot_id: &str,
    reached: &FeedPosition,
    counted: usize,
    caught_up_at: Option<i64>,
) -> Sql {
    sql(
        "UPDATE stats_positions SET position = $2, counted = counted + $3, updated_at = $4,
             caught_up_at = CASE WHEN $5 < 0 THEN caught_up_at ELSE $5 END
         WHERE bot_id = $1",
        [
            Bind::Text(bot_id.to_owned()),
            Bind::Text(position_text(reached)),
            Bind::Int(counted as i64),
            Bind::Int(now_micros()),
            Bind::Int(caught_up_at.unwrap_or(-1)),
        ],
    )
}

/// The statements that store a page's counts: slot tallies (replaced by their merge with
/// the page), `handled` marks (added), facts, and the conversations' states.
fn page_statements(
    dialect: Dialect,
    bot_id: &str,
    writes: &PageWrites,
    tallies: &BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
) -> Vec<Sql> {
    let mut statements = Vec::new();
    let rows: Vec<Value> = tallies
        .iter()
        .map(|((level, cuboid, slot, dims), tally)| {
            let tally = serde_json::to_string(tally).expect("a tally is JSON");
            json!([stored_cuboid(*level, *cuboid), slot, key_text(dims), tally])
        })
        .collect();
    if !rows.is_empty() {
        statements.push(dialect.insert(
            "stats_slots",
            &[
                ("cuboid", "smallint"),
                ("slot", "bigint"),
                ("key", "text"),
                ("tally", "text"),
            ],
            "ON CONFLICT (bot_id, cuboid, slot, key) DO UPDATE SET tally = excluded.tally",
            bot_id,
            &rows,
        ));
    }
    let rows: Vec<Value> = writes
        .rollup
        .handled
        .iter()
        .map(|(mark, count)| {
            let key = serde_json::to_string(&mark.key).expect("dims are JSON");
            json!([
                stored_grouping(mark.level, mark.mask),
                mark.slot,
                key,
                mark.previous_slot.unwrap_or(-1),
                count
            ])
        })
        .collect();
    if !rows.is_empty() {
        statements.push(dialect.insert(
            "stats_handled",
            &[
                ("grouping", "smallint"),
                ("slot", "bigint"),
                ("key", "text"),
                ("previous_slot", "bigint"),
                ("count", "bigint"),
            ],
            "ON CONFLICT (bot_id, grouping, slot, key, previous_slot) \
             DO UPDATE SET count = stats_handled.count + excluded.count",
            bot_id,
            &rows,
        ));
    }
    let mut by_slot: BTreeMap<i64, Vec<&Fact>> = BTreeMap::new();
    for fact in &writes.facts {
        by_slot
            .entry(slot_of(micros_at(fact.at)))
            .or_default()
            .push(fact);
    }
    let rows: Vec<Value> = by_slot
        .into_iter()
        .map(|(slot, facts)| json!([slot, serde_json::to_string(&facts).expect("facts are JSON")]))
        .collect();
    if !rows.is_empty() {
        statements.push(dialect.insert(
            "stats_facts",
            &[("slot", "bigint"), ("facts", "text")],
            "",
            bot_id,
            &rows,
        ));
    }
    statements.extend(state_statements(dialect, bot_id, &writes.states));
    statements
}

/// The conversations' states, and what is happening now in them.
fn state_statements(
    dialect: Dialect,
    bot_id: &str,
    states: &BTreeMap<String, Option<ConversationStats>>,
) -> Vec<Sql> {
    let mut statements = Vec::new();
    if states.is_empty() {
        return statements;
    }
    let conversations: Vec<Value> = states.keys().map(|id| json!([id])).collect();
    for table in [
        "stats_conversations",
        "stats_present",
        "stats_open_conversations",
    ] {
        let (select, binds) = dialect.rows(2, &[("conversation_id", "text")], &conversations);
        let text =
            format!("DELETE FROM {table} WHERE bot_id = $1 AND conversation_id IN ({select})");
        let mut all = vec![Bind::Text(bot_id.to_owned())];
        all.extend(binds);
        statements.push(sql(&text, all));
    }
    let (mut kept, mut present, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for (conversation, state) in states {
        let Some(state) = state else { continue };
        let text = serde_json::to_string(state).expect("a state is JSON");
        kept.push(json!([conversation, text]));
        for (identity, queue, joined_at) in state.present() {
            present.push(json!([conversation, identity, queue, micros_at(joined_at)]));
        }
        let (status, since) = state.status();
        if status != Status::Ended {
            open.push(json!([
                conversation,
                status.as_str(),
                since.map_or(0, micros_at)
            ]));
        }
    }
    let tables: [(&str, &Columns, Vec<Value>); 3] = [
        (
            "stats_conversations",
            &[("conversation_id", "text"), ("state", "text")],
            kept,
        ),
        (
            "stats_present",
            &[
                ("conversation_id", "text"),
                ("identity", "text"),
                ("queue", "text"),
                ("joined_at", "bigint"),
            ],
            present,
        ),
        (
            "stats_open_conversations",
            &[
                ("conversation_id", "text"),
                ("status", "text"),
                ("since", "bigint"),
            ],
            open,
        ),
    ];
    for (table, columns, rows) in tables {
        if !rows.is_empty() {
            statements.push(dialect.insert(table, columns, "", bot_id, &rows));
        }
    }
    statements
}

/// How each store unpacks a JSON array of rows sent as one parameter: a constant
/// statement per table, whatever the number of rows (no statement to plan again per page,
/// and no limit on parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `SELECT <columns> FROM <rows>`, the rows sent from parameter `$n` on: each row a
    /// JSON array whose items are `columns`, given as `(name, PostgreSQL type)`.
    /// PostgreSQL takes them as one array per column (`UNNEST`, bound in binary), SQLite
    /// as one JSON document (`json_each`).
    fn rows(self, n: usize, columns: &[(&str, &str)], rows: &[Value]) -> (String, Vec<Bind>) {
        match self {
            Self::Postgres => {
                let mut items = Vec::new();
                let mut arrays = Vec::new();
                let mut binds = Vec::new();
                for (i, (name, kind)) in columns.iter().enumerate() {
                    let column = rows.iter().map(|row| &row[i]);
                    if *kind == "text" {
                        items.push(format!("r.c{i} AS {name}"));
                        arrays.push(format!("CAST(${} AS text[])", n + i));
                        binds.push(Bind::Texts(column.map(json_text).collect()));
                    } else {
                        items.push(format!("CAST(r.c{i} AS {kind}) AS {name}"));
                        arrays.push(format!("CAST(${} AS bigint[])", n + i));
                        binds.push(Bind::Ints(
                            column.map(|v| v.as_i64().unwrap_or(0)).collect(),
                        ));
                    }
                }
                let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
                let text = format!(
                    "SELECT {} FROM UNNEST({}) AS r({})",
                    items.join(", "),
                    arrays.join(", "),
                    names.join(", ")
                );
                (text, binds)
            }
            Self::Sqlite => {
                let items: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _))| format!("json_extract(r.value, '$[{i}]') AS {name}"))
                    .collect();
                let text = format!("SELECT {} FROM json_each(${n}) AS r", items.join(", "));
                (
                    text,
                    vec![Bind::Text(Value::Array(rows.to_vec()).to_string())],
                )
            }
        }
    }

    /// `INSERT INTO <table> (bot_id, <columns>) SELECT $1, … FROM <rows>`, then `tail`
    /// (SQLite needs a WHERE before an upsert's ON CONFLICT).
    fn insert(
        self,
        table: &str,
        columns: &[(&str, &str)],
        tail: &str,
        bot_id: &str,
        rows: &[Value],
    ) -> Sql {
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let (select, binds) = self.rows(2, columns, rows);
        let text = format!(
            "INSERT INTO {table} (bot_id, {names}) SELECT $1, {names} FROM ({select}) AS rows \
             WHERE true {tail}",
            names = names.join(", "),
        );
        let mut all = vec![Bind::Text(bot_id.to_owned())];
        all.extend(binds);
        sql(&text, all)
    }
}

/// A table's columns: `(name, PostgreSQL type)`.
type Columns = [(&'static str, &'static str)];

/// A JSON item as a text column's value.
fn json_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

fn sql(text: &str, binds: impl IntoIterator<Item = Bind>) -> Sql {
    Sql {
        text: text.to_owned(),
        binds: binds.into_iter().collect(),
    }
}

/// Each stored tally with what the page adds to it.
fn merged(
    mut stored: BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
    added: BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
) -> BTreeMap<(Level, Cuboid, i64, Dims), Tally> {
    for (key, tally) in added {
        stored.entry(key).or_default().merge(&tally);
    }
    stored
}

/// A bot's position row at the feed's beginning, unless it has one.
fn new_position_row(bot_id: &str) -> Sql {
    sql(
        "INSERT INTO stats_positions (bot_id, position, counted, updated_at)
         VALUES ($1, $2, 0, $3) ON CONFLICT (bot_id) DO NOTHING",
        [
            Bind::Text(bot_id.to_owned()),
            Bind::Text(position_text(&FeedPosition::beginning())),
            Bind::Int(now_micros()),
        ],
    )
}

// Concrete per store, not generic over the executor: a generic executor in these futures
// trips the compiler's higher-ranked lifetime check where the worker is spawned.

async fn execute_pg(connection: &mut sqlx::PgConnection, query: Sql) -> Result<(), sqlx::Error> {
    let mut statement = sqlx::query::<sqlx::Postgres>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.execute(connection).await.map(|_| ())
}

async fn execute_sqlite(
    connection: &mut sqlx::SqliteConnection,
    query: Sql,
) -> Result<(), sqlx::Error> {
    let mut statement = sqlx::query::<sqlx::Sqlite>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.execute(connection).await.map(|_| ())
}

async fn position_pg(
    connection: &mut sqlx::PgConnection,
    query: Sql,
) -> Result<Option<String>, sqlx::Error> {
    let mut statement = sqlx::query_scalar::<sqlx::Postgres, String>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.fetch_optional(connection).await
}

async fn position_sqlite(
    connection: &mut sqlx::SqliteConnection,
    query: Sql,
) -> Result<Option<String>, sqlx::Error> {
    let mut statement = sqlx::query_scalar::<sqlx::Sqlite, String>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.fetch_optional(connection).await
}

async fn fetch_all<DB, R>(pool: &sqlx::Pool<DB>, query: Sql) -> Result<Vec<R>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut statement = sqlx::query_as::<DB, R>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.fetch_all(pool).await
}

fn position_text(position: &FeedPosition) -> String {
    serde_json::to_string(position).expect("a position is JSON")
}

/// A group's dimensions as a slot row's key: `[participant, queue, experience, language,
/// service]`.
fn key_text(dims: &Dims) -> String {
    let conversation = &dims.conversation;
    serde_json::to_string(&[
        &dims.participant,
        &dims.queue,
        &conversation.experience,
        &conversation.language,
        &conversation.service,
    ])
    .expect("dims are JSON")
}

fn dims_of(key: &str) -> Result<Dims, StoreError> {
    let [participant, queue, experience, language, service]: [Option<String>; 5] =
        serde_json::from_str(key).map_err(|error| anyhow::anyhow!("unreadable key: {error}"))?;
    Ok(Dims {
        participant,
        queue,
        conversation: crate::domain::stats::ConversationDims {
            experience,
            language,
            service,
        },
    })
}

fn tally_of(tally: &str) -> Result<Tally, StoreError> {
    Ok(
        serde_json::from_str(tally)
            .map_err(|error| anyhow::anyhow!("unreadable tally: {error}"))?,
    )
}

/// A cuboid's id in storage: its level's and its own.
fn stored_cuboid(level: Level, cuboid: Cuboid) -> i64 {
    i64::from(level.id() + cuboid.id())
}

fn stored_grouping(level: Level, mask: usize) -> i64 {
    i64::from(level.id()) + mask as i64
}

fn level_and_cuboid(id: i64) -> Result<(Level, Cuboid), StoreError> {
    Level::ALL
        .into_iter()
        .flat_map(|level| Cuboid::ALL.into_iter().map(move |cuboid| (level, cuboid)))
        .find(|(level, cuboid)| stored_cuboid(*level, *cuboid) == id)
        .ok_or_else(|| anyhow::anyhow!("unknown stats cuboid {id}").into())
}

fn now_micros() -> i64 {
    micros_at(OffsetDateTime::now_utc())
}

fn at_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
