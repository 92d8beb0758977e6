//! API keys: shown once, stored hashed, scoped to a role, bound to their maker.

use super::*;

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_scoped_to_a_role_and_record_their_use() {
    let app = auth_app(|s| s).await;
    let owner = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let created = create_api_key(&app, "alpha", &owner, "staff").await;
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();

    let me: Value = json_of(
        app.as_tenant(Method::GET, "alpha", "/api/auth/me")
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(me["kind"], "api_key");
    assert_eq!(me["role"], "staff");
    // Staff scope: business routes yes, key management no.
    let products = app
        .as_tenant(Method::GET, "alpha", "/api/products")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(products.status(), 200);
    let keys = app
        .as_tenant(Method::GET, "alpha", "/api/api-keys")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_error(keys, 403, "forbidden").await;

    let listed: Value = json_of(
        app.as_tenant(Method::GET, "alpha", &format!("/api/api-keys/{id}"))
            .bearer_auth(&owner),
    )
    .await;
    assert!(listed.get("key").is_none(), "{listed}");
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(listed["revoked_at"].is_null(), "{listed}");

    // Only the hash is in the tenant's database.
    let secret = key.rsplit('.').next().unwrap();
    for file in ["alpha.db", "alpha.db-wal"] {
        let bytes = std::fs::read(app.data_dir().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the key's secret is stored in clear in {file}"
        );
    }

    // A wrong secret for a real key id is refused.
    let mut forged = key.clone();
    forged.replace_range(key.len() - 4.., "0000");
    let response = app
        .as_tenant(Method::GET, "alpha", "/api/products")
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn keys_are_made_by_people_and_follow_their_maker() {
    let app = auth_app(|s| s).await;
    let owner = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let maker_id = app
        .add_user("alpha", "maker", "maker-password", "admin")
        .await;
    let maker = app.login("alpha", "maker", "maker-password").await;
    let key = create_api_key(&app, "alpha", &maker, "admin").await;
    let key_text = key["key"].as_str().unwrap().to_string();
    let owner_key = create_api_key(&app, "alpha", &owner, "owner").await;

    // A key cannot mint keys, and an admin cannot revoke an owner's key.
    let minted = app
        .as_tenant(Method::POST, "alpha", "/api/api-keys")
        .bearer_auth(&key_text)
        .json(&json!({ "name": "child" }))
        .send()
        .await
        .unwrap();
    assert_error(minted, 403, "forbidden").await;
    let revoke = app
        .as_tenant(
            Method::DELETE,
            "alpha",
            &format!("/api/api-keys/{}", owner_key["id"].as_str().unwrap()),
        )
        .bearer_auth(&maker)
        .send()
        .await
        .unwrap();
    assert_error(revoke, 403, "forbidden").await;

    // Nor can it make a login to mint keys through.
    let user = app
        .as_tenant(Method::POST, "alpha", "/api/users")
        .bearer_auth(&key_text)
        .json(&json!({ "username": "sock-puppet", "password": "puppet-password", "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_error(user, 403, "forbidden").await;

    let me = || {
        app.as_tenant(Method::GET, "alpha", "/api/auth/me")
            .bearer_auth(&key_text)
            .send()
    };
    assert_eq!(
        json_of(
            app.as_tenant(Method::GET, "alpha", "/api/auth/me")
                .bearer_auth(&key_text)
        )
        .await["role"],
        "admin"
    );
    let patch = |body: Value| {
        app.as_tenant(Method::PATCH, "alpha", &format!("/api/users/{maker_id}"))
            .bearer_auth(&owner)
            .json(&body)
            .send()
    };
    // Demoting the maker demotes the key; deactivating the maker stops it.
    assert_eq!(
        patch(json!({ "role": "staff" })).await.unwrap().status(),
        200
    );
    let body: Value = me().await.unwrap().json().await.unwrap();
    assert_eq!(body["role"], "staff", "{body}");
    assert_eq!(
        patch(json!({ "is_active": false })).await.unwrap().status(),
        200
    );
    assert_error(me().await.unwrap(), 401, "unauthorized").await;
}
