//! Delivering an endpoint's feed items (SPEC 12). One replica at a time holds an endpoint
//! (a lease in the database, renewed every few seconds, taken over once it lapses). It
//! reads a page of a subscribed bot's feed after the endpoint's position, sends each
//! conversation's items in order (the next only after the previous got a 2xx), several
//! conversations at once, and moves the position past the page once all of it is
//! delivered. A crash anywhere sends the page again: at least once, never skipped.

use super::Endpoint;
use super::retry::{next_wait, retry_after};
use super::signature::sign;
use crate::changes::ChangeHub;
use crate::routes::changes::ChangeItem;
use crate::store::{Change, ChangeKind, FailedAttempt, FeedPosition, Store, StoreError};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// How long a lease lasts unrenewed: another replica takes the endpoint after this.
const LEASE: Duration = Duration::from_secs(20);
/// The holder stops this long before its lease would end unrenewed (clocks of replicas
/// agree to well within it, as NTP keeps them).
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often the holder renews its lease and looks for `enable` or `replay` (SPEC 12:
/// within 5 s).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Items of a bot's feed delivered between two position writes…
const PAGE: i64 = 500;
/// …and at most this much payload.
const PAGE_BYTES: i64 = 4 * 1024 * 1024;
/// How often the lag metrics are read, at most.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// After delivering everything it read, how long an endpoint lets new items gather.
const GATHER: Duration = Duration::from_millis(200);
/// How often a caught-up endpoint looks at the feed without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// The most bots a `["*"]` endpoint follows.
const MAX_BOTS: i64 = 10_000;
/// The most of a response body read (SPEC 12).
const RESPONSE_LIMIT: usize = 64 * 1024;
/// The most of an error kept in the endpoint's `lastError`.
const ERROR_LIMIT: usize = 300;

/// Delivers `endpoint` whenever this replica holds it, until aborted.
pub async fn deliver(store: Store, hub: Arc<ChangeHub>, endpoint: Arc<Endpoint>, owner: String) {
    let holder = Holder {
        store,
        hub,
        endpoint,
        owner,
    };
    loop {
        if let Err(error) = holder.hold().await {
            tracing::warn!(
                endpoint = %holder.endpoint.name,
                %error,
                "webhook delivery interrupted; trying again"
            );
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A lost lease, an `enable` or a `replay`: whatever is under way stops, and the endpoint
/// is read again.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps `duration`; false when stopped first.
    async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => !self.is_set(),
            () = self.wait() => false,
        }
    }
}

struct Holder {
    store: Store,
    hub: Arc<ChangeHub>,
    endpoint: Arc<Endpoint>,
    owner: String,
}

/// What became of a page.
enum Page {
    /// Nothing after the position.
    Empty,
    Delivered {
        more: bool,
    },
    /// The position moved meanwhile (a replay, or another replica): read it again.
    Moved,
    Stopped,
    Disabled,
}

/// What became of a conversation's items in a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    All,
    Stopped,
    Disabled,
}

impl Holder {
    /// Takes the lease if it is free and delivers while it holds it.
    async fn hold(&self) -> Result<(), StoreError> {
        let name = &self.endpoint.name;
        if self.store.webhook(name).await?.is_none() {
            let start = self.start_position().await?;
            self.store.webhook_register(name, &start).await?;
        }
        if !self.store.webhook_lease(name, &self.owner, LEASE).await? {
            return Ok(());
        }
        let record = self
            .store
            .webhook(name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("webhook {name} is not registered"))?;
        tracing::info!(endpoint = %name, state = %record.state, "delivering webhook");
        let (stop_sender, stop) = watch::channel(false);
        // Dropped with this future however it ends (a panic, an abort at shutdown): a
        // renewer that outlived its delivery would hold the endpoint from every replica.
        let _keeper = AbortOnDrop(tokio::spawn(keep_lease(
            self.store.clone(),
            name.clone(),
            self.owner.clone(),
            record.generation,
            stop_sender,
        )));
        self.run(record, Stop(stop)).await
    }

    /// The feed's end over every subscribed bot (for `start = "now"`), or its beginning.
    async fn start_position(&self) -> Result<FeedPosition, StoreError> {
        let mut start = FeedPosition::beginning();
        if self.endpoint.start_now {
            for bot in self.bots().await? {
                if let Some(end) = self.store.feed_end(&bot).await? {
                    start = start.max(end);
                }
            }
        }
        Ok(start)
    }

