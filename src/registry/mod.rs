//! The tenant registry: tenant id → configuration, and the tenants' ways to their
//! data.
//!
//! Configurations sit behind an `RwLock<Arc<…>>` that is swapped whole, so a reader
//! holds the lock only to clone an `Arc`.
//!
//! A tenant in use has a *handle* (a moka cache entry, built on first use with
//! single flight: storage checked, migrations applied, demo data seeded; dropped when
//! idle past `POOL_IDLE_TIMEOUT_SECS` or when more than `MAX_OPEN_POOLS` are open,
//! least recently used first). A handle points at the connection pool of where the
//! tenant's data is ([`db::pool`]): every schema-mode tenant of one database shares
//! that database's pool, and the pools of one server share its budget of real
//! connections. A request checks out one connection through the handle, switched to
//! the tenant's schema, within the tenant's own cap (`MAX_CONNECTIONS_PER_TENANT`).
//!
//! A circuit breaker per tenant keeps one tenant's trouble its own: after its
//! database fails, requests get a fast 503 for a pause (doubling per failure)
//! instead of piling up connection attempts.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::{future::Cache, notification::RemovalCause, policy::EvictionPolicy};
use sea_orm::DbErr;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::{
    db::{
        self,
        conn::{Checkout, TenantConn},
        pool::{CheckoutError, ConnPool, ServerBudget, ServerStats, Target},
    },
    error::{AppError, UnavailableCause},
    settings::PoolSettings,
    tenant::{TenantConfig, TenantId},
};

/// What [`TenantInitialiser::initialise`] returns.
pub type InitFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DbErr>> + Send + 'a>>;

/// Work done on a tenant's database after its migrations and before its first
/// connection is handed out, by this process, for each storage.
pub trait TenantInitialiser: Send + Sync {
    fn initialise<'a>(
        &'a self,
        db: &'a sea_orm::DatabaseConnection,
        tenant: &'a TenantConfig,
    ) -> InitFuture<'a>;
}

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

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Tenant handles built since start-up (a tenant's first use, or its first use
    /// after its handle was dropped).
    pub pools_built: u64,
    /// Tenant handles open now.
    pub pools_open: u64,
    /// Tenant handles dropped since start-up (idle, capacity, change or failure).
    pub pools_closed: u64,
    /// Attempts to reach a tenant's database that failed.
    pub pool_failures: u64,
    /// Requests answered 503 at once because the tenant's breaker was open.
    pub short_circuited: u64,
    /// Requests that waited for a connection past their deadline.
    pub budget_timeouts: u64,
    /// Real connections open now, on every server.
    pub connections_open: u64,
    /// `MAX_TOTAL_CONNECTIONS` (0: no process-wide cap).
    pub connections_budget: u64,
}

/// One tenant handle, as `GET /api/admin/pools` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolDetail {
    pub tenant_id: TenantId,
    /// Connections the tenant holds now.
    pub connections: u32,
    /// The most it may hold at once.
    pub max_connections: u32,
    pub server: String,
    pub database: String,
}

/// One connection pool (a database or a SQLite file), with how many tenant
/// handles use it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionPoolDetail {
    #[serde(flatten)]
    pub pool: db::pool::PoolStats,
    pub tenants: u32,
}

/// A tenant in use: its pool, its schema there, and its share of connections.
struct TenantHandle {
    pool: Arc<ConnPool>,
    schema: Option<Arc<str>>,
    /// Connections the tenant may hold at once.
    permits: Arc<Semaphore>,
    max_connections: u32,
    opened_at: Instant,
    /// Set by the first report of a database failure through this handle, so that
    /// one outage trips the breaker once however many requests saw it.
    reported: AtomicBool,
    counters: Arc<Counters>,
    /// Milliseconds since the registry started, at the last request.
    last_used: AtomicU64,
}

