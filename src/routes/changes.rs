//! The change feed and its live stream (SPEC 8): a bot's stored events in commit order,
//! paged by opaque positions, or pushed as Server-Sent Events as they are stored.

use super::AppState;
use super::conversations::{EVENTS_PAGE_BYTES, StoredEvent, streamed_list};
use super::extract::authorize_read;
use super::params::{
    BOT_ID, PathParams, QueryParams, decode_cursor, encode_cursor, problem, reject,
};
use super::paths;
use crate::auth::Caller;
use crate::changes::{StreamHandle, Woken};
use crate::domain::timestamp;
use crate::domain::{FieldError, Status};
use crate::error::{ApiError, Problem, ReadRefusals};
use crate::store::{Change, ChangeKind, ChangesPage, FeedPosition, Store};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

/// `limit` of the feed: (default, max).
pub(crate) const CHANGES_LIMIT: (i64, i64) = (100, 1000);
/// A live stream reads the feed this many items at a time…
const STREAM_PAGE: i64 = 100;
/// …and this many payload bytes (the first item always comes).
const STREAM_PAGE_BYTES: i64 = 1024 * 1024;
/// Items a stream holds for a reader that has not taken them yet. With a page in hand this
/// bounds what a slow reader costs: a few pages of events at most.
const STREAM_BUFFER: usize = 16;
/// SPEC 8: a comment line this often, so that proxies and readers know the stream lives.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// How long a page of the feed waits for events held back by a running transaction.
const HELD_BACK_WAIT: Duration = Duration::from_millis(500);
/// How soon a stream looks again when events are held back.
const HELD_BACK_RETRY: Duration = Duration::from_millis(20);

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// An item of the feed (SPEC 8): a stored event, or a conversation's erasure.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ChangeItem {
    Event(EventChange),
    Erased(ErasureChange),
}

/// A stored event in the feed: the 4.2 event with its conversation and position.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventChange {
    /// Always `event`.
    #[schema(example = "event")]
    kind: &'static str,
    /// Opaque: pass it as `after`, or as `Last-Event-ID`, to continue after this item.
    position: String,
    conversation_id: String,
    /// The conversation's status after the event; `null` only for an event stored before
    /// version 0.3 that was not its conversation's last.
    conversation_status: Option<Status>,
    #[serde(flatten)]
    event: StoredEvent,
}

/// A conversation was erased (SPEC 10): delete every copy of it. An event of the same
/// conversation id after it starts a new conversation (from `seq` 1).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureChange {
    /// Always `conversation.erased`.
    #[schema(example = "conversation.erased")]
    kind: &'static str,
    /// Opaque, as an event's.
    position: String,
    conversation_id: String,
    #[serde(serialize_with = "timestamp::serialize")]
    erased_at: OffsetDateTime,
}

impl ChangeItem {
    fn position(&self) -> &str {
        match self {
            Self::Event(change) => &change.position,
            Self::Erased(change) => &change.position,
        }
    }
}

impl From<Change> for ChangeItem {
    fn from(change: Change) -> Self {
        let position = encode_cursor(&change.position);
        let conversation_id = change.position.conversation_id;
        match change.kind {
            ChangeKind::Event {
                conversation_status,
                event,
            } => Self::Event(EventChange {
                kind: "event",
                position,
                conversation_id,
                conversation_status,
                event: event.into(),
            }),
            ChangeKind::Erased { at } => Self::Erased(ErasureChange {
                kind: "conversation.erased",
                position,
                conversation_id,
                erased_at: at,
            }),
        }
    }
}

/// A page of the feed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePage {
    /// In commit order; each conversation's in `seq` order.
    items: Vec<ChangeItem>,
    /// Pass as `after` for the next page: the last item's position, else the `after` you
    /// sent (`null` when you sent none and there is nothing yet). Always pass the latest.
    next_after: Option<String>,
}

impl IntoResponse for ChangePage {
    fn into_response(self) -> Response {
        let next_after = serde_json::to_string(&self.next_after).unwrap_or_default();
        streamed_list(
            "{\"items\":[",
            self.items,
            format!("],\"nextAfter\":{next_after}}}"),
        )
    }
}

/// Query parameters of the feed (parsed by [`QueryParams`]; this describes them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct ChangesQuery {
    /// The `nextAfter` of the previous page, or an item's `position`; omitted or empty:
    /// from the oldest kept event; `now`: from the feed's end as it is visible now — what
    /// becomes visible from then on, including an event committed a moment ago that a
    /// running transaction still holds back (the page's `nextAfter` is then that end).
    pub after: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<i64>,
}

