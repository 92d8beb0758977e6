//! The budget of real connections of one database server ([`ServerBudget`]): a
//! slot per open connection, a fair queue for checkouts that find none, and
//! room made by closing other pools' idle connections.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{DbErr, sqlx};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use super::*;
use crate::settings::DEFAULT_SQLITE_MAX_CONNECTIONS;

/// How often a waiting checkout asks the server's other pools for room.
pub(super) const MAKE_ROOM_EVERY: Duration = Duration::from_millis(20);
/// How long a connection must have been idle before it is closed to make room for
/// a pool that has connections in use: under a load that keeps every pool busy,
/// none sits idle that long, so pools keep their connections.
pub(super) const COLD_AFTER: Duration = Duration::from_secs(1);
/// How long a busy pool's checkout waits for one of its own connections before it
/// takes a free slot, or a cold connection's, to grow the pool: its own usually
/// comes back within milliseconds, where opening one takes a fork and a TLS
/// handshake.
pub(super) const GROW_AFTER: Duration = Duration::from_millis(50);
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

/// Counts one pool's open connections, and keeps the connection's entry among
/// the homes of schema tenants, for as long as it lives.
pub(super) struct Member(pub(super) Arc<PoolCounts>, pub(super) u64);

impl Member {
    pub(super) fn new(counts: &Arc<PoolCounts>, id: u64, serving: Option<Arc<str>>) -> Self {
        counts.open.fetch_add(1, Ordering::Relaxed);
        counts.homes().insert(
            id,
            Home {
                busy: true,
                serving,
                waiters: Default::default(),
            },
        );
        Self(counts.clone(), id)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        // Checkouts waiting for it as their home stop waiting (their senders drop).
        let home = self.0.homes().remove(&self.1);
        drop(home);
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
    /// Connections whose request was cancelled in the middle of a read or write,
    /// drained and kept rather than closed.
    pub drained: u64,
    /// Checkouts that gave up at their deadline.
    pub timeouts: u64,
    /// Checkouts of schema tenants served by the tenant's home connection, where
    /// its statements are prepared and its tables in that backend's caches ...
    pub home_checkouts: u64,
    /// ... and by another connection (its home busy with another request of the
    /// same tenant, or for longer than a moment, or a connection opened for it).
    pub away_checkouts: u64,
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
    /// Starved checkouts queued for a slot.
    pub(super) waiting: AtomicU64,
    /// Checkouts waiting a moment for their own pool's connection, outside the
    /// queue.
    pub(super) deferring: AtomicU64,
    /// How long a busy pool's checkout waits for its own connection before it
    /// grows the pool ([`GROW_AFTER`]; longer in tests).
    pub(super) grow_after: Duration,
    /// How long a connection must have been idle before a busy pool's checkout
    /// may have it closed ([`COLD_AFTER`]; longer in tests).
    pub(super) cold_after: Duration,
    pub(super) closing: AtomicU64,
    pub(super) open: AtomicU64,
    pub(super) peak: AtomicU64,
    pub(super) opened: AtomicU64,
    pub(super) closed: AtomicU64,
    pub(super) drained: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) home_checkouts: AtomicU64,
    pub(super) away_checkouts: AtomicU64,
}

impl ServerBudget {
    /// A budget of `limit` connections, or of what the server allows when `None`
    /// (SQLite has no server to ask: the registry passes `SQLITE_MAX_CONNECTIONS`,
    /// and `None` means its default there). `global` is the process-wide cap,
    /// shared by every server.
    pub fn new(
        target: &Target,
        limit: Option<u32>,
        global: Option<Arc<Semaphore>>,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Self::with_timing(
            target,
            limit,
            global,
            connect_timeout,
            GROW_AFTER,
            COLD_AFTER,
        )
    }

