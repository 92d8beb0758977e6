//! Loading and validating tenant configuration from `tenants.toml` and the
//! `TENANT_CONFIGS` environment variable.
//!
//! Each entry is deserialized on its own so that an error names its tenant, and
//! validated into a [`TenantConfig`] before anything uses it: a bad entry never
//! reaches a file name or a connection string.

use std::{collections::HashMap, fmt, path::Path};

use serde::{Deserialize, Serialize};

use super::{Domain, Feature, FeatureSet, TenantId};
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
    fn parse(name: &str) -> Option<Self> {
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
        let url = self.database_url.expose();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split('?').next().unwrap_or(rest);
            if path.is_empty() || path.starts_with(":memory:") {
                return None;
            }
            let absolute = std::path::absolute(path).ok()?;
            return Some(format!("sqlite:{}", absolute.display()));
        }
        let parsed = url::Url::parse(url).ok()?;
        let mut key = format!(
            "postgres:{}:{}/{}",
            parsed.host_str().unwrap_or_default().to_ascii_lowercase(),
            parsed.port().unwrap_or(5432),
            parsed.path().trim_start_matches('/')
        );
        if let Some(schema) = self.schema_name() {
            key.push('/');
            key.push_str(&schema);
        }
        Some(key)
    }
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

/// An entry as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    database_url: Option<String>,
    domain: Option<String>,
    subdomain: Option<String>,
    features: Option<Vec<String>>,
    #[serde(default)]
    branding: Branding,
    gst_number: Option<String>,
    #[serde(default)]
    contact_info: ContactInfo,
    is_active: Option<bool>,
    max_connections: Option<u32>,
    isolation: Option<String>,
    demo: Option<bool>,
}

/// Why a configuration was refused: names the tenant (where there is one) and the
/// field. Never holds a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub tenant: Option<String>,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(tenant: Option<&str>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            tenant: tenant.map(printable),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "tenant '{t}': field '{}': {}", self.field, self.message),
            None => write!(f, "field '{}': {}", self.field, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Shows an untrusted name without control characters or unbounded length.
fn printable(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if raw.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// Parses the text of a tenants file: a `[tenants.<id>]` table per tenant.
pub fn parse_tenants_toml(text: &str) -> Result<Vec<TenantConfig>, Vec<ConfigError>> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| {
        vec![ConfigError::new(
            None,
            "tenants",
            toml_syntax_error(text, &e),
        )]
    })?;
    if let Some(key) = doc.keys().find(|k| k.as_str() != "tenants") {
        return Err(vec![ConfigError::new(
            None,
            key.as_str(),
            "unknown top-level key (tenants go under [tenants.<id>])",
        )]);
    }
    let Some(tenants) = doc.get("tenants") else {
        return Ok(Vec::new());
    };
    let Some(tenants) = tenants.as_table() else {
        return Err(vec![ConfigError::new(
            None,
            "tenants",
            "must be a table of tenants keyed by id",
        )]);
    };
    validate_entries(
        tenants.iter().map(|(id, value)| {
            let raw = serde_path_to_error::deserialize::<_, RawTenant>(value.clone());
            (id.as_str(), raw.map_err(path_error))
        }),
        TenantSource::File,
    )
}

/// Describes a TOML syntax error by its message and position only: the error's own
/// text quotes the offending line, which may hold a database password.
pub fn toml_syntax_error(text: &str, err: &toml::de::Error) -> String {
    let position = err
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    format!("not valid TOML{position}: {}", err.message())
}

/// Parses `TENANT_CONFIGS`: a JSON object keyed by tenant id, with the file's fields.
pub fn parse_tenants_json(text: &str) -> Result<Vec<TenantConfig>, Vec<ConfigError>> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| {
            vec![ConfigError::new(
                None,
                "TENANT_CONFIGS",
                format!("must be a JSON object keyed by tenant id: {e}"),
            )]
        })?;
    validate_entries(
        map.iter().map(|(id, value)| {
            let raw = serde_path_to_error::deserialize::<_, RawTenant>(value);
            (id.as_str(), raw.map_err(path_error))
        }),
        TenantSource::Env,
    )
}

