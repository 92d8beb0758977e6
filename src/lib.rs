//! tenant-router: a database-per-tenant HTTP service.
//!
//! A request is identified as belonging to a tenant ([`identify`]), routed to that
//! tenant's lazily built connection pool ([`registry::TenantRegistry`]), and allowed
//! only the features the tenant has ([`feature_gate`]).

pub mod audit;
pub mod auth;
pub mod cli;
pub mod control;
pub mod db;
pub mod demo;
pub mod entities;
pub mod error;
pub mod fleet;
pub mod http;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod secret;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod tenant;
pub mod usage;
pub mod validate;

pub use error::{AppError, Result};
pub use http::AppState;
pub use settings::Settings;
pub use startup::{Application, StartupError};
