//! Patients: the dental domain's patient records.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("patients")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len("name", 200))
                    .col(date_null("date_of_birth"))
                    .col(string_len_null("phone", 50))
                    .col(string_len_null("email", 254))
                    .col(text_null("notes"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_patients_created_at")
                    .table("patients")
                    .col("created_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("patients").to_owned())
            .await
    }
}
