//! Service settings: defaults, then an optional settings file, then the environment.
//!
//! The environment names are flat and documented in the README (`PORT`,
//! `MULTI_TENANT_ENABLED`, ...). Only those names are read, so an unrelated variable
//! in the environment can never change the service.

use std::{collections::HashMap, path::PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::secret::Secret;

/// The longest idle time or window a setting may give (30 days).
const MAX_WINDOW_SECS: u64 = 30 * 24 * 3600;

mod parts;
mod secret_key;
mod tenants;

pub use parts::{AuthMode, IdentifySettings, JWT_SECRET_MIN_LEN, PoolSettings};

pub use tenants::{
    check_against_settings, control_database_error, ignored_subdomain_error, load_tenants,
    parse_tenants_json, parse_tenants_toml, sqlite_file_on_disk,
};

/// Environment variables the service reads; each maps to the lowercase field below.
pub const ENV_KEYS: &[&str] = &[
    "HOST",
    "PORT",
    "MULTI_TENANT_ENABLED",
    "TENANTS_FILE",
    "TENANT_CONFIGS",
    "DATABASE_URL",
    "BASE_DOMAIN",
    "ADMIN_TOKEN",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "METRICS_MAX_TENANTS",
    "METRICS_ENABLED",
    "TENANT_RATE_LIMIT_PER_SEC",
    "TENANT_RATE_LIMIT_BURST",
    "TENANT_MAX_CONCURRENT_REQUESTS",
    "TENANT_STORAGE_QUOTA_BYTES",
    "USAGE_FLUSH_SECS",
    "POOL_IDLE_TIMEOUT_SECS",
    "MAX_OPEN_POOLS",
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_TENANT",
    "MAX_CONNECTIONS_PER_SERVER",
    "SQLITE_MAX_CONNECTIONS",
    "CONNECTION_IDLE_TIMEOUT_SECS",
    "PG_STATEMENT_CACHE_CAPACITY",
    "POOL_CONNECT_TIMEOUT_SECS",
    "POOL_ACQUIRE_TIMEOUT_SECS",
    "AUTO_MIGRATE",
    "AUTO_CREATE_DATABASES",
    "CONTROL_DATABASE_URL",
    "CONTROL_POLL_SECS",
    "SECRET_KEY",
    "SECRET_KEY_PREVIOUS",
    "SECRET_KEY_FILE",
    "MAX_TOTAL_CONNECTIONS",
    "BREAKER_COOLDOWN_SECS",
    "IDENTIFY_BY_SUBDOMAIN",
    "IDENTIFY_BY_HEADER",
    "IDENTIFY_BY_QUERY",
    "IGNORED_SUBDOMAINS",
    "APP_ENV",
    "AUTH_MODE",
    "JWT_SECRET",
    "JWT_TTL_SECS",
    "LOGIN_MAX_FAILURES",
    "LOGIN_MAX_FAILURES_PER_ADDRESS",
    "LOGIN_MAX_FAILURES_PER_USER",
    "HTTP_HEADER_TIMEOUT_SECS",
    "HTTP_BODY_TIMEOUT_SECS",
    "HTTP_SEND_TIMEOUT_SECS",
    "HTTP_REQUEST_TIMEOUT_SECS",
    "CORS_ALLOWED_ORIGINS",
    "ADMIN_MAX_FAILURES_PER_ADDRESS",
    "LOGIN_THROTTLE_SECS",
    "TRUST_FORWARDED_FOR",
    "AUTH_RECHECK_SECS",
];

/// The variable naming an optional settings file (TOML, same keys in lowercase);
/// empty turns the file off.
pub const SETTINGS_FILE_ENV: &str = "SETTINGS_FILE";
const DEFAULT_SETTINGS_FILE: &str = "settings.toml";
const DEFAULT_TENANTS_FILE: &str = "tenants.toml";
const DEFAULT_MAX_CONNECTIONS_PER_TENANT: u32 = 10;
/// SQLite connections across all tenant files unless set. Fewer than the tenants
/// active at once make them close and open each other's connections: 100 tenants
/// under load on 64 ran at 29-48 % of their rate on 128 (2026-12-07).
pub const DEFAULT_SQLITE_MAX_CONNECTIONS: u32 = 128;
/// The most `SQLITE_MAX_CONNECTIONS` may be (each connection is a thread).
const MAX_SQLITE_MAX_CONNECTIONS: u32 = 4096;

/// Everything the service can be told at start-up.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub multi_tenant_enabled: bool,
    /// `None`: `tenants.toml`, which may be missing when `TENANT_CONFIGS` is set.
    pub tenants_file: Option<PathBuf>,
    pub tenant_configs: Option<Secret>,
    /// Single-tenant mode's database.
    pub database_url: Secret,
    pub base_domain: String,
    pub admin_token: Option<Secret>,
    pub log_level: String,
    /// `text` (default) or `json`: one JSON object per line.
    pub log_format: String,
    /// Tenants that get metric series of their own; later ones count as `other`.
    pub metrics_max_tenants: usize,
    /// `false`: no request is counted and `/metrics` answers 404.
    pub metrics_enabled: bool,
    /// Default request limits of every tenant (0: none); a tenant's own override them.
    pub tenant_rate_limit_per_sec: u32,
    pub tenant_rate_limit_burst: u32,
    /// Default storage quota of a tenant, in bytes (0: none).
    pub tenant_storage_quota_bytes: u64,
    /// Seconds between two writes of a replica's usage counts to the control
    /// database.
    pub usage_flush_secs: u64,
    pub tenant_max_concurrent_requests: u32,
    pub pool_idle_timeout_secs: u64,
    pub max_open_pools: u64,
    /// Older name of `max_connections_per_tenant`, still read when that is unset.
    pub default_max_connections: Option<u32>,
    /// Connections one tenant may hold at once, unless it sets `max_connections`.
    pub max_connections_per_tenant: Option<u32>,
    /// Connections the router may hold on one server; 0: read from the server
    /// (`max_connections` less the reserved ones and a margin).
    pub max_connections_per_server: u32,
    /// SQLite connections the router may hold across all tenant files (each is a
    /// thread and a page cache); unset: `MAX_CONNECTIONS_PER_SERVER` when that is
    /// set, else [`DEFAULT_SQLITE_MAX_CONNECTIONS`].
    pub sqlite_max_connections: Option<u32>,
    /// How long a connection may sit idle in its pool before it is closed.
    pub connection_idle_timeout_secs: u64,
    /// Prepared statements each PostgreSQL connection keeps. A schema tenant's
    /// statements name its schema, so a connection serving many schema tenants
    /// needs room for each one's.
    pub pg_statement_cache_capacity: usize,
    pub pool_connect_timeout_secs: u64,
    pub pool_acquire_timeout_secs: u64,
    pub auto_migrate: bool,
    /// Where tenants added at run time are kept (multi-tenant mode).
    pub control_database_url: Secret,
    /// How often a replica looks for tenant changes made through another; 0: never.
    pub control_poll_secs: u64,
    /// Key (64 hex characters) sealing database URLs in the control database.
    pub secret_key: Option<Secret>,
    /// The key being rotated out: still opens, never seals.
    pub secret_key_previous: Option<Secret>,
    /// Where a generated key is kept when `SECRET_KEY` is unset.
    pub secret_key_file: PathBuf,
    /// Create a missing PostgreSQL database or schema on a tenant's first use.
    pub auto_create_databases: bool,
    /// Optional cap on the connections of every server together; 0: none.
    pub max_total_connections: u32,
    /// First pause after a tenant's database failed; doubles per failure, to 60 s.
    pub breaker_cooldown_secs: u64,
    pub identify_by_subdomain: bool,
    pub identify_by_header: bool,
    pub identify_by_query: bool,
    /// Subdomain labels that never name a tenant (`www`), comma-separated.
    pub ignored_subdomains: String,
    /// `development` or `production`; production refuses to start without the keys
    /// that development may generate.
    pub app_env: String,
    /// `jwt` (tenant routes need a token or API key) or `none` (behind a gateway
    /// that authenticates).
    pub auth_mode: String,
    /// Key signing access tokens (at least 32 bytes); generated per run in
    /// development when unset.
    pub jwt_secret: Option<Secret>,
    pub jwt_ttl_secs: u64,
    /// Failed logins for one user within the window before logins are refused.
    pub login_max_failures: u32,
    /// Failed logins from one client address within the window.
    pub login_max_failures_per_address: u32,
    pub login_max_failures_per_user: u32,
    /// Seconds a client has to send a request's head, and to start the next request
    /// on a kept-alive connection.
    pub http_header_timeout_secs: u64,
    /// Seconds a client may leave a request's body without sending more of it.
    pub http_body_timeout_secs: u64,
    /// Seconds an answer may wait for the client to read any of it before the
    /// connection is closed.
    pub http_send_timeout_secs: u64,
    /// Seconds a whole request may take, body and handler, before it is answered
    /// 503 `timeout` (and its work cancelled).
    pub http_request_timeout_secs: u64,
    /// Origins (`https://app.example.com`, comma separated) whose browser pages may
    /// call the API; empty: none (no CORS headers are sent).
    pub cors_allowed_origins: String,
    pub admin_max_failures_per_address: u32,
    pub login_throttle_secs: u64,
    pub trust_forwarded_for: bool,
    /// How long a token user's role and active flag are trusted before they are read
    /// again from the tenant's database.
    pub auth_recheck_secs: u64,
}

