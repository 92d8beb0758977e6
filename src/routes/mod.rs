//! The HTTP surface: each area exposes `router()`, merged here with the layers that
//! guard it.

pub mod admin_tenants;
pub mod cash_flow;
pub mod data;
pub mod dental;
pub mod manufacturing;
pub mod pagination;
pub mod products;
pub mod soft_delete;
pub mod tenants;
pub mod validate;

use axum::{Json, Router, middleware, routing::get};
use serde_json::{Value, json};

use crate::{
    admin::require_admin, error::AppError, identify::resolve_tenant, startup::AppState, telemetry,
};

/// The whole application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .merge(tenants::public_router())
        .merge(admin_routes(&state))
        .merge(tenant_routes(&state))
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::from_fn(telemetry::request_span))
        .with_state(state)
}

/// Every route that serves one tenant's data: identified, then feature-gated.
pub fn tenant_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(products::router())
        .merge(cash_flow::router())
        .merge(data::router(state))
        .merge(dental::router())
        .merge(manufacturing::router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            resolve_tenant,
        ))
}

fn admin_routes(state: &AppState) -> Router<AppState> {
    tenants::admin_router()
        .merge(admin_tenants::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
