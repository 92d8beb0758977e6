//! Authentication and audit: the tenant's users, its API keys, and the audit log of
//! every write made through the API. They live in the tenant's own database, so a
//! tenant's credentials and history leave with it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("users")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len_uniq("username", 64))
                    .col(string_len_null("email", 254))
                    .col(text("password_hash"))
                    .col(string_len("role", 16))
                    .col(boolean("is_active"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("api_keys")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len("name", 100))
                    .col(string_len("role", 16))
                    // SHA-256 of the key's secret part, hex: the key itself is shown once.
                    .col(string_len("secret_hash", 64))
                    .col(uuid_null("created_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("last_used_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("audit_log")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(timestamp_with_time_zone("at"))
                    // user, api_key, gateway (AUTH_MODE=none) or operator (admin token)
                    .col(string_len("actor_kind", 16))
                    .col(string_len_null("actor_id", 64))
                    .col(string_len_null("actor_name", 100))
                    .col(string_len("entity", 64))
                    .col(string_len_null("entity_id", 64))
                    .col(string_len("action", 32))
                    .col(string_len("request_id", 64))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_audit_log_entity_at")
                    .table("audit_log")
                    .col("entity")
                    .col("at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_audit_log_at")
                    .table("audit_log")
                    .col("at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["audit_log", "api_keys", "users"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
