//! Tenant configuration sources as the running service sees them: the file,
//! `TENANT_CONFIGS`, and the override of one by the other.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{AppSpec, Tenant, spawn_app_with};

async fn tenants(app: &crate::helpers::TestApp) -> Vec<Value> {
    let body: Value = app
        .admin(Method::GET, "/api/tenants")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["tenants"].as_array().unwrap().clone()
}

#[tokio::test]
async fn tenant_configs_adds_tenants_and_overrides_file_entries_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let env_json = serde_json::json!({
        "demo": {
            "database_url": format!("sqlite://{}/demo-env.db", dir.path().display()),
            "domain": "manufacturing",
            "branding": { "company_name": "Demo from env" }
        },
        "env_only": {
            "database_url": format!("sqlite://{}/env-only.db", dir.path().display()),
            "domain": "dental"
        }
    });
    let app = spawn_app_with(
        AppSpec::new(vec![
            Tenant::new("demo", "default"),
            Tenant::new("file_only", "default"),
        ])
        .env("TENANT_CONFIGS", &env_json.to_string()),
    )
    .await;

    let list = tenants(&app).await;
    let by_id = |id: &str| list.iter().find(|t| t["id"] == id).unwrap().clone();
    assert_eq!(list.len(), 3);
    assert_eq!(by_id("file_only")["source"], "file");
    assert_eq!(by_id("env_only")["source"], "env");
    assert_eq!(by_id("demo")["source"], "env");
    assert_eq!(by_id("demo")["domain"], "manufacturing");
    assert_eq!(by_id("demo")["branding"]["company_name"], "Demo from env");

    // The override's database is the one served.
    app.create_product("demo", "Env row", 1.0).await;
    assert!(dir.path().join("demo-env.db").exists());
    assert!(!app.data_dir().join("demo.db").exists());
}
