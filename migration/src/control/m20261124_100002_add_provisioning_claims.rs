//! Who is provisioning a tenant and what it did to the storage, so that a
//! provisioning cut short by a crash can be rolled back: `claimed_by` names the
//! process (`host/pid/nonce`), `storage` is `existing` or `new` once checked (a new
//! storage is dropped on roll-back, an existing one is left alone).

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
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["storage", "claimed_by"] {
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
