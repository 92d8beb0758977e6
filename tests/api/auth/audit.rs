//! The audit log: one row per write, with its actor.

use super::*;

// In each tenant's database: these run on SQLite, PostgreSQL database mode and
// schema mode alike.
crate::on_every_backend!(every_write_leaves_exactly_one_audit_row_with_its_actor,);

async fn every_write_leaves_exactly_one_audit_row_with_its_actor(backend: Backend) {
    let app = auth_app(|s| s.on(backend)).await;
    let owner = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let key = create_api_key(&app, "alpha", &owner, "staff").await;
    let key_text = key["key"].as_str().unwrap();
    let started = Utc::now();

    let created: Value = json_of(
        app.as_tenant(Method::POST, "alpha", "/api/products")
            .bearer_auth(&owner)
            .json(&json!({ "name": "audited", "price": 2.0 })),
    )
    .await;
    let product = created["id"].as_str().unwrap();
    // The handlers take other spellings of a UUID; the log has the record's id.
    let path = format!("/api/products/urn:uuid:{product}");
    let update = app
        .as_tenant(Method::PUT, "alpha", &path)
        .header("X-API-Key", key_text)
        .header("X-Request-Id", "req-update-1")
        .json(&json!({ "name": "audited v2", "price": 3.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), 200);
    assert_eq!(update.headers()["x-request-id"], "req-update-1");
    let path = format!("/api/products/%7B{}%7D", product.to_uppercase());
    let delete = app
        .as_tenant(Method::DELETE, "alpha", &path)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    // A refused write leaves no row.
    let refused = app
        .as_tenant(Method::POST, "alpha", "/api/products")
        .bearer_auth(&owner)
        .json(&json!({ "name": "" , "price": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);

    let audit: Value = json_of(
        app.as_tenant(
            Method::GET,
            "alpha",
            &format!(
                "/api/audit?entity=products&from={}",
                urlencode(&started.to_rfc3339())
            ),
        )
        .bearer_auth(&owner),
    )
    .await;
    let rows = audit["items"].as_array().unwrap();
    let actions: Vec<(&str, &str, &str)> = rows
        .iter()
        .rev()
        .map(|r| {
            assert_eq!(r["entity_id"], product, "{r}");
            (
                r["action"].as_str().unwrap(),
                r["actor"]["kind"].as_str().unwrap(),
                r["actor"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("create", "user", "olivia"),
            ("update", "api_key", "staff service"),
            ("delete", "user", "olivia"),
        ]
    );
    assert_eq!(rows[1]["request_id"], "req-update-1");
    assert_eq!(rows[1]["actor"]["id"], key["id"]);
    // Searched by the id, in any spelling: every change of the record.
    let by_id: Value = json_of(
        app.as_tenant(
            Method::GET,
            "alpha",
            &format!(
                "/api/audit?entity=products&entity_id={}",
                product.to_uppercase()
            ),
        )
        .bearer_auth(&owner),
    )
    .await;
    assert_eq!(by_id["items"].as_array().unwrap().len(), 3, "{by_id}");

    // The operator's user creation and the key's creation are in the log too, once each.
    let users: Value = json_of(
        app.as_tenant(Method::GET, "alpha", "/api/audit?entity=users")
            .bearer_auth(&owner),
    )
    .await;
    let rows = users["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{users}");
    assert_eq!(rows[0]["actor"]["kind"], "operator");
    let keys: Value = json_of(
        app.as_tenant(Method::GET, "alpha", "/api/audit?entity=api-keys")
            .bearer_auth(&owner),
    )
    .await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys["items"][0]["entity_id"], key["id"]);

    let future = app
        .as_tenant(Method::GET, "alpha", "/api/audit?from=2999-01-01T00:00:00Z")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    let future: Value = future.json().await.unwrap();
    assert!(future["items"].as_array().unwrap().is_empty());
    let bad_time = app
        .as_tenant(Method::GET, "alpha", "/api/audit?from=yesterday")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_error(bad_time, 422, "validation_failed").await;
}
