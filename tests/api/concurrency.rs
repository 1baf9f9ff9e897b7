//! SPEC 1.3: `seq` is gap-free in commit order across replicas sharing one database.

on_both_backends!(concurrent_requests_through_two_replicas_get_seq_1_to_n);

use crate::common::*;
use futures_util::future::join_all;

async fn concurrent_requests_through_two_replicas_get_seq_1_to_n(backend: Backend) {
    // Two independently built apps, each with its own pool, as two replicas would be.
    let replica_a = backend.app().await;
    let replica_b = backend.app().await;
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
    assert_eq!(
        replica_b.stored_seqs("c-busy").await,
        (1..=expected_total as i64).collect::<Vec<_>>()
    );
    let page = replica_a
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-busy/events?limit=1000"),
            &wildcard_token(),
        )
        .await;
    let received: Vec<&str> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["receivedAt"].as_str().unwrap())
        .collect();
    assert_eq!(received.len(), expected_total);
    assert!(
        received.windows(2).all(|pair| pair[0] <= pair[1]),
        "receivedAt never goes back as seq goes up"
    );

    // Each append saw the whole conversation as the previous one left it (not a snapshot
    // from before it waited its turn): everyone is present, and every WARM entry after the
    // first was invited by whoever has been present longest, the first to enter.
    let conversation = replica_b
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-busy"),
            &wildcard_token(),
        )
        .await
        .body;
    assert_eq!(
        conversation["participantsPresent"]
            .as_array()
            .unwrap()
            .len(),
        expected_total
    );
    let first = page.body["events"][0]["participant"]["identity"].clone();
    let hops = conversation["hops"].as_array().unwrap();
    assert_eq!(hops.len(), expected_total);
    for hop in &hops[1..] {
        assert_eq!(hop["from"], first, "{hop}");
    }
}
