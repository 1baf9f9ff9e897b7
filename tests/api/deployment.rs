//! SPEC 14, production deployment, with the built binary: TLS to PostgreSQL (a scratch
//! cluster that takes only TLS, with a CA and certificates this test makes), replicas
//! starting together on a fresh database, start-up before the database is reachable, and
//! traces exported to a real OTLP/HTTP endpoint.

use crate::common::*;
use crate::process::{PATIENCE, Service};
use crate::proxy::{DbProxy, Fault};
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The apps of every service started here.
fn config(extra: &str) -> String {
    format!(
        "{extra}\n[[apps]]\napp_id = \"{INGEST_APP}\"\nsecret_env = \"KORE_CLIENT_SECRET\"\n\
         bots = [\"*\"]\npermissions = [\"ingest\", \"read\"]\n"
    )
}

async fn post_entry(service: &Service, conversation: &str, headers: &[(&str, &str)]) -> u16 {
    let mut event = transfer("NA", "entry", "agent-1");
    event["transferData"] = json!({ "note": "secret-transfer-data-marker" });
    let mut request = reqwest::Client::new()
        .post(format!("{}/agentassist/api/v1/hooks/{BOT}", service.base))
        .header("content-type", "application/json")
        .header("token", ingest_token())
        .body(batch(conversation, vec![event]).to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

// ---- TLS to PostgreSQL ----

/// A PostgreSQL cluster of its own that accepts only TLS connections (`hostssl`), with a
/// server certificate for `localhost` from a CA made here, and another CA that signed
/// nothing of it. Stopped when dropped.
struct TlsCluster {
    directory: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl TlsCluster {
    fn start() -> Self {
        let directory = tempfile::tempdir_in("/tmp").unwrap();
        let dir = directory.path();
        let port = free_port();
        let bin = postgres_bin();
        make_certificates(dir);
        if running_as_root() {
            // PostgreSQL refuses to run as root: the cluster is the postgres user's.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir));
        }
        let data = dir.join("data");
        run(as_postgres(&bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data));
        let settings = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.pem'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\n",
            dir = dir.display()
        );
        append(&data.join("postgresql.conf"), &settings);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        run(as_postgres(&bin.join("pg_ctl"))
            .args(["-w", "-l"])
            .arg(dir.join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        Self {
            directory,
            port,
            bin,
        }
    }

    fn file(&self, name: &str) -> String {
        self.directory.path().join(name).display().to_string()
    }

    fn url(&self, host: &str, parameters: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?{parameters}",
            self.port
        )
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.directory.path().join("data"))
            .arg("stop")
            .output();
    }
}

fn postgres_bin() -> PathBuf {
    let configured = Command::new("pg_config").arg("--bindir").output();
    if let Ok(output) = configured
        && output.status.success()
    {
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if bin.join("initdb").exists() {
            return bin;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries are installed")
        .map(|entry| entry.unwrap().path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("initdb is installed")
}

fn running_as_root() -> bool {
    let output = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// `ca.pem` (which signed `server.pem`, valid for `localhost` only) and `other-ca.pem`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for (name, subject) in [
        ("ca", "/CN=agentassist-hooks test CA"),
        ("other-ca", "/CN=someone else's CA"),
    ] {
        let (key_file, cert_file) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", subject];
        args.extend(key);
        args.extend(["-keyout", &key_file, "-out", &cert_file]);
        openssl(&args);
    }
    let mut request = vec!["req", "-subj", "/CN=localhost", "-out", "server.csr"];
    request.extend(key);
    request.extend(["-keyout", "server.key"]);
    openssl(&request);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost\nbasicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A service over `url` that must become ready and store an event.
async fn serves_over(url: String) {
    let mut service = Service::start(
        &config(""),
        &[
            ("DATABASE_URL", &url),
            ("KORE_CLIENT_SECRET", INGEST_SECRET),
        ],
    );
    service.wait_for("/readyz", 200).await;
    assert_eq!(post_entry(&service, "c-tls", &[]).await, 200, "{url}");
}

/// A service over `url` that must keep trying while answering `/healthz` 200 and
/// `/readyz` and ingest 503 (never 500), then exit 1 naming `cause`.
async fn refuses(url: String, cause: &[&str]) {
    let mut service = Service::start(
        &config("[database]\nconnect_timeout_seconds = 4\n"),
        &[
            ("DATABASE_URL", &url),
            ("KORE_CLIENT_SECRET", INGEST_SECRET),
        ],
    );
    service.wait_for("/healthz", 200).await;
    assert_eq!(service.status("/readyz").await, Some(503), "{url}");
    assert_eq!(post_entry(&service, "c-tls", &[]).await, 503, "{url}");
    let exit = service.exit_within(PATIENCE).await;
    let output = service.output();
    assert_eq!(
        exit.and_then(|exit| exit.code()),
        Some(1),
        "{url}: {output}"
    );
    let lowered = output.to_lowercase();
    for word in cause {
        assert!(
            lowered.contains(word),
            "{url}: the error names {word:?}: {output}"
        );
    }
}

/// A service over `url` that must exit 1 at once, naming `cause`.
async fn fails_at_once(url: String, cause: &str) {
    let mut service = Service::start(
        &config("[database]\nconnect_timeout_seconds = 60\n"),
        &[
            ("DATABASE_URL", &url),
            ("KORE_CLIENT_SECRET", INGEST_SECRET),
        ],
    );
    let exit = service.exit_within(PATIENCE).await;
    let output = service.output();
    assert_eq!(
        exit.and_then(|exit| exit.code()),
        Some(1),
        "{url}: {output}"
    );
    assert!(
        output.contains(cause),
        "{url}: the error names {cause:?}: {output}"
    );
}

#[tokio::test]
async fn tls_to_postgresql_is_required_verified_and_refused_as_configured() {
    let cluster = tokio::task::spawn_blocking(TlsCluster::start)
        .await
        .unwrap();
    let (ca, other_ca) = (cluster.file("ca.pem"), cluster.file("other-ca.pem"));

    tokio::join!(
        // The default (prefer) and require encrypt; the server takes nothing else.
        serves_over(cluster.url("localhost", "")),
        serves_over(cluster.url("localhost", "sslmode=require")),
        serves_over(cluster.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        )),
        // verify-ca checks the chain, not the name.
        serves_over(cluster.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))),
        refuses(
            cluster.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={other_ca}")
            ),
            &["tls", "unknownissuer"],
        ),
        // The certificate is for localhost.
        refuses(
            cluster.url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}")
            ),
            &["tls", "not valid for name"],
        ),
        // A server that requires TLS refuses a client that will not use it.
        fails_at_once(cluster.url("localhost", "sslmode=disable"), "no encryption"),
    );
}

