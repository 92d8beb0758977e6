//! Where a connection goes ([`Target`]: a SQLite file or a PostgreSQL database
//! and schema) and a connection as opened ([`RawConn`]), with the identity of its
//! SQLite file so that a removed or replaced file is noticed.

use std::time::Duration;

use sea_orm::{
    DbErr,
    sqlx::{
        self, Connection, Executor,
        postgres::{PgConnectOptions, PgConnection, PgTransactionManager},
        sqlite::{SqliteConnectOptions, SqliteConnection, SqliteTransactionManager},
    },
};

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

    /// Keeps up to `capacity` prepared statements per PostgreSQL connection
    /// (sqlx's default is 100). A schema tenant's statements name its schema, so
    /// each tenant a connection serves has statements of its own there.
    pub fn statement_cache(self, capacity: usize) -> Self {
        match self {
            Self::Postgres(o) => Self::Postgres(Box::new(o.statement_cache_capacity(capacity))),
            other => other,
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
    pub(super) fn sqlite_file(&self) -> Option<&std::path::Path> {
        match self {
            Self::Sqlite(o) => Some(o.get_filename()).filter(|p| {
                let name = p.to_string_lossy();
                !name.starts_with(":memory:") && !name.starts_with("file:")
            }),
            Self::Postgres(_) => None,
        }
    }

    pub(super) async fn connect(&self) -> Result<RawConn, sqlx::Error> {
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

pub(super) fn is_busy(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| c.parse::<i32>().is_ok_and(|c| c & 0xff == 5)))
}

/// A SQLite file's device and inode: a connection made to one file notices when
/// the file is removed or replaced under it, where it would otherwise go on
/// reading and writing the unlinked file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId(u64, u64);

pub(super) fn file_id(path: &std::path::Path) -> Option<FileId> {
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

    pub(super) async fn execute_simple(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Pg(c) => c.execute(sql).await.map(|_| ()),
            Self::Sqlite(c) => c.execute(sql).await.map(|_| ()),
        }
    }

    pub(super) async fn ping(&mut self) -> Result<(), sqlx::Error> {
        match self {
            Self::Pg(c) => c.ping().await,
            Self::Sqlite(c) => c.ping().await,
        }
    }

    /// After a drain: whether a PostgreSQL session is idle and as the pool left
    /// it. One plain query, sent after everything before it and answered after
    /// their replies: no transaction open, no advisory lock held, exactly the
    /// prepared statements the driver knows of (not a `Parse` sent by a prepare
    /// cut short), no setting changed in the session (`set_config` in a
    /// statement) but the two the pool sets for schema tenants, and for a
    /// connection of schema tenants (`qualified`) those two as it set them: the
    /// empty search path and generic plans.
    pub(super) async fn is_clean(&mut self, qualified: bool) -> Result<bool, sqlx::Error> {
        use sqlx::Row;
        let Self::Pg(c) = self else {
            return Ok(false);
        };
        let known = sqlx::Connection::cached_statements_size(c) as i64;
        let row = c
            .fetch_one(
                "SELECT now() = statement_timestamp(), \
                 current_setting('search_path'), current_setting('plan_cache_mode'), \
                 (SELECT count(*) FROM pg_catalog.pg_prepared_statements), \
                 (SELECT count(*) FROM pg_catalog.pg_locks \
                  WHERE pid = pg_backend_pid() AND locktype = 'advisory'), \
                 (SELECT count(*) FILTER (WHERE name NOT IN ('search_path', 'plan_cache_mode')) \
                  FROM pg_catalog.pg_settings WHERE source = 'session'), \
                 (SELECT count(*) FILTER (WHERE name IN ('search_path', 'plan_cache_mode')) \
                  FROM pg_catalog.pg_settings WHERE source = 'session')",
            )
            .await?;
        let outside_transaction: bool = row.try_get(0)?;
        let search_path: String = row.try_get(1)?;
        let plan_cache_mode: String = row.try_get(2)?;
        let prepared: i64 = row.try_get(3)?;
        let advisory_locks: i64 = row.try_get(4)?;
        let other_settings: i64 = row.try_get(5)?;
        let mode_settings: i64 = row.try_get(6)?;
        let mode_kept = if qualified {
            search_path == "\"\"" && plan_cache_mode == "force_generic_plan"
        } else {
            mode_settings == 0
        };
        Ok(outside_transaction
            && mode_kept
            && other_settings == 0
            && prepared == known
            && advisory_locks == 0)
    }

    pub(super) async fn close(self) {
        let _ = match self {
            Self::Pg(c) => c.close().await,
            Self::Sqlite(c) => c.close().await,
        };
    }
}
