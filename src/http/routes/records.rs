//! What every business table's routes share: soft delete (the row stays, with
//! `deleted_at` set, and leaves every list, lookup and sum), a live row or 404, and
//! a page of live rows, newest first.

use std::sync::OnceLock;

use axum::http::StatusCode;
use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select, Statement, Value, Values, sea_query::Expr,
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

    /// The entity's SQL texts of [`live_page`] and [`find_live`], once built.
    fn built() -> &'static BuiltSql;
}

/// The SQL texts of the two reads every list and lookup of an entity makes (a
/// page of its live rows, a live row by id), built by sea-query on first use for
/// each backend and kept: building the select and then its text cost about
/// 14,000 instructions, a sixteenth of the router's work for a page of 20
/// products (callgrind). Each use binds its own values to the kept text.
#[derive(Default)]
pub struct BuiltSql {
    page: [OnceLock<String>; 2],
    by_id: [OnceLock<String>; 2],
}

/// `build`'s statement, whose SQL text is the same whatever its `values`: the
/// text from `kept` (filled on first use), with `values` bound. Only when the
/// first statement built binds exactly `values` is its text kept.
fn with_kept_sql(
    kept: &[OnceLock<String>; 2],
    backend: DbBackend,
    values: Vec<Value>,
    build: impl FnOnce() -> Statement,
) -> Statement {
    let slot = match backend {
        DbBackend::Postgres => &kept[0],
        DbBackend::Sqlite => &kept[1],
        _ => return build(),
    };
    if let Some(sql) = slot.get() {
        return Statement {
            sql: sql.clone(),
            values: Some(Values(values)),
            db_backend: backend,
        };
    }
    let statement = build();
    if statement.values.as_ref().is_some_and(|v| v.0 == values) {
        let _ = slot.set(statement.sql.clone());
    }
    statement
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
    Ok(db::rows::all(newest_first_select(rows, page), db).await?)
}

fn newest_first_select<E: SoftDeletable>(rows: Select<E>, page: PageParams) -> Select<E> {
    rows.order_by_desc(E::CREATED_AT)
        .order_by_desc(E::ID)
        .limit(page.fetch())
        .offset(page.offset)
}

/// One page of `E`'s live rows, newest first: [`newest_first`] over [`live`],
/// with the SQL text built once.
pub async fn live_page<E: SoftDeletable>(
    page: PageParams,
    db: &impl ConnectionTrait,
) -> Result<Vec<E::Model>> {
    Ok(db::rows::all_of(
        live_page_statement::<E>(page, db.get_database_backend()),
        db,
    )
    .await?)
}

fn live_page_statement<E: SoftDeletable>(page: PageParams, backend: DbBackend) -> Statement {
    let values = vec![page.fetch().into(), page.offset.into()];
    with_kept_sql(&E::built().page, backend, values, || {
        newest_first_select(live::<E>(), page).build(backend)
    })
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
    Ok(db::rows::one_of(find_live_statement::<E>(id, db.get_database_backend()), db).await?)
}

fn find_live_statement<E: SoftDeletable>(id: Uuid, backend: DbBackend) -> Statement {
    let values = vec![id.into(), 1u64.into()];
    with_kept_sql(&E::built().by_id, backend, values, || {
        live::<E>().filter(E::ID.eq(id)).limit(1).build(backend)
    })
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

                fn built() -> &'static BuiltSql {
                    static BUILT: std::sync::LazyLock<BuiltSql> =
                        std::sync::LazyLock::new(BuiltSql::default);
                    &BUILT
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{material, patient, product};

    /// For entity `E` on both backends: each use of the kept text is the
    /// statement sea-query builds for the same values, the first (which keeps
    /// it) and every later one.
    fn kept_statements_are_the_built_ones<E: SoftDeletable>() {
        let pages = [(1, 0), (20, 0), (50, 400), (200, i64::MAX as u64)];
        let ids = [Uuid::nil(), Uuid::from_u128(7), Uuid::max()];
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            for _ in 0..2 {
                for (limit, offset) in pages {
                    let page = PageParams { limit, offset };
                    let built = newest_first_select(live::<E>(), page).build(backend);
                    assert_eq!(live_page_statement::<E>(page, backend), built);
                }
                for id in ids {
                    let built = live::<E>().filter(E::ID.eq(id)).limit(1).build(backend);
                    assert_eq!(find_live_statement::<E>(id, backend), built);
                }
            }
            let slot = usize::from(backend == DbBackend::Sqlite);
            assert!(
                E::built().page[slot].get().is_some(),
                "{backend:?}: page kept"
            );
            assert!(
                E::built().by_id[slot].get().is_some(),
                "{backend:?}: by id kept"
            );
        }
    }

    #[test]
    fn kept_sql_binds_the_values_sea_query_would() {
        kept_statements_are_the_built_ones::<product::Entity>();
        kept_statements_are_the_built_ones::<patient::Entity>();
        kept_statements_are_the_built_ones::<material::Entity>();
    }
}
