//! Credentials: every bad one refused on every tenant route, the tenant a credential
//! names against the one the request names, admin routes, single-tenant mode,
//! replicas sharing the key, and a tenant provisioned again under a removed id.

use super::*;

// In each tenant's database: these run on SQLite, PostgreSQL database mode and
// schema mode alike.
crate::on_every_backend!(a_credential_alone_routes_the_request_to_its_tenant,);

#[tokio::test]
async fn every_tenant_route_refuses_every_bad_credential_and_accepts_a_valid_one() {
    let app = auth_app(|s| s).await;
    let owner = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let other_tenant = app.login("beta", "bert", OWNER_PASSWORD).await;
    let revoked = create_api_key(&app, "alpha", &owner, "admin").await;
    let revoked_key = revoked["key"].as_str().unwrap().to_string();
    let revoke = app
        .as_tenant(
            Method::DELETE,
            "alpha",
            &format!("/api/api-keys/{}", revoked["id"].as_str().unwrap()),
        )
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);

    let bad: [(&str, String, u16, &str); 5] = [
        (
            "another tenant's token",
            other_tenant.clone(),
            403,
            "tenant_mismatch",
        ),
        ("an expired token", expired_token(), 401, "unauthorized"),
        ("a tampered token", tampered(&owner), 401, "unauthorized"),
        ("an alg:none token", alg_none(&owner), 401, "unauthorized"),
        ("a revoked API key", revoked_key, 401, "unauthorized"),
    ];

    // The paths come from the router itself: a route added later is walked too.
    let routes = tenant_router::http::routes::tenant_routes();
    let mut walked = 0;
    for path in routes.paths() {
        let concrete = path.replace("{id}", &Uuid::new_v4().to_string());
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            // A valid token finds out whether the route serves this method at all.
            let valid = with_body(&method, app.as_tenant(method.clone(), "alpha", &concrete))
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap();
            if valid.status() == StatusCode::METHOD_NOT_ALLOWED {
                continue;
            }
            let status = valid.status().as_u16();
            assert!(
                status != 401 && status != 403,
                "{method} {path} with a valid token: {status}"
            );
            walked += 1;

            let none = with_body(&method, app.as_tenant(method.clone(), "alpha", &concrete))
                .send()
                .await
                .unwrap();
            assert_eq!(none.status(), 401, "{method} {path} without credentials");
            assert_error(none, 401, "unauthorized").await;

            for (what, credential, status, code) in &bad {
                let response =
                    with_body(&method, app.as_tenant(method.clone(), "alpha", &concrete))
                        .bearer_auth(credential)
                        .send()
                        .await
                        .unwrap();
                assert_eq!(
                    response.status().as_u16(),
                    *status,
                    "{method} {path} with {what}"
                );
                assert_error(response, *status, code).await;
            }
        }
    }
    assert!(
        walked >= 40,
        "walked only {walked} route methods of {:?}",
        routes.paths()
    );
}

#[tokio::test]
async fn a_token_of_another_tenant_is_refused_by_every_identification_source() {
    let app = auth_app(|s| s).await;
    let beta = app.login("beta", "bert", OWNER_PASSWORD).await;
    let by_header = app.as_tenant(Method::GET, "alpha", "/api/products");
    let by_query = app.request(Method::GET, "/api/products?tenant_id=alpha");
    let by_subdomain = app
        .request(Method::GET, "/api/products")
        .header("Host", "alpha.localhost");
    for request in [by_header, by_query, by_subdomain] {
        let response = request.bearer_auth(&beta).send().await.unwrap();
        assert_error(response, 403, "tenant_mismatch").await;
    }
    // The same token through the API-key header is no way around it.
    let key = create_api_key(&app, "beta", &beta, "staff").await;
    let response = app
        .as_tenant(Method::GET, "alpha", "/api/products")
        .header("X-API-Key", key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "tenant_mismatch").await;
}

