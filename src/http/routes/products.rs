//! `/api/products`: the common catalogue, stored in the tenant's own database.

use axum::{Json, http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

use super::pagination::{Page, PageQuery};
use crate::{
    entities::product::{self, Entity as Product},
    error::{AppError, Result},
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::routes::RouteSet,
    http::routes::soft_delete::{find_live, live, soft_delete},
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

fn not_found() -> AppError {
    AppError::NotFound("no product with that id".into())
}

async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<ProductView>>> {
    let page = query.checked()?;
    let rows = live::<Product>()
        .order_by_desc(product::Column::CreatedAt)
        .order_by_desc(product::Column::Id)
        .limit(page.fetch())
        .offset(page.offset)
        .all(&db)
        .await?;
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
    let model = find_live::<Product>(&db, id).await?.ok_or_else(not_found)?;
    Ok(Json(model.into()))
}

async fn update(
    IdPath(id): IdPath,
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Json<ProductView>> {
    let name = required_text("name", &input.name, 200)?;
    let price_cents = money_to_cents("price", input.price)?;
    let existing = find_live::<Product>(&db, id).await?.ok_or_else(not_found)?;
    let mut model: product::ActiveModel = existing.into();
    model.name = Set(name);
    model.price_cents = Set(price_cents);
    model.updated_at = Set(Utc::now());
    Ok(Json(model.update(&db).await?.into()))
}

async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    if !soft_delete::<product::Entity>(&db, id).await? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
