//! `GET /api/admin/tenants/{id}/usage?from=&to=` (admin token): a tenant's usage
//! per day, for billing (see `crate::usage`). Also answers for a deleted tenant
//! whose usage is on record.

use axum::{Router, extract::State, routing::get};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::{AppError, Result},
    http::json::Json,
    http::{
        AppState,
        extract::{ApiQuery, TenantPath},
    },
    usage::UsageRange,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/tenants/{id}/usage", get(usage))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Range {
    from: Option<String>,
    to: Option<String>,
}

#[utoipa::path(get, path = "/api/admin/tenants/{id}/usage", tag = "tenants", params(("id" = String, Path, description = "The tenant id"), Range),
    responses((status = 200, description = "The tenant's usage per day", body = Object)))]
pub(crate) async fn usage(
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiQuery(range): ApiQuery<Range>,
) -> Result<Json<Value>> {
    let Some(meter) = &state.usage else {
        return Err(AppError::NotFound(
            "usage is kept in multi-tenant mode only".into(),
        ));
    };
    let range = UsageRange::parse(range.from.as_deref(), range.to.as_deref())?;
    let tenant = state.registry.get(id.as_str());
    let report = meter.read(id.as_str(), range).await?;
    if tenant.is_none() && report.days.is_empty() {
        return Err(AppError::TenantNotFound(id.to_string()));
    }
    let quota = tenant
        .as_deref()
        .map(|t| meter.quota_of(t))
        .filter(|q| *q > 0);
    let mut body = json!(report);
    body["storage_quota_bytes"] = json!(quota);
    Ok(Json(body))
}