impl Drop for TenantHandle {
    fn drop(&mut self) {
        // Counted here rather than in the eviction listener, so that a handle
        // dropped without being evicted (an open cancelled mid-insert) is not
        // counted open.
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TenantHandle {
    fn in_use(&self) -> u32 {
        self.max_connections
            .saturating_sub(self.permits.available_permits() as u32)
    }
}

struct Breaker {
    failures: u32,
    open_until: Instant,
}

struct Inner {
    table: RwLock<Arc<TenantTable>>,
    handles: Cache<TenantId, Arc<TenantHandle>>,
    /// Pools by prepared database URL (never shown): schema tenants of one
    /// database find the same pool.
    pools: Mutex<HashMap<String, Weak<ConnPool>>>,
    /// Tenants made ready (storage checked, migrated, seeded) by this process for
    /// their current storage: a handle built again after eviction skips that work.
    ready: Mutex<std::collections::HashSet<TenantId>>,
    /// Budgets by server (`host:port`, or `sqlite`).
    servers: Mutex<HashMap<String, Arc<ServerBudget>>>,
    global: Option<Arc<Semaphore>>,
    counters: Arc<Counters>,
    settings: PoolSettings,
    breakers: Mutex<HashMap<TenantId, Breaker>>,
    started: Instant,
    /// Which storages have been initialised (the control database); none in
    /// single-tenant mode.
    ledger: std::sync::OnceLock<Arc<dyn db::StorageLedger>>,
    /// Work on a tenant's database after its migrations (the demo seed).
    initialiser: std::sync::OnceLock<Arc<dyn TenantInitialiser>>,
}

/// Shared handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct TenantRegistry {
    inner: Arc<Inner>,
}

impl TenantRegistry {
    /// Builds the registry. Opens no connection: handles and connections are made
    /// on first use. Must be called inside a tokio runtime (it starts the task that
    /// closes idle connections and handles).
    pub fn new(tenants: Vec<TenantConfig>, settings: PoolSettings) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = counters.clone();
        let handles = Cache::builder()
            .max_capacity(settings.max_open_pools)
            .eviction_policy(EvictionPolicy::lru())
            .time_to_idle(settings.idle_timeout)
            .eviction_listener(
                move |tenant: Arc<TenantId>, _handle: Arc<TenantHandle>, cause: RemovalCause| {
                    listener_counters.closed.fetch_add(1, Ordering::Relaxed);
                    // Connections in use keep their pool; they go back to it, or are
                    // closed with it, when their requests end.
                    tracing::debug!(tenant_id = %tenant, reason = ?cause, "tenant handle dropped");
                },
            )
            .build();
        let global = settings
            .max_total_connections
            .map(|n| Arc::new(Semaphore::new(n as usize)));
        let inner = Arc::new(Inner {
            table: RwLock::new(Arc::new(TenantTable::new(tenants))),
            handles,
            pools: Mutex::new(HashMap::new()),
            ready: Mutex::new(std::collections::HashSet::new()),
            servers: Mutex::new(HashMap::new()),
            global,
            counters,
            settings,
            breakers: Mutex::new(HashMap::new()),
            started: Instant::now(),
            ledger: std::sync::OnceLock::new(),
            initialiser: std::sync::OnceLock::new(),
        });
        spawn_janitor(Arc::downgrade(&inner));
        Self { inner }
    }

    /// Where the registry learns which storages have been initialised, so that one
    /// that disappears is reported and not created again. Set once, at start-up.
    pub fn set_ledger(&self, ledger: Arc<dyn db::StorageLedger>) {
        let _ = self.inner.ledger.set(ledger);
    }

    /// What is done to a tenant's database once it is migrated, before it serves
    /// (the demo seed, from a layer above this one). Set once, at start-up.
    pub fn set_initialiser(&self, initialiser: Arc<dyn TenantInitialiser>) {
        let _ = self.inner.initialiser.set(initialiser);
    }