/// Validates one entry given as JSON (the shape of a `TENANT_CONFIGS` entry), as
/// the admin API and the control database give them.
pub fn parse_tenant_entry(
    id: &str,
    value: &serde_json::Value,
    source: TenantSource,
) -> Result<TenantConfig, Vec<ConfigError>> {
    let raw = serde_path_to_error::deserialize::<_, RawTenant>(value);
    validate_entries(std::iter::once((id, raw.map_err(path_error))), source)
        .map(|mut list| list.remove(0))
}

impl TenantConfig {
    /// The entry in the shape [`parse_tenant_entry`] reads, database URL included:
    /// for storage in the control database only, never for a response.
    pub fn to_entry(&self) -> serde_json::Value {
        serde_json::json!({
            "database_url": self.database_url.expose(),
            "domain": self.domain,
            "subdomain": self.subdomain,
            "features": self.explicit_features,
            "branding": self.branding,
            "gst_number": self.gst_number,
            "contact_info": self.contact_info,
            "is_active": self.is_active,
            "max_connections": self.pool.max_connections,
            "isolation": self.isolation,
            "demo": self.demo,
        })
    }
}

/// Turns a deserialization error into (field, message) without echoing values.
fn path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> (String, String) {
    let path = err.path().to_string();
    let field = if path == "." {
        "entry".to_string()
    } else {
        path
    };
    (field, err.inner().to_string())
}

fn validate_entries<'a>(
    entries: impl Iterator<Item = (&'a str, Result<RawTenant, (String, String)>)>,
    source: TenantSource,
) -> Result<Vec<TenantConfig>, Vec<ConfigError>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (id, raw) in entries {
        match raw {
            Err((field, message)) => errors.push(ConfigError::new(Some(id), field, message)),
            Ok(raw) => match validate(id, raw, source) {
                Ok(config) => ok.push(config),
                Err(mut e) => errors.append(&mut e),
            },
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(errors)
    }
}

