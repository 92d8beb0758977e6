//! Connection pools that belong to where the data is, and the budget of real
//! connections of each database server.
//!
//! A [`ConnPool`] keeps the idle connections of one PostgreSQL database (every
//! schema-mode tenant of that database shares it) or of one SQLite file. A
//! [`ServerBudget`] counts the connections open on one server across all its pools:
//! a connection exists only while it holds one of the budget's slots, and a slot is
//! given back only once its connection is closed, so the count can never pass the
//! limit. Pools open connections one at a time, on demand, and close those idle past
//! a short timeout.
//!
//! A checkout that finds no idle connection and no free slot waits in the server's
//! queue (first come, first served) until its deadline. While it waits, idle
//! connections of the server's other pools are closed, least recently used first,
//! and a connection given back while others wait for the server is closed rather
//! than kept idle, so that the slot goes to the head of the queue. A checkout of a
//! pool whose connections are all in use first waits a moment for one of them,
//! outside the queue: most come back within a millisecond, and taking a slot
//! instead would close another pool's connection and open a new one.
//!
//! Each schema tenant has a home among its pool's open connections, found by
//! rendezvous hashing of the tenant's schema with each connection's id, and the
//! rest in the same order after it. A checkout takes the first idle one in that
//! order; when the home is in use by another tenant it waits a moment for it
//! ([`HOME_WAIT`]), handed over directly when it comes back. So each PostgreSQL
//! backend serves a stable share of the tenants, whose statements it holds
//! prepared and whose tables its caches hold, and a tenant moves to its next
//! connection only when its home is gone or busy for longer than that moment.

mod budget;
mod target;

use budget::*;
pub use budget::{ServerBudget, ServerStats};
use target::*;
pub use target::{RawConn, Target};

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{DbErr, RuntimeErr, sqlx};
use tokio::sync::{Notify, oneshot};

/// A connection idle longer than this is checked before it is handed out, unless
/// switching its search path checks it anyway.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// How long a schema tenant's checkout waits for its home connection while
/// another tenant uses it, before it takes the next idle one in its order. Under
/// load a connection comes back well within this; the wait costs no CPU, where
/// another connection would plan the tenant's statement again and read its
/// tables into another backend's caches.
const HOME_WAIT: Duration = Duration::from_millis(2);

/// How long a connection whose request was cancelled in the middle of a data
/// statement may take to finish it ([`ConnPool::drain`]) before it is
/// closed instead. Reads a client gives up on end within milliseconds; one still
/// running after this is better closed than waited for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// An open connection as the homes of schema tenants see it.
pub(super) struct Home {
    /// Checked out (or being opened), not idle.
    pub(super) busy: bool,
    /// The schema tenant it is checked out for.
    pub(super) serving: Option<Arc<str>>,
    /// Checkouts of tenants whose home it is, waiting for it, first come first
    /// served.
    pub(super) waiters: VecDeque<(Arc<str>, oneshot::Sender<Conn>)>,
}

#[derive(Default)]
struct PoolCounts {
    open: AtomicU32,
    in_use: AtomicU32,
    /// Connections of this pool on their way: being opened, or queued for a slot
    /// by a checkout that found the pool without any.
    pending: AtomicU32,
    /// Every open connection, by id. Locked after the pool's idle list, never
    /// before it.
    homes: Mutex<HashMap<u64, Home>>,
    next_id: AtomicU64,
}

impl PoolCounts {
    fn homes(&self) -> MutexGuard<'_, HashMap<u64, Home>> {
        self.homes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a connection of this pool is in use or on its way, so that a
    /// checkout can expect one to come to it soon.
    fn busy(&self) -> bool {
        self.in_use.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed) > 0
    }
}

/// Counts a connection on its way to a pool for as long as it lives.
struct Pending(Arc<PoolCounts>);

