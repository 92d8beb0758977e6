//! Records read straight from PostgreSQL rows, for the read paths every request
//! of a list or a lookup takes.
//!
//! sea-orm's derived decoding looks each column up by name, wraps each value in
//! an `Option` to tell a missing column from a null, and builds an error message
//! (a `Debug` string) for every null it meets on the way: the `deleted_at` of each
//! live record. With sqlx's timestamp decoding (three conversions per value), that
//! was about 4,600 instructions per row, a third of the router's work for a page
//! of 20 products (callgrind). [`all`] and [`one`] decode each column by its
//! position, once the first row's column names and types have been checked
//! against the record's fields, and timestamps from PostgreSQL's binary form
//! directly. The rows of one result share one description of their columns, so
//! the first row's check holds for every row: sqlx's own check of each value's
//! type against its field (about 150 instructions a value, 15,000 for a page of
//! 20 products) is not made again.
//! Anything else (SQLite, another column list, a text-format value) goes through
//! sea-orm or sqlx as before. The records are the same either way; errors (a
//! value of another type, a null in a required field) are worded differently, and
//! a timestamp of `infinity`, on which sqlx panics, is an error here.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryResult, QuerySelect, QueryTrait,
    Select, Statement,
    sqlx::{
        Column, Row, Type, ValueRef,
        postgres::{PgColumn, PgRow, PgTypeInfo, PgValueFormat, Postgres},
    },
};
use uuid::Uuid;

/// A record that can be read from a PostgreSQL row by column position.
pub trait FromPgRow: FromQueryResult {
    /// The record's columns, in the order of its fields: the order of the
    /// entity's `find()` select list.
    const COLUMNS: &'static [&'static str];

    /// Whether each of `columns`, by position, holds a type its field reads.
    fn types_match(columns: &[PgColumn]) -> bool;

    /// The record in `row`, whose columns [`reads_directly`] has accepted (the
    /// values' types are not checked again).
    fn from_pg_row(row: &PgRow) -> Result<Self, DbErr>;
}

/// Every row `select` finds, as records.
pub async fn all<E>(select: Select<E>, db: &impl ConnectionTrait) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromPgRow,
{
    all_of(select.build(db.get_database_backend()), db).await
}

/// Every row `statement` (a select of `M`'s columns) finds, as records.
pub async fn all_of<M: FromPgRow>(
    statement: Statement,
    db: &impl ConnectionTrait,
) -> Result<Vec<M>, DbErr> {
    let rows = db.query_all_raw(statement).await?;
    let direct = rows.first().is_some_and(reads_directly::<M>);
    rows.iter().map(|row| record(row, direct)).collect()
}

/// The first row `select` finds, as a record.
pub async fn one<E>(select: Select<E>, db: &impl ConnectionTrait) -> Result<Option<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromPgRow,
{
    one_of(select.limit(1).build(db.get_database_backend()), db).await
}

/// The first row `statement` (a select of `M`'s columns) finds, as a record.
pub async fn one_of<M: FromPgRow>(
    statement: Statement,
    db: &impl ConnectionTrait,
) -> Result<Option<M>, DbErr> {
    let row = db.query_one_raw(statement).await?;
    row.map(|row| record(&row, reads_directly::<M>(&row)))
        .transpose()
}

/// Whether `row` is a PostgreSQL row with exactly `M`'s columns, in its order,
/// each of a type its field reads. Every row of the same result has the same
/// columns.
pub fn reads_directly<M: FromPgRow>(row: &QueryResult) -> bool {
    row.try_as_pg_row().is_some_and(|pg| {
        let columns = pg.columns();
        columns.len() == M::COLUMNS.len()
            && columns
                .iter()
                .zip(M::COLUMNS)
                .all(|(column, name)| column.name() == *name)
            && M::types_match(columns)
    })
}

fn record<M: FromPgRow>(row: &QueryResult, direct: bool) -> Result<M, DbErr> {
    match row.try_as_pg_row() {
        Some(pg) if direct => M::from_pg_row(pg),
        _ => M::from_query_result(row, ""),
    }
}

