//! The stats worker's storage (SPEC 11): a page of a bot's change feed counted in one
//! transaction with the feed position it reached, and what a stats query reads. The same
//! SQL on both stores: times are integer microseconds and documents are JSON text.

mod reads;
mod statements;

use super::codec::{Bind, Sql};
use super::{Change, ChangeKind, FeedPosition, Store, StoreError};
use crate::domain::sources::parse_stored;
use crate::domain::stats::{ConversationStats, Cuboid, Dims, Fact, Level, Rollup, Tally};
use serde_json::{Value, json};
use statements::{
    dims_of, execute_pg, execute_sqlite, key_text, level_and_cuboid, mark_caught_up, merged,
    new_position_row, now_micros, page_statements, position_pg, position_sqlite, position_text,
    save_position, sql, stored_cuboid, tally_of,
};
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
            crate::store::Backend::Postgres(store) => {
                let mut connection = crate::store::Checkout::acquire(store.pool()).await?;
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
            crate::store::Backend::Sqlite(store) => {
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
        let rows: Vec<(String, String)> = self.fetch_rows(sql(&text, all)).await?;
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
        let rows: Vec<(i64, i64, String, String)> = self.fetch_rows(sql(&text, all)).await?;
        for (cuboid, slot, key, tally) in rows {
            let (level, cuboid) = level_and_cuboid(cuboid)?;
            stored.insert((level, cuboid, slot, dims_of(&key)?), tally_of(&tally)?);
        }
        Ok(stored)
    }
}
