//! The fleet as an operator watches it (admin token): every tenant with its live
//! state, searchable and paged (`GET /api/admin/tenants`), and migrations of many
//! tenants run by the service with their progress (`/api/admin/migrations`). The
//! admin console (`/admin`) is built on these.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    error::{AppError, Result},
    fleet::{JobView, StartError},
    http::AppState,
    http::extract::{ApiJson, ApiQuery},
    http::json::Json,
    tenant::{Domain, Isolation, TenantConfig, TenantId},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/admin/tenants",
            get(list).post(super::admin_tenants::create),
        )
        .route("/api/admin/migrations", get(jobs).post(start))
        .route("/api/admin/migrations/{job}", get(job))
}

/// How long the list waits for one tenant's round trip.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Part of the id, subdomain, company name, domain or contact e-mail (any case).
    #[param(max_length = 100)]
    q: Option<String>,
    /// `active` or `suspended`.
    status: Option<String>,
    /// Tenants per page, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// Tenants to skip (default 0).
    offset: Option<usize>,
}

/// One tenant's live state in the list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantRow {
    #[schema(value_type = String)]
    id: TenantId,
    #[schema(value_type = String)]
    domain: Domain,
    subdomain: String,
    company_name: Option<String>,
    is_active: bool,
    #[schema(value_type = String)]
    isolation: Isolation,
    /// `host:port` of its PostgreSQL server, or `sqlite`.
    server: Option<String>,
    /// Whether it has a pool handle now (used recently).
    pool_open: bool,
    /// Connections it holds now, and its cap.
    connections: u32,
    max_connections: Option<u32>,
    breaker_open: bool,
    /// `ok`, `failed` or `unavailable` (breaker open) after a round trip, or `idle`
    /// for a tenant without a pool (not opened just to be listed).
    health: &'static str,
    round_trip_ms: Option<f64>,
    /// Requests answered since this replica started, and how many got a 5xx
    /// (null past `METRICS_MAX_TENANTS` or with metrics off).
    requests_total: Option<u64>,
    errors_total: Option<u64>,
}

/// A page of the list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantPage {
    items: Vec<TenantRow>,
    /// Tenants that match, on every page.
    total: usize,
    limit: usize,
    offset: usize,
    next_offset: Option<usize>,
    /// Milliseconds since the Unix epoch when the counters were read, to turn two
    /// readings into rates.
    read_at_ms: i64,
}

fn matches(tenant: &TenantConfig, needle: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(needle);
    has(tenant.id.as_str())
        || has(&tenant.subdomain)
        || has(match tenant.domain {
            Domain::Dental => "dental",
            Domain::Manufacturing => "manufacturing",
            Domain::Default => "default",
        })
        || tenant.branding.company_name.as_deref().is_some_and(has)
        || tenant.contact_info.email.as_deref().is_some_and(has)
}

/// Every tenant with its live state: pool, breaker, a round trip for those with a
/// pool, and its request and error counts; filtered by `q` and `status`, by id.
#[utoipa::path(get, path = "/api/admin/tenants", tag = "tenants", params(ListQuery),
    responses((status = 200, description = "A page of tenants with their live state", body = TenantPage)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TenantPage>> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::validation(
            "limit",
            format!("limit must be within 1..={MAX_LIMIT}"),
        ));
    }
    let offset = query.offset.unwrap_or(0);
    let needle = query.q.as_deref().unwrap_or("").trim().to_lowercase();
    if needle.len() > 100 {
        return Err(AppError::validation("q", "q is at most 100 bytes"));
    }
    let active = match query.status.as_deref() {
        None | Some("") => None,
        Some("active") => Some(true),
        Some("suspended") => Some(false),
        Some(_) => {
            return Err(AppError::validation(
                "status",
                "status must be active or suspended",
            ));
        }
    };
    let mut tenants: Vec<_> = state
        .registry
        .list()
        .into_iter()
        .filter(|t| active.is_none_or(|a| t.is_active == a))
        .filter(|t| needle.is_empty() || matches(t, &needle))
        .collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    let total = tenants.len();
    let page: Vec<_> = tenants.into_iter().skip(offset).take(limit).collect();
    let details = state.registry.pool_details();
    let rows = futures::future::join_all(page.iter().map(|tenant| {
        let state = state.clone();
        let detail = details.iter().find(|d| d.tenant_id == tenant.id);
        let (connections, max_connections) =
            detail.map_or((0, None), |d| (d.connections, Some(d.max_connections)));
        async move { row(&state, tenant, connections, max_connections).await }
    }))
    .await;
    Ok(Json(TenantPage {
        items: rows,
        total,
        limit,
        offset,
        next_offset: (offset.saturating_add(limit) < total).then(|| offset + limit),
        read_at_ms: chrono::Utc::now().timestamp_millis(),
    }))
}