// ---- Replicas and start-up ----

#[sqlx::test(migrations = false)]
async fn four_replicas_started_together_on_a_fresh_database_all_become_ready(pool: PgPool) {
    let url = test_database_url(&pool);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("KORE_CLIENT_SECRET", INGEST_SECRET),
    ];
    let mut replicas: Vec<Service> = (0..4).map(|_| Service::start(&config(""), &env)).collect();

    for replica in &mut replicas {
        replica.wait_for("/readyz", 200).await;
    }
    for (n, replica) in replicas.iter_mut().enumerate() {
        assert!(
            replica.exit_within(Duration::ZERO).await.is_none(),
            "replica {n} is still running: {}",
            replica.output()
        );
        // Taking turns, none failed a try: a migration must not deadlock with replicas
        // waiting for theirs (CREATE INDEX CONCURRENTLY waits for their snapshots).
        assert!(
            !replica.output().contains("database not ready yet"),
            "replica {n} migrated at its first try: {}",
            replica.output()
        );
        assert_eq!(
            post_entry(replica, &format!("c-replica-{n}"), &[]).await,
            200
        );
    }
    let migrations = std::fs::read_dir("migrations/postgres").unwrap().count() as i64;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, migrations, "each migration applied once");
}

#[sqlx::test(migrations = false)]
async fn a_replica_started_before_its_database_is_reachable_becomes_ready_when_it_is(pool: PgPool) {
    let options = pool.connect_options();
    let proxy = DbProxy::start((options.get_host().to_owned(), options.get_port())).await;
    proxy.fail(Fault::Cut);
    let url = proxy.url_for(&pool);
    let mut service = Service::start(
        &config(""),
        &[
            ("DATABASE_URL", &url),
            ("KORE_CLIENT_SECRET", INGEST_SECRET),
        ],
    );

    service.wait_for("/healthz", 200).await;
    assert_eq!(service.status("/readyz").await, Some(503));
    wait_for_output(&service, "database not ready yet", 2).await;
    assert_eq!(post_entry(&service, "c-early", &[]).await, 503);
    proxy.restore();

    service.wait_for("/readyz", 200).await;
    assert_eq!(post_entry(&service, "c-early", &[]).await, 200);
}

#[tokio::test]
async fn sigterm_while_waiting_for_the_database_ends_the_process_promptly() {
    // Nothing listens there: every try fails, for a minute.
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let mut service = Service::start(
        &config(""),
        &[
            ("DATABASE_URL", &url),
            ("KORE_CLIENT_SECRET", INGEST_SECRET),
        ],
    );
    service.wait_for("/healthz", 200).await;
    wait_for_output(&service, "database not ready yet", 1).await;

    let signalled = Instant::now();
    service.terminate();
    let exit = service.exit_within(PATIENCE).await;

    println!("stopped {:?} after SIGTERM", signalled.elapsed());
    assert!(exit.is_some(), "SIGTERM ends the start-up");
    assert!(
        signalled.elapsed() < Duration::from_secs(5) + SCHEDULING_SLACK,
        "within 5 s (SPEC 14), took {:?}",
        signalled.elapsed()
    );
}

