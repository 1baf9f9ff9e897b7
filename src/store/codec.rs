//! How values travel to and from either database: a time both encode the same way, the
//! binds of SQL built at run time, and that SQL.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{
    AssertSqlSafe, Database, Decode, Encode, Executor, FromRow, IntoArguments, Postgres, Sqlite,
    Type,
};
use std::fmt::Write;
use time::OffsetDateTime;

/// A time as the stores keep it: `timestamptz` in PostgreSQL; in SQLite, microseconds
/// since the Unix epoch, so that times sort and compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime(pub OffsetDateTime);

impl DbTime {
    fn micros(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    fn from_micros(micros: i64) -> Self {
        Self(
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    /// The time as the stores keep it, to the microsecond.
    pub fn truncated(at: OffsetDateTime) -> OffsetDateTime {
        Self::from_micros(Self(at).micros()).0
    }
}

impl From<DbTime> for OffsetDateTime {
    fn from(DbTime(at): DbTime) -> Self {
        at
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <OffsetDateTime as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Decode<'_, Postgres> for DbTime {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Self(<OffsetDateTime as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.micros(), buf)
    }
}

impl Decode<'_, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        Ok(Self::from_micros(<i64 as Decode<Sqlite>>::decode(value)?))
    }
}

/// A value bound to a placeholder of shared SQL: text, an integer or a time, each bound
/// as its own type.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Time(OffsetDateTime),
    /// A text column's NULL.
    NoText,
    /// An integer column's NULL.
    NoInt,
    /// Arrays (PostgreSQL only), for `UNNEST`.
    Ints(Vec<i64>),
    Texts(Vec<Option<String>>),
}

impl From<Option<String>> for Bind {
    fn from(text: Option<String>) -> Self {
        text.map_or(Self::NoText, Self::Text)
    }
}

impl Type<Postgres> for Bind {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Bind {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Text(text) => <String as Encode<Postgres>>::encode_by_ref(text, buf),
            Self::Int(number) => <i64 as Encode<Postgres>>::encode_by_ref(number, buf),
            Self::Time(at) => <DbTime as Encode<Postgres>>::encode_by_ref(&DbTime(*at), buf),
            Self::NoText | Self::NoInt => Ok(IsNull::Yes),
            Self::Ints(numbers) => <Vec<i64> as Encode<Postgres>>::encode_by_ref(numbers, buf),
            Self::Texts(texts) => {
                <Vec<Option<String>> as Encode<Postgres>>::encode_by_ref(texts, buf)
            }
        }
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(match self {
            Self::Text(_) | Self::NoText => <String as Type<Postgres>>::type_info(),
            Self::Int(_) | Self::NoInt => <i64 as Type<Postgres>>::type_info(),
            Self::Ints(_) => <Vec<i64> as Type<Postgres>>::type_info(),
            Self::Texts(_) => <Vec<Option<String>> as Type<Postgres>>::type_info(),
            Self::Time(_) => <DbTime as Type<Postgres>>::type_info(),
        })
    }
}

impl Type<Sqlite> for Bind {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Bind {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            Self::Text(text) => <String as Encode<Sqlite>>::encode_by_ref(text, buf),
            Self::Int(number) => <i64 as Encode<Sqlite>>::encode_by_ref(number, buf),
            Self::Time(at) => <DbTime as Encode<Sqlite>>::encode_by_ref(&DbTime(*at), buf),
            Self::NoText | Self::NoInt => Ok(IsNull::Yes),
            Self::Ints(_) | Self::Texts(_) => Err("SQLite has no arrays".into()),
        }
    }

    fn produces(&self) -> Option<SqliteTypeInfo> {
        Some(match self {
            Self::Text(_) | Self::NoText | Self::Ints(_) | Self::Texts(_) => {
                <String as Type<Sqlite>>::type_info()
            }
            Self::Int(_) | Self::NoInt | Self::Time(_) => <i64 as Type<Sqlite>>::type_info(),
        })
    }
}

/// SQL text with its binds, in placeholder order.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub(super) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(super) fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        let _ = write!(self.text, "${}", self.binds.len());
        self
    }

    pub(super) fn text(value: &str) -> Bind {
        Bind::Text(value.to_owned())
    }
}

/// Now, in the microseconds since the Unix epoch that the stats and webhook tables keep.
pub(super) fn now_micros() -> i64 {
    micros_at(OffsetDateTime::now_utc())
}

/// A time as those tables keep it.
pub(super) fn micros_at(at: OffsetDateTime) -> i64 {
    DbTime(at).micros()
}

/// A time those tables kept.
pub(super) fn at_micros(micros: i64) -> OffsetDateTime {
    DbTime::from_micros(micros).0
}

/// The rows `query` reads from `pool`.
pub(super) async fn fetch_all<DB, R>(
    pool: &sqlx::Pool<DB>,
    query: Sql,
) -> Result<Vec<R>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
    R: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut statement = sqlx::query_as::<DB, R>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    statement.fetch_all(pool).await
}

/// Runs `query` on `pool`; how many rows it changed.
pub(super) async fn execute<DB>(pool: &sqlx::Pool<DB>, query: Sql) -> Result<u64, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> Bind: Encode<'q, DB> + Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    DB::QueryResult: RowsAffected,
{
    let mut statement = sqlx::query::<DB>(AssertSqlSafe(query.text));
    for bind in query.binds {
        statement = statement.bind(bind);
    }
    Ok(statement.execute(pool).await?.changed())
}

/// Rows a statement changed, on either database.
pub(super) trait RowsAffected {
    fn changed(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn changed(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn changed(&self) -> u64 {
        self.rows_affected()
    }
}

impl super::Store {
    /// The rows `query` reads, on either database (PostgreSQL within the read deadline).
    pub(super) async fn fetch_rows<R>(&self, query: Sql) -> Result<Vec<R>, super::StoreError>
    where
        R: for<'r> FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        match &self.backend {
            super::Backend::Postgres(store) => {
                store
                    .deadlines()
                    .read(async { Ok(fetch_all(store.pool(), query).await?) })
                    .await
            }
            super::Backend::Sqlite(store) => Ok(fetch_all(store.reader(), query).await?),
        }
    }

    /// Runs `query` on either database (PostgreSQL within the write deadline); how many
    /// rows it changed.
    pub(super) async fn execute_sql(&self, query: Sql) -> Result<u64, super::StoreError> {
        match &self.backend {
            super::Backend::Postgres(store) => {
                store
                    .deadlines()
                    .write(async { Ok(execute(store.pool(), query).await?) })
                    .await
            }
            super::Backend::Sqlite(store) => Ok(execute(store.writer(), query).await?),
        }
    }
}
