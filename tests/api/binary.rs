//! The real binary over real HTTP: serve, log safely, shut down gracefully on SIGTERM.

use crate::common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_agentassist-hooks");

async fn wait_until_healthy(client: &reqwest::Client, base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the service exited early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the service did not become ready");
}

#[sqlx::test(migrations = false)]
async fn the_binary_serves_logs_safely_and_stops_on_sigterm(pool: PgPool) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config_dir = std::env::temp_dir().join(format!("hooks-binary-{port}"));
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("apps.toml");
    std::fs::write(
        &config,
        format!(
            "[[apps]]\napp_id = \"{INGEST_APP}\"\nsecret_env = \"KORE_CLIENT_SECRET\"\nbots = [\"*\"]\npermissions = [\"ingest\", \"read\"]\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .env("DATABASE_URL", test_database_url(&pool))
        .env("KORE_CLIENT_SECRET", INGEST_SECRET)
        .env("HOOKS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("HOOKS__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_until_healthy(&client, &base, &mut child).await;

    let token = ingest_token();
    let mut event = transfer("NA", "entry", "agentId1");
    event["transferData"] = json!({ "note": "secret-transfer-data-marker" });
    let response = client
        .post(format!("{base}/agentassist/api/v1/hooks/{BOT}"))
        .header("content-type", "application/json")
        .header("token", &token)
        .header("x-request-id", "binary-test-request")
        .body(batch("c-binary", vec![event]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "binary-test-request");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["STATUS"], "OK");
    let refused = client
        .post(format!("{base}/api/v1/hooks/{BOT}"))
        .header("content-type", "application/json")
        .header("auth", "Bearer not.a.valid-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a graceful stop exits 0");

    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(!logs.contains(&token), "the token never reaches the logs");
    assert!(!logs.contains("not.a.valid-token"));
    assert!(
        !logs.contains(INGEST_SECRET),
        "secrets never reach the logs"
    );
    assert!(
        !logs.contains("secret-transfer-data-marker"),
        "transferData never reaches the logs"
    );
    let request_lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["request_id"] == "binary-test-request")
        .collect();
    assert!(
        !request_lines.is_empty(),
        "JSON log lines carry the request id: {logs}"
    );
    assert!(
        logs.contains("authentication failed"),
        "auth failures are logged with a reason"
    );
    std::fs::remove_dir_all(config_dir).unwrap();
}

#[tokio::test]
async fn an_unreachable_database_is_logged_once_per_request_as_a_warning_never_as_an_error() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config_dir = std::env::temp_dir().join(format!("hooks-binary-down-{port}"));
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("apps.toml");
    std::fs::write(
        &config,
        format!(
            "[[apps]]\napp_id = \"{INGEST_APP}\"\nsecret_env = \"KORE_CLIENT_SECRET\"\nbots = [\"*\"]\npermissions = [\"ingest\"]\n"
        ),
    )
    .unwrap();
    // A port nothing listens on: every connection is refused.
    let nothing_there = free_port();
    let mut child = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{nothing_there}/none"),
        )
        .env("KORE_CLIENT_SECRET", INGEST_SECRET)
        .env("HOOKS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("HOOKS__DATABASE__MIGRATE_ON_START", "false")
        .env("HOOKS__DATABASE__ACQUIRE_TIMEOUT_SECONDS", "1")
        .env("HOOKS__LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body = batch("c-down", vec![transfer("NA", "entry", "a1")]).to_string();
    for request in 0..3 {
        let response = client
            .post(format!("{base}/agentassist/api/v1/hooks/{BOT}"))
            .header("content-type", "application/json")
            .header("token", ingest_token())
            .header("x-request-id", format!("down-{request}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    let errors: Vec<&Value> = lines
        .iter()
        .filter(|line| line["level"] == "ERROR")
        .collect();
    assert!(errors.is_empty(), "no ERROR lines for a 503: {errors:?}");
    for request in 0..3 {
        let id = format!("down-{request}");
        let of_request: Vec<&Value> = lines
            .iter()
            .filter(|line| line["request_id"] == id.as_str())
            .collect();
        let warnings = of_request
            .iter()
            .filter(|line| line["level"] == "WARN")
            .count();
        assert_eq!(
            warnings, 1,
            "{id}: one warning with the cause: {of_request:?}"
        );
    }
    std::fs::remove_dir_all(config_dir).unwrap();
}
