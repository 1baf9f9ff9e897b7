//! The server over real sockets: a client that opens connections and never finishes a
//! request, or never reads its response, is cut off and cannot starve the others; and
//! the errors hyper and the probes give are problem+json like every other.
//!
//! Each test runs its own server with short limits, and waits on what it can observe
//! (the server's count of open connections, a socket reaching end of file), bounded by
//! [`PATIENCE`] so that a failure ends instead of hanging.

use crate::common::*;
use agentassist_hooks::server::{Limits, Server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Far longer than anything here should take; reaching it is a failure, not a wait.
const PATIENCE: Duration = Duration::from_secs(30);

const LIMITS: Limits = Limits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(1),
    write_stall_timeout: Duration::from_secs(1),
};

/// An app over a fresh SQLite store, served on a loopback port.
struct Running {
    address: SocketAddr,
    server: Arc<Server>,
    app: TestApp,
    _backend: Backend,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
}

impl Running {
    async fn start(limits: Limits) -> Self {
        let backend = Backend::sqlite().await;
        let app = backend.app().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = Arc::new(Server::new(limits));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn({
            let (server, router) = (server.clone(), app.router.clone());
            async move {
                server
                    .serve(listener, router, async {
                        let _ = stopped.await;
                    })
                    .await;
            }
        });
        Self {
            address,
            server,
            app,
            _backend: backend,
            stop: Some(stop),
            serving,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }

    /// Waits until the server holds exactly `count` connections.
    async fn wait_for_connections(&self, count: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.server.open_connections() != count {
            assert!(
                Instant::now() < deadline,
                "the server holds {} connections, not {count}",
                self.server.open_connections()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.serving)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

/// Reads until the server closes the connection; what it sent, and whether it ended by
/// a reset rather than an orderly close.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("the server closes the connection");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], status);
    body
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout() {
    let running = Running::start(LIMITS).await;
    let mut idle = running.connect().await;
    running.wait_for_connections(1).await;
    let opened = Instant::now();

    let received = read_to_close(&mut idle).await;

    assert!(opened.elapsed() >= Duration::from_millis(900));
    assert!(
        received.is_empty() || status_of(&received) == Some(408),
        "nothing, or a 408: {}",
        String::from_utf8_lossy(&received)
    );
    running.wait_for_connections(0).await;
    running.stop().await;
}

#[tokio::test]
async fn a_head_trickled_a_line_at_a_time_is_cut_off_at_the_header_timeout() {
    let running = Running::start(LIMITS).await;
    let mut slow = running.connect().await;
    slow.write_all(b"POST /agentassist/api/v1/hooks/st-1234 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    // A header line every 100 ms, never the blank line that ends the head.
    let trickle = async {
        for line in 0.. {
            if slow
                .write_all(format!("x-trickle-{line}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > PATIENCE {
                panic!("still connected after {PATIENCE:?}");
            }
            if running.server.open_connections() == 0 {
                break;
            }
        }
    };
    trickle.await;

    assert!(started.elapsed() >= Duration::from_millis(900));
    running.wait_for_connections(0).await;
    running.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let running = Running::start(LIMITS).await;
    let mut client = running.connect().await;
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0; 4096];
    let read = client.read(&mut response).await.unwrap();
    assert_eq!(status_of(&response[..read]), Some(200));
    let answered = Instant::now();

    let after = read_to_close(&mut client).await;

    assert!(after.is_empty() || status_of(&after) == Some(408));
    assert!(answered.elapsed() >= Duration::from_millis(900));
    running.stop().await;
}

#[tokio::test]
async fn past_max_connections_a_new_client_waits_for_a_slot_instead_of_failing() {
    let running = Running::start(Limits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(60),
        ..LIMITS
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(running.connect().await);
    }
    running.wait_for_connections(4).await;
    let client = reqwest::Client::new();

    let waiting = tokio::spawn({
        let url = running.url("/healthz");
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .map(|response| response.status())
        }
    });
    // The fifth connection is in the listen backlog: not refused, not answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered past the connection limit");
    drop(idle.pop());

    let status = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("answered once a slot is free")
        .unwrap()
        .expect("a response");
    assert_eq!(status, 200);
    drop(idle);
    running.stop().await;
}

#[tokio::test]
async fn a_response_the_client_stops_reading_is_abandoned_at_the_write_timeout() {
    let running = Running::start(LIMITS).await;
    // Twelve events of 200 KiB each, one per request (extra fields are kept): pages of
    // 2.4 MB, of which the kernel's buffers hold only a few.
    let padding = "p".repeat(200 * 1024);
    for index in 0..12 {
        let mut event = transfer("WARM", "entry", &format!("agent-{index}"));
        event["padding"] = json!(padding);
        let response = running
            .app
            .post_events(BOT, &batch("c-big", vec![event]))
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    // A client that asks for every page at once and reads nothing: a small receive
    // window, so the answers stay in the server's send buffer.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(running.address).await.unwrap();
    let token = read_token();
    let mut requests = String::new();
    for _ in 0..40 {
        requests.push_str(&format!(
            "GET /api/v1/bots/{BOT}/conversations/c-big/events?limit=1000 HTTP/1.1\r\n\
             Host: x\r\ntoken: {token}\r\n\r\n"
        ));
    }
    reader.write_all(requests.as_bytes()).await.unwrap();
    running.wait_for_connections(1).await;

    // The server gives up on the stalled writes and closes the connection.
    running.wait_for_connections(0).await;

    let received = read_to_close(&mut reader).await;
    let answers = String::from_utf8_lossy(&received)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answers < 40,
        "only the answers the buffers held were sent, not all 40 ({answers})"
    );
    running.stop().await;
}

#[tokio::test]
async fn more_than_100_headers_get_a_problem_json_431_over_http() {
    let running = Running::start(LIMITS).await;
    let client = reqwest::Client::new();
    let mut request = client
        .post(running.url(&format!("/agentassist/api/v1/hooks/{BOT}")))
        .header("content-type", "application/json")
        .header("token", ingest_token());
    for index in 0..120 {
        request = request.header(format!("x-extra-{index}"), "value");
    }

    let body = problem(request.send().await.unwrap(), 431).await;

    assert_eq!(body["type"], "/problems/headers-too-large");
    running.stop().await;
}

#[tokio::test]
async fn a_40_kib_header_gets_a_problem_json_431_over_http() {
    let running = Running::start(LIMITS).await;
    let response = reqwest::Client::new()
        .get(running.url("/healthz"))
        .header("x-huge", "h".repeat(40 * 1024))
        .send()
        .await
        .unwrap();

    problem(response, 431).await;
    running.stop().await;
}

#[tokio::test]
async fn wrong_methods_on_the_probes_get_a_problem_json_405_over_http() {
    let running = Running::start(LIMITS).await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = client.post(running.url(path)).send().await.unwrap();

        let body = problem(response, 405).await;

        assert_eq!(body["type"], "/problems/method-not-allowed", "{path}");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_token_with_a_crit_header_is_refused_with_401_over_http() {
    let running = Running::start(LIMITS).await;
    let token = ingest_token();
    let (_, rest) = token.split_once('.').unwrap();
    let (claims, _) = rest.split_once('.').unwrap();
    let header = base64_url(r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#);
    let signed = format!("{header}.{claims}");
    let token = format!("{signed}.{}", hs256_signature(&signed, INGEST_SECRET));
    let body = batch("c-crit", vec![transfer("NA", "entry", "a1")]);

    let response = reqwest::Client::new()
        .post(running.url(&format!("/agentassist/api/v1/hooks/{BOT}")))
        .header("content-type", "application/json")
        .header("token", token)
        .body(body.to_string())
        .send()
        .await
        .unwrap();

    problem(response, 401).await;
    assert_eq!(running.app.event_count().await, 0);
    running.stop().await;
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn hs256_signature(message: &str, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap()
}
