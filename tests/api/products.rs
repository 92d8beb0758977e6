//! `/api/products`: create, read, update, delete, paginate, validate.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn a_product_goes_through_its_whole_life() {
    let app = spawn_app().await;
    let created = app.create_product("demo", "Widget", 19.99).await;
    let id = created["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(created["price"], 19.99);
    let path = format!("/api/products/{id}");

    let fetched: Value = app
        .as_tenant(Method::GET, "demo", &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["name"], "Widget");

    let updated = app
        .as_tenant(Method::PUT, "demo", &path)
        .json(&json!({ "name": "Widget Pro", "price": 24.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["name"], "Widget Pro");
    assert_eq!(updated["price"], 24.5);

    let deleted = app
        .as_tenant(Method::DELETE, "demo", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .as_tenant(Method::GET, "demo", &path)
        .send()
        .await
        .unwrap();
    assert_error(gone, 404, "not_found").await;
    let again = app
        .as_tenant(Method::DELETE, "demo", &path)
        .send()
        .await
        .unwrap();
    assert_error(again, 404, "not_found").await;
}

#[tokio::test]
async fn a_product_of_another_tenant_cannot_be_read_changed_or_deleted_by_id() {
    let app = spawn_app().await;
    let created = app.create_product("demo", "Private", 1.0).await;
    let path = format!("/api/products/{}", created["id"].as_str().unwrap());
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let response = app
            .as_tenant(method, "acme_manufacturing", &path)
            .json(&json!({ "name": "Stolen", "price": 0 }))
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "not_found").await;
    }
    let still: Value = app
        .as_tenant(Method::GET, "demo", &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still["name"], "Private");
}

#[tokio::test]
async fn invalid_bodies_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({ "price": 1.0 }), "name"),
        (json!({ "name": "x" }), "price"),
        (json!({ "name": "   ", "price": 1.0 }), "name"),
        (json!({ "name": "x", "price": -1 }), "price"),
        (json!({ "name": "x", "price": 1.001 }), "price"),
        (json!({ "name": "x", "price": "cheap" }), "price"),
        (json!({ "name": "x".repeat(201), "price": 1 }), "name"),
        (
            json!({ "name": "x", "price": 1, "colour": "red" }),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let response = app
            .as_tenant(Method::POST, "demo", "/api/products")
            .json(&body)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "{body}");
    }
    let not_json = app
        .as_tenant(Method::POST, "demo", "/api/products")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 422, "validation_failed").await;
    let broken_json = app
        .as_tenant(Method::POST, "demo", "/api/products")
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_error(broken_json, 422, "validation_failed").await;
    let bad_id = app
        .as_tenant(Method::GET, "demo", "/api/products/not-a-uuid")
        .send()
        .await
        .unwrap();
    let error = assert_error(bad_id, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "id");
    let bad_limit = app
        .as_tenant(Method::GET, "demo", "/api/products?limit=abc")
        .send()
        .await
        .unwrap();
    let error = assert_error(bad_limit, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "limit");
}

#[tokio::test]
async fn lists_are_paginated() {
    let app = spawn_app().await;
    for n in 0..5 {
        app.create_product("demo", &format!("p{n}"), 1.0).await;
    }
    let first: Value = app
        .as_tenant(Method::GET, "demo", "/api/products?limit=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["next_offset"], 2);
    let last: Value = app
        .as_tenant(Method::GET, "demo", "/api/products?limit=2&offset=4")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert!(last["next_offset"].is_null());
    let too_big = app
        .as_tenant(Method::GET, "demo", "/api/products?limit=1000")
        .send()
        .await
        .unwrap();
    assert_error(too_big, 422, "validation_failed").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let missing = app.request(Method::GET, "/nope").send().await.unwrap();
    assert_error(missing, 404, "not_found").await;
    let wrong_method = app.request(Method::DELETE, "/health").send().await.unwrap();
    assert_error(wrong_method, 405, "method_not_allowed").await;
}