impl Pending {
    fn new(counts: &Arc<PoolCounts>) -> Self {
        counts.pending.fetch_add(1, Ordering::Relaxed);
        Self(counts.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open connection, the mode of its session, and its slot.
pub struct Conn {
    pub(crate) raw: RawConn,
    /// Its place among its pool's connections, for schema tenants' homes.
    id: u64,
    /// On an empty `search_path` with generic plans, for schema tenants' qualified
    /// statements (see [`super::qualify`]); else on the database's defaults.
    qualified: bool,
    /// The schema of the tenant it is checked out for now.
    schema: Option<Arc<str>>,
    idle_since: Instant,
    /// The SQLite file it was opened on.
    file: Option<FileId>,
    _member: Member,
    _slot: Slot,
}

impl Conn {
    /// The schema of the schema-mode tenant the connection is checked out for,
    /// which its statements must be qualified with.
    pub fn schema(&self) -> Option<&Arc<str>> {
        self.schema.as_ref()
    }

    async fn close(self) {
        let Conn {
            raw,
            _member,
            _slot,
            ..
        } = self;
        raw.close().await;
        // The slot goes back only now that the server has let the connection go.
        drop(_member);
        drop(_slot);
    }

    /// Closes the connection in the background (from a `Drop`).
    fn close_later(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(self.close());
            }
            Err(_) => drop(self),
        }
    }
}

/// A connection on its way back to its pool through a drain ([`ConnPool::drain`]).
/// Dropped before the drain ends (its task never ran, or the runtime is shutting
/// down), it is given back as not reusable, so that the pool's counts stay right.
pub struct Draining {
    pool: Arc<ConnPool>,
    conn: Option<Conn>,
}

impl Draining {
    /// Drains the connection and gives it back, then lets `permit` (the tenant's
    /// share) go: a client that abandons slow requests cannot take more of it.
    pub async fn run<P: Send>(mut self, permit: P) {
        let pool = self.pool.clone();
        let clean = match self.conn.as_mut() {
            Some(conn) => {
                let check = conn.raw.is_clean(conn.qualified);
                matches!(
                    tokio::time::timeout(pool.drain_timeout, check).await,
                    Ok(Ok(true))
                ) && conn.raw.transaction_depth() == 0
            }
            None => false,
        };
        if let Some(conn) = self.conn.take() {
            if clean && !pool.closed.load(Ordering::Relaxed) {
                pool.server.drained.fetch_add(1, Ordering::Relaxed);
            }
            pool.give_back(conn, clean);
        }
        drop(permit);
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn, false);
        }
    }
}

/// Why a checkout gave up.
#[derive(Debug)]
pub enum CheckoutError {
    /// No connection could be had before the deadline.
    Timeout,
    /// The database refused or failed.
    Failed(DbErr),
}

/// Counters of one pool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolStats {
    pub server: String,
    pub database: String,
    pub open: u32,
    pub in_use: u32,
    pub idle: u32,
}

/// What a checkout found.
enum Picked {
    /// An idle connection, and whether it is the schema tenant's home.
    Idle(Conn, bool),
    /// The tenant's home, in use by another tenant: it comes here when given back.
    Home(oneshot::Receiver<Conn>),
    Nothing,
}

/// A checkout waiting for its home. Dropped (given up, or the request cancelled),
/// it gives back a connection handed over at that very moment.
struct HomeWait {
    rx: oneshot::Receiver<Conn>,
    pool: Arc<ConnPool>,
}

impl Drop for HomeWait {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(conn) = self.rx.try_recv() {
            self.pool.put_back(conn, true);
        }
    }
}

