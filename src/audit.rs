//! Who read which conversation (SPEC 13). A read's record is handed to a writer task and
//! written in batches, never on the read's way; at shutdown the writer takes what is left
//! before the store closes.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::auth::{Actor, Caller};
use crate::store::{AuditRecord, Store, StoreError};

/// Records waiting for the writer, at most; past it a read waits for room (the log is
/// never let go of), which only happens while the database cannot take writes.
const QUEUE: usize = 100_000;
/// Records written in one go, at most.
const BATCH: usize = 1000;
/// After a failed write, the writer waits this long (doubling to `MAX_PAUSE`) and writes
/// the same records again.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Refusals other than unavailability a batch is tried through.
const MAX_REFUSALS: usize = 3;
/// Longer values from a path or query are cut to this many characters.
const MAX_VALUE_CHARS: usize = 512;

/// Hands records to the writer; `None` inside when the audit log is off.
#[derive(Clone, Default)]
pub struct Recorder {
    queue: Option<mpsc::Sender<AuditRecord>>,
}

/// The writer task; [`Writer::finish`] writes what is queued and ends it.
pub struct Writer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the writer on `store`.
pub fn spawn(store: Store) -> (Recorder, Writer) {
    let (queue, records) = mpsc::channel(QUEUE);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(write(store, records, stopped));
    (Recorder { queue: Some(queue) }, Writer { stop, task })
}

impl Writer {
    /// Writes every record queued so far, waiting at most `limit`.
    pub async fn finish(self, limit: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            task.abort();
            tracing::error!("audit records were still unwritten when shutdown gave up on them");
        }
    }
}

async fn write(
    store: Store,
    mut records: mpsc::Receiver<AuditRecord>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = records.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                write_batch(&store, &mut batch, records.len()).await;
            }
            _ = &mut stopped => break,
        }
    }
    // Closed: no more records come, and those queued are taken to the last.
    records.close();
    while records.recv_many(&mut batch, BATCH).await > 0 {
        write_batch(&store, &mut batch, records.len()).await;
    }
}

/// Writes `batch`, then empties it: again and again while the database is unavailable;
/// a batch the database refuses otherwise (which no record built here should cause) is
/// logged and let go after a few tries, so that it cannot hold up every later read's.
async fn write_batch(store: &Store, batch: &mut Vec<AuditRecord>, pending: usize) {
    let mut pause = FIRST_PAUSE;
    let mut refusals = 0;
    loop {
        match store.audit_append(batch).await {
            Ok(()) => {
                crate::metrics::audit_written(batch.len(), pending);
                break;
            }
            Err(StoreError::Other(error)) if refusals == MAX_REFUSALS => {
                tracing::error!(
                    error = format!("{error:#}"),
                    records = batch.len(),
                    "the database refused audit records; they are lost"
                );
                break;
            }
            Err(error) => {
                refusals += usize::from(matches!(error, StoreError::Other(_)));
                tracing::warn!(
                    error = %error,
                    records = batch.len(),
                    retry_in = ?pause,
                    "cannot write audit records yet"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
    batch.clear();
}

/// Where the request's caller is left by the token check, for the record after the
/// response.
#[derive(Clone, Default)]
pub struct Seen(Arc<OnceLock<Caller>>);

impl Seen {
    pub fn caller(&self, caller: &Caller) {
        let _ = self.0.set(caller.clone());
    }
}

/// Middleware for the audited routes: after a `GET` answered to a known caller, queues its
/// record. A request without a valid token has no one to name and is not recorded.
pub async fn record(State(recorder): State<Recorder>, request: Request, next: Next) -> Response {
    let Some(queue) = recorder.queue.clone() else {
        return next.run(request).await;
    };
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let seen = Seen::default();
    parts.extensions.insert(seen.clone());
    let place = Place::of(&mut parts).await;
    let response = next.run(Request::from_parts(parts, body)).await;

    let Some(caller) = seen.0.get() else {
        return response;
    };
    let record = place.record(caller.actor(), response.status().as_u16());
    if let Err(mpsc::error::TrySendError::Full(record)) = queue.try_send(record) {
        let _ = queue.send(record).await;
    }
    response
}

/// What a request read, from its route and parameters.
struct Place {
    route: String,
    bot_id: Option<String>,
    conversation_id: Option<String>,
    participant: Option<String>,
    client_address: Option<String>,
}

impl Place {
    async fn of(parts: &mut axum::http::request::Parts) -> Self {
        use axum::extract::FromRequestParts;
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or_else(String::new, |route| route.as_str().to_owned());
        let mut place = Self {
            route,
            bot_id: None,
            conversation_id: None,
            participant: None,
            client_address: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip().to_string()),
        };
        if let Ok(params) = RawPathParams::from_request_parts(parts, &()).await {
            for (name, value) in &params {
                let value = Some(clean(value));
                match name {
                    "botId" => place.bot_id = value,
                    "conversationId" => place.conversation_id = value,
                    "identity" => place.participant = value,
                    _ => {}
                }
            }
        }
        if place.participant.is_none() {
            place.participant = parts.uri.query().and_then(|query| {
                url::form_urlencoded::parse(query.as_bytes())
                    .filter(|(name, _)| name == "participant")
                    .last()
                    .map(|(_, value)| clean(&value))
            });
        }
        place
    }

    fn record(self, actor: &Actor, status: u16) -> AuditRecord {
        let (actor_name, actor_email) = match actor {
            Actor::App { .. } => (None, None),
            Actor::Person { name, email, .. } => (name.clone(), email.clone()),
        };
        AuditRecord {
            at: OffsetDateTime::now_utc(),
            actor: clean(&actor.label()),
            actor_name: actor_name.as_deref().map(clean),
            actor_email: actor_email.as_deref().map(clean),
            method: Method::GET.to_string(),
            route: self.route,
            status,
            bot_id: self.bot_id,
            conversation_id: self.conversation_id,
            participant: self.participant,
            client_address: self.client_address,
        }
    }
}

/// `value` as the store can keep it: no U+0000 (PostgreSQL refuses it in text), and not
/// longer than [`MAX_VALUE_CHARS`].
fn clean(value: &str) -> String {
    value
        .chars()
        .take(MAX_VALUE_CHARS)
        .map(|c| {
            if c == '\0' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}
