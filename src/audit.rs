//! Who read which conversation (SPEC 13). A read's record is handed to a writer task and
//! written in batches, never on the read's way; at shutdown the writer takes what is left
//! before the store closes.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method};
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
const MAX_REFUSALS: usize = 8;
/// Longer values from a path or query are cut to this many characters.
const MAX_VALUE_CHARS: usize = 512;

/// Hands records to the writer; `None` inside when the audit log is off.
#[derive(Clone, Default)]
pub struct Recorder {
    queue: Option<mpsc::Sender<AuditRecord>>,
    /// Proxies whose `X-Forwarded-For` names the client (`server.trusted_proxies`).
    proxies: Arc<[Network]>,
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
    let recorder = Recorder {
        queue: Some(queue),
        proxies: Arc::new([]),
    };
    (recorder, Writer { stop, task })
}

impl Recorder {
    /// Taking the client's address from `X-Forwarded-For` when the peer is one of
    /// `proxies` (addresses, or networks as `10.0.0.0/8`); unreadable entries are refused.
    pub fn trusting(mut self, proxies: &[String]) -> anyhow::Result<Self> {
        self.proxies = proxies
            .iter()
            .map(|text| Network::parse(text))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into();
        Ok(self)
    }
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
                crate::metrics::audit_lost(batch.len());
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

/// Middleware for the audited routes: after a `GET` (or `HEAD`, which runs the same
/// query) answered to a known caller, queues its record. A request without a valid token
/// has no one to name and is not recorded.
pub async fn record(State(recorder): State<Recorder>, request: Request, next: Next) -> Response {
    let Some(queue) = recorder.queue.clone() else {
        return next.run(request).await;
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let seen = Seen::default();
    parts.extensions.insert(seen.clone());
    let place = Place::of(&mut parts, &recorder.proxies).await;
    let response = next.run(Request::from_parts(parts, body)).await;

    let Some(caller) = seen.0.get() else {
        return response;
    };
    let record = place.record(caller.actor(), response.status().as_u16());
    let sent = match queue.try_send(record) {
        Err(mpsc::error::TrySendError::Full(record)) => queue.send(record).await.is_ok(),
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Ok(()) => true,
    };
    if !sent {
        // Only after shutdown has written the last records: a request that outlived the
        // shutdown grace.
        crate::metrics::audit_lost(1);
        tracing::error!("an audit record came after the audit log closed; it is lost");
    }
    response
}

/// What a request read, from its route and parameters.
struct Place {
    method: Method,
    route: String,
    bot_id: Option<String>,
    conversation_id: Option<String>,
    participant: Option<String>,
    client_address: Option<String>,
}

impl Place {
    async fn of(parts: &mut axum::http::request::Parts, proxies: &[Network]) -> Self {
        use axum::extract::FromRequestParts;
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or_else(String::new, |route| route.as_str().to_owned());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        let mut place = Self {
            method: parts.method.clone(),
            route,
            bot_id: None,
            conversation_id: None,
            participant: None,
            client_address: peer
                .map(|peer| client_address(peer, &parts.headers, proxies).to_string()),
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
            method: self.method.to_string(),
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

/// The client's address: the peer, unless the peer is a trusted proxy; then the last
/// address in `X-Forwarded-For` that is not one (each proxy appends the one it saw, so the
/// entries before the first untrusted one from the right could be made up by the client).
fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: &[Network]) -> IpAddr {
    let trusted = |address: &IpAddr| proxies.iter().any(|network| network.contains(*address));
    if !trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map_while(|entry| entry.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|address| !trusted(address))
        .unwrap_or(peer)
}

/// An address, or a network as `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u32,
}

impl Network {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let address: IpAddr = address.trim().parse().map_err(|_| {
            anyhow::anyhow!("server.trusted_proxies: {text:?} is not an address or network")
        })?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            bits
        } else {
            prefix
                .parse()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| {
                    anyhow::anyhow!("server.trusted_proxies: {text:?} has no valid prefix")
                })?
        };
        Ok(Self { address, prefix })
    }

    fn contains(self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn networks(texts: &[&str]) -> Vec<Network> {
        texts
            .iter()
            .map(|text| Network::parse(text).unwrap())
            .collect()
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn networks_hold_their_addresses() {
        let [ten, one, six] = [
            Network::parse("10.0.0.0/8").unwrap(),
            Network::parse("192.0.2.7").unwrap(),
            Network::parse("2001:db8::/32").unwrap(),
        ];
        assert!(ten.contains("10.200.3.4".parse().unwrap()));
        assert!(!ten.contains("11.0.0.1".parse().unwrap()));
        assert!(ten.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        assert!(six.contains("2001:db8:1::9".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("not-an-address").is_err());
    }

    #[test]
    fn the_client_is_named_by_trusted_proxies_only() {
        let proxies = networks(&["10.0.0.0/8"]);
        let proxy = "10.0.0.5".parse().unwrap();
        let stranger = "203.0.113.9".parse().unwrap();
        // A client that is no proxy cannot name another address.
        assert_eq!(
            client_address(stranger, &forwarded("198.51.100.1"), &proxies),
            stranger
        );
        // Through the proxy: the last address it did not add itself.
        assert_eq!(
            client_address(
                proxy,
                &forwarded("1.2.3.4, 198.51.100.1, 10.0.0.9"),
                &proxies
            ),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // No header, or nothing readable: the proxy itself.
        assert_eq!(client_address(proxy, &HeaderMap::new(), &proxies), proxy);
        assert_eq!(
            client_address(proxy, &forwarded("garbage"), &proxies),
            proxy
        );
        // With no proxies configured the header is never read.
        assert_eq!(
            client_address(proxy, &forwarded("198.51.100.1"), &[]),
            proxy
        );
    }
}
