//! `/api/dental/treatments` (feature `treatment_tracking`).

use axum::{http::StatusCode, routing::get};
use chrono::{NaiveDate, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, QueryFilter};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    entities::{
        patient::Entity as Patient,
        treatment::{self, Entity as Treatment},
    },
    error::{AppError, Result},
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::RouteSet,
    http::routes::pagination::{Page, PageQuery},
    http::routes::records::{delete_or_404, find_live, live, live_or_404, newest_first},
    tenant::Feature,
    validate::{calendar_date, cents_to_money, money_to_cents, required_text},
};

/// Longest description; the column is 500 characters wide.
const MAX_DESCRIPTION: usize = 500;

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route("/api/dental/treatments", get(list).post(create))
            .route(
                "/api/dental/treatments/{id}",
                get(show).patch(update).delete(remove),
            ),
        Feature::TreatmentTracking,
    )
}

/// Where a treatment stands. Parsed by serde, so that an unknown value is a 422
/// naming the field, in bodies and query strings alike.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    #[default]
    Planned,
    InProgress,
    Completed,
    Cancelled,
}

impl Status {
    /// The value stored in the `status` column.
    fn as_str(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// The list filters. Read by its own extractor next to [`PageQuery`]: a flattened
/// struct would hand serde_urlencoded's numbers over as strings and break `limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TreatmentFilter {
    patient_id: Option<uuid::Uuid>,
    status: Option<Status>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TreatmentInput {
    patient_id: uuid::Uuid,
    description: String,
    cost: f64,
    #[serde(default)]
    status: Status,
    scheduled_on: Option<NaiveDate>,
}

/// A PATCH body: absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TreatmentChange {
    description: Option<String>,
    cost: Option<f64>,
    status: Option<Status>,
    /// `null` clears the date, which an absent field must not do: hence the
    /// double option.
    #[serde(default, deserialize_with = "present")]
    scheduled_on: Option<Option<NaiveDate>>,
}

/// Marks a field that is present in the body, even as `null`, as `Some`.
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TreatmentView {
    id: uuid::Uuid,
    patient_id: uuid::Uuid,
    description: String,
    status: String,
    cost: f64,
    scheduled_on: Option<NaiveDate>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<treatment::Model> for TreatmentView {
    fn from(m: treatment::Model) -> Self {
        Self {
            id: m.id,
            patient_id: m.patient_id,
            description: m.description,
            status: m.status,
            cost: cents_to_money(m.cost_cents),
            scheduled_on: m.scheduled_on,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/dental/treatments", tag = "dental", params(PageQuery, TreatmentFilter),
    responses((status = 200, description = "The treatments, filtered by patient and status", body = Page<TreatmentView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<TreatmentFilter>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<TreatmentView>>> {
    let page = query.checked()?;
    let mut select = live::<Treatment>();
    if let Some(patient_id) = filter.patient_id {
        select = select.filter(treatment::Column::PatientId.eq(patient_id));
    }
    if let Some(status) = filter.status {
        select = select.filter(treatment::Column::Status.eq(status.as_str()));
    }
    let rows = newest_first(select, page, &db).await?;
    Ok(Json(Page::from_rows(rows, page, TreatmentView::from)))
}

#[utoipa::path(post, path = "/api/dental/treatments", tag = "dental", request_body = TreatmentInput,
    responses((status = 201, description = "Created", body = TreatmentView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<TreatmentInput>,
) -> Result<(StatusCode, Json<TreatmentView>)> {
    let description = required_text("description", &input.description, MAX_DESCRIPTION)?;
    let cost_cents = money_to_cents("cost", input.cost)?;
    // The foreign key only knows that the row exists; a soft-deleted patient is
    // gone for the API, so it is checked here.
    let patient_exists = find_live::<Patient>(&db, input.patient_id).await?.is_some();
    if !patient_exists {
        return Err(AppError::validation(
            "patient_id",
            "no patient with that patient_id",
        ));
    }
    let now = Utc::now();
    let model = treatment::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        patient_id: Set(input.patient_id),
        description: Set(description),
        status: Set(input.status.as_str().to_string()),
        cost_cents: Set(cost_cents),
        scheduled_on: Set(input
            .scheduled_on
            .map(|d| calendar_date("scheduled_on", d))
            .transpose()?),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

/// The treatment with `id`, unless it is soft-deleted.
async fn live_treatment(db: &impl ConnectionTrait, id: uuid::Uuid) -> Result<treatment::Model> {
    live_or_404::<Treatment>(db, id).await
}

#[utoipa::path(get, path = "/api/dental/treatments/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The treatment", body = TreatmentView)))]
pub(crate) async fn show(
    IdPath(id): IdPath,
    TenantDb(db): TenantDb,
) -> Result<Json<TreatmentView>> {
    Ok(Json(live_treatment(&db, id).await?.into()))
}

#[utoipa::path(patch, path = "/api/dental/treatments/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")), request_body = TreatmentChange,
    responses((status = 200, description = "Changed", body = TreatmentView)))]
pub(crate) async fn update(
    IdPath(id): IdPath,
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<TreatmentChange>,
) -> Result<Json<TreatmentView>> {
    // Validate the whole body before touching the row, so that a bad field
    // changes nothing.
    let description = input
        .description
        .as_deref()
        .map(|d| required_text("description", d, MAX_DESCRIPTION))
        .transpose()?;
    let cost_cents = input.cost.map(|c| money_to_cents("cost", c)).transpose()?;
    let scheduled_on = input
        .scheduled_on
        .map(|d| d.map(|d| calendar_date("scheduled_on", d)).transpose())
        .transpose()?;
    let existing = live_treatment(&db, id).await?;
    let mut model: treatment::ActiveModel = existing.into();
    if let Some(description) = description {
        model.description = Set(description);
    }
    if let Some(cost_cents) = cost_cents {
        model.cost_cents = Set(cost_cents);
    }
    if let Some(status) = input.status {
        model.status = Set(status.as_str().to_string());
    }
    if let Some(scheduled_on) = scheduled_on {
        model.scheduled_on = Set(scheduled_on);
    }
    model.updated_at = Set(Utc::now());
    Ok(Json(model.update(&db).await?.into()))
}

#[utoipa::path(delete, path = "/api/dental/treatments/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<treatment::Entity>(&db, id).await
}
