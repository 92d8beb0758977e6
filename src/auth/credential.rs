//! Checking a caller's credential (a JWT or an API key): its form and signature
//! first, then, once the request's tenant is settled, against the tenant's database
//! where it must be (an API key, a token user's current role).

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};

use super::{ActorKind, AuthService, Principal, Role, api_key, jwt};
use crate::{
    entities::api_key as api_key_row,
    error::AppError,
    registry::TenantRegistry,
    tenant::{TenantConfig, TenantId},
};

/// A credential as presented, its form and signature checked, not yet checked
/// against the tenant's database.
pub enum Credential {
    Token(jwt::VerifiedToken),
    Key(api_key::PresentedKey),
}

impl Credential {
    /// The tenant the credential was issued by.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Credential::Token(t) => &t.tenant,
            Credential::Key(k) => &k.tenant,
        }
    }
}

/// Where a credential came from: `Authorization: Bearer <value>` or the API key
/// header.
#[derive(Clone, Copy)]
pub enum Presented<'a> {
    Bearer(&'a str),
    KeyHeader(&'a str),
}

impl AuthService {
    /// Reads and verifies a presented credential. A malformed, expired or badly
    /// signed one is a 401, never ignored; the key header takes API keys only.
    pub fn read_credential(&self, presented: Presented<'_>) -> Result<Credential, AppError> {
        let raw = match presented {
            Presented::Bearer(raw) | Presented::KeyHeader(raw) => raw,
        };
        if raw.starts_with(api_key::PREFIX) {
            return api_key::parse(raw)
                .map(Credential::Key)
                .ok_or(AppError::Unauthenticated);
        }
        if matches!(presented, Presented::KeyHeader(_)) {
            return Err(AppError::Unauthenticated);
        }
        self.jwt
            .verify(raw, Utc::now().timestamp())
            .map(Credential::Token)
            .map_err(|reason| {
                tracing::info!(?reason, "access token refused");
                AppError::Unauthenticated
            })
    }

    /// The caller a verified credential stands for in `config`, the request's
    /// tenant (which the credential names: the caller has checked that).
    pub async fn principal(
        &self,
        registry: &TenantRegistry,
        config: &TenantConfig,
        credential: Credential,
    ) -> Result<Principal, AppError> {
        match credential {
            Credential::Token(token) => {
                // Issued by an earlier tenant with this id (deleted, then provisioned
                // again): not this tenant's.
                if token.tenant_generation != config.generation {
                    tracing::info!(user_id = %token.user_id, "token of an earlier incarnation of the tenant refused");
                    return Err(AppError::Unauthenticated);
                }
                // The role is the user's current one, not the one at login.
                let role = self
                    .current_role(registry, config, token.user_id)
                    .await?
                    .ok_or_else(|| {
                        tracing::info!(user_id = %token.user_id, "token of a deactivated or removed user refused");
                        AppError::Unauthenticated
                    })?;
                Ok(Principal {
                    kind: ActorKind::User,
                    id: Some(token.user_id),
                    name: Some(token.username),
                    role,
                })
            }
            Credential::Key(key) => self.check_api_key(registry, config, &key).await,
        }
    }
}

/// How stale `last_used_at` may get before a use writes it again; keeps a busy key
/// from turning every read into a write.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

impl AuthService {
    /// Looks the key up in its tenant's database: it must exist, match, and not be
    /// revoked.
    async fn check_api_key(
        &self,
        registry: &TenantRegistry,
        config: &TenantConfig,
        key: &api_key::PresentedKey,
    ) -> Result<Principal, AppError> {
        // One connection at a time: the creator's role below may need one of its own,
        // and a tenant may be allowed a single connection.
        let db = registry.connect(config).await?;
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
            let creator_role = self
                .current_role(registry, config, creator)
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
            let updated = match registry.connect(config).await {
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
}
