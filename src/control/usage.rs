//! Usage per tenant and day (UTC) in the control database, for billing: every
//! replica adds its counts to the day's row (`crate::usage` collects them), and
//! active users are kept one row per user and day, so that a user seen by two
//! replicas counts once. Kept after a tenant is deleted: its last bill needs them.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use serde::Serialize;

use super::ControlStore;

/// The `tenant_usage` table.
pub mod tenant_usage {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_usage")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: String,
        pub requests: i64,
        pub writes: i64,
        pub rows_written: i64,
        pub storage_bytes: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `tenant_active_users` table.
pub mod tenant_active_user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_active_users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What one replica counted for a tenant on a day since it last wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageCounts {
    pub tenant_id: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub requests: u64,
    pub writes: u64,
    pub rows_written: u64,
    /// The size last measured, if it was measured since.
    pub storage_bytes: Option<u64>,
}

/// A user seen making a request for a tenant on a day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActiveUser {
    pub tenant_id: String,
    pub day: String,
    pub user_id: String,
}

/// One day of a tenant's usage, as the control database has it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageDay {
    pub day: String,
    /// Requests served for the tenant (any status).
    pub requests: u64,
    /// Committed writes: POST, PUT, PATCH and DELETE requests answered 2xx, each
    /// with its audit row.
    pub writes: u64,
    /// Rows those writes inserted, updated or deleted (their audit rows aside).
    pub rows_written: u64,
    /// The storage's size last measured that day.
    pub storage_bytes: Option<u64>,
    /// Distinct users who made a request that day.
    pub active_users: u64,
}

/// Rows per statement: 6 bound values each, well under SQLite's limit of 32,766.
const CHUNK: usize = 500;

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ControlStore {
    /// Adds one replica's counts and active users, in one transaction: all of
    /// them or none (then the caller keeps them for the next attempt).
    pub async fn add_usage(
        &self,
        counts: &[UsageCounts],
        users: &[ActiveUser],
    ) -> Result<(), DbErr> {
        use tenant_usage::Column;
        // A few statements whatever the number of tenants: the transaction holds
        // the control database's write lock (SQLite) for as short a time as can be.
        let txn = self.db.begin().await?;
        for chunk in counts.chunks(CHUNK) {
            let rows = chunk.iter().map(|c| tenant_usage::ActiveModel {
                tenant_id: Set(c.tenant_id.clone()),
                day: Set(c.day.clone()),
                requests: Set(stored(c.requests)),
                writes: Set(stored(c.writes)),
                rows_written: Set(stored(c.rows_written)),
                storage_bytes: Set(c.storage_bytes.map(stored)),
            });
            tenant_usage::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([Column::TenantId, Column::Day])
                        .value(
                            Column::Requests,
                            Expr::cust("tenant_usage.requests + excluded.requests"),
                        )
                        .value(
                            Column::Writes,
                            Expr::cust("tenant_usage.writes + excluded.writes"),
                        )
                        .value(
                            Column::RowsWritten,
                            Expr::cust("tenant_usage.rows_written + excluded.rows_written"),
                        )
                        .value(
                            Column::StorageBytes,
                            Expr::cust(
                                "COALESCE(excluded.storage_bytes, tenant_usage.storage_bytes)",
                            ),
                        )
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        for chunk in users.chunks(CHUNK) {
            let rows = chunk.iter().map(|u| tenant_active_user::ActiveModel {
                tenant_id: Set(u.tenant_id.clone()),
                day: Set(u.day.clone()),
                user_id: Set(u.user_id.clone()),
            });
            tenant_active_user::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        tenant_active_user::Column::TenantId,
                        tenant_active_user::Column::Day,
                        tenant_active_user::Column::UserId,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await
    }

    /// A tenant's usage from `from` to `to` (days `YYYY-MM-DD`, both included),
    /// one entry per day with any, and the distinct users over the whole range.
    pub async fn usage(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<(Vec<UsageDay>, u64), DbErr> {
        use tenant_active_user::Column as U;
        use tenant_usage::Column;
        let rows = tenant_usage::Entity::find()
            .filter(Column::TenantId.eq(tenant))
            .filter(Column::Day.between(from, to))
            .order_by_asc(Column::Day)
            .all(&self.db)
            .await?;
        let per_day: Vec<(String, i64)> = tenant_active_user::Entity::find()
            .select_only()
            .column(U::Day)
            .column_as(Expr::cust("COUNT(*)"), "users")
            .filter(U::TenantId.eq(tenant))
            .filter(U::Day.between(from, to))
            .group_by(U::Day)
            .into_tuple()
            .all(&self.db)
            .await?;
        let distinct: Option<i64> = tenant_active_user::Entity::find()
            .select_only()
            .column_as(Expr::cust("COUNT(DISTINCT user_id)"), "users")
            .filter(U::TenantId.eq(tenant))
            .filter(U::Day.between(from, to))
            .into_tuple()
            .one(&self.db)
            .await?;
        let users_on = |day: &str| {
            per_day
                .iter()
                .find(|(d, _)| d == day)
                .map_or(0, |(_, n)| count(*n))
        };
        let days: Vec<UsageDay> = rows
            .into_iter()
            .map(|r| UsageDay {
                active_users: users_on(&r.day),
                requests: count(r.requests),
                writes: count(r.writes),
                rows_written: count(r.rows_written),
                storage_bytes: r.storage_bytes.map(count),
                day: r.day,
            })
            .collect();
        Ok((days, distinct.map_or(0, count)))
    }
}
