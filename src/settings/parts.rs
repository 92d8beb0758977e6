//! The settings each part of the service takes: identification, authentication
//! mode and pools, derived from [`Settings`] and checked with it.

use std::time::Duration;

use super::{
    DEFAULT_MAX_CONNECTIONS_PER_TENANT, DEFAULT_SQLITE_MAX_CONNECTIONS, MAX_SQLITE_MAX_CONNECTIONS,
    Settings,
};

impl Settings {
    pub fn auth_mode(&self) -> Result<AuthMode, String> {
        match self.auth_mode.as_str() {
            "jwt" => Ok(AuthMode::Jwt),
            "none" => Ok(AuthMode::None),
            other => Err(format!(
                "settings: AUTH_MODE must be jwt or none, not '{other}'"
            )),
        }
    }

    pub fn identification(&self) -> IdentifySettings {
        IdentifySettings {
            by_subdomain: self.identify_by_subdomain,
            by_header: self.identify_by_header,
            by_query: self.identify_by_query,
            // `example.com.` is `example.com`, fully qualified.
            base_domain: base_domain_of(&self.base_domain),
            ignored_subdomains: self
                .ignored_subdomains
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    pub fn pools(&self) -> PoolSettings {
        PoolSettings {
            idle_timeout: Duration::from_secs(self.pool_idle_timeout_secs),
            max_open_pools: self.max_open_pools,
            max_connections_per_tenant: self
                .max_connections_per_tenant
                .or(self.default_max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_TENANT)
                .max(1),
            max_connections_per_server: (self.max_connections_per_server > 0)
                .then_some(self.max_connections_per_server),
            sqlite_max_connections: self.sqlite_max_connections.unwrap_or(
                match self.max_connections_per_server {
                    0 => DEFAULT_SQLITE_MAX_CONNECTIONS,
                    set => set.min(MAX_SQLITE_MAX_CONNECTIONS),
                },
            ),
            connection_idle_timeout: Duration::from_secs(self.connection_idle_timeout_secs.max(1)),
            statement_cache_capacity: self.pg_statement_cache_capacity.clamp(1, 65_536),
            connect_timeout: Duration::from_secs(self.pool_connect_timeout_secs.max(1)),
            acquire_timeout: Duration::from_secs(self.pool_acquire_timeout_secs.max(1)),
            auto_migrate: self.auto_migrate,
            auto_create_databases: self.auto_create_databases,
            max_total_connections: (self.max_total_connections > 0)
                .then_some(self.max_total_connections),
            breaker_cooldown: Duration::from_secs(self.breaker_cooldown_secs.max(1)),
        }
    }
}

/// Which request parts may name the tenant, and the base domain for subdomains.
#[derive(Debug, Clone)]
pub struct IdentifySettings {
    pub by_subdomain: bool,
    pub by_header: bool,
    pub by_query: bool,
    pub base_domain: String,
    pub ignored_subdomains: Vec<String>,
}

/// `AUTH_MODE`: `jwt` (every tenant route needs a token or key) or `none` (a gateway
/// in front has authenticated the caller; every request acts as an owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Jwt,
    None,
}

/// The shortest `JWT_SECRET` accepted, in bytes (HS256 wants a key as long as
/// its hash).
pub const JWT_SECRET_MIN_LEN: usize = 32;

/// Bounds on the tenant handles and connections the registry keeps open.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// How long a tenant's handle lives unused.
    pub idle_timeout: Duration,
    pub max_open_pools: u64,
    pub max_connections_per_tenant: u32,
    /// `None`: read from each server.
    pub max_connections_per_server: Option<u32>,
    /// The budget of the SQLite files, which count as one server.
    pub sqlite_max_connections: u32,
    /// How long a connection may sit idle in its pool before it is closed.
    pub connection_idle_timeout: Duration,
    /// Prepared statements each PostgreSQL connection keeps.
    pub statement_cache_capacity: usize,
    pub connect_timeout: Duration,
    pub acquire_timeout: Duration,
    pub auto_migrate: bool,
    pub auto_create_databases: bool,
    pub max_total_connections: Option<u32>,
    pub breaker_cooldown: Duration,
}

/// The base domain as hosts are compared with it: lower case, without the final
/// dot of a fully qualified name.
pub(crate) fn base_domain_of(raw: &str) -> String {
    raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase()
}
