//! API keys: `trk.<tenant id>.<key id>.<secret>`. The tenant id routes the key to
//! its tenant's database, the key id finds its row there, and only the SHA-256 of the
//! secret is stored, compared in constant time.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{secret::constant_time_eq, tenant::TenantId};

/// Every key starts with this, which tells it apart from a JWT.
pub const PREFIX: &str = "trk.";

/// A key as presented, taken apart; nothing in it is trusted until its row matches.
#[derive(Clone)]
pub struct PresentedKey {
    pub tenant: TenantId,
    pub id: Uuid,
    secret: String,
}

impl std::fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedKey")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl PresentedKey {
    /// Whether the secret matches the stored hash.
    pub fn matches(&self, stored_hash: &str) -> bool {
        constant_time_eq(hash_secret(&self.secret).as_bytes(), stored_hash.as_bytes())
    }
}

/// A new key: the text shown once, its id, and the hash to store.
pub struct NewKey {
    pub key: String,
    pub id: Uuid,
    pub secret_hash: String,
}

pub fn generate(tenant: &TenantId) -> NewKey {
    let id = Uuid::new_v4();
    let secret = crate::secret::generate_token();
    NewKey {
        key: format!("{PREFIX}{tenant}.{}.{secret}", id.simple()),
        id,
        secret_hash: hash_secret(&secret),
    }
}

/// Takes a presented key apart; `None` if it is not of the key's shape.
pub fn parse(raw: &str) -> Option<PresentedKey> {
    let rest = raw.strip_prefix(PREFIX)?;
    let mut parts = rest.split('.');
    let (Some(tenant), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(PresentedKey {
        tenant: TenantId::parse(tenant).ok()?,
        id: Uuid::try_parse(id).ok()?,
        secret: secret.to_string(),
    })
}

fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_and_matches_only_its_hash() {
        let tenant = TenantId::parse("acme_co").unwrap();
        let new = generate(&tenant);
        let parsed = parse(&new.key).unwrap();
        assert_eq!(parsed.tenant, tenant);
        assert_eq!(parsed.id, new.id);
        assert!(parsed.matches(&new.secret_hash));
        assert!(!parsed.matches(&generate(&tenant).secret_hash));
        assert!(!new.secret_hash.contains(&parsed.secret));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "trk.",
            "trk.acme",
            "trk.Acme.x.y",
            "trk.acme.not-a-uuid.00",
            "eyJ.a.b",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        let tenant = TenantId::parse("acme").unwrap();
        let good = generate(&tenant).key;
        assert!(parse(&format!("{good}.extra")).is_none());
        assert!(parse(&good.replace("trk.acme", "trk.../x")).is_none());
    }
}