    fn ledger(&self) -> Option<&dyn db::StorageLedger> {
        self.inner.ledger.get().map(|l| l.as_ref())
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
                self.ready().remove(id);
                self.inner.handles.invalidate(id).await;
            }
        }
        self.inner.handles.run_pending_tasks().await;
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
            self.ready().remove(&id);
            self.inner.handles.invalidate(&id).await;
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
        self.ready().remove(id);
        self.inner.handles.invalidate(id).await;
        self.inner.handles.run_pending_tasks().await;
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

    /// A connection to the tenant's data for one request, pointed at its schema.
    /// The first call for a tenant builds its handle (once, however many requests
    /// arrive together); a failure is not cached, but trips the tenant's breaker.
    /// Waits up to `POOL_ACQUIRE_TIMEOUT_SECS` for a connection, then answers 503.
    pub async fn connect(&self, tenant: &TenantConfig) -> Result<TenantConn, AppError> {
        let handle = self.handle(tenant).await?;
        handle.last_used.store(self.now_ms(), Ordering::Relaxed);
        let deadline = Instant::now() + self.inner.settings.acquire_timeout;
        let permit =
            match tokio::time::timeout_at(deadline.into(), handle.permits.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; a timeout is the tenant's own load.
                _ => return Err(self.budget_timeout()),
            };
        match handle.pool.checkout(handle.schema.clone(), deadline).await {
            Ok(conn) => Ok(TenantConn::new(Checkout::new(
                conn,
                handle.pool.clone(),
                Some(permit),
            ))),
            Err(CheckoutError::Timeout) => Err(self.budget_timeout()),
            Err(CheckoutError::Failed(err)) => Err(self.failed(&tenant.id, &handle, &err).await),
        }
    }

    fn budget_timeout(&self) -> AppError {
        self.inner
            .counters
            .budget_timeouts
            .fetch_add(1, Ordering::Relaxed);
        AppError::TenantUnavailable {
            retry_after_secs: 1,
            cause: UnavailableCause::Router,
        }
    }

    /// A connection to the tenant's database failed to open: trip the breaker and
    /// drop the handle, so that the next requests fail fast until the pause ends.
    async fn failed(&self, id: &TenantId, handle: &Arc<TenantHandle>, err: &DbErr) -> AppError {
        tracing::warn!(tenant_id = %id, error = %db::redact_error(err), "connecting to the tenant database failed");
        let retry_after_secs = if handle.reported.swap(true, Ordering::Relaxed) {
            1
        } else {
            let pause = self.trip_breaker(id);
            self.invalidate_if_same(id, handle).await;
            pause
        };
        AppError::TenantUnavailable {
            retry_after_secs,
            cause: UnavailableCause::Router,
        }
    }

    /// Drops `id`'s handle if it is still `handle` (not one built since).
    async fn invalidate_if_same(&self, id: &TenantId, handle: &Arc<TenantHandle>) {
        if let Some(current) = self.inner.handles.get(id).await
            && Arc::ptr_eq(&current, handle)
        {
            self.inner.handles.invalidate(id).await;
        }
    }

    /// The tenant's handle, built on first use.
    async fn handle(&self, tenant: &TenantConfig) -> Result<Arc<TenantHandle>, AppError> {
        if let Some(handle) = self.inner.handles.get(&tenant.id).await {
            return Ok(handle);
        }
        self.check_breaker(&tenant.id)?;
        let started = Instant::now();
        let opened_here = AtomicBool::new(false);
        let result = self
            .inner
            .handles
            .try_get_with(tenant.id.clone(), async {
                match self.open(tenant).await {
                    Ok(handle) => {
                        opened_here.store(true, Ordering::Relaxed);
                        Ok(Arc::new(handle))
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
            Ok(handle) => {
                if opened_here.load(Ordering::Relaxed) {
                    self.reset_breaker(&tenant.id);
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "tenant ready"
                    );
                    // Enforce MAX_OPEN_POOLS now rather than at the next housekeeping.
                    self.inner.handles.run_pending_tasks().await;
                }
                Ok(handle)
            }
            Err(e) => Err(match e.as_ref() {
                OpenError::Budget => self.budget_timeout(),
                OpenError::Failed { retry_after_secs } => AppError::TenantUnavailable {
                    retry_after_secs: *retry_after_secs,
                    cause: UnavailableCause::Router,
                },
                OpenError::Db(_) => AppError::TenantUnavailable {
                    retry_after_secs: 1,
                    cause: UnavailableCause::Router,
                },
            }),
        }
    }

    /// The budget of the server `target` lives on.
    fn server_for(&self, target: &Target) -> Arc<ServerBudget> {
        let settings = &self.inner.settings;
        let mut servers = self.inner.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers
            .entry(target.server())
            .or_insert_with(|| {
                ServerBudget::new(
                    target,
                    settings.max_connections_per_server,
                    self.inner.global.clone(),
                    settings.connect_timeout,
                )
            })
            .clone()
    }

    /// The pool of the database at `url` (prepared), shared by every tenant there.
    fn pool_for(&self, url: &str) -> Result<Arc<ConnPool>, DbErr> {
        let mut pools = self.inner.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(url).and_then(Weak::upgrade) {
            return Ok(pool);
        }
        let target = Target::parse(url)?;
        let server = self.server_for(&target);
        let settings = &self.inner.settings;
        let pool = ConnPool::new(
            server,
            target,
            settings.connection_idle_timeout,
            settings.connect_timeout,
        );
        pools.retain(|_, p| p.strong_count() > 0);
        pools.insert(url.to_string(), Arc::downgrade(&pool));
        Ok(pool)
    }

    /// Makes the tenant ready: its storage checked (and created if asked to), its
    /// migrations applied, demo data seeded. The work holds one of the server's
    /// connection slots, like any other connection.
    async fn open(&self, tenant: &TenantConfig) -> Result<TenantHandle, OpenError> {
        let settings = &self.inner.settings;
        // Request connections never create a SQLite file: `prepare` has made it if
        // it may be made.
        let url = db::without_create(
            &db::prepare_url(tenant.database_url.expose()).map_err(OpenError::Db)?,
        );
        let pool = self.pool_for(&url).map_err(OpenError::Db)?;
        if !self.ready().contains(&tenant.id) {
            self.prepare(tenant, &url, &pool).await?;
            self.ready().insert(tenant.id.clone());
        }
        let max_connections = tenant
            .pool
            .max_connections
            .unwrap_or(settings.max_connections_per_tenant)
            .max(1);
        self.inner.counters.built.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.open.fetch_add(1, Ordering::Relaxed);
        Ok(TenantHandle {
            pool,
            schema: tenant.schema_name().map(Arc::from),
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections,
            opened_at: Instant::now(),
            reported: AtomicBool::new(false),
            counters: self.inner.counters.clone(),
            last_used: AtomicU64::new(self.now_ms()),
        })
    }

    /// Checks (and creates if asked to) the tenant's storage, applies its
    /// migrations and runs the initialiser (the demo seed). The work holds one of the server's
    /// connection slots, like any other connection.
    async fn prepare(
        &self,
        tenant: &TenantConfig,
        url: &str,
        pool: &ConnPool,
    ) -> Result<(), OpenError> {
        let settings = &self.inner.settings;
        let deadline = Instant::now() + settings.acquire_timeout;
        let slot = match pool.server().slot(deadline, None).await {
            Ok(slot) => slot,
            Err(CheckoutError::Timeout) => return Err(OpenError::Budget),
            Err(CheckoutError::Failed(e)) => return Err(OpenError::Db(e)),
        };
        // The driver retries a refused connection until its timeout; find out at
        // once instead.
        db::check_reachable(url, settings.connect_timeout)
            .await
            .map_err(OpenError::Db)?;
        let db = db::open_tenant_storage(tenant, 1, settings, self.ledger())
            .await
            .map_err(OpenError::Db)?;
        let prepared = match self.inner.initialiser.get() {
            Some(initialiser) => initialiser.initialise(&db, tenant).await,
            None => Ok(()),
        };
        let _ = db.close().await;
        drop(slot);
        prepared.map_err(OpenError::Db)
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<TenantId>> {
        self.inner.ready.lock().unwrap_or_else(|p| p.into_inner())
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
        // Its storage may have gone or been replaced: check it again on recovery.
        self.ready().remove(id);
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

    /// Runs `work` on a connection of its own to the tenant's database (pointed at
    /// its schema), for what needs sea-orm's own connection type, such as the
    /// migrator. The connection holds one of the server's slots while it lives.
    pub async fn with_own_connection<T>(
        &self,
        tenant: &TenantConfig,
        work: impl AsyncFnOnce(&sea_orm::DatabaseConnection) -> Result<T, DbErr>,
    ) -> Result<T, AppError> {
        let settings = &self.inner.settings;
        let url = db::without_create(&db::prepare_url(tenant.database_url.expose())?);
        let pool = self.pool_for(&url)?;
        let deadline = Instant::now() + settings.acquire_timeout;
        let slot = match pool.server().slot(deadline, None).await {
            Ok(slot) => slot,
            Err(CheckoutError::Timeout) => return Err(self.budget_timeout()),
            Err(CheckoutError::Failed(e)) => return Err(e.into()),
        };
        db::check_reachable(&url, settings.connect_timeout).await?;
        let mut own = settings.clone();
        own.auto_migrate = false;
        let db = db::open_tenant_storage(tenant, 1, &own, self.ledger()).await?;
        let result = work(&db).await;
        let _ = db.close().await;
        drop(slot);
        Ok(result?)
    }

    /// Called when a request of `tenant` that started at `started` could not use its
    /// database. A certain failure trips the breaker and drops the handle, so that
    /// the next requests fail fast; reports about a handle built since, or already
    /// reported, change nothing.
    pub async fn report_unavailable(
        &self,
        tenant: &TenantId,
        cause: UnavailableCause,
        started: Instant,
    ) {
        let Some(handle) = self.inner.handles.get(tenant).await else {
            return;
        };
        let failed = match cause {
            UnavailableCause::DatabaseFailed => true,
            UnavailableCause::AcquireTimeout => handle.pool.stats().open == 0,
            UnavailableCause::Router => false,
        };
        if !failed || handle.opened_at > started || handle.reported.swap(true, Ordering::Relaxed) {
            return;
        }
        self.trip_breaker(tenant);
        self.inner.handles.invalidate(tenant).await;
    }

    /// Whether the tenant has a handle now (it has been used recently).
    pub fn is_open(&self, id: &TenantId) -> bool {
        self.inner.handles.contains_key(id)
    }

    /// Each tenant handle: connections held, its cap, and where its pool is.
    pub fn pool_details(&self) -> Vec<PoolDetail> {
        let mut details: Vec<PoolDetail> = self
            .inner
            .handles
            .iter()
            .map(|(id, handle)| {
                let pool = handle.pool.stats();
                PoolDetail {
                    tenant_id: (*id).clone(),
                    connections: handle.in_use(),
                    max_connections: handle.max_connections,
                    server: pool.server,
                    database: pool.database,
                }
            })
            .collect();
        details.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        details
    }

    /// Each connection pool, with the number of tenant handles using it.
    pub fn connection_pools(&self) -> Vec<ConnectionPoolDetail> {
        let mut tenants: HashMap<*const ConnPool, u32> = HashMap::new();
        for (_, handle) in self.inner.handles.iter() {
            *tenants.entry(Arc::as_ptr(&handle.pool)).or_default() += 1;
        }
        let pools: Vec<Arc<ConnPool>> = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut details: Vec<ConnectionPoolDetail> = pools
            .iter()
            .map(|pool| ConnectionPoolDetail {
                pool: pool.stats(),
                tenants: tenants.get(&Arc::as_ptr(pool)).copied().unwrap_or(0),
            })
            .collect();
        details.sort_by(|a, b| {
            (&a.pool.server, &a.pool.database).cmp(&(&b.pool.server, &b.pool.database))
        });
        details
    }

    /// Each server's connections and budget.
    pub fn servers(&self) -> Vec<ServerStats> {
        let mut servers: Vec<ServerStats> = self
            .inner
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.stats())
            .collect();
        servers.sort_by(|a, b| a.server.cmp(&b.server));
        servers
    }

    /// Ids of the tenants with a handle.
    pub fn open_pools(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self
            .inner
            .handles
            .iter()
            .map(|(k, _)| (*k).clone())
            .collect();
        ids.sort();
        ids
    }

    /// Counters of handles built, open, closed and failed, and connections open.
    pub fn stats(&self) -> PoolStats {
        let c = &self.inner.counters;
        let connections_open = self.servers().iter().map(|s| s.open).sum();
        PoolStats {
            pools_built: c.built.load(Ordering::Relaxed),
            pools_open: c.open.load(Ordering::Relaxed),
            pools_closed: c.closed.load(Ordering::Relaxed),
            pool_failures: c.failures.load(Ordering::Relaxed),
            short_circuited: c.short_circuited.load(Ordering::Relaxed),
            budget_timeouts: c.budget_timeouts.load(Ordering::Relaxed),
            connections_open,
            connections_budget: self
                .inner
                .settings
                .max_total_connections
                .map_or(0, u64::from),
        }
    }

    /// Runs pending handle evictions (idle and capacity) and closes connections
    /// idle past their timeout, now.
    pub async fn run_housekeeping(&self) {
        housekeeping(&self.inner).await;
    }

    /// Drops every handle and closes every idle connection; used at shutdown.
    pub async fn close_all(&self) {
        self.inner.handles.invalidate_all();
        self.inner.handles.run_pending_tasks().await;
        let pools: Vec<Arc<ConnPool>> = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for pool in pools {
            pool.close().await;
        }
    }
}

/// Whether two configurations of a tenant reach their data the same way.
fn same_storage(a: &TenantConfig, b: &TenantConfig) -> bool {
    a.database_url == b.database_url
        && a.isolation == b.isolation
        && a.pool.max_connections == b.pool.max_connections
}

/// Why a tenant could not be made ready.
#[derive(Debug)]
enum OpenError {
    /// No connection slot came before the deadline.
    Budget,
    /// The database refused or failed.
    Db(DbErr),
    /// The attempt failed and the breaker tripped for this long.
    Failed { retry_after_secs: u64 },
}

async fn housekeeping(inner: &Inner) {
    inner.handles.run_pending_tasks().await;
    let pools: Vec<Arc<ConnPool>> = inner
        .pools
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    for pool in pools {
        pool.close_idle_expired();
    }
}

/// Moka evicts only while the cache is used, and pools close idle connections only
/// when asked: this task does both on time even when no request arrives. It ends
/// when the registry is dropped.
fn spawn_janitor(registry: Weak<Inner>) {
    let period = registry
        .upgrade()
        .map(|r| (r.settings.idle_timeout / 4).min(r.settings.connection_idle_timeout / 4))
        .unwrap_or_default()
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = registry.upgrade() else {
                break;
            };
            housekeeping(&inner).await;
        }
    });
}
