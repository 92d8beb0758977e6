//! `tenant_configs`: one row per tenant added at run time, with the fields of
//! `tenants.toml` (JSON for branding, features and contact details).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenant_configs")
                    .if_not_exists()
                    .col(string_len("id", 63).primary_key())
                    .col(text("database_url"))
                    .col(string_len("domain", 20))
                    .col(string_len_uniq("subdomain", 63))
                    .col(json_null("features"))
                    .col(json("branding"))
                    .col(string_len_null("gst_number", 500))
                    .col(json("contact_info"))
                    .col(boolean("is_active"))
                    .col(boolean("demo").default(false))
                    .col(integer_null("max_connections"))
                    .col(string_len("isolation", 20))
                    // 'provisioning' while its storage is being made, then 'ready'.
                    .col(string_len("state", 20))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("tenant_configs").to_owned())
            .await
    }
}
