//! `/api/manufacturing/…`: routes of the manufacturing domain, each behind its
//! feature.

mod boms;
mod materials;
mod production_orders;

use axum::Router;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(materials::router())
        .merge(boms::router())
        .merge(production_orders::router())
}
