//! `/api/manufacturing/production-orders` (feature `production_tracking`): orders
//! that go planned → in_progress → done. Completing an order consumes its bill of
//! materials times its quantity from material stock, all or nothing, and is refused
//! (409) when any material is short.

use axum::{
    http::StatusCode,
    routing::{get, post},
};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    entities::{material, production_order as order},
    error::{AppError, Result},
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::RouteSet,
    http::routes::records::{live, live_or_404, newest_first},
    http::routes::{manufacturing::boms, pagination::PageQuery},
    tenant::Feature,
    validate,
};

const PLANNED: &str = "planned";
const IN_PROGRESS: &str = "in_progress";
const DONE: &str = "done";

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route(
                "/api/manufacturing/production-orders",
                get(list).post(create),
            )
            .route("/api/manufacturing/production-orders/{id}", get(show))
            .route(
                "/api/manufacturing/production-orders/{id}/start",
                post(start),
            )
            .route(
                "/api/manufacturing/production-orders/{id}/complete",
                post(complete),
            ),
        Feature::ProductionTracking,
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderInput {
    bom_id: Uuid,
    quantity: f64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    limit: Option<u64>,
    offset: Option<u64>,
    status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OrderView {
    id: Uuid,
    bom_id: Uuid,
    quantity: f64,
    status: String,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<order::Model> for OrderView {
    fn from(m: order::Model) -> Self {
        Self {
            id: m.id,
            bom_id: m.bom_id,
            quantity: m.quantity,
            status: m.status,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/manufacturing/production-orders", tag = "manufacturing", params(ListQuery),
    responses((status = 200, description = "The production orders, filtered by status", body = crate::http::routes::pagination::Page<OrderView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<ListQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<crate::http::routes::pagination::Page<OrderView>>> {
    let page = PageQuery {
        limit: query.limit,
        offset: query.offset,
    }
    .checked()?;
    let mut select = live::<order::Entity>();
    if let Some(status) = &query.status {
        if ![PLANNED, IN_PROGRESS, DONE].contains(&status.as_str()) {
            return Err(AppError::validation(
                "status",
                "status is planned, in_progress or done",
            ));
        }
        select = select.filter(order::Column::Status.eq(status.as_str()));
    }
    let rows = newest_first(select, page, &db).await?;
    Ok(Json(crate::http::routes::pagination::Page::from_rows(
        rows,
        page,
        OrderView::from,
    )))
}

#[utoipa::path(post, path = "/api/manufacturing/production-orders", tag = "manufacturing", request_body = OrderInput,
    responses((status = 201, description = "Planned", body = OrderView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<OrderInput>,
) -> Result<(StatusCode, Json<OrderView>)> {
    let quantity = crate::validate::quantity("quantity", input.quantity, 1e9)?;
    if boms::load(&db, input.bom_id).await?.is_none() {
        return Err(AppError::validation(
            "bom_id",
            "no bill of materials with that id",
        ));
    }
    let now = Utc::now();
    let model = order::ActiveModel {
        id: Set(Uuid::new_v4()),
        bom_id: Set(input.bom_id),
        quantity: Set(quantity),
        status: Set(PLANNED.into()),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

async fn find(db: &impl sea_orm::ConnectionTrait, id: Uuid) -> Result<order::Model> {
    live_or_404::<order::Entity>(db, id).await
}

#[utoipa::path(get, path = "/api/manufacturing/production-orders/{id}", tag = "manufacturing", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The order", body = OrderView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<OrderView>> {
    Ok(Json(find(&db, id).await?.into()))
}

/// Moves the order from `from` to `to` if it is still in `from` (a conditional
/// update, so two requests racing cannot both succeed).
async fn transition(
    db: &impl sea_orm::ConnectionTrait,
    id: Uuid,
    from: &str,
    to: &str,
) -> Result<()> {
    let updated = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(to))
        .col_expr(order::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(order::Column::Id.eq(id))
        .filter(order::Column::Status.eq(from))
        .filter(order::Column::DeletedAt.is_null())
        .exec(db)
        .await?;
    if updated.rows_affected == 1 {
        return Ok(());
    }
    let current = find(db, id).await?;
    Err(AppError::Conflict(format!(
        "the order is {}; only a {from} order can become {to}",
        current.status
    )))
}

#[utoipa::path(post, path = "/api/manufacturing/production-orders/{id}/start", tag = "manufacturing", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "Started (planned → in_progress)", body = OrderView),
        (status = 409, description = "The order is not planned (`conflict`)", body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn start(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<OrderView>> {
    transition(&db, id, PLANNED, IN_PROGRESS).await?;
    Ok(Json(find(&db, id).await?.into()))
}

/// Consumes the BOM's materials and marks the order done, in one transaction: a
/// short material refuses the whole completion and consumes nothing.
#[utoipa::path(post, path = "/api/manufacturing/production-orders/{id}/complete", tag = "manufacturing", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "Completed (in_progress → done), its materials consumed", body = OrderView),
        (status = 409, description = "The order is not in progress, its bill of materials or one of its materials was deleted, or a material is short (`conflict`)", body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn complete(
    IdPath(id): IdPath,
    TenantDb(db): TenantDb,
) -> Result<Json<OrderView>> {
    let txn = crate::db::begin_write(&db).await?;
    let current = find(&txn, id).await?;
    let (_, mut items) = boms::load(&txn, current.bom_id)
        .await?
        .ok_or_else(|| AppError::Conflict("the order's bill of materials was deleted".into()))?;
    // Materials are locked in one order (by id) by every completion, so two
    // completions sharing materials queue instead of deadlocking.
    items.sort_by_key(|item| item.material_id);
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        // The table's write lock first, then the rows: `FOR UPDATE` alone holds a
        // row without it, and a reset taking that lock meanwhile would wait on the
        // row while this waited on the lock (see `demo::clear`).
        txn.execute_unprepared("LOCK TABLE \"materials\" IN ROW EXCLUSIVE MODE")
            .await?;
    }
    for item in &items {
        // The material's row, locked until the commit (`FOR UPDATE`; SQLite's
        // write transaction holds the whole file), counted in millionths.
        let found = material::Entity::find_by_id(item.material_id)
            .filter(material::Column::DeletedAt.is_null())
            .lock_exclusive()
            .one(&txn)
            .await?;
        let needed = validate::needed_millionths(item.quantity, current.quantity);
        let short = match &found {
            None => Some(format!(
                "material {} of the bill of materials was deleted",
                item.material_id
            )),
            Some(m) if validate::to_millionths(m.stock) < needed => Some(format!(
                "not enough of material {}: {} needed, {} in stock",
                item.material_id,
                validate::from_millionths(needed),
                m.stock
            )),
            Some(_) => None,
        };
        if let Some(why) = short {
            txn.rollback().await?;
            return Err(AppError::Conflict(why));
        }
        let left = validate::to_millionths(found.map_or(0.0, |m| m.stock)) - needed;
        material::Entity::update_many()
            .col_expr(
                material::Column::Stock,
                Expr::value(validate::from_millionths(left)),
            )
            .col_expr(material::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(material::Column::Id.eq(item.material_id))
            .exec(&txn)
            .await?;
    }
    transition(&txn, id, IN_PROGRESS, DONE).await?;
    txn.commit().await?;
    Ok(Json(find(&db, id).await?.into()))
}
