//! `/api/dental/…`: routes of the dental domain, each behind its feature.

mod patients;
mod supplies;
mod treatments;

use axum::Router;

use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(patients::router())
        .merge(treatments::router())
        .merge(supplies::router())
}
