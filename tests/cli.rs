//! The command line: `token` prints a JWT the service accepts; `check-config` vets config;
//! `openapi` prints the committed API description.

mod common;

on_both_backends!(the_token_command_prints_a_token_the_service_accepts,);

use common::*;
use std::process::Command;

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
        output.stdout == include_bytes!("../docs/openapi.json"),
        "docs/openapi.json is stale: regenerate it with \
         `cargo run -q -- openapi > docs/openapi.json` and commit it"
    );
}
