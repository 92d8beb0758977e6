//! `MULTI_TENANT_ENABLED=false`: one database, no identification, every feature.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppSpec, spawn_app_with};

#[tokio::test]
async fn single_tenant_mode_serves_the_same_routes_without_identification() {
    let app = spawn_app_with(AppSpec::new(vec![]).env("MULTI_TENANT_ENABLED", "false")).await;

    let created = app
        .request(Method::POST, "/api/products")
        .json(&json!({ "name": "Plain", "price": 2.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(!created.headers().contains_key("x-tenant-id"));

    // Identification inputs are ignored, whatever they say.
    let requests = [
        app.request(Method::GET, "/api/products"),
        app.request(Method::GET, "/api/products")
            .header("X-Tenant-ID", "../etc"),
        app.request(Method::GET, "/api/products?tenant_id=somebody"),
        app.request(Method::GET, "/api/products")
            .header("Host", "other.localhost"),
    ];
    for request in requests {
        assert_eq!(app.product_names(request).await, ["Plain"]);
    }

    for (path, body) in [
        ("/api/dental/patients", json!({ "name": "Ravi" })),
        (
            "/api/manufacturing/materials",
            json!({ "name": "Copper", "unit": "kg" }),
        ),
    ] {
        let response = app
            .request(Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{path}");
        let list: Value = app
            .request(Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
    }
    assert!(app.data_dir().join("single.db").exists());
}
