//! A request's connection: one real connection checked out of its pool for the
//! request's whole life, and usable by sea-orm like a pool (`ConnectionTrait`,
//! `TransactionTrait`). A schema-mode tenant's statements have their tables
//! qualified with its schema on the way ([`super::qualify`]); its connection's
//! empty search path finds nothing they do not qualify.
//!
//! When the request is done the connection goes back to its pool, unless it may be
//! in an unknown state: a query cut short (the request was cancelled), a
//! transaction still open, or a failure of the connection itself. Those are closed,
//! so a connection is never handed to the next request in the middle of another's
//! work or transaction.

use std::{future::Future, pin::Pin, sync::Arc};

use sea_orm::{
    AccessMode, ConnectionTrait, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult,
    Statement, TransactionError, TransactionOptions, TransactionSession, TransactionTrait,
    sea_query::Values,
    sqlx::{self, Executor, postgres::PgTransactionManager, sqlite::SqliteTransactionManager},
};
use sea_query_sqlx::SqlxValues;
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, OwnedSemaphorePermit};

use super::pool::{Conn, ConnPool, RawConn, exec_err, query_err};
use super::qualify::qualify;

/// A connection checked out for one request, with the tenant's share of
/// connections it holds.
pub struct Checkout {
    conn: Option<Conn>,
    pool: Arc<ConnPool>,
    /// An operation was started and has not finished: if the request is dropped
    /// now, the connection's state is unknown.
    busy: bool,
    /// The connection failed, or a transaction was dropped without an end.
    broken: bool,
    _tenant_permit: Option<OwnedSemaphorePermit>,
}

impl Checkout {
    pub fn new(
        conn: Conn,
        pool: Arc<ConnPool>,
        tenant_permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            conn: Some(conn),
            pool,
            busy: false,
            broken: false,
            _tenant_permit: tenant_permit,
        }
    }

    fn raw(&mut self) -> Result<&mut RawConn, DbErr> {
        if self.broken {
            return Err(DbErr::Custom(
                "the connection was left in an unknown state".into(),
            ));
        }
        self.conn
            .as_mut()
            .map(|c| &mut c.raw)
            .ok_or_else(|| DbErr::Custom("the connection is gone".into()))
    }

    /// Marks the connection unusable after an error that may be the connection's.
    fn note(&mut self, err: &sqlx::Error) {
        if matches!(
            err,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        ) {
            self.broken = true;
            // The pool's other idle connections went through the same server.
            self.pool.discard_idle();
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn, !self.busy && !self.broken);
        }
    }
}

/// Runs `$body` (a future giving `Result<_, sqlx::Error>`) with the checkout's raw
/// connection bound to `$raw`. The checkout is marked busy meanwhile, so that a
/// request cancelled during the operation leaves it marked; errors become `DbErr`
/// through `$to_db_err`.
macro_rules! with_conn {
    ($cell:expr, $to_db_err:expr, |$raw:ident| $body:expr) => {{
        let mut checkout = $cell.checkout.lock().await;
        checkout.busy = true;
        let outcome = match checkout.raw() {
            Ok($raw) => Ok($body.await),
            Err(e) => Err(e),
        };
        checkout.busy = false;
        match outcome {
            Err(e) => Err(e),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                checkout.note(&e);
                Err($to_db_err(e))
            }
        }
    }};
}

/// A request's checkout and the schema its statements are qualified with (a
/// schema-mode tenant's), shared by a [`TenantConn`] and its transactions.
struct Session {
    checkout: Mutex<Checkout>,
    schema: Option<Arc<str>>,
}

impl Session {
    /// `sql` as it goes to the connection: its tables in the tenant's schema.
    fn sql(&self, sql: String) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(match &self.schema {
            Some(schema) => qualify(&sql, schema),
            None => sql,
        })
    }

    fn statement(&self, stmt: Statement) -> (sqlx::AssertSqlSafe<String>, SqlxValues) {
        (
            self.sql(stmt.sql),
            SqlxValues(stmt.values.unwrap_or(Values(Vec::new()))),
        )
    }
}

type Cell = Arc<Session>;

async fn execute(cell: &Cell, stmt: Statement) -> Result<ExecResult, DbErr> {
    let (sql, args) = cell.statement(stmt);
    with_conn!(cell, exec_err, |raw| async {
        match raw {
            RawConn::Pg(c) => sqlx::query_with(sql, args)
                .execute(c)
                .await
                .map(ExecResult::from),
            RawConn::Sqlite(c) => sqlx::query_with(sql, args)
                .execute(c)
                .await
                .map(ExecResult::from),
        }
    })
}

