//! Sample data: for a new tenant when provisioning asks for it, and for a demo
//! tenant (`demo = true`) on first use and after a reset. Every tenant gets
//! products and a year of cash flow; a dental tenant patients, treatments and
//! supplies; a manufacturing tenant materials, a bill of materials and an order.

use chrono::{Datelike, Months, NaiveDate, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait};

use crate::{
    entities::{
        bom, bom_item, cash_flow_entry, dental_supply, material, patient, product,
        production_order, treatment,
    },
    registry::{InitFuture, TenantInitialiser},
    tenant::{Feature, TenantConfig},
};

/// A demo tenant's first use: sample data when its database holds none, and the
/// demo login when `demo_login` (outside production). The registry runs it after
/// the tenant's migrations.
pub struct DemoSeed {
    pub demo_login: bool,
}

impl TenantInitialiser for DemoSeed {
    fn initialise<'a>(
        &'a self,
        db: &'a sea_orm::DatabaseConnection,
        tenant: &'a TenantConfig,
    ) -> InitFuture<'a> {
        Box::pin(async move {
            // One transaction: a first use cut short (its client gone, a failure)
            // leaves no half of the sample data, which `is_empty` would then take
            // for a visitor's and never complete.
            if tenant.demo && is_empty(db).await? {
                let txn = begin_seed(db, tenant).await?;
                if is_empty(&txn).await? {
                    seed(&txn, tenant).await?;
                    txn.commit().await?;
                    tracing::info!("demo tenant seeded");
                } else {
                    txn.rollback().await?;
                }
            }
            if tenant.demo && self.demo_login {
                ensure_demo_user(db).await?;
            }
            Ok(())
        })
    }
}

/// The transaction a demo tenant's seed runs in, its lock taken: two replicas'
/// first uses at once seed once, the second finding the first's rows. On SQLite
/// it is `BEGIN IMMEDIATE` (the database's write lock); on PostgreSQL an advisory
/// lock of the tenant's, at READ COMMITTED whatever the server's default, so that
/// a read after the wait sees what the first committed.
async fn begin_seed(
    db: &sea_orm::DatabaseConnection,
    tenant: &TenantConfig,
) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    use sea_orm::{DbBackend, IsolationLevel, Statement, TransactionTrait};
    if db.get_database_backend() != DbBackend::Postgres {
        return crate::db::begin_write(db).await;
    }
    let txn = db
        .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
        .await?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        [seed_lock_key(tenant).into()],
    ))
    .await?;
    Ok(txn)
}

/// The name of the advisory lock a tenant's demo seed holds.
fn seed_lock_key(tenant: &TenantConfig) -> String {
    format!("tenant-router demo seed {}", tenant.id)
}

/// Whether the tenant's database holds no business data yet: a demo tenant is
/// seeded only then, so that what a visitor adds is never doubled up.
pub async fn is_empty(db: &impl ConnectionTrait) -> Result<bool, DbErr> {
    Ok(product::Entity::find().count(db).await? == 0
        && cash_flow_entry::Entity::find().count(db).await? == 0)
}

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
pub async fn seed<C: ConnectionTrait + sea_orm::TransactionTrait>(
    db: &C,
    tenant: &TenantConfig,
) -> Result<(), DbErr> {
    let now = Utc::now();
    product::Entity::insert_many(PRODUCTS.map(|(name, cents)| product::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set(name.into()),
        price_cents: Set(cents),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }))
    .exec(db)
    .await?;
    if tenant.features.contains(Feature::PatientManagement) {
        let ids = PATIENTS.map(|_| uuid::Uuid::new_v4());
        patient::Entity::insert_many(PATIENTS.iter().zip(ids).map(|((name, born), id)| {
            patient::ActiveModel {
                id: Set(id),
                name: Set((*name).into()),
                date_of_birth: Set(NaiveDate::parse_from_str(born, "%Y-%m-%d").ok()),
                phone: Set(None),
                email: Set(None),
                notes: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
            }
        }))
        .exec(db)
        .await?;
        if tenant.features.contains(Feature::TreatmentTracking) {
            treatment::Entity::insert_many(
                ids.iter()
                    .zip([
                        ("Scaling and polishing", "completed", 2_500),
                        ("Root canal, tooth 36", "in_progress", 18_000),
                        ("Crown fitting", "planned", 22_000),
                    ])
                    .map(
                        |(patient, (description, status, cents))| treatment::ActiveModel {
                            id: Set(uuid::Uuid::new_v4()),
                            patient_id: Set(*patient),
                            description: Set(description.into()),
                            status: Set(status.into()),
                            cost_cents: Set(cents * 100),
                            scheduled_on: Set(None),
                            created_at: Set(now),
                            updated_at: Set(now),
                            deleted_at: Set(None),
                        },
                    ),
            )
            .exec(db)
            .await?;
        }
    }
    if tenant.features.contains(Feature::MaterialManagement) {
        let ids = MATERIALS.map(|_| uuid::Uuid::new_v4());
        material::Entity::insert_many(MATERIALS.iter().zip(ids).map(
            |((name, unit, stock), id)| material::ActiveModel {
                id: Set(id),
                name: Set((*name).into()),
                unit: Set((*unit).into()),
                stock: Set(*stock),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
            },
        ))
        .exec(db)
        .await?;
        if tenant.features.contains(Feature::BomManagement) {
            seed_bom(
                db,
                ids,
                tenant.features.contains(Feature::ProductionTracking),
            )
            .await?;
        }
    }
    if tenant.features.contains(Feature::DentalSupplies) {
        dental_supply::Entity::insert_many(SUPPLIES.map(|(name, unit, stock, reorder)| {
            dental_supply::ActiveModel {
                id: Set(uuid::Uuid::new_v4()),
                name: Set(name.into()),
                unit: Set(unit.into()),
                stock: Set(stock),
                reorder_level: Set(reorder),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
            }
        }))
        .exec(db)
        .await?;
    }
    if tenant.features.contains(Feature::CashFlow) {
        seed_cash_flow(db).await?;
    }
    Ok(())
}

