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
    // A dry run changes nothing, not even by creating storage that is not there
    // yet (a SQLite file; a PostgreSQL database or schema, which
    // `AUTO_CREATE_DATABASES` would make): such a tenant has every migration
    // pending. (Without that setting PostgreSQL storage is never made here, and
    // a database is not looked for through the server's `postgres` database.)
    // (Without it, a missing schema fails the dry run as it fails a real run.)
    let could_make =
        !tenant.database_url.expose().starts_with("postgres") || settings.auto_create_databases;
    if dry_run && could_make && !db::storage_exists(tenant, settings).await? {
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

/// Where one tenant of a fleet job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobTenantState {
    Queued,
    Running,
    UpToDate,
    Migrated,
    Failed,
}

/// One tenant of a fleet job, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobTenant {
    pub tenant_id: String,
    pub state: JobTenantState,
    /// The last applied migration before and after.
    pub before: Option<String>,
    pub after: Option<String>,
    /// What was pending when the tenant was checked.
    pub pending: Vec<String>,
    pub duration_ms: Option<u64>,
    /// Why it failed (no secret: URLs and passwords are removed).
    pub error: Option<String>,
}

/// A fleet migration run by the service (`POST /api/admin/migrations`): each
/// tenant's state, live.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: u64,
    /// `running` or `finished`.
    pub status: &'static str,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub total: usize,
    pub done: usize,
    pub migrated: usize,
    pub up_to_date: usize,
    pub failed: usize,
    pub tenants: Vec<JobTenant>,
}

impl JobView {
    fn recount(&mut self) {
        let count = |s: JobTenantState| self.tenants.iter().filter(|t| t.state == s).count();
        self.migrated = count(JobTenantState::Migrated);
        self.up_to_date = count(JobTenantState::UpToDate);
        self.failed = count(JobTenantState::Failed);
        self.done = self.migrated + self.up_to_date + self.failed;
    }
}

/// Why a job could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    /// Another job of this replica is running (its id).
    Running(u64),
    NoTenants,
}

/// The fleet migrations of this process: one runs at a time; the last
/// [`FleetJobs::KEPT`] are kept for their reports. A job belongs to the replica that
/// runs it; each tenant's migration takes the database's migration lock, so jobs
/// started on two replicas at once are safe, just not shown on both.
pub struct FleetJobs {
    jobs: std::sync::Mutex<Vec<std::sync::Arc<std::sync::Mutex<JobView>>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Default for FleetJobs {
    fn default() -> Self {
        Self::new()
    }
}

impl FleetJobs {
    pub const KEPT: usize = 20;

