//! Group commit on PostgreSQL (issue 17): appends that arrive together share one
//! transaction, and each request is still answered on its own merits. A group is made
//! certain here by a writer that waits for exactly as many appends as the test sends;
//! that they shared a transaction shows in their feed transaction, the same for all.

use crate::common::*;
use agentassist_hooks::config::GroupCommitSettings;
use sqlx::PgPool;

/// One writer that waits (up to a minute) until `appends` are queued, then commits them.
fn one_group_of(appends: usize) -> GroupCommitSettings {
    GroupCommitSettings {
        enabled: true,
        writers: 1,
        max_batch: appends,
        window_us: 60_000_000,
    }
}

/// The feed transactions of a conversation's events, in seq order.
async fn feed_txns(pool: &PgPool, conversation: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT feed_txn FROM events WHERE bot_id = $1 AND conversation_id = $2 ORDER BY seq",
    )
    .bind(BOT)
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn entry(conversation: &str, agent: &str) -> String {
    batch(conversation, vec![transfer("NA", "entry", agent)]).to_string()
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn a_refused_key_in_a_group_fails_only_its_own_request(pool: PgPool) {
    let setup = TestApp::new(pool.clone());
    let used = setup
        .send(keyed_request("used-key", entry("c-first", "a0")))
        .await;
    assert_eq!(used.status, 200);
    let group = TestApp::with_group_commit(pool.clone(), &one_group_of(5));

    let (plain, reused, other, keyed, repeated) = tokio::join!(
        group.send(hooks_request(BOT, &ingest_token(), entry("c-a", "a1"))),
        group.send(keyed_request("used-key", entry("c-b", "a2"))),
        group.send(hooks_request(BOT, &ingest_token(), entry("c-c", "a3"))),
        group.send(keyed_request("new-key", entry("c-d", "a4"))),
        group.send(keyed_request("new-key", entry("c-d", "a4"))),
    );

    assert_eq!(plain.status, 200, "{}", plain.body);
    reused.assert_problem(422);
    assert_eq!(other.status, 200, "{}", other.body);
    let mut same_key = [keyed.status.as_u16(), repeated.status.as_u16()];
    same_key.sort_unstable();
    assert_eq!(
        same_key,
        [200, 409],
        "the same key twice in one group: the second runs while the first does"
    );
    assert!(
        group.stored_seqs("c-b").await.is_empty(),
        "nothing of the 422"
    );
    assert_eq!(group.stored_seqs("c-d").await, [1], "stored once");
    let transactions: Vec<i64> = [
        feed_txns(&pool, "c-a").await,
        feed_txns(&pool, "c-c").await,
        feed_txns(&pool, "c-d").await,
    ]
    .concat();
    assert_eq!(transactions.len(), 3);
    assert!(
        transactions.iter().all(|txn| *txn == transactions[0]),
        "the stored appends shared one transaction: {transactions:?}"
    );
    let replayed = setup
        .send(keyed_request("new-key", entry("c-d", "a4")))
        .await;
    assert_eq!(replayed.status, 200, "the key was saved with the group");
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn a_statement_failing_for_one_append_fails_only_that_request(pool: PgPool) {
    // A fault of the database that hits one conversation only.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.conversation_id = 'c-poison' THEN RAISE EXCEPTION 'poisoned'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON events
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let group = TestApp::with_group_commit(pool.clone(), &one_group_of(3));

    let (first, poisoned, last) = tokio::join!(
        group.send(hooks_request(BOT, &ingest_token(), entry("c-before", "a1"))),
        group.send(hooks_request(BOT, &ingest_token(), entry("c-poison", "a2"))),
        group.send(hooks_request(BOT, &ingest_token(), entry("c-after", "a3"))),
    );

    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(last.status, 200, "{}", last.body);
    assert!(poisoned.status.is_server_error(), "{}", poisoned.body);
    assert_eq!(group.stored_seqs("c-before").await, [1]);
    assert_eq!(group.stored_seqs("c-after").await, [1]);
    assert!(group.stored_seqs("c-poison").await.is_empty());
    let conversation = group
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-poison"),
            &read_token(),
        )
        .await;
    assert_eq!(
        conversation.status, 404,
        "not even an empty conversation is left"
    );
}

#[sqlx::test(migrations = "migrations/postgres")]
async fn appends_to_one_conversation_in_one_group_take_their_seqs_in_arrival_order(pool: PgPool) {
    let group = TestApp::with_group_commit(pool.clone(), &one_group_of(3));
    let body = |events| batch("c-same", events).to_string();

    let answers = tokio::join!(
        group.send(hooks_request(
            BOT,
            &ingest_token(),
            body(vec![transfer("NA", "entry", "a1")])
        )),
        group.send(hooks_request(
            BOT,
            &ingest_token(),
            body(vec![transfer("COLD", "exit", "a1")])
        )),
        group.send(hooks_request(
            BOT,
            &ingest_token(),
            body(vec![transfer("COLD", "entry", "a2")])
        )),
    );

    let mut seqs = Vec::new();
    for answer in [&answers.0, &answers.1, &answers.2] {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["firstSeq"], answer.body["lastSeq"]);
        seqs.push(answer.body["firstSeq"].as_i64().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3], "each its own seq, gap-free");
    assert_eq!(group.stored_seqs("c-same").await, [1, 2, 3]);
    let transactions = feed_txns(&pool, "c-same").await;
    assert!(
        transactions.iter().all(|txn| *txn == transactions[0]),
        "one transaction: {transactions:?}"
    );
    let conversation = group
        .get(
            &format!("/api/v1/bots/{BOT}/conversations/c-same"),
            &read_token(),
        )
        .await;
    assert_eq!(
        conversation.body["eventCount"], 3,
        "the summary counts all three"
    );
}
