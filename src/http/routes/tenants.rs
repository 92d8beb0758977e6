//! Tenant information: the operator's view (admin token) and the public branding.
//! No answer here ever holds a database URL or any part of one.

use std::time::Instant;

use axum::{Router, extract::State, routing::get};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    error::{AppError, Result},
    http::AppState,
    http::extract::TenantPath,
    http::json::Json,
    registry::PoolStats,
    tenant::{
        Branding, ContactInfo, Domain, FeatureSet, Isolation, PoolOverrides, TenantConfig,
        TenantId, TenantSource,
    },
};

/// Routes that need the admin token (the caller adds the layer).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/api/tenants", get(list))
        .route("/api/tenants/{id}/config", get(config))
        .route("/api/tenants/{id}/health", get(health))
        .route("/api/admin/pools", get(pools))
        .route("/metrics", get(metrics))
}

/// Routes anyone may call.
pub fn public_router() -> Router<AppState> {
    Router::new().route("/api/tenants/{id}/branding", get(branding))
}

/// A tenant as an operator sees it: everything but the database URL.
#[derive(Debug, Serialize)]
struct TenantView<'a> {
    id: &'a TenantId,
    domain: Domain,
    subdomain: &'a str,
    features: FeatureSet,
    branding: &'a Branding,
    gst_number: &'a Option<String>,
    contact_info: &'a ContactInfo,
    is_active: bool,
    pool: PoolOverrides,
    limits: crate::tenant::RequestLimits,
    isolation: Isolation,
    source: TenantSource,
    pool_open: bool,
}

impl<'a> TenantView<'a> {
    fn new(t: &'a TenantConfig, pool_open: bool) -> Self {
        Self {
            id: &t.id,
            domain: t.domain,
            subdomain: &t.subdomain,
            features: t.features,
            branding: &t.branding,
            gst_number: &t.gst_number,
            contact_info: &t.contact_info,
            is_active: t.is_active,
            pool: t.pool,
            limits: t.limits,
            isolation: t.isolation,
            source: t.source,
            pool_open,
        }
    }
}

/// The tenant named in the path (validated by [`TenantPath`]).
pub fn tenant_from_path(state: &AppState, id: &TenantId) -> Result<std::sync::Arc<TenantConfig>> {
    state
        .registry
        .get(id.as_str())
        .ok_or_else(|| AppError::TenantNotFound(id.to_string()))
}

/// The operator's view of one tenant, as JSON.
pub fn tenant_view(state: &AppState, tenant: &TenantConfig) -> Value {
    json!(TenantView::new(tenant, state.registry.is_open(&tenant.id)))
}

#[utoipa::path(get, path = "/api/tenants", tag = "tenants",
    responses((status = 200, description = "Every tenant", body = Object)))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Value> {
    let tenants = state.registry.list();
    let views: Vec<_> = tenants
        .iter()
        .map(|t| TenantView::new(t, state.registry.is_open(&t.id)))
        .collect();
    Json(json!({ "tenants": views }))
}

#[utoipa::path(get, path = "/api/tenants/{id}/config", tag = "tenants", params(("id" = String, Path, description = "The tenant id")),
    responses((status = 200, description = "The tenant's configuration, without secrets", body = Object)))]
pub(crate) async fn config(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>> {
    let tenant = tenant_from_path(&state, &id)?;
    let view = TenantView::new(&tenant, state.registry.is_open(&tenant.id));
    Ok(Json(json!(view)))
}

/// Pings the tenant's database (opening its pool if needed) and reports the
/// round-trip time.
#[utoipa::path(get, path = "/api/tenants/{id}/health", tag = "tenants", params(("id" = String, Path, description = "The tenant id")),
    responses((status = 200, description = "A round trip to the tenant's database", body = Object)))]
pub(crate) async fn health(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>> {
    let tenant = tenant_from_path(&state, &id)?;
    let started = Instant::now();
    let db = state.registry.connect(&tenant).await?;
    db.ping().await?;
    let round_trip_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Json(json!({
        "tenant_id": tenant.id,
        "status": "ok",
        "is_active": tenant.is_active,
        "round_trip_ms": (round_trip_ms * 1000.0).round() / 1000.0,
    })))
}

#[derive(Serialize)]
struct PoolsView {
    #[serde(flatten)]
    stats: PoolStats,
    /// Tenants with a handle (in use recently).
    open: Vec<TenantId>,
    /// Each tenant handle: connections held and where its pool is.
    pools: Vec<crate::registry::PoolDetail>,
    /// Each connection pool: a database (shared by its schema tenants) or a file.
    connection_pools: Vec<crate::registry::ConnectionPoolDetail>,
    /// Each server's connections against its budget.
    servers: Vec<crate::db::pool::ServerStats>,
}

#[utoipa::path(get, path = "/api/admin/pools", tag = "tenants",
    responses((status = 200, description = "Pool and connection counters", body = Object)))]
pub(crate) async fn pools(State(state): State<AppState>) -> Json<Value> {
    Json(json!(PoolsView {
        stats: state.registry.stats(),
        open: state.registry.open_pools(),
        pools: state.registry.pool_details(),
        connection_pools: state.registry.connection_pools(),
        servers: state.registry.servers(),
    }))
}

/// Public branding and contact details, for a tenant's login page.
#[utoipa::path(get, path = "/api/tenants/{id}/branding", tag = "tenants", params(("id" = String, Path, description = "The tenant id")),
    responses((status = 200, description = "Branding and contact details", body = Object),
        (status = 403, description = "The tenant is suspended (`tenant_inactive`)", body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn branding(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>> {
    let tenant = tenant_from_path(&state, &id)?;
    if !tenant.is_active {
        return Err(AppError::TenantInactive(tenant.id.clone()));
    }
    Ok(Json(json!({
        "tenant_id": tenant.id,
        "branding": tenant.branding,
        "contact_info": tenant.contact_info,
    })))
}

/// `GET /metrics`: Prometheus metrics (admin token), see [`crate::metrics`].
async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !state.metrics.is_enabled() {
        return AppError::NotFound("metrics are switched off (METRICS_ENABLED=false)".into())
            .into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(&state.registry),
    )
        .into_response()
}
