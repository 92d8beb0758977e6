//! Migrations of the control database: the registry of tenants added at run time.
//! Kept apart from the tenant [`Migrator`](crate::Migrator): the control database
//! holds no tenant data.

use sea_orm_migration::prelude::*;

mod m20261123_100001_create_tenant_configs;
mod m20261124_100002_add_provisioning_claims;
mod m20261124_100003_create_initialised_storage;
mod m20261201_100004_create_tenant_usage;
mod m20261202_100005_notify_tenant_changes;
mod m20261202_100006_create_tenant_moves;
mod m20261207_100007_add_tenant_limits;

/// Builds and upgrades the control database.
pub struct ControlMigrator;

#[async_trait::async_trait]
impl MigratorTrait for ControlMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_100001_create_tenant_configs::Migration),
            Box::new(m20261124_100002_add_provisioning_claims::Migration),
            Box::new(m20261124_100003_create_initialised_storage::Migration),
            Box::new(m20261201_100004_create_tenant_usage::Migration),
            Box::new(m20261202_100005_notify_tenant_changes::Migration),
            Box::new(m20261202_100006_create_tenant_moves::Migration),
            Box::new(m20261207_100007_add_tenant_limits::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "seaql_control_migrations".into_iden()
    }
}
