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

/// Products and audit rows of one tenant (AUTH_MODE=none: the caller is its owner).
async fn products_and_audit_rows(app: &TestApp, tenant: &str) -> (usize, usize) {
    let count = |path: &'static str| async move {
        let mut total = 0;
        let mut offset = 0;
        loop {
            let page: Value = app
                .as_tenant(
                    Method::GET,
                    tenant,
                    &format!(
                        "{path}{}limit=100&offset={offset}",
                        if path.contains('?') { "&" } else { "?" }
                    ),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = page["items"].as_array().unwrap().len();
            total += items;
            if items < 100 {
                return total;
            }
            offset += 100;
        }
    };
    (
        count("/api/products").await,
        count("/api/audit?entity=products").await,
    )
}

#[tokio::test]
async fn closing_pools_under_load_fails_no_request_and_every_write_keeps_its_audit_row() {
    // Far more tenants in use than handles allowed: handles are closed all the time
    // while requests hold their connections.
    let ids: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    let tenants = ids.iter().map(|id| Tenant::new(id, "default")).collect();
    let app = spawn_app_with(AppSpec::new(tenants).env("MAX_OPEN_POOLS", "4")).await;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        let mut statuses = Vec::new();
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n >= 800 {
                return statuses;
            }
            // Spread over every tenant, in an order no cache keeps up with.
            let tenant = &ids[(n * 7) % ids.len()];
            let (method, body) = if n.is_multiple_of(3) {
                (Method::GET, None)
            } else {
                (
                    Method::POST,
                    Some(serde_json::json!({ "name": format!("p{n}"), "price": 1.0 })),
                )
            };
            let mut request = app.as_tenant(method, tenant, "/api/products");
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            statuses.push(response.status().as_u16());
        }
    };
    let all: Vec<u16> = futures::future::join_all((0..24).map(|_| worker()))
        .await
        .into_iter()
        .flatten()
        .collect();
    let failed: Vec<&u16> = all.iter().filter(|s| !matches!(s, 200 | 201)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        all.len()
    );
    let stats = app.pool_stats().await;
    assert!(
        stats["pools_closed"].as_u64().unwrap() > 20,
        "handles were not closed under the load: {stats}"
    );
    let mut written = 0;
    for id in &ids {
        let (products, audited) = products_and_audit_rows(&app, id).await;
        assert_eq!(products, audited, "{id}: every product has its audit row");
        written += products;
    }
    assert_eq!(written, all.iter().filter(|s| **s == 201).count());
}

#[tokio::test]
async fn a_write_whose_audit_row_cannot_be_written_is_not_kept() {
    let app = spawn_app().await;
    app.create_product("demo", "before", 1.0).await;
    // The tenant's database refuses audit rows from now on.
    let db = tenant_router::db::connect(format!(
        "sqlite://{}",
        app.data_dir().join("demo.db").display()
    ))
    .await
    .unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &db,
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
    )
    .await
    .unwrap();
    db.close().await.unwrap();

    let response = app
        .as_tenant(Method::POST, "demo", "/api/products")
        .json(&serde_json::json!({ "name": "unaudited", "price": 1.0 }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("audit refused"),
        "internal text leaked: {text}"
    );
    let names = app
        .product_names(app.as_tenant(Method::GET, "demo", "/api/products"))
        .await;
    assert_eq!(names, ["before"], "the unaudited write was kept");
}

/// The SQLite "server" of `stats`: every tenant file's connections.
fn sqlite_server(stats: &Value) -> &Value {
    stats["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"] == "sqlite")
        .unwrap_or_else(|| panic!("no sqlite server in {stats}"))
}

#[tokio::test]
async fn sqlite_files_share_128_connections_by_default() {
    let app = spawn_app().await;
    app.create_product("demo", "First", 1.0).await;
    assert_eq!(sqlite_server(&app.pool_stats().await)["limit"], 128);
}

#[tokio::test]
async fn sqlite_files_never_hold_more_connections_than_sqlite_max_connections() {
    let ids: Vec<String> = (0..4).map(|i| format!("file_{i}")).collect();
    let tenants = ids.iter().map(|id| Tenant::new(id, "default")).collect();
    let app = spawn_app_with(AppSpec::new(tenants).env("SQLITE_MAX_CONNECTIONS", "2")).await;
    // Four files, five requests each, all at once: each request needs a
    // connection to its own file, and there are two for all four.
    let statuses = futures::future::join_all(ids.iter().cycle().take(20).map(|id| {
        let app = &app;
        async move {
            app.as_tenant(Method::GET, id, "/api/products")
                .send()
                .await
                .unwrap()
                .status()
        }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = app.pool_stats().await;
    let sqlite = sqlite_server(&stats);
    assert_eq!(sqlite["limit"], 2, "{stats}");
    assert!(sqlite["peak_open"].as_u64().unwrap() <= 2, "{stats}");
    assert!(sqlite["opened"].as_u64().unwrap() >= 4, "{stats}");
}
