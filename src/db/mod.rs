//! The connection layer: opening a tenant database ([`open_pool`]), its URL
//! ([`urls`]), its storage ([`storage`]), its migrations ([`migrate`]), what its
//! errors mean ([`errors`]); pools and per-server budgets are in [`pool`], a
//! request's connection in [`conn`].

pub mod conn;
mod errors;
mod migrate;
pub mod pool;
mod qualify;
pub mod rows;
mod storage;
#[cfg(test)]
pub(crate) mod testing;
mod urls;

pub use errors::*;
pub use migrate::*;
pub use storage::*;
pub use urls::*;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    Statement, TransactionTrait,
};

use crate::{settings::PoolSettings, tenant::TenantConfig};

/// Opens a sea-orm pool, with sqlx's maintenance task off: no idle timeout and no
/// maximum lifetime, whatever `options` say. Every sea-orm pool is opened here
/// (clippy's `disallowed-methods` refuses `Database::connect` elsewhere).
///
/// Why: sqlx 0.9.0's pool counts idle connections after making one acquirable,
/// so a concurrent checkout can wrap the count to `usize::MAX`; its maintenance
/// task, which a pool runs when it has an idle timeout or a maximum lifetime (sqlx's
/// defaults: 10 and 30 minutes), then loops that many times without yielding, and
/// the runtime stalls (transact-rs/sqlx#3645, fixed by #4289 after 0.9.0). These
/// pools are short-lived or small (migrations, provisioning, the control database,
/// move locks), so nothing needs reaping; request connections come from [`pool`],
/// which reaps its own.
pub async fn connect(options: impl Into<ConnectOptions>) -> Result<DatabaseConnection, DbErr> {
    let mut options = options.into();
    options
        .idle_timeout(None::<Duration>)
        .max_lifetime(None::<Duration>);
    #[allow(clippy::disallowed_methods)] // the one place that may
    Database::connect(options).await
}

