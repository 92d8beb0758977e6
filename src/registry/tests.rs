//! The registry against real SQLite files.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::TenantRegistry;
use crate::{
    settings::{Settings, parse_tenants_toml},
    tenant::TenantConfig,
};

fn tenant_on(dir: &std::path::Path, file: &str) -> TenantConfig {
    let toml = format!(
        "[tenants.moved]\ndatabase_url = \"sqlite://{}/{file}?mode=rwc\"\n",
        dir.display()
    );
    parse_tenants_toml(&toml).unwrap().remove(0)
}

/// The file a request's connection reads and writes.
async fn file_of(registry: &TenantRegistry, tenant: &TenantConfig) -> String {
    let conn = registry.connect(tenant).await.unwrap();
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT file FROM pragma_database_list WHERE name = 'main'",
        ))
        .await
        .unwrap()
        .unwrap();
    let path: String = row.try_get("", "file").unwrap();
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// A request that took the tenant's configuration before its storage changed (a
/// move switched its URL) and connects after the change reaches the new storage,
/// and leaves no handle to the old one for the requests after it.
#[tokio::test]
async fn a_request_holding_the_configuration_from_before_a_move_reaches_the_new_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after) = (tenant_on(dir.path(), "a.db"), tenant_on(dir.path(), "b.db"));
    let env: HashMap<String, String> = [("SETTINGS_FILE".to_string(), String::new())].into();
    let registry = TenantRegistry::new(
        vec![before.clone()],
        Settings::from_map(&env).unwrap().pools(),
    );
    assert_eq!(file_of(&registry, &before).await, "a.db");

    registry.replace_all(vec![after.clone()]).await;

    assert_eq!(
        file_of(&registry, &before).await,
        "b.db",
        "the old configuration won"
    );
    assert_eq!(
        file_of(&registry, &after).await,
        "b.db",
        "a handle to the old file stayed"
    );
}

/// What a request carries to get its connection stays small: building a handle,
/// opening a connection and reading a server's limit are boxed, off the hot path.
/// Carried inline they made this future 18 KiB, copied with every move of the
/// request's future (a tenth of the router's instructions per request).
#[tokio::test]
async fn a_requests_connect_future_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = tenant_on(dir.path(), "a.db");
    let env: HashMap<String, String> = [("SETTINGS_FILE".to_string(), String::new())].into();
    let registry = TenantRegistry::new(
        vec![tenant.clone()],
        Settings::from_map(&env).unwrap().pools(),
    );
    const LIMIT: usize = 4096;
    let connect = registry.connect(&tenant);
    assert!(
        std::mem::size_of_val(&connect) < LIMIT,
        "connect: {} bytes",
        std::mem::size_of_val(&connect)
    );
    drop(connect);
    let handle = registry.handle(&tenant).await.unwrap();
    let checkout = handle
        .pool
        .checkout(handle.schema.clone(), std::time::Instant::now());
    assert!(
        std::mem::size_of_val(&checkout) < LIMIT,
        "checkout: {} bytes",
        std::mem::size_of_val(&checkout)
    );
}

/// A tenant removed and provisioned again (a new generation) through another
/// replica is new storage, even at the same URL: the breaker tripped by the old
/// one's failures is forgotten, and its handle is not reused.
#[tokio::test]
async fn a_new_incarnation_of_a_tenant_starts_with_its_breaker_closed() {
    let dir = tempfile::tempdir().unwrap();
    let old = tenant_on(dir.path(), "a.db");
    let env: HashMap<String, String> = [("SETTINGS_FILE".to_string(), String::new())].into();
    let registry =
        TenantRegistry::new(vec![old.clone()], Settings::from_map(&env).unwrap().pools());
    registry.trip_breaker(&old.id);
    assert!(registry.breaker_open(&old.id));
    // The same tenant reloaded: its breaker stays.
    registry.replace_all(vec![old.clone()]).await;
    assert!(registry.breaker_open(&old.id));
    let mut new = old.clone();
    new.generation = "another".into();
    registry.replace_all(vec![new.clone()]).await;
    assert!(!registry.breaker_open(&new.id));
    assert_eq!(file_of(&registry, &new).await, "a.db");
}
