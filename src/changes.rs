//! Wake-ups for the live change streams (SPEC 8): which bots have new events, here and, by
//! PostgreSQL notifications, on the other replicas. A wake-up only says when to read the
//! feed again; the feed query is the truth, so a lost wake-up costs latency (a stream also
//! looks every `changes.poll_interval_ms`), never an event.

use crate::config::ChangesSettings;
use crate::store::Store;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The streams' wake-ups, the bots to announce to other replicas, and the count of open
/// streams. One per process, shared by the routes and the store's relay.
pub struct ChangeHub {
    /// A wake-up channel per bot that has an open stream.
    bots: Mutex<HashMap<String, watch::Sender<()>>>,
    /// Bots with new events not yet announced to the other replicas; kept only while a
    /// relay takes them.
    outbox: Mutex<BTreeSet<String>>,
    relayed: AtomicBool,
    outbox_filled: Notify,
    stopping: watch::Sender<bool>,
    open: AtomicUsize,
    /// Wakes the stats worker: events were committed, here or elsewhere.
    counting: Notify,
    /// Counts those wake-ups, for any number of other followers (the webhooks').
    commits: watch::Sender<u64>,
    settings: ChangesSettings,
}

impl ChangeHub {
    pub fn new(settings: &ChangesSettings) -> Self {
        Self {
            bots: Mutex::default(),
            outbox: Mutex::default(),
            relayed: AtomicBool::new(false),
            outbox_filled: Notify::new(),
            stopping: watch::Sender::new(false),
            open: AtomicUsize::new(0),
            counting: Notify::new(),
            commits: watch::Sender::new(0),
            settings: settings.clone(),
        }
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(1))
    }

    pub fn slow_reader_limit(&self) -> Duration {
        Duration::from_secs(self.settings.slow_reader_seconds.max(1))
    }

    /// Events of `bot_id` were committed here: wakes this replica's streams now, and the
    /// other replicas' once the relay announces it.
    pub fn committed(&self, bot_id: &str) {
        self.wake(bot_id);
        if !self.relayed.load(Ordering::Acquire) {
            return;
        }
        let mut outbox = self
            .outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if outbox.insert(bot_id.to_owned()) {
            self.outbox_filled.notify_one();
        }
    }

    /// From now on, keeps the bots with new events for [`ChangeHub::take_outbox`].
    pub fn start_relay(&self) {
        self.relayed.store(true, Ordering::Release);
    }

    /// The bots to announce, once there are any: each once, however many commits.
    pub async fn take_outbox(&self) -> Vec<String> {
        loop {
            {
                let mut outbox = self
                    .outbox
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if !outbox.is_empty() {
                    return std::mem::take(&mut *outbox).into_iter().collect();
                }
            }
            self.outbox_filled.notified().await;
        }
    }

    /// Waits until events are committed (here, or announced by another replica), or
    /// someone asks for them to be counted now.
    pub async fn new_events(&self) {
        self.counting.notified().await;
    }

    /// Asks the stats worker to look for new events now.
    pub fn count_now(&self) {
        self.counting.notify_one();
    }

    /// A receiver that changes whenever events are committed, here or elsewhere.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Wakes the streams of `bot_id` on this replica.
    pub fn wake(&self, bot_id: &str) {
        self.counting.notify_one();
        self.commits
            .send_modify(|count| *count = count.wrapping_add(1));
        let mut bots = self
            .bots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = bots.get(bot_id)
            && sender.send(()).is_err()
        {
            // Its last stream ended.
            bots.remove(bot_id);
        }
    }

    /// Wakes every stream on this replica (wake-ups may have been lost).
    pub fn wake_all(&self) {
        self.counting.notify_one();
        let mut bots = self
            .bots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bots.retain(|_, sender| sender.send(()).is_ok());
    }

    /// Opens a stream of `bot_id`, unless `changes.max_streams` are open.
    pub fn open_stream(self: &Arc<Self>, bot_id: &str) -> Option<StreamHandle> {
        let opened = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.settings.max_streams).then_some(open + 1)
            })
            .is_ok();
        if !opened {
            crate::metrics::change_stream_refused();
            return None;
        }
        crate::metrics::change_stream_opened();
        let mut bots = self
            .bots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let woken = bots
            .entry(bot_id.to_owned())
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe();
        Some(StreamHandle {
            hub: Arc::clone(self),
            woken,
            stopping: self.stopping.subscribe(),
        })
    }

    /// Ends every open stream (at shutdown, so that it does not wait for them).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

/// An open stream's place in the hub: its wake-ups, and its share of `max_streams`.
pub struct StreamHandle {
    hub: Arc<ChangeHub>,
    woken: watch::Receiver<()>,
    stopping: watch::Receiver<bool>,
}

/// Why a stream stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// New events may be there: a wake-up, or the poll interval passed.
    Look,
    /// The service is shutting down.
    Stop,
}

