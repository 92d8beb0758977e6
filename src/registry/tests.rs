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
