//! Migrations of the control database: the registry of tenants added at run time.
//! Kept apart from the tenant [`Migrator`](crate::Migrator): the control database
//! holds no tenant data.

use sea_orm_migration::prelude::*;

mod m20261123_100001_create_tenant_configs;

/// Builds and upgrades the control database.
pub struct ControlMigrator;

#[async_trait::async_trait]
impl MigratorTrait for ControlMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261123_100001_create_tenant_configs::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "seaql_control_migrations".into_iden()
    }
}
