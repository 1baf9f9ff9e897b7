//! Operations metrics (SPEC 11): the worker that counts each bot's change feed into the
//! stats tables, off the ingest path, and a query's answer put together from them.

use crate::changes::ChangeHub;
use crate::config::StatsSettings;
use crate::domain::stats::{Accumulator, Cell, ConversationCounts, StatsQuery};
use crate::store::{Counted, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Bots counted in one pass, at most (the list of bots is read again at every pass).
const MAX_BOTS: i64 = 10_000;

/// Counts every bot's new events, woken by commits here and on other replicas (and every
/// `stats.poll_interval_ms` regardless), until aborted. Several replicas may run it: one
/// counts a bot at a time, the others skip it.
pub async fn count(store: Store, hub: Arc<ChangeHub>, settings: StatsSettings) {
    let poll = Duration::from_millis(settings.poll_interval_ms.max(10));
    loop {
        if let Err(error) = count_every_bot(&store).await {
            tracing::warn!(%error, "stats: could not count new events; trying again");
        }
        tokio::select! {
            () = hub.new_events() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// One pass: each bot's feed counted up to its end.
pub async fn count_every_bot(store: &Store) -> Result<(), StoreError> {
    let mut lag_events = 0;
    let mut lag_seconds: f64 = 0.0;
    for bot in store.bots(MAX_BOTS).await? {
        loop {
            let Counted::Page { items, more } = store.count_stats_page(&bot.bot_id).await? else {
                break;
            };
            crate::metrics::stats_counted(items);
            let seconds = seconds_behind(store, &bot.bot_id).await?;
            crate::metrics::stats_lag_seconds(seconds);
            // Without `more` the page reached what was committed when it was read; what
            // came since woke the worker for its next pass.
            if !more {
                break;
            }
        }
        let progress = store.stats_progress(&bot.bot_id).await?;
        lag_events += store
            .events_after(&bot.bot_id, progress.position.as_ref())
            .await?;
        lag_seconds = lag_seconds.max(seconds_behind(store, &bot.bot_id).await?);
    }
    crate::metrics::stats_lag(u64::try_from(lag_events).unwrap_or(0), lag_seconds);
    Ok(())
}

/// How long the first event the stats have not counted has waited (0 when none waits).
async fn seconds_behind(store: &Store, bot_id: &str) -> Result<f64, StoreError> {
    let position = store.stats_progress(bot_id).await?.position;
    let first = store.first_event_after(bot_id, position.as_ref()).await?;
    Ok(first.map_or(0.0, |at| {
        (OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0)
    }))
}

/// Waits, at most `max_lag`, until `bot_id`'s stats count every event committed before
/// the request (not at all when no event came since they last counted everything); then
/// how far they go (`asOf`).
pub async fn wait_until_counted(
    store: &Store,
    hub: &ChangeHub,
    bot_id: &str,
    max_lag: Duration,
) -> Result<Option<OffsetDateTime>, StoreError> {
    let asked_at = OffsetDateTime::now_utc();
    let latest = store.latest_event_at(bot_id).await?;
    // Under steady ingest the worker seldom finds nothing after its page; once it has
    // counted past the feed's visible end at the request, the answer is as of the request.
    let end = store.feed_end(bot_id).await?;
    let deadline = tokio::time::Instant::now() + max_lag;
    loop {
        let progress = store.stats_progress(bot_id).await?;
        let caught_up_at = progress.caught_up_at;
        let counted = match (caught_up_at, latest) {
            (Some(at), Some(latest)) => at >= latest.min(asked_at),
            (_, None) => true,
            (None, Some(_)) => false,
        };
        if counted {
            return Ok(caught_up_at.or(Some(asked_at)));
        }
        if end.is_some() && progress.position >= end {
            return Ok(Some(asked_at));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(caught_up_at);
        }
        hub.count_now();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each group's cells of `query`, by bucket: the stored slots wholly in the range, the
/// facts of the slots cut by its ends, and `handled` from the marks (or, in a first
/// bucket that starts between slots, from the facts).
pub async fn answer(
    store: &Store,
    bot_id: &str,
    query: &StatsQuery,
) -> Result<BTreeMap<Vec<Option<String>>, BTreeMap<usize, Cell>>, StoreError> {
    let mut accumulator = Accumulator::new(query);
    let tallies = query.tally_reading();
    for (level, periods) in &tallies.periods {
        let rows = store
            .stats_slots(
                bot_id,
                *level,
                query.cuboid(),
                query.only_key(),
                periods.clone(),
            )
            .await?;
        for (period, dims, tally) in rows {
            accumulator.add_period(*level, period, &dims, &tally);
        }
    }
    for (start, end) in &tallies.facts {
        for fact in store.stats_facts(bot_id, *start, *end).await? {
            accumulator.add_fact(&fact);
        }
    }
    if let ConversationCounts::Grouped { mask } = query.conversation_counts() {
        let handled = query.handled_reading();
        for (level, periods) in &handled.periods {
            let marks = store
                .stats_handled(bot_id, *level, mask, periods.clone())
                .await?;
            for (mark, count) in marks {
                accumulator.add_handled_mark(&mark, count);
            }
        }
        for (start, end) in &handled.facts {
            for fact in store.stats_facts(bot_id, *start, *end).await? {
                accumulator.add_handled_fact(&fact, mask);
            }
        }
    }
    let mut groups: BTreeMap<Vec<Option<String>>, BTreeMap<usize, Cell>> = BTreeMap::new();
    for ((group, bucket), cell) in accumulator.cells {
        groups.entry(group).or_default().insert(bucket, cell);
    }
    Ok(groups)
}
