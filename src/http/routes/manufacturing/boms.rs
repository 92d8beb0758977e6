//! `/api/manufacturing/boms` (feature `bom_management`): bills of materials, the
//! materials and quantities one unit of a product consumes.

use std::collections::HashSet;

use axum::{http::StatusCode, routing::get};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    entities::{bom, bom_item, material},
    error::{AppError, Result},
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::RouteSet,
    http::routes::pagination::{Page, PageQuery},
    http::routes::records::{delete_or_404, find_live, live, not_found},
    tenant::Feature,
    validate::{self, required_text},
};

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route("/api/manufacturing/boms", get(list).post(create))
            .route("/api/manufacturing/boms/{id}", get(show).delete(remove)),
        Feature::BomManagement,
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BomInput {
    name: String,
    items: Vec<ItemInput>,
}

#[derive(Debug, Deserialize, Serialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemInput {
    material_id: Uuid,
    quantity: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BomView {
    id: Uuid,
    name: String,
    items: Vec<ItemInput>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

/// A live (not deleted) BOM with its items.
pub(crate) async fn load(
    db: &impl sea_orm::ConnectionTrait,
    id: Uuid,
) -> Result<Option<(bom::Model, Vec<bom_item::Model>)>> {
    let Some(header) = find_live::<bom::Entity>(db, id).await? else {
        return Ok(None);
    };
    let items = bom_item::Entity::find()
        .filter(bom_item::Column::BomId.eq(id))
        .order_by_asc(bom_item::Column::Id)
        .all(db)
        .await?;
    Ok(Some((header, items)))
}

fn view(header: bom::Model, items: Vec<bom_item::Model>) -> BomView {
    BomView {
        id: header.id,
        name: header.name,
        items: items
            .into_iter()
            .map(|i| ItemInput {
                material_id: i.material_id,
                quantity: i.quantity,
            })
            .collect(),
        created_at: header.created_at,
        updated_at: header.updated_at,
    }
}

#[utoipa::path(get, path = "/api/manufacturing/boms", tag = "manufacturing", params(PageQuery),
    responses((status = 200, description = "The bills of materials", body = Page<BomView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<BomView>>> {
    let page = query.checked()?;
    let headers = live::<bom::Entity>()
        .order_by_desc(bom::Column::CreatedAt)
        .order_by_desc(bom::Column::Id)
        .limit(page.fetch())
        .offset(page.offset)
        .all(&db)
        .await?;
    let mut rows = Vec::with_capacity(headers.len());
    for header in headers {
        let items = bom_item::Entity::find()
            .filter(bom_item::Column::BomId.eq(header.id))
            .order_by_asc(bom_item::Column::Id)
            .all(&db)
            .await?;
        rows.push((header, items));
    }
    Ok(Json(Page::from_rows(rows, page, |(h, i)| view(h, i))))
}

async fn check_items(db: &impl ConnectionTrait, items: &[ItemInput]) -> Result<()> {
    if items.is_empty() {
        return Err(AppError::validation(
            "items",
            "a bill of materials needs at least one item",
        ));
    }
    let mut seen = HashSet::new();
    for (n, item) in items.iter().enumerate() {
        let field = format!("items[{n}]");
        crate::validate::quantity(&format!("{field}.quantity"), item.quantity, 1e12)?;
        if !seen.insert(item.material_id) {
            return Err(AppError::validation(
                format!("{field}.material_id"),
                "this material is listed twice",
            ));
        }
        let exists = material::Entity::find_by_id(item.material_id)
            .filter(material::Column::DeletedAt.is_null())
            .count(db)
            .await?
            > 0;
        if !exists {
            return Err(AppError::validation(
                format!("{field}.material_id"),
                "no material with that id",
            ));
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/manufacturing/boms", tag = "manufacturing", request_body = BomInput,
    responses((status = 201, description = "Created", body = BomView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<BomInput>,
) -> Result<(StatusCode, Json<BomView>)> {
    let name = required_text("name", &input.name, 200)?;
    check_items(&db, &input.items).await?;
    let now = Utc::now();
    let id = Uuid::new_v4();
    let txn = crate::db::begin_write(&db).await?;
    bom::ActiveModel {
        id: Set(id),
        name: Set(name),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&txn)
    .await?;
    // Items are read back in the order of their ids: drawn in ascending order,
    // they keep the order the client gave.
    let mut item_ids: Vec<Uuid> = input.items.iter().map(|_| Uuid::new_v4()).collect();
    item_ids.sort_unstable();
    let items = input.items.iter().zip(item_ids);
    bom_item::Entity::insert_many(items.map(|(item, item_id)| bom_item::ActiveModel {
        id: Set(item_id),
        bom_id: Set(id),
        material_id: Set(item.material_id),
        quantity: Set(validate::from_millionths(validate::to_millionths(
            item.quantity,
        ))),
    }))
    .exec(&txn)
    .await?;
    txn.commit().await?;
    let (header, items) = load(&db, id).await?.ok_or_else(not_found::<bom::Entity>)?;
    Ok((StatusCode::CREATED, Json(view(header, items))))
}

#[utoipa::path(get, path = "/api/manufacturing/boms/{id}", tag = "manufacturing", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The bill of materials", body = BomView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<BomView>> {
    let (header, items) = load(&db, id).await?.ok_or_else(not_found::<bom::Entity>)?;
    Ok(Json(view(header, items)))
}

#[utoipa::path(delete, path = "/api/manufacturing/boms/{id}", tag = "manufacturing", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<bom::Entity>(&db, id).await
}
