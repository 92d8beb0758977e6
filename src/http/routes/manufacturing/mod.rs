//! `/api/manufacturing/…`: routes of the manufacturing domain, each behind its
//! feature.

pub(crate) mod boms;
pub(crate) mod materials;
pub(crate) mod production_orders;

use crate::http::routes::RouteSet;

pub fn router() -> RouteSet {
    RouteSet::new()
        .merge(materials::router())
        .merge(boms::router())
        .merge(production_orders::router())
}
