//! Opening a tenant database: URL preparation, pool options, migrations, and the
//! scrubbing of credentials from any database error before it is logged. The
//! connection layer itself is in [`pool`] (pools and per-server budgets) and
//! [`conn`] (a request's connection).

pub mod conn;
pub mod pool;

use std::{path::Path, time::Duration};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    Statement, TransactionTrait,
};

use crate::{settings::PoolSettings, tenant::TenantConfig};

/// Fails at once when nothing listens at a PostgreSQL URL's host and port (the
/// driver would retry a refused connection until its timeout). Other URLs, and
/// hosts that are socket directories, pass.
pub async fn check_reachable(url: &str, timeout: Duration) -> Result<(), DbErr> {
    if !url.starts_with("postgres") {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| DbErr::Custom("invalid database URL".into()))?;
    let Some(host) = parsed
        .host_str()
        .filter(|h| !h.is_empty() && !h.starts_with('%'))
    else {
        return Ok(());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port().unwrap_or(5432);
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(DbErr::Conn(RuntimeErr::Internal(format!(
            "cannot reach the database server: {e}"
        )))),
        Err(_) => Err(DbErr::Conn(RuntimeErr::Internal(
            "cannot reach the database server: timed out".into(),
        ))),
    }
}

/// The boxed future a [`StorageLedger`] answers with.
pub type LedgerFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, DbErr>> + Send + 'a>>;

/// Remembers which tenant storages (a SQLite file, a PostgreSQL database or schema,
/// by [`storage_key`]) have been initialised, so that one that disappears is
/// reported rather than silently created again, empty. Kept in the control
/// database, shared by every replica.
pub trait StorageLedger: Send + Sync {
    fn is_initialised<'a>(&'a self, key: &'a str) -> LedgerFuture<'a, bool>;
    fn record_initialised<'a>(&'a self, key: &'a str, tenant: &'a str) -> LedgerFuture<'a, ()>;
}

/// Where a tenant's data is (see [`TenantConfig::storage_identity`]).
pub fn storage_key(tenant: &TenantConfig) -> Result<Option<String>, DbErr> {
    Ok(tenant.storage_identity())
}

/// Opens the tenant's database for the work of `open_pool` (see there), creating
/// its storage only if it has never been initialised: a storage the ledger knows
/// that is gone is an error (a 503 for requests), logged naming the tenant, and
/// nothing is created. Records a storage the ledger did not know once it is open.
/// Without a ledger (single-tenant mode) the storage is created whenever missing.
pub async fn open_tenant_storage(
    tenant: &TenantConfig,
    max_connections: u32,
    settings: &PoolSettings,
    ledger: Option<&dyn StorageLedger>,
) -> Result<DatabaseConnection, DbErr> {
    let key = storage_key(tenant)?;
    let ledger = ledger.zip(key.as_deref());
    let known = match ledger {
        Some((ledger, key)) => ledger.is_initialised(key).await?,
        None => false,
    };
    if known {
        if !storage_exists(tenant, settings).await? {
            tracing::error!(tenant_id = %tenant.id, "the tenant's database has disappeared; it is not created again: restore it, or remove and provision the tenant again");
            return Err(missing_storage());
        }
    } else if settings.auto_create_databases {
        ensure_tenant_storage(tenant, settings).await?;
    }
    let db = open_pool_with(tenant, max_connections, settings, !known).await?;
    if !known && let Some((ledger, key)) = ledger {
        ledger.record_initialised(key, tenant.id.as_str()).await?;
    }
    Ok(db)
}

/// The error of a tenant whose initialised storage has gone: a connection error,
/// so the tenant answers 503 `tenant_unavailable`.
pub fn missing_storage() -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(
        "the tenant's database has disappeared".into(),
    ))
}

/// Opens a sea-orm pool of its own for `tenant` with at most `max_connections`,
/// bounded by the connect timeout, and applies pending migrations when the settings
/// say so: for the migrator, provisioning and the CLI, which need sea-orm's own
/// connection type. Requests use [`pool`] instead. A SQLite file that does not exist
/// yet is created, with its directory; a schema-mode tenant's connections are pinned
/// to its schema.
pub async fn open_pool(
    tenant: &TenantConfig,
    max_connections: u32,
    settings: &PoolSettings,
) -> Result<DatabaseConnection, DbErr> {
    open_pool_with(tenant, max_connections, settings, true).await
}

