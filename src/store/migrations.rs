//! Schema migrations, applied by either backend; a newer release's are tolerated.

use super::StoreError;

/// The versions of the migrations applied to a database.
async fn applied_migrations<'c, DB, E>(executor: E) -> Result<Vec<i64>, StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(executor)
        .await?;
    Ok(applied.into_iter().map(|(version,)| version).collect())
}

/// Applies `migrator`'s pending migrations on `connection`, then logs the applied versions
/// it does not know: a newer release migrated the database. Its migrations are written
/// expand-then-contract, so this one serves on.
pub(super) async fn migrate<DB>(
    migrator: &sqlx::migrate::Migrator,
    connection: &mut DB::Connection,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    migrator
        .run_direct(None, connection, false)
        .await
        .map_err(migration_failed)?;
    let unknown: Vec<i64> = applied_migrations(connection)
        .await?
        .into_iter()
        .filter(|version| !migrator.version_exists(*version))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the database has migrations this binary does not know (applied by a newer \
             release); serving with the schema as it is"
        );
    }
    Ok(())
}

/// Ok when every migration of `migrator` is applied.
pub(super) async fn require_migrations<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let applied = applied_migrations(pool).await?;
    let missing = migrator
        .iter()
        .filter(|migration| !applied.contains(&migration.version))
        .count();
    if missing == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{missing} migration(s) not applied").into())
    }
}

/// A failed migration: unavailable if the database could not be reached, else a bug or a
/// changed migration file.
fn migration_failed(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(error) => StoreError::from(error),
        other => StoreError::Other(anyhow::Error::new(other).context("migration failed")),
    }
}
