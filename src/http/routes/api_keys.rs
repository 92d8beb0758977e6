//! `/api/api-keys` (admins and owners): keys for service-to-service calls, scoped to
//! the tenant and a role no higher than their creator's. The key is shown once, at
//! creation; only its hash is stored. Revoking is immediate.

use axum::{http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    auth::{ActorKind, Principal, Role, api_key, users::parse_role},
    entities::api_key as row,
    error::{AppError, Result},
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::identify::TenantContext,
    http::json::Json,
    http::routes::{
        RouteSet, for_role,
        pagination::{Page, PageQuery},
    },
    validate::required_text,
};

pub fn router() -> RouteSet {
    for_role(
        RouteSet::new()
            .route("/api/api-keys", get(list).post(create))
            .route("/api/api-keys/{id}", get(show).delete(revoke)),
        Role::Admin,
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyView {
    id: Uuid,
    name: String,
    role: String,
    created_by: Option<Uuid>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    last_used_at: Option<chrono::DateTime<Utc>>,
    revoked_at: Option<chrono::DateTime<Utc>>,
}

impl From<row::Model> for KeyView {
    fn from(m: row::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            role: m.role,
            created_by: m.created_by,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyInput {
    name: String,
    #[serde(default = "staff")]
    role: String,
}

fn staff() -> String {
    Role::Staff.as_str().into()
}

#[utoipa::path(get, path = "/api/api-keys", tag = "api-keys", params(PageQuery),
    responses((status = 200, description = "The API keys (never the keys themselves)", body = Page<KeyView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<KeyView>>> {
    let page = query.checked()?;
    let rows = row::Entity::find()
        .order_by_desc(row::Column::CreatedAt)
        .order_by_desc(row::Column::Id)
        .limit(page.fetch())
        .offset(page.offset)
        .all(&db)
        .await?;
    Ok(Json(Page::from_rows(rows, page, KeyView::from)))
}

#[utoipa::path(post, path = "/api/api-keys", tag = "api-keys", request_body = KeyInput,
    responses((status = 201, description = "Created; the only answer that holds the key", body = Object)))]
pub(crate) async fn create(
    tenant: TenantContext,
    principal: Principal,
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<KeyInput>,
) -> Result<(StatusCode, Json<Value>)> {
    if principal.kind == ActorKind::ApiKey {
        // Keys come from people: a leaked key must not be able to mint more.
        return Err(AppError::Forbidden(
            "API keys are created by users, not by keys".into(),
        ));
    }
    let name = required_text("name", &input.name, 100)?;
    let role = parse_role(&input.role)?;
    if role > principal.role {
        return Err(AppError::Forbidden(
            "a key's role cannot be higher than its creator's".into(),
        ));
    }
    let new = api_key::generate(&tenant.config.id);
    let model = row::ActiveModel {
        id: Set(new.id),
        name: Set(name),
        role: Set(role.as_str().into()),
        secret_hash: Set(new.secret_hash),
        created_by: Set(principal.id.filter(|_| principal.kind == ActorKind::User)),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(&db)
    .await?;
    let mut body = serde_json::to_value(KeyView::from(model)).map_err(AppError::internal)?;
    // The only time the key is shown.
    body["key"] = json!(new.key);
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/api/api-keys/{id}", tag = "api-keys", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The API key", body = KeyView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<KeyView>> {
    let model = row::Entity::find_by_id(id)
        .one(&db)
        .await?
        .ok_or_else(|| AppError::NotFound("no API key with that id".into()))?;
    Ok(Json(model.into()))
}

#[utoipa::path(delete, path = "/api/api-keys/{id}", tag = "api-keys", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke(
    IdPath(id): IdPath,
    principal: Principal,
    TenantDb(db): TenantDb,
) -> Result<StatusCode> {
    let key = row::Entity::find_by_id(id)
        .one(&db)
        .await?
        .ok_or_else(|| AppError::NotFound("no live API key with that id".into()))?;
    if parse_role(&key.role)? > principal.role {
        return Err(AppError::Forbidden(
            "revoking this key needs a role at least as high as the key's".into(),
        ));
    }
    let result = row::Entity::update_many()
        .col_expr(row::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(row::Column::Id.eq(id))
        .filter(row::Column::RevokedAt.is_null())
        .exec(&db)
        .await?;
    if result.rows_affected == 0 {
        return Err(AppError::NotFound("no live API key with that id".into()));
    }
    Ok(StatusCode::NO_CONTENT)
}
