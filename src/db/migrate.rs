//! Applying the tenant migrations: every step and its record in one transaction,
//! serialised between processes on PostgreSQL.

use super::{
    begin_write, database_name, is_sqlite_busy, is_unique_violation, redact_error, sql_state,
};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

use crate::tenant::TenantConfig;

/// Tenant migrations this process applied, and tenant migration runs that failed
/// (process totals, for `GET /metrics`).
static APPLIED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// The process's tenant migration totals: (migrations applied, runs failed).
pub fn migration_totals() -> (u64, u64) {
    (
        APPLIED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    )
}

/// Applies pending migrations to the tenant's database (see [`migrate_with`]),
/// keyed by the tenant's storage; counts them in [`migration_totals`].
pub async fn migrate(db: &DatabaseConnection, tenant: &TenantConfig) -> Result<(), DbErr> {
    let key = format!(
        "tenant-router:{}:{}",
        database_name(tenant.database_url.expose())?,
        tenant.schema_name().unwrap_or_default()
    );
    match migrate_with::<Migrator>(db, &key).await {
        Ok(applied) => {
            let applied = applied as u64;
            APPLIED.fetch_add(applied, Ordering::Relaxed);
            if applied > 0 {
                tracing::info!(tenant_id = %tenant.id, applied, "tenant migrations applied");
            }
            Ok(())
        }
        Err(e) => {
            FAILED.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// How many tenant migrations the database has not applied (it is not changed:
/// no migration table is created).
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<usize, DbErr> {
    let applied = applied_count::<Migrator>(db).await?;
    Ok(Migrator::migrations().len().saturating_sub(applied))
}

/// Rows of `M`'s migration table, 0 when it does not exist yet. Cheap on a server
/// with thousands of schemas: `to_regclass` on the search path (PostgreSQL) or
/// `sqlite_master`, where sea-orm's own check reads `information_schema`.
async fn applied_count<M: MigratorTrait>(db: &impl ConnectionTrait) -> Result<usize, DbErr> {
    let table = M::migration_table_name().to_string();
    let backend = db.get_database_backend();
    let exists = match backend {
        DbBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "SELECT (CASE WHEN to_regclass($1) IS NULL THEN 0 ELSE 1 END)::bigint AS n",
            [super::quote_ident(&table).into()],
        ),
        _ => Statement::from_sql_and_values(
            backend,
            "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
            [table.clone().into()],
        ),
    };
    if super::count(db, exists).await? == 0 {
        return Ok(0);
    }
    let rows = Statement::from_string(
        backend,
        format!("SELECT count(*) AS n FROM {}", super::quote_ident(&table)),
    );
    Ok(usize::try_from(super::count(db, rows).await?).unwrap_or(0))
}

/// Applies `M`'s pending migrations in one transaction, so that two replicas (or a
/// request and the CLI) migrating the same database take turns instead of colliding
/// on the catalog, and DDL rolls back whole if a step fails. On PostgreSQL the
/// transaction holds an advisory lock on `key`; on SQLite it is `BEGIN IMMEDIATE`,
/// whose write lock the second process waits for on the busy timeout, then finds
/// the work done.
pub async fn migrate_with<M: MigratorTrait>(
    db: &DatabaseConnection,
    key: &str,
) -> Result<usize, DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return retry_lost_race(|| async {
            let txn = begin_write(db).await?;
            let before = applied_count::<M>(&txn).await?;
            M::up(&txn, None).await?;
            let applied = applied_count::<M>(&txn).await?.saturating_sub(before);
            txn.commit().await?;
            Ok(applied)
        })
        .await;
    }
    let txn = db.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [lock_key(key).into()],
    ))
    .await?;
    // Counted under the lock: what this run applies.
    let before = applied_count::<M>(&txn).await?;
    M::up(&txn, None).await?;
    let applied = applied_count::<M>(&txn).await?.saturating_sub(before);
    txn.commit().await?;
    Ok(applied)
}

/// Runs a migration again when it lost a race with another process (a second
/// replica starting at the same moment) applying the same migration: SQLite has no
/// advisory lock, so the loser meets a busy database, a table that now exists, or a
/// duplicate row in the migration table. Its next run finds the work done. Any other
/// failure is returned at once; if the retries fail too, the first error is the one
/// returned, since it names the cause.
pub(super) async fn retry_lost_race<T, F, Fut>(mut run: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let first = match run().await {
        Ok(done) => return Ok(done),
        Err(e) if lost_race(&e) => e,
        Err(e) => return Err(e),
    };
    tracing::info!(error = %redact_error(&first), "migration met another process's; trying again");
    for tries in 1..=5u64 {
        tokio::time::sleep(Duration::from_millis(100 * tries)).await;
        match run().await {
            Ok(done) => return Ok(done),
            Err(e) if lost_race(&e) => continue,
            Err(_) => break,
        }
    }
    Err(first)
}

/// What a migration running beside another one's meets.
pub(super) fn lost_race(err: &DbErr) -> bool {
    is_sqlite_busy(err)
        || is_unique_violation(err)
        // PostgreSQL: duplicate table, schema or object; SQLite says it in words.
        || sql_state(err).is_some_and(|c| matches!(c.as_str(), "42P07" | "42P06" | "42710"))
        || redact_error(err).contains("already exists")
        || redact_error(err).contains("duplicate column")
}

/// A stable 64-bit key for `name` (FNV-1a): the same in every replica and version.
pub(super) fn lock_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}
