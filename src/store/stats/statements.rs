//! The statements of a counted page, in either dialect, and how stats values are kept as text.

use super::PageWrites;
use crate::domain::Status;
use crate::domain::stats::facts::micros_at;
use crate::domain::stats::{ConversationStats, Cuboid, Dims, Fact, Level, Tally, slot_of};
use crate::store::codec::{Bind, Sql};
use crate::store::{FeedPosition, StoreError};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;

/// `$1` the bot, `$2`–`$4` a place in its feed (its start when `None`).
pub(super) fn bot_and_position(bot_id: &str, position: Option<&FeedPosition>) -> [Bind; 4] {
    let start = FeedPosition::beginning();
    let after = position.unwrap_or(&start);
    [
        Bind::Text(bot_id.to_owned()),
        Bind::Int(after.txn),
        Bind::Text(after.conversation_id.clone()),
        Bind::Int(after.seq),
    ]
}

pub(super) fn mark_caught_up(bot_id: &str, looked_at: i64) -> Sql {
    sql(
        "UPDATE stats_positions SET caught_up_at = $2, updated_at = $3 WHERE bot_id = $1",
        [
            Bind::Text(bot_id.to_owned()),
            Bind::Int(looked_at),
            Bind::Int(now_micros()),
        ],
    )
}

pub(super) fn save_position(
    bot_id: &str,
    reached: &FeedPosition,
    counted: usize,
    caught_up_at: Option<i64>,
) -> Sql {
    sql(
        "UPDATE stats_positions SET position = $2, counted = counted + $3, updated_at = $4,
             caught_up_at = CASE WHEN $5 < 0 THEN caught_up_at ELSE $5 END
         WHERE bot_id = $1",
        [
            Bind::Text(bot_id.to_owned()),
            Bind::Text(position_text(reached)),
            Bind::Int(counted as i64),
            Bind::Int(now_micros()),
            Bind::Int(caught_up_at.unwrap_or(-1)),
        ],
    )
}

/// The statements that store a page's counts: slot tallies (replaced by their merge with
/// the page), `handled` marks (added), facts, and the conversations' states.
pub(super) fn page_statements(
    dialect: Dialect,
    bot_id: &str,
    writes: &PageWrites,
    tallies: &BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
) -> Vec<Sql> {
    let mut statements = Vec::new();
    let rows: Vec<Value> = tallies
        .iter()
        .map(|((level, cuboid, slot, dims), tally)| {
            let tally = serde_json::to_string(tally).expect("a tally is JSON");
            json!([stored_cuboid(*level, *cuboid), slot, key_text(dims), tally])
        })
        .collect();
    if !rows.is_empty() {
        statements.push(dialect.insert(
            "stats_slots",
            &[
                ("cuboid", "smallint"),
                ("slot", "bigint"),
                ("key", "text"),
                ("tally", "text"),
            ],
            "ON CONFLICT (bot_id, cuboid, slot, key) DO UPDATE SET tally = excluded.tally",
            bot_id,
            &rows,
        ));
    }
    let rows: Vec<Value> = writes
        .rollup
        .handled
        .iter()
        .map(|(mark, count)| {
            let key = serde_json::to_string(&mark.key).expect("dims are JSON");
            json!([
                stored_grouping(mark.level, mark.mask),
                mark.slot,
                key,
                mark.previous_slot.unwrap_or(-1),
                count
            ])
        })
        .collect();
    if !rows.is_empty() {
        statements.push(dialect.insert(
            "stats_handled",
            &[
                ("grouping", "smallint"),
                ("slot", "bigint"),
                ("key", "text"),
                ("previous_slot", "bigint"),
                ("count", "bigint"),
            ],
            "ON CONFLICT (bot_id, grouping, slot, key, previous_slot) \
             DO UPDATE SET count = stats_handled.count + excluded.count",
            bot_id,
            &rows,
        ));
    }
    let mut by_slot: BTreeMap<i64, Vec<&Fact>> = BTreeMap::new();
    for fact in &writes.facts {
        by_slot
            .entry(slot_of(micros_at(fact.at)))
            .or_default()
            .push(fact);
    }
    let rows: Vec<Value> = by_slot
        .into_iter()
        .map(|(slot, facts)| json!([slot, serde_json::to_string(&facts).expect("facts are JSON")]))
        .collect();
    if !rows.is_empty() {
        statements.push(dialect.insert(
            "stats_facts",
            &[("slot", "bigint"), ("facts", "text")],
            "",
            bot_id,
            &rows,
        ));
    }
    statements.extend(state_statements(dialect, bot_id, &writes.states));
    statements
}

