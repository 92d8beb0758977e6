//! Soft delete, shared by every business table: the row stays, with `deleted_at`
//! set, and leaves every list, lookup and sum.

use chrono::Utc;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Select, sea_query::Expr};
use uuid::Uuid;

use crate::error::Result;

/// The columns soft delete needs of an entity.
pub trait SoftDeletable: EntityTrait {
    const ID: Self::Column;
    const DELETED_AT: Self::Column;
    const UPDATED_AT: Self::Column;
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
    Ok(live::<E>().filter(E::ID.eq(id)).one(db).await?)
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
    ($($module:ident),* $(,)?) => {
        $(
            impl SoftDeletable for crate::entities::$module::Entity {
                const ID: Self::Column = crate::entities::$module::Column::Id;
                const DELETED_AT: Self::Column = crate::entities::$module::Column::DeletedAt;
                const UPDATED_AT: Self::Column = crate::entities::$module::Column::UpdatedAt;
            }
        )*
    };
}

soft_deletable!(
    product,
    patient,
    material,
    treatment,
    dental_supply,
    bom,
    production_order,
    cash_flow_entry,
);
