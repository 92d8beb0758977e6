//! The rest of the domains: soft delete on the first tables; dental treatments and
//! supplies; manufacturing bills of materials and production orders; cash flow.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const SOFT_DELETED: [&str; 3] = ["products", "patients", "materials"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in SOFT_DELETED {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(timestamp_with_time_zone_null("deleted_at"))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("treatments")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(uuid("patient_id"))
                    .col(string_len("description", 500))
                    .col(string_len("status", 20))
                    .col(big_integer("cost_cents"))
                    .col(date_null("scheduled_on"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_treatments_patient")
                            .from("treatments", "patient_id")
                            .to("patients", "id"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("dental_supplies")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len("name", 200))
                    .col(string_len("unit", 20))
                    .col(double("stock"))
                    .col(double("reorder_level"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("boms")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len("name", 200))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("bom_items")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(uuid("bom_id"))
                    .col(uuid("material_id"))
                    .col(double("quantity"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_bom_items_bom")
                            .from("bom_items", "bom_id")
                            .to("boms", "id"),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_bom_items_material")
                            .from("bom_items", "material_id")
                            .to("materials", "id"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("production_orders")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(uuid("bom_id"))
                    .col(double("quantity"))
                    .col(string_len("status", 20))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_production_orders_bom")
                            .from("production_orders", "bom_id")
                            .to("boms", "id"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("cash_flow_entries")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len("kind", 10))
                    .col(big_integer("amount_cents"))
                    .col(big_integer("tax_cents"))
                    .col(date("entry_date"))
                    .col(string_len_null("description", 500))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_cash_flow_entries_date")
                    .table("cash_flow_entries")
                    .col("entry_date")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "cash_flow_entries",
            "production_orders",
            "bom_items",
            "boms",
            "dental_supplies",
            "treatments",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        for table in SOFT_DELETED {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column("deleted_at")
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
