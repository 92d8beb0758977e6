//! The budget of real connections of one database server ([`ServerBudget`]): a
//! slot per open connection, a fair queue for checkouts that find none, and
//! room made by closing other pools' idle connections.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{DbErr, sqlx};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use super::*;

/// How often a waiting checkout asks the server's other pools for room.
pub(super) const MAKE_ROOM_EVERY: Duration = Duration::from_millis(20);
/// The share of a server's connections left to other clients, at least 3.
pub(super) const MARGIN_PERCENT: u32 = 10;

/// A share of a server's connections; given back when dropped, which happens only
/// after its connection has closed.
pub struct Slot {
    pub(super) server: Arc<ServerBudget>,
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) _global: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.open.fetch_sub(1, Ordering::Relaxed);
        self.server.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one pool's open connections for as long as it lives.
pub(super) struct Member(pub(super) Arc<PoolCounts>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters of one server, as operators see them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerStats {
    pub server: String,
    /// Connections the router may hold on this server (0: not read from it yet).
    pub limit: u32,
    /// Connections holding a slot now: in pools, in use, being closed, or opened
    /// for storage and migrations. Never above `limit`.
    pub open: u64,
    pub in_use: u64,
    pub idle: u64,
    /// Checkouts waiting for a connection now.
    pub waiting: u64,
    /// Most connections open at once since start-up.
    pub peak_open: u64,
    /// Connections opened and closed since start-up.
    pub opened: u64,
    pub closed: u64,
    /// Checkouts that gave up at their deadline.
    pub timeouts: u64,
}

/// The connections of one server, across its pools.
pub struct ServerBudget {
    pub(super) name: String,
    /// The limit from settings; `None`: read from the server on first use.
    pub(super) configured: Option<u32>,
    pub(super) limit: OnceCell<u32>,
    /// Where to read the limit from: the first pool's target.
    pub(super) probe: Target,
    pub(super) slots: Arc<Semaphore>,
    pub(super) global: Option<Arc<Semaphore>>,
    pub(super) pools: Mutex<Vec<Weak<ConnPool>>>,
    pub(super) connect_timeout: Duration,
    /// Checkouts waiting for a slot, by arrival: ticket → the pool asking (its
    /// id; 0 for work outside any pool). The first is the head of the queue.
    /// Checkouts waiting for a slot: ticket → (pool id, since when).
    pub(super) queue: Mutex<BTreeMap<u64, (usize, Instant)>>,
    pub(super) next_ticket: AtomicU64,
    pub(super) waiting: AtomicU64,
    pub(super) closing: AtomicU64,
    pub(super) open: AtomicU64,
    pub(super) peak: AtomicU64,
    pub(super) opened: AtomicU64,
    pub(super) closed: AtomicU64,
    pub(super) timeouts: AtomicU64,
}

impl ServerBudget {
    /// A budget of `limit` connections, or of what the server allows when `None`
    /// (SQLite has no server to ask: `None` means 64 there). `global` is the
    /// process-wide cap, shared by every server.
    pub fn new(
        target: &Target,
        limit: Option<u32>,
        global: Option<Arc<Semaphore>>,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        let configured = match target {
            Target::Sqlite(_) => Some(limit.unwrap_or(64)),
            Target::Postgres(_) => limit,
        };
        Arc::new(Self {
            name: target.server(),
            configured,
            limit: OnceCell::new(),
            probe: target.clone(),
            slots: Arc::new(Semaphore::new(0)),
            global,
            pools: Mutex::new(Vec::new()),
            connect_timeout,
            queue: Mutex::new(BTreeMap::new()),
            next_ticket: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            closing: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit, reading it from the server the first time.
    pub(super) async fn ensure_limit(&self) -> Result<u32, DbErr> {
        self.limit
            .get_or_try_init(|| async {
                let limit = match self.configured {
                    Some(n) => n.max(1),
                    None => self.read_limit().await?,
                };
                self.slots.add_permits(limit as usize);
                tracing::info!(server = %self.name, limit, "connection budget");
                Ok(limit)
            })
            .await
            .copied()
    }

    /// `max_connections` less the connections reserved for superusers (and, from
    /// PostgreSQL 16, for `pg_use_reserved_connections`), less a margin for other
    /// clients.
    pub(super) async fn read_limit(&self) -> Result<u32, DbErr> {
        let mut conn = match self.probe_connect(&self.probe).await {
            // A tenant database that provisioning has yet to create: ask the
            // server's maintenance database instead.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
                let Target::Postgres(options) = &self.probe else {
                    return Ok(64);
                };
                let maintenance =
                    Target::Postgres(Box::new((**options).clone().database("postgres")));
                self.probe_connect(&maintenance).await
            }
            other => other,
        }
        .map_err(conn_err)?;
        let RawConn::Pg(pg) = &mut conn else {
            return Ok(64);
        };
        let row: Result<(i32, i32, i32), _> = sqlx::query_as(
            "SELECT current_setting('max_connections')::int4, \
                    current_setting('superuser_reserved_connections')::int4, \
                    coalesce(current_setting('reserved_connections', true), '0')::int4",
        )
        .fetch_one(&mut *pg)
        .await;
        conn.close().await;
        let (max, superuser, reserved) = row.map_err(query_err)?;
        let usable = (max - superuser - reserved).max(1) as u32;
        let margin = (usable * MARGIN_PERCENT / 100).max(3);
        Ok(usable.saturating_sub(margin).max(1))
    }

    pub(super) async fn probe_connect(&self, target: &Target) -> Result<RawConn, sqlx::Error> {
        match tokio::time::timeout(self.connect_timeout, target.connect()).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (usize, Instant)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The pool whose checkout has waited longest for this server, if any waits.
    /// The pool of the checkout that has waited longest, and since when.
    pub(super) fn head_of_queue(&self) -> Option<(usize, Instant)> {
        self.queue().first_key_value().map(|(_, head)| *head)
    }

    /// Whether a checkout of pool `id` is waiting.
    pub(super) fn is_waiting(&self, id: usize) -> bool {
        self.queue().values().any(|(pool, _)| *pool == id)
    }

    pub(super) fn register(&self, pool: &Arc<ConnPool>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// A slot for one connection, waiting in the server's queue up to `deadline`.
    /// `asking` is the pool that will use it: room is never made by closing its own
    /// idle connections (it would use them instead).
    pub async fn slot(
        self: &Arc<Self>,
        deadline: Instant,
        asking: Option<&ConnPool>,
    ) -> Result<Slot, CheckoutError> {
        self.ensure_limit().await.map_err(CheckoutError::Failed)?;
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = Waiting::new(self, asking.map_or(0, |p| p.id));
                let acquire = self.slots.clone().acquire_owned();
                tokio::pin!(acquire);
                // A pool with connections in use first waits a moment for one of
                // its own to come back: reusing it is cheaper than closing another
                // pool's connection to open a new one.
                let busy = asking.is_some_and(|p| p.counts.in_use.load(Ordering::Relaxed) > 0);
                let first =
                    tokio::time::Instant::now() + if busy { REUSE_GRACE } else { Duration::ZERO };
                let mut tick = tokio::time::interval_at(first, MAKE_ROOM_EVERY);
                loop {
                    tokio::select! {
                        permit = &mut acquire => match permit {
                            Ok(p) => break p,
                            Err(_) => return Err(CheckoutError::Timeout),
                        },
                        _ = tick.tick() => self.make_room(asking),
                        _ = tokio::time::sleep_until(deadline.into()) => {
                            self.timeouts.fetch_add(1, Ordering::Relaxed);
                            return Err(CheckoutError::Timeout);
                        }
                    }
                }
            }
        };
        let global = match &self.global {
            None => None,
            Some(global) => {
                let acquire = global.clone().acquire_owned();
                tokio::pin!(acquire);
                let mut tick = tokio::time::interval(MAKE_ROOM_EVERY);
                loop {
                    tokio::select! {
                        permit = &mut acquire => match permit {
                            Ok(p) => break Some(p),
                            Err(_) => return Err(CheckoutError::Timeout),
                        },
                        _ = tick.tick() => self.make_room(asking),
                        _ = tokio::time::sleep_until(deadline.into()) => {
                            self.timeouts.fetch_add(1, Ordering::Relaxed);
                            return Err(CheckoutError::Timeout);
                        }
                    }
                }
            }
        };
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(open, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            server: self.clone(),
            _permit: permit,
            _global: global,
        })
    }

    /// Closes an idle connection of another pool (of the one with most idle), unless
    /// enough closes are already under way for the checkouts waiting.
    pub(super) fn make_room(&self, asking: Option<&ConnPool>) {
        if self.closing.load(Ordering::Relaxed) >= self.waiting.load(Ordering::Relaxed) {
            return;
        }
        let pools: Vec<Arc<ConnPool>> = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        // The pool with the most idle connections gives one up (the longest idle
        // on a tie), so that as many pools as possible keep one.
        let oldest = pools
            .iter()
            .filter(|p| !asking.is_some_and(|a| std::ptr::eq(a, p.as_ref())))
            .filter_map(|p| p.oldest_idle().map(|since| (p.idle_count(), since, p)))
            .min_by_key(|(count, since, _)| (std::cmp::Reverse(*count), *since))
            .map(|(_, since, p)| (since, p));
        if let Some((_, pool)) = oldest
            && let Some(conn) = pool.take_oldest_idle()
        {
            self.close_counted(conn);
        }
    }

    /// Closes `conn` in the background, counted so that waiters do not ask for
    /// more room than they need.
    pub(super) fn close_counted(&self, conn: Conn) {
        self.closing.fetch_add(1, Ordering::Relaxed);
        let server = conn._slot.server.clone();
        let close = async move {
            conn.close().await;
            server.closing.fetch_sub(1, Ordering::Relaxed);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(close);
            }
            Err(_) => {
                self.closing.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> ServerStats {
        let (mut in_use, mut idle) = (0u64, 0u64);
        for pool in self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
        {
            in_use += u64::from(pool.counts.in_use.load(Ordering::Relaxed));
            idle += pool.idle_count() as u64;
        }
        ServerStats {
            server: self.name.clone(),
            limit: self.limit.get().copied().unwrap_or(0),
            open: self.open.load(Ordering::Relaxed),
            in_use,
            idle,
            waiting: self.waiting.load(Ordering::Relaxed),
            peak_open: self.peak.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }
}

/// A place in a server's queue, held for as long as its checkout waits.
pub(super) struct Waiting<'a> {
    pub(super) server: &'a ServerBudget,
    pub(super) ticket: u64,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(server: &'a ServerBudget, pool: usize) -> Self {
        let ticket = server.next_ticket.fetch_add(1, Ordering::Relaxed);
        server.queue().insert(ticket, (pool, Instant::now()));
        server.waiting.fetch_add(1, Ordering::Relaxed);
        Self { server, ticket }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.server.queue().remove(&self.ticket);
        self.server.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}
