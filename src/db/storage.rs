//! A tenant's storage: created only when it was never initialised (the ledger
//! remembers), checked, created and dropped for provisioning.

use super::{
    connect_one, database_name, maintenance_url, make_sqlite_dir, open_pool, open_pool_with,
    quote_ident, sql_state, sqlite_path,
};
use std::{path::Path, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, RuntimeErr, Statement};

use crate::{settings::PoolSettings, tenant::TenantConfig};

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
    let db = match open_pool_with(tenant, max_connections, settings, !known).await {
        // Migrating into a schema that was never made fails with PostgreSQL's "no
        // schema has been selected to create in": say what is missing instead.
        Err(e) if tenant.schema_name().is_some() && sql_state(&e).as_deref() == Some("3F000") => {
            tracing::error!(tenant_id = %tenant.id, "the tenant's schema does not exist: provision the tenant, or set AUTO_CREATE_DATABASES=true to create it on first use");
            return Err(missing_schema());
        }
        other => other?,
    };
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

/// The error of a schema-mode tenant whose schema was never created (not
/// provisioned, and `AUTO_CREATE_DATABASES` off): a connection error like
/// [`missing_storage`], so the tenant answers 503 `tenant_unavailable`.
pub fn missing_schema() -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(
        "the tenant's schema does not exist: provision the tenant, or set AUTO_CREATE_DATABASES=true".into(),
    ))
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

pub(super) async fn create_database_if_missing(
    url: &str,
    settings: &PoolSettings,
) -> Result<(), DbErr> {
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

/// The bytes a SQLite tenant's data takes: its file with its write-ahead log.
/// `None` for a PostgreSQL tenant (see [`server_storage_bytes`]).
pub fn file_storage_bytes(tenant: &TenantConfig) -> Option<u64> {
    let url = tenant.database_url.expose();
    if url.starts_with("postgres") {
        return None;
    }
    let path = sqlite_path(url)?;
    let size = |suffix: &str| std::fs::metadata(format!("{path}{suffix}")).map_or(0, |m| m.len());
    Some(size("") + size("-wal"))
}

/// The bytes a PostgreSQL tenant's data takes, asked over `conn` (a connection to
/// its database): the database (`pg_database_size`), or in schema mode its
/// schema's tables with their indexes and TOAST.
pub async fn server_storage_bytes(
    tenant: &TenantConfig,
    conn: &impl ConnectionTrait,
) -> Result<u64, DbErr> {
    let statement = match tenant.schema_name() {
        Some(schema) => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint AS n \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
            [schema.into()],
        ),
        None => Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_database_size(current_database())::bigint AS n",
        ),
    };
    Ok(u64::try_from(super::count(conn, statement).await?).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        db::testing::PgTestDb,
        settings::{Settings, parse_tenants_toml},
    };

    fn pool_settings(auto_create: bool) -> PoolSettings {
        let env = HashMap::from([
            ("SETTINGS_FILE".to_string(), String::new()),
            ("AUTO_CREATE_DATABASES".to_string(), auto_create.to_string()),
        ]);
        Settings::from_map(&env).unwrap().pools()
    }

    /// A schema-mode tenant whose schema was never made (not provisioned, nothing
    /// allowed to create it) is refused with an error that says so, and nothing
    /// is created; allowed to create it, the same tenant opens.
    #[tokio::test]
    async fn a_schema_tenant_without_its_schema_is_refused_by_name() {
        let Some(pg) = PgTestDb::create().await else {
            return;
        };
        let tenant = parse_tenants_toml(&format!(
            "[tenants.unmade]\ndatabase_url = \"{}\"\nisolation = \"schema\"\n",
            pg.url
        ))
        .unwrap()
        .remove(0);

        let err = open_tenant_storage(&tenant, 1, &pool_settings(false), None)
            .await
            .expect_err("opened a tenant whose schema does not exist");
        assert!(
            err.to_string().contains("schema does not exist"),
            "unclear error: {err}"
        );
        assert!(
            !storage_exists(&tenant, &pool_settings(false))
                .await
                .unwrap()
        );

        let db = open_tenant_storage(&tenant, 1, &pool_settings(true), None)
            .await
            .unwrap();
        db.close().await.unwrap();
        assert!(storage_exists(&tenant, &pool_settings(true)).await.unwrap());
        pg.drop().await;
    }
}
