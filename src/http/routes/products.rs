//! `/api/products`: the common catalogue, stored in the tenant's own database.

use axum::{Json, http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde::{Deserialize, Serialize};

use super::pagination::{Page, PageQuery};
use crate::{
    entities::product::{self, Entity as Product},
    error::Result,
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::routes::RouteSet,
    http::routes::records::{delete_or_404, live, live_or_404, newest_first},
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductInput {
    name: String,
    price: f64,
}

#[derive(Debug, Serialize)]
struct ProductView {
    id: uuid::Uuid,
    name: String,
    price: f64,
    created_at: chrono::DateTime<Utc>,
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

async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<ProductView>>> {
    let page = query.checked()?;
    let rows = newest_first(live::<Product>(), page, &db).await?;
    Ok(Json(Page::from_rows(rows, page, ProductView::from)))
}

async fn create(
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

async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<ProductView>> {
    let model = live_or_404::<Product>(&db, id).await?;
    Ok(Json(model.into()))
}

async fn update(
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

async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<product::Entity>(&db, id).await
}
