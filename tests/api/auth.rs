//! Authentication bound to the tenant (`AUTH_MODE=jwt`): every tenant route walked
//! with every kind of bad credential, the role matrix, login throttling, API keys,
//! and the audit log.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tenant_router::auth::{JwtKey, Role, jwt::TokenUser};
use uuid::Uuid;

use crate::helpers::{
    AppSpec, Backend, TEST_JWT_SECRET, Tenant, TestApp, assert_error, spawn_app_with,
};

// Users, keys and the audit log live in each tenant's database: these run on SQLite,
// PostgreSQL database mode and schema mode alike.
crate::on_every_backend!(
    a_credential_alone_routes_the_request_to_its_tenant,
    each_role_reaches_exactly_what_it_may,
    every_write_leaves_exactly_one_audit_row_with_its_actor,
    two_owners_demoting_each_other_at_once_leave_one,
    one_username_created_twice_at_once_is_one_user_and_a_conflict,
);

const ALL_FEATURES: &str = "features = [\"patient_management\", \"treatment_tracking\", \
    \"dental_supplies\", \"bom_management\", \"production_tracking\", \"material_management\"]";
const OWNER_PASSWORD: &str = "owner-password-1";

/// Two tenants with every feature, so that a valid token is never refused by the
/// feature gate; `alpha` has an owner.
async fn auth_app(spec: impl FnOnce(AppSpec) -> AppSpec) -> TestApp {
    let tenants = vec![
        Tenant::new("alpha", "default").with(ALL_FEATURES),
        Tenant::new("beta", "default").with(ALL_FEATURES),
    ];
    let app = spawn_app_with(spec(AppSpec::new(tenants).with_auth())).await;
    app.add_user("alpha", "olivia", OWNER_PASSWORD, "owner")
        .await;
    app.add_user("beta", "bert", OWNER_PASSWORD, "owner").await;
    app
}

