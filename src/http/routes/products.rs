//! `/api/products`: the common catalogue, stored in the tenant's own database.

use axum::{http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde::{Deserialize, Serialize};

use super::pagination::{Page, PageQuery};
use crate::{
    entities::product::{self, Entity as Product},
    error::Result,
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::RouteSet,
    http::routes::records::{delete_or_404, live_or_404, live_page},
    tenant::Feature,
    validate::{cents_to_money, money_to_cents, required_text},
};

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route("/api/products", get(list).post(create))
            .route("/api/products/{id}", get(show).put(update).delete(remove)),
        Feature::Products,
    )
}

/// A product to create or replace.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductInput {
    /// 1 to 200 characters.
    name: String,
    /// In the currency's units, two decimals at most, not negative.
    price: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProductView {
    id: uuid::Uuid,
    name: String,
    price: f64,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<product::Model> for ProductView {
    fn from(m: product::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            price: cents_to_money(m.price_cents),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/products", tag = "products", params(PageQuery),
    responses((status = 200, description = "The tenant's products, newest first", body = Page<ProductView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<ProductView>>> {
    let page = query.checked()?;
    let rows = live_page::<Product>(page, &db).await?;
    Ok(Json(Page::from_rows(rows, page, ProductView::from)))
}

#[utoipa::path(post, path = "/api/products", tag = "products", request_body = ProductInput,
    responses((status = 201, description = "Created", body = ProductView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<(StatusCode, Json<ProductView>)> {
    let name = required_text("name", &input.name, 200)?;
    let price_cents = money_to_cents("price", input.price)?;
    let now = Utc::now();
    let model = product::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set(name),
        price_cents: Set(price_cents),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

#[utoipa::path(get, path = "/api/products/{id}", tag = "products", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The product", body = ProductView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<ProductView>> {
    let model = live_or_404::<Product>(&db, id).await?;
    Ok(Json(model.into()))
}

#[utoipa::path(put, path = "/api/products/{id}", tag = "products", params(("id" = uuid::Uuid, Path)),
    request_body = ProductInput,
    responses((status = 200, description = "Replaced", body = ProductView)))]
pub(crate) async fn update(
    IdPath(id): IdPath,
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Json<ProductView>> {
    let name = required_text("name", &input.name, 200)?;
    let price_cents = money_to_cents("price", input.price)?;
    let existing = live_or_404::<Product>(&db, id).await?;
    let mut model: product::ActiveModel = existing.into();
    model.name = Set(name);
    model.price_cents = Set(price_cents);
    model.updated_at = Set(Utc::now());
    Ok(Json(model.update(&db).await?.into()))
}

#[utoipa::path(delete, path = "/api/products/{id}", tag = "products", params(("id" = uuid::Uuid, Path)),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<product::Entity>(&db, id).await
}