fn validate(
    id: &str,
    raw: RawTenant,
    source: TenantSource,
) -> Result<TenantConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut err =
        |field: &str, message: String| errors.push(ConfigError::new(Some(id), field, message));

    let tenant_id = TenantId::parse(id).map_err(|m| err("id", m)).ok();

    let database_url = match raw.database_url {
        None => {
            err("database_url", "is required".into());
            None
        }
        Some(url) => match check_database_url(&url) {
            Ok(()) => Some(Secret::new(url)),
            Err(m) => {
                err("database_url", m);
                None
            }
        },
    };

    let domain = match raw.domain.as_deref() {
        None => Some(Domain::Default),
        Some(d) => Domain::parse(d).or_else(|| {
            err(
                "domain",
                format!(
                    "unknown domain '{}' (expected dental, manufacturing or default)",
                    printable(d)
                ),
            );
            None
        }),
    };

    let explicit_features = raw.features.map(|names| {
        names
            .iter()
            .filter_map(|name| {
                Feature::parse(name).or_else(|| {
                    err(
                        "features",
                        format!(
                            "unknown feature '{}' (known: {})",
                            printable(name),
                            Feature::ALL.map(Feature::as_str).join(", ")
                        ),
                    );
                    None
                })
            })
            .collect::<Vec<_>>()
    });

    let subdomain = match (&raw.subdomain, &tenant_id) {
        (Some(label), _) => Some(label.clone()),
        (None, Some(tid)) => Some(tid.default_subdomain()),
        (None, None) => None,
    };
    if let Some(label) = &subdomain
        && let Err(m) = check_dns_label(label)
    {
        let hint = if raw.subdomain.is_none() {
            " (derived from the id; set `subdomain`)"
        } else {
            ""
        };
        err("subdomain", format!("{m}{hint}"));
    }

    for (field, value) in [
        ("branding.primary_color", &raw.branding.primary_color),
        ("branding.secondary_color", &raw.branding.secondary_color),
    ] {
        if let Some(colour) = value
            && !is_hex_colour(colour)
        {
            err(
                field,
                format!(
                    "'{}' is not a colour like #2E86AB or #fff",
                    printable(colour)
                ),
            );
        }
    }
    for (field, value) in [
        ("branding.company_name", &raw.branding.company_name),
        ("branding.logo_url", &raw.branding.logo_url),
        ("gst_number", &raw.gst_number),
        ("contact_info.phone", &raw.contact_info.phone),
        ("contact_info.email", &raw.contact_info.email),
        ("contact_info.address", &raw.contact_info.address),
    ] {
        if let Some(text) = value
            && (text.len() > 500 || text.chars().any(char::is_control))
        {
            err(
                field,
                "must be at most 500 characters with no control characters".into(),
            );
        }
    }
    // Public (login pages show them): a logo is a web address or a path of this
    // site, never `javascript:` or `data:`; a name is text, never markup.
    if let Some(logo) = &raw.branding.logo_url
        && !is_safe_logo_url(logo)
    {
        err(
            "branding.logo_url",
            "must start with https://, http:// or / (a path on this site)".into(),
        );
    }
    if let Some(name) = &raw.branding.company_name
        && name.contains(['<', '>'])
    {
        err(
            "branding.company_name",
            "must be plain text, without < or >".into(),
        );
    }
    if let Some(email) = &raw.contact_info.email
        && !looks_like_email(email)
    {
        err(
            "contact_info.email",
            format!("'{}' is not an e-mail address", printable(email)),
        );
    }
    if let Some(n) = raw.max_connections
        && !(1..=1000).contains(&n)
    {
        err("max_connections", format!("{n} is outside 1..=1000"));
    }
    let is_postgres = database_url
        .as_ref()
        .is_some_and(|u| u.expose().starts_with("postgres"));
    let isolation = match raw.isolation.as_deref() {
        None => Some(Isolation::Database),
        Some(name) => Isolation::parse(name).or_else(|| {
            err(
                "isolation",
                format!(
                    "unknown isolation '{}' (expected database or schema)",
                    printable(name)
                ),
            );
            None
        }),
    };
    if isolation == Some(Isolation::Schema) {
        if database_url.is_some() && !is_postgres {
            err(
                "isolation",
                "schema isolation needs a postgres:// database_url".into(),
            );
        }
        if id.len() > MAX_SCHEMA_TENANT_ID_LEN {
            err(
                "isolation",
                format!("schema isolation allows ids of at most {MAX_SCHEMA_TENANT_ID_LEN} bytes"),
            );
        }
    }

    match (tenant_id, database_url, domain, subdomain, isolation) {
        (Some(id), Some(database_url), Some(domain), Some(subdomain), Some(isolation))
            if errors.is_empty() =>
        {
            let features = FeatureSet::for_tenant(domain, explicit_features.as_deref());
            Ok(TenantConfig {
                id,
                database_url,
                domain,
                subdomain,
                explicit_features,
                features,
                branding: raw.branding,
                gst_number: raw.gst_number,
                contact_info: raw.contact_info,
                is_active: raw.is_active.unwrap_or(true),
                demo: raw.demo.unwrap_or(false),
                pool: PoolOverrides {
                    max_connections: raw.max_connections,
                },
                isolation,
                source,
                generation: String::new(),
            }
            .with_derived_generation())
        }
        _ => Err(errors),
    }
}

/// Accepts the schemes the router can serve; the message names only the scheme.
/// `https://…`, `http://…` or a path of this site (`/…`, not `//host`), with no
/// white space, control characters or quotes.
fn is_safe_logo_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let allowed = lower.starts_with("https://")
        || lower.starts_with("http://")
        || (url.starts_with('/') && !url.starts_with("//"));
    allowed
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>'))
}

