//! `tenant_usage` and `tenant_active_users`: what each tenant used per day (UTC),
//! for billing. Every replica adds its own counts to the day's row; active users
//! are kept one row per user and day, so that two replicas seeing the same user
//! count them once.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenant_usage")
                    .if_not_exists()
                    .col(string_len("tenant_id", 63))
                    // `YYYY-MM-DD`, UTC.
                    .col(string_len("day", 10))
                    .col(big_integer("requests").default(0))
                    .col(big_integer("writes").default(0))
                    .col(big_integer("rows_written").default(0))
                    // The last size measured that day.
                    .col(big_integer_null("storage_bytes"))
                    .primary_key(Index::create().col("tenant_id").col("day"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("tenant_active_users")
                    .if_not_exists()
                    .col(string_len("tenant_id", 63))
                    .col(string_len("day", 10))
                    .col(string_len("user_id", 36))
                    .primary_key(Index::create().col("tenant_id").col("day").col("user_id"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("tenant_active_users").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("tenant_usage").to_owned())
            .await
    }
}
