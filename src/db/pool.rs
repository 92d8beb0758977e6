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
//! than kept idle, so that the slot goes to the head of the queue.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{
    DbErr, RuntimeErr,
    sqlx::{
        self, Connection, Executor,
        postgres::{PgConnectOptions, PgConnection, PgTransactionManager},
        sqlite::{SqliteConnectOptions, SqliteConnection, SqliteTransactionManager},
    },
};
use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};

use super::quote_ident;

/// How often a waiting checkout asks the server's other pools for room.
const MAKE_ROOM_EVERY: Duration = Duration::from_millis(20);
/// How long the checkout at the head of a server's queue may be passed over for a
/// waiter of the pool a connection returns to.
const REUSE_GRACE: Duration = Duration::from_millis(20);
/// A connection idle longer than this is checked before it is handed out, unless
/// switching its schema checks it anyway.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(5);
/// The share of a server's connections left to other clients, at least 3.
const MARGIN_PERCENT: u32 = 10;

/// Where a pool's connections go, parsed once.
#[derive(Clone)]
pub enum Target {
    Postgres(Box<PgConnectOptions>),
    Sqlite(Box<SqliteConnectOptions>),
}

impl Target {
    /// Parses a prepared database URL (see [`super::prepare_url`]).
    pub fn parse(url: &str) -> Result<Self, DbErr> {
        let invalid = |_| DbErr::Custom("invalid database URL".into());
        if url.starts_with("postgres://") {
            let options: PgConnectOptions = url.parse().map_err(invalid)?;
            Ok(Self::Postgres(Box::new(
                options.application_name("tenant-router"),
            )))
        } else if url.starts_with("sqlite:") {
            let options: SqliteConnectOptions = url.parse().map_err(invalid)?;
            Ok(Self::Sqlite(Box::new(
                options
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true),
            )))
        } else {
            Err(DbErr::Custom("unsupported database URL".into()))
        }
    }

    /// The server this target lives on: `host:port`, or `sqlite` for the files of
    /// this process.
    pub fn server(&self) -> String {
        match self {
            Self::Postgres(o) => format!("{}:{}", o.get_host(), o.get_port()),
            Self::Sqlite(_) => "sqlite".to_string(),
        }
    }

    /// The database's name (PostgreSQL) or file name (SQLite), for operators.
    pub fn database(&self) -> String {
        match self {
            Self::Postgres(o) => o.get_database().unwrap_or("").to_string(),
            Self::Sqlite(o) => o
                .get_filename()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// The file of a SQLite target (not an in-memory one).
    fn sqlite_file(&self) -> Option<&std::path::Path> {
        match self {
            Self::Sqlite(o) => Some(o.get_filename()).filter(|p| {
                let name = p.to_string_lossy();
                !name.starts_with(":memory:") && !name.starts_with("file:")
            }),
            Self::Postgres(_) => None,
        }
    }

    async fn connect(&self) -> Result<RawConn, sqlx::Error> {
        match self {
            Self::Postgres(o) => PgConnection::connect_with(o).await.map(RawConn::Pg),
            Self::Sqlite(o) => {
                // Another process (a replica, the CLI) may hold the file while it
                // migrates it, and switching to WAL does not wait on the busy timeout.
                let mut tries = 0;
                loop {
                    match SqliteConnection::connect_with(o).await {
                        Err(e) if is_busy(&e) && tries < 40 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                        other => return other.map(RawConn::Sqlite),
                    }
                }
            }
        }
    }
}

fn is_busy(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| c.parse::<i32>().is_ok_and(|c| c & 0xff == 5)))
}

/// A SQLite file's device and inode: a connection made to one file notices when
/// the file is removed or replaced under it, where it would otherwise go on
/// reading and writing the unlinked file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

fn file_id(path: &std::path::Path) -> Option<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| FileId(m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// One real connection to a database.
pub enum RawConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

impl RawConn {
    /// Transactions (and savepoints) open on the connection.
    pub fn transaction_depth(&self) -> usize {
        use sqlx_core::transaction::TransactionManager;
        match self {
            Self::Pg(c) => PgTransactionManager::get_transaction_depth(c),
            Self::Sqlite(c) => SqliteTransactionManager::get_transaction_depth(c),
        }
    }

    async fn execute_simple(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Pg(c) => c.execute(sql).await.map(|_| ()),
            Self::Sqlite(c) => c.execute(sql).await.map(|_| ()),
        }
    }

    async fn ping(&mut self) -> Result<(), sqlx::Error> {
        match self {
            Self::Pg(c) => c.ping().await,
            Self::Sqlite(c) => c.ping().await,
        }
    }

    async fn close(self) {
        let _ = match self {
            Self::Pg(c) => c.close().await,
            Self::Sqlite(c) => c.close().await,
        };
    }
}