/// [`open_pool`], creating a missing SQLite file only if `create`.
async fn open_pool_with(
    tenant: &TenantConfig,
    max_connections: u32,
    settings: &PoolSettings,
    create: bool,
) -> Result<DatabaseConnection, DbErr> {
    let url = prepare_url(tenant.database_url.expose())?;
    let url = if create {
        make_sqlite_dir(&url)?;
        url
    } else {
        without_create(&url)
    };
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.acquire_timeout)
        // Connections idle for long are returned even while the pool stays open.
        .idle_timeout(settings.idle_timeout)
        // Statement logging would put tenant data in the log.
        .sqlx_logging(false)
        // A ping before every checkout costs a round trip per request; ping only a
        // connection that sat idle long enough to have been dropped by a server.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    if let Some(schema) = tenant.schema_name() {
        // Only the tenant's schema: no fallback to `public`, where a database-mode
        // tenant sharing this database keeps its tables.
        options.set_schema_search_path(quote_ident(&schema));
    }
    let connect = async {
        let mut tries = 0;
        loop {
            match Database::connect(options.clone()).await {
                // Another process (a second replica, the CLI) holds the new SQLite
                // file while it migrates it, and switching to WAL does not wait.
                Err(e) if is_sqlite_busy(&e) && tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                other => return other,
            }
        }
    };
    let db = tokio::time::timeout(settings.connect_timeout, connect)
        .await
        .map_err(|_| DbErr::Custom("connecting to the tenant database timed out".into()))??;
    if settings.auto_migrate {
        migrate(&db, tenant).await?;
    }
    Ok(db)
}

/// Applies pending migrations to the tenant's database (see [`migrate_with`]),
/// keyed by the tenant's storage.
pub async fn migrate(db: &DatabaseConnection, tenant: &TenantConfig) -> Result<(), DbErr> {
    let key = format!(
        "tenant-router:{}:{}",
        database_name(tenant.database_url.expose())?,
        tenant.schema_name().unwrap_or_default()
    );
    migrate_with::<Migrator>(db, &key).await
}

/// Applies `M`'s pending migrations in one transaction, so that two replicas (or a
/// request and the CLI) migrating the same database take turns instead of colliding
/// on the catalog, and DDL rolls back whole if a step fails. On PostgreSQL the
/// transaction holds an advisory lock on `key`; on SQLite it is `BEGIN IMMEDIATE`,
/// whose write lock the second process waits for on the busy timeout, then finds
/// the work done.
pub async fn migrate_with<M: MigratorTrait>(
    db: &DatabaseConnection,
    key: &str,
) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return retry_lost_race(|| async {
            let txn = begin_write(db).await?;
            M::up(&txn, None).await?;
            txn.commit().await
        })
        .await;
    }
    let txn = db.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [lock_key(key).into()],
    ))
    .await?;
    M::up(&txn, None).await?;
    txn.commit().await
}

/// Runs a migration again when it lost a race with another process (a second
/// replica starting at the same moment) applying the same migration: SQLite has no
/// advisory lock, so the loser meets a busy database, a table that now exists, or a
/// duplicate row in the migration table. Its next run finds the work done. Any other
/// failure is returned at once; if the retries fail too, the first error is the one
/// returned, since it names the cause.
async fn retry_lost_race<F, Fut>(mut run: F) -> Result<(), DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), DbErr>>,
{
    let first = match run().await {
        Ok(()) => return Ok(()),
        Err(e) if lost_race(&e) => e,
        Err(e) => return Err(e),
    };
    tracing::info!(error = %redact_error(&first), "migration met another process's; trying again");
    for tries in 1..=5u64 {
        tokio::time::sleep(Duration::from_millis(100 * tries)).await;
        match run().await {
            Ok(()) => return Ok(()),
            Err(e) if lost_race(&e) => continue,
            Err(_) => break,
        }
    }
    Err(first)
}

/// What a migration running beside another one's meets.
fn lost_race(err: &DbErr) -> bool {
    is_sqlite_busy(err)
        || is_unique_violation(err)
        // PostgreSQL: duplicate table, schema or object; SQLite says it in words.
        || sql_state(err).is_some_and(|c| matches!(c.as_str(), "42P07" | "42P06" | "42710"))
        || redact_error(err).contains("already exists")
        || redact_error(err).contains("duplicate column")
}

