//! A request's connection: one real connection checked out of its pool for the
//! request's whole life, and usable by sea-orm like a pool (`ConnectionTrait`,
//! `TransactionTrait`). A schema-mode tenant's statements have their tables
//! qualified with its schema on the way ([`super::qualify`]); its connection's
//! empty search path finds nothing they do not qualify.
//!
//! When the request is done the connection goes back to its pool, unless it may be
//! in an unknown state: a transaction still open, an operation cut short (the
//! request was cancelled), or a failure of the connection itself. Those are closed,
//! so a connection is never handed to the next request in the middle of another's
//! work or transaction. Two cases are drained instead, on PostgreSQL: a connection
//! cut short in a single data statement outside any transaction (a client gone in
//! the middle of a read), and one whose transaction was dropped without an end (a
//! handler returning an error from inside it) with no operation cut short, whose
//! rollback is queued. Each goes back to its pool once the server has answered
//! everything sent and no transaction is open ([`ConnPool::drain`]).

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
    /// The operation under way is one data statement outside any transaction:
    /// cut short, it leaves nothing behind once the server has finished it, so a
    /// PostgreSQL connection can be drained rather than closed.
    drainable: bool,
    /// The connection failed.
    broken: bool,
    /// A transaction was dropped without an end: its rollback is queued, and the
    /// request may not use the connection any more but to roll back the
    /// transactions around it.
    abandoned: bool,
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
            drainable: false,
            broken: false,
            abandoned: false,
            _tenant_permit: tenant_permit,
        }
    }

    /// The connection, for an operation of the request; `rolling_back`: a
    /// rollback, which may still run after a transaction (a savepoint inside it)
    /// was abandoned, and only discards more.
    fn raw(&mut self, rolling_back: bool) -> Result<&mut RawConn, DbErr> {
        if self.broken || (self.abandoned && !rolling_back) {
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
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Cut short in a data statement outside any transaction, or idle with a
        // transaction's rollback queued: once the server has answered everything
        // sent, the session is as clean as after any request (PostgreSQL only).
        let drain = !self.broken
            && matches!(conn.raw, RawConn::Pg(_))
            && if self.busy {
                self.drainable
            } else {
                self.abandoned
            };
        if drain && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // The tenant's share is held until the server has let go too, so a
            // client that abandons slow requests cannot take more of it.
            let permit = self._tenant_permit.take();
            runtime.spawn(self.pool.drain(conn).run(permit));
            return;
        }
        self.pool
            .give_back(conn, !self.busy && !self.broken && !self.abandoned);
    }
}

