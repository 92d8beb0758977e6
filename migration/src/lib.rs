//! Schema migrations applied to every tenant database.
//!
//! Every tenant database holds every table; the feature gate, not the schema, decides
//! what a tenant's API exposes. Migrations are append-only: a released migration is
//! never edited, a change is a new file.

pub use sea_orm_migration::MigrationStatus;
pub use sea_orm_migration::prelude::*;

pub mod control;
mod m20261123_000001_create_products;
mod m20261123_000002_create_patients;
mod m20261123_000003_create_materials;
mod m20261123_000004_create_domain_tables;
mod m20261124_000005_create_auth_tables;

/// Builds and upgrades a tenant database to the current schema.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_products::Migration),
            Box::new(m20261123_000002_create_patients::Migration),
            Box::new(m20261123_000003_create_materials::Migration),
            Box::new(m20261123_000004_create_domain_tables::Migration),
            Box::new(m20261124_000005_create_auth_tables::Migration),
        ]
    }
}