/// One column's value, by position.
pub trait PgField: Sized {
    /// Whether a column of type `ty` holds this field.
    fn compatible(ty: &PgTypeInfo) -> bool;

    /// The value, from a column whose type [`PgField::compatible`] has accepted.
    fn get(row: &PgRow, index: usize) -> Result<Self, DbErr>;
}

fn decode_error(row: &PgRow, index: usize, err: impl std::fmt::Display) -> DbErr {
    let column = row.columns().get(index).map_or("?", |c| c.name());
    DbErr::Type(format!("column {column}: {err}"))
}

macro_rules! by_sqlx {
    ($($ty:ty),* $(,)?) => {
        $(
            impl PgField for $ty {
                fn compatible(ty: &PgTypeInfo) -> bool {
                    <$ty as Type<Postgres>>::compatible(ty)
                }

                fn get(row: &PgRow, index: usize) -> Result<Self, DbErr> {
                    // Only once the column's type has been checked: the decoding
                    // refuses a null, but some of sqlx's decoders read a fixed
                    // number of bytes without checking the value's size.
                    row.try_get_unchecked(index)
                        .map_err(|e| decode_error(row, index, e))
                }
            }
        )*
    };
}

by_sqlx!(Uuid, String, i64, f64, NaiveDate);

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl PgField for DateTime<Utc> {
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }

    fn get(row: &PgRow, index: usize) -> Result<Self, DbErr> {
        let value = row
            .try_get_raw(index)
            .map_err(|e| decode_error(row, index, e))?;
        // A binary `timestamptz` is microseconds since PostgreSQL's epoch (UTC).
        if !value.is_null() && value.format() == PgValueFormat::Binary {
            let bytes = value.as_bytes().map_err(|e| decode_error(row, index, e))?;
            let micros = <[u8; 8]>::try_from(bytes)
                .ok()
                .map(i64::from_be_bytes)
                .and_then(|m| m.checked_add(POSTGRES_EPOCH_MICROS))
                .and_then(DateTime::from_timestamp_micros);
            return micros.ok_or_else(|| decode_error(row, index, "timestamp out of range"));
        }
        // Anything else (a null, text format): sqlx's own decoding.
        row.try_get_unchecked(index)
            .map_err(|e| decode_error(row, index, e))
    }
}

impl<T: PgField> PgField for Option<T> {
    fn compatible(ty: &PgTypeInfo) -> bool {
        T::compatible(ty)
    }

    fn get(row: &PgRow, index: usize) -> Result<Self, DbErr> {
        let value = row
            .try_get_raw(index)
            .map_err(|e| decode_error(row, index, e))?;
        if value.is_null() {
            Ok(None)
        } else {
            T::get(row, index).map(Some)
        }
    }
}

/// The next column's position.
fn next(index: &mut usize) -> usize {
    *index += 1;
    *index - 1
}

/// Whether `columns[index]` holds the field `_field` names (the closure only
/// names the field's type).
fn column_holds<M, T: PgField>(_field: fn(&M) -> &T, columns: &[PgColumn], index: usize) -> bool {
    columns
        .get(index)
        .is_some_and(|column| T::compatible(column.type_info()))
}

macro_rules! from_pg_row {
    ($($module:ident { $($field:ident),* $(,)? })*) => {
        $(
            impl FromPgRow for crate::entities::$module::Model {
                const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

                fn types_match(columns: &[PgColumn]) -> bool {
                    let mut index = 0;
                    true $(&& column_holds::<Self, _>(|m| &m.$field, columns, next(&mut index)))*
                }

                fn from_pg_row(row: &PgRow) -> Result<Self, DbErr> {
                    let mut index = 0;
                    Ok(Self {
                        $($field: PgField::get(row, next(&mut index))?,)*
                    })
                }
            }
        )*
    };
}

