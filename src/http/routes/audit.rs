//! `GET /api/audit` (admins and owners): the tenant's audit log, newest first,
//! filtered by `entity` and a time range (`from`, `to`: RFC 3339).

use axum::routing::get;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::Role,
    entities::audit_entry as entry,
    error::{AppError, Result},
    http::extract::{ApiQuery, TenantDb},
    http::json::Json,
    http::routes::{
        RouteSet, for_role,
        pagination::{Page, PageQuery},
    },
};

pub fn router() -> RouteSet {
    for_role(RouteSet::new().route("/api/audit", get(list)), Role::Admin)
}

/// `GET /api/admin/tenants/{id}/audit` (admin token): the same log, for operators.
pub fn admin_router() -> axum::Router<crate::http::AppState> {
    axum::Router::new().route("/api/admin/tenants/{id}/audit", get(admin_list))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    entity: Option<String>,
    entity_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub(crate) struct EntryView {
    id: Uuid,
    at: DateTime<Utc>,
    actor: ActorView,
    entity: String,
    entity_id: Option<String>,
    action: String,
    request_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ActorView {
    kind: String,
    id: Option<String>,
    name: Option<String>,
}

impl From<entry::Model> for EntryView {
    fn from(m: entry::Model) -> Self {
        Self {
            id: m.id,
            at: m.at,
            actor: ActorView {
                kind: m.actor_kind,
                id: m.actor_id,
                name: m.actor_name,
            },
            entity: m.entity,
            entity_id: m.entity_id,
            action: m.action,
            request_id: m.request_id,
        }
    }
}

fn timestamp(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    AppError::validation(field, format!("{field} must be an RFC 3339 time"))
                })
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "The audit log, newest first", body = Page<EntryView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<AuditQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<EntryView>>> {
    Ok(Json(page(&db, &query).await?))
}

/// A tenant's audit log, newest first, as an operator sees it.
#[utoipa::path(get, path = "/api/admin/tenants/{id}/audit", tag = "tenants", params(("id" = String, Path, description = "The tenant id"), AuditQuery),
    responses((status = 200, description = "The tenant's audit log, newest first", body = Page<EntryView>)))]
pub(crate) async fn admin_list(
    axum::extract::State(state): axum::extract::State<crate::http::AppState>,
    crate::http::extract::TenantPath(id): crate::http::extract::TenantPath,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Page<EntryView>>> {
    let tenant = crate::http::routes::tenants::tenant_from_path(&state, &id)?;
    let db = state.registry.connect(&tenant).await?;
    Ok(Json(page(&db, &query).await?))
}

async fn page(db: &impl sea_orm::ConnectionTrait, query: &AuditQuery) -> Result<Page<EntryView>> {
    let page = PageQuery {
        limit: query.limit,
        offset: query.offset,
    }
    .checked()?;
    let mut select = entry::Entity::find();
    if let Some(entity) = &query.entity {
        select = select.filter(entry::Column::Entity.eq(entity.as_str()));
    }
    if let Some(entity_id) = &query.entity_id {
        select =
            select.filter(entry::Column::EntityId.eq(crate::http::audit::canonical_id(entity_id)));
    }
    if let Some(from) = timestamp("from", query.from.as_deref())? {
        select = select.filter(entry::Column::At.gte(from));
    }
    if let Some(to) = timestamp("to", query.to.as_deref())? {
        select = select.filter(entry::Column::At.lt(to));
    }
    let rows = select
        .order_by_desc(entry::Column::At)
        .order_by_desc(entry::Column::Id)
        .limit(page.fetch())
        .offset(page.offset)
        .all(db)
        .await?;
    Ok(Page::from_rows(rows, page, EntryView::from))
}
