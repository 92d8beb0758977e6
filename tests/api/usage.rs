//! Usage per tenant (requests, committed writes, active users, storage) as the
//! admin API reports it, and the storage quota, on every backend.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{AppSpec, Backend, Tenant, TestApp, assert_error, spawn_app_with};

/// Counts the responses to requests with a credential that name each tenant, as
/// the service should.
#[derive(Default)]
struct Seen {
    requests: std::collections::HashMap<String, u64>,
}

impl Seen {
    fn saw(&mut self, response: &Response) {
        if let Some(tenant) = response.headers().get("x-tenant-id") {
            *self
                .requests
                .entry(tenant.to_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
}

async fn usage(app: &TestApp, tenant: &str) -> Value {
    let response = app
        .admin(Method::GET, &format!("/api/admin/tenants/{tenant}/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn figures_match_what_the_test_did(backend: Backend) {
    let app = spawn_app_with(
        AppSpec::new(vec![
            Tenant::new("t1", "default"),
            Tenant::new("t2", "default"),
        ])
        .on(backend)
        .with_auth(),
    )
    .await;
    let mut seen = Seen::default();
    let mut tokens = Vec::new();
    for (tenant, user) in [("t1", "ann"), ("t1", "bob"), ("t2", "cy")] {
        app.add_user(tenant, user, "a long password 1", "admin")
            .await;
        let login = app
            .as_tenant(Method::POST, tenant, "/api/auth/login")
            .json(&json!({ "username": user, "password": "a long password 1" }))
            .send()
            .await
            .unwrap();
        // A login has no caller yet: not counted.
        let body: Value = login.json().await.unwrap();
        tokens.push((tenant, body["access_token"].as_str().unwrap().to_string()));
    }
    // ann writes 3 and reads 2, bob reads 1 and fails one write, cy writes 1.
    let plan: [(usize, Method, u32); 5] = [
        (0, Method::POST, 3),
        (0, Method::GET, 2),
        (1, Method::GET, 1),
        (1, Method::PATCH, 1),
        (2, Method::POST, 1),
    ];
    for (who, method, times) in plan {
        let (tenant, token) = &tokens[who];
        for n in 0..times {
            let request = match method {
                Method::POST => app
                    .as_tenant(Method::POST, tenant, "/api/products")
                    .json(&json!({ "name": format!("p{n}"), "price": 1.0 })),
                // No such route: refused, not a write.
                Method::PATCH => app.as_tenant(Method::PATCH, tenant, "/api/products"),
                _ => app.as_tenant(Method::GET, tenant, "/api/products"),
            };
            let response = request.bearer_auth(token).send().await.unwrap();
            seen.saw(&response);
            assert!(
                response.status().is_success() == (method != Method::PATCH),
                "{method} {}",
                response.status()
            );
        }
    }
    let today = chrono::Utc::now().date_naive().to_string();
    for (tenant, writes, users) in [("t1", 3, 2), ("t2", 1, 1)] {
        let report = usage(&app, tenant).await;
        assert_eq!(report["tenant_id"], tenant);
        let day = &report["days"][0];
        assert_eq!(day["day"], today.as_str(), "{report}");
        assert_eq!(day["requests"], seen.requests[tenant], "{tenant}: {report}");
        assert_eq!(day["writes"], writes, "{tenant}: {report}");
        // One product row per write (the audit rows aside).
        assert_eq!(day["rows_written"], writes, "{tenant}: {report}");
        assert_eq!(day["active_users"], users, "{tenant}: {report}");
        assert!(day["storage_bytes"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["total"]["requests"], seen.requests[tenant]);
        assert_eq!(report["total"]["active_users"], users);
        assert!(report["storage_quota_bytes"].is_null());
    }
    // Read again: nothing counted twice.
    let again = usage(&app, "t1").await;
    assert_eq!(again["days"][0]["requests"], seen.requests["t1"]);
}

async fn the_quota_refuses_writes_past_it_and_lets_deletes_through(backend: Backend) {
    let app = spawn_app_with(
        AppSpec::new(vec![
            Tenant::new("t1", "default"),
            Tenant::new("t2", "default"),
        ])
        .on(backend)
        .env("USAGE_FLUSH_SECS", "1"),
    )
    .await;
    let first = app.create_product("t1", "first", 1.0).await;
    let measured = usage(&app, "t1").await["days"][0]["storage_bytes"]
        .as_u64()
        .unwrap();
    let quota = measured + 32 * 1024;
    let patched = app
        .admin(Method::PATCH, "/api/admin/tenants/t1")
        .json(&json!({ "storage_quota_bytes": quota }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    // Writes go through until a flush (every second) measures the tenant past its
    // quota; from then on every write is refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let refused = loop {
        assert!(std::time::Instant::now() < deadline, "never refused");
        let response = app
            .as_tenant(Method::POST, "t1", "/api/products")
            .json(&json!({ "name": "filler", "price": 1.0 }))
            .send()
            .await
            .unwrap();
        if response.status() != 201 {
            break response;
        }
    };
    let body = assert_error(refused, 507, "quota_exceeded").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("quota"),
        "{body}"
    );
    let report = usage(&app, "t1").await;
    assert_eq!(report["storage_quota_bytes"], quota);
    assert!(
        report["total"]["storage_bytes"].as_u64().unwrap() >= quota,
        "{report}"
    );

    // Reads and deletes still work; another tenant writes as before.
    let list = app
        .as_tenant(Method::GET, "t1", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let id = first["id"].as_str().unwrap();
    let deleted = app
        .as_tenant(Method::DELETE, "t1", &format!("/api/products/{id}"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    app.create_product("t2", "other tenant", 1.0).await;

    // Raised: writes go through again.
    let raised = app
        .admin(Method::PATCH, "/api/admin/tenants/t1")
        .json(&json!({ "storage_quota_bytes": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status(), 200);
    app.create_product("t1", "after the raise", 1.0).await;
}

/// A write that changes several rows counts each of them: a bill of materials is
/// its own row and one per item.
async fn rows_written_count_every_row_a_write_changes(backend: Backend) {
    let app =
        spawn_app_with(AppSpec::new(vec![Tenant::new("maker", "manufacturing")]).on(backend)).await;
    let mut materials = Vec::new();
    for name in ["steel", "bolts"] {
        let created = app
            .as_tenant(Method::POST, "maker", "/api/manufacturing/materials")
            .json(&json!({ "name": name, "unit": "kg", "stock": 100.0 }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let body: Value = created.json().await.unwrap();
        materials.push(body["id"].as_str().unwrap().to_string());
    }
    let bom = app
        .as_tenant(Method::POST, "maker", "/api/manufacturing/boms")
        .json(&json!({ "name": "frame", "items": [
            { "material_id": materials[0], "quantity": 2.0 },
            { "material_id": materials[1], "quantity": 8.0 },
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bom.status(), 201);
    let report = usage(&app, "maker").await;
    assert_eq!(report["total"]["writes"], 3, "{report}");
    assert_eq!(report["total"]["rows_written"], 2 + 3, "{report}");
}

crate::on_every_backend!(
    rows_written_count_every_row_a_write_changes,
    figures_match_what_the_test_did,
    the_quota_refuses_writes_past_it_and_lets_deletes_through
);

#[tokio::test]
async fn a_range_is_checked_and_an_unknown_tenant_is_not_found() {
    let app = spawn_app_with(AppSpec::new(vec![Tenant::new("t1", "default")])).await;
    for (query, field) in [
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2026-02-01&to=2026-01-01", "from"),
        ("from=2024-01-01&to=2026-01-01", "from"),
    ] {
        let response = app
            .admin(Method::GET, &format!("/api/admin/tenants/t1/usage?{query}"))
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 422, "validation_failed").await;
        assert_eq!(body["error"]["field"], field, "{query}");
    }
    let response = app
        .admin(Method::GET, "/api/admin/tenants/nobody/usage")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "tenant_not_found").await;
    let response = app
        .request(Method::GET, "/api/admin/tenants/t1/usage")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
    // A day with nothing: an empty report, not an error.
    let quiet = app
        .admin(
            Method::GET,
            "/api/admin/tenants/t1/usage?from=2020-01-01&to=2020-01-31",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(quiet.status(), 200);
    let quiet: Value = quiet.json().await.unwrap();
    assert_eq!(quiet["days"], json!([]));
    assert_eq!(quiet["total"]["requests"], 0);
}
