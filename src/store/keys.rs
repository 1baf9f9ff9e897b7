//! `Idempotency-Key`s (SPEC 4.1): an earlier use read back, the lock that marks a key in
//! use (PostgreSQL), and an append done once under a key (SQLite's; PostgreSQL takes keys
//! for a whole group, `postgres/append.rs`), over either database where both use it.

use super::codec::{Bind, Sql};
use super::{KeyRecord, Previous, StoreError};
use crate::domain::Status;
use anyhow::Context;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

/// A key's stored outcome, unless it has expired.
pub(super) const READ_KEY: &str =
    "SELECT fingerprint, conversation_id, accepted, first_seq, last_seq,
         conversation_status
     FROM idempotency_keys WHERE bot_id = $1 AND key = $2 AND created_at >= $3";

/// Records an outcome, in the transaction that stored its events; replaces an expired one.
pub(super) const SAVE_KEY: &str =
    "INSERT INTO idempotency_keys (bot_id, key, fingerprint, created_at,
         conversation_id, accepted, first_seq, last_seq, conversation_status)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (bot_id, key) DO UPDATE SET
         fingerprint = excluded.fingerprint, created_at = excluded.created_at,
         conversation_id = excluded.conversation_id, accepted = excluded.accepted,
         first_seq = excluded.first_seq, last_seq = excluded.last_seq,
         conversation_status = excluded.conversation_status";

/// Up to `$2` keys created before `$1`.
pub(super) const PURGE_KEYS: &str = "DELETE FROM idempotency_keys
    WHERE (bot_id, key) IN (SELECT bot_id, key FROM idempotency_keys
                            WHERE created_at < $1 LIMIT $2)
    RETURNING CAST(1 AS BIGINT)";
pub(super) const PURGE_BATCH: i64 = 1000;

/// The advisory lock that marks a key as in use (PostgreSQL), from the bot and the key.
pub fn key_lock_id(key: &KeyRecord) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(key.bot_id.as_bytes())
        .chain_update([0])
        .chain_update(key.key.as_bytes())
        .finalize();
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(id)
}

#[derive(FromRow)]
pub struct KeyRow {
    pub(super) fingerprint: String,
    pub(super) conversation_id: String,
    pub(super) accepted: i64,
    pub(super) first_seq: i64,
    pub(super) last_seq: i64,
    pub(super) conversation_status: String,
}

impl KeyRow {
    /// What a request with `fingerprint` finds under this key.
    pub fn into_previous(self, fingerprint: &str) -> anyhow::Result<Previous> {
        if self.fingerprint != fingerprint {
            return Ok(Previous::OtherBody);
        }
        Ok(Previous::SameBody(super::Outcome {
            conversation_id: self.conversation_id,
            accepted: self.accepted,
            appended: super::Appended {
                first_seq: self.first_seq,
                last_seq: self.last_seq,
                status: Status::parse(&self.conversation_status)
                    .context("unknown stored status")?,
                anomalies: Vec::new(),
            },
        }))
    }
}

/// An earlier, unexpired use of `key`, read through `executor` (a pool, or the
/// transaction that is about to use the key).
pub async fn read_key<'c, DB, E>(
    executor: E,
    key: &KeyRecord,
) -> Result<Option<Previous>, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    KeyRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let row: Option<KeyRow> = sqlx::query_as::<DB, KeyRow>(READ_KEY)
        .bind(Sql::text(&key.bot_id))
        .bind(Sql::text(&key.key))
        .bind(Bind::Time(key.expired_before))
        .fetch_optional(executor)
        .await?;
    Ok(row
        .map(|row| row.into_previous(&key.fingerprint))
        .transpose()?)
}

/// With `key` held by this transaction: replays its earlier use, else appends `batch`
/// with `append` and records the outcome under the key, in the same transaction.
pub async fn append_once<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    batch: &crate::domain::IngestBatch,
    key: &KeyRecord,
    append: impl AsyncFnOnce(&mut sqlx::Transaction<'_, DB>) -> Result<super::Appended, StoreError>,
) -> Result<super::Keyed, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    KeyRow: for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    if let Some(previous) = read_key(&mut **tx, key).await? {
        return Ok(super::Keyed::Used(previous));
    }
    let appended = append(&mut *tx).await?;
    sqlx::query::<DB>(SAVE_KEY)
        .bind(Sql::text(&key.bot_id))
        .bind(Sql::text(&key.key))
        .bind(Sql::text(&key.fingerprint))
        .bind(Bind::Time(key.now))
        .bind(Sql::text(batch.conversation_id.as_str()))
        .bind(Bind::Int(batch.events.len() as i64))
        .bind(Bind::Int(appended.first_seq))
        .bind(Bind::Int(appended.last_seq))
        .bind(Sql::text(appended.status.as_str()))
        .execute(&mut **tx)
        .await?;
    Ok(super::Keyed::Stored(appended))
}