async fn a_credential_alone_routes_the_request_to_its_tenant(backend: Backend) {
    let app = auth_app(|s| s.on(backend)).await;
    let alpha = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let created = app
        .request(Method::POST, "/api/products")
        .bearer_auth(&alpha)
        .json(&json!({ "name": "token-routed", "price": 3.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-tenant-id"], "alpha");

    let alpha_names = app
        .product_names(
            app.as_tenant(Method::GET, "alpha", "/api/products")
                .bearer_auth(&alpha),
        )
        .await;
    assert_eq!(alpha_names, vec!["token-routed"]);
    let beta = app.login("beta", "bert", OWNER_PASSWORD).await;
    let beta_names = app
        .product_names(app.request(Method::GET, "/api/products").bearer_auth(&beta))
        .await;
    assert!(beta_names.is_empty(), "{beta_names:?}");

    // A host that is no tenant's (api.localhost) leaves the choice to the credential.
    let via_api_host = app
        .request(Method::GET, "/api/products")
        .header("Host", "api.localhost")
        .bearer_auth(&alpha)
        .send()
        .await
        .unwrap();
    assert_eq!(via_api_host.status(), 200);
    assert_eq!(via_api_host.headers()["x-tenant-id"], "alpha");
    let anonymous = app
        .request(Method::GET, "/api/products")
        .header("Host", "api.localhost")
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 404, "tenant_not_found").await;

    // With no credential and no identification, the tenant is still required.
    let bare = app
        .request(Method::GET, "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(bare, 400, "tenant_required").await;
}

#[tokio::test]
async fn admin_routes_never_accept_a_tenant_credential() {
    let app = auth_app(|s| s).await;
    let owner = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let key = create_api_key(&app, "alpha", &owner, "admin").await;
    for credential in [owner.as_str(), key["key"].as_str().unwrap()] {
        for path in [
            "/api/tenants",
            "/api/tenants/alpha/config",
            "/api/admin/pools",
        ] {
            let response = app
                .request(Method::GET, path)
                .bearer_auth(credential)
                .send()
                .await
                .unwrap();
            assert_error(response, 401, "unauthorized").await;
        }
    }
}

#[tokio::test]
async fn single_tenant_mode_authenticates_too() {
    let app = spawn_app_with(
        AppSpec::new(vec![])
            .env("MULTI_TENANT_ENABLED", "false")
            .with_auth(),
    )
    .await;
    let anonymous = app
        .request(Method::GET, "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 401, "unauthorized").await;
    app.add_user("default", "solo", "solo-password", "staff")
        .await;
    let token = app.login("default", "solo", "solo-password").await;
    let names = app
        .product_names(
            app.request(Method::GET, "/api/products")
                .bearer_auth(&token),
        )
        .await;
    assert!(names.is_empty());
}

#[tokio::test]
async fn replicas_sharing_the_key_accept_each_others_tokens_and_deactivation_reaches_them() {
    // Two replicas over the same tenant database (as behind a load balancer), a
    // third with another key.
    let shared = tempfile::tempdir().unwrap();
    let toml = format!(
        "[tenants.alpha]\ndatabase_url = \"sqlite://{}/alpha.db\"\n",
        shared.path().display()
    );
    let replica = || {
        AppSpec::from_toml(&toml)
            .with_auth()
            .env("AUTH_RECHECK_SECS", "1")
    };
    let a = spawn_app_with(replica()).await;
    let b = spawn_app_with(replica()).await;
    let stranger =
        spawn_app_with(replica().env("JWT_SECRET", "another-replica-secret-0123456789abcdef"))
            .await;
    let id = a.add_user("alpha", "rosa", "rosa-password", "staff").await;
    let token = a.login("alpha", "rosa", "rosa-password").await;
    let products = |app: &TestApp| {
        app.as_tenant(Method::GET, "alpha", "/api/products")
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(products(&b).await.unwrap().status(), 200);
    assert_error(products(&stranger).await.unwrap(), 401, "unauthorized").await;

    // Deactivated through A: A refuses at once, B within AUTH_RECHECK_SECS.
    let owner_id = a.add_user("alpha", "boss", "boss-password", "owner").await;
    assert!(!owner_id.is_empty());
    let boss = a.login("alpha", "boss", "boss-password").await;
    let off = a
        .as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
        .bearer_auth(&boss)
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 200);
    assert_error(products(&a).await.unwrap(), 401, "unauthorized").await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_error(products(&b).await.unwrap(), 401, "unauthorized").await;
}

#[tokio::test]
async fn a_token_of_a_removed_tenant_does_not_open_a_tenant_provisioned_again_under_its_id() {
    let app = auth_app(|s| s).await;
    let url = format!("sqlite://{}/delta.db", app.data_dir().display());
    let provision = |body: Value| {
        let request = app.admin(Method::POST, "/api/admin/tenants").json(&body);
        async move { request.send().await.unwrap().status() }
    };
    let remove = |query: &'static str| {
        let request = app.admin(Method::DELETE, &format!("/api/admin/tenants/delta{query}"));
        async move { request.send().await.unwrap().status() }
    };
    let products = |token: String| {
        let request = app.request(Method::GET, "/api/products").bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let owner = json!({ "username": "dora", "password": "delta-owner-pw" });
    let body = json!({ "id": "delta", "database_url": url, "owner": owner });
    assert_eq!(provision(body.clone()).await, 201);
    let first = app.login("delta", "dora", "delta-owner-pw").await;
    assert_eq!(products(first.clone()).await.status(), 200);

    // Removed, and provisioned again on the same (kept) database: its users are
    // still there, but a token of the first tenant is not this one's.
    assert_eq!(remove("").await, 204);
    assert_eq!(
        provision(json!({ "id": "delta", "database_url": url })).await,
        201
    );
    assert_error(products(first.clone()).await, 401, "unauthorized").await;
    let second = app.login("delta", "dora", "delta-owner-pw").await;
    assert_eq!(products(second.clone()).await.status(), 200);

    // Removed with its database and made afresh: the same.
    assert_eq!(remove("?drop_database=true").await, 204);
    assert_eq!(provision(body).await, 201);
    assert_error(products(second).await, 401, "unauthorized").await;
    let third = app.login("delta", "dora", "delta-owner-pw").await;
    assert_eq!(products(third).await.status(), 200);
    // A change to the tenant is not a new incarnation: its tokens stay good.
    let fourth = app.login("delta", "dora", "delta-owner-pw").await;
    let patched = app
        .admin(Method::PATCH, "/api/admin/tenants/delta")
        .json(&json!({ "branding": { "company_name": "Delta" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(products(fourth).await.status(), 200);
}
