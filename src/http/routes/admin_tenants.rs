//! `/api/admin/tenants…` (admin token): provisioning, changes, removal and
//! migrations of tenants, without a restart.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use migration::{Migrator, MigratorTrait};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::{
    audit,
    auth::users::{NewUser, UserView},
    error::{AppError, Result},
    http::AppState,
    http::extract::{ApiJson, ApiQuery, StrictJson, TenantPath},
    http::json::Json,
    http::request_span::RequestId,
    http::routes::tenants::{tenant_from_path, tenant_view},
    lifecycle::Lifecycle,
};

pub fn router() -> Router<AppState> {
    Router::new()
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

/// Runs `work` on the lifecycle in a task of its own and waits for it: a request
/// cut short (its deadline, a client that hangs up) must not stop a change of
/// several steps half way, which would leave a provisioning claimed by a live
/// process and its id stuck. The change runs to its end (or undoes itself), and
/// can be read back.
async fn to_the_end<T, F>(state: &AppState, work: impl FnOnce(Arc<Lifecycle>) -> F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let lifecycle = state.lifecycle.clone().ok_or_else(|| {
        AppError::NotFound("tenant management is off in single-tenant mode".into())
    })?;
    let task = work(lifecycle).instrument(tracing::Span::current());
    tokio::spawn(task)
        .await
        .map_err(|e| AppError::internal(format!("tenant change failed: {e}")))?
}

fn lifecycle(state: &AppState) -> Result<&Lifecycle> {
    state
        .lifecycle
        .as_deref()
        .ok_or_else(|| AppError::NotFound("tenant management is off in single-tenant mode".into()))
}

#[utoipa::path(post, path = "/api/admin/tenants", tag = "tenants", request_body = Object,
    responses((status = 201, description = "Provisioned", body = Object)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(StrictJson(body)): ApiJson<StrictJson>,
) -> Result<(StatusCode, Json<Value>)> {
    let tenant = to_the_end(&state, |lifecycle| async move {
        lifecycle.provision(body).await
    })
    .await?;
    state.auth.forget_tenant(&tenant.id);
    Ok((StatusCode::CREATED, Json(tenant_view(&state, &tenant))))
}

#[utoipa::path(patch, path = "/api/admin/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "The tenant id")), request_body = Object,
    responses((status = 200, description = "Changed", body = Object)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiJson(StrictJson(body)): ApiJson<StrictJson>,
) -> Result<Json<Value>> {
    let tenant = lifecycle(&state)?.update(id.as_str(), body).await?;
    Ok(Json(tenant_view(&state, &tenant)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RemoveQuery {
    #[serde(default)]
    drop_database: bool,
}

#[utoipa::path(delete, path = "/api/admin/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "The tenant id"), RemoveQuery),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<StatusCode> {
    let drop_database = query.drop_database;
    let removed = id.clone();
    to_the_end(&state, move |lifecycle| async move {
        lifecycle.deprovision(removed.as_str(), drop_database).await
    })
    .await?;
    state.auth.forget_tenant(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Provisionings that have not finished: under way, or cut short by a crash
/// (`abandoned`), which start-up rolls back and an operator may roll back here.
#[utoipa::path(get, path = "/api/admin/provisionings", tag = "tenants",
    responses((status = 200, description = "Unfinished provisionings", body = Object)))]
pub(crate) async fn unfinished(State(state): State<AppState>) -> Result<Json<Value>> {
    let rows = lifecycle(&state)?.unfinished().await?;
    Ok(Json(json!({ "provisionings": rows })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AbandonQuery {
    #[serde(default)]
    force: bool,
}

/// Rolls back an unfinished provisioning: drops the storage it made and frees the
/// id. 409 while its process is alive, unless `?force=true`.
#[utoipa::path(delete, path = "/api/admin/provisionings/{id}", tag = "tenants", params(("id" = String, Path, description = "The tenant id"), AbandonQuery),
    responses((status = 204, description = "Rolled back")))]
pub(crate) async fn abandon(
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

#[utoipa::path(post, path = "/api/admin/tenants/{id}/migrate", tag = "tenants", params(("id" = String, Path, description = "The tenant id")),
    responses((status = 200, description = "Migrated", body = Object)))]
pub(crate) async fn migrate(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>> {
    let tenant = tenant_from_path(&state, &id)?;
    let (applied, migrations) = state
        .registry
        .with_own_connection(&tenant, async |db| {
            let pending_before = Migrator::get_pending_migrations(db).await?.len();
            crate::db::migrate(db, &tenant).await?;
            Ok((pending_before, migration_list(db).await?))
        })
        .await?;
    crate::registry::RegistryEvents::migrations_pending(&*state.metrics, &tenant.id, 0);
    Ok(Json(json!({
        "tenant_id": tenant.id,
        "applied": applied,
        "migrations": migrations,
    })))
}

#[utoipa::path(get, path = "/api/admin/tenants/{id}/migrations", tag = "tenants", params(("id" = String, Path, description = "The tenant id")),
    responses((status = 200, description = "Applied and pending migrations", body = Object)))]
pub(crate) async fn migrations(
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
#[utoipa::path(post, path = "/api/admin/tenants/{id}/users", tag = "tenants", params(("id" = String, Path, description = "The tenant id")), request_body = NewUser,
    responses((status = 201, description = "Created", body = UserView)))]
pub(crate) async fn create_user(
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
