//! On PostgreSQL, every change to `tenant_configs` (insert, update, delete,
//! truncate, by the router or by hand) sends a notification on the channel
//! `tenant_router_tenants` when its transaction commits, so that every replica
//! listening reloads its tenants at once instead of at its next poll. SQLite has
//! no notifications: one process, or polling, there.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE OR REPLACE FUNCTION tenant_router_notify_tenants() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('tenant_router_tenants', ''); \
             RETURN NULL; END $$",
        )
        .await?;
        db.execute_unprepared("DROP TRIGGER IF EXISTS tenant_configs_notify ON tenant_configs")
            .await?;
        db.execute_unprepared(
            "CREATE TRIGGER tenant_configs_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE \
             ON tenant_configs FOR EACH STATEMENT EXECUTE FUNCTION tenant_router_notify_tenants()",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("DROP TRIGGER IF EXISTS tenant_configs_notify ON tenant_configs")
            .await?;
        db.execute_unprepared("DROP FUNCTION IF EXISTS tenant_router_notify_tenants()")
            .await?;
        Ok(())
    }
}