/// A stable 64-bit key for `name` (FNV-1a): the same in every replica and version.
fn lock_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Creates what the tenant's data needs when it is missing: the SQLite file's
/// directory, the PostgreSQL database (database mode) or schema (schema mode). Safe
/// to run twice, and concurrently. Names come from validated configuration and are
/// quoted, never spliced from raw input.
pub async fn ensure_tenant_storage(
    tenant: &TenantConfig,
    settings: &PoolSettings,
) -> Result<(), DbErr> {
    let url = tenant.database_url.expose();
    if !url.starts_with("postgres") {
        return make_sqlite_dir(url);
    }
    match tenant.schema_name() {
        Some(schema) => {
            let db = connect_one(url, settings).await?;
            let result = db
                .execute_unprepared(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(&schema)
                ))
                .await;
            let _ = db.close().await;
            match result {
                // Two sessions creating the same schema at once: one loses on the
                // catalog's unique index, and the schema exists either way.
                Err(e) if sql_state(&e).as_deref() == Some("23505") => Ok(()),
                other => other.map(|_| ()),
            }
        }
        None => create_database_if_missing(url, settings).await,
    }
}

/// Creates the tenant's storage if needed, then migrates it: the step provisioning
/// runs for a new tenant. Safe to run twice.
pub async fn create_tenant_database(
    tenant: &TenantConfig,
    settings: &PoolSettings,
) -> Result<(), DbErr> {
    ensure_tenant_storage(tenant, settings).await?;
    let mut migrating = settings.clone();
    migrating.auto_migrate = true;
    let db = open_pool(tenant, 1, &migrating).await?;
    db.close().await
}

/// Whether the tenant's storage exists: its SQLite file, its PostgreSQL database
/// (database mode) or its schema (schema mode).
pub async fn storage_exists(tenant: &TenantConfig, settings: &PoolSettings) -> Result<bool, DbErr> {
    let url = tenant.database_url.expose();
    if !url.starts_with("postgres") {
        return Ok(sqlite_path(url).is_some_and(|p| Path::new(&p).exists()));
    }
    let (admin_url, sql, name) = match tenant.schema_name() {
        Some(schema) => (
            url.to_string(),
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
            schema,
        ),
        None => (
            maintenance_url(url)?,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            database_name(url)?,
        ),
    };
    let db = match connect_one(&admin_url, settings).await {
        Ok(db) => db,
        // The shared database of a schema-mode tenant may not exist either.
        Err(e) if sql_state(&e).as_deref() == Some("3D000") => return Ok(false),
        Err(e) => return Err(e),
    };
    let found = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [name.into()],
        ))
        .await;
    let _ = db.close().await;
    Ok(found?.is_some())
}

/// Removes the tenant's storage and all its data: the SQLite file, the database
/// (`DROP DATABASE … WITH (FORCE)`) or the schema (`DROP SCHEMA … CASCADE`).
pub async fn drop_storage(tenant: &TenantConfig, settings: &PoolSettings) -> Result<(), DbErr> {
    let url = tenant.database_url.expose();
    if !url.starts_with("postgres") {
        if let Some(path) = sqlite_path(url) {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                match std::fs::remove_file(format!("{path}{suffix}")) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(DbErr::Custom(format!(
                            "cannot remove the tenant's file: {e}"
                        )));
                    }
                }
            }
        }
        return Ok(());
    }
    let (admin_url, sql) = match tenant.schema_name() {
        Some(schema) => (
            url.to_string(),
            format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&schema)),
        ),
        None => (
            maintenance_url(url)?,
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&database_name(url)?)
            ),
        ),
    };
    let db = connect_one(&admin_url, settings).await?;
    let result = db.execute_unprepared(&sql).await;
    let _ = db.close().await;
    result.map(|_| ())
}

/// The file of a `sqlite:` URL, unless it is in memory.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| path.to_string())
}

fn database_name(url: &str) -> Result<String, DbErr> {
    let parsed = url::Url::parse(url).map_err(|_| DbErr::Custom("invalid database URL".into()))?;
    Ok(parsed.path().trim_start_matches('/').to_string())
}

/// The same server's maintenance database, `postgres`.
fn maintenance_url(url: &str) -> Result<String, DbErr> {
    let mut parsed =
        url::Url::parse(url).map_err(|_| DbErr::Custom("invalid database URL".into()))?;
    parsed.set_path("/postgres");
    Ok(parsed.to_string())
}

