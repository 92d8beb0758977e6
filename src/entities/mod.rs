//! sea-orm entities of the tables every tenant database holds (see `migration/`).

pub mod material;
pub mod patient;
pub mod product;
