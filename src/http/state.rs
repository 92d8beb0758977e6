//! [`AppState`]: what every handler and middleware can read. Only the HTTP layer
//! knows it; the layers below take the parts they need.

use std::sync::Arc;

use crate::{
    auth::AuthService, http::audit::WritesInFlight, lifecycle::Lifecycle, registry::TenantRegistry,
    secret::Secret, settings::IdentifySettings, tenant::TenantConfig,
};

/// What every handler and middleware can read: one `Arc`, so that the clone each
/// extractor and middleware makes is one counter, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct AppStateInner {
    pub registry: TenantRegistry,
    pub identify: Arc<IdentifySettings>,
    /// `Some` in single-tenant mode: the one tenant every request is served as.
    pub single_tenant: Option<Arc<TenantConfig>>,
    pub admin_token: Arc<Secret>,
    /// Provisioning and changes at run time (multi-tenant mode).
    pub lifecycle: Option<Arc<Lifecycle>>,
    pub auth: Arc<AuthService>,
    /// Audited writes still running; shutdown waits for them.
    pub writes: Arc<WritesInFlight>,
    /// Per-tenant request rate and concurrency limits.
    pub limits: Arc<crate::limits::TenantLimiter>,
    /// Requests and latency per tenant and route, for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Usage per tenant and the storage quota (multi-tenant mode).
    pub usage: Option<Arc<crate::usage::UsageMeter>>,
    /// Sessions of the admin console, signed with a key from the admin token.
    pub console: Arc<crate::auth::console::ConsoleSessions>,
    /// Fleet migrations started through the admin API (multi-tenant mode).
    pub fleet: Arc<crate::fleet::FleetJobs>,
}