async fn create_database_if_missing(url: &str, settings: &PoolSettings) -> Result<(), DbErr> {
    let mut parsed =
        url::Url::parse(url).map_err(|_| DbErr::Custom("invalid database URL".into()))?;
    let name = parsed.path().trim_start_matches('/').to_string();
    // The maintenance database every PostgreSQL server has.
    parsed.set_path("/postgres");
    let admin = connect_one(parsed.as_str(), settings).await?;
    let result = async {
        for attempt in 0..5 {
            let exists = admin
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT 1 FROM pg_database WHERE datname = $1",
                    [name.clone().into()],
                ))
                .await?
                .is_some();
            if exists {
                return Ok(());
            }
            match admin
                .execute_unprepared(&format!("CREATE DATABASE {}", quote_ident(&name)))
                .await
            {
                Ok(_) => return Ok(()),
                // Another replica or request created it first.
                Err(e) if matches!(sql_state(&e).as_deref(), Some("42P04" | "23505")) => {
                    return Ok(());
                }
                // "source database is being accessed by other users": a concurrent
                // CREATE DATABASE holds the template; try again shortly.
                Err(e) if sql_state(&e).as_deref() == Some("55006") && attempt < 4 => {
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    .await;
    let _ = admin.close().await;
    result
}

/// One short-lived connection, for administrative statements.
async fn connect_one(url: &str, settings: &PoolSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(1)
        .min_connections(0)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.connect_timeout)
        .sqlx_logging(false);
    tokio::time::timeout(settings.connect_timeout, Database::connect(options))
        .await
        .map_err(|_| DbErr::Custom("connecting to the database server timed out".into()))?
}

/// Quotes a PostgreSQL identifier (`"` doubled), for names that were validated but
/// may hold `-`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Starts a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`: the
/// write lock is taken at the start, so two such transactions queue on the busy
/// timeout instead of the second failing when it first writes after reading a
/// snapshot the first has made stale. Other backends start as usual.
pub async fn begin_write<C>(db: &C) -> Result<C::Transaction, DbErr>
where
    C: TransactionTrait + ConnectionTrait,
{
    let options = sea_orm::TransactionOptions {
        sqlite_transaction_mode: (db.get_database_backend() == DbBackend::Sqlite)
            .then_some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    db.begin_with_options(options).await
}

/// A unique index refused the row (PostgreSQL 23505; SQLite's constraint codes for
/// a unique index or primary key).
pub fn is_unique_violation(err: &DbErr) -> bool {
    sql_state(err).is_some_and(|code| matches!(code.as_str(), "23505" | "2067" | "1555"))
}

/// SQLite's "database is locked" (SQLITE_BUSY, and its extended codes).
fn is_sqlite_busy(err: &DbErr) -> bool {
    sql_state(err).is_some_and(|code| code.parse::<i32>().is_ok_and(|c| c & 0xff == 5))
}

/// The SQLSTATE of a database error, if the error came from the server.
pub fn sql_state(err: &DbErr) -> Option<String> {
    sqlx_error(err).and_then(|e| match e {
        sea_orm::sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    })
}

fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
        _ => None,
    }
}

/// Whether `err` came from a pool the router itself closed (idle, capacity or budget
/// eviction) while a request still held it: worth a retry, but no sign that the
/// database failed.
pub fn is_pool_closed(err: &DbErr) -> bool {
    matches!(
        err,
        DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
    ) || matches!(sqlx_error(err), Some(sea_orm::sqlx::Error::PoolClosed))
}

/// Whether `err` says for certain that the database failed (unreachable, gone, shut
/// down, broken connection), as opposed to being busy or the pool being closed by
/// the router. Such errors trip the tenant's circuit breaker.
pub fn is_database_failure(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as E;
    if is_pool_closed(err) {
        return false;
    }
    match err {
        DbErr::Conn(_) => true,
        DbErr::Custom(m) => m.contains("timed out"),
        _ => match sqlx_error(err) {
            Some(E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed) => true,
            Some(E::Database(db)) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "3D000"
                    || code == "3F000"
            }),
            _ => false,
        },
    }
}

/// Whether `err` means the tenant's database cannot be used right now (down,
/// unreachable, gone, out of connections, locked), as opposed to a bug or bad data.
/// Such errors are a 503 the client may retry, and feed the tenant's circuit breaker.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as E;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Custom(m) => m.contains("timed out"),
        _ => match sqlx_error(err) {
            Some(
                E::Io(_)
                | E::Tls(_)
                | E::PoolTimedOut
                | E::PoolClosed
                | E::WorkerCrashed
                | E::Protocol(_),
            ) => true,
            Some(E::Database(db)) => db.code().is_some_and(|code| {
                // 08: connection exception; 57P: operator intervention (shutdown,
                // terminated); 53300: too many connections; 3D000: no such database;
                // 3F000: no such schema; SQLite 5/6: busy/locked.
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "53300"
                    || code == "3D000"
                    || code == "3F000"
                    || code == "5"
                    || code == "6"
            }),
            _ => false,
        },
    }
}

