//! `/api/data/…`: a tenant's data as a whole. `GET /api/data/status` counts the
//! live rows of each table (a report: managers and up); `POST /api/data/reset`
//! (admins and owners) clears the tenant's business data and, for a demo tenant,
//! seeds it again.

use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::{
    auth::Role,
    demo,
    error::Result,
    http::extract::TenantDb,
    http::identify::TenantContext,
    http::json::Json,
    http::routes::{RouteSet, for_role},
};

pub fn router() -> RouteSet {
    for_role(
        RouteSet::new().route("/api/data/status", get(status)),
        Role::Manager,
    )
    .merge(for_role(
        RouteSet::new().route("/api/data/reset", post(reset)),
        Role::Admin,
    ))
}

#[utoipa::path(get, path = "/api/data/status", tag = "data",
    responses((status = 200, description = "What the tenant holds", body = Object)))]
pub(crate) async fn status(tenant: TenantContext, TenantDb(db): TenantDb) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "tenant_id": tenant.config.id, "tables": demo::status(&db).await? }),
    ))
}

#[utoipa::path(post, path = "/api/data/reset", tag = "data",
    responses((status = 200, description = "The demo data, seeded again", body = Object)))]
pub(crate) async fn reset(tenant: TenantContext, TenantDb(db): TenantDb) -> Result<Json<Value>> {
    let txn = crate::db::begin_write(&db).await?;
    demo::clear(&txn).await?;
    txn.commit().await?;
    if tenant.config.demo {
        demo::seed(&db, &tenant.config).await?;
    }
    tracing::info!(reseeded = tenant.config.demo, "tenant data reset");
    Ok(Json(json!({
        "tenant_id": tenant.config.id,
        "reseeded": tenant.config.demo,
        "tables": demo::status(&db).await?,
    })))
}
