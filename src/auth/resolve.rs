//! Finding a request's tenant and caller: the credential (a JWT or an API key) is
//! read and checked, compared with the tenant the request names, and looked up in
//! the tenant's database where it must be (an API key, a token user's current role).

use std::sync::Arc;

use axum::http::{HeaderMap, Uri, header};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};

use super::{API_KEY_HEADER, ActorKind, AuthMode, AuthService, Principal, Role, api_key, jwt};
use crate::{
    entities::api_key as api_key_row,
    error::AppError,
    http::AppState,
    http::identify::identify_tenant,
    tenant::{TenantConfig, TenantId},
};

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
            // Issued by an earlier tenant with this id (deleted, then provisioned
            // again): not this tenant's.
            if token.tenant_generation != config.generation {
                tracing::info!(user_id = %token.user_id, "token of an earlier incarnation of the tenant refused");
                return Err(AppError::Unauthenticated);
            }
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
    // One connection at a time: the creator's role below may need one of its own,
    // and a tenant may be allowed a single connection.
    let db = state.registry.connect(config).await?;
    let found = api_key_row::Entity::find_by_id(key.id).one(&db).await;
    drop(db);
    let row = found?
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
        let updated = match state.registry.connect(config).await {
            Ok(db) => active.update(&db).await.map(|_| ()),
            Err(e) => Err(sea_orm::DbErr::Custom(e.to_string())),
        };
        if let Err(e) = updated {
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
