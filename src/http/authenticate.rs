//! Authentication, the second step for tenant-scoped routes: reads the caller's
//! credential (a JWT in `Authorization: Bearer`, or an API key there or in
//! `X-API-Key`), settles the request's tenant from what it names and what the
//! credential names (they must agree: 403 `tenant_mismatch`), checks that the
//! tenant exists and is active, and puts the tenant and the caller in the request.
//! [`require_auth`] and [`require_role`] then guard the routes.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    AppState,
    identify::{Named, TENANT_HEADER, TenantContext},
};
use crate::{
    auth::{AuthService, Credential, Presented, Principal, Role},
    error::{AppError, UnavailableCause},
    settings::AuthMode,
    tenant::{TenantConfig, TenantId},
};

/// The header an API key may come in (besides `Authorization: Bearer`).
pub static API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// Middleware, right after [`require_auth`]: the tenant's request rate and
/// concurrency limits (see [`crate::limits`]). Only authenticated requests count,
/// so that nobody without a credential can use up a tenant's allowance. A refused
/// request never reaches its handler nor takes a connection (only the credential
/// check, cached for tokens, comes before).
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let admitted = match request.extensions().get::<TenantContext>() {
        Some(tenant) => state.limits.admit(&tenant.config),
        None => {
            return AppError::internal("limit layer mounted outside tenant resolution")
                .into_response();
        }
    };
    match admitted {
        // Held until the response is made: the tenant's place among its
        // concurrent requests.
        Ok(place) => {
            let response = next.run(request).await;
            drop(place);
            response
        }
        Err(e) => {
            if let Some(tenant) = request.extensions().get::<TenantContext>() {
                state.metrics.limit_refused(tenant.config.id.as_str());
            }
            e.into_response()
        }
    }
}

/// Middleware: settles the request's tenant and caller (see the module's
/// documentation), records the tenant on the request's log span, tags the
/// response with `X-Tenant-ID`, counts the request in the tenant's usage when it
/// has a caller (a request without a credential is not the tenant's to pay for),
/// and tells the registry when the tenant's database failed the request.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(named) = request.extensions_mut().remove::<Named>() else {
        return AppError::internal("tenant route mounted without identify").into_response();
    };
    // Boxed: finding the caller's principal in the tenant's database is a large
    // future, which would otherwise be copied with this layer's on every request.
    let (config, principal) = match Box::pin(settle(&state, &named, request.headers())).await {
        Ok(found) => found,
        Err(e) => return refused(&state, &named, e),
    };
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    // Single-tenant mode serves one implicit tenant: no header, nothing to report.
    if state.single_tenant.is_some() {
        request.extensions_mut().insert(TenantContext { config });
        return next.run(request).await;
    }
    tracing::Span::current().record("tenant_id", config.id.as_str());
    let caller = request.extensions().get::<Principal>();
    if let (Some(usage), Some(principal)) = (&state.usage, caller)
        && principal.kind == crate::auth::ActorKind::User
        && let Some(user) = principal.id
    {
        usage.user(config.id.as_str(), user);
    }
    let billed = caller.is_some();
    let header_value = HeaderValue::from_str(config.id.as_str()).ok();
    let id = config.id.clone();
    request.extensions_mut().insert(TenantContext { config });
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    if let Some(cause) = response.extensions().get::<UnavailableCause>().copied() {
        Box::pin(state.registry.report_unavailable(&id, cause, started)).await;
    }
    if let Some(value) = header_value {
        response.headers_mut().insert(TENANT_HEADER.clone(), value);
    }
    if let (Some(usage), true) = (&state.usage, billed) {
        usage.request(id.as_str());
    }
    response
}

/// The answer to a request refused before it reached its tenant. It still carries
/// `X-Tenant-ID` when the request named a tenant this service has (suspended, or
/// not the credential's, or a credential it refused), as every answer of a tenant
/// does; that is also the tenant its metrics count it under. A tenant the registry
/// does not know is not named back.
fn refused(state: &AppState, named: &Named, error: AppError) -> Response {
    let tenant = match (&error, named) {
        (AppError::TenantInactive(id), _) | (_, Named::Tenant(id)) => Some(id),
        _ => None,
    };
    let header = tenant
        .filter(|id| state.single_tenant.is_none() && state.registry.get(id.as_str()).is_some())
        .and_then(|id| HeaderValue::from_str(id.as_str()).ok());
    let mut response = error.into_response();
    if let Some(value) = header {
        response.headers_mut().insert(TENANT_HEADER.clone(), value);
    }
    response
}

/// The request's tenant and caller. The tenant is the one the request names, or
/// else the credential's; the two must agree. The caller is `None` when no
/// credential was presented (the route decides whether that is allowed).
async fn settle(
    state: &AppState,
    named: &Named,
    headers: &HeaderMap,
) -> Result<(Arc<TenantConfig>, Option<Principal>), AppError> {
    if state.auth.mode == AuthMode::None {
        let id = match named {
            Named::Tenant(id) => id,
            Named::Nothing => return Err(AppError::TenantRequired),
            Named::UnknownSubdomain(label) => {
                return Err(AppError::UnknownSubdomain(label.clone()));
            }
        };
        return Ok((tenant_config(state, id)?, Some(Principal::gateway())));
    }
    let credential = match presented(headers)? {
        Some(presented) => Some(state.auth.read_credential(presented)?),
        None => None,
    };
    let named = match named {
        Named::Tenant(id) => Some(id),
        Named::Nothing => None,
        // A host such as api.example.com that is no tenant's: the credential decides.
        Named::UnknownSubdomain(_) if credential.is_some() => None,
        Named::UnknownSubdomain(label) => {
            return Err(AppError::UnknownSubdomain(label.clone()));
        }
    };
    let id = match (named, credential.as_ref().map(Credential::tenant)) {
        (Some(named), Some(own)) if named != own => {
            return Err(AppError::TenantMismatch {
                credential: own.to_string(),
                request: named.to_string(),
            });
        }
        (Some(named), _) => named,
        (None, Some(own)) => own,
        (None, None) => return Err(AppError::TenantRequired),
    };
    let config = tenant_config(state, id)?;
    let principal = match credential {
        Some(credential) => Some(
            state
                .auth
                .principal(&state.registry, &config, credential)
                .await?,
        ),
        None => None,
    };
    Ok((config, principal))
}

/// The credential the request presents, if any: `Authorization: Bearer` or the
/// API key header, not both. A malformed header is a 401, never ignored.
fn presented(headers: &HeaderMap) -> Result<Option<Presented<'_>>, AppError> {
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
    match (bearer, key_header) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(AppError::Unauthenticated),
        (Some(raw), None) => Ok(Some(Presented::Bearer(raw))),
        (None, Some(raw)) => Ok(Some(Presented::KeyHeader(raw))),
    }
}

/// The tenant's configuration, if it exists and is active.
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

/// The client's address, for throttling: the last `X-Forwarded-For` hop behind a
/// trusted load balancer (`TRUST_FORWARDED_FOR`), else the peer's address. The
/// last hop of the last line: a balancer that adds a line of its own puts it
/// after whatever lines the client sent.
pub fn client_address(auth: &AuthService, parts: &Parts) -> String {
    if auth.trust_forwarded_for
        && let Some(last) = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
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

/// The client's address (see [`client_address`]).
pub struct ClientAddress(pub String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_address(&state.auth, parts)))
    }
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