    /// The bots to deliver: the configured ones, or every bot with conversations and every
    /// bot the endpoint has delivered before (whose conversations may all be erased since,
    /// their erasures still to send).
    async fn bots(&self) -> Result<Vec<String>, StoreError> {
        if let Some(bots) = &self.endpoint.bots {
            return Ok(bots.clone());
        }
        let mut bots: std::collections::BTreeSet<String> = self
            .store
            .bots(MAX_BOTS)
            .await?
            .into_iter()
            .map(|bot| bot.bot_id)
            .collect();
        if bots.len() as i64 >= MAX_BOTS {
            tracing::warn!(
                endpoint = %self.endpoint.name,
                "webhook follows only the first {MAX_BOTS} bots; list its bots instead of \"*\""
            );
        }
        for position in self.store.webhook_positions(&self.endpoint.name).await? {
            bots.insert(position.bot_id);
        }
        Ok(bots.into_iter().collect())
    }

    async fn run(
        &self,
        record: crate::store::WebhookRecord,
        mut stop: Stop,
    ) -> Result<(), StoreError> {
        crate::metrics::webhook_state(&self.endpoint.name, &record.state);
        if record.state == "disabled" {
            stop.wait().await;
            return Ok(());
        }
        if let Some(next) = record.next_attempt_at {
            let wait = Duration::try_from(next - OffsetDateTime::now_utc()).unwrap_or_default();
            if !stop.sleep(wait).await {
                return Ok(());
            }
        }
        let carried = AtomicU32::new(record.attempts);
        // The stored state says failures: the first 2xx sets it back to active.
        let failing = AtomicBool::new(record.state != "active" || record.attempts > 0);
        let mut commits = self.hub.commits();
        let mut last_lag = tokio::time::Instant::now() - LAG_EVERY;
        loop {
            commits.mark_unchanged();
            let mut delivered = false;
            for bot in self.bots().await? {
                loop {
                    match self
                        .page(&bot, record.generation, (&carried, &failing), &stop)
                        .await?
                    {
                        Page::Empty => break,
                        Page::Delivered { more } => {
                            delivered = true;
                            if !more {
                                break;
                            }
                        }
                        Page::Moved => {}
                        Page::Stopped => return Ok(()),
                        Page::Disabled => {
                            crate::metrics::webhook_state(&self.endpoint.name, "disabled");
                            tracing::warn!(endpoint = %self.endpoint.name, "webhook disabled");
                            stop.wait().await;
                            return Ok(());
                        }
                    }
                }
            }
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = tokio::time::Instant::now();
                self.report_lag().await;
            }
            if delivered {
                // Everything visible went; what commits meanwhile goes in one page rather
                // than one small page per commit (a feed read each: the ingest's cost).
                if !stop.sleep(GATHER).await {
                    return Ok(());
                }
            } else {
                tokio::select! {
                    _ = commits.changed() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = stop.wait() => return Ok(()),
                }
            }
        }
    }

    /// Delivers the page of `bot_id`'s feed after the endpoint's position.
    async fn page(
        &self,
        bot_id: &str,
        generation: i64,
        failures: (&AtomicU32, &AtomicBool),
        stop: &Stop,
    ) -> Result<Page, StoreError> {
        let name = &self.endpoint.name;
        let from = self.store.webhook_position(name, bot_id).await?;
        let page = self
            .store
            .changes(bot_id, Some(&from), PAGE, PAGE_BYTES)
            .await?;
        let Some(last) = page.changes.last() else {
            return Ok(Page::Empty);
        };
        let to = last.position.clone();
        let more = page.more;
        let halted = AtomicBool::new(false);
        let outcomes: Vec<Sent> = futures_util::stream::iter(by_conversation(page.changes))
            .map(|items| {
                let stop = stop.clone();
                let halted = &halted;
                async move {
                    self.conversation(bot_id, items, generation, failures, halted, stop)
                        .await
                }
            })
            .buffer_unordered(self.endpoint.max_in_flight)
            .collect()
            .await;
        if outcomes.contains(&Sent::Disabled) {
            return Ok(Page::Disabled);
        }
        if outcomes.contains(&Sent::Stopped) || stop.is_set() {
            return Ok(Page::Stopped);
        }
        if self.store.webhook_advance(name, bot_id, &from, &to).await? {
            Ok(Page::Delivered { more })
        } else {
            Ok(Page::Moved)
        }
    }

    /// Sends a conversation's items of a page, in order, each until it gets a 2xx.
    async fn conversation(
        &self,
        bot_id: &str,
        items: Vec<Change>,
        generation: i64,
        (carried, failing): (&AtomicU32, &AtomicBool),
        halted: &AtomicBool,
        mut stop: Stop,
    ) -> Sent {
        let endpoint = &self.endpoint;
        for change in items {
            let Some(message) = Message::of(endpoint, bot_id, change) else {
                continue;
            };
            let mut failed = 0;
            loop {
                if stop.is_set() {
                    return Sent::Stopped;
                }
                if halted.load(Ordering::Acquire) {
                    return Sent::Disabled;
                }
                let at = OffsetDateTime::now_utc();
                let sent = tokio::select! {
                    sent = self.send(&message, at) => sent,
                    () = stop.wait() => return Sent::Stopped,
                };
                let failure = match sent {
                    Ok(()) => {
                        crate::metrics::webhook_attempt(&endpoint.name, "delivered");
                        // The count a restart carried over belongs to a failure now past.
                        carried.store(0, Ordering::Release);
                        if failed > 0 || failing.swap(false, Ordering::AcqRel) {
                            self.record(
                                self.store
                                    .webhook_succeeded(&endpoint.name, generation)
                                    .await,
                            );
                            crate::metrics::webhook_state(&endpoint.name, "active");
                        }
                        break;
                    }
                    Err(failure) => failure,
                };
                // A restart resumes the schedule where the endpoint's state says it was.
                failed = failed.max(carried.swap(0, Ordering::AcqRel)) + 1;
                failing.store(true, Ordering::Release);
                crate::metrics::webhook_attempt(&endpoint.name, failure.outcome);
                let wait = if failure.gone {
                    None
                } else {
                    next_wait(
                        &endpoint.retry_schedule,
                        failed,
                        failure.retry_after,
                        fastrand::f64(),
                    )
                };
                tracing::warn!(
                    endpoint = %endpoint.name,
                    webhook_id = %message.id,
                    attempt = failed,
                    error = %failure.error,
                    retry_in = ?wait,
                    "webhook attempt failed"
                );
                let next_attempt_at =
                    wait.and_then(|wait| at.checked_add(time::Duration::try_from(wait).ok()?));
                self.record(
                    self.store
                        .webhook_failed(
                            &endpoint.name,
                            generation,
                            &FailedAttempt {
                                at,
                                attempts: failed,
                                next_attempt_at,
                                error: failure.error.clone(),
                            },
                        )
                        .await,
                );
                let Some(wait) = wait else {
                    halted.store(true, Ordering::Release);
                    return Sent::Disabled;
                };
                crate::metrics::webhook_state(&endpoint.name, "retrying");
                if !stop.sleep(wait).await {
                    return Sent::Stopped;
                }
            }
        }
        Sent::All
    }

    /// One attempt: a 2xx, or why not.
    async fn send(&self, message: &Message, at: OffsetDateTime) -> Result<(), Failure> {
        let timestamp = at.unix_timestamp();
        let signature = sign(
            &self.endpoint.secrets,
            &message.id,
            timestamp,
            &message.body,
        );
        let response = self
            .endpoint
            .client
            .post(self.endpoint.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("x-agentassist-bot-id", &message.bot_id)
            .body(message.body.clone())
            .send()
            .await
            .map_err(Failure::unsent)?;
        let status = response.status();
        let asked_wait = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| retry_after(value, OffsetDateTime::now_utc()));
        drain(response).await;
        if status.is_success() {
            return Ok(());
        }
        let outcome = if status.is_redirection() {
            "redirect"
        } else {
            "refused"
        };
        Err(Failure {
            error: format!("the endpoint answered {status}"),
            outcome,
            gone: status == reqwest::StatusCode::GONE,
            retry_after: asked_wait,
        })
    }

    /// Sets the lag metrics of the endpoint (a failure to read them is only logged).
    async fn report_lag(&self) {
        let bots = self.endpoint.bots.as_deref();
        match self.store.webhook_status(&self.endpoint.name, bots).await {
            Ok(status) => {
                let seconds = status.oldest_waiting.map_or(0.0, |at| {
                    (OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0)
                });
                crate::metrics::webhook_lag(
                    &self.endpoint.name,
                    u64::try_from(status.lag_items).unwrap_or(0),
                    seconds,
                );
            }
            Err(error) => {
                tracing::warn!(endpoint = %self.endpoint.name, %error, "could not read the webhook's lag")
            }
        }
    }

    fn record(&self, outcome: Result<(), StoreError>) {
        if let Err(error) = outcome {
            tracing::warn!(endpoint = %self.endpoint.name, %error, "could not record a webhook attempt");
        }
    }
}

