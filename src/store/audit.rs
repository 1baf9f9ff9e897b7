//! The audit log (SPEC 13): who read which conversation, when, and what they were told.
//! The same SQL on both stores, times in integer microseconds as the stats keep theirs.

use super::codec::{Bind, Sql, at_micros, micros_at};
use super::{Store, StoreError};
use time::OffsetDateTime;

/// One read, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub at: OffsetDateTime,
    /// `app:<appId>` or `user:<sub>`.
    pub actor: String,
    pub actor_name: Option<String>,
    pub actor_email: Option<String>,
    pub method: String,
    /// The route template, never the path with its values.
    pub route: String,
    pub status: u16,
    pub bot_id: Option<String>,
    pub conversation_id: Option<String>,
    pub participant: Option<String>,
    pub client_address: Option<String>,
}

/// A record and its place in the log (for paging).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub record: AuditRecord,
}

/// Which records a page holds.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub actor: Option<String>,
    pub bot_id: Option<String>,
    pub conversation_id: Option<String>,
    /// Only records of these bots; `None` for every bot's and none.
    pub bots: Option<Vec<String>>,
    /// Only records before this one (newest first): the previous page's last.
    pub before: Option<(OffsetDateTime, i64)>,
}

/// Columns one record binds; a batch is cut to stay below SQLite's bind limit.
const COLUMNS: usize = 11;
const BATCH: usize = 1000;
/// Rows one purge statement deletes, so that a long backlog is not one huge transaction.
const PURGE_BATCH: i64 = 10_000;

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    actor_name: Option<String>,
    actor_email: Option<String>,
    method: String,
    route: String,
    status: i64,
    bot_id: Option<String>,
    conversation_id: Option<String>,
    participant: Option<String>,
    client_address: Option<String>,
}

impl Store {
    /// Appends `records`, in their order.
    pub async fn audit_append(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        for batch in records.chunks(BATCH) {
            let mut sql = Sql::new(
                "INSERT INTO audit_log (at, actor, actor_name, actor_email, method, route, \
                 status, bot_id, conversation_id, participant, client_address) VALUES ",
            );
            for (index, record) in batch.iter().enumerate() {
                sql.push(if index == 0 { "(" } else { ", (" });
                let values: [Bind; COLUMNS] = [
                    Bind::Int(micros_at(record.at)),
                    Bind::Text(record.actor.clone()),
                    record.actor_name.clone().into(),
                    record.actor_email.clone().into(),
                    Bind::Text(record.method.clone()),
                    Bind::Text(record.route.clone()),
                    Bind::Int(record.status.into()),
                    record.bot_id.clone().into(),
                    record.conversation_id.clone().into(),
                    record.participant.clone().into(),
                    record.client_address.clone().into(),
                ];
                for (column, value) in values.into_iter().enumerate() {
                    if column > 0 {
                        sql.push(", ");
                    }
                    sql.bind(value);
                }
                sql.push(")");
            }
            self.execute_sql(sql).await?;
        }
        Ok(())
    }

    /// Up to `limit` records matching `filter`, newest first.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = Sql::new(
            "SELECT id, at, actor, actor_name, actor_email, method, route, status, bot_id, \
             conversation_id, participant, client_address FROM audit_log WHERE 1 = 1",
        );
        if let Some(from) = filter.from {
            sql.push(" AND at >= ").bind(Bind::Int(micros_at(from)));
        }
        if let Some(to) = filter.to {
            sql.push(" AND at < ").bind(Bind::Int(micros_at(to)));
        }
        for (column, value) in [
            ("actor", &filter.actor),
            ("bot_id", &filter.bot_id),
            ("conversation_id", &filter.conversation_id),
        ] {
            if let Some(value) = value {
                sql.push(&format!(" AND {column} = "))
                    .bind(Bind::Text(value.clone()));
            }
        }
        if let Some(bots) = &filter.bots {
            sql.push(" AND bot_id IN (NULL");
            for bot in bots {
                sql.push(", ").bind(Bind::Text(bot.clone()));
            }
            sql.push(")");
        }
        if let Some((at, id)) = filter.before {
            let at = micros_at(at);
            sql.push(" AND (at < ")
                .bind(Bind::Int(at))
                .push(" OR (at = ")
                .bind(Bind::Int(at))
                .push(" AND id < ")
                .bind(Bind::Int(id))
                .push("))");
        }
        sql.push(" ORDER BY at DESC, id DESC LIMIT ")
            .bind(Bind::Int(limit));
        let rows: Vec<AuditRow> = self.fetch_rows(sql).await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    /// Deletes records older than `before`; how many.
    pub async fn audit_purge(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let deleted = self
                .execute_sql(Sql {
                    text: "DELETE FROM audit_log WHERE id IN \
                           (SELECT id FROM audit_log WHERE at < $1 LIMIT $2)"
                        .to_owned(),
                    binds: vec![Bind::Int(micros_at(before)), Bind::Int(PURGE_BATCH)],
                })
                .await?;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            record: AuditRecord {
                at: at_micros(row.at),
                actor: row.actor,
                actor_name: row.actor_name,
                actor_email: row.actor_email,
                method: row.method,
                route: row.route,
                status: u16::try_from(row.status).unwrap_or_default(),
                bot_id: row.bot_id,
                conversation_id: row.conversation_id,
                participant: row.participant,
                client_address: row.client_address,
            },
        }
    }
}
