//! SPEC 1.3: `seq` is gap-free in commit order across replicas sharing one database.

mod common;

use common::*;
use futures_util::future::join_all;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[sqlx::test(migrations = "migrations/postgres")]
async fn concurrent_requests_through_two_replicas_get_seq_1_to_n(pool: PgPool) {
    // Two independently built apps, each with its own pool, as two replicas would be.
    let replica_a = TestApp::new(pool.clone());
    let second_pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let replica_b = TestApp::new(second_pool);
    let requests = 60;
    let events_per_request = |index: usize| 1 + index % 3;

    let responses = join_all((0..requests).map(|index| {
        let replica = if index % 2 == 0 {
            &replica_a
        } else {
            &replica_b
        };
        let events = (0..events_per_request(index))
            .map(|offset| transfer("WARM", "entry", &format!("agent-{index}-{offset}")))
            .collect();
        async move { replica.post_events(BOT, &batch("c-busy", events)).await }
    }))
    .await;

    let expected_total: usize = (0..requests).map(events_per_request).sum();
    let mut ranges = Vec::new();
    for (index, response) in responses.iter().enumerate() {
        assert_eq!(response.status, 200, "{}", response.body);
        let first = response.body["firstSeq"].as_i64().unwrap();
        let last = response.body["lastSeq"].as_i64().unwrap();
        assert_eq!(last - first + 1, events_per_request(index) as i64);
        ranges.push((first, last));
    }
    ranges.sort();
    let mut next = 1;
    for (first, last) in ranges {
        assert_eq!(
            first, next,
            "the acknowledged ranges tile 1..N without gaps"
        );
        next = last + 1;
    }
    let stored = stored_seqs(&pool, "c-busy").await;
    assert_eq!(stored, (1..=expected_total as i64).collect::<Vec<_>>());
    let received_in_seq_order: bool = sqlx::query_scalar(
        "SELECT bool_and(ordered) FROM (
             SELECT received_at >= lag(received_at, 1, received_at) OVER (ORDER BY seq) AS ordered
             FROM events WHERE conversation_id = 'c-busy') AS checks",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        received_in_seq_order,
        "receivedAt never goes back as seq goes up"
    );
}