/// Reads at most `RESPONSE_LIMIT` of a response and drops the rest with the connection.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while read < RESPONSE_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

/// Why an attempt failed.
struct Failure {
    error: String,
    /// The metrics label: `refused`, `redirect`, `timeout` or `unreachable`.
    outcome: &'static str,
    /// 410: the endpoint is disabled at once.
    gone: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    fn unsent(error: reqwest::Error) -> Self {
        let outcome = if error.is_timeout() {
            "timeout"
        } else {
            "unreachable"
        };
        // The chain says why (a refused address, a TLS failure); the URL is config, not
        // a secret, but is left out as the endpoint's name says which it is.
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text.truncate(text.floor_char_boundary(ERROR_LIMIT));
        Self {
            error: text,
            outcome,
            gone: false,
            retry_after: None,
        }
    }
}

/// A feed item as the endpoint receives it.
struct Message {
    /// The same on every attempt, and for every replica: the item's bot and position.
    id: String,
    bot_id: String,
    body: Vec<u8>,
}

impl Message {
    /// The message of `change`, unless the endpoint does not want its kind.
    fn of(endpoint: &Endpoint, bot_id: &str, change: Change) -> Option<Self> {
        let (kind, at) = match &change.kind {
            ChangeKind::Event { event, .. } => ("conversation.event", event.received_at),
            ChangeKind::Erased { at } => ("conversation.erased", *at),
        };
        let wanted = match change.kind {
            ChangeKind::Event { .. } => endpoint.events,
            ChangeKind::Erased { .. } => endpoint.erasures,
        };
        if !wanted {
            return None;
        }
        let mut digest = Sha256::new();
        digest.update(bot_id.as_bytes());
        digest.update([0]);
        digest.update(serde_json::to_vec(&change.position).expect("a position is JSON"));
        let hash = digest.finalize();
        let id = format!(
            "msg_{}",
            hash[..16]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        );
        let body = serde_json::json!({
            "type": kind,
            "timestamp": crate::domain::timestamp::format(at),
            "data": ChangeItem::from(change),
        });
        Some(Self {
            id,
            bot_id: bot_id.to_owned(),
            body: serde_json::to_vec(&body).expect("a feed item is JSON"),
        })
    }
}