async fn execute_unprepared(cell: &Cell, sql: &str) -> Result<ExecResult, DbErr> {
    let sql = cell.sql(sql.to_owned());
    with_conn!(cell, exec_err, |raw| async {
        match raw {
            RawConn::Pg(c) => c.execute(sql).await.map(ExecResult::from),
            RawConn::Sqlite(c) => c.execute(sql).await.map(ExecResult::from),
        }
    })
}

async fn query_one(cell: &Cell, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
    let (sql, args) = cell.statement(stmt);
    with_conn!(cell, query_err, |raw| async {
        match raw {
            RawConn::Pg(c) => sqlx::query_with(sql, args)
                .fetch_optional(c)
                .await
                .map(|r| r.map(QueryResult::from)),
            RawConn::Sqlite(c) => sqlx::query_with(sql, args)
                .fetch_optional(c)
                .await
                .map(|r| r.map(QueryResult::from)),
        }
    })
}

async fn query_all(cell: &Cell, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
    let (sql, args) = cell.statement(stmt);
    with_conn!(cell, query_err, |raw| async {
        match raw {
            RawConn::Pg(c) => sqlx::query_with(sql, args)
                .fetch_all(c)
                .await
                .map(|rows| rows.into_iter().map(QueryResult::from).collect()),
            RawConn::Sqlite(c) => sqlx::query_with(sql, args)
                .fetch_all(c)
                .await
                .map(|rows| rows.into_iter().map(QueryResult::from).collect()),
        }
    })
}

async fn begin(
    cell: &Cell,
    backend: DbBackend,
    options: TransactionOptions,
) -> Result<TenantTxn, DbErr> {
    let statement = match (backend, options.sqlite_transaction_mode) {
        (DbBackend::Sqlite, Some(mode)) => {
            let checkout = cell.checkout.lock().await;
            let depth = checkout
                .conn
                .as_ref()
                .map_or(0, |c| c.raw.transaction_depth());
            // A nested transaction is a savepoint; the mode applies to the outer one.
            (depth == 0).then(|| format!("BEGIN {}", mode.sqlite_keyword()))
        }
        _ => None,
    };
    with_conn!(cell, query_err, |raw| async {
        match raw {
            RawConn::Pg(c) => {
                PgTransactionManager::begin(c, None).await?;
                let mut settings = Vec::new();
                if let Some(level) = options.isolation_level {
                    settings.push(format!("ISOLATION LEVEL {level}"));
                }
                if let Some(mode) = options.access_mode {
                    settings.push(mode.to_string());
                }
                if !settings.is_empty() {
                    let sql = format!("SET TRANSACTION {}", settings.join(", "));
                    c.execute(sqlx::AssertSqlSafe(sql)).await?;
                }
                Ok(())
            }
            RawConn::Sqlite(c) => {
                use sqlx::SqlSafeStr;
                let statement = statement.map(|s| sqlx::AssertSqlSafe(s).into_sql_str());
                SqliteTransactionManager::begin(c, statement).await
            }
        }
    })?;
    Ok(TenantTxn {
        cell: cell.clone(),
        backend,
        open: true,
    })
}

/// The connection of one request.
#[derive(Clone)]
pub struct TenantConn {
    cell: Cell,
    backend: DbBackend,
}

impl std::fmt::Debug for TenantConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConn")
            .field("backend", &self.backend)
            .finish()
    }
}