/// Fails at once when nothing listens at a PostgreSQL URL's host and port (the
/// driver would retry a refused connection until its timeout). Other URLs, and
/// hosts that are socket directories, pass.
pub async fn check_reachable(url: &str, timeout: Duration) -> Result<(), DbErr> {
    if !url.starts_with("postgres") {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| DbErr::Custom("invalid database URL".into()))?;
    // The driver may reach elsewhere than the URL's host and port says: a `host`,
    // `hostaddr` or `port` parameter (a socket directory), or `PGPORT` for a URL
    // without a port. Then it is left to the driver.
    let elsewhere = parsed
        .query_pairs()
        .any(|(k, _)| matches!(k.as_ref(), "host" | "hostaddr" | "port"))
        || (parsed.port().is_none() && std::env::var_os("PGPORT").is_some());
    if elsewhere {
        return Ok(());
    }
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
pub(super) async fn open_pool_with(
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
            match connect(options.clone()).await {
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

/// One short-lived connection, for administrative statements.
pub(super) async fn connect_one(
    url: &str,
    settings: &PoolSettings,
) -> Result<DatabaseConnection, DbErr> {
    // A refused connection fails now, not after the driver's retries.
    check_reachable(url, settings.connect_timeout).await?;
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(1)
        .min_connections(0)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.connect_timeout)
        .sqlx_logging(false);
    tokio::time::timeout(settings.connect_timeout, connect(options))
        .await
        .map_err(|_| DbErr::Custom("connecting to the database server timed out".into()))?
}

/// Rows the connection has inserted, updated or deleted: SQLite's
/// `total_changes()`; on PostgreSQL the counts of the tables in `schema` (a
/// schema-mode tenant's; else the connection's current schema) that
/// the session has not yet reported (`pg_stat_xact_user_tables`, which also holds
/// earlier transactions' counts until the session reports them, never inside a
/// transaction). Read at the start and the end of one transaction, the difference
/// is what the transaction wrote.
pub async fn rows_written_mark(
    txn: &impl ConnectionTrait,
    schema: Option<&str>,
) -> Result<i64, DbErr> {
    const PG_SUM: &str = "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint AS n \
                          FROM pg_stat_xact_user_tables WHERE schemaname = ";
    let backend = txn.get_database_backend();
    let statement = match (backend, schema) {
        (DbBackend::Sqlite, _) => Statement::from_string(backend, "SELECT total_changes() AS n"),
        // A schema tenant's connection has an empty search path: no current schema.
        (_, Some(schema)) => {
            Statement::from_sql_and_values(backend, format!("{PG_SUM}$1"), [schema.into()])
        }
        (_, None) => Statement::from_string(backend, format!("{PG_SUM}current_schema()")),
    };
    count(txn, statement).await
}

/// Rows written in the transaction since [`rows_written_mark`] gave `mark`.
pub async fn rows_written_since(
    txn: &impl ConnectionTrait,
    schema: Option<&str>,
    mark: i64,
) -> Result<u64, DbErr> {
    let now = rows_written_mark(txn, schema).await?;
    Ok(u64::try_from(now - mark).unwrap_or(0))
}

/// Runs `statement`, one row with one integer column `n`, and returns it.
pub(crate) async fn count(db: &impl ConnectionTrait, statement: Statement) -> Result<i64, DbErr> {
    db.query_one_raw(statement)
        .await?
        .ok_or_else(|| DbErr::Custom("a count query returned no row".into()))?
        .try_get("", "n")
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::settings::{Settings, parse_tenants_toml};

    fn assert_unmaintained(db: &DatabaseConnection, what: &str) {
        let options = db.get_sqlite_connection_pool().options();
        assert_eq!(
            (options.get_idle_timeout(), options.get_max_lifetime()),
            (None, None),
            "{what}: sqlx runs its pool maintenance task (transact-rs/sqlx#3645)"
        );
    }

    /// A refused port fails at once; a URL whose parameters send the driver
    /// elsewhere (a socket directory, another port) is left to the driver.
    #[tokio::test]
    async fn only_the_server_the_driver_would_reach_is_probed() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let second = Duration::from_secs(1);
        let url = format!("postgres://u@127.0.0.1:{closed}/db");
        assert!(check_reachable(&url, second).await.is_err());
        for elsewhere in [
            format!("{url}?host=/var/run/postgresql"),
            format!("{url}?port=6432"),
            format!("{url}?hostaddr=10.0.0.5"),
        ] {
            assert!(
                check_reachable(&elsewhere, second).await.is_ok(),
                "{elsewhere}"
            );
        }
    }

    /// No sea-orm pool runs sqlx's maintenance task: not one opened from a bare URL
    /// (sqlx's defaults would reap after 10 and 30 minutes), not one whose options
    /// ask for reaping, not a tenant's own pool.
    #[tokio::test]
    async fn sea_orm_pools_run_without_sqlx_maintenance() {
        let bare = connect("sqlite::memory:").await.unwrap();
        assert_unmaintained(&bare, "a pool from a bare URL");

        let mut asking = ConnectOptions::new("sqlite::memory:");
        asking
            .idle_timeout(Duration::from_secs(1))
            .max_lifetime(Duration::from_secs(1));
        let asking = connect(asking).await.unwrap();
        assert_unmaintained(&asking, "a pool whose options ask for reaping");

        let dir = tempfile::tempdir().unwrap();
        let tenant = parse_tenants_toml(&format!(
            "[tenants.acme]\ndatabase_url = \"sqlite://{}/acme.db?mode=rwc\"\n",
            dir.path().display()
        ))
        .unwrap()
        .remove(0);
        let env = HashMap::from([("SETTINGS_FILE".to_string(), String::new())]);
        let settings = Settings::from_map(&env).unwrap().pools();
        let own = open_pool(&tenant, 1, &settings).await.unwrap();
        assert_unmaintained(&own, "a tenant's own pool");
    }
}