/// A page's items by conversation, each conversation's in feed order.
fn by_conversation(changes: Vec<Change>) -> Vec<Vec<Change>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<Change>> = Vec::new();
    for change in changes {
        let conversation = change.position.conversation_id.clone();
        let at = *index.entry(conversation).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(change);
    }
    groups
}

/// Renews the lease every few seconds and watches for `enable` and `replay` (a new
/// generation); stops the delivery when either the lease is lost or the generation moved.
async fn keep_lease(
    store: Store,
    name: String,
    owner: String,
    generation: i64,
    stop: watch::Sender<bool>,
) {
    let mut held_until = tokio::time::Instant::now() + LEASE;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let asked = tokio::time::Instant::now();
        // Stop short of the lease's end, however slowly the database answers: another
        // replica may take the endpoint once it is over.
        let Ok((renewed, record)) = tokio::time::timeout_at(held_until - LEASE_MARGIN, async {
            let renewed = store.webhook_lease(&name, &owner, LEASE).await;
            (renewed, store.webhook(&name).await)
        })
        .await
        else {
            tracing::warn!(endpoint = %name, "webhook lease not renewed in time; stopping");
            break;
        };
        match (renewed, record) {
            (Ok(true), Ok(Some(record))) if record.generation == generation => {
                held_until = asked + LEASE;
            }
            (Ok(true), Ok(Some(_))) => {
                tracing::info!(endpoint = %name, "webhook enabled or replayed: reading it again");
                break;
            }
            (Ok(false), _) | (Ok(true), Ok(None)) => {
                tracing::warn!(endpoint = %name, "webhook lease lost to another replica");
                break;
            }
            (Err(error), _) | (_, Err(error)) => {
                // Stop before the lease can lapse: another replica may deliver then.
                if tokio::time::Instant::now() + CHECK_EVERY + LEASE_MARGIN >= held_until {
                    tracing::warn!(endpoint = %name, %error, "webhook lease not renewed; stopping");
                    break;
                }
            }
        }
    }
    stop.send_replace(true);
}