/// The conversations' states, and what is happening now in them.
pub(super) fn state_statements(
    dialect: Dialect,
    bot_id: &str,
    states: &BTreeMap<String, Option<ConversationStats>>,
) -> Vec<Sql> {
    let mut statements = Vec::new();
    if states.is_empty() {
        return statements;
    }
    let conversations: Vec<Value> = states.keys().map(|id| json!([id])).collect();
    for table in [
        "stats_conversations",
        "stats_present",
        "stats_open_conversations",
    ] {
        let (select, binds) = dialect.rows(2, &[("conversation_id", "text")], &conversations);
        let text =
            format!("DELETE FROM {table} WHERE bot_id = $1 AND conversation_id IN ({select})");
        let mut all = vec![Bind::Text(bot_id.to_owned())];
        all.extend(binds);
        statements.push(sql(&text, all));
    }
    let (mut kept, mut present, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for (conversation, state) in states {
        let Some(state) = state else { continue };
        let text = serde_json::to_string(state).expect("a state is JSON");
        kept.push(json!([conversation, text]));
        for (identity, queue, joined_at) in state.present() {
            present.push(json!([conversation, identity, queue, micros_at(joined_at)]));
        }
        let (status, since) = state.status();
        if status != Status::Ended {
            open.push(json!([
                conversation,
                status.as_str(),
                since.map_or(0, micros_at)
            ]));
        }
    }
    let tables: [(&str, &Columns, Vec<Value>); 3] = [
        (
            "stats_conversations",
            &[("conversation_id", "text"), ("state", "text")],
            kept,
        ),
        (
            "stats_present",
            &[
                ("conversation_id", "text"),
                ("identity", "text"),
                ("queue", "text"),
                ("joined_at", "bigint"),
            ],
            present,
        ),
        (
            "stats_open_conversations",
            &[
                ("conversation_id", "text"),
                ("status", "text"),
                ("since", "bigint"),
            ],
            open,
        ),
    ];
    for (table, columns, rows) in tables {
        if !rows.is_empty() {
            statements.push(dialect.insert(table, columns, "", bot_id, &rows));
        }
    }
    statements
}

/// How each store unpacks a JSON array of rows sent as one parameter: a constant
/// statement per table, whatever the number of rows (no statement to plan again per page,
/// and no limit on parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `SELECT <columns> FROM <rows>`, the rows sent from parameter `$n` on: each row a
    /// JSON array whose items are `columns`, given as `(name, PostgreSQL type)`.
    /// PostgreSQL takes them as one array per column (`UNNEST`, bound in binary), SQLite
    /// as one JSON document (`json_each`).
    pub(super) fn rows(
        self,
        n: usize,
        columns: &[(&str, &str)],
        rows: &[Value],
    ) -> (String, Vec<Bind>) {
        match self {
            Self::Postgres => {
                let mut items = Vec::new();
                let mut arrays = Vec::new();
                let mut binds = Vec::new();
                for (i, (name, kind)) in columns.iter().enumerate() {
                    let column = rows.iter().map(|row| &row[i]);
                    if *kind == "text" {
                        items.push(format!("r.c{i} AS {name}"));
                        arrays.push(format!("CAST(${} AS text[])", n + i));
                        binds.push(Bind::Texts(column.map(json_text).collect()));
                    } else {
                        items.push(format!("CAST(r.c{i} AS {kind}) AS {name}"));
                        arrays.push(format!("CAST(${} AS bigint[])", n + i));
                        binds.push(Bind::Ints(
                            column.map(|v| v.as_i64().unwrap_or(0)).collect(),
                        ));
                    }
                }
                let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
                let text = format!(
                    "SELECT {} FROM UNNEST({}) AS r({})",
                    items.join(", "),
                    arrays.join(", "),
                    names.join(", ")
                );
                (text, binds)
            }
            Self::Sqlite => {
                let items: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _))| format!("json_extract(r.value, '$[{i}]') AS {name}"))
                    .collect();
                let text = format!("SELECT {} FROM json_each(${n}) AS r", items.join(", "));
                (
                    text,
                    vec![Bind::Text(Value::Array(rows.to_vec()).to_string())],
                )
            }
        }
    }

    /// `INSERT INTO <table> (bot_id, <columns>) SELECT $1, … FROM <rows>`, then `tail`
    /// (SQLite needs a WHERE before an upsert's ON CONFLICT).
    fn insert(
        self,
        table: &str,
        columns: &[(&str, &str)],
        tail: &str,
        bot_id: &str,
        rows: &[Value],
    ) -> Sql {
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let (select, binds) = self.rows(2, columns, rows);
        let text = format!(
            "INSERT INTO {table} (bot_id, {names}) SELECT $1, {names} FROM ({select}) AS rows \
             WHERE true {tail}",
            names = names.join(", "),
        );
        let mut all = vec![Bind::Text(bot_id.to_owned())];
        all.extend(binds);
        sql(&text, all)
    }
}

