//! The tenant registry: tenant id → configuration, and the bounded set of open
//! connection pools, one per tenant database.
//!
//! Configurations sit behind an `RwLock<Arc<…>>` that is swapped whole, so a reader
//! holds the lock only to clone an `Arc`. Pools live in a moka cache: built on first
//! use (single flight), closed when idle past the timeout or when the number of open
//! pools passes `MAX_OPEN_POOLS` (least recently used first).
//!
//! Two guards keep one tenant's trouble its own:
//! - a global connection budget (`MAX_TOTAL_CONNECTIONS`): a pool reserves its size
//!   before it opens and gives it back only once closed, so the pools together never
//!   hold more connections than the servers allow; when the budget is short, the
//!   least recently used idle pools are closed to make room;
//! - a circuit breaker per tenant: after its database fails, requests get a fast 503
//!   for a pause (doubling per failure) instead of piling up connection attempts.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::{future::Cache, notification::RemovalCause, policy::EvictionPolicy};
use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{TenantConfig, TenantId};
use crate::{db, error::AppError, settings::PoolSettings};

/// Longest pause of a tripped breaker.
const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// Configurations by id and by subdomain label; replaced as a whole.
#[derive(Default)]
struct TenantTable {
    by_id: HashMap<TenantId, Arc<TenantConfig>>,
    by_subdomain: HashMap<String, TenantId>,
}

impl TenantTable {
    fn new(tenants: Vec<TenantConfig>) -> Self {
        let mut table = Self::default();
        for t in tenants {
            table.by_subdomain.insert(t.subdomain.clone(), t.id.clone());
            table.by_id.insert(t.id.clone(), Arc::new(t));
        }
        table
    }
}

#[derive(Default)]
struct Counters {
    built: AtomicU64,
    open: AtomicU64,
    failures: AtomicU64,
    closed: AtomicU64,
    short_circuited: AtomicU64,
    budget_timeouts: AtomicU64,
}

/// A snapshot of the pool counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Pools built since start-up.
    pub pools_built: u64,
    /// Pools open now.
    pub pools_open: u64,
    /// Pools closed since start-up (idle, capacity, budget or failure).
    pub pools_closed: u64,
    /// Attempts to open a pool that failed.
    pub pool_failures: u64,
    /// Requests answered 503 at once because the tenant's breaker was open.
    pub short_circuited: u64,
    /// Requests that waited for the connection budget past their deadline.
    pub budget_timeouts: u64,
    /// Connections reserved by open pools, and the budget (0: unbounded).
    pub connections_reserved: u64,
    pub connections_budget: u64,
}

/// One open pool, as `GET /api/admin/pools` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolDetail {
    pub tenant_id: TenantId,
    pub connections: u32,
    pub max_connections: u32,
}