/// For SQLite, asks for the file to be created (`mode=rwc`) unless the URL chose a
/// mode itself; `postgresql://` becomes `postgres://`. Touches no file: see
/// [`make_sqlite_dir`].
pub fn prepare_url(url: &str) -> Result<String, DbErr> {
    if let Some(rest) = url.strip_prefix("postgresql://") {
        return Ok(format!("postgres://{rest}"));
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(url.to_string());
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(url.to_string());
    }
    let has_mode = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mode=")));
    Ok(match (query, has_mode) {
        (_, true) => url.to_string(),
        (Some(_), false) => format!("{url}&mode=rwc"),
        (None, false) => format!("{url}?mode=rwc"),
    })
}

/// Creates the directory of a SQLite URL's file; other URLs need nothing.
pub fn make_sqlite_dir(url: &str) -> Result<(), DbErr> {
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = Path::new(&path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            DbErr::Custom(format!("cannot create the tenant's data directory: {e}"))
        })?;
    }
    Ok(())
}

/// A prepared SQLite URL that opens the file only if it exists (`mode=rwc` becomes
/// `mode=rw`); other URLs unchanged.
pub fn without_create(url: &str) -> String {
    if !url.starts_with("sqlite:") {
        return url.to_string();
    }
    match url.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|kv| if kv == "mode=rwc" { "mode=rw" } else { kv })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => format!("{url}?mode=rw"),
    }
}

/// Renders a database error with any credentials it may hold removed.
pub fn redact_error(err: &DbErr) -> String {
    redact(&err.to_string())
}

/// Removes the user-info part of every `scheme://user:password@host` and the value
/// of every `password=` pair from `text`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\''
            })
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    redact_password_pairs(&out)
}

fn redact_password_pairs(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search_from = 0;
    while let Some(found) = lower[search_from..].find("password=") {
        let value_start = search_from + found + "password=".len();
        let value_end = text[value_start..]
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
            .map_or(text.len(), |n| value_start + n);
        out.push_str(&text[last..value_start]);
        out.push_str("***");
        last = value_end;
        search_from = value_end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_user_info_and_password_pairs() {
        let text = "error connecting to postgres://app:hunter2@db.internal:5432/t1?sslmode=require \
                    (host=db password=hunter3 user=app)";
        let clean = redact(text);
        assert!(!clean.contains("hunter2"), "{clean}");
        assert!(!clean.contains("hunter3"), "{clean}");
        assert!(
            clean.contains("postgres://***@db.internal:5432/t1"),
            "{clean}"
        );
    }

    #[test]
    fn redact_leaves_plain_text_alone() {
        assert_eq!(redact("no such table: products"), "no such table: products");
        assert_eq!(redact("sqlite://data/a.db"), "sqlite://data/a.db");
    }

    #[test]
    fn sqlite_urls_get_create_mode_and_a_directory_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nested/t.db");
        let url = format!("sqlite://{}", db.display());
        assert_eq!(prepare_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(!dir.path().join("nested").exists());
        make_sqlite_dir(&url).unwrap();
        assert!(dir.path().join("nested").is_dir());
        // A storage that exists already is opened, never created.
        assert_eq!(
            without_create(&format!("{url}?mode=rwc")),
            format!("{url}?mode=rw")
        );
        assert_eq!(
            without_create(&format!("{url}?cache=shared&mode=rwc")),
            format!("{url}?cache=shared&mode=rw")
        );
        assert_eq!(without_create(&url), format!("{url}?mode=rw"));
        let ro = format!("sqlite://{}?mode=ro", db.display());
        assert_eq!(prepare_url(&ro).unwrap(), ro);
        let pg = "postgres://u:p@h/db";
        assert_eq!(prepare_url(pg).unwrap(), pg);
        assert_eq!(prepare_url("postgresql://u:p@h/db").unwrap(), pg);
    }

    #[test]
    fn errors_are_told_apart() {
        use sea_orm::ConnAcquireErr;
        let closed = DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed);
        assert!(
            is_unavailable(&closed) && is_pool_closed(&closed) && !is_database_failure(&closed)
        );
        let timeout = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        assert!(
            is_unavailable(&timeout) && !is_pool_closed(&timeout) && !is_database_failure(&timeout)
        );
        let io = DbErr::Conn(RuntimeErr::Internal("connection refused".into()));
        assert!(is_unavailable(&io) && is_database_failure(&io));
        assert!(!is_unavailable(&DbErr::RecordNotFound("x".into())));
        assert!(!is_unavailable(&DbErr::Custom("constraint failed".into())));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("tenant_acme-mfg"), "\"tenant_acme-mfg\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
