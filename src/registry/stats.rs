//! What the registry counts and shows: handles built, open and closed, failures,
//! short circuits, budget timeouts; each handle, pool and server (`GET
//! /api/admin/pools`, `/metrics`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Serialize;

use crate::{
    db::{
        self,
        pool::{ConnPool, ServerStats},
    },
    tenant::TenantId,
};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) built: AtomicU64,
    pub(super) open: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) closed: AtomicU64,
    pub(super) short_circuited: AtomicU64,
    pub(super) budget_timeouts: AtomicU64,
}
use super::TenantRegistry;

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

impl TenantRegistry {
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
}

impl TenantRegistry {
    /// The server a tenant's data lives on, as the pools name it (`host:port`, or
    /// `sqlite`), without opening anything; `None` for a URL that cannot be read.
    pub fn server_of(&self, tenant: &crate::tenant::TenantConfig) -> Option<String> {
        let url = db::prepare_url(tenant.database_url.expose()).ok()?;
        db::pool::Target::parse(&url).ok().map(|t| t.server())
    }
}

impl TenantRegistry {
    /// A round trip to the tenant's database over its open pool, for operators
    /// watching: it does not count as a use, so the handle's idle timer and place
    /// in the LRU order stay as they were. `None` when the tenant has no handle
    /// (nothing is opened to answer).
    pub async fn probe(
        &self,
        id: &TenantId,
        timeout: std::time::Duration,
    ) -> Option<Result<std::time::Duration, sea_orm::DbErr>> {
        // `iter` does not reset idle timers, unlike `get`.
        let handle = self
            .inner
            .handles
            .iter()
            .find(|(key, _)| key.as_ref() == id)
            .map(|(_, handle)| handle)?;
        let started = std::time::Instant::now();
        let deadline = started + timeout;
        let result = match handle.pool.checkout(handle.schema.clone(), deadline).await {
            Ok(conn) => {
                let conn = db::conn::TenantConn::new(db::conn::Checkout::new(
                    conn,
                    handle.pool.clone(),
                    None,
                ));
                sea_orm::ConnectionTrait::execute_unprepared(&conn, "SELECT 1")
                    .await
                    .map(|_| started.elapsed())
            }
            Err(db::pool::CheckoutError::Timeout) => Err(sea_orm::DbErr::Custom(
                "no connection came within the probe's deadline".into(),
            )),
            Err(db::pool::CheckoutError::Failed(e)) => Err(e),
        };
        Some(result)
    }
}
