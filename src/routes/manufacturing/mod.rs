//! `/api/manufacturing/…`: routes of the manufacturing domain, each behind its
//! feature.

mod materials;

use axum::Router;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new().merge(materials::router())
}
