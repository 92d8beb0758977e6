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

mod breaker;
mod stats;
mod table;

use breaker::Breaker;
use stats::Counters;
pub use stats::{ConnectionPoolDetail, PoolDetail, PoolStats};
use table::TenantTable;

use moka::{future::Cache, notification::RemovalCause, policy::EvictionPolicy};
use sea_orm::DbErr;
use tokio::sync::Semaphore;

use crate::{
    db::{
        self,
        conn::{Checkout, TenantConn},
        pool::{CheckoutError, ConnPool, ServerBudget, Target},
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

/// What the registry tells whoever watches it (the metrics, which start-up
/// supplies): each tenant made ready or not, and each trip of a breaker.
pub trait RegistryEvents: Send + Sync {
    /// A tenant's handle was built (`ok`), or its database failed to open, after
    /// `took` (its storage checked, migrations applied, demo data seeded).
    fn tenant_opened(&self, tenant: &TenantId, took: std::time::Duration, ok: bool);
    /// The tenant's breaker tripped: its database failed for certain.
    fn breaker_tripped(&self, tenant: &TenantId);
    /// The tenant's migrations not applied, as its open found them (more than 0
    /// with `AUTO_MIGRATE=false`), or after an operator migrated it.
    fn migrations_pending(&self, tenant: &TenantId, pending: usize);
}

/// A tenant in use: its pool, its schema there, and its share of connections.
struct TenantHandle {
    /// The configuration it was built from: a handle whose storage is no longer
    /// the tenant's is not used.
    built_for: TenantConfig,
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

struct Inner {
    table: RwLock<Arc<TenantTable>>,
    handles: Cache<TenantId, Arc<TenantHandle>>,
    /// Pools by prepared database URL (never shown): schema tenants of one
    /// database find the same pool.
    pools: Mutex<HashMap<String, Weak<ConnPool>>>,
    /// Tenants made ready (storage checked, migrated, seeded) by this process for
    /// their current storage: a handle built again after eviction skips that work.
    /// Tenants made ready, with the storage (prepared URL) each was made ready for.
    ready: Mutex<HashMap<TenantId, String>>,
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
    events: std::sync::OnceLock<Arc<dyn RegistryEvents>>,
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
            ready: Mutex::new(HashMap::new()),
            servers: Mutex::new(HashMap::new()),
            global,
            counters,
            settings,
            breakers: Mutex::new(HashMap::new()),
            started: Instant::now(),
            ledger: std::sync::OnceLock::new(),
            initialiser: std::sync::OnceLock::new(),
            events: std::sync::OnceLock::new(),
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

    /// Who hears of tenants opened and breakers tripped (once, at start-up).
    pub fn set_events(&self, events: Arc<dyn RegistryEvents>) {
        let _ = self.inner.events.set(events);
    }

    pub(crate) fn events(&self) -> Option<&Arc<dyn RegistryEvents>> {
        self.inner.events.get()
    }

    fn ledger(&self) -> Option<&dyn db::StorageLedger> {
        self.inner.ledger.get().map(|l| l.as_ref())
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
            Err(CheckoutError::Failed(err)) => {
                Err(Box::pin(self.failed(&tenant.id, &handle, &err)).await)
            }
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

    /// The tenant's handle, built on first use, for the storage the registry has
    /// for it now. A request may hold a configuration taken before a change (a
    /// move, a new URL), and a handle built from such a one may have been cached
    /// after the change dropped the old handle: the registry's configuration wins,
    /// and a handle built for other storage is dropped and built again.
    async fn handle(&self, tenant: &TenantConfig) -> Result<Arc<TenantHandle>, AppError> {
        let current = self.get(tenant.id.as_str());
        let tenant = current.as_deref().unwrap_or(tenant);
        // A stale handle can come back only from a build that started before the
        // change, so a second look finds the right one.
        for _ in 0..3 {
            let handle = self.handle_once(tenant).await?;
            if same_storage(&handle.built_for, tenant) {
                return Ok(handle);
            }
            Box::pin(self.invalidate_if_same(&tenant.id, &handle)).await;
        }
        Err(AppError::TenantUnavailable {
            retry_after_secs: 1,
            cause: UnavailableCause::Router,
        })
    }

    async fn handle_once(&self, tenant: &TenantConfig) -> Result<Arc<TenantHandle>, AppError> {
        if let Some(handle) = self.inner.handles.get(&tenant.id).await {
            return Ok(handle);
        }
        // Boxed: building a handle is a future of several KiB (the cache's loader
        // and the pool's opening), which every request would otherwise carry inside
        // its own and copy each time the request's future moves.
        Box::pin(self.build_handle(tenant)).await
    }

    /// The cold path of [`Self::handle_once`]: the tenant's handle, built once
    /// however many requests ask for it at the same time.
    async fn build_handle(&self, tenant: &TenantConfig) -> Result<Arc<TenantHandle>, AppError> {
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
                        if let Some(events) = self.events() {
                            events.tenant_opened(&tenant.id, started.elapsed(), false);
                        }
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
                    if let Some(events) = self.events() {
                        events.tenant_opened(&tenant.id, started.elapsed(), true);
                    }
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
                let limit = match target {
                    Target::Sqlite(_) => Some(settings.sqlite_max_connections),
                    Target::Postgres(_) => settings.max_connections_per_server,
                };
                ServerBudget::new(
                    target,
                    limit,
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
        let settings = &self.inner.settings;
        let target = Target::parse(url)?.statement_cache(settings.statement_cache_capacity);
        let server = self.server_for(&target);
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
        if self.ready().get(&tenant.id) != Some(&url) {
            self.prepare(tenant, &url, &pool).await?;
            self.ready().insert(tenant.id.clone(), url);
        }
        let max_connections = tenant
            .pool
            .max_connections
            .unwrap_or(settings.max_connections_per_tenant)
            .max(1);
        self.inner.counters.built.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.open.fetch_add(1, Ordering::Relaxed);
        Ok(TenantHandle {
            built_for: tenant.clone(),
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
        // Migrated just now, unless AUTO_MIGRATE=false: then count what is left.
        if let Some(events) = self.events() {
            let pending = if settings.auto_migrate {
                Ok(0)
            } else {
                db::pending_migrations(&db).await
            };
            match pending {
                Ok(pending) => events.migrations_pending(&tenant.id, pending),
                Err(e) => {
                    tracing::warn!(error = %db::redact_error(&e), "cannot count the tenant's pending migrations")
                }
            }
        }
        let prepared = match self.inner.initialiser.get() {
            Some(initialiser) => initialiser.initialise(&db, tenant).await,
            None => Ok(()),
        };
        let _ = db.close().await;
        drop(slot);
        prepared.map_err(OpenError::Db)
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, String>> {
        self.inner.ready.lock().unwrap_or_else(|p| p.into_inner())
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

/// Whether two configurations of a tenant reach the same data the same way. A new
/// incarnation (the id removed and provisioned again) is other data, even at the
/// same URL: its storage was made afresh.
fn same_storage(a: &TenantConfig, b: &TenantConfig) -> bool {
    a.generation == b.generation
        && a.database_url == b.database_url
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

#[cfg(test)]
mod tests;