/// Query parameters of the live stream.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, style = Form)]
pub struct StreamQuery {
    /// Where to start, as for the feed; a `Last-Event-ID` header wins over it (that is
    /// what a reconnecting `EventSource` sends).
    pub after: Option<String>,
}

/// The `after` that starts at the feed's end: only what is stored from now on.
const NOW: &str = "now";

/// Where a reader starts.
enum Start {
    /// The oldest kept item: `after` empty or absent.
    Beginning,
    /// Just after a position this API returned.
    After(FeedPosition),
    /// The feed's end as it is now (`after=now`).
    End,
}

impl Start {
    /// As sent in `name`.
    fn parse(text: Option<&str>, name: &str, problems: &mut Vec<FieldError>) -> Self {
        match text.filter(|text| !text.is_empty()) {
            None => Self::Beginning,
            Some(NOW) => Self::End,
            Some(text) => decode_cursor::<FeedPosition>(text).map_or_else(
                || {
                    problems.push(problem(
                        name,
                        "is not a position this API returned, nor `now`",
                    ));
                    Self::Beginning
                },
                Self::After,
            ),
        }
    }

    /// The position to read after; `None` for the beginning.
    async fn resolve(self, store: &Store, bot_id: &str) -> Result<Option<FeedPosition>, ApiError> {
        Ok(match self {
            Self::Beginning => None,
            Self::After(position) => Some(position),
            // An empty feed's end is its beginning, named, so that a reader who keeps it
            // gets everything stored from now on.
            Self::End => Some(
                store
                    .feed_end(bot_id)
                    .await?
                    .unwrap_or_else(FeedPosition::beginning),
            ),
        })
    }
}

#[utoipa::path(
    get,
    path = paths::CHANGES,
    tag = "query",
    operation_id = "listChanges",
    summary = "A bot's stored events in commit order, across its conversations",
    description = "A consumer that always passes the last `nextAfter` it got sees every \
stored event of the bot exactly once, each conversation's in `seq` order, however many \
replicas write at once: an event is listed only once every event that will ever come before \
it is visible, so a transaction that commits late is never skipped. A page also ends early \
at the event whose payload takes it past 4 MiB (the first event always comes).",
    params(("botId" = String, Path, description = BOT_ID), ChangesQuery),
    responses(
        ReadRefusals,
        (status = 200, description = "A page of the feed.", body = ChangePage),
        (status = 400, description = "A query parameter is invalid (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A bot the app may not read.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn changes(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    params: QueryParams,
) -> Result<ChangePage, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let mut problems = Vec::new();
    let limit = params.limit(CHANGES_LIMIT, &mut problems);
    let start = Start::parse(params.get("after"), "after", &mut problems);
    reject(problems)?;

    let after = start.resolve(&state.store, &bot_id).await?;
    let mut page = state
        .store
        .changes(&bot_id, after.as_ref(), limit, EVENTS_PAGE_BYTES)
        .await?;
    // Committed events held back by a transaction still running usually come within
    // milliseconds, as ingest transactions are short: wait a little for them, so that a
    // reader who just stored events finds them.
    let mut pause = Duration::from_millis(5);
    let waited_until = Instant::now() + HELD_BACK_WAIT;
    while page.held_back && !page.more && Instant::now() + pause <= waited_until {
        tokio::time::sleep(pause).await;
        pause *= 2;
        page = state
            .store
            .changes(&bot_id, after.as_ref(), limit, EVENTS_PAGE_BYTES)
            .await?;
    }
    let items: Vec<ChangeItem> = page.changes.into_iter().map(ChangeItem::from).collect();
    let next_after = items
        .last()
        .map(|item| item.position().to_owned())
        .or_else(|| after.as_ref().map(encode_cursor));
    Ok(ChangePage { items, next_after })
}