    /// [`ServerBudget::new`] with another [`GROW_AFTER`] and [`COLD_AFTER`].
    pub(super) fn with_timing(
        target: &Target,
        limit: Option<u32>,
        global: Option<Arc<Semaphore>>,
        connect_timeout: Duration,
        grow_after: Duration,
        cold_after: Duration,
    ) -> Arc<Self> {
        let configured = match target {
            Target::Sqlite(_) => Some(limit.unwrap_or(DEFAULT_SQLITE_MAX_CONNECTIONS)),
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
            waiting: AtomicU64::new(0),
            deferring: AtomicU64::new(0),
            grow_after,
            cold_after,
            closing: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            home_checkouts: AtomicU64::new(0),
            away_checkouts: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit, reading it from the server the first time.
    pub(super) async fn ensure_limit(&self) -> Result<u32, DbErr> {
        if let Some(limit) = self.limit.get() {
            return Ok(*limit);
        }
        // Boxed: reading the limit is a connection's handshake, a future of several
        // KiB that every checkout would otherwise carry (and copy) for nothing.
        Box::pin(self.limit.get_or_try_init(|| async {
            let limit = match self.configured {
                Some(n) => n.max(1),
                None => self.read_limit().await?,
            };
            self.slots.add_permits(limit as usize);
            tracing::info!(server = %self.name, limit, "connection budget");
            Ok(limit)
        }))
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

    pub(super) fn register(&self, pool: &Arc<ConnPool>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// A slot for one connection, waiting up to `deadline`. `asking` is the pool
    /// that will use it: room is never made by closing its own idle connections
    /// (it would use them instead).
    ///
    /// A checkout whose pool has no connection at all (starved) waits in the
    /// server's queue, first come first served, and room is made for it from any
    /// idle connection. A checkout whose pool has connections in use or on their
    /// way (busy: being opened, or queued for by a starved checkout) is served
    /// first by one of those coming back (the checkout takes it, dropping this
    /// future): most do within a millisecond, where a new connection costs a
    /// process fork and a TLS handshake on PostgreSQL and another pool's connection
    /// closed for it. So it waits outside the queue, and only after [`GROW_AFTER`]
    /// takes a slot that is free or that of a connection idle for
    /// [`COLD_AFTER`]: a hot pool grows
    /// into connections that others have stopped using, and pools that all serve
    /// requests keep their connections instead of trading them.
    pub async fn slot(
        self: &Arc<Self>,
        deadline: Instant,
        asking: Option<&ConnPool>,
    ) -> Result<Slot, CheckoutError> {
        self.ensure_limit().await.map_err(CheckoutError::Failed)?;
        let busy = asking.is_some_and(|p| p.counts.busy());
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) if !busy => permit,
            // Even with a slot free, a busy pool first waits for its own: a slot
            // freed by an idle connection closing would otherwise be taken, and
            // its connection left idle in turn, over and over.
            Ok(permit) => {
                drop(permit);
                self.wait_for(&self.slots, deadline, asking).await?
            }
            Err(_) => self.wait_for(&self.slots, deadline, asking).await?,
        };
        let global = match &self.global {
            None => None,
            Some(global) => match global.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => Some(self.wait_for(global, deadline, asking).await?),
            },
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

    /// A permit of `semaphore` before `deadline`, making room meanwhile: from any
    /// idle connection for a starved checkout, queued for the permit; only from
    /// cold ones for a busy checkout, which takes a permit only when one is free
    /// (so that a starved checkout queued for it gets it first).
    async fn wait_for(
        &self,
        semaphore: &Arc<Semaphore>,
        deadline: Instant,
        asking: Option<&ConnPool>,
    ) -> Result<OwnedSemaphorePermit, CheckoutError> {
        let timeout = || {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            CheckoutError::Timeout
        };
        let busy = || asking.is_some_and(|p| p.counts.busy());
        if busy() {
            let _deferring = Waiter::new(&self.deferring);
            let start = tokio::time::Instant::now() + self.grow_after;
            let mut tick = tokio::time::interval_at(start, MAKE_ROOM_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
                            return Ok(permit);
                        }
                        if !busy() {
                            // Nothing of its own can come back now: it is starved.
                            break;
                        }
                        if let Some(cold) = Instant::now().checked_sub(self.cold_after) {
                            self.make_room(asking, Some(cold));
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => return Err(timeout()),
                }
            }
        }
        let mut tick = tokio::time::interval(MAKE_ROOM_EVERY);
        let _waiting = Waiter::new(&self.waiting);
        // Later checkouts of the same pool wait for this one's connection.
        let _pending = asking.map(|p| Pending::new(&p.counts));
        let acquire = semaphore.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => return permit.map_err(|_| CheckoutError::Timeout),
                _ = tick.tick() => self.make_room(asking, None),
                _ = tokio::time::sleep_until(deadline.into()) => return Err(timeout()),
            }
        }
    }

    /// Whether a starved checkout waits for room that no close under way will make.
    pub(super) fn needs_room(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > self.closing.load(Ordering::Relaxed)
    }

    /// Closes an idle connection of another pool than `asking` (of the one with
    /// most idle, the longest idle on a tie), so that as many pools as possible
    /// keep one; with `idle_before`, only one idle since before then. Nothing is
    /// closed when enough closes are already under way for the checkouts waiting.
    pub(super) fn make_room(&self, asking: Option<&ConnPool>, idle_before: Option<Instant>) {
        let waiting = self.waiting.load(Ordering::Relaxed) + self.deferring.load(Ordering::Relaxed);
        if self.closing.load(Ordering::Relaxed) >= waiting {
            return;
        }
        let pools: Vec<Arc<ConnPool>> = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let oldest = pools
            .iter()
            .filter(|p| !asking.is_some_and(|a| std::ptr::eq(a, p.as_ref())))
            .filter_map(|p| p.oldest_idle().map(|since| (p.idle_count(), since, p)))
            .filter(|(_, since, _)| idle_before.is_none_or(|before| *since <= before))
            .min_by_key(|(count, since, _)| (std::cmp::Reverse(*count), *since))
            .map(|(_, _, p)| p);
        if let Some(pool) = oldest
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
            waiting: self.waiting.load(Ordering::Relaxed) + self.deferring.load(Ordering::Relaxed),
            peak_open: self.peak.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            drained: self.drained.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            home_checkouts: self.home_checkouts.load(Ordering::Relaxed),
            away_checkouts: self.away_checkouts.load(Ordering::Relaxed),
        }
    }
}

/// One waiting checkout, counted in `waiting` (queued for a slot; the semaphore
/// keeps the order) or `deferring` (a busy pool's, outside the queue) for as long
/// as it waits.
pub(super) struct Waiter<'a>(&'a AtomicU64);

impl<'a> Waiter<'a> {
    pub(super) fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