/// A table's columns: `(name, PostgreSQL type)`.
type Columns = [(&'static str, &'static str)];

/// A JSON item as a text column's value.
pub(super) fn json_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

pub(super) fn sql(text: &str, binds: impl IntoIterator<Item = Bind>) -> Sql {
    Sql {
        text: text.to_owned(),
        binds: binds.into_iter().collect(),
    }
}

/// Each stored tally with what the page adds to it.
pub(super) fn merged(
    mut stored: BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
    added: BTreeMap<(Level, Cuboid, i64, Dims), Tally>,
) -> BTreeMap<(Level, Cuboid, i64, Dims), Tally> {
    for (key, tally) in added {
        stored.entry(key).or_default().merge(&tally);
    }
    stored
}

/// A bot's position row at the feed's beginning, unless it has one.
pub(super) fn new_position_row(bot_id: &str) -> Sql {
    sql(
        "INSERT INTO stats_positions (bot_id, position, counted, updated_at)
         VALUES ($1, $2, 0, $3) ON CONFLICT (bot_id) DO NOTHING",
        [
            Bind::Text(bot_id.to_owned()),
            Bind::Text(position_text(&FeedPosition::beginning())),
            Bind::Int(now_micros()),
        ],
    )
}

// Concrete per store, not generic over the executor: a generic executor in these futures
// trips the compiler's higher-ranked lifetime check where the worker is spawned.

pub(super) async fn execute_pg(
    connection: &mut sqlx::PgConnection,
    query: Sql,
) -> Result<(), sqlx::Error> {
    let mut statement = sqlx::query::<sqlx::Postgres>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.execute(connection).await.map(|_| ())
}

pub(super) async fn execute_sqlite(
    connection: &mut sqlx::SqliteConnection,
    query: Sql,
) -> Result<(), sqlx::Error> {
    let mut statement = sqlx::query::<sqlx::Sqlite>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.execute(connection).await.map(|_| ())
}

pub(super) async fn position_pg(
    connection: &mut sqlx::PgConnection,
    query: Sql,
) -> Result<Option<String>, sqlx::Error> {
    let mut statement = sqlx::query_scalar::<sqlx::Postgres, String>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.fetch_optional(connection).await
}

pub(super) async fn position_sqlite(
    connection: &mut sqlx::SqliteConnection,
    query: Sql,
) -> Result<Option<String>, sqlx::Error> {
    let mut statement = sqlx::query_scalar::<sqlx::Sqlite, String>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.fetch_optional(connection).await
}

pub(super) fn position_text(position: &FeedPosition) -> String {
    serde_json::to_string(position).expect("a position is JSON")
}

/// A group's dimensions as a slot row's key: `[participant, queue, experience, language,
/// service]`.
pub(super) fn key_text(dims: &Dims) -> String {
    let conversation = &dims.conversation;
    serde_json::to_string(&[
        &dims.participant,
        &dims.queue,
        &conversation.experience,
        &conversation.language,
        &conversation.service,
    ])
    .expect("dims are JSON")
}

pub(super) fn dims_of(key: &str) -> Result<Dims, StoreError> {
    let [participant, queue, experience, language, service]: [Option<String>; 5] =
        serde_json::from_str(key).map_err(|error| anyhow::anyhow!("unreadable key: {error}"))?;
    Ok(Dims {
        participant,
        queue,
        conversation: crate::domain::stats::ConversationDims {
            experience,
            language,
            service,
        },
    })
}

pub(super) fn tally_of(tally: &str) -> Result<Tally, StoreError> {
    Ok(
        serde_json::from_str(tally)
            .map_err(|error| anyhow::anyhow!("unreadable tally: {error}"))?,
    )
}

/// A cuboid's id in storage: its level's and its own.
pub(super) fn stored_cuboid(level: Level, cuboid: Cuboid) -> i64 {
    i64::from(level.id() + cuboid.id())
}

pub(super) fn stored_grouping(level: Level, mask: usize) -> i64 {
    i64::from(level.id()) + mask as i64
}

pub(super) fn level_and_cuboid(id: i64) -> Result<(Level, Cuboid), StoreError> {
    Level::ALL
        .into_iter()
        .flat_map(|level| Cuboid::ALL.into_iter().map(move |cuboid| (level, cuboid)))
        .find(|(level, cuboid)| stored_cuboid(*level, *cuboid) == id)
        .ok_or_else(|| anyhow::anyhow!("unknown stats cuboid {id}").into())
}

pub(super) use crate::store::codec::{at_micros, now_micros};