#[utoipa::path(
    get,
    path = paths::CHANGES_STREAM,
    tag = "query",
    operation_id = "streamChanges",
    summary = "The feed as Server-Sent Events, live",
    description = "`text/event-stream`: each item as `event: change`, `id:` its position and \
`data:` the item (as in the feed). Resumes after `Last-Event-ID` (or `after`); a comment \
heartbeat comes every 15 s. An event stored through any replica arrives within about a \
second of its commit. A reader that falls behind (takes nothing for \
`changes.slow_reader_seconds` while its buffer is full) is disconnected: reconnect with \
`Last-Event-ID` and it resumes where it was. The stream ends when the token expires or the \
service shuts down; reconnect then too.",
    params(
        ("botId" = String, Path, description = BOT_ID),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last item received."),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "The stream.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`after` or `Last-Event-ID` is not a position (every problem in `errors`).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The app lacks the `read` permission.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A bot the app may not read.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable, or `changes.max_streams` streams are open.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security(("token" = []))
)]
pub async fn stream(
    caller: Caller,
    State(state): State<AppState>,
    PathParams(bot_id): PathParams<String>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    authorize_read(&caller, &bot_id)?;
    let mut problems = Vec::new();
    let start = match headers.get(LAST_EVENT_ID) {
        Some(value) if !value.is_empty() => {
            // Not visible ASCII cannot be a position either.
            let text = value.to_str().unwrap_or("\0");
            Start::parse(Some(text), "Last-Event-ID", &mut problems)
        }
        _ => Start::parse(params.get("after"), "after", &mut problems),
    };
    reject(problems)?;
    let after = start.resolve(&state.store, &bot_id).await?;

    // Read before answering, so that a database that is down answers 503, not a silent stream.
    let first = state
        .store
        .changes(&bot_id, after.as_ref(), STREAM_PAGE, STREAM_PAGE_BYTES)
        .await?;
    let handle = state
        .changes
        .open_stream(&bot_id)
        .ok_or(ApiError::Unavailable)?;
    // The position it starts after, as the first `id:` (with no data, so no item): a reader
    // that reconnects before any item came resumes there, not at a later `now`.
    let start = encode_cursor(after.as_ref().unwrap_or(&FeedPosition::beginning()));
    let opened = Event::default().comment("connected").id(start);
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    let producer = Producer {
        store: state.store.clone(),
        bot_id,
        after,
        sender,
        handle,
        slow_reader: state.changes.slow_reader_limit(),
        token_expires: caller.remaining().map(|left| Instant::now() + left),
    };
    tokio::spawn(producer.run(first));

    let opened = futures_util::stream::once(async { Ok(opened) });
    let items = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok::<_, Infallible>(event), receiver))
    });
    let mut response = Sse::new(opened.chain(items))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response();
    // A buffering proxy (nginx) would hold the events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Reads the feed for one stream and hands the items to its reader, a bounded buffer at a
/// time; ends when the reader goes, falls behind, the token expires or the service stops.
struct Producer {
    store: Store,
    bot_id: String,
    after: Option<FeedPosition>,
    sender: mpsc::Sender<Event>,
    handle: StreamHandle,
    slow_reader: Duration,
    token_expires: Option<Instant>,
}

impl Producer {
    async fn run(mut self, mut page: ChangesPage) {
        let mut failing = false;
        loop {
            let (more, held_back) = (page.more, page.held_back);
            for change in page.changes {
                let position = change.position.clone();
                match self
                    .sender
                    .send_timeout(sse_event(change), self.slow_reader)
                    .await
                {
                    Ok(()) => {
                        crate::metrics::change_sent();
                        self.after = Some(position);
                    }
                    Err(SendTimeoutError::Timeout(_)) => {
                        crate::metrics::change_reader_cut_off();
                        tracing::info!(
                            "a change stream's reader fell behind; closed (it resumes on reconnect)"
                        );
                        return;
                    }
                    Err(SendTimeoutError::Closed(_)) => return,
                }
            }
            if !more {
                let expiry = async {
                    match self.token_expires {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let wait = if held_back {
                    HELD_BACK_RETRY
                } else {
                    self.handle.poll_interval()
                };
                tokio::select! {
                    woken = self.handle.wait(wait) => if woken == Woken::Stop { return },
                    () = self.sender.closed() => return,
                    () = expiry => return,
                }
            }
            page = match self
                .store
                .changes(
                    &self.bot_id,
                    self.after.as_ref(),
                    STREAM_PAGE,
                    STREAM_PAGE_BYTES,
                )
                .await
            {
                Ok(page) => {
                    failing = false;
                    page
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(error = %error, "a change stream cannot read the feed; retrying");
                    }
                    failing = true;
                    ChangesPage {
                        changes: Vec::new(),
                        more: false,
                        held_back: false,
                    }
                }
            };
        }
    }
}

fn sse_event(change: Change) -> Event {
    let item = ChangeItem::from(change);
    let data = serde_json::to_string(&item).unwrap_or_default();
    Event::default()
        .id(item.position())
        .event("change")
        .data(data)
}
