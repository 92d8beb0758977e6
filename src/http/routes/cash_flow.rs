//! `/api/cash-flow` (common feature `cash_flow`): income and expense entries with
//! their tax, and a monthly summary.

use std::collections::BTreeMap;

use axum::{http::StatusCode, routing::get};
use chrono::{Datelike, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::Role,
    entities::cash_flow_entry as entry,
    error::{AppError, Result},
    http::extract::{ApiJson, ApiQuery, IdPath, TenantDb},
    http::feature_gate::gate,
    http::json::Json,
    http::routes::pagination::{Page, PageQuery},
    http::routes::records::{delete_or_404, live, live_or_404},
    http::routes::{RouteSet, for_role},
    tenant::Feature,
    validate::{calendar_date, cents_to_money, money_to_cents, optional_text},
};

const KINDS: [&str; 2] = ["income", "expense"];

pub fn router() -> RouteSet {
    gate(
        RouteSet::new()
            .route("/api/cash-flow", get(list).post(create))
            .route("/api/cash-flow/{id}", get(show).delete(remove))
            // The monthly summary is a report: managers and up.
            .merge(for_role(
                RouteSet::new().route("/api/cash-flow/summary", get(summary)),
                Role::Manager,
            )),
        Feature::CashFlow,
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CashFlowEntryInput)]
pub(crate) struct EntryInput {
    kind: String,
    amount: f64,
    #[serde(default)]
    tax: f64,
    date: NaiveDate,
    description: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CashFlowEntry)]
pub(crate) struct EntryView {
    id: Uuid,
    kind: String,
    amount: f64,
    tax: f64,
    date: NaiveDate,
    description: Option<String>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    created_at: chrono::DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::rfc3339")]
    updated_at: chrono::DateTime<Utc>,
}

impl From<entry::Model> for EntryView {
    fn from(m: entry::Model) -> Self {
        Self {
            id: m.id,
            kind: m.kind,
            amount: cents_to_money(m.amount_cents),
            tax: cents_to_money(m.tax_cents),
            date: m.entry_date,
            description: m.description,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

fn check_kind(kind: &str) -> Result<()> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(AppError::validation("kind", "kind is income or expense"))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    limit: Option<u64>,
    offset: Option<u64>,
    kind: Option<String>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

#[utoipa::path(get, path = "/api/cash-flow", tag = "cash-flow", params(ListQuery),
    responses((status = 200, description = "The entries, filtered by kind and dates", body = Page<EntryView>)))]
pub(crate) async fn list(
    ApiQuery(query): ApiQuery<ListQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<Page<EntryView>>> {
    let page = PageQuery {
        limit: query.limit,
        offset: query.offset,
    }
    .checked()?;
    let mut select = live::<entry::Entity>();
    if let Some(kind) = &query.kind {
        check_kind(kind)?;
        select = select.filter(entry::Column::Kind.eq(kind.as_str()));
    }
    if let Some(from) = query.from {
        select = select.filter(entry::Column::EntryDate.gte(calendar_date("from", from)?));
    }
    if let Some(to) = query.to {
        select = select.filter(entry::Column::EntryDate.lte(calendar_date("to", to)?));
    }
    let rows = select
        .order_by_desc(entry::Column::EntryDate)
        .order_by_desc(entry::Column::CreatedAt)
        .limit(page.fetch())
        .offset(page.offset)
        .all(&db)
        .await?;
    Ok(Json(Page::from_rows(rows, page, EntryView::from)))
}

#[utoipa::path(post, path = "/api/cash-flow", tag = "cash-flow", request_body = EntryInput,
    responses((status = 201, description = "Created", body = EntryView)))]