async fn row(
    state: &AppState,
    tenant: &TenantConfig,
    connections: u32,
    max_connections: Option<u32>,
) -> TenantRow {
    let pool_open = state.registry.is_open(&tenant.id);
    let breaker_open = state.registry.breaker_open(&tenant.id);
    let (health, round_trip_ms) = if breaker_open {
        ("unavailable", None)
    } else {
        match state.registry.probe(&tenant.id, PING_TIMEOUT).await {
            None => ("idle", None),
            Some(Ok(took)) => ("ok", Some((took.as_secs_f64() * 1e6).round() / 1e3)),
            Some(Err(_)) => ("failed", None),
        }
    };
    let totals = state.metrics.tenant_totals(tenant.id.as_str());
    TenantRow {
        id: tenant.id.clone(),
        domain: tenant.domain,
        subdomain: tenant.subdomain.clone(),
        company_name: tenant.branding.company_name.clone(),
        is_active: tenant.is_active,
        isolation: tenant.isolation,
        server: state.registry.server_of(tenant),
        pool_open,
        connections,
        max_connections,
        breaker_open,
        health,
        round_trip_ms,
        requests_total: totals.map(|t| t.0),
        errors_total: totals.map(|t| t.1),
    }
}

/// What to migrate: the named tenants, or every tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartMigration {
    /// Tenant ids (for example the failed ones of an earlier run); every tenant
    /// when absent.
    #[schema(max_items = 10000)]
    tenants: Option<Vec<String>>,
    /// Tenants migrated at once, 1 to 16 (default 4).
    #[schema(minimum = 1, maximum = 16)]
    concurrency: Option<usize>,
}

/// Starts migrating the named tenants, or all, in the background; 409 while
/// another run of this replica is under way. Follow it with
/// `GET /api/admin/migrations/{job}`.
#[utoipa::path(post, path = "/api/admin/migrations", tag = "tenants", request_body = StartMigration,
    responses(
        (status = 202, description = "Started; its progress", body = Object),
        (status = 404, description = "A named tenant does not exist (`tenant_not_found`)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "Another run is under way (`conflict`)", body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn start(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StartMigration>,
) -> Result<(StatusCode, Json<JobView>)> {
    let concurrency = body.concurrency.unwrap_or(4);
    if !(1..=16).contains(&concurrency) {
        return Err(AppError::validation(
            "concurrency",
            "concurrency must be within 1..=16",
        ));
    }
    let tenants = match &body.tenants {
        None => {
            let mut all = state.registry.list();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all
        }
        Some(ids) => {
            let mut chosen = Vec::with_capacity(ids.len());
            let mut seen = std::collections::HashSet::<TenantId>::new();
            for id in ids {
                let id = TenantId::parse(id).map_err(|_| {
                    AppError::validation("tenants", format!("'{id:.64}' is not a valid tenant id"))
                })?;
                let tenant = super::tenants::tenant_from_path(&state, &id)?;
                if seen.insert(tenant.id.clone()) {
                    chosen.push(tenant);
                }
            }
            chosen
        }
    };
    match state
        .fleet
        .start(state.registry.clone(), tenants, concurrency)
    {
        Ok(job) => Ok((StatusCode::ACCEPTED, Json(job))),
        Err(StartError::Running(id)) => Err(AppError::Conflict(format!(
            "migration run {id} is under way; wait for it to finish"
        ))),
        Err(StartError::NoTenants) => Err(AppError::validation("tenants", "no tenant to migrate")),
    }
}

/// The runs this replica keeps (the last 20), newest first, without their
/// tenants' rows (`GET /api/admin/migrations/{job}` has them).
#[utoipa::path(get, path = "/api/admin/migrations", tag = "tenants",
    responses((status = 200, description = "Migration runs, newest first", body = Object)))]
pub(crate) async fn jobs(State(state): State<AppState>) -> Json<Value> {
    let jobs: Vec<JobView> = state
        .fleet
        .list()
        .into_iter()
        .map(|mut job| {
            job.tenants.clear();
            job
        })
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// One run with each tenant's state: queued, running, up_to_date, migrated or
/// failed (with its error).
#[utoipa::path(get, path = "/api/admin/migrations/{job}", tag = "tenants", params(("job" = u64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's progress", body = Object),
        (status = 404, description = "No such run on this replica (`not_found`)", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The id is not a run's number (`validation_failed`, field `job`)", body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn job(
    State(state): State<AppState>,
    // A segment that is not even UTF-8 is a bad id too, in JSON.
    id: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobView>> {
    let id = id
        .ok()
        .and_then(|Path(id)| id.parse::<u64>().ok())
        .ok_or_else(|| AppError::validation("job", "a run's id is a number"))?;
    state
        .fleet
        .get(id)
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("no migration run '{id}'")))
}
