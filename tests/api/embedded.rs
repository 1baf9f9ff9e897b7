//! The embedded default: SQLite keeps the same `seq` guarantee under concurrency, keeps
//! data across restarts, and the README's first run needs no database server.

use crate::common::*;
use agentassist_hooks::auth::AppRegistry;
use agentassist_hooks::config::{DatabaseSettings, ServerSettings};
use agentassist_hooks::routes::{AppState, router};
use agentassist_hooks::store::{SqliteStore, Store};
use axum::Router;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const BINARY: &str = env!("CARGO_BIN_EXE_agentassist-hooks");

async fn sqlite_app(file: &Path) -> (Router, Store) {
    let store: Store = SqliteStore::open_file(file, &DatabaseSettings::default())
        .await
        .unwrap()
        .into();
    store.migrate().await.unwrap();
    let apps = AppRegistry::from_settings(&Default::default(), &test_apps()).unwrap();
    let state = AppState::new(
        store.clone(),
        Arc::new(apps),
        &ServerSettings::default(),
        &Default::default(),
        &Default::default(),
    );
    (router(state, &ServerSettings::default()), store)
}

async fn call(router: &Router, request: axum::http::Request<axum::body::Body>) -> (u16, Value) {
    use http_body_util::BodyExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_sqlite_get_seq_1_to_n_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooks.db");
    let (app, store) = sqlite_app(&file).await;
    let requests = 32;

    let tasks: Vec<_> = (0..requests)
        .map(|index| {
            let app = app.clone();
            let body = batch(
                "c-sqlite",
                vec![transfer("WARM", "entry", &format!("agent-{index}"))],
            );
            tokio::spawn(async move {
                call(&app, hooks_request(BOT, &ingest_token(), body.to_string())).await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        seqs.push(body["firstSeq"].as_i64().unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=requests).collect::<Vec<i64>>());
    store.close().await;
    drop(app);

    let (restarted, _store) = sqlite_app(&file).await;
    let events_path = format!("/api/v1/bots/{BOT}/conversations/c-sqlite/events?limit=1000");
    let request = axum::http::Request::get(events_path)
        .header("token", wildcard_token())
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, page) = call(&restarted, request).await;

    assert_eq!(status, 200);
    let stored: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        stored,
        (1..=requests).collect::<Vec<i64>>(),
        "still there after a restart"
    );
}

/// Starts the real binary the way the README's first command does (`serve --config
/// config/local.toml`, no database URL) in a fresh directory of its own.
fn start_service(dir: &Path, port: u16) -> Child {
    let local_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml");
    Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(local_config)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("AGENTASSIST_HOOKS_CONFIG")
        .env("KORE_CLIENT_SECRET", INGEST_SECRET)
        .env("HOOKS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the service exited early"
        );
        assert!(
            Instant::now() < deadline,
            "the service did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stop(child: &mut Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the service did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn the_readme_walkthrough_runs_with_no_database_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut service = start_service(dir.path(), port);
    wait_ready(&client, &base, &mut service).await;

    let token = Command::new(BINARY)
        .args([
            "token",
            "--app-id",
            INGEST_APP,
            "--secret-env",
            "KORE_CLIENT_SECRET",
        ])
        .env("KORE_CLIENT_SECRET", INGEST_SECRET)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let sample = std::fs::read_to_string("docs/examples/vendor-sample.json").unwrap();
    let posted: Value = client
        .post(format!(
            "{base}/agentassist/api/v1/hooks/st-XXXX-XXXX-XXXX-XXXX"
        ))
        .header("Content-Type", "application/json")
        .header("token", &token)
        .body(sample)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["STATUS"], "OK", "{posted}");
    assert_eq!(posted["conversationStatus"], "active");
    stop(&mut service);

    let mut restarted = start_service(dir.path(), port);
    wait_ready(&client, &base, &mut restarted).await;
    let summary = client
        .get(format!(
            "{base}/api/v1/bots/st-XXXX-XXXX-XXXX-XXXX/conversations/c-xxxx"
        ))
        .header("token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(summary.status(), 200);
    let summary: Value = summary.json().await.unwrap();
    assert_eq!(summary["status"], "active");
    assert_eq!(summary["participantsPresent"][0], "xxxxxx");
    assert_eq!(summary["participants"][0]["name"], "Agent ai");
    assert!(dir.path().join("data/agentassist-hooks.db").exists());
    stop(&mut restarted);
}
