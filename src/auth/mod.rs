//! Authentication bound to the tenant: who the caller is, and whether they may act
//! on the tenant the request is about.
//!
//! A caller presents a JWT (`Authorization: Bearer <jwt>`, from `POST
//! /api/auth/login`) or an API key (`Authorization: Bearer trk.…` or `X-API-Key`).
//! Both name their tenant. [`resolve`] checks the credential, compares its tenant
//! with the one the request names (a different one is 403 `tenant_mismatch`,
//! whatever the identification source) and, when the request names none, routes it
//! to the credential's tenant. [`require_auth`] and [`require_role`] then guard the
//! routes.

pub mod api_key;
pub mod jwt;
pub mod password;
pub mod throttle;
pub mod users;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderName, Uri, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use moka::future::Cache;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde::Serialize;

use crate::{
    entities::{api_key as api_key_row, user as user_row},
    error::AppError,
    identify::identify_tenant,
    startup::AppState,
    tenant::{TenantConfig, TenantId},
};

pub use jwt::JwtKey;
pub use throttle::LoginThrottle;

/// The header an API key may come in (besides `Authorization: Bearer`).
pub static API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// What a caller may do within its tenant; each role can do what the ones below it
/// can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and writes business records.
    Staff,
    /// Also reads reports.
    Manager,
    /// Also manages users, API keys and the tenant's data (reset), reads the audit log.
    Admin,
    /// Also manages owners.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Staff, Role::Manager, Role::Admin, Role::Owner];

    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Manager => "manager",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

/// `AUTH_MODE`: `jwt` (every tenant route needs a token or key) or `none` (a gateway
/// in front has authenticated the caller; every request acts as an owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Jwt,
    None,
}

/// Who made a request, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiKey,
    /// `AUTH_MODE=none`: whoever the gateway let through.
    Gateway,
    /// The operator, with the admin token.
    Operator,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Gateway => "gateway",
            ActorKind::Operator => "operator",
        }
    }
}

/// The authenticated caller of a request, in its extensions.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub kind: ActorKind,
    /// The user's or key's id.
    pub id: Option<uuid::Uuid>,
    /// The username or the key's name.
    pub name: Option<String>,
    pub role: Role,
}

impl Principal {
    fn gateway() -> Self {
        Self {
            kind: ActorKind::Gateway,
            id: None,
            name: None,
            role: Role::Owner,
        }
    }

    /// The operator acting through an admin route.
    pub fn operator() -> Self {
        Self {
            kind: ActorKind::Operator,
            id: None,
            name: None,
            role: Role::Owner,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(AppError::Unauthenticated)
    }
}

/// Authentication settings and state shared by every request.
pub struct AuthService {
    pub mode: AuthMode,
    pub jwt: JwtKey,
    pub token_ttl_secs: i64,
    pub throttle: LoginThrottle,
    /// Take the client address for throttling from `X-Forwarded-For` (behind a
    /// trusted load balancer) instead of the peer address.
    pub trust_forwarded_for: bool,
    /// Each token user's current role (`None`: gone or deactivated), re-read from
    /// the tenant's database once `recheck` (`AUTH_RECHECK_SECS`) has passed: a
    /// deactivation or demotion made through another replica takes effect within
    /// it (through this one, at once).
    pub users: Cache<(TenantId, uuid::Uuid), Option<Role>>,
}

impl AuthService {
    pub fn new(
        mode: AuthMode,
        jwt: JwtKey,
        token_ttl_secs: i64,
        throttle: LoginThrottle,
        trust_forwarded_for: bool,
        recheck: std::time::Duration,
    ) -> Self {
        Self {
            mode,
            jwt,
            token_ttl_secs,
            throttle,
            trust_forwarded_for,
            users: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(recheck)
                .build(),
        }
    }

    /// Drops what is remembered of a user, after a change to it.
    pub async fn forget_user(&self, tenant: &TenantId, user: uuid::Uuid) {
        self.users.invalidate(&(tenant.clone(), user)).await;
    }

