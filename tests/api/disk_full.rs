//! The embedded store on a disk that really fills up (a small tmpfs, so this test needs
//! root, as CI runs): ingest answers 503 with `Retry-After` while the disk is full, never
//! 500; readiness says so; and once space is freed the service takes events again by
//! itself, with nothing half written.

use crate::common::*;
use agentassist_hooks::store::SqliteStore;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().to_owned();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "cannot mount a tmpfs at {}: this test needs root (CI runs as root)",
            path.display()
        );
        Self { _dir: dir, path }
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("the filler opens");
        let block = vec![0xA5u8; 16 * 1024];
        while file.write_all(&block).is_ok() {}
        // The last partial block: byte by byte until not one more fits.
        while file.write_all(&[0]).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn readyz(app: &TestApp) -> StatusCode {
    app.send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .status
}

async fn post_entry(app: &TestApp, conversation: &str, agent: &str) -> TestResponse {
    app.post_events(
        BOT,
        &batch(conversation, vec![transfer("WARM", "entry", agent)]),
    )
    .await
}

async fn open(path: &Path) -> TestApp {
    let store = SqliteStore::open_file(path, &Default::default())
        .await
        .expect("the store opens");
    store.migrate().await.expect("the store migrates");
    TestApp::over_sqlite(store)
}

#[tokio::test]
async fn a_full_disk_answers_503_reports_not_ready_and_recovers_once_space_is_freed() {
    let disk = SmallDisk::mount("4m");
    let app = open(&disk.path.join("hooks.db")).await;
    for agent in ["a1", "a2"] {
        assert_eq!(
            post_entry(&app, "c-before", agent).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(readyz(&app).await, StatusCode::OK);

    // Act: the disk fills up; every write fails, to old and new conversations alike.
    let filler = disk.fill();
    let mut refused = Vec::new();
    for (index, conversation) in ["c-before", "c-during", "c-before", "c-during"]
        .into_iter()
        .enumerate()
    {
        let agent = format!("full-{index}");
        let response = post_entry(&app, conversation, &agent).await;
        if response.status != StatusCode::OK {
            response.assert_problem(503);
            assert!(response.headers.contains_key("retry-after"));
            refused.push(agent);
        }
    }
    let ready_while_full = readyz(&app).await;

    // Space comes back.
    std::fs::remove_file(filler).expect("the filler goes");
    let ready_after = readyz(&app).await;
    let after = post_entry(&app, "c-after", "a3").await;

    assert_eq!(refused.len(), 4, "no write succeeds on a full disk");
    assert_eq!(ready_while_full, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready_after, StatusCode::OK, "ready again by itself");
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    assert_eq!(
        post_entry(&app, "c-before", "a4").await.status,
        StatusCode::OK
    );

    // Nothing half written: exactly the acknowledged events, gap-free, rows agreeing.
    assert_eq!(app.stored_seqs("c-before").await, [1, 2, 3]);
    assert_eq!(app.stored_seqs("c-during").await, Vec::<i64>::new());
    assert_eq!(app.stored_seqs("c-after").await, [1]);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM conversations c WHERE last_seq <> event_count
                OR event_count <> (SELECT count(*) FROM events e
                    WHERE e.bot_id = c.bot_id AND e.conversation_id = c.conversation_id)"
        )
        .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM stints").await, 4);
}
