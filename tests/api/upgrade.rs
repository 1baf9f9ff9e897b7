//! A database written by the release that kept each conversation's whole timeline as one
//! JSON snapshot migrates to participant rows: the conversation reads back the same, and
//! appends continue where it was. On both stores.

use crate::common::*;
use agentassist_hooks::store::{PgStore, SqliteStore, Store};
use serde_json::{Value, json};
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, PgPool};
use std::borrow::Cow;
use std::path::Path;

/// The last migration of the snapshot release, per backend.
const POSTGRES_BEFORE: i64 = 2;
const SQLITE_BEFORE: i64 = 3;

/// The migrations of `dir` up to `version`.
async fn migrator_up_to(dir: &str, version: i64) -> Migrator {
    let mut migrator = Migrator::new(Path::new(dir))
        .await
        .expect("migrations load");
    let kept: Vec<_> = migrator
        .iter()
        .filter(|migration| migration.version <= version)
        .cloned()
        .collect();
    migrator.migrations = Cow::Owned(kept);
    migrator
}

/// A conversation as the snapshot release stored it: agent-1 took the call (NA), handed
/// it on cold to agent-2, who is still there. Times in `time` form per backend.
fn snapshot_rows(time: impl Fn(&str) -> String) -> Vec<String> {
    let timeline = json!({
        "status": "active", "experience": "voice", "language": "en",
        "started_at": "2026-03-01T09:00:00Z", "ended_at": null,
        "last_event_at": "2026-03-01T09:02:00Z", "event_count": 3, "anomaly_count": 0,
        "transfers": { "cold": 1, "warm": 0, "redial": 0 },
        "participants": [
            { "identity": "agent-1", "name": "Agent One", "kind": "agent", "stints": [
                { "joined_at": "2026-03-01T09:00:00Z", "left_at": "2026-03-01T09:01:00Z",
                  "entry_type": "NA", "exit_type": "COLD" } ] },
            { "identity": "agent-2", "name": "Agent Two", "kind": "agent", "stints": [
                { "joined_at": "2026-03-01T09:02:00Z", "left_at": null,
                  "entry_type": "COLD", "exit_type": null } ] }
        ]
    });
    let event = |seq: i64, at: &str, transfer_type: &str, transition: &str, agent: &str| {
        let payload = transfer(transfer_type, transition, agent);
        format!(
            "INSERT INTO events (bot_id, conversation_id, seq, received_at, name, transfer_type,
                 transition, participant_identity, participant, anomalies, payload)
             VALUES ('{BOT}', 'c-old', {seq}, {}, 'INTERNAL_TRANSFER_EVENT', '{transfer_type}',
                 '{transition}', '{agent}', '{}', '[]', '{}')",
            time(at),
            payload["participant"],
            payload
        )
    };
    vec![
        format!(
            "INSERT INTO conversations (bot_id, conversation_id, last_seq, status, experience,
                 language, started_at, ended_at, last_event_at, event_count, anomaly_count,
                 cold_transfers, warm_transfers, redial_transfers, participants_present, timeline)
             VALUES ('{BOT}', 'c-old', 3, 'active', 'voice', 'en', {}, NULL, {}, 3, 0, 1, 0, 0,
                 '[\"agent-2\"]', '{timeline}')",
            time("2026-03-01T09:00:00Z"),
            time("2026-03-01T09:02:00Z"),
        ),
        event(1, "2026-03-01T09:00:00Z", "NA", "entry", "agent-1"),
        event(2, "2026-03-01T09:01:00Z", "COLD", "exit", "agent-1"),
        event(3, "2026-03-01T09:02:00Z", "COLD", "entry", "agent-2"),
        format!(
            "INSERT INTO stints (bot_id, conversation_id, identity, ordinal, joined_at, left_at,
                 entry_type, exit_type)
             VALUES ('{BOT}', 'c-old', 'agent-1', 0, {}, {}, 'NA', 'COLD'),
                    ('{BOT}', 'c-old', 'agent-2', 0, {}, NULL, 'COLD', NULL)",
            time("2026-03-01T09:00:00Z"),
            time("2026-03-01T09:01:00Z"),
            time("2026-03-01T09:02:00Z"),
        ),
    ]
}

fn sqlite_time(at: &str) -> String {
    let parsed =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    (parsed.unix_timestamp() * 1_000_000).to_string()
}

/// The conversation after the upgrade, read through the API, and an append after it.
async fn assert_upgraded(app: &TestApp) {
    let path = format!("/api/v1/bots/{BOT}/conversations/c-old");
    let before = app.get(&path, &read_token()).await;
    assert_eq!(before.status, 200, "{}", before.body);
    assert_eq!(before.body["status"], "active");
    assert_eq!(before.body["participantsPresent"], json!(["agent-2"]));
    assert_eq!(before.body["transfers"]["cold"], 1);
    let stints = |body: &Value, index: usize| body["participants"][index]["stints"].clone();
    assert_eq!(before.body["participants"][0]["identity"], "agent-1");
    assert_eq!(stints(&before.body, 0)[0]["exitType"], "COLD");
    assert_eq!(stints(&before.body, 1)[0]["leftAt"], Value::Null);

    // agent-2 leaves (NA: the last agent ends it); agent-1 comes back on a redial.
    let appended = app
        .post_events(
            BOT,
            &batch(
                "c-old",
                vec![
                    transfer("NA", "exit", "agent-2"),
                    transfer("REDIAL", "entry", "agent-1"),
                ],
            ),
        )
        .await;
    assert_eq!(appended.status, 200, "{}", appended.body);
    assert_eq!(appended.body["firstSeq"], 4);
    let after = app.get(&path, &read_token()).await;
    assert_eq!(after.body["participantsPresent"], json!(["agent-1"]));
    assert_eq!(stints(&after.body, 1)[0]["exitType"], "NA");
    assert_eq!(stints(&after.body, 0).as_array().unwrap().len(), 2);
    assert_eq!(stints(&after.body, 0)[1]["entryType"], "REDIAL");
    assert_eq!(after.body["transfers"]["redial"], 1);
}

#[sqlx::test(migrations = false)]
async fn a_postgres_snapshot_database_upgrades_and_continues(pool: PgPool) {
    let old = migrator_up_to("migrations/postgres", POSTGRES_BEFORE).await;
    old.run(&pool).await.unwrap();
    for sql in snapshot_rows(|at| format!("'{at}'::timestamptz")) {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }

    let store: Store = PgStore::from_pool(pool.clone()).into();
    store.migrate().await.expect("the upgrade migrates");

    assert_upgraded(&TestApp::new(pool)).await;
}

#[tokio::test]
async fn an_sqlite_snapshot_database_upgrades_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooks.db");
    let store = SqliteStore::open_file(&file, &Default::default())
        .await
        .unwrap();
    let old = migrator_up_to("migrations/sqlite", SQLITE_BEFORE).await;
    old.run(store.pool()).await.unwrap();
    for sql in snapshot_rows(sqlite_time) {
        sqlx::query(AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }

    store.migrate().await.expect("the upgrade migrates");

    assert_upgraded(&TestApp::over_sqlite(store)).await;
}
