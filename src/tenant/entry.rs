//! Validating one tenant entry, from `tenants.toml`, `TENANT_CONFIGS`, the control
//! database or the admin API, into a [`TenantConfig`].
//!
//! Each entry is deserialized on its own so that an error names its tenant, and
//! validated before anything uses it: a bad entry never reaches a file name or a
//! connection string.

use std::fmt;

use serde::Deserialize;

use super::{
    Branding, ContactInfo, Domain, Feature, FeatureSet, Isolation, MAX_SCHEMA_TENANT_ID_LEN,
    PoolOverrides, TenantConfig, TenantId, TenantSource,
};
use crate::secret::Secret;

/// An entry as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
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
    rate_limit_per_sec: Option<u32>,
    rate_limit_burst: Option<u32>,
    max_concurrent_requests: Option<u32>,
    storage_quota_bytes: Option<u64>,
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
    pub fn new(tenant: Option<&str>, field: impl Into<String>, message: impl Into<String>) -> Self {
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

/// Shows an untrusted name without control characters or unbounded length, and
/// without the credentials of a URL given where a name belongs.
fn printable(raw: &str) -> String {
    let clean = crate::secret::redact(raw);
    let mut out: String = clean
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.chars().count() > 64 {
        out.push('…');
    }
    out
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
            "rate_limit_per_sec": self.limits.rate_limit_per_sec,
            "rate_limit_burst": self.limits.rate_limit_burst,
            "max_concurrent_requests": self.limits.max_concurrent_requests,
            "storage_quota_bytes": self.limits.storage_quota_bytes,
            "isolation": self.isolation,
            "demo": self.demo,
        })
    }
}

/// Turns a deserialization error into (field, message) without echoing values.
pub(crate) fn path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> (String, String) {
    let path = err.path().to_string();
    let field = if path == "." {
        "entry".to_string()
    } else {
        path
    };
    (field, without_values(&err.inner().to_string()))
}

/// A deserializer's message without the strings it quotes (`invalid type: string
/// "postgres://…", expected …`): an entry put in the wrong place may be a
/// database URL with its password. Field names, which it quotes with backticks,
/// stay.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('"') {
        out.push_str(rest[..start].trim_end_matches(' '));
        // Quoted with Rust's escapes: `\"` does not close.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest[start + 1..].char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(start + 1 + i + 1);
                break;
            }
        }
        // Unclosed: drop the rest rather than show part of a value.
        let Some(end) = end else { return out };
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn validate_entries<'a>(
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
    for (field, value, max) in [
        ("rate_limit_per_sec", raw.rate_limit_per_sec, 1_000_000),
        ("rate_limit_burst", raw.rate_limit_burst, 1_000_000),
        (
            "max_concurrent_requests",
            raw.max_concurrent_requests,
            100_000,
        ),
    ] {
        if let Some(n) = value
            && n > max
        {
            err(field, format!("{n} is above {max}"));
        }
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
                limits: crate::tenant::RequestLimits {
                    rate_limit_per_sec: raw.rate_limit_per_sec,
                    rate_limit_burst: raw.rate_limit_burst,
                    max_concurrent_requests: raw.max_concurrent_requests,
                    storage_quota_bytes: raw.storage_quota_bytes,
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
            // A backslash is a slash to browsers: `/\evil.example/x.png` is another site.
            .any(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '\\')
            })
}

pub fn check_database_url(url: &str) -> Result<(), String> {
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
    if scheme == Some("sqlite") {
        // In memory, each connection of the pool would have a database of its own:
        // migrated on one, queried on another.
        let in_memory = url
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p == "mode=memory"));
        if super::sqlite_file_of(url).is_none() || in_memory {
            return Err("must name a database file (sqlite://path/to/file.db), not memory".into());
        }
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

/// The query of a new `postgres://` URL (a tenant's, `CONTROL_DATABASE_URL`,
/// `DATABASE_URL`): only the parameters the driver reads, and a `sslmode` it
/// knows. Not applied to URLs already stored in the control database: a tenant
/// provisioned before these rules keeps loading.
pub fn check_url_parameters(url: &str) -> Result<(), String> {
    if !url.starts_with("postgres") {
        return Ok(());
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    // A mode the driver does not know fails every connection later, as if the
    // server were down (503), instead of here. The driver reads each occurrence
    // (the last one wins), in any case.
    let modes = parsed
        .query_pairs()
        .filter(|(k, _)| matches!(k.as_ref(), "sslmode" | "ssl-mode"));
    for (_, mode) in modes {
        let mode = mode.to_ascii_lowercase();
        if !matches!(
            mode.as_str(),
            "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full"
        ) {
            return Err(
                "sslmode must be disable, allow, prefer, require, verify-ca or verify-full".into(),
            );
        }
    }
    // The driver logs a parameter it does not know with its value, which may be
    // a secret (`sslpassword=…`, `Password=…`): only those it reads pass.
    if let Some((key, _)) = parsed.query_pairs().find(|(k, _)| !known_parameter(k)) {
        return Err(format!(
            "has a query parameter the driver does not read: '{}' (it reads sslmode, sslrootcert, sslcert, sslkey, statement-cache-capacity, application_name and options)",
            printable(&key)
        ));
    }
    Ok(())
}

/// Whether sqlx reads `key` in a `postgres://` URL's query (the server, database
/// and user ones are refused for tenants by [`check_tenant_database_url`]).
fn known_parameter(key: &str) -> bool {
    matches!(
        key,
        "sslmode"
            | "ssl-mode"
            | "sslrootcert"
            | "ssl-root-cert"
            | "ssl-ca"
            | "sslcert"
            | "ssl-cert"
            | "sslkey"
            | "ssl-key"
            | "statement-cache-capacity"
            | "application_name"
            | "options"
            | "host"
            | "hostaddr"
            | "port"
            | "dbname"
            | "user"
            | "password"
    ) || (key.starts_with("options[") && key.ends_with(']'))
}

/// The further rules for a tenant's database URL, new from a tenants file,
/// `TENANT_CONFIGS`, a provisioning or a move: it must say where the database is
/// in a way that the checks for two tenants on one database see as the driver
/// does. (Rows already in the control database load without them.)
pub fn check_tenant_database_url(url: &str) -> Result<(), String> {
    check_database_url(url)?;
    check_url_parameters(url)?;
    if url.starts_with("sqlite:") {
        // The driver decodes `%xx` in the path and the file checks here would
        // not: one tenant could reach another's file under another spelling.
        if super::sqlite_file_of(url).is_some_and(|path| path.contains('%')) {
            return Err("must not percent-encode its path: write the file name as it is".into());
        }
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| "is not a valid postgres:// URL".to_string())?;
    // The driver lets these parameters override the URL's own server, database
    // and user, which are what tells tenants' databases apart.
    if let Some((key, _)) = parsed.query_pairs().find(|(k, _)| {
        ["host", "hostaddr", "port", "dbname", "user", "password"].contains(&k.as_ref())
    }) {
        return Err(format!(
            "must not set '{}' as a query parameter: write the server, database and user in the URL itself (a socket directory as the host, percent-encoded)",
            printable(&key)
        ));
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
