//! Moving tenants between servers through the admin API (admin token): start a
//! move, follow it, confirm it or abort it (see `lifecycle::moves`). The target
//! URL comes in the body and is never returned or logged.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::{AppError, Result},
    http::AppState,
    http::extract::{ApiJson, TenantPath},
    http::json::Json,
    lifecycle::Lifecycle,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/moves", get(list))
        .route("/api/admin/tenants/{id}/move", post(start))
        .route("/api/admin/tenants/{id}/move/confirm", post(confirm))
        .route("/api/admin/tenants/{id}/move/abort", post(abort))
}

fn lifecycle(state: &AppState) -> Result<&std::sync::Arc<Lifecycle>> {
    state
        .lifecycle
        .as_ref()
        .ok_or_else(|| AppError::NotFound("tenant management is off in single-tenant mode".into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartMove {
    /// The target database URL (`postgres://…`); the tenant keeps its isolation.
    to: String,
}

/// Starts moving the tenant to another PostgreSQL database while it serves; this
/// replica runs it in the background. Follow it with `GET /api/admin/moves`.
#[utoipa::path(post, path = "/api/admin/tenants/{id}/move", tag = "tenants", params(("id" = String, Path, description = "The tenant id")), request_body = StartMove,
    responses(
        (status = 202, description = "Started: checked and recorded, copying in the background", body = Object),
        (status = 404, description = "No such tenant (`tenant_not_found`)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "A move of this tenant is under way, or another move is on record (`conflict`)", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The target is not a valid place for the tenant: not a `postgres://` URL, the tenant's own database, the control database, a database another tenant has (`validation_failed`)", body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn start(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiJson(body): ApiJson<StartMove>,
) -> Result<(StatusCode, Json<Value>)> {
    lifecycle(&state)?.start_move(id.as_str(), body.to).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "tenant_id": id, "status": "started" })),
    ))
}

/// The moves on record: under way (`copying`) or switched and waiting for their
/// confirmation, with the step a move running on this replica is at, the write
/// pause measured at the switch and the last attempt's error.
#[utoipa::path(get, path = "/api/admin/moves", tag = "tenants",
    responses((status = 200, description = "The moves on record", body = Object)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>> {
    let moves = lifecycle(&state)?.moves().await?;
    Ok(Json(json!({ "moves": moves })))
}

/// After the switch: drops the tenant's old storage and forgets the move.
#[utoipa::path(post, path = "/api/admin/tenants/{id}/move/confirm", tag = "tenants", params(("id" = String, Path, description = "The tenant id")),
    responses(
        (status = 204, description = "Confirmed: the old storage is dropped"),
        (status = 409, description = "The move has not switched (`conflict`)", body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<StatusCode> {
    lifecycle(&state)?.confirm_move(id.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Before the switch: stops the move; the tenant stays where it is.
#[utoipa::path(post, path = "/api/admin/tenants/{id}/move/abort", tag = "tenants", params(("id" = String, Path, description = "The tenant id")),
    responses(
        (status = 204, description = "Aborted"),
        (status = 409, description = "The move has switched: confirm it (`conflict`)", body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn abort(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<StatusCode> {
    lifecycle(&state)?.abort_move(id.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}