fn key() -> JwtKey {
    JwtKey::new(TEST_JWT_SECRET.as_bytes()).unwrap()
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// A token signed with the right key but expired an hour ago.
fn expired_token() -> String {
    let alpha = tenant_router::tenant::TenantId::parse("alpha").unwrap();
    key().issue(
        &alpha,
        "",
        TokenUser {
            id: Uuid::new_v4(),
            name: "olivia",
            role: Role::Owner,
        },
        now() - 7200,
        3600,
    )
}

/// `token` with its payload changed (the user name) and the old signature kept.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["usr"] = json!("mallory");
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// `token`'s claims under an `alg: none` header, with no signature.
fn alg_none(token: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", token.split('.').nth(1).unwrap())
}

async fn create_api_key(app: &TestApp, tenant: &str, token: &str, role: &str) -> Value {
    let response = app
        .as_tenant(Method::POST, tenant, "/api/api-keys")
        .bearer_auth(token)
        .json(&json!({ "name": format!("{role} service"), "role": role }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// Sends `request` and reads its JSON answer.
async fn json_of(request: RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn with_body(method: &Method, request: RequestBuilder) -> RequestBuilder {
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        request.json(&json!({}))
    } else {
        request
    }
}

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

/// One user of each role in `alpha`, logged in.
async fn one_of_each_role(app: &TestApp) -> Vec<(Role, String)> {
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let name = format!("{}-user", role.as_str());
        app.add_user("alpha", &name, "role-password-1", role.as_str())
            .await;
        tokens.push((role, app.login("alpha", &name, "role-password-1").await));
    }
    tokens
}

async fn each_role_reaches_exactly_what_it_may(backend: Backend) {
    let app = auth_app(|s| s.on(backend)).await;
    let tokens = one_of_each_role(&app).await;
    // (method, path, body, lowest role allowed)
    let matrix: Vec<(Method, &str, Option<Value>, Role)> = vec![
        (Method::GET, "/api/products", None, Role::Staff),
        (
            Method::POST,
            "/api/products",
            Some(json!({ "name": "p", "price": 1.0 })),
            Role::Staff,
        ),
        (Method::GET, "/api/dental/patients", None, Role::Staff),
        (Method::GET, "/api/cash-flow", None, Role::Staff),
        (
            Method::GET,
            "/api/cash-flow/summary?year=2026",
            None,
            Role::Manager,
        ),
        (Method::GET, "/api/data/status", None, Role::Manager),
        (Method::GET, "/api/users", None, Role::Admin),
        (
            Method::POST,
            "/api/users",
            Some(json!({ "username": "new-hire", "password": "new-hire-pass", "role": "staff" })),
            Role::Admin,
        ),
        (Method::GET, "/api/api-keys", None, Role::Admin),
        (Method::GET, "/api/audit", None, Role::Admin),
        (Method::POST, "/api/data/reset", None, Role::Admin),
    ];
    for (method, path, body, lowest) in &matrix {
        for (role, token) in &tokens {
            // A user created by an earlier role's request must not make a later one 409.
            let body = body.clone().map(|mut b| {
                if b.get("username").is_some() {
                    b["username"] = json!(format!("hire-by-{}", role.as_str()));
                }
                b
            });
            let mut request = app
                .as_tenant(method.clone(), "alpha", path)
                .bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            if role >= lowest {
                assert!(
                    response.status().is_success(),
                    "{role:?} on {method} {path}: {}",
                    response.status()
                );
            } else {
                assert_error(response, 403, "forbidden").await;
            }
        }
    }
}

#[tokio::test]
async fn nobody_grants_more_than_they_have_and_the_last_owner_stays() {
    let app = auth_app(|s| s).await;
    let tokens = one_of_each_role(&app).await;
    let admin = &tokens[2].1;
    let owner = &tokens[3].1;
    let post_user = |token: &str, name: &str, role: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/users")
            .bearer_auth(token)
            .json(&json!({ "username": name, "password": "long-password", "role": role }))
            .send()
    };
    assert_error(
        post_user(admin, "boss", "owner").await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        post_user(owner, "boss", "owner").await.unwrap().status(),
        201
    );
    // An admin's key cannot be an owner's.
    let key = app
        .as_tenant(Method::POST, "alpha", "/api/api-keys")
        .bearer_auth(admin)
        .json(&json!({ "name": "k", "role": "owner" }))
        .send()
        .await
        .unwrap();
    assert_error(key, 403, "forbidden").await;

    // Three owners now (olivia, owner-user, boss): demote two, the third must stay.
    let users: Value = json_of(
        app.as_tenant(Method::GET, "alpha", "/api/users")
            .bearer_auth(owner),
    )
    .await;
    let owners: Vec<String> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "owner")
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(owners.len(), 3);
    let patch = |id: &str, body: Value| {
        app.as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
            .bearer_auth(owner)
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(&owners[0], json!({ "role": "admin" }))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        patch(&owners[1], json!({ "is_active": false }))
            .await
            .unwrap()
            .status(),
        200
    );
    let last = patch(&owners[2], json!({ "role": "staff" })).await.unwrap();
    assert_error(last, 409, "conflict").await;

    // A demotion takes effect on the user's existing token.
    let manager = &tokens[1].1;
    let report = || {
        app.as_tenant(Method::GET, "alpha", "/api/data/status")
            .bearer_auth(manager)
            .send()
    };
    assert_eq!(report().await.unwrap().status(), 200);
    let manager_id = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "manager-user")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        patch(&manager_id, json!({ "role": "staff" }))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_error(report().await.unwrap(), 403, "forbidden").await;
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_and_the_right_password_works_after_the_window() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "3")
            .env("LOGIN_THROTTLE_SECS", "2")
    })
    .await;
    let login = |password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .json(&json!({ "username": "olivia", "password": password }))
            .send()
    };
    for _ in 0..3 {
        assert_error(login("wrong").await.unwrap(), 401, "unauthorized").await;
    }
    let throttled = login(OWNER_PASSWORD).await.unwrap();
    assert!(throttled.headers().contains_key("retry-after"));
    assert_error(throttled, 429, "too_many_requests").await;
    // Another user of the same tenant is not locked out by olivia's failures.
    app.login("beta", "bert", OWNER_PASSWORD).await;

    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let after = login(OWNER_PASSWORD).await.unwrap();
    assert_eq!(after.status(), 200);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn unknown_users_inactive_users_and_bad_bodies_cannot_log_in() {
    let app = auth_app(|s| s).await;
    let owner = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let id = app
        .add_user("alpha", "leaver", "leaver-password", "staff")
        .await;
    let login = |name: &str, password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .json(&json!({ "username": name, "password": password }))
            .send()
    };
    let leaver_token = app.login("alpha", "leaver", "leaver-password").await;
    let before = app
        .as_tenant(Method::GET, "alpha", "/api/products")
        .bearer_auth(&leaver_token)
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    let deactivate = app
        .as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
        .bearer_auth(&owner)
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(deactivate.status(), 200);
    // The token from before the deactivation stops working at once.
    let after = app
        .as_tenant(Method::GET, "alpha", "/api/products")
        .bearer_auth(&leaver_token)
        .send()
        .await
        .unwrap();
    assert_error(after, 401, "unauthorized").await;
    let unknown: Value = assert_error(
        login("nobody", "whatever-pw").await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let inactive: Value = assert_error(
        login("leaver", "leaver-password").await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // The same answer for both: the response does not tell which usernames exist.
    assert_eq!(unknown, inactive);
    // Olivia's password does not work at beta.
    let elsewhere = app
        .as_tenant(Method::POST, "beta", "/api/auth/login")
        .json(&json!({ "username": "olivia", "password": OWNER_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_error(elsewhere, 401, "unauthorized").await;
    let missing = app
        .as_tenant(Method::POST, "alpha", "/api/auth/login")
        .json(&json!({ "username": "olivia" }))
        .send()
        .await
        .unwrap();
    let body = assert_error(missing, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "password");
}

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
    let path = format!("/api/products/{product}");
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

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_tenant_provisioned_with_an_owner_can_log_in_and_a_weak_owner_password_makes_nothing() {
    let app = auth_app(|s| s).await;
    let weak = app
        .admin(Method::POST, "/api/admin/tenants")
        .json(&json!({
            "id": "gamma",
            "database_url": format!("sqlite://{}/gamma.db", app.data_dir().display()),
            "owner": { "username": "gina", "password": "short" },
        }))
        .send()
        .await
        .unwrap();
    let body = assert_error(weak, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "owner.password");
    assert!(!app.data_files().contains(&"gamma.db".to_string()));

    let created = app
        .admin(Method::POST, "/api/admin/tenants")
        .json(&json!({
            "id": "gamma",
            "database_url": format!("sqlite://{}/gamma.db", app.data_dir().display()),
            "owner": { "username": "gina", "password": "gamma-owner-pw" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let token = app.login("gamma", "gina", "gamma-owner-pw").await;
    let me: Value = json_of(app.request(Method::GET, "/api/auth/me").bearer_auth(&token)).await;
    assert_eq!(me["tenant_id"], "gamma");
    assert_eq!(me["role"], "owner");
    // The owner's creation is in gamma's audit log, as the operator's.
    let audit = json_of(
        app.request(Method::GET, "/api/audit?entity=users")
            .bearer_auth(&token),
    )
    .await;
    let rows = audit["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{audit}");
    assert_eq!(rows[0]["actor"]["kind"], "operator");
    assert_eq!(rows[0]["request_id"], "provisioning");
}

#[tokio::test]
async fn the_demo_tenant_has_the_documented_login() {
    let app = spawn_app_with(
        AppSpec::new(vec![Tenant::new("demo", "default").with("demo = true")]).with_auth(),
    )
    .await;
    let token = app.login("demo", "demo", "demo123").await;
    let names = app
        .product_names(
            app.as_tenant(Method::GET, "demo", "/api/products")
                .bearer_auth(&token),
        )
        .await;
    assert!(!names.is_empty());
}

#[tokio::test]
async fn failures_from_one_address_are_throttled_across_usernames() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "100")
            .env("LOGIN_MAX_FAILURES_PER_ADDRESS", "4")
    })
    .await;
    for i in 0..4 {
        let response = app
            .as_tenant(Method::POST, "alpha", "/api/auth/login")
            .json(&json!({ "username": format!("guess{i}"), "password": "guess-password" }))
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "unauthorized").await;
    }
    // The address is now refused, for a real user with the right password too.
    let response = app
        .as_tenant(Method::POST, "beta", "/api/auth/login")
        .json(&json!({ "username": "bert", "password": OWNER_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_error(response, 429, "too_many_requests").await;
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
async fn an_admin_cannot_take_over_another_admin_but_changes_itself() {
    let app = auth_app(|s| s).await;
    let tokens = one_of_each_role(&app).await;
    let (admin, owner) = (&tokens[2].1, &tokens[3].1);
    let other_admin = app
        .add_user("alpha", "second-admin", "second-admin-pw", "admin")
        .await;
    let own_id = json_of(
        app.as_tenant(Method::GET, "alpha", "/api/auth/me")
            .bearer_auth(admin),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = |token: &str, id: &str, body: Value| {
        app.as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let takeover = patch(admin, &other_admin, json!({ "password": "taken-over-pw" }))
        .await
        .unwrap();
    assert_error(takeover, 403, "forbidden").await;
    let own = patch(admin, &own_id, json!({ "password": "my-new-password" }))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    app.login("alpha", "admin-user", "my-new-password").await;
    let by_owner = patch(owner, &other_admin, json!({ "is_active": false }))
        .await
        .unwrap();
    assert_eq!(by_owner.status(), 200);
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

#[tokio::test]
async fn production_has_no_demo_login() {
    let app = spawn_app_with(
        AppSpec::new(vec![Tenant::new("demo", "default").with("demo = true")])
            .with_auth()
            .env("APP_ENV", "production"),
    )
    .await;
    let response = app
        .as_tenant(Method::POST, "demo", "/api/auth/login")
        .json(&json!({ "username": "demo", "password": "demo123" }))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn a_bad_body_is_refused_without_quoting_it() {
    let app = auth_app(|s| s).await;
    let response = app
        .as_tenant(Method::POST, "alpha", "/api/auth/login")
        .json(&json!({ "username": "olivia", "password": 98765432 }))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "password");
    assert!(!body.to_string().contains("98765432"), "{body}");
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

async fn two_owners_demoting_each_other_at_once_leave_one(backend: Backend) {
    // The race is a matter of timing: several fresh rounds.
    for round in 0..4 {
        let app = auth_app(|s| s.on(backend)).await;
        let olivia_id = json_of(
            app.as_tenant(Method::GET, "alpha", "/api/auth/me")
                .bearer_auth(app.login("alpha", "olivia", OWNER_PASSWORD).await),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let second_id = app
            .add_user("alpha", "second", "second-password", "owner")
            .await;
        let olivia = app.login("alpha", "olivia", OWNER_PASSWORD).await;
        let second = app.login("alpha", "second", "second-password").await;
        let demote = |token: &str, id: &str| {
            app.as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
                .bearer_auth(token)
                .json(&json!({ "role": "staff" }))
                .send()
        };
        let (first, other) = tokio::join!(demote(&olivia, &second_id), demote(&second, &olivia_id));
        let statuses = [
            first.unwrap().status().as_u16(),
            other.unwrap().status().as_u16(),
        ];
        // Whoever is still an owner can list the users; count the owners.
        let mut owners = None;
        for token in [&olivia, &second] {
            let response = app
                .as_tenant(Method::GET, "alpha", "/api/users")
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                let users: Value = response.json().await.unwrap();
                owners = Some(
                    users["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|u| u["role"] == "owner" && u["is_active"] == true)
                        .count(),
                );
            }
        }
        assert_eq!(owners, Some(1), "round {round}: statuses {statuses:?}");
        // One wins; the other is refused cleanly (409 last owner, or 403 when the
        // winner's demotion already took its rights), never a 5xx from a lock clash.
        let mut sorted = statuses;
        sorted.sort_unstable();
        assert!(
            sorted == [200, 403] || sorted == [200, 409],
            "round {round}: {statuses:?}"
        );
    }
}

async fn one_username_created_twice_at_once_is_one_user_and_a_conflict(backend: Backend) {
    let app = auth_app(|s| s.on(backend)).await;
    let create = || {
        app.admin(Method::POST, "/api/admin/tenants/alpha/users")
            .json(&json!({ "username": "twin", "password": "twin-password", "role": "staff" }))
            .send()
    };
    let (a, b) = tokio::join!(create(), create());
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
}

#[tokio::test]
async fn a_guesser_at_another_address_cannot_lock_the_user_out() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "3")
            .env("TRUST_FORWARDED_FOR", "true")
    })
    .await;
    let login = |from: &str, password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .header("x-forwarded-for", from)
            .json(&json!({ "username": "olivia", "password": password }))
            .send()
    };
    for _ in 0..3 {
        assert_error(
            login("203.0.113.9", "wrong").await.unwrap(),
            401,
            "unauthorized",
        )
        .await;
    }
    // The guesser's address is refused for olivia, the right password included...
    assert_error(
        login("203.0.113.9", OWNER_PASSWORD).await.unwrap(),
        429,
        "too_many_requests",
    )
    .await;
    // ...but olivia, from her own address, logs in.
    assert_eq!(
        login("198.51.100.7", OWNER_PASSWORD)
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn guesses_spread_over_many_addresses_meet_the_per_user_ceiling() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "3")
            .env("LOGIN_MAX_FAILURES_PER_USER", "4")
            .env("TRUST_FORWARDED_FOR", "true")
    })
    .await;
    let login = |from: String, password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .header("x-forwarded-for", from)
            .json(&json!({ "username": "olivia", "password": password }))
            .send()
    };
    for i in 0..4 {
        let wrong = login(format!("203.0.113.{i}"), "wrong").await.unwrap();
        assert_error(wrong, 401, "unauthorized").await;
    }
    let refused = login("198.51.100.7".into(), OWNER_PASSWORD).await.unwrap();
    assert_error(refused, 429, "too_many_requests").await;
    // Other users are not affected.
    app.login("beta", "bert", OWNER_PASSWORD).await;
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
