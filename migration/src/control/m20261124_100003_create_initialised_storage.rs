//! `initialised_storage`: every tenant storage (SQLite file, PostgreSQL database or
//! schema) the router has created or found and migrated. One that is listed here
//! and is gone has disappeared: it is reported, never created again empty.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("initialised_storage")
                    .if_not_exists()
                    // `sqlite:<path>` or `postgres:<host>:<port>/<db>[/<schema>]`.
                    .col(string_len("storage_key", 1000).primary_key())
                    .col(string_len("tenant_id", 63))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("initialised_storage").to_owned())
            .await
    }
}
