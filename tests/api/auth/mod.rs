//! Authentication bound to the tenant (`AUTH_MODE=jwt`): every tenant route walked
//! with every kind of bad credential, the role matrix, login throttling, API keys,
//! and the audit log.

mod api_keys;
mod audit;
mod credentials;
mod login;
mod roles;

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

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
