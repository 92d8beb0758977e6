//! `/api/dental/patients` (feature `patient_management`).

use axum::{http::StatusCode, routing::get};
use chrono::{NaiveDate, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde::{Deserialize, Serialize};

use crate::{
    entities::patient::{self, Entity as Patient},
    error::{AppError, Result},
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::RouteSet,
    http::routes::pagination::{Page, PageQuery},
    http::routes::records::{delete_or_404, live_or_404, live_page},
    tenant::Feature,
    validate::{calendar_date, optional_email, optional_text, required_text},
};

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route("/api/dental/patients", get(list).post(create))
            .route("/api/dental/patients/{id}", get(show).delete(remove)),
        Feature::PatientManagement,
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatientInput {
    name: String,
    date_of_birth: Option<NaiveDate>,
    phone: Option<String>,
    email: Option<String>,
    notes: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PatientView {
    id: uuid::Uuid,
    name: String,
    date_of_birth: Option<NaiveDate>,
    phone: Option<String>,
    email: Option<String>,
    notes: Option<String>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<patient::Model> for PatientView {
    fn from(m: patient::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            date_of_birth: m.date_of_birth,
            phone: m.phone,
            email: m.email,
            notes: m.notes,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[utoipa::path(get, path = "/api/dental/patients", tag = "dental", params(PageQuery),
    responses((status = 200, description = "The patients, newest first", body = Page<PatientView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<PageQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<PatientView>>> {
    let page = query.checked()?;
    let rows = live_page::<Patient>(page, &db).await?;
    Ok(Json(Page::from_rows(rows, page, PatientView::from)))
}

#[utoipa::path(post, path = "/api/dental/patients", tag = "dental", request_body = PatientInput,
    responses((status = 201, description = "Created", body = PatientView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<PatientInput>,
) -> Result<(StatusCode, Json<PatientView>)> {
    let name = required_text("name", &input.name, 200)?;
    let date_of_birth = input
        .date_of_birth
        .map(|d| calendar_date("date_of_birth", d))
        .transpose()?;
    if let Some(dob) = date_of_birth
        && dob > Utc::now().date_naive()
    {
        return Err(AppError::validation(
            "date_of_birth",
            "date_of_birth is in the future",
        ));
    }
    let now = Utc::now();
    let model = patient::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set(name),
        date_of_birth: Set(date_of_birth),
        phone: Set(optional_text("phone", input.phone.as_deref(), 50)?),
        email: Set(optional_email("email", input.email.as_deref())?),
        notes: Set(optional_text("notes", input.notes.as_deref(), 5000)?),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

#[utoipa::path(get, path = "/api/dental/patients/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The patient", body = PatientView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<PatientView>> {
    let model = live_or_404::<Patient>(&db, id).await?;
    Ok(Json(model.into()))
}

#[utoipa::path(delete, path = "/api/dental/patients/{id}", tag = "dental", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<patient::Entity>(&db, id).await
}