/// A share of a server's connections; given back when dropped, which happens only
/// after its connection has closed.
pub struct Slot {
    server: Arc<ServerBudget>,
    _permit: OwnedSemaphorePermit,
    _global: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.open.fetch_sub(1, Ordering::Relaxed);
        self.server.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one pool's open connections for as long as it lives.
struct Member(Arc<PoolCounts>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct PoolCounts {
    open: AtomicU32,
    in_use: AtomicU32,
}

/// An open connection, the schema its `search_path` points at now, and its slot.
pub struct Conn {
    pub(crate) raw: RawConn,
    schema: Option<Arc<str>>,
    idle_since: Instant,
    /// The SQLite file it was opened on.
    file: Option<FileId>,
    _member: Member,
    _slot: Slot,
}

impl Conn {
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

/// Why a checkout gave up.
#[derive(Debug)]
pub enum CheckoutError {
    /// No connection could be had before the deadline.
    Timeout,
    /// The database refused or failed.
    Failed(DbErr),
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

/// Counters of one pool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolStats {
    pub server: String,
    pub database: String,
    pub open: u32,
    pub in_use: u32,
    pub idle: u32,
}

/// The connections of one server, across its pools.
pub struct ServerBudget {
    name: String,
    /// The limit from settings; `None`: read from the server on first use.
    configured: Option<u32>,
    limit: OnceCell<u32>,
    /// Where to read the limit from: the first pool's target.
    probe: Target,
    slots: Arc<Semaphore>,
    global: Option<Arc<Semaphore>>,
    pools: Mutex<Vec<Weak<ConnPool>>>,
    connect_timeout: Duration,
    /// Checkouts waiting for a slot, by arrival: ticket → the pool asking (its
    /// id; 0 for work outside any pool). The first is the head of the queue.
    /// Checkouts waiting for a slot: ticket → (pool id, since when).
    queue: Mutex<BTreeMap<u64, (usize, Instant)>>,
    next_ticket: AtomicU64,
    waiting: AtomicU64,
    closing: AtomicU64,
    open: AtomicU64,
    peak: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    timeouts: AtomicU64,
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
    async fn ensure_limit(&self) -> Result<u32, DbErr> {
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
    async fn read_limit(&self) -> Result<u32, DbErr> {
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

    async fn probe_connect(&self, target: &Target) -> Result<RawConn, sqlx::Error> {
        match tokio::time::timeout(self.connect_timeout, target.connect()).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (usize, Instant)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The pool whose checkout has waited longest for this server, if any waits.
    /// The pool of the checkout that has waited longest, and since when.
    fn head_of_queue(&self) -> Option<(usize, Instant)> {
        self.queue().first_key_value().map(|(_, head)| *head)
    }

    /// Whether a checkout of pool `id` is waiting.
    fn is_waiting(&self, id: usize) -> bool {
        self.queue().values().any(|(pool, _)| *pool == id)
    }

    fn register(&self, pool: &Arc<ConnPool>) {
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
    fn make_room(&self, asking: Option<&ConnPool>) {
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
    fn close_counted(&self, conn: Conn) {
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
struct Waiting<'a> {
    server: &'a ServerBudget,
    ticket: u64,
}

impl<'a> Waiting<'a> {
    fn new(server: &'a ServerBudget, pool: usize) -> Self {
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

/// Ids of pools, for the server's queue; 0 is no pool.
static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

/// The idle connections of one database or file.
pub struct ConnPool {
    id: usize,
    server: Arc<ServerBudget>,
    target: Target,
    database: String,
    idle: Mutex<Vec<Conn>>,
    returned: Notify,
    counts: Arc<PoolCounts>,
    closed: AtomicBool,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl ConnPool {
    /// A pool with no connection yet, counted against `server`.
    pub fn new(
        server: Arc<ServerBudget>,
        target: Target,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            database: target.database(),
            server: server.clone(),
            target,
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            counts: Arc::default(),
            closed: AtomicBool::new(false),
            idle_timeout,
            connect_timeout,
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

    /// The most recently used idle connection already on `schema`, else the most
    /// recently used one.
    fn pop_idle(&self, schema: &Option<Arc<str>>) -> Option<Conn> {
        let mut idle = self.idle();
        let index = idle
            .iter()
            .rposition(|c| c.schema == *schema)
            .or_else(|| idle.len().checked_sub(1))?;
        Some(idle.remove(index))
    }

    /// A connection pointed at `schema` (`None`: the database's default search
    /// path), waiting up to `deadline`.
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
        loop {
            if let Some(conn) = self.pop_idle(&schema) {
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
                    Ok(conn) => return Ok(self.hand_out(conn)),
                    Err(_) => continue,
                }
            }
            tokio::select! {
                biased;
                slot = &mut slot => {
                    let conn = self.open(slot?, &schema).await?;
                    return Ok(self.hand_out(conn));
                }
                _ = self.returned.notified() => {}
            }
        }
    }

    fn hand_out(&self, conn: Conn) -> Conn {
        self.counts.in_use.fetch_add(1, Ordering::Relaxed);
        conn
    }

    async fn open(&self, slot: Slot, schema: &Option<Arc<str>>) -> Result<Conn, CheckoutError> {
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
        self.counts.open.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            raw,
            schema: None,
            idle_since: Instant::now(),
            file: self.target.sqlite_file().and_then(file_id),
            _member: Member(self.counts.clone()),
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

    /// Checks a connection that sat idle, and points it at `schema`.
    async fn make_ready(&self, mut conn: Conn, schema: &Option<Arc<str>>) -> Result<Conn, DbErr> {
        if conn.schema == *schema && conn.idle_since.elapsed() > CHECK_IF_IDLE_FOR {
            // Switching the schema is a round trip that checks the connection too.
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

    async fn switch(
        &self,
        mut conn: Conn,
        schema: &Option<Arc<str>>,
    ) -> Result<Conn, (Conn, DbErr)> {
        if conn.schema == *schema || !self.is_postgres() {
            return Ok(conn);
        }
        let sql = match schema {
            // Only the tenant's schema: no fallback to `public`, where a
            // database-mode tenant sharing this database keeps its tables.
            Some(name) => format!("SET search_path TO {}", quote_ident(name)),
            None => "SET search_path TO DEFAULT".to_string(),
        };
        // Outside any transaction (a connection in one is never pooled), so no
        // rollback can undo it.
        match conn.raw.execute_simple(&sql).await {
            Ok(()) => {
                conn.schema = schema.clone();
                Ok(conn)
            }
            Err(e) => Err((conn, query_err(e))),
        }
    }

    /// Takes back a connection a request is done with. A connection that may be in
    /// an unknown state (a query was cut short, a transaction left open, an error
    /// of the connection itself) is closed instead.
    pub fn give_back(&self, mut conn: Conn, reusable: bool) {
        self.counts.in_use.fetch_sub(1, Ordering::Relaxed);
        let reusable = reusable && conn.raw.transaction_depth() == 0;
        if !reusable || self.closed.load(Ordering::Relaxed) {
            conn.close_later();
            return;
        }
        // First come, first served per server: when the checkout that has waited
        // longest is another pool's, the slot goes to it (closing this connection
        // frees it) rather than to a later checkout of this pool. Only for a moment
        // may a waiter of this pool take the connection first: reusing it costs
        // nothing, where closing it makes both pools open a connection (a process
        // fork and a TLS handshake on PostgreSQL), which under churn costs more
        // than the queries themselves.
        if let Some((head, since)) = self.server.head_of_queue()
            && head != self.id
            && !(since.elapsed() < REUSE_GRACE && self.server.is_waiting(self.id))
        {
            self.server.close_counted(conn);
            return;
        }
        conn.idle_since = Instant::now();
        self.idle().push(conn);
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
mod tests {
    //! The connection layer's guarantees, on real SQLite files (and one PostgreSQL
    //! database when `TEST_DATABASE_URL` is set). Waits are bounded loops on a
    //! condition, never a fixed sleep that the test relies on.

    use std::{
        path::Path,
        sync::atomic::{AtomicBool, AtomicU64, Ordering},
    };

    use sea_orm::{
        ConnectionTrait, DbBackend, SqliteTransactionMode, Statement, TransactionOptions,
        TransactionTrait,
    };

    use super::*;
    use crate::db::conn::{Checkout, TenantConn};

    const CONNECT: Duration = Duration::from_secs(5);
    /// Long enough that no checkout meant to succeed runs into it.
    const PATIENT: Duration = Duration::from_secs(30);

    fn sqlite_target(dir: &Path, file: &str) -> Target {
        let url = format!("sqlite://{}", dir.join(file).display());
        Target::parse(&crate::db::prepare_url(&url).unwrap()).unwrap()
    }

    fn budget(target: &Target, limit: u32) -> Arc<ServerBudget> {
        ServerBudget::new(target, Some(limit), None, CONNECT)
    }

    fn pool(server: &Arc<ServerBudget>, target: Target, idle_timeout: Duration) -> Arc<ConnPool> {
        ConnPool::new(server.clone(), target, idle_timeout, CONNECT)
    }

    fn in_(d: Duration) -> Instant {
        Instant::now() + d
    }

    /// Polls `cond` every 10 ms for up to 30 s.
    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..3000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    /// A request's connection, as the registry hands it out.
    async fn tenant_conn(pool: &Arc<ConnPool>, schema: Option<&str>) -> TenantConn {
        let conn = pool
            .checkout(schema.map(Arc::from), in_(PATIENT))
            .await
            .unwrap();
        TenantConn::new(Checkout::new(conn, pool.clone(), None))
    }

    async fn int(db: &impl ConnectionTrait, sql: &str) -> i64 {
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    async fn ints(db: &impl ConnectionTrait, sql: &str) -> Vec<i64> {
        db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<i32>(0).map(i64::from).unwrap())
            .collect()
    }

    /// Guarantee 1: however many checkouts run at once across the pools of one
    /// server, no more than its limit of connections is ever open, and every
    /// checkout is served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_budget_is_never_exceeded() {
        const LIMIT: u32 = 3;
        let dir = tempfile::tempdir().unwrap();
        let first = sqlite_target(dir.path(), "t0.db");
        let server = budget(&first, LIMIT);
        let mut pools = vec![pool(&server, first, PATIENT)];
        for i in 1..4 {
            pools.push(pool(
                &server,
                sqlite_target(dir.path(), &format!("t{i}.db")),
                PATIENT,
            ));
        }

        // Samples the counts while the checkouts run: the server's own count and,
        // independently, the sum of the pools' open connections.
        let done = Arc::new(AtomicBool::new(false));
        let max_seen = Arc::new(AtomicU64::new(0));
        let monitor = {
            let (done, max_seen, server, pools) = (
                done.clone(),
                max_seen.clone(),
                server.clone(),
                pools.clone(),
            );
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let by_pools: u64 = pools.iter().map(|p| u64::from(p.stats().open)).sum();
                    max_seen.fetch_max(server.stats().open.max(by_pools), Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };

        let mut tasks = Vec::new();
        for i in 0..48 {
            let pool = pools[i % pools.len()].clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    let mut conn = pool.checkout(None, in_(PATIENT)).await?;
                    conn.raw.execute_simple("SELECT 1").await.unwrap();
                    tokio::task::yield_now().await;
                    pool.give_back(conn, true);
                }
                Ok::<(), CheckoutError>(())
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        monitor.await.unwrap();

        let stats = server.stats();
        assert!(
            max_seen.load(Ordering::Relaxed) <= u64::from(LIMIT),
            "{} connections open at once, limit {LIMIT}",
            max_seen.load(Ordering::Relaxed)
        );
        assert!(stats.open <= u64::from(LIMIT), "{stats:?}");
        // The load did reach the limit, and slots moved between the pools.
        assert_eq!(stats.peak_open, u64::from(LIMIT), "{stats:?}");
        assert!(stats.opened > u64::from(LIMIT), "{stats:?}");
        assert_eq!((stats.timeouts, stats.waiting), (0, 0), "{stats:?}");
    }

    /// Guarantee 2: a checkout on a full server is served well before its deadline
    /// by closing an idle connection of another pool of that server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_checkout_gets_room_from_another_pools_idle_connection() {
        const LIMIT: u32 = 2;
        let dir = tempfile::tempdir().unwrap();
        let target_a = sqlite_target(dir.path(), "a.db");
        let server = budget(&target_a, LIMIT);
        let a = pool(&server, target_a, PATIENT);
        let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);

        let c1 = a.checkout(None, in_(PATIENT)).await.unwrap();
        let c2 = a.checkout(None, in_(PATIENT)).await.unwrap();
        a.give_back(c1, true);
        a.give_back(c2, true);
        assert_eq!(a.stats().idle, 2);
        assert_eq!(server.stats().open, u64::from(LIMIT));

        let started = Instant::now();
        let got = b.checkout(None, in_(Duration::from_secs(5))).await;
        let waited = started.elapsed();
        let conn = got.unwrap_or_else(|e| panic!("no room made for pool B: {e:?}"));
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
        // One idle connection of A was closed for it, not both.
        assert_eq!(a.stats().idle, 1, "{:?}", a.stats());
        wait_until("A holds one connection", || a.stats().open == 1).await;
        let stats = server.stats();
        assert_eq!(stats.open, u64::from(LIMIT), "{stats:?}");
        assert_eq!(stats.peak_open, u64::from(LIMIT), "{stats:?}");
        assert_eq!(stats.timeouts, 0, "{stats:?}");
        b.give_back(conn, true);
    }

    /// Guarantee 3: when every slot is held by a connection in use, a checkout gives
    /// up with `Timeout` at its deadline (not before, not much after), counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkout_times_out_at_its_deadline_when_every_slot_is_in_use() {
        const LIMIT: u32 = 2;
        let dir = tempfile::tempdir().unwrap();
        let target_a = sqlite_target(dir.path(), "a.db");
        let server = budget(&target_a, LIMIT);
        let a = pool(&server, target_a, PATIENT);
        let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);
        let held = [
            a.checkout(None, in_(PATIENT)).await.unwrap(),
            a.checkout(None, in_(PATIENT)).await.unwrap(),
        ];

        let patience = Duration::from_millis(300);
        for (n, pool) in [(1, &b), (2, &a)] {
            let started = Instant::now();
            let got = tokio::time::timeout(PATIENT, pool.checkout(None, started + patience))
                .await
                .expect("the checkout ignored its deadline");
            let waited = started.elapsed();
            assert!(
                matches!(got, Err(CheckoutError::Timeout)),
                "expected a timeout, got {:?}",
                got.map(|_| "a connection")
            );
            assert!(waited >= patience, "gave up early, after {waited:?}");
            assert!(waited < Duration::from_secs(3), "gave up late, {waited:?}");
            let stats = server.stats();
            assert_eq!(stats.timeouts, n, "{stats:?}");
            assert_eq!(stats.waiting, 0, "{stats:?}");
            // Connections in use were not closed to make room.
            assert_eq!((stats.open, stats.in_use), (2, 2), "{stats:?}");
        }

        // It was only the lack of a slot: one given back serves the next checkout.
        let [c1, c2] = held;
        a.give_back(c1, true);
        let conn = b.checkout(None, in_(PATIENT)).await.unwrap();
        b.give_back(conn, true);
        a.give_back(c2, true);
        assert_eq!(server.stats().timeouts, 2);
    }

    /// Guarantee 4: connections idle past the timeout are closed and their slots
    /// given back; a connection idle for less is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_close_after_the_idle_timeout() {
        let idle_timeout = Duration::from_millis(300);
        let dir = tempfile::tempdir().unwrap();
        let target = sqlite_target(dir.path(), "a.db");
        let server = budget(&target, 4);
        let a = pool(&server, target, idle_timeout);
        let c1 = a.checkout(None, in_(PATIENT)).await.unwrap();
        let c2 = a.checkout(None, in_(PATIENT)).await.unwrap();
        a.give_back(c1, true);
        assert_eq!(a.close_idle_expired(), 0, "closed a fresh idle connection");
        wait_until(
            "the first connection has been idle past the timeout",
            || {
                a.idle()
                    .first()
                    .is_some_and(|c| c.idle_since.elapsed() > idle_timeout)
            },
        )
        .await;
        a.give_back(c2, true);
        assert_eq!(server.stats().open, 2);

        assert_eq!(a.close_idle_expired(), 1);
        assert_eq!(a.stats().idle, 1, "the fresh idle connection is kept");
        wait_until("the expired connection's slot is back", || {
            server.stats().open == 1
        })
        .await;
        assert_eq!(a.stats().open, 1);

        let mut closed = 0;
        wait_until("the second connection expires too", || {
            closed += a.close_idle_expired();
            closed == 1
        })
        .await;
        wait_until("every slot is back", || {
            server.stats().open == 0 && a.stats().open == 0
        })
        .await;
        let stats = server.stats();
        assert_eq!(
            (stats.opened, stats.closed, stats.idle),
            (2, 2, 0),
            "{stats:?}"
        );

        // The pool still works: the next checkout opens a new connection.
        let conn = a.checkout(None, in_(PATIENT)).await.unwrap();
        assert_eq!(server.stats().opened, 3);
        a.give_back(conn, true);
    }

    /// Guarantee 5: a connection whose query was cut short (the request's future
    /// dropped mid-query) is closed, never handed to the next checkout; one whose
    /// query finished is reused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_cut_short_mid_query_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let target = sqlite_target(dir.path(), "a.db");
        let server = budget(&target, 2);
        let a = pool(&server, target, PATIENT);

        // A query that finishes: the connection goes back to the idle list.
        let db = tenant_conn(&a, None).await;
        assert_eq!(int(&db, "SELECT 7").await, 7);
        drop(db);
        assert_eq!(a.stats().idle, 1);
        let db = tenant_conn(&a, None).await;
        assert_eq!(server.stats().opened, 1, "the idle connection is reused");

        // A query cut short.
        let long = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                    WHERE n < 10000000) SELECT count(*) FROM c";
        let cut = tokio::time::timeout(
            Duration::from_millis(20),
            db.query_one_raw(Statement::from_string(DbBackend::Sqlite, long)),
        )
        .await;
        assert!(cut.is_err(), "the long query finished within 20 ms");
        drop(db);
        let stats = a.stats();
        assert_eq!((stats.idle, stats.in_use), (0, 0), "{stats:?}");
        wait_until("the cut-short connection is closed", || {
            server.stats().open == 0
        })
        .await;
        assert_eq!(server.stats().closed, 1);

        // The next checkout gets a fresh connection, which works.
        let db = tenant_conn(&a, None).await;
        assert_eq!(
            server.stats().opened,
            2,
            "the cut-short connection was reused"
        );
        assert_eq!(int(&db, "SELECT 8").await, 8);
    }

    /// Guarantee 6: a transaction dropped without commit is rolled back, and its
    /// connection is closed rather than returned to the idle list.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_left_open_is_rolled_back_and_its_connection_closed() {
        let dir = tempfile::tempdir().unwrap();
        let target = sqlite_target(dir.path(), "a.db");
        let server = budget(&target, 2);
        let a = pool(&server, target, PATIENT);

        let db = tenant_conn(&a, None).await;
        db.execute_unprepared("CREATE TABLE t(x INTEGER)")
            .await
            .unwrap();
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        assert_eq!(int(&txn, "SELECT count(*) FROM t").await, 1);
        drop(txn);
        drop(db);
        let stats = a.stats();
        assert_eq!((stats.idle, stats.in_use), (0, 0), "{stats:?}");
        wait_until("the connection is closed", || server.stats().open == 0).await;

        let db = tenant_conn(&a, None).await;
        assert_eq!(server.stats().opened, 2, "the connection was reused");
        assert_eq!(
            int(&db, "SELECT count(*) FROM t").await,
            0,
            "not rolled back"
        );
        // Nothing holds the file's write lock either.
        let txn = crate::db::begin_write(&db).await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES (2)")
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert_eq!(ints(&db, "SELECT x FROM t").await, vec![2]);
    }

    /// Guarantee 7: a transaction begun inside a transaction is a savepoint: rolled
    /// back, it undoes only its own writes; the connection ends clean and reusable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nested_transactions_are_savepoints() {
        let dir = tempfile::tempdir().unwrap();
        let target = sqlite_target(dir.path(), "a.db");
        let server = budget(&target, 2);
        let a = pool(&server, target, PATIENT);
        let db = tenant_conn(&a, None).await;
        db.execute_unprepared("CREATE TABLE t(x INTEGER)")
            .await
            .unwrap();

        let outer = db.begin().await.unwrap();
        outer
            .execute_unprepared("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        let inner = outer.begin().await.unwrap();
        inner
            .execute_unprepared("INSERT INTO t VALUES (2)")
            .await
            .unwrap();
        assert_eq!(ints(&inner, "SELECT x FROM t ORDER BY x").await, vec![1, 2]);
        inner.rollback().await.unwrap();
        assert_eq!(ints(&outer, "SELECT x FROM t ORDER BY x").await, vec![1]);
        // A savepoint in a write transaction, begun the way handlers begin them.
        let inner = crate::db::begin_write(&outer).await.unwrap();
        inner
            .execute_unprepared("INSERT INTO t VALUES (3)")
            .await
            .unwrap();
        inner.commit().await.unwrap();
        outer
            .execute_unprepared("INSERT INTO t VALUES (4)")
            .await
            .unwrap();
        outer.commit().await.unwrap();
        drop(db);

        // Committed, and the connection went back to the pool for reuse.
        assert_eq!(a.stats().idle, 1);
        let db = tenant_conn(&a, None).await;
        assert_eq!(server.stats().opened, 1);
        assert_eq!(ints(&db, "SELECT x FROM t ORDER BY x").await, vec![1, 3, 4]);
    }

    /// Guarantee 8: `BEGIN IMMEDIATE` through `begin_with_options`: a second write
    /// transaction on the same file queues on the busy timeout until the first
    /// commits, then reads the first's row and writes; neither fails. (With a
    /// deferred begin the second would read a snapshot the first makes stale and
    /// fail on its write.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn immediate_transactions_on_one_file_queue_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let target = sqlite_target(dir.path(), "a.db");
        let server = budget(&target, 2);
        let a = pool(&server, target, PATIENT);
        let setup = tenant_conn(&a, None).await;
        setup
            .execute_unprepared("CREATE TABLE t(x INTEGER)")
            .await
            .unwrap();
        drop(setup);
        let immediate = || TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let first = tenant_conn(&a, None).await;
        let second = tenant_conn(&a, None).await;

        let (holding_tx, holding) = tokio::sync::oneshot::channel::<()>();
        let (commit_tx, commit) = tokio::sync::oneshot::channel::<()>();
        let one = tokio::spawn(async move {
            let txn = first.begin_with_options(immediate()).await?;
            let seen = int(&txn, "SELECT count(*) FROM t").await;
            txn.execute_unprepared("INSERT INTO t VALUES (1)").await?;
            holding_tx.send(()).unwrap();
            commit.await.unwrap();
            txn.commit().await?;
            Ok::<i64, DbErr>(seen)
        });
        holding.await.unwrap();
        let (read_tx, mut read) = tokio::sync::oneshot::channel::<()>();
        let two = tokio::spawn(async move {
            let txn = second.begin_with_options(immediate()).await?;
            let seen = int(&txn, "SELECT count(*) FROM t").await;
            let _ = read_tx.send(());
            txn.execute_unprepared("INSERT INTO t VALUES (2)").await?;
            txn.commit().await?;
            Ok::<i64, DbErr>(seen)
        });
        // The second must not get as far as reading while the first holds the
        // write lock. Give it the chance (bounded), then let the first commit.
        let read_early = tokio::time::timeout(Duration::from_millis(300), &mut read)
            .await
            .is_ok();
        commit_tx.send(()).unwrap();
        let seen_one = one.await.unwrap().unwrap();
        let seen_two = two.await.unwrap().unwrap();
        assert!(
            !read_early,
            "the second transaction began while the first wrote"
        );
        assert_eq!((seen_one, seen_two), (0, 1), "not serialised");
        let db = tenant_conn(&a, None).await;
        assert_eq!(ints(&db, "SELECT x FROM t ORDER BY x").await, vec![1, 2]);
    }

    /// The "fair queue (first come, first served per server)": a checkout
    /// queued on a full server is not overtaken indefinitely by later checkouts of
    /// a busy pool that keeps giving back and taking its connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_pool_does_not_starve_a_checkout_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let target_a = sqlite_target(dir.path(), "a.db");
        let server = budget(&target_a, 1);
        let a = pool(&server, target_a, PATIENT);
        let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);

        let held = a.checkout(None, in_(PATIENT)).await.unwrap();
        let queued = {
            let b = b.clone();
            tokio::spawn(async move {
                let got = b.checkout(None, in_(Duration::from_secs(2))).await;
                got.map(|conn| b.give_back(conn, true))
            })
        };
        wait_until("B's checkout waits for the server", || {
            server.stats().waiting == 1
        })
        .await;

        // Pool A stays busy: four requests at a time, each taking the connection
        // and giving it back, for longer than B's deadline unless B gets served.
        let stop = Arc::new(AtomicBool::new(false));
        let mut hot = Vec::new();
        for _ in 0..4 {
            let (a, stop) = (a.clone(), stop.clone());
            hot.push(tokio::spawn(async move {
                let until = in_(Duration::from_secs(4));
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    if let Ok(mut conn) = a.checkout(None, in_(PATIENT)).await {
                        conn.raw.execute_simple("SELECT 1").await.unwrap();
                        a.give_back(conn, true);
                    }
                }
            }));
        }
        a.give_back(held, true);
        let outcome = queued.await.unwrap();
        stop.store(true, Ordering::Relaxed);
        for task in hot {
            task.await.unwrap();
        }
        assert!(
            outcome.is_ok(),
            "B, queued first, timed out while A's later checkouts were served: {:?}",
            server.stats()
        );
    }

    /// The same, step by step: with the server full, pool B's checkout queues
    /// first and pool A's second; when A's connection is given back, B (the head of
    /// the server's queue) is served first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_head_of_the_servers_queue_is_served_first() {
        let dir = tempfile::tempdir().unwrap();
        let target_a = sqlite_target(dir.path(), "a.db");
        let server = budget(&target_a, 1);
        let a = pool(&server, target_a, PATIENT);
        let b = pool(&server, sqlite_target(dir.path(), "b.db"), PATIENT);
        let order = Arc::new(Mutex::new(Vec::new()));
        let checkout = |pool: &Arc<ConnPool>, name: &'static str| {
            let (pool, order) = (pool.clone(), order.clone());
            tokio::spawn(async move {
                let conn = pool.checkout(None, in_(PATIENT)).await.unwrap();
                order.lock().unwrap().push(name);
                pool.give_back(conn, true);
            })
        };

        let held = a.checkout(None, in_(PATIENT)).await.unwrap();
        let first = checkout(&b, "B, queued first");
        wait_until("B waits", || server.stats().waiting == 1).await;
        let second = checkout(&a, "A, queued second");
        wait_until("A waits too", || server.stats().waiting == 2).await;
        // Past the moment in which A's own waiter could reuse the connection.
        tokio::time::sleep(REUSE_GRACE * 2).await;
        a.give_back(held, true);
        first.await.unwrap();
        second.await.unwrap();
        let order = order.lock().unwrap().clone();
        assert_eq!(order, ["B, queued first", "A, queued second"]);
    }

    /// PostgreSQL: one real connection (a budget of one slot) serves two schemas in
    /// turn, each checkout seeing only its own schema's rows, also after an error
    /// inside a transaction on the other schema.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_one_connection_switches_schemas_without_leaking_rows() {
        let Ok(base) = std::env::var("TEST_DATABASE_URL") else {
            println!("TEST_DATABASE_URL is not set: skipping the PostgreSQL test");
            return;
        };
        let name = format!(
            "pooltest_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let with_db = |db: &str| {
            let mut url = url::Url::parse(&base).unwrap();
            url.set_path(&format!("/{db}"));
            url.to_string()
        };
        let admin = sea_orm::Database::connect(with_db("postgres"))
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        let url = crate::db::prepare_url(&with_db(&name)).unwrap();
        let setup = sea_orm::Database::connect(url.clone()).await.unwrap();
        setup
            .execute_unprepared(
                "CREATE SCHEMA a; CREATE SCHEMA b; \
                 CREATE TABLE a.t(x int); CREATE TABLE b.t(x int); \
                 INSERT INTO b.t VALUES (2)",
            )
            .await
            .unwrap();
        setup.close().await.unwrap();

        let target = Target::parse(&url).unwrap();
        let server = budget(&target, 1);
        let p = pool(&server, target, PATIENT);
        let pid = "SELECT pg_backend_pid()::int8";

        let db = tenant_conn(&p, Some("a")).await;
        let first_pid = int(&db, pid).await;
        db.execute_unprepared("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        assert_eq!(ints(&db, "SELECT x FROM t").await, vec![1]);
        drop(db);

        let db = tenant_conn(&p, Some("b")).await;
        assert_eq!(int(&db, pid).await, first_pid, "not the same connection");
        assert_eq!(ints(&db, "SELECT x FROM t").await, vec![2]);
        drop(db);

        // An error inside a transaction on A, rolled back.
        let db = tenant_conn(&p, Some("a")).await;
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES (10)")
            .await
            .unwrap();
        assert!(txn.execute_unprepared("SELECT 1 / 0").await.is_err());
        txn.rollback().await.unwrap();
        drop(db);

        let db = tenant_conn(&p, Some("b")).await;
        assert_eq!(int(&db, pid).await, first_pid, "not the same connection");
        assert_eq!(ints(&db, "SELECT x FROM t").await, vec![2]);
        drop(db);

        // An error inside a transaction on A, dropped without a rollback.
        let db = tenant_conn(&p, Some("a")).await;
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES (11)")
            .await
            .unwrap();
        assert!(txn.execute_unprepared("SELECT 1 / 0").await.is_err());
        drop(txn);
        drop(db);

        let db = tenant_conn(&p, Some("b")).await;
        assert_eq!(ints(&db, "SELECT x FROM t").await, vec![2]);
        drop(db);
        let db = tenant_conn(&p, Some("a")).await;
        assert_eq!(ints(&db, "SELECT x FROM t").await, vec![1]);
        drop(db);
        let stats = server.stats();
        assert!(stats.peak_open <= 1, "{stats:?}");

        p.close().await;
        drop(p);
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .await
            .unwrap();
        admin.close().await.unwrap();
    }
}
