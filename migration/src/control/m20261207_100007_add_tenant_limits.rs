//! A tenant's own request limits and storage quota (`rate_limit_per_sec`,
//! `rate_limit_burst`, `max_concurrent_requests`, `storage_quota_bytes`), as one
//! JSON object: a limit set when provisioning or by `PATCH` was kept only in the
//! registry of the replica that took it, and the next reload of the control rows
//! dropped it. `NULL` (rows written before): no limits of its own.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("tenant_configs")
                    .add_column(json_null("limits"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("tenant_configs")
                    .drop_column("limits")
                    .to_owned(),
            )
            .await
    }
}