/// An open pool and the share of the connection budget it holds until dropped,
/// which the eviction listener does only after the pool has closed.
struct TenantPool {
    db: DatabaseConnection,
    max_connections: u32,
    opened_at: Instant,
    /// Set by the first report of a database failure on this pool, so that one
    /// outage trips the breaker once however many requests saw it.
    reported: AtomicBool,
    counters: Arc<Counters>,
    /// Requests holding a [`PoolLease`] on this pool now.
    leases: AtomicU64,
    /// Milliseconds since the registry started, at the last request.
    last_used: AtomicU64,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Held by a request for as long as it may use its tenant's pool, so that the
/// budget never closes a pool between a request finding it and using it.
pub struct PoolLease(Arc<TenantPool>);

impl Drop for PoolLease {
    fn drop(&mut self) {
        self.0.leases.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for TenantPool {
    fn drop(&mut self) {
        // Counted here rather than in the eviction listener, so that a pool dropped
        // without being evicted (an open cancelled mid-insert) is not counted open.
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TenantPool {
    /// Connections open now (idle or checked out).
    fn size(&self) -> u32 {
        use sea_orm::DatabaseConnectionType as T;
        match &self.db.inner {
            T::SqlxPostgresPoolConnection(_) => self.db.get_postgres_connection_pool().size(),
            T::SqlxSqlitePoolConnection(_) => self.db.get_sqlite_connection_pool().size(),
            _ => 0,
        }
    }

    /// Closes the pool once no request holds a lease on it; the budget share it
    /// holds goes back when the last reference drops, after the close.
    async fn close_when_released(self: Arc<Self>, tenant: Arc<TenantId>, cause: RemovalCause) {
        while self.leases.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = self.db.close_by_ref().await {
            tracing::warn!(tenant_id = %tenant, error = %db::redact_error(&e), "closing pool failed");
        }
        tracing::info!(tenant_id = %tenant, reason = ?cause, "tenant pool closed");
    }

    fn lease(self: &Arc<Self>) -> PoolLease {
        self.leases.fetch_add(1, Ordering::Relaxed);
        PoolLease(self.clone())
    }

    /// Whether the budget may close this pool now: no request holds it and no
    /// connection is checked out.
    fn is_idle(&self) -> bool {
        self.leases.load(Ordering::Relaxed) == 0 && self.in_use() == 0
    }

    /// Connections checked out now.
    fn in_use(&self) -> u32 {
        use sea_orm::DatabaseConnectionType as T;
        match &self.db.inner {
            T::SqlxPostgresPoolConnection(_) => {
                let pool = self.db.get_postgres_connection_pool();
                pool.size().saturating_sub(pool.num_idle() as u32)
            }
            T::SqlxSqlitePoolConnection(_) => {
                let pool = self.db.get_sqlite_connection_pool();
                pool.size().saturating_sub(pool.num_idle() as u32)
            }
            _ => 0,
        }
    }
}

struct Breaker {
    failures: u32,
    open_until: Instant,
}

struct Inner {
    table: RwLock<Arc<TenantTable>>,
    pools: Cache<TenantId, Arc<TenantPool>>,
    counters: Arc<Counters>,
    settings: PoolSettings,
    budget: Option<Arc<Semaphore>>,
    breakers: Mutex<HashMap<TenantId, Breaker>>,
    started: Instant,
}

/// Shared handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct TenantRegistry {
    inner: Arc<Inner>,
}

impl TenantRegistry {
    /// Builds the registry. Opens no pool: pools are built on first use. Must be
    /// called inside a tokio runtime (it starts the task that closes idle pools).
    pub fn new(tenants: Vec<TenantConfig>, settings: PoolSettings) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = counters.clone();
        let pools = Cache::builder()
            .max_capacity(settings.max_open_pools)
            .eviction_policy(EvictionPolicy::lru())
            .time_to_idle(settings.idle_timeout)
            .async_eviction_listener(
                move |tenant: Arc<TenantId>, pool: Arc<TenantPool>, cause: RemovalCause| {
                    let counters = listener_counters.clone();
                    Box::pin(async move {
                        counters.closed.fetch_add(1, Ordering::Relaxed);
                        // Closing waits for the pool's in-flight queries; done in a task
                        // of its own so that no other tenant's request waits on them
                        // (moka runs this listener inside its housekeeping).
                        tokio::spawn(pool.close_when_released(tenant, cause));
                    })
                },
            )
            .build();
        let budget = settings
            .max_total_connections
            .map(|n| Arc::new(Semaphore::new(n as usize)));
        let inner = Arc::new(Inner {
            table: RwLock::new(Arc::new(TenantTable::new(tenants))),
            pools,
            counters,
            settings,
            budget,
            breakers: Mutex::new(HashMap::new()),
            started: Instant::now(),
        });
        spawn_janitor(Arc::downgrade(&inner));
        Self { inner }
    }

    fn table(&self) -> Arc<TenantTable> {
        // A poisoned lock still holds a whole table: it is only ever swapped.
        match self.inner.table.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces every tenant at once (a reload). Pools of tenants that are gone, or
    /// whose database settings changed, are closed; the others stay open.
    pub async fn replace_all(&self, tenants: Vec<TenantConfig>) {
        let new = Arc::new(TenantTable::new(tenants));
        let old = self.swap_table(new.clone());
        for (id, before) in &old.by_id {
            let keep = new
                .by_id
                .get(id)
                .is_some_and(|after| same_storage(before, after));
            if !keep {
                self.inner.pools.invalidate(id).await;
            }
        }
        self.inner.pools.run_pending_tasks().await;
    }

    /// Adds or replaces one tenant; its pool is closed if its database settings
    /// changed, so the next request opens the new one.
    pub async fn upsert(&self, tenant: TenantConfig) {
        let id = tenant.id.clone();
        let mut changed_storage = false;
        self.update_table(|table| {
            if let Some(old) = table.by_id.get(&id) {
                table.by_subdomain.remove(&old.subdomain);
                changed_storage = !same_storage(old, &tenant);
            }
            table
                .by_subdomain
                .insert(tenant.subdomain.clone(), id.clone());
            table.by_id.insert(id.clone(), Arc::new(tenant));
        });
        if changed_storage {
            self.inner.pools.invalidate(&id).await;
        }
    }

    /// Removes a tenant and closes its pool; returns its last configuration.
    pub async fn remove(&self, id: &TenantId) -> Option<Arc<TenantConfig>> {
        let mut removed = None;
        self.update_table(|table| {
            removed = table.by_id.remove(id);
            if let Some(old) = &removed {
                table.by_subdomain.remove(&old.subdomain);
            }
        });
        self.inner.pools.invalidate(id).await;
        self.inner.pools.run_pending_tasks().await;
        self.breakers().remove(id);
        removed
    }

    fn swap_table(&self, new: Arc<TenantTable>) -> Arc<TenantTable> {
        let mut guard = self.inner.table.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, new)
    }

    /// Copies the table, changes the copy, and swaps it in; readers never wait on
    /// the change.
    fn update_table(&self, change: impl FnOnce(&mut TenantTable)) {
        let mut guard = self.inner.table.write().unwrap_or_else(|p| p.into_inner());
        let mut table = TenantTable {
            by_id: guard.by_id.clone(),
            by_subdomain: guard.by_subdomain.clone(),
        };
        change(&mut table);
        *guard = Arc::new(table);
    }

    /// The tenant's configuration, if it is registered.
    pub fn get(&self, id: &str) -> Option<Arc<TenantConfig>> {
        self.table().by_id.get(id).cloned()
    }

    /// The tenant whose subdomain label is `label`.
    pub fn by_subdomain(&self, label: &str) -> Option<TenantId> {
        self.table().by_subdomain.get(label).cloned()
    }

    /// All tenants, sorted by id.
    pub fn list(&self) -> Vec<Arc<TenantConfig>> {
        let mut all: Vec<_> = self.table().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// The tenant's pool, opening it on first use. Concurrent first calls open one
    /// pool; a failure is not cached, but trips the tenant's breaker.
    pub async fn pool(&self, tenant: &TenantConfig) -> Result<DatabaseConnection, AppError> {
        self.lease(tenant).await.map(|(db, _lease)| db)
    }

    /// Like [`pool`](Self::pool), with a lease that keeps the pool open while the
    /// caller holds it (a request's whole life).
    pub async fn lease(
        &self,
        tenant: &TenantConfig,
    ) -> Result<(DatabaseConnection, PoolLease), AppError> {
        if let Some(pool) = self.inner.pools.get(&tenant.id).await {
            pool.last_used.store(self.now_ms(), Ordering::Relaxed);
            return Ok((pool.db.clone(), pool.lease()));
        }
        self.check_breaker(&tenant.id)?;
        let started = Instant::now();
        let opened_here = AtomicBool::new(false);
        let result = self
            .inner
            .pools
            .try_get_with(tenant.id.clone(), async {
                match self.open(tenant).await {
                    Ok(pool) => {
                        opened_here.store(true, Ordering::Relaxed);
                        Ok(Arc::new(pool))
                    }
                    // Runs once per attempt, however many requests wait on it.
                    Err(OpenError::Db(err)) => {
                        tracing::warn!(error = %db::redact_error(&err), "opening tenant pool failed");
                        Err(OpenError::Failed {
                            retry_after_secs: self.trip_breaker(&tenant.id),
                        })
                    }
                    Err(other) => Err(other),
                }
            })
            .await;
        match result {
            Ok(pool) => {
                if opened_here.load(Ordering::Relaxed) {
                    self.reset_breaker(&tenant.id);
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "tenant pool opened"
                    );
                    // Enforce MAX_OPEN_POOLS now rather than at the next housekeeping.
                    self.inner.pools.run_pending_tasks().await;
                }
                Ok((pool.db.clone(), pool.lease()))
            }
            Err(e) => Err(AppError::TenantUnavailable {
                retry_after_secs: match e.as_ref() {
                    OpenError::Failed { retry_after_secs } => *retry_after_secs,
                    OpenError::Budget | OpenError::Db(_) => 1,
                },
                cause: crate::error::UnavailableCause::Router,
            }),
        }
    }

    /// Reserves budget, creates missing storage if asked to, and opens the pool.
    async fn open(&self, tenant: &TenantConfig) -> Result<TenantPool, OpenError> {
        let settings = &self.inner.settings;
        let mut max_connections = tenant
            .pool
            .max_connections
            .unwrap_or(settings.default_max_connections);
        if let Some(total) = settings.max_total_connections {
            max_connections = max_connections.min(total);
        }
        let budget = self.reserve(max_connections).await?;
        if settings.auto_create_databases {
            db::ensure_tenant_storage(tenant, settings)
                .await
                .map_err(OpenError::Db)?;
        }
        let db = db::open_pool(tenant, max_connections, settings)
            .await
            .map_err(OpenError::Db)?;
        // A demo tenant shows sample data from its first request on.
        if tenant.demo && crate::demo::is_empty(&db).await.map_err(OpenError::Db)? {
            crate::demo::seed(&db, tenant)
                .await
                .map_err(OpenError::Db)?;
            tracing::info!("demo tenant seeded");
        }
        if tenant.demo && settings.demo_login {
            crate::demo::ensure_demo_user(&db)
                .await
                .map_err(OpenError::Db)?;
        }
        self.inner.counters.built.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.open.fetch_add(1, Ordering::Relaxed);
        Ok(TenantPool {
            db,
            max_connections,
            opened_at: Instant::now(),
            reported: AtomicBool::new(false),
            counters: self.inner.counters.clone(),
            leases: AtomicU64::new(0),
            last_used: AtomicU64::new(self.now_ms()),
            _budget: budget,
        })
    }

    /// Takes `n` connections from the global budget, closing idle pools (least
    /// recently used first) to make room, and waiting up to the acquire timeout.
    /// Waiters queue in order (the semaphore is fair), so none starves.
    async fn reserve(&self, n: u32) -> Result<Option<OwnedSemaphorePermit>, OpenError> {
        let Some(budget) = &self.inner.budget else {
            return Ok(None);
        };
        if let Ok(permit) = budget.clone().try_acquire_many_owned(n) {
            return Ok(Some(permit));
        }
        let acquire = budget.clone().acquire_many_owned(n);
        let deadline = tokio::time::sleep(self.inner.settings.acquire_timeout);
        let mut make_room = tokio::time::interval(Duration::from_millis(50));
        tokio::pin!(acquire, deadline);
        loop {
            tokio::select! {
                permit = &mut acquire => {
                    // The semaphore is never closed.
                    return permit.map(Some).map_err(|_| OpenError::Budget);
                }
                _ = &mut deadline => {
                    self.inner.counters.budget_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(OpenError::Budget);
                }
                _ = make_room.tick() => self.close_idle_pools(n as usize).await,
            }
        }
    }

    /// Closes idle pools, least recently used first, until about `wanted`
    /// connections of budget are on their way back.
    async fn close_idle_pools(&self, wanted: usize) {
        let mut idle: Vec<(u64, Arc<TenantId>, u32)> = self
            .inner
            .pools
            .iter()
            .filter(|(_, pool)| pool.is_idle())
            .map(|(id, pool)| {
                (
                    pool.last_used.load(Ordering::Relaxed),
                    id,
                    pool.max_connections,
                )
            })
            .collect();
        if idle.is_empty() {
            return;
        }
        idle.sort_by_key(|(last_used, _, _)| *last_used);
        let available = self
            .inner
            .budget
            .as_ref()
            .map_or(0, |b| b.available_permits());
        let mut freed = available;
        for (_, id, size) in idle {
            if freed >= wanted {
                break;
            }
            self.inner.pools.invalidate(id.as_ref()).await;
            freed += size as usize;
        }
        self.inner.pools.run_pending_tasks().await;
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Breaker>> {
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A fast 503 while the tenant's breaker is open.
    fn check_breaker(&self, id: &TenantId) -> Result<(), AppError> {
        let now = Instant::now();
        if let Some(b) = self.breakers().get(id)
            && b.open_until > now
        {
            self.inner
                .counters
                .short_circuited
                .fetch_add(1, Ordering::Relaxed);
            let left = b.open_until - now;
            return Err(AppError::TenantUnavailable {
                retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64,
                cause: crate::error::UnavailableCause::Router,
            });
        }
        Ok(())
    }

    /// Records a failure of the tenant's database; returns the pause in seconds.
    fn trip_breaker(&self, id: &TenantId) -> u64 {
        self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        let base = self.inner.settings.breaker_cooldown;
        let mut breakers = self.breakers();
        let breaker = breakers.entry(id.clone()).or_insert(Breaker {
            failures: 0,
            open_until: Instant::now(),
        });
        breaker.failures = breaker.failures.saturating_add(1);
        let pause = base
            .saturating_mul(1 << breaker.failures.saturating_sub(1).min(16))
            .min(MAX_COOLDOWN);
        breaker.open_until = Instant::now() + pause;
        tracing::warn!(tenant_id = %id, pause_secs = pause.as_secs(), "tenant database failing; pausing attempts");
        pause.as_secs().max(1)
    }

    fn reset_breaker(&self, id: &TenantId) {
        if self.breakers().remove(id).is_some() {
            tracing::info!(tenant_id = %id, "tenant database recovered");
        }
    }

    /// Called when a request of `tenant` that started at `started` could not use its
    /// database. A certain failure, or a timeout on a pool that holds no connection
    /// at all, closes the pool and trips the breaker, so that the next requests fail
    /// fast; a busy pool is left alone. Reports about a pool that has since been
    /// replaced, or that was already reported, change nothing.
    pub async fn report_unavailable(
        &self,
        tenant: &TenantId,
        cause: crate::error::UnavailableCause,
        started: Instant,
    ) {
        use crate::error::UnavailableCause as C;
        let Some(pool) = self.inner.pools.get(tenant).await else {
            return;
        };
        let failed = match cause {
            C::DatabaseFailed => true,
            C::AcquireTimeout => pool.size() == 0,
            C::Router => false,
        };
        if !failed || pool.opened_at > started || pool.reported.swap(true, Ordering::Relaxed) {
            return;
        }
        self.trip_breaker(tenant);
        self.inner.pools.invalidate(tenant).await;
    }

    /// Whether the tenant has an open pool now.
    pub fn is_open(&self, id: &TenantId) -> bool {
        self.inner.pools.contains_key(id)
    }

    /// Each open pool: its tenant, connections open now and its size limit.
    pub fn pool_details(&self) -> Vec<PoolDetail> {
        let mut details: Vec<PoolDetail> = self
            .inner
            .pools
            .iter()
            .map(|(id, pool)| PoolDetail {
                tenant_id: (*id).clone(),
                connections: pool.size(),
                max_connections: pool.max_connections,
            })
            .collect();
        details.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        details
    }

    /// Ids of the tenants with an open pool.
    pub fn open_pools(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self.inner.pools.iter().map(|(k, _)| (*k).clone()).collect();
        ids.sort();
        ids
    }

    /// Counters of pools built, open, closed and failed, and the budget in use.
    pub fn stats(&self) -> PoolStats {
        let c = &self.inner.counters;
        let (reserved, budget) = match (
            &self.inner.budget,
            self.inner.settings.max_total_connections,
        ) {
            (Some(sem), Some(total)) => (
                u64::from(total) - sem.available_permits() as u64,
                u64::from(total),
            ),
            _ => (0, 0),
        };
        PoolStats {
            pools_built: c.built.load(Ordering::Relaxed),
            pools_open: c.open.load(Ordering::Relaxed),
            pools_closed: c.closed.load(Ordering::Relaxed),
            pool_failures: c.failures.load(Ordering::Relaxed),
            short_circuited: c.short_circuited.load(Ordering::Relaxed),
            budget_timeouts: c.budget_timeouts.load(Ordering::Relaxed),
            connections_reserved: reserved,
            connections_budget: budget,
        }
    }

    /// Runs the cache's pending evictions now (idle and capacity).
    pub async fn run_housekeeping(&self) {
        self.inner.pools.run_pending_tasks().await;
    }

    /// Closes every open pool and waits until they are closed; used at shutdown.
    pub async fn close_all(&self) {
        let open: Vec<Arc<TenantPool>> = self.inner.pools.iter().map(|(_, pool)| pool).collect();
        self.inner.pools.invalidate_all();
        while self.inner.pools.entry_count() > 0 {
            self.inner.pools.run_pending_tasks().await;
            if self.inner.pools.iter().next().is_none() {
                break;
            }
        }
        for pool in open {
            let _ = pool.db.close_by_ref().await;
        }
    }
}

/// Whether two configurations of a tenant open the same pool.
fn same_storage(a: &TenantConfig, b: &TenantConfig) -> bool {
    a.database_url == b.database_url
        && a.isolation == b.isolation
        && a.pool.max_connections == b.pool.max_connections
}

/// Why a pool did not open.
#[derive(Debug)]
enum OpenError {
    /// The connection budget stayed exhausted past the deadline.
    Budget,
    /// The database refused or failed.
    Db(DbErr),
    /// The attempt failed and the breaker tripped for this long.
    Failed { retry_after_secs: u64 },
}

/// Moka evicts only while the cache is used; this task makes idle pools close on
/// time even when no request arrives. It ends when the registry is dropped.
fn spawn_janitor(registry: Weak<Inner>) {
    let period = registry
        .upgrade()
        .map(|r| r.settings.idle_timeout / 4)
        .unwrap_or_default()
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = registry.upgrade() else {
                break;
            };
            inner.pools.run_pending_tasks().await;
        }
    });
}