pub(crate) fn check_database_url(url: &str) -> Result<(), String> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s)
        .or_else(|| url.split_once(':').map(|(s, _)| s));
    match scheme {
        Some("sqlite" | "postgres" | "postgresql") => {}
        Some(s) if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') => {
            return Err(format!(
                "unsupported scheme '{s}' (use sqlite:// or postgres://)"
            ));
        }
        _ => return Err("is not a URL (use sqlite:// or postgres://)".into()),
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    if matches!(scheme, Some("postgres" | "postgresql")) {
        let parsed =
            url::Url::parse(url).map_err(|_| "is not a valid postgres:// URL".to_string())?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("names no host".into());
        }
        let name = parsed.path().trim_start_matches('/');
        let plain = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !plain {
            return Err("must name a database of letters, digits, '_' and '-' (at most 63)".into());
        }
    }
    Ok(())
}

fn check_dns_label(label: &str) -> Result<(), String> {
    let valid = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a DNS label (lowercase letters, digits and inner '-', at most 63)",
            printable(label)
        ))
    }
}

fn is_hex_colour(s: &str) -> bool {
    s.strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn looks_like_email(s: &str) -> bool {
    s.split_once('@')
        .is_some_and(|(local, host)| !local.is_empty() && host.contains('.') && !host.contains('@'))
}

/// Reads the tenants file (if given or present) and `TENANT_CONFIGS`, lets env
/// entries replace file entries with the same id, and checks that no two tenants
/// share a subdomain.
/// Refuses a tenant whose subdomain is one of `ignored` (such as `www`): requests
/// for that label are never identified by subdomain, so the tenant could not be
/// reached that way.
pub fn check_ignored_subdomains(
    tenants: &[TenantConfig],
    ignored: &[String],
) -> Result<(), Vec<ConfigError>> {
    let errors: Vec<ConfigError> = tenants
        .iter()
        .filter_map(|t| ignored_subdomain_error(t, ignored))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The error for one tenant whose subdomain is in `ignored`, if it is.
pub fn ignored_subdomain_error(tenant: &TenantConfig, ignored: &[String]) -> Option<ConfigError> {
    ignored.contains(&tenant.subdomain).then(|| {
        ConfigError::new(
            Some(tenant.id.as_str()),
            "subdomain",
            format!(
                "'{}' is in IGNORED_SUBDOMAINS, so it never names a tenant; choose another",
                tenant.subdomain
            ),
        )
    })
}

pub fn load_tenants(
    file: Option<&Path>,
    file_required: bool,
    env_json: Option<&str>,
) -> Result<Vec<TenantConfig>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut by_id: HashMap<TenantId, TenantConfig> = HashMap::new();

    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) => match parse_tenants_toml(&text) {
                Ok(list) => by_id.extend(list.into_iter().map(|t| (t.id.clone(), t))),
                Err(mut e) => errors.append(&mut e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file_required => {}
            Err(e) => errors.push(ConfigError::new(
                None,
                "TENANTS_FILE",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }
    if let Some(json) = env_json {
        match parse_tenants_json(json) {
            Ok(list) => by_id.extend(list.into_iter().map(|t| (t.id.clone(), t))),
            Err(mut e) => errors.append(&mut e),
        }
    }

    let mut tenants: Vec<TenantConfig> = by_id.into_values().collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    let mut labels: HashMap<&str, &TenantId> = HashMap::new();
    for t in &tenants {
        if let Some(other) = labels.insert(&t.subdomain, &t.id) {
            errors.push(ConfigError::new(
                Some(t.id.as_str()),
                "subdomain",
                format!(
                    "'{}' is already the subdomain of tenant '{other}'",
                    t.subdomain
                ),
            ));
        }
    }
    let mut storages: HashMap<String, &TenantId> = HashMap::new();
    for t in &tenants {
        if let Some(key) = t.storage_identity()
            && let Some(other) = storages.insert(key, &t.id)
        {
            errors.push(shared_storage_error(&t.id, other));
        }
    }
    if errors.is_empty() {
        Ok(tenants)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_error(toml: &str) -> ConfigError {
        let errs = parse_tenants_toml(toml).expect_err("should be refused");
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn parses_a_full_entry() {
        let list = parse_tenants_toml(
            r##"
            [tenants.dental_clinic_abc]
            database_url = "sqlite://data/a.db?mode=rwc"
            domain = "dental"
            gst_number = "GST1"
            branding = { company_name = "ABC", primary_color = "#2E86AB" }
            contact_info = { phone = "+91-1", email = "info@abc.com" }
            "##,
        )
        .unwrap();
        let t = &list[0];
        assert_eq!(t.id.as_str(), "dental_clinic_abc");
        assert_eq!(t.subdomain, "dental-clinic-abc");
        assert_eq!(t.domain, Domain::Dental);
        assert!(t.features.contains(Feature::PatientManagement));
        assert!(t.is_active);
        assert_eq!(t.source, TenantSource::File);
    }

    #[test]
    fn names_tenant_and_field_for_each_kind_of_bad_entry() {
        let cases = [
            ("[tenants.Bad]\ndatabase_url='sqlite://x.db'", "Bad", "id"),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\ndomain='retail'",
                "a",
                "domain",
            ),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nfeatures=['teleport']",
                "a",
                "features",
            ),
            (
                "[tenants.a]\ndatabase_url='mysql://u:p@h/db'",
                "a",
                "database_url",
            ),
            ("[tenants.a]\ndomain='dental'", "a", "database_url"),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nbranding={primary_color='blue'}",
                "a",
                "branding.primary_color",
            ),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nis_active='yes'",
                "a",
                "is_active",
            ),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\ncolour='x'",
                "a",
                "colour",
            ),
        ];
        for (text, tenant, field) in cases {
            let e = one_error(text);
            assert_eq!(e.tenant.as_deref(), Some(tenant), "{text}");
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn schema_isolation_needs_postgres_and_a_short_id() {
        let e = one_error("[tenants.a]\ndatabase_url='sqlite://x.db'\nisolation='schema'");
        assert_eq!(e.field, "isolation");
        let e = one_error("[tenants.a]\ndatabase_url='postgres://u:p@h/db'\nisolation='shared'");
        assert_eq!(e.field, "isolation");
        let long = "a".repeat(57);
        let e = one_error(&format!(
            "[tenants.{long}]\ndatabase_url='postgres://u:p@h/db'\nisolation='schema'"
        ));
        assert_eq!(e.field, "isolation");
        let ok = parse_tenants_toml(
            "[tenants.a]\ndatabase_url='postgres://u:p@h/db?sslmode=require'\nisolation='schema'",
        )
        .unwrap();
        assert_eq!(ok[0].schema_name().as_deref(), Some("tenant_a"));
    }

    #[test]
    fn postgres_database_names_must_be_plain() {
        for url in [
            "postgres://u:p@h/",
            "postgres://u:p@h/a%22b",
            "postgres://u:p@h/a;b",
            "postgres:///db",
        ] {
            let e = one_error(&format!("[tenants.a]\ndatabase_url='{url}'"));
            assert_eq!(e.field, "database_url", "{url}");
        }
    }

    #[test]
    fn unsupported_scheme_message_does_not_echo_the_url() {
        let e = one_error("[tenants.a]\ndatabase_url='mysql://user:hunter2@h/db'");
        assert!(e.message.contains("mysql"));
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn a_syntax_error_does_not_quote_the_line() {
        let e = one_error(
            "[tenants.a]\ndatabase_url = \"postgres://u:hunter2@h/db\"\ndatabase_url = \"x\"\n",
        );
        assert!(e.message.contains("line 3"), "{e}");
        assert!(!e.message.contains("hunter2"), "{e}");
        let e = one_error("[tenants.a]\ndatabase_url = \"postgres://u:hunter2@h/db\n");
        assert!(!e.message.contains("hunter2"), "{e}");
    }

    #[test]
    fn explicit_features_replace_the_preset() {
        let list = parse_tenants_toml(
            "[tenants.a]\ndatabase_url='sqlite://x.db'\ndomain='dental'\nfeatures=['bom_management']",
        )
        .unwrap();
        assert!(list[0].features.contains(Feature::BomManagement));
        assert!(!list[0].features.contains(Feature::PatientManagement));
    }

    #[test]
    fn env_entry_replaces_file_entry_with_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(
            &path,
            "[tenants.a]\ndatabase_url='sqlite://a.db'\ndomain='dental'\n",
        )
        .unwrap();
        let env = r#"{"a": {"database_url": "sqlite://b.db", "domain": "manufacturing"},
                      "c": {"database_url": "sqlite://c.db"}}"#;
        let list = load_tenants(Some(&path), true, Some(env)).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].domain, Domain::Manufacturing);
        assert_eq!(list[0].source, TenantSource::Env);
        assert_eq!(list[0].database_url.expose(), "sqlite://b.db");
    }

    #[test]
    fn logo_urls_are_web_addresses_or_paths_and_names_are_plain_text() {
        for (logo, ok) in [
            ("https://cdn.example.com/logo.png", true),
            ("http://example.com/l.png", true),
            ("/assets/branding/a/logo.png", true),
            ("javascript:alert(1)", false),
            ("JavaScript:alert(1)", false),
            ("data:image/png;base64,AAAA", false),
            ("//evil.example/logo.png", false),
            ("/logo.png\" onerror=\"x", false),
        ] {
            let toml = format!(
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nbranding={{logo_url={logo:?}}}"
            );
            let result = parse_tenants_toml(&toml);
            assert_eq!(result.is_ok(), ok, "{logo}: {result:?}");
            if let Err(errors) = result {
                assert!(
                    errors
                        .iter()
                        .any(|e| e.to_string().contains("branding.logo_url"))
                );
            }
        }
        let markup =
            "[tenants.a]\ndatabase_url='sqlite://x.db'\nbranding={company_name='<b>ABC</b>'}";
        let errors = parse_tenants_toml(markup).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("branding.company_name"))
        );
    }

    #[test]
    fn two_tenants_on_one_database_are_refused_wherever_they_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenants.toml");
        std::fs::write(
            &file,
            "[tenants.a]\ndatabase_url = 'sqlite://data/a.db?mode=rwc'\n\
             [tenants.s1]\ndatabase_url = 'postgres://u:p@db.example:5432/shared'\nisolation = 'schema'\n\
             [tenants.s2]\ndatabase_url = 'postgres://v:q@db.example/shared'\nisolation = 'schema'\n\
             [tenants.whole]\ndatabase_url = 'postgres://u:p@db.example/shared'\n",
        )
        .unwrap();
        // Schema tenants of one database, and a database tenant beside them, differ.
        assert_eq!(load_tenants(Some(&file), true, None).unwrap().len(), 4);
        // The same file spelt another way, from the environment.
        let env = r#"{"b": {"database_url": "sqlite:data/./a.db"}}"#;
        let errs = load_tenants(Some(&file), true, Some(env)).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "database_url");
        assert!(errs[0].message.contains("tenant 'a'"), "{}", errs[0]);
        // The same database under other credentials.
        let env = r#"{"c": {"database_url": "postgres://x:y@DB.example:5432/shared"}}"#;
        let errs = load_tenants(Some(&file), true, Some(env)).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.contains("'whole'") && text.contains("'c'"), "{text}");
        assert!(!errs[0].to_string().contains("x:y"), "{}", errs[0]);
    }

    #[test]
    fn duplicate_subdomain_is_refused() {
        let env = r#"{"a_b": {"database_url": "sqlite://1.db"},
                      "x": {"database_url": "sqlite://2.db", "subdomain": "a-b"}}"#;
        let errs = load_tenants(None, false, Some(env)).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "subdomain");
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let missing = Path::new("/nonexistent/tenants.toml");
        assert!(
            load_tenants(Some(missing), false, Some("{}"))
                .unwrap()
                .is_empty()
        );
        let errs = load_tenants(Some(missing), true, None).unwrap_err();
        assert_eq!(errs[0].field, "TENANTS_FILE");
    }
}
