//! The tenant registry: tenant id → configuration, and the bounded set of open
//! connection pools, one per tenant database.
//!
//! Configurations sit behind an `RwLock<Arc<…>>` that is swapped whole, so a reader
//! holds the lock only to clone an `Arc`. Pools live in a moka cache: built on first
//! use (single flight), closed when idle past the timeout or when the number of open
//! pools passes `MAX_OPEN_POOLS` (least recently used first).

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use moka::{future::Cache, notification::RemovalCause, policy::EvictionPolicy};
use sea_orm::DatabaseConnection;
use serde::Serialize;

use super::{TenantConfig, TenantId};
use crate::{db, error::AppError, settings::PoolSettings};

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
}

/// A snapshot of the pool counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Pools built since start-up.
    pub pools_built: u64,
    /// Pools open now.
    pub pools_open: u64,
    /// Pools closed since start-up (idle, capacity or removal).
    pub pools_closed: u64,
    /// Attempts to open a pool that failed.
    pub pool_failures: u64,
}

struct Inner {
    table: RwLock<Arc<TenantTable>>,
    pools: Cache<TenantId, DatabaseConnection>,
    counters: Arc<Counters>,
    settings: PoolSettings,
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
                move |tenant: Arc<TenantId>, db: DatabaseConnection, cause: RemovalCause| {
                    let counters = listener_counters.clone();
                    Box::pin(async move {
                        counters.open.fetch_sub(1, Ordering::Relaxed);
                        counters.closed.fetch_add(1, Ordering::Relaxed);
                        // Waits for in-flight queries to hand their connections back.
                        if let Err(e) = db.close_by_ref().await {
                            tracing::warn!(tenant_id = %tenant, error = %db::redact_error(&e), "closing pool failed");
                        }
                        tracing::info!(tenant_id = %tenant, reason = ?cause, "tenant pool closed");
                    })
                },
            )
            .build();
        let inner = Arc::new(Inner {
            table: RwLock::new(Arc::new(TenantTable::new(tenants))),
            pools,
            counters,
            settings,
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

    /// The tenant's pool, opening it on first use. Concurrent first calls open one
    /// pool; a failure is not cached, so the next request tries again.
    pub async fn pool(&self, tenant: &TenantConfig) -> Result<DatabaseConnection, AppError> {
        if let Some(db) = self.inner.pools.get(&tenant.id).await {
            return Ok(db);
        }
        let max_connections = tenant
            .pool
            .max_connections
            .unwrap_or(self.inner.settings.default_max_connections);
        let started = Instant::now();
        let opened_here = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .inner
            .pools
            .try_get_with(tenant.id.clone(), async {
                let db = db::open_pool(
                    tenant.database_url.expose(),
                    max_connections,
                    &self.inner.settings,
                )
                .await?;
                self.inner.counters.built.fetch_add(1, Ordering::Relaxed);
                self.inner.counters.open.fetch_add(1, Ordering::Relaxed);
                opened_here.store(true, Ordering::Relaxed);
                Ok::<_, sea_orm::DbErr>(db)
            })
            .await;
        match result {
            Ok(db) => {
                if opened_here.load(Ordering::Relaxed) {
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "tenant pool opened"
                    );
                    // Enforce MAX_OPEN_POOLS now rather than at the next housekeeping.
                    self.inner.pools.run_pending_tasks().await;
                }
                Ok(db)
            }
            Err(e) => {
                self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %db::redact_error(&e), "opening tenant pool failed");
                Err(AppError::TenantUnavailable {
                    retry_after_secs: 1,
                })
            }
        }
    }

    /// Whether the tenant has an open pool now.
    pub fn is_open(&self, id: &TenantId) -> bool {
        self.inner.pools.contains_key(id)
    }

    /// Ids of the tenants with an open pool.
    pub fn open_pools(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self.inner.pools.iter().map(|(k, _)| (*k).clone()).collect();
        ids.sort();
        ids
    }

    /// Counters of pools built, open, closed and failed.
    pub fn stats(&self) -> PoolStats {
        let c = &self.inner.counters;
        PoolStats {
            pools_built: c.built.load(Ordering::Relaxed),
            pools_open: c.open.load(Ordering::Relaxed),
            pools_closed: c.closed.load(Ordering::Relaxed),
            pool_failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Runs the cache's pending evictions now (idle and capacity).
    pub async fn run_housekeeping(&self) {
        self.inner.pools.run_pending_tasks().await;
    }

    /// Closes every open pool; used at shutdown.
    pub async fn close_all(&self) {
        self.inner.pools.invalidate_all();
        self.inner.pools.run_pending_tasks().await;
    }
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