pub(crate) async fn create(
    TenantDb(db): TenantDb,
    ApiJson(input): ApiJson<EntryInput>,
) -> Result<(StatusCode, Json<EntryView>)> {
    check_kind(&input.kind)?;
    let amount_cents = money_to_cents("amount", input.amount)?;
    if amount_cents == 0 {
        return Err(AppError::validation("amount", "amount must be above 0"));
    }
    let tax_cents = money_to_cents("tax", input.tax)?;
    let date = calendar_date("date", input.date)?;
    let now = Utc::now();
    let model = entry::ActiveModel {
        id: Set(Uuid::new_v4()),
        kind: Set(input.kind),
        amount_cents: Set(amount_cents),
        tax_cents: Set(tax_cents),
        entry_date: Set(date),
        description: Set(optional_text(
            "description",
            input.description.as_deref(),
            500,
        )?),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&db)
    .await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

#[utoipa::path(get, path = "/api/cash-flow/{id}", tag = "cash-flow", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 200, description = "The entry", body = EntryView)))]
pub(crate) async fn show(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<Json<EntryView>> {
    let model = live_or_404::<entry::Entity>(&db, id).await?;
    Ok(Json(model.into()))
}

#[utoipa::path(delete, path = "/api/cash-flow/{id}", tag = "cash-flow", params(("id" = uuid::Uuid, Path, description = "The record's id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(IdPath(id): IdPath, TenantDb(db): TenantDb) -> Result<StatusCode> {
    delete_or_404::<entry::Entity>(&db, id).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SummaryQuery {
    year: Option<i32>,
}

/// Sums in minor units, shown as money. Each amount is bounded at input, but many
/// of them can pass `i64`: the sums are `i128`, which no number of rows can fill.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    income: i128,
    expense: i128,
    income_tax: i128,
    expense_tax: i128,
}

impl Sums {
    fn add(&mut self, kind: &str, amount: i64, tax: i64) {
        if kind == "income" {
            self.income += i128::from(amount);
            self.income_tax += i128::from(tax);
        } else {
            self.expense += i128::from(amount);
            self.expense_tax += i128::from(tax);
        }
    }

    fn view(self) -> serde_json::Value {
        let money = |cents: i128| cents as f64 / 100.0;
        serde_json::json!({
            "income": money(self.income),
            "expense": money(self.expense),
            "income_tax": money(self.income_tax),
            "expense_tax": money(self.expense_tax),
            "net": money(self.income - self.expense),
        })
    }
}

/// Income, expense, their tax and the net of each month of `year` (default: this
/// year), and the year's totals. Deleted entries do not count.
#[utoipa::path(get, path = "/api/cash-flow/summary", tag = "cash-flow", params(SummaryQuery),
    responses((status = 200, description = "Income, expenses and balance", body = serde_json::Value)))]
pub(crate) async fn summary(
    ApiQuery(query): ApiQuery<SummaryQuery>,
    TenantDb(db): TenantDb,
) -> Result<Json<serde_json::Value>> {
    let year = query.year.unwrap_or_else(|| Utc::now().year());
    if !(1..=9999).contains(&year) {
        return Err(AppError::validation("year", "year must be from 1 to 9999"));
    }
    let (Some(first), Some(last)) = (
        NaiveDate::from_ymd_opt(year, 1, 1),
        NaiveDate::from_ymd_opt(year, 12, 31),
    ) else {
        return Err(AppError::validation("year", "year is out of range"));
    };
    let rows: Vec<(String, i64, i64, NaiveDate)> = entry::Entity::find()
        .select_only()
        .column(entry::Column::Kind)
        .column(entry::Column::AmountCents)
        .column(entry::Column::TaxCents)
        .column(entry::Column::EntryDate)
        .filter(entry::Column::DeletedAt.is_null())
        .filter(entry::Column::EntryDate.between(first, last))
        .into_tuple()
        .all(&db)
        .await?;
    let mut months: BTreeMap<u32, Sums> = (1..=12).map(|m| (m, Sums::default())).collect();
    let mut total = Sums::default();
    for (kind, amount, tax, date) in rows {
        months
            .entry(date.month())
            .or_default()
            .add(&kind, amount, tax);
        total.add(&kind, amount, tax);
    }
    let months: Vec<serde_json::Value> = months
        .into_iter()
        .map(|(month, sums)| {
            let mut v = sums.view();
            v["month"] = serde_json::json!(format!("{year:04}-{month:02}"));
            v
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "year": year, "months": months, "totals": total.view() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_many_large_amounts_do_not_wrap() {
        // 9,300 entries at the largest amount accepted (1e13, in cents 1e15) pass
        // i64::MAX; the sum must stay positive and exact in its magnitude.
        let mut sums = Sums::default();
        for _ in 0..9_300 {
            sums.add("income", 1_000_000_000_000_000, 0);
        }
        let view = sums.view();
        let income = view["income"].as_f64().unwrap();
        assert!((income - 9.3e16).abs() < 1e6, "{view}");
        assert!(view["net"].as_f64().unwrap() > 0.0, "{view}");
    }
}
