//! The registry's pools: built lazily and once, closed when idle or when too many
//! are open, reopened with the data intact.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{AppSpec, Tenant, TestApp, spawn_app, spawn_app_with, standard_tenants};

/// Polls the pool counters until `done` holds, for at most `limit`.
async fn wait_for_pools(app: &TestApp, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let stats = app.pool_stats().await;
        if done(&stats) || started.elapsed() > limit {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn open_ids(stats: &Value) -> Vec<&str> {
    stats["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn no_pool_and_no_file_exist_before_the_first_request() {
    let app = spawn_app().await;
    assert_eq!(app.pool_stats().await["pools_built"], 0);
    assert!(app.data_files().is_empty());

    app.create_product("demo", "First", 1.0).await;
    assert!(
        app.data_files().contains(&"demo.db".to_string()),
        "{:?}",
        app.data_files()
    );
    let stats = app.pool_stats().await;
    assert_eq!(stats["pools_built"], 1);
    assert_eq!(open_ids(&stats), ["demo"]);
}

#[tokio::test]
async fn a_hundred_concurrent_first_requests_build_exactly_one_pool() {
    let app = spawn_app().await;
    let requests = (0..100).map(|_| async {
        app.as_tenant(Method::GET, "acme_manufacturing", "/api/products")
            .send()
            .await
            .unwrap()
            .status()
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = app.pool_stats().await;
    assert_eq!(stats["pools_built"], 1);
    assert_eq!(stats["pools_open"], 1);
}

#[tokio::test]
async fn an_idle_pool_closes_and_the_next_request_reopens_it_with_the_data() {
    let app =
        spawn_app_with(AppSpec::new(standard_tenants()).env("POOL_IDLE_TIMEOUT_SECS", "1")).await;
    app.create_product("demo", "Kept across pools", 9.99).await;
    assert_eq!(app.pool_stats().await["pools_open"], 1);

    let stats = wait_for_pools(&app, Duration::from_secs(10), |s| s["pools_open"] == 0).await;
    assert_eq!(stats["pools_open"], 0, "idle pool still open: {stats}");
    assert_eq!(stats["pools_closed"], 1);

    let names = app
        .product_names(app.as_tenant(Method::GET, "demo", "/api/products"))
        .await;
    assert_eq!(names, ["Kept across pools"]);
    let stats = app.pool_stats().await;
    assert_eq!(stats["pools_built"], 2);
    assert_eq!(stats["pools_open"], 1);
}

#[tokio::test]
async fn with_two_pools_allowed_a_third_tenant_closes_the_least_recently_used() {
    let tenants = vec![
        Tenant::new("alpha", "default"),
        Tenant::new("bravo", "default"),
        Tenant::new("charlie", "default"),
    ];
    let app = spawn_app_with(AppSpec::new(tenants).env("MAX_OPEN_POOLS", "2")).await;
    for tenant in ["alpha", "bravo", "alpha"] {
        let r = app
            .as_tenant(Method::GET, tenant, "/api/products")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = app
        .as_tenant(Method::GET, "charlie", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let stats = wait_for_pools(&app, Duration::from_secs(5), |s| s["pools_open"] == 2).await;
    assert_eq!(open_ids(&stats), ["alpha", "charlie"], "{stats}");
    assert_eq!(stats["pools_built"], 3);
    assert_eq!(stats["pools_closed"], 1);
}

#[tokio::test]
async fn a_tenant_whose_database_cannot_open_fails_alone_with_503() {
    let mut tenants = standard_tenants();
    // A path under a regular file can never be created.
    tenants.push(Tenant {
        id: "broken".into(),
        domain: "default",
        extra: String::new(),
    });
    let app = spawn_app_with(AppSpec::new(tenants)).await;
    std::fs::create_dir_all(app.data_dir()).unwrap();
    std::fs::create_dir_all(app.data_dir().join("broken.db")).unwrap();

    let response = app
        .as_tenant(Method::GET, "broken", "/api/products")
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    crate::helpers::assert_error(response, 503, "tenant_unavailable").await;
    app.create_product("demo", "Unaffected", 1.0).await;
    assert_eq!(app.pool_stats().await["pool_failures"], 1);
}

#[tokio::test]
async fn per_tenant_max_connections_is_accepted_and_served() {
    let tenants = vec![Tenant::new("small", "default").with("max_connections = 1")];
    let app = spawn_app_with(AppSpec::new(tenants)).await;
    let requests = (0..20).map(|i| {
        let app = &app;
        async move { app.create_product("small", &format!("p{i}"), 1.0).await }
    });
    futures::future::join_all(requests).await;
    let names = app
        .product_names(app.as_tenant(Method::GET, "small", "/api/products"))
        .await;
    assert_eq!(names.len(), 20);
    let stats = app.pool_stats().await;
    assert_eq!(stats["pools"][0]["tenant_id"], "small");
    assert_eq!(stats["pools"][0]["max_connections"], 1, "{stats}");
    assert!(
        stats["pools"][0]["connections"].as_u64().unwrap() <= 1,
        "{stats}"
    );
}
