//! `tenant_moves`: a tenant's move to another server while it serves (`tenants
//! move`). The row lives from the start of the copy until the operator confirms the
//! move and the old storage is dropped; it says where the tenant goes (sealed) and
//! what the last attempt got to, so that a move cut short by a crash is resumed
//! or rolled back, never left half done.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenant_moves")
                    .if_not_exists()
                    .col(string_len("tenant_id", 63).primary_key())
                    // Sealed like tenant_configs.database_url.
                    .col(text("source_url"))
                    .col(text("target_url"))
                    // copying | switched
                    .col(string_len("state", 16))
                    // The longest time writes were held at the switch.
                    .col(big_integer_null("pause_ms"))
                    .col(text_null("error"))
                    .col(timestamp_with_time_zone("started_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("tenant_moves").to_owned())
            .await
    }
}