impl Settings {
    /// Reads the process environment (only [`ENV_KEYS`] and `SETTINGS_FILE`).
    pub fn from_env() -> Result<Self, String> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k == SETTINGS_FILE_ENV || ENV_KEYS.contains(&k.as_str()))
            .collect();
        Self::from_map(&env)
    }

    /// Builds settings from an explicit environment map: defaults, then the settings
    /// file (`SETTINGS_FILE`, default `settings.toml` if present), then `env`.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, String> {
        // An empty SETTINGS_FILE turns the settings file off.
        let file = match env.get(SETTINGS_FILE_ENV) {
            Some(path) if path.is_empty() => None,
            Some(path) => Some((path.clone(), true)),
            None => Some((DEFAULT_SETTINGS_FILE.to_string(), false)),
        };
        // Check the file's syntax first: the config crate's own error quotes the
        // offending line, which may hold a secret.
        if let Some((path, _)) = &file
            && let Ok(text) = std::fs::read_to_string(path)
        {
            let table = toml::from_str::<toml::Table>(&text).map_err(|e| {
                format!(
                    "settings: {path}: {}",
                    tenants::toml_syntax_error(&text, &e)
                )
            })?;
            // A key the service does not read (a typo, or `PORT` spelt as the
            // variable is) was silently ignored, its default used instead.
            if let Some(key) = table.keys().find(|key| {
                !ENV_KEYS
                    .iter()
                    .any(|known| known.to_ascii_lowercase() == **key)
            }) {
                return Err(format!(
                    "settings: {path}: unknown setting '{}' (settings are the variables' names in lower case, such as port or log_level)",
                    key.escape_debug()
                ));
            }
        }
        let known: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| ENV_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = Config::builder()
            .set_default("host", "127.0.0.1")
            .and_then(|b| b.set_default("port", 8000))
            .and_then(|b| b.set_default("multi_tenant_enabled", true))
            .and_then(|b| b.set_default("database_url", "sqlite://data/app.db?mode=rwc"))
            .and_then(|b| b.set_default("base_domain", "localhost"))
            .and_then(|b| b.set_default("log_level", "info"))
            .and_then(|b| b.set_default("log_format", "text"))
            .and_then(|b| b.set_default("metrics_max_tenants", 1000))
            .and_then(|b| b.set_default("metrics_enabled", true))
            .and_then(|b| b.set_default("tenant_rate_limit_per_sec", 0))
            .and_then(|b| b.set_default("tenant_rate_limit_burst", 0))
            .and_then(|b| b.set_default("tenant_storage_quota_bytes", 0))
            .and_then(|b| b.set_default("usage_flush_secs", 10))
            .and_then(|b| b.set_default("tenant_max_concurrent_requests", 0))
            .and_then(|b| b.set_default("pool_idle_timeout_secs", 300))
            .and_then(|b| b.set_default("max_open_pools", 10_000))
            .and_then(|b| b.set_default("max_connections_per_server", 0))
            .and_then(|b| b.set_default("connection_idle_timeout_secs", 10))
            .and_then(|b| b.set_default("pg_statement_cache_capacity", 1024))
            .and_then(|b| b.set_default("pool_connect_timeout_secs", 5))
            .and_then(|b| b.set_default("pool_acquire_timeout_secs", 5))
            .and_then(|b| b.set_default("auto_migrate", true))
            .and_then(|b| b.set_default("auto_create_databases", false))
            .and_then(|b| {
                b.set_default("control_database_url", "sqlite://data/control.db?mode=rwc")
            })
            .and_then(|b| b.set_default("control_poll_secs", 5))
            .and_then(|b| b.set_default("secret_key_file", "data/secret.key"))
            .and_then(|b| b.set_default("max_total_connections", 0))
            .and_then(|b| b.set_default("breaker_cooldown_secs", 2))
            .and_then(|b| b.set_default("identify_by_subdomain", true))
            .and_then(|b| b.set_default("identify_by_header", true))
            .and_then(|b| b.set_default("identify_by_query", true))
            .and_then(|b| b.set_default("ignored_subdomains", "www"))
            .and_then(|b| b.set_default("app_env", "development"))
            .and_then(|b| b.set_default("auth_mode", "jwt"))
            .and_then(|b| b.set_default("jwt_ttl_secs", 900))
            .and_then(|b| b.set_default("login_max_failures", 5))
            .and_then(|b| b.set_default("login_max_failures_per_address", 50))
            .and_then(|b| b.set_default("login_max_failures_per_user", 50))
            .and_then(|b| b.set_default("http_header_timeout_secs", 30))
            .and_then(|b| b.set_default("http_body_timeout_secs", 30))
            .and_then(|b| b.set_default("http_send_timeout_secs", 30))
            .and_then(|b| b.set_default("http_request_timeout_secs", 60))
            .and_then(|b| b.set_default("cors_allowed_origins", ""))
            .and_then(|b| b.set_default("admin_max_failures_per_address", 20))
            .and_then(|b| b.set_default("login_throttle_secs", 300))
            .and_then(|b| b.set_default("trust_forwarded_for", false))
            .and_then(|b| b.set_default("auth_recheck_secs", 30))
            .map_err(|e| e.to_string())?
            .add_source(
                file.map(|(path, required)| File::new(&path, FileFormat::Toml).required(required))
                    .into_iter()
                    .collect::<Vec<_>>(),
            )
            .add_source(Environment::default().source(Some(known)))
            .build()
            .map_err(|e| format!("settings: {e}"))?;
        let settings: Settings = config
            .try_deserialize()
            .map_err(|e| format!("settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Whether log lines are JSON objects (`LOG_FORMAT=json`) rather than text.
    pub fn log_json(&self) -> Result<bool, String> {
        match self.log_format.as_str() {
            "text" => Ok(false),
            "json" => Ok(true),
            _ => Err("settings: LOG_FORMAT must be text or json".into()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.log_json()?;
        // A misspelt level parses as a target at every level (`warning`, `inf`):
        // nothing of this service would be logged, not even the generated admin
        // token. A bare target (`tenant_router`) is fine.
        let misspelt_level = |directive: &str| {
            let word = directive.trim().to_ascii_lowercase();
            const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
            let bare = !word.is_empty() && !word.contains(['=', ':', '[']);
            // A level cut short (`inf`, `deb`) or a level's name in other words.
            bare && !LEVELS.contains(&word.as_str())
                && (LEVELS.iter().any(|level| level.starts_with(&word))
                    || [
                        "warning",
                        "warnings",
                        "information",
                        "informational",
                        "debugging",
                        "errors",
                        "verbose",
                        "fatal",
                        "critical",
                        "notice",
                        "all",
                        "none",
                        "quiet",
                    ]
                    .contains(&word.as_str()))
        };
        if self.log_level.trim().is_empty()
            || self.log_level.split(',').any(misspelt_level)
            || tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err()
        {
            return Err(
                "settings: LOG_LEVEL must be a tracing filter: a level (trace, debug, info, warn, error, off), targets and target=level pairs, such as tenant_router=debug,info"
                    .into(),
            );
        }
        if self.max_open_pools == 0 {
            return Err("settings: MAX_OPEN_POOLS must be at least 1".into());
        }
        // A handle's idle time and the throttle's window are cache lifetimes:
        // bounded, so that no value can overflow a clock.
        if !(1..=MAX_WINDOW_SECS).contains(&self.pool_idle_timeout_secs) {
            return Err(format!(
                "settings: POOL_IDLE_TIMEOUT_SECS must be within 1..={MAX_WINDOW_SECS} (30 days)"
            ));
        }
        for (name, value) in [
            (
                "MAX_CONNECTIONS_PER_TENANT",
                self.max_connections_per_tenant,
            ),
            ("DEFAULT_MAX_CONNECTIONS", self.default_max_connections),
        ] {
            if value.is_some_and(|n| !(1..=1000).contains(&n)) {
                return Err(format!("settings: {name} must be within 1..=1000"));
            }
        }
        if self
            .sqlite_max_connections
            .is_some_and(|n| !(1..=MAX_SQLITE_MAX_CONNECTIONS).contains(&n))
        {
            return Err("settings: SQLITE_MAX_CONNECTIONS must be within 1..=4096".into());
        }
        if !(1..=MAX_WINDOW_SECS).contains(&self.connection_idle_timeout_secs) {
            return Err(format!(
                "settings: CONNECTION_IDLE_TIMEOUT_SECS must be within 1..={MAX_WINDOW_SECS} (30 days)"
            ));
        }
        // Added to the clock for each checkout and connection: bounded, so that no
        // value can overflow it.
        for (name, value) in [
            ("POOL_CONNECT_TIMEOUT_SECS", self.pool_connect_timeout_secs),
            ("POOL_ACQUIRE_TIMEOUT_SECS", self.pool_acquire_timeout_secs),
        ] {
            if value > 3600 {
                return Err(format!("settings: {name} must be at most 3600"));
            }
        }
        if !(1..=65_536).contains(&self.pg_statement_cache_capacity) {
            return Err("settings: PG_STATEMENT_CACHE_CAPACITY must be within 1..=65536".into());
        }
        let base_domain = parts::base_domain_of(&self.base_domain);
        if base_domain.split('.').any(str::is_empty)
            || !base_domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err("settings: BASE_DOMAIN must be a host name such as example.com".into());
        }
        let (name, url) = if self.multi_tenant_enabled {
            ("CONTROL_DATABASE_URL", &self.control_database_url)
        } else {
            ("DATABASE_URL", &self.database_url)
        };
        crate::tenant::check_database_url(url.expose())
            .and_then(|()| crate::tenant::check_url_parameters(url.expose()))
            .map_err(|m| format!("settings: {name} {m}"))?;
        if let Some(token) = &self.admin_token
            && token.expose().len() < 16
        {
            return Err("settings: ADMIN_TOKEN must be at least 16 characters".into());
        }
        // Presented tokens are trimmed: one set with a space or a line break at an
        // end (a secret file's last newline) could never match.
        if let Some(token) = &self.admin_token
            && token.expose().trim() != token.expose()
        {
            return Err(
                "settings: ADMIN_TOKEN must not begin or end with white space (a secret file's final newline?)"
                    .into(),
            );
        }
        if !matches!(self.app_env.as_str(), "development" | "production") {
            return Err("settings: APP_ENV must be development or production".into());
        }
        self.auth_mode()?;
        match &self.jwt_secret {
            Some(key) if key.expose().len() < JWT_SECRET_MIN_LEN => {
                return Err(format!(
                    "settings: JWT_SECRET must be at least {JWT_SECRET_MIN_LEN} bytes"
                ));
            }
            Some(_) => {}
            None if self.is_production() && self.auth_mode()? == AuthMode::Jwt => {
                return Err(
                    "settings: JWT_SECRET is required when APP_ENV=production (at least 32 bytes)"
                        .into(),
                );
            }
            None => {}
        }
        // Made up when unset, as development does, it would differ from replica to
        // replica and be written to the log. (`SECRET_KEY` is checked where it is
        // read, in multi-tenant mode: `secret_box`.)
        if self.is_production() && self.admin_token.is_none() {
            return Err(
                "settings: ADMIN_TOKEN is required when APP_ENV=production (at least 16 characters)"
                    .into(),
            );
        }
        if !(60..=86_400).contains(&self.jwt_ttl_secs) {
            return Err("settings: JWT_TTL_SECS must be within 60..=86400".into());
        }
        if self.login_max_failures == 0
            || self.login_max_failures_per_address == 0
            || self.login_max_failures_per_user == 0
            || self.admin_max_failures_per_address == 0
        {
            return Err(
                "settings: LOGIN_MAX_FAILURES, LOGIN_MAX_FAILURES_PER_ADDRESS, LOGIN_MAX_FAILURES_PER_USER and ADMIN_MAX_FAILURES_PER_ADDRESS must be at least 1"
                    .into(),
            );
        }
        if !(1..=3600).contains(&self.auth_recheck_secs) {
            return Err("settings: AUTH_RECHECK_SECS must be within 1..=3600".into());
        }
        if !(1..=3600).contains(&self.http_header_timeout_secs)
            || !(1..=3600).contains(&self.http_body_timeout_secs)
            || !(1..=3600).contains(&self.http_send_timeout_secs)
            || !(1..=3600).contains(&self.http_request_timeout_secs)
        {
            return Err(
                "settings: HTTP_HEADER_TIMEOUT_SECS, HTTP_BODY_TIMEOUT_SECS, HTTP_SEND_TIMEOUT_SECS and HTTP_REQUEST_TIMEOUT_SECS must be within 1..=3600"
                    .into(),
            );
        }
        self.cors_origins()?;
        if !(1..=3600).contains(&self.usage_flush_secs) {
            return Err("settings: USAGE_FLUSH_SECS must be within 1..=3600".into());
        }
        if !(1..=MAX_WINDOW_SECS).contains(&self.login_throttle_secs) {
            return Err(format!(
                "settings: LOGIN_THROTTLE_SECS must be within 1..={MAX_WINDOW_SECS} (30 days)"
            ));
        }
        Ok(())
    }

    /// The origins of `CORS_ALLOWED_ORIGINS`, each checked to be a bare origin
    /// (`scheme://host[:port]`, no path), lowercased as browsers send them.
    pub fn cors_origins(&self) -> Result<Vec<String>, String> {
        self.cors_allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|origin| {
                let refused = || {
                    format!(
                        "settings: CORS_ALLOWED_ORIGINS: '{origin}' is not an origin such as https://app.example.com"
                    )
                };
                let url = url::Url::parse(origin).map_err(|_| refused())?;
                let bare = matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && url.username().is_empty()
                    && url.password().is_none()
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && !origin.ends_with('/');
                if !bare {
                    return Err(refused());
                }
                Ok(url.origin().ascii_serialization())
            })
            .collect()
    }

    pub fn is_production(&self) -> bool {
        self.app_env == "production"
    }

    /// The tenants file to read, and whether its absence is an error.
    pub fn tenants_file(&self) -> (PathBuf, bool) {
        match &self.tenants_file {
            Some(path) => (path.clone(), true),
            None => (
                PathBuf::from(DEFAULT_TENANTS_FILE),
                self.tenant_configs.is_none(),
            ),
        }
    }

    /// The tenants of the tenants file and `TENANT_CONFIGS`, checked against these
    /// settings too (no subdomain that `IGNORED_SUBDOMAINS` hides, no database
    /// that is the control database).
    pub fn load_tenants(
        &self,
    ) -> Result<Vec<crate::tenant::TenantConfig>, Vec<crate::tenant::ConfigError>> {
        let (file, required) = self.tenants_file();
        let env = self.tenant_configs.as_ref().map(|s| s.expose());
        let tenants = load_tenants(Some(&file), required, env)?;
        let control = crate::tenant::storage_identity_of(self.control_database_url.expose(), None);
        check_against_settings(
            &tenants,
            &self.identification().ignored_subdomains,
            control.as_deref(),
        )?;
        Ok(tenants)
    }
}

impl Settings {
    /// The one tenant of single-tenant mode (`MULTI_TENANT_ENABLED=false`):
    /// `default`, on `DATABASE_URL`, with every feature.
    pub fn single_tenant(&self) -> crate::tenant::TenantConfig {
        use crate::tenant::{
            Branding, ContactInfo, Domain, FeatureSet, Isolation, PoolOverrides, TenantConfig,
            TenantId, TenantSource,
        };
        let id =
            TenantId::parse("default").unwrap_or_else(|_| unreachable!("'default' is a valid id"));
        TenantConfig {
            subdomain: id.default_subdomain(),
            id,
            database_url: self.database_url.clone(),
            domain: Domain::Default,
            explicit_features: None,
            features: FeatureSet::all(),
            branding: Branding::default(),
            gst_number: None,
            contact_info: ContactInfo::default(),
            is_active: true,
            demo: false,
            pool: PoolOverrides::default(),
            limits: Default::default(),
            isolation: Isolation::Database,
            source: TenantSource::SingleTenant,
            generation: String::new(),
        }
        .with_derived_generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Keep a developer's own settings.toml out of the unit tests.
        map.entry(SETTINGS_FILE_ENV.into()).or_default();
        map
    }

    #[test]
    fn a_tenant_may_not_take_an_ignored_subdomain() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenants.toml");
        std::fs::write(
            &file,
            "[tenants.shop]\ndatabase_url = 'sqlite://shop.db'\nsubdomain = 'www'\n",
        )
        .unwrap();
        let path = file.display().to_string();
        let s = Settings::from_map(&env(&[("TENANTS_FILE", &path)])).unwrap();
        let errors = s.load_tenants().unwrap_err();
        let text = errors[0].to_string();
        assert!(
            text.contains("shop") && text.contains("subdomain"),
            "{text}"
        );
        let s = Settings::from_map(&env(&[("TENANTS_FILE", &path), ("IGNORED_SUBDOMAINS", "")]))
            .unwrap();
        assert_eq!(s.load_tenants().unwrap().len(), 1);
    }

    #[test]
    fn a_base_domain_is_a_host_name_its_final_dot_allowed() {
        for good in ["example.com", "example.com.", "localhost"] {
            let s = Settings::from_map(&env(&[("BASE_DOMAIN", good)])).unwrap();
            assert_eq!(s.identification().base_domain, good.trim_end_matches('.'));
        }
        for bad in [
            "",
            ".",
            ".example.com",
            "example..com",
            "example.com..",
            "exa mple.com",
        ] {
            let err = Settings::from_map(&env(&[("BASE_DOMAIN", bad)])).unwrap_err();
            assert!(err.contains("BASE_DOMAIN"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::from_map(&env(&[])).unwrap();
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.port, 8000);
        assert!(s.multi_tenant_enabled);
        assert_eq!(s.base_domain, "localhost");
        assert_eq!(s.tenants_file(), (PathBuf::from("tenants.toml"), true));
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = Settings::from_map(&env(&[
            ("PORT", "9001"),
            ("MULTI_TENANT_ENABLED", "false"),
            ("MAX_OPEN_POOLS", "2"),
            ("TENANT_CONFIGS", "{}"),
            ("ADMIN_TOKEN", "0123456789abcdef0123"),
        ]))
        .unwrap();
        assert_eq!(s.port, 9001);
        assert!(!s.multi_tenant_enabled);
        assert_eq!(s.max_open_pools, 2);
        assert!(
            !s.tenants_file().1,
            "default file optional with TENANT_CONFIGS"
        );
        assert_eq!(s.admin_token.unwrap().expose(), "0123456789abcdef0123");
    }

    #[test]
    fn settings_file_sits_between_defaults_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, "port = 7000\nbase_domain = \"example.com\"\n").unwrap();
        let path = path.to_str().unwrap();
        let s = Settings::from_map(&env(&[(SETTINGS_FILE_ENV, path), ("PORT", "7100")])).unwrap();
        assert_eq!(s.port, 7100);
        assert_eq!(s.base_domain, "example.com");
    }

    #[test]
    fn a_broken_settings_file_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, "admin_token = \"s3cret-token-value-123\nport = 1\n").unwrap();
        let err =
            Settings::from_map(&env(&[(SETTINGS_FILE_ENV, path.to_str().unwrap())])).unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn a_settings_file_with_a_key_the_service_does_not_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, "PORT = 7000\n").unwrap();
        let mut vars = env(&[]);
        vars.insert(SETTINGS_FILE_ENV.into(), path.display().to_string());
        let err = Settings::from_map(&vars).unwrap_err();
        assert!(err.contains("unknown setting 'PORT'"), "{err}");
        std::fs::write(&path, "port = 7000\n").unwrap();
        assert_eq!(Settings::from_map(&vars).unwrap().port, 7000);
    }

    #[test]
    fn bad_values_are_refused_with_the_name() {
        let err = Settings::from_map(&env(&[("PORT", "eighty")])).unwrap_err();
        assert!(err.contains("port"), "{err}");
        let err = Settings::from_map(&env(&[("MAX_OPEN_POOLS", "0")])).unwrap_err();
        assert!(err.contains("MAX_OPEN_POOLS"), "{err}");
        let err = Settings::from_map(&env(&[("ADMIN_TOKEN", "short")])).unwrap_err();
        assert!(err.contains("ADMIN_TOKEN"), "{err}");
        let err =
            Settings::from_map(&env(&[("ADMIN_TOKEN", "0123456789abcdef0123\n")])).unwrap_err();
        assert!(
            err.contains("ADMIN_TOKEN") && !err.contains("0123456789"),
            "{err}"
        );
        let err = Settings::from_map(&env(&[("AUTH_MODE", "basic")])).unwrap_err();
        assert!(err.contains("AUTH_MODE"), "{err}");
        let err = Settings::from_map(&env(&[("JWT_SECRET", "too-short")])).unwrap_err();
        assert!(err.contains("JWT_SECRET"), "{err}");
        assert!(!err.contains("too-short"), "{err}");
        for (name, value) in [
            ("LOG_LEVEL", "[[["),
            ("LOG_LEVEL", "warning"),
            ("LOG_LEVEL", ""),
            ("LOG_LEVEL", "inf,tenant_router=debug"),
            ("LOGIN_THROTTLE_SECS", "40000000000"),
            ("POOL_IDLE_TIMEOUT_SECS", "99999999999999"),
            ("POOL_ACQUIRE_TIMEOUT_SECS", "9223372036854775807"),
            ("POOL_CONNECT_TIMEOUT_SECS", "9223372036854775807"),
            ("CONNECTION_IDLE_TIMEOUT_SECS", "9223372036854775807"),
        ] {
            let err = Settings::from_map(&env(&[(name, value)])).unwrap_err();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        for (name, value) in [
            ("HOST", "0.0.0.0"),
            ("HOST", "::"),
            ("HOST", "localhost"),
            ("LOG_LEVEL", "WARN"),
            ("LOG_LEVEL", "tenant_router=debug,info"),
            ("LOG_LEVEL", "tenant_router"),
            ("LOG_LEVEL", "info,"),
            ("LOG_LEVEL", "error_chain=debug,tracer"),
        ] {
            assert!(
                Settings::from_map(&env(&[(name, value)])).is_ok(),
                "{name}={value}"
            );
        }
    }

    #[test]
    fn sqlite_files_share_128_connections_by_default_or_what_is_set() {
        let sqlite = |vars: &[(&str, &str)]| {
            Settings::from_map(&env(vars))
                .unwrap()
                .pools()
                .sqlite_max_connections
        };
        assert_eq!(sqlite(&[]), 128);
        assert_eq!(sqlite(&[("SQLITE_MAX_CONNECTIONS", "300")]), 300);
        // Before SQLITE_MAX_CONNECTIONS, the per-server limit set SQLite's too.
        assert_eq!(sqlite(&[("MAX_CONNECTIONS_PER_SERVER", "40")]), 40);
        assert_eq!(sqlite(&[("MAX_CONNECTIONS_PER_SERVER", "10000")]), 4096);
        assert_eq!(
            sqlite(&[
                ("MAX_CONNECTIONS_PER_SERVER", "40"),
                ("SQLITE_MAX_CONNECTIONS", "7")
            ]),
            7
        );
        for bad in ["0", "4097", "many"] {
            let err = Settings::from_map(&env(&[("SQLITE_MAX_CONNECTIONS", bad)])).unwrap_err();
            assert!(
                err.to_uppercase().contains("SQLITE_MAX_CONNECTIONS"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_statement_cache_is_1024_by_default_and_bounded() {
        let s = Settings::from_map(&env(&[])).unwrap();
        assert_eq!(s.pools().statement_cache_capacity, 1024);
        let s = Settings::from_map(&env(&[("PG_STATEMENT_CACHE_CAPACITY", "50")])).unwrap();
        assert_eq!(s.pools().statement_cache_capacity, 50);
        for bad in ["0", "65537"] {
            let err =
                Settings::from_map(&env(&[("PG_STATEMENT_CACHE_CAPACITY", bad)])).unwrap_err();
            assert!(err.contains("PG_STATEMENT_CACHE_CAPACITY"), "{err}");
        }
    }

    #[test]
    fn production_needs_a_jwt_secret_an_admin_token_and_a_secret_key() {
        let token = "t".repeat(16);
        let production = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("APP_ENV", "production"), ("ADMIN_TOKEN", token.as_str())];
            pairs.extend_from_slice(extra);
            Settings::from_map(&env(&pairs))
        };
        let err = production(&[]).unwrap_err();
        assert!(err.contains("JWT_SECRET"), "{err}");
        let key = "k".repeat(32);
        assert!(production(&[("JWT_SECRET", &key)]).is_ok());
        // Behind a gateway no tokens are signed, so no key is needed.
        assert!(production(&[("AUTH_MODE", "none")]).is_ok());
        let err = Settings::from_map(&env(&[("APP_ENV", "production"), ("AUTH_MODE", "none")]))
            .unwrap_err();
        assert!(err.contains("ADMIN_TOKEN"), "{err}");

        // SECRET_KEY only: production makes no key file, nor reads one (each
        // replica may have made its own), but names one it finds.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret.key");
        let file_setting = file.display().to_string();
        let settings =
            production(&[("AUTH_MODE", "none"), ("SECRET_KEY_FILE", &file_setting)]).unwrap();
        let err = settings.secret_box().err().unwrap();
        assert!(err.contains("SECRET_KEY"), "{err}");
        assert!(!file.exists(), "production made a key");
        let kept = crate::secret::SecretBox::generate_hex();
        std::fs::write(&file, &kept).unwrap();
        let err = settings.secret_box().err().unwrap();
        assert!(err.contains(&file_setting) && !err.contains(&kept), "{err}");
        let secret_key = "ab".repeat(32);
        let settings = production(&[
            ("AUTH_MODE", "none"),
            ("SECRET_KEY", &secret_key),
            ("SECRET_KEY_FILE", "/nonexistent/secret.key"),
        ])
        .unwrap();
        assert!(settings.secret_box().is_ok());
        // Development makes one.
        let made = dir.path().join("made.key").display().to_string();
        let settings =
            Settings::from_map(&env(&[("AUTH_MODE", "none"), ("SECRET_KEY_FILE", &made)])).unwrap();
        assert!(settings.secret_box().is_ok());
    }
}