/// A tenant's schema, hashed once per checkout for [`rank`] (FNV-1a: stable, so
/// homes do not move when the process restarts).
fn schema_key(schema: &str) -> u64 {
    schema.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where connection `id` stands in the order of the tenant of `key`: its home is
/// the connection that ranks highest (rendezvous hashing, mixed by splitmix64),
/// so that a connection opened or closed moves only the tenants whose home it
/// becomes or was.
fn rank(key: u64, id: u64) -> u64 {
    let mut z = key ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The idle connections of one database or file.
pub struct ConnPool {
    server: Arc<ServerBudget>,
    target: Target,
    database: String,
    idle: Mutex<Vec<Conn>>,
    returned: Notify,
    counts: Arc<PoolCounts>,
    closed: AtomicBool,
    idle_timeout: Duration,
    connect_timeout: Duration,
    home_wait: Duration,
    drain_timeout: Duration,
}

impl ConnPool {
    /// A pool with no connection yet, counted against `server`.
    pub fn new(
        server: Arc<ServerBudget>,
        target: Target,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Self::with_home_wait(server, target, idle_timeout, connect_timeout, HOME_WAIT)
    }

    /// [`ConnPool::new`] with another [`HOME_WAIT`].
    fn with_home_wait(
        server: Arc<ServerBudget>,
        target: Target,
        idle_timeout: Duration,
        connect_timeout: Duration,
        home_wait: Duration,
    ) -> Arc<Self> {
        Self::build(
            server,
            target,
            idle_timeout,
            connect_timeout,
            home_wait,
            DRAIN_TIMEOUT,
        )
    }

    /// [`ConnPool::new`] with another [`HOME_WAIT`] and [`DRAIN_TIMEOUT`].
    fn build(
        server: Arc<ServerBudget>,
        target: Target,
        idle_timeout: Duration,
        connect_timeout: Duration,
        home_wait: Duration,
        drain_timeout: Duration,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            database: target.database(),
            server: server.clone(),
            target,
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            counts: Arc::default(),
            closed: AtomicBool::new(false),
            idle_timeout,
            connect_timeout,
            home_wait,
            drain_timeout,
        });
        server.register(&pool);
        pool
    }

    pub fn server(&self) -> &Arc<ServerBudget> {
        &self.server
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.target, Target::Postgres(_))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn idle_count(&self) -> usize {
        self.idle().len()
    }

    fn oldest_idle(&self) -> Option<Instant> {
        self.idle().first().map(|c| c.idle_since)
    }

    fn take_oldest_idle(&self) -> Option<Conn> {
        let mut idle = self.idle();
        (!idle.is_empty()).then(|| idle.remove(0))
    }

    /// An idle connection for a tenant of `schema`, marked busy. A schema tenant
    /// gets the first idle one in its order (its home when idle), or, when its
    /// home is in use by another tenant and `may_wait`, a place in the home's
    /// queue. A database-mode tenant (or a SQLite file's) gets the most recently
    /// used one in the mode it needs, else the most recently used one.
    ///
    /// A tenant's home is not the connection that serves it at the moment: a hot
    /// tenant whose home is busy with its own request takes the next one in its
    /// order rather than queue behind itself.
    fn pick(&self, schema: &Option<Arc<str>>, may_wait: bool) -> Picked {
        let mut idle = self.idle();
        let mut homes = self.counts.homes();
        let mut home = None;
        let index = match schema.as_ref().filter(|_| self.is_postgres()) {
            None => {
                let qualified = schema.is_some();
                idle.iter()
                    .rposition(|c| c.qualified == qualified)
                    .or_else(|| idle.len().checked_sub(1))
            }
            Some(schema) => {
                let key = schema_key(schema);
                let Some((&id, entry)) = homes.iter_mut().max_by_key(|(id, _)| rank(key, **id))
                else {
                    return Picked::Nothing;
                };
                if may_wait && entry.busy && entry.serving.as_ref() != Some(schema) {
                    let (tx, rx) = oneshot::channel();
                    entry.waiters.push_back((schema.clone(), tx));
                    return Picked::Home(rx);
                }
                home = Some(id);
                idle.iter()
                    .enumerate()
                    .max_by_key(|(_, c)| rank(key, c.id))
                    .map(|(i, _)| i)
            }
        };
        let Some(index) = index else {
            return Picked::Nothing;
        };
        let conn = idle.remove(index);
        if let Some(entry) = homes.get_mut(&conn.id) {
            entry.busy = true;
            entry.serving = schema.clone();
        }
        let at_home = home == Some(conn.id);
        Picked::Idle(conn, at_home)
    }

    /// A connection for a tenant of `schema` (`None`: a database-mode tenant, on
    /// the database's default search path), waiting up to `deadline`. A schema
    /// tenant's connection has an empty search path: its statements must name
    /// their schema ([`super::qualify`]).
    pub async fn checkout(
        self: &Arc<Self>,
        schema: Option<Arc<str>>,
        deadline: Instant,
    ) -> Result<Conn, CheckoutError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(CheckoutError::Failed(DbErr::ConnectionAcquire(
                sea_orm::ConnAcquireErr::ConnectionClosed,
            )));
        }
        let slot = self.server.slot(deadline, Some(self.as_ref()));
        tokio::pin!(slot);
        let mut may_wait = schema.is_some() && !self.home_wait.is_zero();
        loop {
            let found = match self.pick(&schema, may_wait) {
                Picked::Idle(conn, at_home) => Some((conn, at_home)),
                Picked::Home(rx) => {
                    // Once: after that, the first idle connection in its order.
                    may_wait = false;
                    let mut wait = HomeWait {
                        rx,
                        pool: self.clone(),
                    };
                    let until = deadline.min(Instant::now() + self.home_wait);
                    match tokio::time::timeout_at(until.into(), &mut wait.rx).await {
                        Ok(Ok(conn)) => Some((conn, true)),
                        // Given up, or the home closed: any connection handed over
                        // meanwhile goes back to the idle list, where `pick` finds it.
                        _ => {
                            drop(wait);
                            continue;
                        }
                    }
                }
                Picked::Nothing => None,
            };
            if let Some((conn, at_home)) = found {
                if let Some(opened_on) = conn.file {
                    let now = self.target.sqlite_file().and_then(file_id);
                    if now != Some(opened_on) {
                        // Removed or replaced: no connection of this pool may go on
                        // with the old file.
                        conn.close_later();
                        self.discard_idle();
                        if now.is_none() {
                            return Err(CheckoutError::Failed(super::missing_storage()));
                        }
                        continue;
                    }
                }
                match self.make_ready(conn, &schema).await {
                    Ok(conn) => {
                        self.count_placement(&schema, at_home);
                        return Ok(self.hand_out(conn, schema));
                    }
                    Err(_) => continue,
                }
            }
            tokio::select! {
                biased;
                slot = &mut slot => {
                    // Boxed: opening is a future of several KiB (the driver's
                    // handshake), which every checkout would otherwise carry.
                    let conn = Box::pin(self.open(slot?, &schema)).await?;
                    // Opened for it: its statements are prepared there anew.
                    self.count_placement(&schema, false);
                    return Ok(self.hand_out(conn, schema));
                }
                _ = self.returned.notified() => {}
            }
        }
    }

    /// Counts a PostgreSQL schema tenant's checkout as served by its home or by
    /// another connection (see [`ServerStats::home_checkouts`]).
    fn count_placement(&self, schema: &Option<Arc<str>>, at_home: bool) {
        if schema.is_none() || !self.is_postgres() {
            return;
        }
        let counter = if at_home {
            &self.server.home_checkouts
        } else {
            &self.server.away_checkouts
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn hand_out(&self, mut conn: Conn, schema: Option<Arc<str>>) -> Conn {
        self.counts.in_use.fetch_add(1, Ordering::Relaxed);
        conn.schema = schema;
        conn
    }

    async fn open(&self, slot: Slot, schema: &Option<Arc<str>>) -> Result<Conn, CheckoutError> {
        let _pending = Pending::new(&self.counts);
        let raw = match tokio::time::timeout(self.connect_timeout, self.target.connect()).await {
            Ok(Ok(raw)) => raw,
            Ok(Err(_)) if self.target.sqlite_file().is_some_and(|file| !file.exists()) => {
                return Err(CheckoutError::Failed(super::missing_storage()));
            }
            Ok(Err(e)) => return Err(CheckoutError::Failed(conn_err(e))),
            Err(_) => {
                return Err(CheckoutError::Failed(DbErr::Custom(
                    "connecting to the tenant database timed out".into(),
                )));
            }
        };
        let id = self.counts.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            raw,
            id,
            qualified: false,
            schema: None,
            idle_since: Instant::now(),
            file: self.target.sqlite_file().and_then(file_id),
            _member: Member::new(&self.counts, id, schema.clone()),
            _slot: slot,
        };
        match self.switch(conn, schema).await {
            Ok(conn) => Ok(conn),
            Err((conn, e)) => {
                conn.close_later();
                Err(CheckoutError::Failed(e))
            }
        }
    }

    /// Checks a connection that sat idle, and puts it in the mode `schema` needs.
    async fn make_ready(&self, mut conn: Conn, schema: &Option<Arc<str>>) -> Result<Conn, DbErr> {
        if conn.qualified == schema.is_some() && conn.idle_since.elapsed() > CHECK_IF_IDLE_FOR {
            // Switching the mode is a round trip that checks the connection too.
            if let Err(e) = conn.raw.ping().await {
                conn.close_later();
                return Err(conn_err(e));
            }
        }
        self.switch(conn, schema).await.map_err(|(conn, e)| {
            conn.close_later();
            e
        })
    }

    /// Puts a PostgreSQL connection in the mode `schema` needs: for a schema
    /// tenant an empty search path (a table its statement does not qualify is found
    /// nowhere, not in `public`, where a database-mode tenant sharing this database
    /// keeps its tables) and generic plans (each tenant's statements are planned
    /// once per connection, not for each of their first five runs); for a
    /// database-mode tenant the database's defaults.
    async fn switch(
        &self,
        mut conn: Conn,
        schema: &Option<Arc<str>>,
    ) -> Result<Conn, (Conn, DbErr)> {
        let qualified = schema.is_some();
        if conn.qualified == qualified || !self.is_postgres() {
            return Ok(conn);
        }
        let sql = if qualified {
            "SET search_path TO ''; SET plan_cache_mode TO force_generic_plan"
        } else {
            "SET search_path TO DEFAULT; SET plan_cache_mode TO DEFAULT"
        };
        // Outside any transaction (a connection in one is never pooled), so no
        // rollback can undo it.
        match conn.raw.execute_simple(sql).await {
            Ok(()) => {
                conn.qualified = qualified;
                Ok(conn)
            }
            Err(e) => Err((conn, query_err(e))),
        }
    }

    /// Takes back a connection a request is done with. A connection that may be in
    /// an unknown state (a query was cut short, a transaction left open, an error
    /// of the connection itself) is closed instead.
    pub fn give_back(&self, conn: Conn, reusable: bool) {
        self.counts.in_use.fetch_sub(1, Ordering::Relaxed);
        self.put_back(conn, reusable);
    }

    /// Takes back a connection whose request was cancelled in the middle of one
    /// data statement outside any transaction, or which has a dropped
    /// transaction's rollback queued: run the returned [`Draining`] to give it
    /// back once the server has answered everything sent and the session is as
    /// clean as after any request ([`RawConn::is_clean`]). It stays counted in use
    /// until then. One that fails, takes longer than [`DRAIN_TIMEOUT`], or is not
    /// clean is closed, and a SQLite connection is closed at once.
    ///
    /// Closing instead would make every client that gives up on a read (a
    /// timeout, a closed browser tab, a load balancer's limit) and every error
    /// answered from inside a transaction cost a new connection, and the tenants
    /// whose home it was their statements prepared again on another.
    pub fn drain(self: &Arc<Self>, conn: Conn) -> Draining {
        Draining {
            pool: self.clone(),
            conn: Some(conn),
        }
    }

    /// [`ConnPool::give_back`] of a connection not counted in use: handed over to
    /// the first checkout waiting for it as its home (unless a checkout of another
    /// pool waits for room on the server), else kept idle.
    fn put_back(&self, mut conn: Conn, reusable: bool) {
        let reusable = reusable && conn.raw.transaction_depth() == 0;
        if !reusable || self.closed.load(Ordering::Relaxed) {
            conn.close_later();
            return;
        }
        conn.idle_since = Instant::now();
        loop {
            let mut idle = self.idle();
            let mut homes = self.counts.homes();
            let Some(entry) = homes.get_mut(&conn.id) else {
                break;
            };
            let waiter = match entry.waiters.pop_front() {
                Some(waiter) if !self.server.needs_room() => waiter,
                _ => {
                    entry.busy = false;
                    entry.serving = None;
                    drop(homes);
                    idle.push(conn);
                    drop(idle);
                    return self.after_return();
                }
            };
            entry.serving = Some(waiter.0);
            drop(homes);
            drop(idle);
            match waiter.1.send(conn) {
                Ok(()) => return,
                // That checkout gave up: the next one, or the idle list.
                Err(back) => conn = back,
            }
        }
        // Not among the homes: only in a moment of closing; keep it idle anyway.
        self.idle().push(conn);
        self.after_return();
    }

    fn after_return(&self) {
        // A checkout whose pool has no connection waits for the server: room for
        // it comes first, from the longest idle connection of the pool with most
        // idle, which may be this one when no other is idle.
        if self.server.needs_room() {
            self.server.make_room(None, None);
        }
        self.returned.notify_one();
    }

    /// Closes connections idle past the timeout; returns how many.
    pub fn close_idle_expired(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<Conn> = {
            let mut idle = self.idle();
            let keep_from = idle
                .iter()
                .position(|c| now.duration_since(c.idle_since) < self.idle_timeout)
                .unwrap_or(idle.len());
            idle.drain(..keep_from).collect()
        };
        let n = expired.len();
        for conn in expired {
            conn.close_later();
        }
        n
    }

    /// Closes every idle connection now; connections in use close when given back.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let idle: Vec<Conn> = self.idle().drain(..).collect();
        for conn in idle {
            conn.close().await;
        }
        tracing::info!(server = %self.server.name, database = %self.database, "tenant pool closed");
    }

    /// Closes the idle connections (kept open: the next checkout opens new ones),
    /// after one of them failed in a way that says the others may be dead too.
    pub fn discard_idle(&self) {
        let idle: Vec<Conn> = self.idle().drain(..).collect();
        for conn in idle {
            conn.close_later();
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            server: self.server.name.clone(),
            database: self.database.clone(),
            open: self.counts.open.load(Ordering::Relaxed),
            in_use: self.counts.in_use.load(Ordering::Relaxed),
            idle: self.idle_count() as u32,
        }
    }
}

impl Drop for ConnPool {
    fn drop(&mut self) {
        let idle: Vec<Conn> = self.idle().drain(..).collect();
        for conn in idle {
            conn.close_later();
        }
    }
}

pub(crate) fn conn_err(e: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(e.into()))
}

pub(crate) fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e.into()))
}

pub(crate) fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e.into()))
}

#[cfg(test)]
mod tests;