/// Whether `sql` is one statement that reads or writes rows, and nothing else:
/// outside a transaction it runs in one of its own, which ends with it, and it
/// changes no setting of the session. Anything else cut short (a `BEGIN` sent but
/// not answered, a `SET`) could leave the session in a state nobody tracks. A
/// prepared statement is one statement by PostgreSQL's rule.
fn is_data_statement(sql: &str) -> bool {
    let sql = sql.trim_start();
    let word = &sql[..sql
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(sql.len())];
    ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Runs `$body` (a future giving `Result<_, sqlx::Error>`) with the checkout's raw
/// connection bound to `$raw`. The checkout is marked busy meanwhile, so that a
/// request cancelled during the operation leaves it marked, and drainable when
/// `$drain` says the operation is a data statement ([`is_data_statement`]) and no
/// transaction is open; errors become `DbErr` through `$to_db_err`.
macro_rules! with_conn {
    ($cell:expr, $to_db_err:expr, |$raw:ident| $body:expr) => {
        with_conn!(
            $cell,
            $to_db_err,
            drain = false,
            rolling_back = false,
            |$raw| $body
        )
    };
    ($cell:expr, $to_db_err:expr, drain = $drain:expr, |$raw:ident| $body:expr) => {
        with_conn!(
            $cell,
            $to_db_err,
            drain = $drain,
            rolling_back = false,
            |$raw| $body
        )
    };
    ($cell:expr, $to_db_err:expr, drain = $drain:expr, rolling_back = $rolling_back:expr,
     |$raw:ident| $body:expr) => {{
        let mut checkout = $cell.checkout.lock().await;
        checkout.busy = true;
        checkout.drainable = $drain
            && checkout
                .conn
                .as_ref()
                .is_some_and(|c| c.raw.transaction_depth() == 0);
        let outcome = match checkout.raw($rolling_back) {
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

/// `result`, unless it is a schema tenant's statement that found no table
/// (42P01) because the tenant's schema is gone (dropped or renamed underneath):
/// then the error is that (3F000), which makes the tenant unavailable (503, its
/// breaker) rather than its requests 500. A table missing from a schema that is
/// there (a pending migration, a bug) stays the statement's own error. Within a
/// transaction, aborted by the error, the schema cannot be looked up: the error
/// stays, and the next request outside one finds out.
async fn schema_checked<T>(cell: &Cell, result: Result<T, DbErr>) -> Result<T, DbErr> {
    match result {
        Err(e)
            if cell.schema.is_some()
                && super::errors::sql_state(&e).as_deref() == Some("42P01") =>
        {
            // Boxed: an error path, kept out of every statement's future.
            match Box::pin(find_schema(cell)).await {
                Err(gone) if super::errors::sql_state(&gone).as_deref() == Some("3F000") => {
                    Err(gone)
                }
                _ => Err(e),
            }
        }
        other => other,
    }
}

/// A round trip that finds the session's schema (3F000 when it is gone), or a
/// plain ping without one.
async fn find_schema(cell: &Cell) -> Result<(), DbErr> {
    let schema = cell.schema.clone();
    with_conn!(cell, query_err, |raw| async {
        match (raw, schema) {
            (RawConn::Pg(c), Some(schema)) => sqlx::query("SELECT $1::text::regnamespace")
                .bind(schema.as_ref())
                .execute(c)
                .await
                .map(|_| ()),
            (RawConn::Pg(c), None) => sqlx::Connection::ping(c).await,
            (RawConn::Sqlite(c), _) => sqlx::Connection::ping(c).await,
        }
    })
}

async fn execute(cell: &Cell, stmt: Statement) -> Result<ExecResult, DbErr> {
    let (sql, args) = cell.statement(stmt);
    let drain = is_data_statement(&sql.0);
    let result = with_conn!(cell, exec_err, drain = drain, |raw| async {
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
    });
    schema_checked(cell, result).await
}

async fn execute_unprepared(cell: &Cell, sql: &str) -> Result<ExecResult, DbErr> {
    let sql = cell.sql(sql.to_owned());
    let result = with_conn!(cell, exec_err, |raw| async {
        match raw {
            RawConn::Pg(c) => c.execute(sql).await.map(ExecResult::from),
            RawConn::Sqlite(c) => c.execute(sql).await.map(ExecResult::from),
        }
    });
    schema_checked(cell, result).await
}

async fn query_one(cell: &Cell, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
    let (sql, args) = cell.statement(stmt);
    let drain = is_data_statement(&sql.0);
    let result = with_conn!(cell, query_err, drain = drain, |raw| async {
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
    });
    schema_checked(cell, result).await
}

async fn query_all(cell: &Cell, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
    let (sql, args) = cell.statement(stmt);
    let drain = is_data_statement(&sql.0);
    let result = with_conn!(cell, query_err, drain = drain, |raw| async {
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
    });
    schema_checked(cell, result).await
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

    /// A round trip to the database; for a schema-mode tenant, one that also
    /// finds its schema (a schema dropped or renamed underneath fails with
    /// 3F000, as its statements would).
    pub async fn ping(&self) -> Result<(), DbErr> {
        find_schema(&self.cell).await
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
/// without `commit` or `rollback`, it is rolled back and the request may not use
/// the connection any more, but to roll back the transactions it was nested in;
/// when the request ends the connection is drained of the rollbacks and kept if no
/// transaction is left open (PostgreSQL), or closed.
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
        with_conn!(
            self.cell,
            query_err,
            drain = false,
            rolling_back = !commit,
            |raw| async {
                match (raw, commit) {
                    (RawConn::Pg(c), true) => PgTransactionManager::commit(c).await,
                    (RawConn::Pg(c), false) => PgTransactionManager::rollback(c).await,
                    (RawConn::Sqlite(c), true) => SqliteTransactionManager::commit(c).await,
                    (RawConn::Sqlite(c), false) => SqliteTransactionManager::rollback(c).await,
                }
            }
        )
    }
}

impl Drop for TenantTxn {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // If an operation of this request holds the connection, it was cut short
        // inside the transaction: the connection is marked busy, not drainable, and
        // will be closed.
        if let Ok(mut checkout) = self.cell.checkout.try_lock() {
            // Queued now, sent when the connection is drained; nothing of this
            // request runs on it after.
            if let Some(conn) = checkout.conn.as_mut() {
                match &mut conn.raw {
                    RawConn::Pg(c) => PgTransactionManager::start_rollback(c),
                    RawConn::Sqlite(c) => SqliteTransactionManager::start_rollback(c),
                }
            }
            checkout.abandoned = true;
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

#[cfg(test)]
mod tests {
    use super::is_data_statement;

    #[test]
    fn only_one_data_statement_may_be_drained() {
        for sql in [
            r#"SELECT "id" FROM "t""#,
            "  select 1",
            "INSERT INTO t VALUES (1)",
            "update t set x = 1",
            "DELETE FROM t",
            "WITH a AS (SELECT 1) SELECT * FROM a",
        ] {
            assert!(is_data_statement(sql), "{sql}");
        }
        for sql in [
            "BEGIN",
            "START TRANSACTION",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT s",
            "SET search_path TO a",
            "CALL p()",
            "SELECTX 1",
            "LOCK TABLE t",
            "",
            "-- SELECT\nBEGIN",
        ] {
            assert!(!is_data_statement(sql), "{sql}");
        }
    }
}
