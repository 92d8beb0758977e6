//! `/api/dental/…`: routes of the dental domain, each behind its feature.

mod patients;
mod supplies;
mod treatments;

use crate::http::routes::RouteSet;

pub fn router() -> RouteSet {
    RouteSet::new()
        .merge(patients::router())
        .merge(treatments::router())
        .merge(supplies::router())
}
