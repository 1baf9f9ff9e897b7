//! The HTTP/1 server under the router. `axum::serve` has no timeouts of its own, so a
//! client that opens sockets and never finishes a request would hold them forever; here
//! every connection has bounded memory and time:
//! - at most `max_connections` are open; past that, new ones wait in the listen backlog;
//! - a request head must arrive whole within `header_read_timeout` of the connection
//!   opening or of its previous response, which also ends idle keep-alive connections;
//! - a head is at most [`MAX_HEAD_BYTES`]; a response write that makes no progress for
//!   `write_stall_timeout` (a client that stopped reading) closes the connection.

use crate::config::ServerSettings;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};

/// The largest request head hyper reads: start line and headers. The router refuses a
/// head past [`crate::routes::MAX_HEADER_BYTES`] or `MAX_HEADERS` with a problem+json 431;
/// hyper's own bare 431 only answers heads beyond these.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header fields hyper parses (it allocates room for this many per request).
pub const PARSED_HEADERS: usize = 512;

/// File descriptors kept free of client connections: database connections, the listener,
/// logs and the SQLite files.
const RESERVED_DESCRIPTORS: u64 = 64;

/// How the server bounds its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub write_stall_timeout: Duration,
}

impl Limits {
    pub fn of(settings: &ServerSettings) -> Self {
        Self {
            max_connections: settings.max_connections.max(1),
            header_read_timeout: Duration::from_secs(settings.header_read_timeout_seconds.max(1)),
            write_stall_timeout: Duration::from_secs(settings.write_timeout_seconds.max(1)),
        }
    }

    /// Raises the open-file limit to the hard limit, and lowers `max_connections` to what
    /// the limit can hold beside `database_connections`.
    pub fn fit_descriptor_limit(mut self, database_connections: u32) -> Self {
        let available = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(error) => {
                tracing::warn!(%error, "cannot read or raise the open-file limit");
                return self;
            }
        };
        let reserved = RESERVED_DESCRIPTORS + u64::from(database_connections);
        let fits = usize::try_from(available.saturating_sub(reserved).max(1)).unwrap_or(usize::MAX);
        if fits < self.max_connections {
            tracing::warn!(
                open_file_limit = available,
                configured = self.max_connections,
                max_connections = fits,
                "the open-file limit holds fewer client connections than server.max_connections; \
                 raise the hard limit (ulimit -Hn) to allow more"
            );
            self.max_connections = fits;
        }
        tracing::info!(
            open_file_limit = available,
            max_connections = self.max_connections,
            "connection limits"
        );
        self
    }
}

/// The server: its limits, and a slot for every connection it may hold open.
pub struct Server {
    limits: Limits,
    slots: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
}

impl Server {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            open: Arc::default(),
        }
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets
    /// every connection finish its request in flight, and returns when all have closed.
    pub async fn serve(
        &self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_headers(PARSED_HEADERS)
            .max_header_size(MAX_HEAD_BYTES)
            .max_buf_size(MAX_HEAD_BYTES + 8 * 1024);
        let (closing, closing_watch) = watch::channel(false);
        crate::metrics::connection_limit(self.limits.max_connections);

        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                slot = self.slots.clone().acquire_owned() => {
                    slot.expect("the semaphore is never closed")
                }
                () = &mut shutdown => break,
            };
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        pause_after_accept_error(&error).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let connection = serve_connection(
                stream,
                app.clone(),
                http.clone(),
                self.limits,
                closing_watch.clone(),
            );
            let open = self.open.clone();
            tokio::spawn(async move {
                open.fetch_add(1, Ordering::Relaxed);
                crate::metrics::connection_opened();
                connection.await;
                crate::metrics::connection_closed();
                open.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
            });
        }
        drop(listener);
        let _ = closing.send(true);
        // Every open connection holds a slot: having them all back means all have closed.
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    http: http1::Builder,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) {
    // hyper allocates its buffers as soon as it starts reading, so until a connection's
    // first byte arrives it holds only its socket (thousands of idle ones stay cheap).
    let mut first_byte = [0; 1];
    tokio::select! {
        arrived = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first_byte)) => {
            if !matches!(arrived, Ok(Ok(1))) {
                return;
            }
        }
        _ = closing.changed() => return,
    }
    // Responses are written whole; waiting for more to send would only add latency.
    let _ = stream.set_nodelay(true);
    // The peer's address, for the audit log's `clientAddress`.
    let peer = stream.peer_addr().ok();
    let app = tower::ServiceExt::map_request(app, move |mut request: axum::extract::Request<_>| {
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        request
    });
    let io = TokioIo::new(StallLimit::new(stream, limits.write_stall_timeout));
    let connection = http.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return log_end(result),
        _ = closing.changed() => {}
    }
    // Finishes the request in flight, then closes; closes an idle connection at once.
    connection.as_mut().graceful_shutdown();
    log_end(connection.await);
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Accepting fails when the process is out of file descriptors or memory: a pause gives
/// connections time to close instead of spinning. Errors of one connection (reset
/// before it was accepted) need none.
async fn pause_after_accept_error(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection; pausing");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A socket whose writes fail with `TimedOut` once they have made no progress for
/// `limit`: a client that stops reading its response cannot pin the response's memory.
struct StallLimit<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write is pending, reset by every byte written.
    deadline: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<S> StallLimit<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: None,
            stalled: false,
        }
    }

    /// Called when the socket took nothing: pending until the stall lasts `limit`.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.stalled {
            self.stalled = true;
            deadline.as_mut().reset(Instant::now() + limit);
        }
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of its response for the write timeout",
        )))
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.poll_stall(cx),
            ready => {
                self.stalled = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_limit() {
        // A pipe whose reader never reads: writes fill its buffer, then pend forever.
        let (writer, _reader) = tokio::io::duplex(64);
        let mut socket = StallLimit::new(writer, Duration::from_secs(5));

        let started = Instant::now();
        let error = socket
            .write_all(&[0; 1024])
            .await
            .expect_err("the write stalls");

        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (writer, mut reader) = tokio::io::duplex(64);
        let mut socket = StallLimit::new(writer, Duration::from_secs(5));
        // Reads 64 bytes every 4 s: slower than the writer, but never stalled for 5 s.
        let draining = tokio::spawn(async move {
            let mut buffer = [0; 64];
            let mut total = 0;
            while total < 1024 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += tokio::io::AsyncReadExt::read(&mut reader, &mut buffer)
                    .await
                    .unwrap();
            }
        });

        socket
            .write_all(&[0; 1024])
            .await
            .expect("every write progresses");
        draining.await.unwrap();
    }
}
