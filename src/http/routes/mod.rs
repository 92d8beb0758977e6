//! The HTTP surface: each area exposes `router()`, merged here with the layers that
//! guard it.

pub mod admin_tenants;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod cash_flow;
pub mod data;
pub mod dental;
pub mod fleet;
pub mod manufacturing;
pub mod moves;
pub mod pagination;
pub mod products;
pub mod records;
pub mod tenants;
pub mod usage;
pub mod users;

use axum::{Router, middleware, routing::MethodRouter};

use crate::{
    auth::Role, http::AppState, http::admin::require_admin, http::authenticate::require_role,
};

/// Every route that serves one tenant's data to an authenticated caller, each behind
/// its feature and role. [`router`] adds identification, authentication and the
/// audit log around all of them; tests walk [`RouteSet::paths`] to check that.
pub fn tenant_routes() -> RouteSet {
    RouteSet::new()
        .merge(products::router())
        .merge(cash_flow::router())
        .merge(data::router())
        .merge(dental::router())
        .merge(manufacturing::router())
        .merge(auth::router())
        .merge(users::router())
        .merge(api_keys::router())
        .merge(audit::router())
}

pub fn admin_routes(state: &AppState) -> Router<AppState> {
    tenants::admin_router()
        .merge(admin_tenants::router())
        .merge(usage::router())
        .merge(fleet::router())
        .merge(moves::router())
        .merge(audit::admin_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
}

/// A router that remembers the paths it serves, so that the whole set of tenant
/// routes can be listed (and walked by tests) from the router itself.
#[derive(Default)]
pub struct RouteSet {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl RouteSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route(mut self, path: &'static str, method_router: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, method_router);
        self.paths.push(path);
        self
    }

    pub fn merge(mut self, other: RouteSet) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    /// Changes the router (adds a route layer) and keeps the paths.
    pub fn map(mut self, f: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = f(self.router);
        self
    }

    /// Every path of the set, as declared (`/api/products/{id}`).
    pub fn paths(&self) -> &[&'static str] {
        &self.paths
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// Wraps `routes` so that only callers with at least `role` reach them.
pub fn for_role(routes: RouteSet, role: Role) -> RouteSet {
    routes.map(|router| router.route_layer(middleware::from_fn_with_state(role, require_role)))
}