impl StreamHandle {
    /// `changes.poll_interval_ms`.
    pub fn poll_interval(&self) -> Duration {
        self.hub.poll_interval()
    }

    /// Waits for a wake-up of its bot, or for `at_most`, whichever comes first.
    pub async fn wait(&mut self, at_most: Duration) -> Woken {
        if *self.stopping.borrow() {
            return Woken::Stop;
        }
        tokio::select! {
            _ = self.woken.changed() => Woken::Look,
            () = tokio::time::sleep(at_most) => Woken::Look,
            _ = self.stopping.changed() => Woken::Stop,
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::change_stream_closed();
    }
}

/// The channel on which replicas announce the bots they stored events for.
const CHANGES_CHANNEL: &str = "agentassist_hooks_changes";
/// A notification's payload must stay under 8000 bytes; a longer bot id (or one with a
/// character PostgreSQL text cannot hold) is announced as `""`, which wakes every stream.
const MAX_ANNOUNCED_BOT_ID: usize = 4000;

/// Announces to the other replicas which bots this one stored events for, and wakes this
/// replica's streams (and stats worker) when another announces; runs until aborted. The
/// notifications are sent after the appends committed, from their own statement, so that
/// no append waits on PostgreSQL's notification queue lock; the commits of
/// [`ANNOUNCE_EVERY`] are announced at once. SQLite has no other replicas, so it returns
/// at once.
pub async fn relay(store: &Store, hub: &ChangeHub) {
    let Some(pool) = store.postgres_pool() else {
        return;
    };
    hub.start_relay();
    tokio::join!(announce(pool, hub), listen(pool, hub));
}

/// Announcements go out at most this often: each is a transaction of its own (one commit,
/// a lock on the notification queue), and a wake-up a few milliseconds later costs the
/// streams nothing, while one per append would double the database's commits.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

async fn announce(pool: &PgPool, hub: &ChangeHub) {
    loop {
        tokio::time::sleep(ANNOUNCE_EVERY).await;
        let bots = hub.take_outbox().await;
        let payloads: Vec<&str> = bots
            .iter()
            .map(|bot| {
                if bot.len() <= MAX_ANNOUNCED_BOT_ID && !bot.contains('\0') {
                    bot.as_str()
                } else {
                    ""
                }
            })
            .collect();
        let sent = sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
            .bind(CHANGES_CHANNEL)
            .bind(payloads)
            .execute(pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "could not announce new events to the other replicas; \
                their streams find them at their next poll");
        }
    }
}

/// Wakes the streams of each bot another replica announces; every stream whenever
/// announcements may have been missed (connecting, reconnecting).
async fn listen(pool: &PgPool, hub: &ChangeHub) {
    loop {
        if let Err(error) = listen_until_error(pool, hub).await {
            tracing::warn!(%error, "not listening for other replicas' events; retrying in 1 s");
        }
        hub.wake_all();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_until_error(pool: &PgPool, hub: &ChangeHub) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    hub.wake_all();
    loop {
        match listener.try_recv().await? {
            Some(notification) if !notification.payload().is_empty() => {
                hub.wake(notification.payload());
            }
            // An announcement for every bot, or a lost connection, now re-established.
            _ => hub.wake_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(max_streams: usize) -> Arc<ChangeHub> {
        Arc::new(ChangeHub::new(&ChangesSettings {
            max_streams,
            poll_interval_ms: 3_600_000,
            slow_reader_seconds: 10,
        }))
    }

    #[tokio::test]
    async fn a_commit_wakes_the_streams_of_its_bot_only() {
        let hub = hub(10);
        let mut mine = hub.open_stream("bot-a").unwrap();
        let mut other = hub.open_stream("bot-b").unwrap();

        hub.committed("bot-a");

        assert_eq!(mine.wait(Duration::from_secs(3600)).await, Woken::Look);
        assert!(!other.woken.has_changed().unwrap());
        hub.stop();
        assert_eq!(other.wait(Duration::from_secs(3600)).await, Woken::Stop);
    }

    #[tokio::test]
    async fn commits_are_announced_once_per_bot_however_many_once_a_relay_runs() {
        let hub = hub(10);
        hub.committed("before-the-relay");
        hub.start_relay();
        for bot in ["b", "a", "b", "b"] {
            hub.committed(bot);
        }

        assert_eq!(hub.take_outbox().await, ["a", "b"]);
        hub.committed("c");
        assert_eq!(hub.take_outbox().await, ["c"]);
    }

    #[test]
    fn streams_beyond_the_limit_are_refused_until_one_ends() {
        let hub = hub(2);
        let first = hub.open_stream("bot").unwrap();
        let _second = hub.open_stream("bot").unwrap();

        assert!(hub.open_stream("bot").is_none());
        drop(first);
        assert!(hub.open_stream("bot").is_some());
    }
}
