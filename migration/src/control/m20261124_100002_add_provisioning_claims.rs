//! Who is provisioning a tenant and what it did to the storage, so that a
//! provisioning cut short by a crash can be rolled back: `claimed_by` names the
//! process (`host/pid/nonce`), `storage` is `existing` or `new` once checked (a new
//! storage is dropped on roll-back, an existing one is left alone). And where the
//! tenant's data is (`storage_key`, unique), so that two provisionings racing onto
//! one database cannot both succeed. And the tenant's `generation`: a tenant
//! provisioned again under the same id gets a new one, which its tokens carry.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite alters one thing at a time.
        manager
            .alter_table(
                Table::alter()
                    .table("tenant_configs")
                    .add_column(string_len_null("claimed_by", 200))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("tenant_configs")
                    .add_column(string_len_null("storage", 20))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("tenant_configs")
                    .add_column(string_len_null("storage_key", 1000))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("tenant_configs")
                    .add_column(string_len_null("generation", 64))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tenant_configs_storage_key")
                    .table("tenant_configs")
                    .col("storage_key")
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("tenant_configs_storage_key")
                    .table("tenant_configs")
                    .to_owned(),
            )
            .await?;
        for column in ["generation", "storage_key", "storage", "claimed_by"] {
            manager
                .alter_table(
                    Table::alter()
                        .table("tenant_configs")
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
