//! Webhooks (SPEC 12) on both stores: where an endpoint is in the feed moves only past what
//! was delivered (compare-and-set), a replay moves it back and never forward, one replica
//! holds an endpoint at a time, and a delivery to a real HTTP receiver brings every item
//! in order. The fault tests (SIGKILL, replicas, a cut database link, 410, retries) and the
//! check with the official Standard Webhooks library are in tests/webhooks/ (node).

use crate::common::{BOT, Backend, post, transfer};
use agentassist_hooks::config::{OneOrMany, WebhookConfig};
use agentassist_hooks::store::{FeedPosition, Store};
use agentassist_hooks::webhooks::{self, Endpoint};
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post as route_post;
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn position(txn: i64, conversation: &str, seq: i64) -> FeedPosition {
    FeedPosition {
        txn,
        conversation_id: conversation.to_owned(),
        seq,
    }
}

async fn positions_move_only_past_what_was_read(store: &Store) {
    let start = position(5, "c-a", 1);
    store.webhook_register("crm", &start).await.unwrap();
    // Registering again keeps where it is.
    store
        .webhook_register("crm", &FeedPosition::beginning())
        .await
        .unwrap();
    assert_eq!(store.webhook_position("crm", BOT).await.unwrap(), start);

    let delivered = position(9, "c-b", 3);
    assert!(
        store
            .webhook_advance("crm", BOT, &start, &delivered)
            .await
            .unwrap()
    );
    // A second deliverer that read the old position cannot move it.
    assert!(
        !store
            .webhook_advance("crm", BOT, &start, &position(7, "c-a", 2))
            .await
            .unwrap()
    );
    assert_eq!(store.webhook_position("crm", BOT).await.unwrap(), delivered);

    // A replay moves it back to the position given, and a later one does not move it forward.
    let generation = store.webhook("crm").await.unwrap().unwrap().generation;
    assert!(
        store
            .webhook_replay("crm", &position(6, "c-a", 1))
            .await
            .unwrap()
    );
    assert_eq!(
        store.webhook_position("crm", BOT).await.unwrap(),
        position(6, "c-a", 1)
    );
    assert!(
        store
            .webhook_replay("crm", &position(8, "c-z", 9))
            .await
            .unwrap()
    );
    assert_eq!(
        store.webhook_position("crm", BOT).await.unwrap(),
        position(6, "c-a", 1)
    );
    let record = store.webhook("crm").await.unwrap().unwrap();
    assert_eq!(
        record.generation,
        generation + 2,
        "each replay tells the deliverer"
    );
    assert_eq!(
        record.start_position,
        start.clone().min(position(6, "c-a", 1))
    );
    assert!(!store.webhook_replay("unknown", &start).await.unwrap());
}

async fn one_replica_holds_an_endpoint_at_a_time(store: &Store) {
    store
        .webhook_register("lease", &FeedPosition::beginning())
        .await
        .unwrap();
    let lease = Duration::from_secs(20);
    assert!(store.webhook_lease("lease", "a", lease).await.unwrap());
    assert!(!store.webhook_lease("lease", "b", lease).await.unwrap());
    assert!(
        store.webhook_lease("lease", "a", lease).await.unwrap(),
        "the holder renews"
    );
    // A lease that lapsed is taken over.
    assert!(
        store
            .webhook_lease("lease", "a", Duration::ZERO)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(store.webhook_lease("lease", "b", lease).await.unwrap());
    // Let go at shutdown, it is free at once.
    store.webhook_release("lease", "b").await.unwrap();
    assert!(store.webhook_lease("lease", "a", lease).await.unwrap());
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn positions_leases_and_replays_on_postgres(pool: PgPool) {
    let app = Backend::Postgres(pool).app().await;
    positions_move_only_past_what_was_read(&app.store).await;
    one_replica_holds_an_endpoint_at_a_time(&app.store).await;
}

#[tokio::test]
async fn positions_leases_and_replays_on_sqlite() {
    let backend = Backend::sqlite().await;
    let app = backend.app().await;
    positions_move_only_past_what_was_read(&app.store).await;
    one_replica_holds_an_endpoint_at_a_time(&app.store).await;
}

/// What the receiver got: `(webhook-id, conversationId, seq)` of each 2xx'd request.
type Received = Arc<Mutex<Vec<(String, String, i64)>>>;

async fn receiver() -> (String, Received, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let received: Received = Arc::default();
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hooks",
        route_post({
            let received = received.clone();
            move |headers: HeaderMap, body: String| async move {
                let message: serde_json::Value = serde_json::from_str(&body).unwrap();
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                assert!(
                    headers["webhook-signature"]
                        .to_str()
                        .unwrap()
                        .starts_with("v1,")
                );
                received.lock().unwrap().push((
                    id,
                    message["data"]["conversationId"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    message["data"]["seq"].as_i64().unwrap(),
                ));
                let _ = arrived.send(());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received, arrivals)
}

async fn delivers_every_item_in_order(backend: Backend) {
    let app = backend.app().await;
    for round in 0..3 {
        for conversation in ["c-1", "c-2"] {
            let transition = if round % 2 == 0 { "entry" } else { "exit" };
            post(
                &app,
                conversation,
                vec![transfer("NA", transition, "agent-1")],
            )
            .await;
        }
    }
    let (url, received, mut arrivals) = receiver().await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let config = WebhookConfig {
        name: "test".to_owned(),
        url,
        secret_env: None,
        secret_file: Some(OneOrMany::One(secret.path().to_owned())),
        bots: vec![BOT.to_owned()],
        kinds: vec!["event".to_owned()],
        start: "oldest".to_owned(),
        max_in_flight: 4,
        timeout_seconds: 5.0,
        retry_schedule_seconds: vec![0.1],
    };
    let endpoints = Endpoint::all(&[config], &["127.0.0.1".to_owned()]).unwrap();
    let deliveries = webhooks::spawn(&app.store, &app.changes, endpoints);
    while received.lock().unwrap().len() < 6 {
        arrivals.recv().await.unwrap();
    }
    deliveries.stop(&app.store).await;
    let received = received.lock().unwrap().clone();
    for conversation in ["c-1", "c-2"] {
        let seqs: Vec<i64> = received
            .iter()
            .filter(|(_, id, _)| id == conversation)
            .map(|(_, _, seq)| *seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3], "{conversation} on {}", backend.name());
    }
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn delivers_every_item_in_order_on_postgres(pool: PgPool) {
    delivers_every_item_in_order(Backend::Postgres(pool)).await;
}

#[tokio::test]
async fn delivers_every_item_in_order_on_sqlite() {
    delivers_every_item_in_order(Backend::sqlite().await).await;
}
