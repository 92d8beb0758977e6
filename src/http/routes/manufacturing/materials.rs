//! `/api/manufacturing/materials` (feature `material_management`).

use axum::{http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde::{Deserialize, Serialize};

use crate::{
    entities::material::{self, Entity as Material},
    error::Result,
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::RouteSet,
    http::routes::pagination::{Page, PageQuery},
    http::routes::records::{delete_or_404, live_or_404, live_page},
    tenant::Feature,
    validate::{non_negative, required_text},
};

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route("/api/manufacturing/materials", get(list).post(create))
            .route(
                "/api/manufacturing/materials/{id}",
                get(show).delete(remove),
            ),
        Feature::MaterialManagement,
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaterialInput {
    name: String,
    unit: String,
    #[serde(default)]
    stock: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MaterialView {
    id: uuid::Uuid,
    name: String,
    unit: String,
    stock: f64,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<material::Model> for MaterialView {
    fn from(m: material::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            unit: m.unit,
            stock: m.stock,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/manufacturing/materials", tag = "manufacturing", params(PageQuery),
    responses((status = 200, description = "The materials", body = Page<MaterialView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<MaterialView>>> {
    let page = query.checked()?;
    let rows = live_page::<Material>(page, &db).await?;
    Ok(Json(Page::from_rows(rows, page, MaterialView::from)))
}

#[utoipa::path(post, path = "/api/manufacturing/materials", tag = "manufacturing", request_body = MaterialInput,
    responses((status = 201, description = "Created", body = MaterialView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<MaterialInput>,
) -> Result<(StatusCode, Json<MaterialView>)> {
    let name = required_text("name", &input.name, 200)?;
    let unit = required_text("unit", &input.unit, 20)?;
    let stock = non_negative("stock", input.stock)?;
    let now = Utc::now();
    let model = material::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set(name),
        unit: Set(unit),
        stock: Set(stock),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

#[utoipa::path(get, path = "/api/manufacturing/materials/{id}", tag = "manufacturing", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The material", body = MaterialView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<MaterialView>> {
    let model = live_or_404::<Material>(&db, id).await?;
    Ok(Json(model.into()))
}

#[utoipa::path(delete, path = "/api/manufacturing/materials/{id}", tag = "manufacturing", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<material::Entity>(&db, id).await
}
