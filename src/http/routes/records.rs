//! What every business table's routes share: soft delete (the row stays, with
//! `deleted_at` set, and leaves every list, lookup and sum), a live row or 404, and
//! a page of live rows, newest first.

use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
    sea_query::Expr,
};
use uuid::Uuid;

use super::pagination::PageParams;
use crate::{
    db::{self, rows::FromPgRow},
    error::{AppError, Result},
};

/// The columns soft delete and lists need of an entity, and what a row is called.
pub trait SoftDeletable: EntityTrait<Model: FromPgRow> {
    const ID: Self::Column;
    const CREATED_AT: Self::Column;
    const UPDATED_AT: Self::Column;
    const DELETED_AT: Self::Column;
    /// What one row is, for messages: `no {NOUN} with that id`.
    const NOUN: &'static str;
}

/// 404 `not_found` for a row of `E`.
pub fn not_found<E: SoftDeletable>() -> AppError {
    AppError::NotFound(format!("no {} with that id", E::NOUN))
}

/// The live row `id` of `E`, or 404.
pub async fn live_or_404<E: SoftDeletable>(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<E::Model> {
    find_live::<E>(db, id).await?.ok_or_else(not_found::<E>)
}

/// Soft-deletes the live row `id` of `E` in one conditional UPDATE: 204, or 404
/// when there is no such live row (a second DELETE, or one racing the first).
pub async fn delete_or_404<E: SoftDeletable>(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<StatusCode> {
    if soft_delete::<E>(db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found::<E>())
    }
}

/// One page of `rows` (a query over `E`), newest first, ties broken by id; one row
/// more than the page, for [`super::pagination::Page::from_rows`].
pub async fn newest_first<E: SoftDeletable>(
    rows: Select<E>,
    page: PageParams,
    db: &impl ConnectionTrait,
) -> Result<Vec<E::Model>> {
    let rows = rows
        .order_by_desc(E::CREATED_AT)
        .order_by_desc(E::ID)
        .limit(page.fetch())
        .offset(page.offset);
    Ok(db::rows::all(rows, db).await?)
}

/// The rows of `E` that are not deleted.
pub fn live<E: SoftDeletable>() -> Select<E> {
    E::find().filter(E::DELETED_AT.is_null())
}

/// The live row `id` of `E`, if there is one.
pub async fn find_live<E: SoftDeletable>(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<E::Model>> {
    Ok(db::rows::one(live::<E>().filter(E::ID.eq(id)), db).await?)
}

/// Marks the live row `id` deleted; `false` if there is no such live row.
pub async fn soft_delete<E: SoftDeletable>(db: &impl ConnectionTrait, id: Uuid) -> Result<bool> {
    let now = Utc::now();
    let result = E::update_many()
        .col_expr(E::DELETED_AT, Expr::value(now))
        .col_expr(E::UPDATED_AT, Expr::value(now))
        .filter(E::ID.eq(id))
        .filter(E::DELETED_AT.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

macro_rules! soft_deletable {
    ($($module:ident => $noun:literal),* $(,)?) => {
        $(
            impl SoftDeletable for crate::entities::$module::Entity {
                const ID: Self::Column = crate::entities::$module::Column::Id;
                const CREATED_AT: Self::Column = crate::entities::$module::Column::CreatedAt;
                const UPDATED_AT: Self::Column = crate::entities::$module::Column::UpdatedAt;
                const DELETED_AT: Self::Column = crate::entities::$module::Column::DeletedAt;
                const NOUN: &'static str = $noun;
            }
        )*
    };
}

soft_deletable!(
    product => "product",
    patient => "patient",
    material => "material",
    treatment => "treatment",
    dental_supply => "supply",
    bom => "bill of materials",
    production_order => "production order",
    cash_flow_entry => "cash-flow entry",
);