    pub fn new() -> Self {
        Self {
            jobs: std::sync::Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Arc<std::sync::Mutex<JobView>>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts migrating `tenants`, `concurrency` at a time, through the
    /// registry's connections (they count against each server's budget), and
    /// returns the job as it starts. The job runs on even if nobody watches it.
    pub fn start(
        &self,
        registry: crate::registry::TenantRegistry,
        tenants: Vec<std::sync::Arc<TenantConfig>>,
        concurrency: usize,
    ) -> Result<JobView, StartError> {
        if tenants.is_empty() {
            return Err(StartError::NoTenants);
        }
        let mut jobs = self.jobs();
        if let Some(running) = jobs.iter().find_map(|j| {
            let j = j.lock().unwrap_or_else(|p| p.into_inner());
            (j.status == "running").then_some(j.id)
        }) {
            return Err(StartError::Running(running));
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let view = JobView {
            id,
            status: "running",
            started_at: chrono::Utc::now(),
            finished_at: None,
            total: tenants.len(),
            done: 0,
            migrated: 0,
            up_to_date: 0,
            failed: 0,
            tenants: tenants
                .iter()
                .map(|t| JobTenant {
                    tenant_id: t.id.to_string(),
                    state: JobTenantState::Queued,
                    before: None,
                    after: None,
                    pending: Vec::new(),
                    duration_ms: None,
                    error: None,
                })
                .collect(),
        };
        let job = std::sync::Arc::new(std::sync::Mutex::new(view.clone()));
        jobs.push(job.clone());
        let excess = jobs.len().saturating_sub(Self::KEPT);
        jobs.drain(..excess);
        drop(jobs);
        tracing::info!(job = id, tenants = tenants.len(), "fleet migration started");
        tokio::spawn(run_job(job, registry, tenants, concurrency.max(1)));
        Ok(view)
    }

    /// A job as it stands now.
    pub fn get(&self, id: u64) -> Option<JobView> {
        self.jobs()
            .iter()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()))
            .find(|j| j.id == id)
            .map(|j| j.clone())
    }

    /// Every kept job, newest first.
    pub fn list(&self) -> Vec<JobView> {
        let mut jobs: Vec<JobView> = self
            .jobs()
            .iter()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        jobs.reverse();
        jobs
    }
}

/// Marks a job finished if its task ends without doing so (a panic), so that it
/// never stays "running" and blocks every later run: the tenants it had not
/// finished are failed.
struct FinishOnDrop(std::sync::Arc<std::sync::Mutex<JobView>>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        let mut view = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if view.status != "running" {
            return;
        }
        for tenant in &mut view.tenants {
            if matches!(
                tenant.state,
                JobTenantState::Queued | JobTenantState::Running
            ) {
                tenant.state = JobTenantState::Failed;
                tenant.error = Some("the run stopped before this tenant finished".into());
            }
        }
        view.recount();
        view.status = "finished";
        view.finished_at = Some(chrono::Utc::now());
        tracing::error!(job = view.id, "fleet migration stopped early");
    }
}

async fn run_job(
    job: std::sync::Arc<std::sync::Mutex<JobView>>,
    registry: crate::registry::TenantRegistry,
    tenants: Vec<std::sync::Arc<TenantConfig>>,
    concurrency: usize,
) {
    let _finish = FinishOnDrop(job.clone());
    let update = |index: usize, f: &dyn Fn(&mut JobTenant)| {
        let mut view = job.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut view.tenants[index]);
        view.recount();
    };
    let registry = &registry;
    let update = &update;
    futures::stream::iter(tenants.into_iter().enumerate())
        .for_each_concurrent(concurrency, |(index, tenant)| async move {
            update(index, &|t| t.state = JobTenantState::Running);
            let started = Instant::now();
            let outcome = migrate_in_registry(registry, &tenant).await;
            let took = duration_ms(started.elapsed());
            match &outcome {
                Ok(_) => {
                    if let Some(events) = registry.events() {
                        events.migrations_pending(&tenant.id, 0);
                    }
                }
                Err(error) => {
                    tracing::warn!(tenant_id = %tenant.id, %error, "fleet migration: the tenant failed")
                }
            }
            update(index, &|t| {
                t.duration_ms = Some(took);
                match &outcome {
                    Ok(row) => {
                        t.state = row.state;
                        t.before = row.before.clone();
                        t.after = row.after.clone();
                        t.pending = row.pending.clone();
                    }
                    Err(error) => {
                        t.state = JobTenantState::Failed;
                        t.error = Some(error.clone());
                    }
                }
            });
        })
        .await;
    let mut view = job.lock().unwrap_or_else(|p| p.into_inner());
    view.status = "finished";
    view.finished_at = Some(chrono::Utc::now());
    tracing::info!(
        job = view.id,
        migrated = view.migrated,
        up_to_date = view.up_to_date,
        failed = view.failed,
        "fleet migration finished"
    );
}

/// What one tenant's migration found and did.
struct Migrated {
    state: JobTenantState,
    before: Option<String>,
    after: Option<String>,
    pending: Vec<String>,
}

/// Migrates one tenant on a connection of the registry's; the error is the
/// redacted text an operator may see.
async fn migrate_in_registry(
    registry: &crate::registry::TenantRegistry,
    tenant: &TenantConfig,
) -> Result<Migrated, String> {
    let result = registry
        .with_own_connection(tenant, async |db| {
            let (before, pending) = versions(db).await?;
            if pending.is_empty() {
                return Ok(Migrated {
                    state: JobTenantState::UpToDate,
                    after: before.clone(),
                    before,
                    pending,
                });
            }
            db::migrate(db, tenant).await?;
            let (after, _) = versions(db).await?;
            Ok(Migrated {
                state: JobTenantState::Migrated,
                before,
                after,
                pending,
            })
        })
        .await;
    result.map_err(|e| match e {
        crate::error::AppError::Internal { detail } => crate::secret::redact(&detail),
        other => other.to_string(),
    })
}
