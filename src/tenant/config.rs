//! A tenant's configuration once validated ([`TenantConfig`]): where its data is,
//! its domain, features, branding and contact details, and its pool overrides.
//! Entries become configurations only through [`super::entry`].

use serde::{Deserialize, Serialize};

use super::{ConfigError, Domain, Feature, FeatureSet, TenantId};
use crate::secret::Secret;

/// Where a tenant's configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSource {
    /// The tenants file (`TENANTS_FILE`, default `tenants.toml`).
    File,
    /// The `TENANT_CONFIGS` environment variable.
    Env,
    /// The control database: added or changed at run time through the admin API.
    Control,
    /// Single-tenant mode's one implicit tenant, served from `DATABASE_URL`.
    SingleTenant,
}

/// Public look of a tenant: shown on its login page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secondary_color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

/// How to reach the tenant's business.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Where a PostgreSQL tenant's tables live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// The tenant's own database (the one its URL names). The default, and the only
    /// mode for SQLite.
    #[default]
    Database,
    /// Schema `tenant_<id>` of the shared database its URL names. The tenants of one
    /// database share its pool; a connection serving this tenant has `search_path`
    /// set to that schema alone.
    Schema,
}

impl Isolation {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "database" => Some(Self::Database),
            "schema" => Some(Self::Schema),
            _ => None,
        }
    }
}

/// Longest tenant id in schema mode: `tenant_` + id must fit PostgreSQL's 63-byte
/// identifiers, which it would otherwise truncate silently (two tenants could meet).
pub const MAX_SCHEMA_TENANT_ID_LEN: usize = 63 - "tenant_".len();

/// Per-tenant pool settings that override the service-wide defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PoolOverrides {
    /// Connections the tenant may hold at once (`MAX_CONNECTIONS_PER_TENANT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// Per-tenant request limits that override the service-wide defaults
/// (`TENANT_RATE_LIMIT_PER_SEC`, `TENANT_RATE_LIMIT_BURST`,
/// `TENANT_MAX_CONCURRENT_REQUESTS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RequestLimits {
    /// Requests per second, on average (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<u32>,
    /// Requests that may come at once above the average.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    /// Requests served at the same time (0: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    /// Bytes of storage before writes are refused (0: no quota).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_quota_bytes: Option<u64>,
}

/// One tenant, validated. `database_url` is a [`Secret`]; every other field is safe
/// to show to an operator.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: TenantId,
    pub database_url: Secret,
    pub domain: Domain,
    pub subdomain: String,
    /// Features as written in the configuration, if any (else the domain preset).
    pub explicit_features: Option<Vec<Feature>>,
    pub features: FeatureSet,
    pub branding: Branding,
    pub gst_number: Option<String>,
    pub contact_info: ContactInfo,
    pub is_active: bool,
    /// A demo tenant: seeded with sample data on first use, and again on reset.
    pub demo: bool,
    pub pool: PoolOverrides,
    pub limits: RequestLimits,
    pub isolation: Isolation,
    pub source: TenantSource,
    /// Which incarnation of the tenant this is: a tenant provisioned again under
    /// the same id gets a new one, and tokens carry it, so a token of the earlier
    /// tenant is refused. Random for a provisioned tenant (kept in the control
    /// database); for a tenant of the file or the environment, derived from its id
    /// and where its data is.
    pub generation: String,
}

impl TenantConfig {
    /// The PostgreSQL schema of a schema-mode tenant.
    pub fn schema_name(&self) -> Option<String> {
        (self.isolation == Isolation::Schema).then(|| format!("tenant_{}", self.id))
    }

    /// This configuration with the generation derived from its id and storage (see
    /// [`TenantConfig::generation`]).
    pub fn with_derived_generation(mut self) -> Self {
        let seed = format!(
            "{}\n{}",
            self.id,
            self.storage_identity().unwrap_or_default()
        );
        let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        self.generation = format!("{hash:016x}");
        self
    }

    /// Where this tenant's data is, without credentials: `sqlite:<absolute path>`,
    /// or `postgres:<host>:<port>/<database>` with `/<schema>` for a schema-mode
    /// tenant; `None` for an in-memory database. Two tenants with the same identity
    /// would share (and could drop) each other's data.
    pub fn storage_identity(&self) -> Option<String> {
        storage_identity_of(self.database_url.expose(), self.schema_name().as_deref())
    }
}

/// The file of a `sqlite:` URL as written (no query), unless it is in memory.
pub fn sqlite_file_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

/// The storage identity (see [`TenantConfig::storage_identity`]) of the database
/// at `url`, or of `schema` in it. A SQLite path is made absolute and its `.` and
/// `..` taken out by their names alone (not by following links), so that every
/// spelling of a path gives one identity, and the same one on every start.
pub fn storage_identity_of(url: &str, schema: Option<&str>) -> Option<String> {
    if url.starts_with("sqlite:") {
        let absolute = std::path::absolute(sqlite_file_of(url)?).ok()?;
        let mut normal = std::path::PathBuf::new();
        for part in absolute.components() {
            match part {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    normal.pop();
                }
                other => normal.push(other),
            }
        }
        return Some(format!("sqlite:{}", normal.display()));
    }
    let parsed = url::Url::parse(url).ok()?;
    let mut key = format!(
        "postgres:{}:{}/{}",
        // `db.example.` is `db.example`.
        parsed
            .host_str()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        parsed.port().unwrap_or(5432),
        parsed.path().trim_start_matches('/')
    );
    if let Some(schema) = schema {
        key.push('/');
        key.push_str(schema);
    }
    Some(key)
}

/// The error for `tenant`, whose storage is `other`'s too.
pub fn shared_storage_error(tenant: &TenantId, other: &TenantId) -> ConfigError {
    ConfigError::new(
        Some(tenant.as_str()),
        "database_url",
        format!(
            "the same database as tenant '{other}': each tenant needs its own database (or schema)"
        ),
    )
}
