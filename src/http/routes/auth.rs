//! `/api/auth/…`: logging in to a tenant, and who the caller is.

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::LoginOutcome;
use crate::{
    auth::{LoginThrottle, Principal, jwt::TokenUser, password, users},
    error::{AppError, Result},
    http::AppState,
    http::authenticate::ClientAddress,
    http::extract::{ApiJson, TenantDb},
    http::identify::TenantContext,
    http::json::Json,
    http::routes::RouteSet,
};

/// `POST /api/auth/login`: the one tenant route that needs no credential.
pub fn login_router() -> Router<AppState> {
    Router::new().route("/api/auth/login", post(login))
}

/// `GET /api/auth/me`: any authenticated caller.
pub fn router() -> RouteSet {
    RouteSet::new().route("/api/auth/me", get(me))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginInput {
    username: String,
    password: String,
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginInput,
    responses((status = 200, description = "Logged in", body = Object)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    tenant: TenantContext,
    ClientAddress(address): ClientAddress,
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<LoginInput>,
) -> Result<Json<Value>> {
    let username = users::normalize_username(&input.username)?;
    let throttle = &state.auth.throttle;
    let keys = LoginThrottle::login_keys(tenant.config.id.as_str(), &username, &address);
    if let Err(retry_after_secs) = throttle.begin_attempt(&key_refs(&keys)).await {
        // The username is not logged: people type passwords into that field.
        tracing::warn!(%address, "login refused: too many failures");
        state
            .metrics
            .login(tenant.config.id.as_str(), LoginOutcome::Throttled);
        return Err(AppError::TooManyRequests { retry_after_secs });
    }
    let attempt = Attempt {
        throttle: throttle.clone(),
        keys: Some(keys),
    };
    let user = users::find_by_username(&db, &username)
        .await?
        .filter(|u| u.is_active);
    // The connection goes back before the hashing, which may wait for a slot: a
    // flood of logins must not hold the tenant's connections from its other
    // requests.
    drop(db);
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    // Once its hash has a slot the attempt stands, whether or not its client
    // waits for the answer: the hash runs to its end once begun, and a client
    // that hangs up during it must not get its guess back (a flood of logins
    // dropped mid-hash would cost the hashing and never trip the throttle). One
    // dropped while it queues for a slot cost nothing and is given back.
    let Some(slot) = password::hashing_slot().await else {
        return Err(AppError::internal("no password hashing slot"));
    };
    let keys = attempt.settle();
    // An unknown or inactive user costs the same hashing work as a wrong password.
    // The outcome is settled where the hash runs, so that a right password whose
    // client hangs up during the hash takes its attempt back all the same: it was
    // no failed guess, and must not lock its user out.
    let settled = {
        let throttle = throttle.clone();
        tokio::spawn(async move {
            let verified = password::verify_in_slot(slot, input.password, stored).await;
            if verified {
                throttle.succeeded(&key_refs(&keys)).await;
            }
            verified
        })
    };
    let verified = settled.await.unwrap_or(false);
    let Some(user) = user.filter(|_| verified) else {
        tracing::warn!(%address, "login failed");
        state
            .metrics
            .login(tenant.config.id.as_str(), LoginOutcome::Failed);
        return Err(AppError::LoginFailed);
    };
    state
        .metrics
        .login(tenant.config.id.as_str(), LoginOutcome::Succeeded);
    let role = users::parse_role(&user.role)
        .map_err(|_| AppError::internal(format!("user {} has an unknown role", user.id)))?;
    let ttl = state.auth.token_ttl_secs;
    let token = state.auth.jwt.issue(
        &tenant.config.id,
        &tenant.config.generation,
        TokenUser {
            id: user.id,
            name: &user.username,
            role,
        },
        Utc::now().timestamp(),
        ttl,
    );
    tracing::info!(user_id = %user.id, role = role.as_str(), "login succeeded");
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "role": role,
    })))
}

/// A login attempt counted before its password was checked. Unless it is settled
/// (its hash has a slot), dropping it gives the attempt back: a database error,
/// or a client that left before its hash began, is no failed guess.
struct Attempt {
    throttle: LoginThrottle,
    keys: Option<[String; 3]>,
}

impl Attempt {
    /// A password was checked: the attempt stands (the caller settles success).
    fn settle(mut self) -> [String; 3] {
        self.keys.take().unwrap_or_default()
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(keys) = self.keys.take() {
            let throttle = self.throttle.clone();
            tokio::spawn(async move { throttle.give_back(&key_refs(&keys)).await });
        }
    }
}

fn key_refs(keys: &[String; 3]) -> [&str; 3] {
    [&keys[0], &keys[1], &keys[2]]
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, description = "The caller", body = Object)))]
pub(crate) async fn me(tenant: TenantContext, principal: Principal) -> Json<Value> {
    Json(json!({
        "tenant_id": tenant.config.id,
        "kind": principal.kind,
        "id": principal.id,
        "name": principal.name,
        "role": principal.role,
    }))
}
