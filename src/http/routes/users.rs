//! `/api/users` (admins and owners): the tenant's users. Nobody grants a role above
//! their own or changes a user who outranks them, and the last active owner stays.

use axum::{extract::State, http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::Deserialize;

use crate::{
    auth::{
        ActorKind, Principal, Role, password,
        users::{self, NewUser, UserView, parse_role},
    },
    entities::user,
    error::{AppError, Result},
    http::AppState,
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::identify::TenantContext,
    http::json::Json,
    http::routes::{
        RouteSet, for_role,
        pagination::{Page, PageQuery},
    },
    validate::optional_email,
};

pub fn router() -> RouteSet {
    for_role(
        RouteSet::new()
            .route("/api/users", get(list).post(create))
            .route("/api/users/{id}", get(show).patch(update)),
        Role::Admin,
    )
}

/// Users are made and changed by people: a leaked key must not be able to create
/// a login, reset a password or raise a role (and then mint keys through it).
fn refuse_keys(principal: &Principal) -> Result<()> {
    if principal.kind == ActorKind::ApiKey {
        return Err(AppError::Forbidden(
            "users are managed by users, not by API keys".into(),
        ));
    }
    Ok(())
}

fn not_found() -> AppError {
    AppError::NotFound("no user with that id".into())
}

fn outranked(what: &str) -> AppError {
    AppError::Forbidden(format!("{what} needs a role at least as high"))
}

#[utoipa::path(get, path = "/api/users", tag = "users", params(PageQuery),
    responses((status = 200, description = "The users", body = Page<UserView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<UserView>>> {
    let page = query.checked()?;
    let rows = user::Entity::find()
        .order_by_asc(user::Column::Username)
        .limit(page.fetch())
        .offset(page.offset)
        .all(&db)
        .await?;
    Ok(Json(Page::from_rows(rows, page, UserView::from)))
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = NewUser,
    responses((status = 201, description = "Created", body = UserView),
        (status = 409, description = "The username is taken (`conflict`)", body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn create(
    principal: Principal,
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>)> {
    refuse_keys(&principal)?;
    if parse_role(&input.role)? > principal.role {
        return Err(outranked("granting this role"));
    }
    let model = users::create(&db, input, false).await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

#[utoipa::path(get, path = "/api/users/{id}", tag = "users", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The user", body = UserView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<UserView>> {
    let model = user::Entity::find_by_id(id)
        .one(&db)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(model.into()))
}

// No Debug: it may hold a password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    email: Option<String>,
    role: Option<String>,
    is_active: Option<bool>,
    password: Option<String>,
}

#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", params(("id" = uuid::Uuid, Path, description = "The record's id")), request_body = UserPatch,
    responses((status = 200, description = "Changed", body = UserView),
        (status = 409, description = "The change would leave the tenant without an active owner (`conflict`)", body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    tenant: TenantContext,
    IdPath(id): IdPath,
    principal: Principal,
    TenantDb(db): TenantDb,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<(
    axum::Extension<crate::http::audit::ForgetUser>,
    Json<UserView>,
)> {
    refuse_keys(&principal)?;
    let new_role = patch.role.as_deref().map(parse_role).transpose()?;
    if new_role.is_some_and(|r| r > principal.role) {
        return Err(outranked("granting this role"));
    }
    let email = patch
        .email
        .as_deref()
        .map(|e| optional_email("email", Some(e)))
        .transpose()?;
    // Hashed before the transaction, so that it is not held open for the hashing.
    let password_hash = match patch.password {
        Some(new_password) => {
            password::check_policy(&new_password)
                .map_err(|m| AppError::validation("password", m))?;
            Some(
                password::hash_blocking(new_password)
                    .await
                    .map_err(AppError::internal)?,
            )
        }
        None => None,
    };

    let txn = crate::db::begin_write(&db).await?;
    lock_for_change(&txn, id).await?;
    let existing = user::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or_else(not_found)?;
    let current_role = parse_role(&existing.role)?;
    // Users change themselves; otherwise only a higher role (or an owner, who
    // manages owners) changes a user: an admin cannot take over another admin.
    let is_self = principal.kind == ActorKind::User && principal.id == Some(id);
    if !(is_self || principal.role > current_role || principal.role == Role::Owner) {
        return Err(outranked("changing this user"));
    }
    let stays_owner = new_role.unwrap_or(current_role) == Role::Owner
        && patch.is_active.unwrap_or(existing.is_active);
    if current_role == Role::Owner
        && existing.is_active
        && !stays_owner
        && users::other_active_owners(&txn, id).await? == 0
    {
        return Err(AppError::Conflict(
            "the tenant's last active owner cannot be demoted or deactivated".into(),
        ));
    }
    let mut model: user::ActiveModel = existing.into();
    if let Some(email) = email {
        model.email = Set(email);
    }
    if let Some(role) = new_role {
        model.role = Set(role.as_str().into());
    }
    if let Some(active) = patch.is_active {
        model.is_active = Set(active);
    }
    if let Some(hash) = password_hash {
        model.password_hash = Set(hash);
    }
    model.updated_at = Set(Utc::now());
    let updated = model.update(&txn).await?;
    txn.commit().await?;
    // Its tokens carry the new role, or stop working, from the next request on:
    // forgotten now and, by the audit layer, again once the change has committed.
    state.auth.forget_user(&tenant.config.id, id).await;
    Ok((
        axum::Extension(crate::http::audit::ForgetUser(id)),
        Json(updated.into()),
    ))
}

/// Takes the locks a change of user `id` needs before anything is read, so that two
/// changes at once queue instead of racing past the last-owner check. SQLite holds
/// the write lock from `begin_write` on; PostgreSQL locks the owners' rows and the
/// user's, in id order so that two such changes cannot deadlock.
async fn lock_for_change(txn: &impl ConnectionTrait, id: uuid::Uuid) -> Result<()> {
    if txn.get_database_backend() != DbBackend::Sqlite {
        user::Entity::find()
            .filter(
                Condition::any()
                    .add(user::Column::Role.eq(Role::Owner.as_str()))
                    .add(user::Column::Id.eq(id)),
            )
            .order_by_asc(user::Column::Id)
            .lock_exclusive()
            .all(txn)
            .await?;
    }
    Ok(())
}