// Each list names every field (the struct literal fails to compile otherwise), in
// the entity's order (the tests check that each one is read directly).
from_pg_row! {
    product { id, name, price_cents, created_at, updated_at, deleted_at }
    patient {
        id, name, date_of_birth, phone, email, notes, created_at, updated_at, deleted_at
    }
    material { id, name, unit, stock, created_at, updated_at, deleted_at }
    treatment {
        id, patient_id, description, status, cost_cents, scheduled_on, created_at, updated_at,
        deleted_at
    }
    dental_supply { id, name, unit, stock, reorder_level, created_at, updated_at, deleted_at }
    bom { id, name, created_at, updated_at, deleted_at }
    production_order { id, bom_id, quantity, status, created_at, updated_at, deleted_at }
    cash_flow_entry {
        id, kind, amount_cents, tax_cents, entry_date, description, created_at, updated_at,
        deleted_at
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{
        ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, QueryFilter,
    };

    use super::*;
    use crate::{db::testing::PgTestDb, entities};

    /// Timestamps on both sides of PostgreSQL's epoch, with and without a
    /// fraction, and near the ends of what the API writes.
    fn moments() -> Vec<DateTime<Utc>> {
        let base = Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 24).unwrap();
        vec![
            base,
            base + Duration::microseconds(241_815),
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap() + Duration::microseconds(1),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + Duration::microseconds(999_999),
        ]
    }

    /// Rows in every table [`FromPgRow`] reads: each timestamp of [`moments`], each
    /// optional column both null and set, deleted and live.
    async fn fill(db: &DatabaseConnection) {
        let day = NaiveDate::from_ymd_opt(1987, 6, 5).unwrap();
        for (i, at) in moments().into_iter().enumerate() {
            let set = i % 2 == 0;
            let deleted = set.then_some(at + Duration::seconds(1));
            let id = |n: u128| Uuid::from_u128((i as u128) << 8 | n);
            entities::product::ActiveModel {
                id: Set(id(1)),
                name: Set(format!("product \"{i}\" ✓")),
                price_cents: Set(i as i64 * 1_999 - 5),
                created_at: Set(at),
                updated_at: Set(at + Duration::microseconds(i as i64)),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
            entities::patient::ActiveModel {
                id: Set(id(2)),
                name: Set(format!("patient {i}")),
                date_of_birth: Set(set.then_some(day)),
                phone: Set(set.then(|| "+1 555 0100".into())),
                email: Set((!set).then(|| "p@example.com".into())),
                notes: Set(set.then(String::new)),
                created_at: Set(at),
                updated_at: Set(at),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
            entities::material::ActiveModel {
                id: Set(id(3)),
                name: Set(format!("material {i}")),
                unit: Set("kg".into()),
                stock: Set(i as f64 * 0.1),
                created_at: Set(at),
                updated_at: Set(at),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
            entities::treatment::ActiveModel {
                id: Set(id(4)),
                patient_id: Set(id(2)),
                description: Set(format!("treatment {i}")),
                status: Set("planned".into()),
                cost_cents: Set(i64::MAX - i as i64),
                scheduled_on: Set((!set).then_some(day)),
                created_at: Set(at),
                updated_at: Set(at),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
            entities::dental_supply::ActiveModel {
                id: Set(id(5)),
                name: Set(format!("supply {i}")),
                unit: Set("box".into()),
                stock: Set(-(i as f64) / 3.0),
                reorder_level: Set(1e-9),
                created_at: Set(at),
                updated_at: Set(at),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
            entities::bom::ActiveModel {
                id: Set(id(6)),
                name: Set(format!("bom {i}")),
                created_at: Set(at),
                updated_at: Set(at),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
            entities::production_order::ActiveModel {
                id: Set(id(7)),
                bom_id: Set(id(6)),
                quantity: Set(i as f64 + 0.5),
                status: Set("open".into()),
                created_at: Set(at),
                updated_at: Set(at),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
            entities::cash_flow_entry::ActiveModel {
                id: Set(id(8)),
                kind: Set("income".into()),
                amount_cents: Set(i as i64 * 100),
                tax_cents: Set(i64::MIN + i as i64),
                entry_date: Set(day),
                description: Set(set.then(|| format!("entry {i}"))),
                created_at: Set(at),
                updated_at: Set(at),
                deleted_at: Set(deleted),
            }
            .insert(db)
            .await
            .unwrap();
        }
    }

    /// For entity `E`: [`all`] and [`one`] give what sea-orm gives for every row,
    /// and read `direct`ly (PostgreSQL) or through sea-orm (SQLite).
    async fn same_as_sea_orm<E>(db: &DatabaseConnection, direct: bool)
    where
        E: EntityTrait,
        E::Model: FromPgRow + PartialEq + std::fmt::Debug,
    {
        let ours = all(E::find(), db).await.unwrap();
        let theirs = E::find().all(db).await.unwrap();
        assert_eq!(ours.len(), moments().len());
        assert_eq!(ours, theirs);
        let rows = db
            .query_all_raw(E::find().build(db.get_database_backend()))
            .await
            .unwrap();
        assert!(
            rows.iter()
                .all(|row| reads_directly::<E::Model>(row) == direct),
            "{}: read directly: {}",
            E::default().table_name(),
            !direct
        );
        let first = one(E::find(), db).await.unwrap();
        assert_eq!(first, E::find().one(db).await.unwrap());
        assert!(first.is_some());
    }

    async fn check_every_entity(db: &DatabaseConnection, direct: bool) {
        use entities::*;
        same_as_sea_orm::<product::Entity>(db, direct).await;
        same_as_sea_orm::<patient::Entity>(db, direct).await;
        same_as_sea_orm::<material::Entity>(db, direct).await;
        same_as_sea_orm::<treatment::Entity>(db, direct).await;
        same_as_sea_orm::<dental_supply::Entity>(db, direct).await;
        same_as_sea_orm::<bom::Entity>(db, direct).await;
        same_as_sea_orm::<production_order::Entity>(db, direct).await;
        same_as_sea_orm::<cash_flow_entry::Entity>(db, direct).await;
        // A lookup that finds nothing, and one by id.
        let none = one(
            product::Entity::find().filter(product::Column::Id.eq(Uuid::nil())),
            db,
        )
        .await
        .unwrap();
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn postgres_rows_read_directly_are_the_records_sea_orm_reads() {
        let Some(pg) = PgTestDb::create().await else {
            return;
        };
        let db = crate::db::connect(pg.url.clone()).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        fill(&db).await;
        check_every_entity(&db, true).await;
        // Another column list (here, another order) goes through sea-orm.
        let reordered = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT name, id, price_cents, created_at, updated_at, deleted_at FROM products",
            ))
            .await
            .unwrap();
        assert!(!reads_directly::<entities::product::Model>(&reordered[0]));
        // So does a column of another type under a field's name: read without a
        // check, a float8's eight bytes would make a number of cents.
        let retyped = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT id, name, price_cents::float8 AS price_cents, created_at, updated_at, \
                 deleted_at FROM products",
            ))
            .await
            .unwrap();
        assert!(!reads_directly::<entities::product::Model>(&retyped[0]));
        let err = record::<entities::product::Model>(&retyped[0], false).unwrap_err();
        assert!(err.to_string().contains("price_cents"), "{err}");
        // A timestamp chrono cannot hold is an error, not a panic.
        db.execute_unprepared("UPDATE products SET updated_at = 'infinity'")
            .await
            .unwrap();
        let err = all(entities::product::Entity::find(), &db)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("updated_at"), "{err}");
        db.close().await.unwrap();
        pg.drop().await;
    }

    #[tokio::test]
    async fn sqlite_rows_are_read_by_sea_orm() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/rows.db?mode=rwc", dir.path().display());
        let db = crate::db::connect(url).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        fill(&db).await;
        check_every_entity(&db, false).await;
    }
}
