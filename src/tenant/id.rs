//! The validated tenant id: the only form in which a tenant name reaches a file
//! name, a connection string, a log field or SQL.

use std::{fmt, sync::Arc};

use serde::Serialize;

/// Longest id accepted: a DNS label's and a PostgreSQL identifier's limit.
pub const MAX_LEN: usize = 63;

/// Lowercase ASCII letters, digits, `_` and `-`, starting with a letter or digit, at
/// most 63 bytes. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates `raw`; the error says what is wrong without echoing unprintable input.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("tenant id is empty".into());
        }
        if raw.len() > MAX_LEN {
            return Err(format!("tenant id is longer than {MAX_LEN} bytes"));
        }
        let first = raw.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err("tenant id must start with a lowercase letter or a digit".into());
        }
        if let Some(bad) = raw
            .bytes()
            .find(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-'))
        {
            let shown = if bad.is_ascii_graphic() {
                format!("'{}'", bad as char)
            } else {
                "a non-printable or non-ASCII byte".to_string()
            };
            return Err(format!(
                "tenant id may hold only lowercase letters, digits, '_' and '-', not {shown}"
            ));
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subdomain label a tenant gets when it names none: `_` becomes `-`.
    pub fn default_subdomain(&self) -> String {
        self.0.replace('_', "-")
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", &self.0)
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "demo",
            "dental_clinic_abc",
            "acme-manufacturing",
            "9lives",
            "a",
        ] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        assert!(TenantId::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "../etc",
            "a;drop table x",
            "Demo",
            "_lead",
            "-lead",
            "a b",
            "caf\u{e9}",
            "a.b",
            "a/b",
            "a\0b",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TenantId::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn default_subdomain_swaps_underscores() {
        let id = TenantId::parse("dental_clinic_abc").unwrap();
        assert_eq!(id.default_subdomain(), "dental-clinic-abc");
    }
}
