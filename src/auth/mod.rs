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
pub mod console;
mod credential;
pub mod jwt;
pub mod password;
pub mod throttle;
pub mod users;

use moka::future::Cache;
use sea_orm::EntityTrait;
use serde::Serialize;

use crate::{
    entities::user as user_row,
    error::AppError,
    registry::TenantRegistry,
    settings::{AuthMode, Settings},
    tenant::{TenantConfig, TenantId},
};

pub use credential::{Credential, Presented};
pub use jwt::JwtKey;
pub use throttle::LoginThrottle;

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
    /// Whoever the gateway let through (`AUTH_MODE=none`).
    pub fn gateway() -> Self {
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
    /// When each user was last forgotten: a read that started before then may hold
    /// the old role, and is not cached.
    forgotten: Cache<(TenantId, uuid::Uuid), std::time::Instant>,
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
                .support_invalidation_closures()
                .build(),
            forgotten: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(recheck)
                .build(),
        }
    }

    /// The service the settings describe: the token key (generated for this run when
    /// `JWT_SECRET` is unset outside production) and the login throttle.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let mode = settings.auth_mode()?;
        let jwt = match &settings.jwt_secret {
            Some(key) => JwtKey::new(key.expose().as_bytes()),
            None => {
                if mode == AuthMode::Jwt {
                    tracing::warn!("JWT_SECRET is not set: access tokens are signed with a key made for this run (they end with it, and other replicas refuse them); set JWT_SECRET in production");
                }
                JwtKey::new(crate::secret::SecretBox::generate_hex().as_bytes())
            }
        }
        .map_err(|e| format!("settings: {e}"))?;
        if mode == AuthMode::None {
            tracing::warn!(
                "AUTH_MODE=none: tenant routes do not check credentials; every request acts as the tenant's owner. Run this only behind a gateway that authenticates callers"
            );
        }
        Ok(Self::new(
            mode,
            jwt,
            settings.jwt_ttl_secs as i64,
            LoginThrottle::new(
                std::time::Duration::from_secs(settings.login_throttle_secs),
                throttle::Limits {
                    per_user_address: settings.login_max_failures,
                    per_user: settings.login_max_failures_per_user,
                    per_address: settings.login_max_failures_per_address,
                    admin_per_address: settings.admin_max_failures_per_address,
                },
            ),
            settings.trust_forwarded_for,
            std::time::Duration::from_secs(settings.auth_recheck_secs),
        ))
    }

    /// Drops what is remembered of a user, after a change to it has committed.
    pub async fn forget_user(&self, tenant: &TenantId, user: uuid::Uuid) {
        let key = (tenant.clone(), user);
        self.forgotten
            .insert(key.clone(), std::time::Instant::now())
            .await;
        self.users.invalidate(&key).await;
    }

    /// Drops everything remembered of a tenant's users: the tenant was removed or
    /// provisioned again.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        let tenant = tenant.clone();
        if let Err(e) = self
            .users
            .invalidate_entries_if(move |(id, _), _| *id == tenant)
        {
            tracing::warn!(error = %e, "cannot drop the tenant's cached users");
        }
    }

    /// The user's current role, or `None` if the user is gone or deactivated.
    async fn current_role(
        &self,
        registry: &TenantRegistry,
        config: &TenantConfig,
        user: uuid::Uuid,
    ) -> Result<Option<Role>, AppError> {
        let key = (config.id.clone(), user);
        if let Some(known) = self.users.get(&key).await {
            return Ok(known);
        }
        let db = registry.connect(config).await?;
        let started = std::time::Instant::now();
        let role = user_row::Entity::find_by_id(user)
            .one(&db)
            .await?
            .filter(|u| u.is_active)
            .and_then(|u| Role::parse(&u.role));
        // A change that committed while this read ran may not be in it: then the
        // answer serves this request only, and the next one reads again.
        let changed_meanwhile = self
            .forgotten
            .get(&key)
            .await
            .is_some_and(|at| at >= started);
        if !changed_meanwhile {
            self.users.insert(key, role).await;
        }
        Ok(role)
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
