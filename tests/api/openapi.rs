//! The OpenAPI contract at `/openapi.json`: generated from the handlers, it lists
//! every route the router serves with exactly the methods it serves, its security
//! schemes and every error code; `/docs` serves Swagger UI from the binary.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn contract(app: &TestApp) -> Value {
    let response = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A concrete path for a pattern: records get an id that exists nowhere, tenants
/// one that is no tenant's (so that nothing is changed by the probe).
fn concrete(pattern: &str) -> String {
    let id = if pattern.starts_with("/api/admin/") || pattern.starts_with("/api/tenants/") {
        "nobody"
    } else {
        "00000000-0000-4000-8000-000000000000"
    };
    pattern.replace("{id}", id)
}

#[tokio::test]
async fn the_contract_is_openapi_3_1_with_every_route_and_exactly_its_methods() {
    let app = spawn_app().await;
    let spec = contract(&app).await;
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    let paths = spec["paths"].as_object().unwrap();

    // Every tenant route the router has is in the contract.
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    for path in tenant_router::http::routes::tenant_routes().paths() {
        assert!(documented.contains(path), "{path} is not in the contract");
    }
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/api/auth/login",
        "/api/admin/pools",
        "/api/admin/tenants/{id}/usage",
    ] {
        assert!(documented.contains(path), "{path} is not in the contract");
    }

    // Each documented method is served (not 405), and each other one is not.
    for (pattern, item) in paths {
        for method in METHODS {
            let request = app
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    &concrete(pattern),
                )
                .header("X-Tenant-ID", "demo")
                .bearer_auth(crate::helpers::ADMIN_TOKEN);
            let status = request.send().await.unwrap().status();
            if item.get(method).is_some() {
                assert_ne!(
                    status, 405,
                    "{method} {pattern} is documented but not served"
                );
                assert_ne!(status.as_u16(), 500, "{method} {pattern}");
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {pattern} is served but not documented"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_contract_names_its_security_schemes_and_every_error_code() {
    let app = spawn_app().await;
    let spec = contract(&app).await;
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["admin_token", "access_token", "api_key"] {
        assert!(schemes.contains_key(scheme), "{scheme}");
    }
    let products = &spec["paths"]["/api/products"]["post"];
    assert_eq!(
        products["security"][0]["access_token"],
        serde_json::json!([])
    );
    assert!(products["responses"]["507"].is_object());
    let admin = &spec["paths"]["/api/admin/tenants"]["post"];
    assert_eq!(admin["security"][0]["admin_token"], serde_json::json!([]));
    // The answers a handler gives beyond those of its kind are listed too.
    for (path, method, status) in [
        ("/api/users", "post", "409"),
        ("/api/users/{id}", "patch", "409"),
        (
            "/api/manufacturing/production-orders/{id}/start",
            "post",
            "409",
        ),
        (
            "/api/manufacturing/production-orders/{id}/complete",
            "post",
            "409",
        ),
        ("/api/tenants/{id}/branding", "get", "403"),
        ("/api/admin/tenants/{id}", "patch", "403"),
        ("/api/admin/migrations", "post", "403"),
        ("/api/admin/tenants/{id}/move", "post", "422"),
    ] {
        assert!(
            spec["paths"][path][method]["responses"][status].is_object(),
            "{method} {path} does not list {status}"
        );
    }
    let text = spec.to_string();
    for code in [
        "tenant_required",
        "invalid_tenant_id",
        "tenant_conflict",
        "tenant_not_found",
        "tenant_inactive",
        "feature_not_enabled",
        "tenant_unavailable",
        "validation_failed",
        "not_found",
        "unauthorized",
        "forbidden",
        "tenant_mismatch",
        "too_many_requests",
        "bad_request",
        "request_timeout",
        "payload_too_large",
        "timeout",
        "quota_exceeded",
        "not_ready",
    ] {
        assert!(
            text.contains(&format!("`{code}`")),
            "{code} is not in the contract"
        );
    }
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.request(Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let config = app
        .request(Method::GET, "/docs/swagger-initializer.js")
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    assert!(config.text().await.unwrap().contains("/openapi.json"));
    // What the page's file server refuses leaves in the service's error shape.
    for (path, status, code) in [
        ("/docs/no-such-file.js", 404, "not_found"),
        ("/docs/%ff", 400, "bad_request"),
    ] {
        let response = app.request(Method::GET, path).send().await.unwrap();
        crate::helpers::assert_error(response, status, code).await;
    }
}
