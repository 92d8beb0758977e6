//! sea-orm entities of the tables every tenant database holds (see `migration/`).
//! Business rows are soft-deleted: `deleted_at` is set and the row leaves every list
//! and lookup.

pub mod api_key;
pub mod audit_entry;
pub mod bom;
pub mod bom_item;
pub mod cash_flow_entry;
pub mod dental_supply;
pub mod material;
pub mod patient;
pub mod product;
pub mod production_order;
pub mod treatment;
pub mod user;
