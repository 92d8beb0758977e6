//! The feature gate: a route group declares the feature it needs, and a tenant
//! without that feature gets 403 `feature_not_enabled`.

use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};

use crate::{
    error::AppError, http::identify::TenantContext, http::routes::RouteSet, tenant::Feature,
};

/// Middleware body; mount it with [`gate`].
pub async fn require_feature(
    State(feature): State<Feature>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .extensions()
        .get::<TenantContext>()
        .is_some_and(|ctx| ctx.config.features.contains(feature));
    if allowed {
        next.run(request).await
    } else {
        AppError::FeatureNotEnabled(feature).into_response()
    }
}

/// Wraps `routes` so that only tenants with `feature` reach them.
pub fn gate(routes: RouteSet, feature: Feature) -> RouteSet {
    routes
        .map(|router| router.route_layer(middleware::from_fn_with_state(feature, require_feature)))
}
