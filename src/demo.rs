//! Sample data for a new tenant (`"seed_demo_data": true` when provisioning): a few
//! products for every tenant, and its domain's records.

use chrono::{NaiveDate, Utc};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbErr, EntityTrait};

use crate::{
    entities::{material, patient, product},
    tenant::{Feature, TenantConfig},
};

const PRODUCTS: [(&str, i64); 5] = [
    ("Starter kit", 4_999),
    ("Annual service plan", 120_000),
    ("Replacement filter", 1_250),
    ("Consultation (30 min)", 2_500),
    ("Delivery", 600),
];
const PATIENTS: [(&str, &str); 3] = [
    ("Asha Rao", "1988-02-14"),
    ("Vikram Mehta", "1975-09-30"),
    ("Meera Iyer", "2001-06-05"),
];
const MATERIALS: [(&str, &str, f64); 3] = [
    ("Mild steel sheet 2mm", "kg", 1_200.0),
    ("Aluminium rod 10mm", "m", 340.0),
    ("M8 hex bolt", "pcs", 5_000.0),
];

/// Inserts the sample rows the tenant's features call for.
pub async fn seed(db: &DatabaseConnection, tenant: &TenantConfig) -> Result<(), DbErr> {
    let now = Utc::now();
    product::Entity::insert_many(PRODUCTS.map(|(name, cents)| product::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set(name.into()),
        price_cents: Set(cents),
        created_at: Set(now),
        updated_at: Set(now),
    }))
    .exec(db)
    .await?;
    if tenant.features.contains(Feature::PatientManagement) {
        patient::Entity::insert_many(PATIENTS.map(|(name, born)| patient::ActiveModel {
            id: Set(uuid::Uuid::new_v4()),
            name: Set(name.into()),
            date_of_birth: Set(NaiveDate::parse_from_str(born, "%Y-%m-%d").ok()),
            phone: Set(None),
            email: Set(None),
            notes: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }))
        .exec(db)
        .await?;
    }
    if tenant.features.contains(Feature::MaterialManagement) {
        material::Entity::insert_many(MATERIALS.map(|(name, unit, stock)| material::ActiveModel {
            id: Set(uuid::Uuid::new_v4()),
            name: Set(name.into()),
            unit: Set(unit.into()),
            stock: Set(stock),
            created_at: Set(now),
            updated_at: Set(now),
        }))
        .exec(db)
        .await?;
    }
    Ok(())
}
