//! The command line: `token` prints a JWT the service accepts; `check-config` vets config;
//! `openapi` prints the committed API description; `healthcheck` probes a running service.

on_both_backends!(the_token_command_prints_a_token_the_service_accepts,);

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_agentassist-hooks");

async fn the_token_command_prints_a_token_the_service_accepts(backend: Backend) {
    let app = backend.app().await;

    let output = Command::new(BINARY)
        .args([
            "token",
            "--app-id",
            INGEST_APP,
            "--secret-env",
            "TEST_KORE_SECRET",
            "--ttl",
            "120",
        ])
        .env("TEST_KORE_SECRET", INGEST_SECRET)
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    let response = app
        .send(hooks_request(
            BOT,
            token.trim(),
            batch("c-cli", vec![transfer("NA", "entry", "a1")]).to_string(),
        ))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(app.event_count().await, 1);
}

#[test]
fn the_token_command_reads_a_secret_file() {
    let dir = std::env::temp_dir().join(format!("hooks-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, format!("{INGEST_SECRET}\n")).unwrap();

    let output = Command::new(BINARY)
        .args(["token", "--app-id", INGEST_APP, "--secret-file"])
        .arg(&secret_file)
        .output()
        .unwrap();

    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_token_command_fails_clearly_without_its_secret() {
    let output = Command::new(BINARY)
        .args([
            "token",
            "--app-id",
            INGEST_APP,
            "--secret-env",
            "HOOKS_TEST_UNSET_VARIABLE",
        ])
        .env_remove("HOOKS_TEST_UNSET_VARIABLE")
        .output()
        .unwrap();

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("HOOKS_TEST_UNSET_VARIABLE"));
}

#[test]
fn check_config_reports_a_missing_secret_and_accepts_a_complete_config() {
    let dir = std::env::temp_dir().join(format!("hooks-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("apps.toml");
    std::fs::write(
        &config,
        r#"
[[apps]]
app_id = "cs-check"
secret_env = "HOOKS_TEST_CHECK_SECRET"
bots = ["*"]
permissions = ["ingest"]
"#,
    )
    .unwrap();

    let missing = Command::new(BINARY)
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .env_remove("HOOKS_TEST_CHECK_SECRET")
        .output()
        .unwrap();
    let complete = Command::new(BINARY)
        .arg("check-config")
        .env("AGENTASSIST_HOOKS_CONFIG", &config)
        .env(
            "HOOKS_TEST_CHECK_SECRET",
            "a-secret-that-is-long-enough-for-hs256",
        )
        .env("HOOKS__SERVER__BIND", "0.0.0.0:9999")
        .output()
        .unwrap();

    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("HOOKS_TEST_CHECK_SECRET"));
    assert!(
        complete.status.success(),
        "{}",
        String::from_utf8_lossy(&complete.stderr)
    );
    let report = String::from_utf8_lossy(&complete.stdout);
    assert!(report.contains("1 app(s)"), "{report}");
    assert!(
        report.contains("0.0.0.0:9999"),
        "env overrides apply: {report}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_openapi_command_prints_the_committed_document() {
    let output = Command::new(BINARY).arg("openapi").output().unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout == include_bytes!("../../docs/openapi.json"),
        "docs/openapi.json is stale: regenerate it with \
         `cargo run -q -- openapi > docs/openapi.json` and commit it"
    );
}

fn healthcheck(url: &str) -> Output {
    Command::new(BINARY)
        .args(["healthcheck", "--url", url])
        .output()
        .unwrap()
}

/// The real service on the embedded store in a directory of its own, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn healthcheck_exits_0_on_a_ready_service_and_1_on_an_error_answer_or_a_closed_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut service = Service(
        Command::new(BINARY)
            .args(["serve", "--config"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml"))
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("AGENTASSIST_HOOKS_CONFIG")
            .env("KORE_CLIENT_SECRET", INGEST_SECRET)
            .env("HOOKS__SERVER__BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{port}/readyz");

    let deadline = Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        let output = healthcheck(&ready);
        if output.status.success() {
            break output;
        }
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(
            service.0.try_wait().unwrap().is_none(),
            "the service exited early"
        );
        assert!(Instant::now() < deadline, "never healthy: {output:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let not_found = healthcheck(&format!("http://127.0.0.1:{port}/no-such-page"));
    let started = Instant::now();
    let closed = healthcheck(&format!("http://127.0.0.1:{}/readyz", free_port()));
    let closed_took = started.elapsed();

    assert!(
        String::from_utf8_lossy(&healthy.stdout).starts_with("HTTP/1.1 200"),
        "{healthy:?}"
    );
    assert_eq!(not_found.status.code(), Some(1), "{not_found:?}");
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("404"));
    assert_eq!(closed.status.code(), Some(1), "{closed:?}");
    assert!(String::from_utf8_lossy(&closed.stderr).contains("cannot connect"));
    assert!(closed_took < Duration::from_secs(3), "took {closed_took:?}");
}