const SUPPLIES: [(&str, &str, f64, f64); 3] = [
    ("Nitrile gloves (box)", "box", 40.0, 10.0),
    ("Composite resin A2", "syringe", 6.0, 8.0),
    ("Disposable bibs", "pack", 25.0, 5.0),
];

/// A cabinet made of the seeded materials, and a planned order of ten.
async fn seed_bom(
    db: &impl ConnectionTrait,
    materials: [uuid::Uuid; 3],
    with_order: bool,
) -> Result<(), DbErr> {
    let now = Utc::now();
    let id = uuid::Uuid::new_v4();
    bom::Entity::insert(bom::ActiveModel {
        id: Set(id),
        name: Set("Steel storage cabinet".into()),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    })
    .exec(db)
    .await?;
    bom_item::Entity::insert_many(materials.iter().zip([18.0, 4.0, 24.0]).map(
        |(material, quantity)| bom_item::ActiveModel {
            id: Set(uuid::Uuid::new_v4()),
            bom_id: Set(id),
            material_id: Set(*material),
            quantity: Set(quantity),
        },
    ))
    .exec(db)
    .await?;
    if with_order {
        production_order::Entity::insert(production_order::ActiveModel {
            id: Set(uuid::Uuid::new_v4()),
            bom_id: Set(id),
            quantity: Set(10.0),
            status: Set("planned".into()),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        })
        .exec(db)
        .await?;
    }
    Ok(())
}

/// Twelve months of income and expenses ending this month, with 18% tax.
async fn seed_cash_flow(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let now = Utc::now();
    let this_month = now
        .date_naive()
        .with_day(1)
        .unwrap_or_else(|| now.date_naive());
    let mut rows = Vec::new();
    for back in 0..12u32 {
        let Some(month) = this_month.checked_sub_months(Months::new(back)) else {
            continue;
        };
        for (kind, cents, day, description) in [
            ("income", 185_000 + i64::from(back) * 3_500, 5, "Sales"),
            ("expense", 62_000, 10, "Rent"),
            (
                "expense",
                24_500 + i64::from(back % 3) * 1_000,
                20,
                "Supplies",
            ),
        ] {
            let date = month.with_day(day).unwrap_or(month);
            rows.push(cash_flow_entry::ActiveModel {
                id: Set(uuid::Uuid::new_v4()),
                kind: Set(kind.into()),
                amount_cents: Set(cents),
                tax_cents: Set(cents * 18 / 100),
                entry_date: Set(date),
                description: Set(Some(description.into())),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
            });
        }
    }
    cash_flow_entry::Entity::insert_many(rows).exec(db).await?;
    Ok(())
}

/// The demo tenant's login, as the README gives it.
pub const DEMO_USERNAME: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo123";

/// Creates the demo login (an admin) if the tenant has no user of that name. Never
/// with `APP_ENV=production`: a well-known password has no place there.
pub async fn ensure_demo_user(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let new = crate::auth::users::NewUser {
        username: DEMO_USERNAME.into(),
        password: DEMO_PASSWORD.into(),
        email: None,
        role: crate::auth::Role::Admin.as_str().into(),
    };
    match crate::auth::users::create(db, new, true).await {
        Ok(_) => {
            tracing::info!("demo login created");
            Ok(())
        }
        Err(crate::error::AppError::Conflict(_)) => Ok(()),
        Err(e) => Err(DbErr::Custom(format!("demo login: {e:?}"))),
    }
}

