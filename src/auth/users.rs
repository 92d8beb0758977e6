//! A tenant's users: creation (shared by the API, provisioning, the CLI and demo
//! data), lookup and the view sent to clients (never the password hash).

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Role, password};
use crate::{
    entities::user,
    error::{AppError, Result},
    validate::optional_email,
};

/// A user to create, as a client or an operator sends it.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default = "default_role")]
    pub role: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("email", &self.email)
            .field("role", &self.role)
            .finish()
    }
}

fn default_role() -> String {
    Role::Staff.as_str().into()
}

/// What a client sees of a user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub is_active: bool,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<user::Model> for UserView {
    fn from(m: user::Model) -> Self {
        Self {
            id: m.id,
            username: m.username,
            email: m.email,
            role: m.role,
            is_active: m.is_active,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A username, lower-cased: 1 to 64 of letters, digits, `.`, `_`, `-` and `@`.
pub fn normalize_username(raw: &str) -> Result<String> {
    let name = raw.trim().to_ascii_lowercase();
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if valid {
        Ok(name)
    } else {
        Err(AppError::validation(
            "username",
            "username must be 1 to 64 letters, digits, '.', '_', '-' or '@'",
        ))
    }
}

pub fn parse_role(raw: &str) -> Result<Role> {
    Role::parse(raw)
        .ok_or_else(|| AppError::validation("role", "role must be owner, admin, manager or staff"))
}

pub async fn find_by_username(
    db: &impl ConnectionTrait,
    username: &str,
) -> Result<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(db)
        .await?)
}

/// A new user, checked and with its password hashed: ready to insert.
pub struct PreparedUser {
    username: String,
    email: Option<String>,
    password_hash: String,
    role: Role,
}

/// Checks a new user and hashes its password; the slow half of [`create`], to run
/// before a transaction opens. The password policy is not applied to `trusted`
/// callers (the shipped demo user).
pub async fn prepare(new: NewUser, trusted: bool) -> Result<PreparedUser> {
    let username = normalize_username(&new.username)?;
    let role = parse_role(&new.role)?;
    let email = optional_email("email", new.email.as_deref())?;
    if !trusted {
        password::check_policy(&new.password).map_err(|m| AppError::validation("password", m))?;
    }
    let password_hash = password::hash_blocking(new.password)
        .await
        .map_err(AppError::internal)?;
    Ok(PreparedUser {
        username,
        email,
        password_hash,
        role,
    })
}

/// Stores a prepared user; a taken username is a 409 `conflict`.
pub async fn insert(db: &impl ConnectionTrait, user: PreparedUser) -> Result<user::Model> {
    let taken = || AppError::Conflict(format!("user '{}' already exists", user.username));
    if find_by_username(db, &user.username).await?.is_some() {
        return Err(taken());
    }
    let now = Utc::now();
    let inserted = user::ActiveModel {
        id: Set(Uuid::new_v4()),
        username: Set(user.username.clone()),
        email: Set(user.email.clone()),
        password_hash: Set(user.password_hash.clone()),
        role: Set(user.role.as_str().into()),
        is_active: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await;
    match inserted {
        Ok(model) => Ok(model),
        // Two creations of one name at once: the unique index lets one through.
        // (No query here: on PostgreSQL the failed statement ended the transaction.)
        Err(e) if crate::db::is_unique_violation(&e) => Err(taken()),
        Err(e) => Err(e.into()),
    }
}

/// Checks, hashes and stores a new user ([`prepare`] then [`insert`]).
pub async fn create(db: &impl ConnectionTrait, new: NewUser, trusted: bool) -> Result<user::Model> {
    insert(db, prepare(new, trusted).await?).await
}

/// Active owners other than `except`: the last one may not be demoted or deactivated.
/// Run it in the transaction that makes the change: the owners' rows are locked
/// (`FOR UPDATE` on PostgreSQL; SQLite serialises writers), so two owners demoting
/// each other at once cannot leave none.
pub async fn other_active_owners(db: &impl ConnectionTrait, except: Uuid) -> Result<usize> {
    use sea_orm::QuerySelect;
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(Role::Owner.as_str()))
        .filter(user::Column::IsActive.eq(true))
        .lock_exclusive()
        .all(db)
        .await?
        .into_iter()
        .filter(|u| u.id != except)
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lower_cased_and_checked() {
        assert_eq!(
            normalize_username(" Ann.Lee@Clinic ").unwrap(),
            "ann.lee@clinic"
        );
        for bad in ["", "a b", "ann;drop", &"x".repeat(65), "émile"] {
            assert!(normalize_username(bad).is_err(), "{bad}");
        }
    }
}
