//! `/api/dental/supplies` (feature `dental_supplies`).

use axum::{http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, QueryFilter,
    sea_query::ExprTrait,
};
use serde::{Deserialize, Serialize};

use crate::{
    entities::dental_supply::{self, Entity as DentalSupply},
    error::Result,
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::RouteSet,
    http::routes::pagination::{Page, PageQuery},
    http::routes::records::{delete_or_404, live, live_or_404, newest_first},
    tenant::Feature,
    validate::{non_negative, required_text},
};

/// Longest name and unit; the widths of their columns.
const MAX_NAME: usize = 200;
const MAX_UNIT: usize = 20;

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route("/api/dental/supplies", get(list).post(create))
            .route(
                "/api/dental/supplies/{id}",
                get(show).patch(update).delete(remove),
            ),
        Feature::DentalSupplies,
    )
}

/// The list filters. Read by its own extractor next to [`PageQuery`]: a flattened
/// struct would hand serde_urlencoded's numbers over as strings and break `limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SupplyFilter {
    /// `true`: only supplies at or below their reorder level; `false`: only those
    /// above it; absent: all.
    low_stock: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SupplyInput {
    name: String,
    unit: String,
    #[serde(default)]
    stock: f64,
    #[serde(default)]
    reorder_level: f64,
}

/// A PATCH body: absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SupplyChange {
    name: Option<String>,
    unit: Option<String>,
    stock: Option<f64>,
    reorder_level: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SupplyView {
    id: uuid::Uuid,
    name: String,
    unit: String,
    stock: f64,
    reorder_level: f64,
    /// Whether the stock is at or below the reorder level, as `low_stock` filters.
    low_stock: bool,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<dental_supply::Model> for SupplyView {
    fn from(m: dental_supply::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            unit: m.unit,
            stock: m.stock,
            reorder_level: m.reorder_level,
            low_stock: m.stock <= m.reorder_level,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/dental/supplies", tag = "dental", params(PageQuery, SupplyFilter),
    responses((status = 200, description = "The supplies; ?low_stock=true: at or under their reorder level", body = Page<SupplyView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<SupplyFilter>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<SupplyView>>> {
    let page = query.checked()?;
    let mut select = live::<DentalSupply>();
    if let Some(low) = filter.low_stock {
        // Compared in the database, column to column, so that pagination counts
        // only the matching rows.
        let stock = dental_supply::Column::Stock.into_expr();
        let level = dental_supply::Column::ReorderLevel.into_expr();
        select = select.filter(if low {
            stock.lte(level)
        } else {
            stock.gt(level)
        });
    }
    let rows = newest_first(select, page, &db).await?;
    Ok(Json(Page::from_rows(rows, page, SupplyView::from)))
}

#[utoipa::path(post, path = "/api/dental/supplies", tag = "dental", request_body = SupplyInput,
    responses((status = 201, description = "Created", body = SupplyView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<SupplyInput>,
) -> Result<(StatusCode, Json<SupplyView>)> {
    let name = required_text("name", &input.name, MAX_NAME)?;
    let unit = required_text("unit", &input.unit, MAX_UNIT)?;
    let stock = non_negative("stock", input.stock)?;
    let reorder_level = non_negative("reorder_level", input.reorder_level)?;
    let now = Utc::now();
    let model = dental_supply::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set(name),
        unit: Set(unit),
        stock: Set(stock),
        reorder_level: Set(reorder_level),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

/// The supply with `id`, unless it is soft-deleted.
async fn live_supply(db: &impl ConnectionTrait, id: uuid::Uuid) -> Result<dental_supply::Model> {
    live_or_404::<DentalSupply>(db, id).await
}

#[utoipa::path(get, path = "/api/dental/supplies/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The supply", body = SupplyView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<SupplyView>> {
    Ok(Json(live_supply(&db, id).await?.into()))
}

#[utoipa::path(patch, path = "/api/dental/supplies/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")), request_body = SupplyChange,
    responses((status = 200, description = "Changed", body = SupplyView)))]
pub(crate) async fn update(
    IdPath(id): IdPath,
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<SupplyChange>,
) -> Result<Json<SupplyView>> {
    // Validate the whole body before touching the row, so that a bad field
    // changes nothing.
    let name = input
        .name
        .as_deref()
        .map(|n| required_text("name", n, MAX_NAME))
        .transpose()?;
    let unit = input
        .unit
        .as_deref()
        .map(|u| required_text("unit", u, MAX_UNIT))
        .transpose()?;
    let stock = input.stock.map(|s| non_negative("stock", s)).transpose()?;
    let reorder_level = input
        .reorder_level
        .map(|r| non_negative("reorder_level", r))
        .transpose()?;
    let existing = live_supply(&db, id).await?;
    let mut model: dental_supply::ActiveModel = existing.into();
    if let Some(name) = name {
        model.name = Set(name);
    }
    if let Some(unit) = unit {
        model.unit = Set(unit);
    }
    if let Some(stock) = stock {
        model.stock = Set(stock);
    }
    if let Some(reorder_level) = reorder_level {
        model.reorder_level = Set(reorder_level);
    }
    model.updated_at = Set(Utc::now());
    Ok(Json(model.update(&db).await?.into()))
}

#[utoipa::path(delete, path = "/api/dental/supplies/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<dental_supply::Entity>(&db, id).await
}
