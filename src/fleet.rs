//! Migrating every tenant database: a version check per tenant, migrations only
//! where something is pending, a bounded number at a time, carrying on past a
//! failing tenant, and a row per tenant for the report.

use std::time::{Duration, Instant};

use futures::StreamExt;
use migration::{Migrator, MigratorTrait};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use crate::{db, settings::PoolSettings, tenant::TenantConfig};

/// What happened to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing was pending; only the version was read.
    UpToDate,
    /// Pending migrations were applied.
    Migrated,
    /// Dry run: migrations are pending and were not applied.
    Pending,
    /// The tenant could not be checked or migrated; see `error`.
    Failed,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct TenantMigration {
    pub tenant_id: String,
    /// The last applied migration before and after (None: none applied).
    pub before: Option<String>,
    pub after: Option<String>,
    pub status: Outcome,
    pub pending: Vec<String>,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// Options of a fleet run.
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    pub concurrency: usize,
    pub dry_run: bool,
}

/// Checks and migrates `tenants`, `options.concurrency` at a time; `progress` is
/// called after each tenant with (done, total).
pub async fn migrate_fleet(
    tenants: Vec<TenantConfig>,
    settings: &PoolSettings,
    options: FleetOptions,
    ledger: Option<&dyn db::StorageLedger>,
    progress: impl Fn(usize, usize),
) -> Vec<TenantMigration> {
    let total = tenants.len();
    let mut settings = settings.clone();
    // The version check comes first; nothing is applied on open.
    settings.auto_migrate = false;
    let settings = &settings;
    let mut done = 0;
    let mut rows: Vec<TenantMigration> = futures::stream::iter(tenants)
        .map(|tenant| async move { migrate_one(&tenant, settings, options.dry_run, ledger).await })
        .buffer_unordered(options.concurrency.max(1))
        .inspect(|_| {
            done += 1;
            progress(done, total);
        })
        .collect()
        .await;
    rows.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    rows
}

async fn migrate_one(
    tenant: &TenantConfig,
    settings: &PoolSettings,
    dry_run: bool,
    ledger: Option<&dyn db::StorageLedger>,
) -> TenantMigration {
    let started = Instant::now();
    let mut row = TenantMigration {
        tenant_id: tenant.id.to_string(),
        before: None,
        after: None,
        status: Outcome::Failed,
        pending: Vec::new(),
        duration_ms: 0,
        error: None,
    };
    match run(tenant, settings, dry_run, ledger, &mut row).await {
        Ok(status) => row.status = status,
        Err(e) => row.error = Some(db::redact_error(&e)),
    }
    row.duration_ms = duration_ms(started.elapsed());
    row
}

async fn run(
    tenant: &TenantConfig,
    settings: &PoolSettings,
    dry_run: bool,
    ledger: Option<&dyn db::StorageLedger>,
    row: &mut TenantMigration,
) -> Result<Outcome, sea_orm::DbErr> {
    // A dry run changes nothing, not even by creating a SQLite file that is not
    // there yet: such a tenant has every migration pending.
    if dry_run
        && !tenant.database_url.expose().starts_with("postgres")
        && !db::storage_exists(tenant, settings).await?
    {
        row.pending = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        return Ok(Outcome::Pending);
    }
    // Creates the storage only of a tenant never initialised; a vanished one fails.
    let pool = db::open_tenant_storage(tenant, 1, settings, ledger).await?;
    let result = async {
        let (applied, pending) = versions(&pool).await?;
        row.before = applied.clone();
        row.after = applied;
        row.pending = pending;
        if row.pending.is_empty() {
            return Ok(Outcome::UpToDate);
        }
        if dry_run {
            return Ok(Outcome::Pending);
        }
        db::migrate(&pool, tenant).await?;
        let (applied, pending) = versions(&pool).await?;
        row.after = applied;
        row.pending = pending;
        Ok(Outcome::Migrated)
    }
    .await;
    let _ = pool.close().await;
    result
}

/// The last applied migration and the pending ones, read without writing.
async fn versions(
    db: &DatabaseConnection,
) -> Result<(Option<String>, Vec<String>), sea_orm::DbErr> {
    let all = Migrator::get_migration_with_status_read_only(db).await?;
    let applied = all
        .iter()
        .filter(|m| m.status() == migration::MigrationStatus::Applied)
        .map(|m| m.name().to_string())
        .next_back();
    let pending = all
        .iter()
        .filter(|m| m.status() == migration::MigrationStatus::Pending)
        .map(|m| m.name().to_string())
        .collect();
    Ok((applied, pending))
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