/// What a loaded 2-core machine may add to a deadline before a process gets to run.
const SCHEDULING_SLACK: Duration = Duration::from_secs(5);

/// Waits until the service has printed `text` `times` times.
async fn wait_for_output(service: &Service, text: &str, times: usize) {
    let deadline = Instant::now() + PATIENCE;
    while service.output().matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "{text:?} was not printed {times} times: {}",
            service.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- Traces ----

/// An OTLP/HTTP endpoint (`POST /v1/traces`, protobuf) that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    arrived: Arc<Notify>,
}

impl Collector {
    async fn start(&self) -> String {
        let collector = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let spans = request
                    .resource_spans
                    .into_iter()
                    .flat_map(|resource| resource.scope_spans)
                    .flat_map(|scope| scope.spans);
                collector.spans.lock().unwrap().extend(spans);
                collector.arrived.notify_waiters();
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    /// The spans of `trace_id` once `names` have all arrived.
    async fn trace(&self, trace_id: &[u8], names: &[&str]) -> Vec<Span> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect();
            if names
                .iter()
                .all(|name| spans.iter().any(|span| span.name == *name))
            {
                return spans;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                tokio::time::timeout(left, arrived).await.is_ok(),
                "spans {names:?} of the trace did not arrive; got {:?}",
                spans.iter().map(|span| &span.name).collect::<Vec<_>>()
            );
        }
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_request_carrying_a_traceparent_is_traced_to_the_collector_without_secrets(pool: PgPool) {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let url = test_database_url(&pool);
    let mut service = Service::start(
        &config(""),
        &[
            ("DATABASE_URL", &url),
            ("KORE_CLIENT_SECRET", INGEST_SECRET),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // Export every 50 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    service.wait_for("/readyz", 200).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");

    let status = post_entry(&service, "c-traced", &[("traceparent", &traceparent)]).await;
    assert_eq!(status, 200);
    let read = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/bots/{BOT}/conversations/c-traced",
            service.base
        ))
        .header("token", ingest_token())
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let ingest_name = "POST /agentassist/api/v1/hooks/{botId}";
    let read_name = "GET /api/v1/bots/{botId}/conversations/{conversationId}";
    let spans = collector
        .trace(
            &hex(trace_id),
            &[ingest_name, read_name, "authenticate", "append", "query"],
        )
        .await;
    let server = spans.iter().find(|span| span.name == ingest_name).unwrap();
    assert_eq!(
        server.parent_span_id,
        hex(caller_span),
        "continues the caller's span"
    );
    assert_eq!(server.kind, 2, "a server span (SpanKind::Server)");
    assert_eq!(
        attribute(server, "http.route"),
        Some(&AnyValue::StringValue(
            "/agentassist/api/v1/hooks/{botId}".into()
        ))
    );
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(&AnyValue::IntValue(200))
    );
    let append = spans.iter().find(|span| span.name == "append").unwrap();
    assert_eq!(
        append.parent_span_id, server.span_id,
        "append is the request's child"
    );
    assert_eq!(
        attribute(append, "events.count"),
        Some(&AnyValue::IntValue(1))
    );
    assert!(
        matches!(attribute(append, "group.size"), Some(AnyValue::IntValue(size)) if *size >= 1)
    );

    let everything = format!("{spans:?}");
    assert!(!everything.contains(&ingest_token()), "no token in spans");
    assert!(!everything.contains(INGEST_SECRET), "no secret in spans");
    assert!(
        !everything.contains("secret-transfer-data-marker"),
        "no transfer data in spans"
    );

    service.terminate();
    service.exit_within(PATIENCE).await;
    let request_lines: Vec<Value> = service
        .output()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "finished processing request")
        .collect();
    assert!(
        request_lines
            .iter()
            .any(|line| line["trace_id"] == trace_id),
        "the request's log line carries the trace id: {request_lines:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn requests_are_answered_while_the_collector_does_not_answer(pool: PgPool) {
    // A collector that takes connections and never answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let url = test_database_url(&pool);
    let mut service = Service::start(
        &config(""),
        &[
            ("DATABASE_URL", &url),
            ("KORE_CLIENT_SECRET", INGEST_SECRET),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
        ],
    );
    service.wait_for("/readyz", 200).await;

    // More spans than the exporter's queue holds, while its export hangs.
    for request in 0..100 {
        let status = tokio::time::timeout(
            PATIENCE,
            post_entry(&service, &format!("c-untraced-{}", request % 5), &[]),
        )
        .await
        .expect("answered while the collector hangs");
        assert_eq!(status, 200);
    }
    drop(silent);
}
