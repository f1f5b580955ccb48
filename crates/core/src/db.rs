//! PostgreSQL pool and migrations.

use std::time::Duration;

use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::settings::DatabaseSettings;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Opens a pool lazily: the process starts (and answers `/healthz`) while PostgreSQL is
/// still coming up, and each query reports unavailability on its own.
///
/// # Errors
/// An unparsable database URL.
pub fn connect_lazy(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        // No ping before each use: it doubled the round trips of every query. A
        // connection that died (PostgreSQL restarted) fails its next query, which the
        // callers treat as unavailability and retry.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .connect_lazy(&settings.url)
}

/// Applies every pending migration.
///
/// # Errors
/// PostgreSQL unreachable or a migration failing.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether every embedded migration has been applied.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .or_else(|e| match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(vec![]),
                _ => Err(e),
            })?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .all(|m| applied.contains(&m.version)))
}