impl TenantConn {
    /// The connection of a request, for the tenant (and schema) its checkout was
    /// made for.
    pub fn new(checkout: Checkout) -> Self {
        let schema = checkout.conn.as_ref().and_then(|c| c.schema().cloned());
        let backend = if checkout.pool.is_postgres() {
            DbBackend::Postgres
        } else {
            DbBackend::Sqlite
        };
        Self {
            cell: Arc::new(Session {
                checkout: Mutex::new(checkout),
                schema,
            }),
            backend,
        }
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), DbErr> {
        with_conn!(self.cell, query_err, |raw| async {
            match raw {
                RawConn::Pg(c) => sqlx::Connection::ping(c).await,
                RawConn::Sqlite(c) => sqlx::Connection::ping(c).await,
            }
        })
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantConn {
    fn get_database_backend(&self) -> DbBackend {
        self.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        execute(&self.cell, stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        execute_unprepared(&self.cell, sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        query_one(&self.cell, stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        query_all(&self.cell, stmt).await
    }
}

type Callback<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// Runs `callback` in `txn`, committing on `Ok` and rolling back on `Err`.
async fn run<F, T, E>(txn: TenantTxn, callback: F) -> Result<T, TransactionError<E>>
where
    F: for<'c> FnOnce(&'c TenantTxn) -> Callback<'c, T, E> + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    let result = callback(&txn).await;
    match result {
        Ok(value) => {
            txn.commit().await.map_err(TransactionError::Connection)?;
            Ok(value)
        }
        Err(e) => {
            txn.rollback().await.map_err(TransactionError::Connection)?;
            Err(TransactionError::Transaction(e))
        }
    }
}

#[async_trait::async_trait]
impl TransactionTrait for TenantConn {
    type Transaction = TenantTxn;

    async fn begin(&self) -> Result<TenantTxn, DbErr> {
        begin(&self.cell, self.backend, TransactionOptions::default()).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<TenantTxn, DbErr> {
        let options = TransactionOptions {
            isolation_level,
            access_mode,
            ..Default::default()
        };
        begin(&self.cell, self.backend, options).await
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<TenantTxn, DbErr> {
        begin(&self.cell, self.backend, options).await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTxn) -> Callback<'c, T, E> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin().await.map_err(TransactionError::Connection)?;
        run(txn, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTxn) -> Callback<'c, T, E> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self
            .begin_with_config(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        run(txn, callback).await
    }
}

/// A transaction (or, nested, a savepoint) on a request's connection. Dropped
/// without `commit` or `rollback`, it is rolled back, and the connection is closed
/// when the request ends rather than reused.
pub struct TenantTxn {
    cell: Cell,
    backend: DbBackend,
    open: bool,
}

impl std::fmt::Debug for TenantTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantTxn")
            .field("open", &self.open)
            .finish()
    }
}

impl TenantTxn {
    /// Commits (or releases the savepoint).
    pub async fn commit(self) -> Result<(), DbErr> {
        self.finish(true).await
    }

    /// Rolls back (to the savepoint).
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.finish(false).await
    }

    async fn finish(mut self, commit: bool) -> Result<(), DbErr> {
        self.open = false;
        with_conn!(self.cell, query_err, |raw| async {
            match (raw, commit) {
                (RawConn::Pg(c), true) => PgTransactionManager::commit(c).await,
                (RawConn::Pg(c), false) => PgTransactionManager::rollback(c).await,
                (RawConn::Sqlite(c), true) => SqliteTransactionManager::commit(c).await,
                (RawConn::Sqlite(c), false) => SqliteTransactionManager::rollback(c).await,
            }
        })
    }
}

impl Drop for TenantTxn {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // If an operation of this request holds the connection, it was cut short:
        // the connection is marked busy and will be closed.
        if let Ok(mut checkout) = self.cell.checkout.try_lock() {
            // Queued now, sent before the connection's next statement; the
            // connection is not reused by another request either way.
            if let Some(conn) = checkout.conn.as_mut() {
                match &mut conn.raw {
                    RawConn::Pg(c) => PgTransactionManager::start_rollback(c),
                    RawConn::Sqlite(c) => SqliteTransactionManager::start_rollback(c),
                }
            }
            checkout.broken = true;
        }
    }
}

#[async_trait::async_trait]
impl TransactionSession for TenantTxn {
    async fn commit(self) -> Result<(), DbErr> {
        TenantTxn::commit(self).await
    }

    async fn rollback(self) -> Result<(), DbErr> {
        TenantTxn::rollback(self).await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        execute(&self.cell, stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        execute_unprepared(&self.cell, sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        query_one(&self.cell, stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        query_all(&self.cell, stmt).await
    }
}

#[async_trait::async_trait]
impl TransactionTrait for TenantTxn {
    type Transaction = TenantTxn;

    async fn begin(&self) -> Result<TenantTxn, DbErr> {
        begin(&self.cell, self.backend, TransactionOptions::default()).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<TenantTxn, DbErr> {
        let options = TransactionOptions {
            isolation_level,
            access_mode,
            ..Default::default()
        };
        begin(&self.cell, self.backend, options).await
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<TenantTxn, DbErr> {
        begin(&self.cell, self.backend, options).await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTxn) -> Callback<'c, T, E> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin().await.map_err(TransactionError::Connection)?;
        run(txn, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTxn) -> Callback<'c, T, E> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self
            .begin_with_config(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        run(txn, callback).await
    }
}