    /// The user's current role, or `None` if the user is gone or deactivated.
    async fn current_role(
        &self,
        state: &AppState,
        config: &TenantConfig,
        user: uuid::Uuid,
    ) -> Result<Option<Role>, AppError> {
        let key = (config.id.clone(), user);
        if let Some(known) = self.users.get(&key).await {
            return Ok(known);
        }
        let (db, _lease) = state.registry.lease(config).await?;
        let role = user_row::Entity::find_by_id(user)
            .one(&db)
            .await?
            .filter(|u| u.is_active)
            .and_then(|u| Role::parse(&u.role));
        self.users.insert(key, role).await;
        Ok(role)
    }
    /// The client's address, for login throttling.
    pub fn client_address(&self, parts: &Parts) -> String {
        if self.trust_forwarded_for
            && let Some(last) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        {
            return last.to_string();
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The client's address (see [`AuthService::client_address`]).
pub struct ClientAddress(pub String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(state.auth.client_address(parts)))
    }
}

/// A credential as presented, not yet checked against the tenant's database.
enum Credential {
    Token(jwt::VerifiedToken),
    Key(api_key::PresentedKey),
}

impl Credential {
    fn tenant(&self) -> &TenantId {
        match self {
            Credential::Token(t) => &t.tenant,
            Credential::Key(k) => &k.tenant,
        }
    }
}

/// Reads and verifies the request's credential, if it has one. A malformed,
/// expired or badly signed one is a 401, never ignored.
fn credential(auth: &AuthService, headers: &HeaderMap) -> Result<Option<Credential>, AppError> {
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| AppError::Unauthenticated)?;
            let (scheme, rest) = value.split_once(' ').ok_or(AppError::Unauthenticated)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AppError::Unauthenticated);
            }
            Some(rest.trim())
        }
    };
    let key_header = match headers.get(&API_KEY_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| AppError::Unauthenticated)?
                .trim(),
        ),
    };
    let raw = match (bearer, key_header) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(AppError::Unauthenticated),
        (Some(raw), None) | (None, Some(raw)) => raw,
    };
    if raw.starts_with(api_key::PREFIX) {
        return api_key::parse(raw)
            .map(|k| Some(Credential::Key(k)))
            .ok_or(AppError::Unauthenticated);
    }
    if key_header.is_some() {
        return Err(AppError::Unauthenticated);
    }
    auth.jwt
        .verify(raw, Utc::now().timestamp())
        .map(|t| Some(Credential::Token(t)))
        .map_err(|reason| {
            tracing::info!(?reason, "access token refused");
            AppError::Unauthenticated
        })
}

/// Finds the request's tenant and caller. The tenant is the one the request names
/// (subdomain, header, query), or else the credential's; the two must agree. The
/// caller is `None` when no credential was presented (the route decides whether that
/// is allowed).
pub async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(Arc<TenantConfig>, Option<Principal>), AppError> {
    let named = match &state.single_tenant {
        // Single-tenant mode ignores every identification input.
        Some(single) => Ok(Some(single.id.clone())),
        None => match identify_tenant(headers, uri, &state.identify, |label| {
            state.registry.by_subdomain(label)
        }) {
            Ok((id, _source)) => Ok(Some(id)),
            Err(AppError::TenantRequired) => Ok(None),
            // Settled below: a credential names a tenant too.
            Err(e @ AppError::UnknownSubdomain(_)) => Err(e),
            Err(e) => return Err(e),
        },
    };
    if state.auth.mode == AuthMode::None {
        let id = named?.ok_or(AppError::TenantRequired)?;
        return Ok((tenant_config(state, &id)?, Some(Principal::gateway())));
    }
    let credential = credential(&state.auth, headers)?;
    let named = match named {
        Ok(named) => named,
        // A host such as api.example.com that is no tenant's: the credential decides.
        Err(AppError::UnknownSubdomain(_)) if credential.is_some() => None,
        Err(e) => return Err(e),
    };
    let id = match (named, credential.as_ref().map(Credential::tenant)) {
        (Some(named), Some(own)) if named != *own => {
            return Err(AppError::TenantMismatch {
                credential: own.to_string(),
                request: named.to_string(),
            });
        }
        (Some(named), _) => named,
        (None, Some(own)) => own.clone(),
        (None, None) => return Err(AppError::TenantRequired),
    };
    let config = tenant_config(state, &id)?;
    let principal = match credential {
        None => None,
        Some(Credential::Token(token)) => {
            // The role is the user's current one, not the one at login.
            let role = state
                .auth
                .current_role(state, &config, token.user_id)
                .await?
                .ok_or_else(|| {
                    tracing::info!(user_id = %token.user_id, "token of a deactivated or removed user refused");
                    AppError::Unauthenticated
                })?;
            Some(Principal {
                kind: ActorKind::User,
                id: Some(token.user_id),
                name: Some(token.username),
                role,
            })
        }
        Some(Credential::Key(key)) => Some(check_api_key(state, &config, &key).await?),
    };
    Ok((config, principal))
}