/// Removes every business row of the tenant (children before parents). Run it in a
/// write transaction (`db::begin_write`).
pub async fn clear(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        // Writes running at the same time would otherwise add a row that points at
        // a parent this is about to delete (the delete fails), or the reverse. The
        // lock waits for those writes and holds new ones until the reset commits;
        // reads go on, and so do the foreign-key checks of writes (their row share
        // locks: a mode that held them would deadlock with an insert, which takes
        // its child table before the check reads the parent). Tables are locked in
        // the order the handlers write them (a material, then the order it goes
        // to; a bill, then its items), so a write holding one table never waits on
        // a reset holding the next; and no handler locks a row with `FOR UPDATE`
        // before it holds its table's write lock. SQLite's write transaction serialises writes
        // already.
        for table in [
            "materials",
            "boms",
            "bom_items",
            "production_orders",
            "patients",
            "treatments",
            "dental_supplies",
            "products",
            "cash_flow_entries",
        ] {
            // One table per statement: the schema qualifier reads one name after
            // `TABLE`.
            db.execute_unprepared(&format!(
                "LOCK TABLE \"{table}\" IN SHARE ROW EXCLUSIVE MODE"
            ))
            .await?;
        }
    }
    for table in [
        "production_orders",
        "bom_items",
        "boms",
        "treatments",
        "patients",
        "dental_supplies",
        "materials",
        "products",
        "cash_flow_entries",
    ] {
        // Quoted, so that a schema tenant's statement is qualified with its schema.
        db.execute_unprepared(&format!("DELETE FROM \"{table}\""))
            .await?;
    }
    Ok(())
}

/// Live (not deleted) rows of each business table.
pub async fn status(
    db: &impl ConnectionTrait,
) -> Result<serde_json::Map<String, serde_json::Value>, DbErr> {
    let mut counts = serde_json::Map::new();
    for table in [
        "products",
        "cash_flow_entries",
        "patients",
        "treatments",
        "dental_supplies",
        "materials",
        "boms",
        "production_orders",
    ] {
        let sql = format!("SELECT COUNT(*) AS n FROM \"{table}\" WHERE deleted_at IS NULL");
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql,
            ))
            .await?;
        let n: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        counts.insert(table.into(), n.into());
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait};

    use super::*;

    #[tokio::test]
    async fn a_seed_that_fails_partway_leaves_nothing_and_the_next_use_seeds_all() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/demo.db?mode=rwc", dir.path().display());
        let db = crate::db::connect(url.clone()).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let tenant = crate::settings::parse_tenants_toml(&format!(
            "[tenants.demo]\ndatabase_url = \"{url}\"\ndemo = true\n"
        ))
        .unwrap()
        .remove(0);
        // The cash flow, inserted after the products, fails.
        db.execute_unprepared(
            "CREATE TRIGGER refuse BEFORE INSERT ON cash_flow_entries \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .await
        .unwrap();
        let seeding = DemoSeed { demo_login: false };
        assert!(seeding.initialise(&db, &tenant).await.is_err());
        assert_eq!(product::Entity::find().count(&db).await.unwrap(), 0);
        db.execute_unprepared("DROP TRIGGER refuse").await.unwrap();
        seeding.initialise(&db, &tenant).await.unwrap();
        assert_eq!(product::Entity::find().count(&db).await.unwrap(), 5);
        assert!(cash_flow_entry::Entity::find().count(&db).await.unwrap() > 0);
    }

    /// A first use that meets another replica's seed in progress waits for it,
    /// then finds its rows, even where the server's default isolation is
    /// REPEATABLE READ.
    #[tokio::test]
    async fn a_first_use_on_postgres_waits_for_a_seed_in_progress_and_finds_its_rows() {
        use sea_orm::TransactionTrait;
        let Some(pg) = crate::db::testing::PgTestDb::create().await else {
            return;
        };
        let other = crate::db::connect(pg.url.clone()).await.unwrap();
        Migrator::up(&other, None).await.unwrap();
        other
            .execute_unprepared(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET \
                 default_transaction_isolation = %L', current_database(), 'repeatable read'); \
                 END $$",
            )
            .await
            .unwrap();
        // Connected since: its sessions start at REPEATABLE READ.
        let db = crate::db::connect(pg.url.clone()).await.unwrap();
        let tenant = crate::settings::parse_tenants_toml(&format!(
            "[tenants.demo]\ndatabase_url = \"{}\"\ndemo = true\n",
            pg.url
        ))
        .unwrap()
        .remove(0);
        // The other replica's seed: its lock held, one row written, not committed.
        let seeding = other.begin().await.unwrap();
        seeding
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                [seed_lock_key(&tenant).into()],
            ))
            .await
            .unwrap();
        seeding
            .execute_unprepared(
                "INSERT INTO products (id, name, price_cents, created_at, updated_at) \
                 VALUES (gen_random_uuid(), 'theirs', 1, now(), now())",
            )
            .await
            .unwrap();
        let first_use = tokio::spawn(async move {
            DemoSeed { demo_login: false }
                .initialise(&db, &tenant)
                .await
                .map(|()| db)
        });
        // Until this first use waits on the lock (with no lock, it never does,
        // and seeds at once).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let waiting = other
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                !first_use.is_finished(),
                "the first use did not wait for the seed"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the first use never waited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        seeding.commit().await.unwrap();
        let db = first_use.await.unwrap().unwrap();
        assert_eq!(product::Entity::find().count(&db).await.unwrap(), 1);
        db.close().await.unwrap();
        other.close().await.unwrap();
        pg.drop().await;
    }
}
