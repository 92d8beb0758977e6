//! `/api/dental/…`: routes of the dental domain, each behind its feature.

pub(crate) mod patients;
pub(crate) mod supplies;
pub(crate) mod treatments;

use crate::http::routes::RouteSet;

pub fn router() -> RouteSet {
    RouteSet::new()
        .merge(patients::router())
        .merge(treatments::router())
        .merge(supplies::router())
}