fn tenant_config(state: &AppState, id: &TenantId) -> Result<Arc<TenantConfig>, AppError> {
    let config = match &state.single_tenant {
        Some(single) => single.clone(),
        None => state
            .registry
            .get(id.as_str())
            .ok_or_else(|| AppError::TenantNotFound(id.to_string()))?,
    };
    if !config.is_active {
        return Err(AppError::TenantInactive(id.clone()));
    }
    Ok(config)
}

/// How stale `last_used_at` may get before a use writes it again; keeps a busy key
/// from turning every read into a write.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// Looks the key up in its tenant's database: it must exist, match, and not be
/// revoked.
async fn check_api_key(
    state: &AppState,
    config: &TenantConfig,
    key: &api_key::PresentedKey,
) -> Result<Principal, AppError> {
    let (db, _lease) = state.registry.lease(config).await?;
    let row = api_key_row::Entity::find_by_id(key.id)
        .one(&db)
        .await?
        .filter(|row| row.revoked_at.is_none() && key.matches(&row.secret_hash))
        .ok_or_else(|| {
            tracing::info!(key_id = %key.id, "API key refused");
            AppError::Unauthenticated
        })?;
    let mut role = Role::parse(&row.role)
        .ok_or_else(|| AppError::internal(format!("API key {} has an unknown role", row.id)))?;
    // A key can do no more than the user who made it can now: a deactivated
    // creator's keys stop working, a demoted creator's keys are demoted with them.
    if let Some(creator) = row.created_by {
        let creator_role = state
            .auth
            .current_role(state, config, creator)
            .await?
            .ok_or_else(|| {
                tracing::info!(key_id = %key.id, "API key of a deactivated or removed user refused");
                AppError::Unauthenticated
            })?;
        role = role.min(creator_role);
    }
    let now = Utc::now();
    if row
        .last_used_at
        .is_none_or(|t| (now - t).num_seconds() >= LAST_USED_RESOLUTION_SECS)
    {
        let principal_name = row.name.clone();
        let mut active: api_key_row::ActiveModel = row.clone().into();
        active.last_used_at = Set(Some(now));
        if let Err(e) = active.update(&db).await {
            // Bookkeeping only: the key is valid, so the request goes on.
            tracing::warn!(error = %crate::db::redact_error(&e), key = %principal_name, "could not record the key's last use");
        }
    }
    Ok(Principal {
        kind: ActorKind::ApiKey,
        id: Some(row.id),
        name: Some(row.name),
        role,
    })
}

/// Middleware: the route needs an authenticated caller (401 `unauthorized` without).
pub async fn require_auth(request: Request, next: Next) -> Response {
    if request.extensions().get::<Principal>().is_some() {
        next.run(request).await
    } else {
        AppError::Unauthenticated.into_response()
    }
}

/// Middleware: the caller's role must be at least `min` (403 `forbidden` else).
pub async fn require_role(State(min): State<Role>, request: Request, next: Next) -> Response {
    match request.extensions().get::<Principal>() {
        Some(p) if p.role >= min => next.run(request).await,
        Some(p) => AppError::Forbidden(format!(
            "this needs the {} role or higher; the caller is {}",
            min.as_str(),
            p.role.as_str()
        ))
        .into_response(),
        None => AppError::Unauthenticated.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Manager);
        assert!(Role::Manager > Role::Staff);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
