//! `/api/admin/tenants…` (admin token): provisioning, changes, removal and
//! migrations of tenants, without a restart.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use migration::{Migrator, MigratorTrait};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    audit,
    auth::users::{NewUser, UserView},
    error::{AppError, Result},
    http::AppState,
    http::extract::{ApiJson, ApiQuery, TenantPath},
    http::request_span::RequestId,
    http::routes::tenants::{tenant_from_path, tenant_view},
    lifecycle::Lifecycle,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/tenants", post(create))
        .route(
            "/api/admin/tenants/{id}",
            axum::routing::patch(update).delete(remove),
        )
        .route("/api/admin/tenants/{id}/migrate", post(migrate))
        .route("/api/admin/tenants/{id}/migrations", get(migrations))
        .route("/api/admin/tenants/{id}/users", post(create_user))
        .route("/api/admin/provisionings", get(unfinished))
        .route(
            "/api/admin/provisionings/{id}",
            axum::routing::delete(abandon),
        )
}

fn lifecycle(state: &AppState) -> Result<&Lifecycle> {
    state
        .lifecycle
        .as_deref()
        .ok_or_else(|| AppError::NotFound("tenant management is off in single-tenant mode".into()))
}

async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let tenant = lifecycle(&state)?.provision(body).await?;
    state.auth.forget_tenant(&tenant.id);
    Ok((StatusCode::CREATED, Json(tenant_view(&state, &tenant))))
}

async fn update(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>> {
    let tenant = lifecycle(&state)?.update(id.as_str(), body).await?;
    Ok(Json(tenant_view(&state, &tenant)))
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    drop_database: bool,
}

async fn remove(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<StatusCode> {
    lifecycle(&state)?
        .deprovision(id.as_str(), query.drop_database)
        .await?;
    state.auth.forget_tenant(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Provisionings that have not finished: under way, or cut short by a crash
/// (`abandoned`), which start-up rolls back and an operator may roll back here.
async fn unfinished(State(state): State<AppState>) -> Result<Json<Value>> {
    let rows = lifecycle(&state)?.unfinished().await?;
    Ok(Json(json!({ "provisionings": rows })))
}

#[derive(Debug, Deserialize)]
struct AbandonQuery {
    #[serde(default)]
    force: bool,
}

/// Rolls back an unfinished provisioning: drops the storage it made and frees the
/// id. 409 while its process is alive, unless `?force=true`.
async fn abandon(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiQuery(query): ApiQuery<AbandonQuery>,
) -> Result<StatusCode> {
    lifecycle(&state)?.abandon(id.as_str(), query.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Each migration of the tenant's database with its status.
async fn migration_list(db: &sea_orm::DatabaseConnection) -> Result<Vec<Value>, sea_orm::DbErr> {
    let list = Migrator::get_migration_with_status(db).await?;
    Ok(list
        .iter()
        .map(|m| json!({ "name": m.name(), "status": m.status().to_string().to_lowercase() }))
        .collect())
}

async fn migrate(State(state): State<AppState>, TenantPath(id): TenantPath) -> Result<Json<Value>> {
    let tenant = tenant_from_path(&state, &id)?;
    let (applied, migrations) = state
        .registry
        .with_own_connection(&tenant, async |db| {
            let pending_before = Migrator::get_pending_migrations(db).await?.len();
            crate::db::migrate(db, &tenant).await?;
            Ok((pending_before, migration_list(db).await?))
        })
        .await?;
    Ok(Json(json!({
        "tenant_id": tenant.id,
        "applied": applied,
        "migrations": migrations,
    })))
}

async fn migrations(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>> {
    let tenant = tenant_from_path(&state, &id)?;
    let migrations = state
        .registry
        .with_own_connection(&tenant, async |db| migration_list(db).await)
        .await?;
    Ok(Json(
        json!({ "tenant_id": tenant.id, "migrations": migrations }),
    ))
}

/// Adds a user (any role) to a tenant: how an operator gives a tenant from the
/// tenants file its first owner. Audited as the operator.
async fn create_user(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    request_id: RequestId,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>)> {
    let tenant = tenant_from_path(&state, &id)?;
    let db = state.registry.connect(&tenant).await?;
    let user = audit::create_user_as_operator(&db, new, &request_id.0).await?;
    tracing::info!(tenant_id = %tenant.id, username = %user.username, role = %user.role, "user added by the operator");
    Ok((StatusCode::CREATED, Json(user.into())))
}
