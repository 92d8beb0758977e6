//! Access tokens: compact JWTs signed with HMAC-SHA256 (`HS256`).
//!
//! Only `HS256` is accepted: the header's `alg` is checked before anything else, so
//! an `alg: none` token or one that asks for another algorithm is refused outright,
//! and the signature is compared in constant time.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::Role;
use crate::tenant::TenantId;

const ISSUER: &str = "tenant-router";
/// The only header this service writes or accepts (compared after decoding).
const ALGORITHM: &str = "HS256";

/// What a token says: the tenant, the user and the role it was issued for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    /// The user's id.
    pub sub: Uuid,
    /// The user's name, for the audit log.
    pub usr: String,
    /// The tenant the token was issued by.
    pub tid: String,
    /// That tenant's generation (see `TenantConfig::generation`).
    #[serde(default)]
    pub tgen: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
}

/// Whom a token is issued to.
#[derive(Debug, Clone, Copy)]
pub struct TokenUser<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub role: Role,
}

/// A verified token's claims, parsed.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    pub username: String,
    pub tenant: TenantId,
    /// The incarnation of the tenant it was issued by.
    pub tenant_generation: String,
    pub role: Role,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// The key tokens are signed and checked with.
#[derive(Clone)]
pub struct JwtKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey([redacted])")
    }
}

/// Why a token was refused. The reason is for the log; the client gets a plain 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Algorithm,
    Signature,
    Expired,
    Claims,
}

impl JwtKey {
    /// Minimum key length: HS256 wants at least as many key bytes as hash bytes.
    pub const MIN_LEN: usize = crate::settings::JWT_SECRET_MIN_LEN;

    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < Self::MIN_LEN {
            return Err(format!(
                "JWT_SECRET must be at least {} bytes",
                Self::MIN_LEN
            ));
        }
        Ok(Self { key: key.to_vec() })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// Signs `claims` into a compact token.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Issues a token for `user` of `tenant` (in its generation `tenant_generation`)
    /// valid for `ttl_secs` from `now`.
    pub fn issue(
        &self,
        tenant: &TenantId,
        tenant_generation: &str,
        user: TokenUser<'_>,
        now: i64,
        ttl_secs: i64,
    ) -> String {
        self.sign(&Claims {
            iss: ISSUER.into(),
            sub: user.id,
            usr: user.name.into(),
            tid: tenant.to_string(),
            tgen: tenant_generation.into(),
            role: user.role.as_str().into(),
            iat: now,
            exp: now + ttl_secs,
        })
    }

    /// Checks the header, the signature, the issuer and the expiry (at `now`, Unix
    /// seconds) and parses the claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let signing_input = &token[..header_part.len() + 1 + payload.len()];
        let header: Header = URL_SAFE_NO_PAD
            .decode(header_part)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != ALGORITHM || header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err(TokenError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(TokenError::Claims)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Claims);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken {
            user_id: claims.sub,
            username: claims.usr,
            tenant: TenantId::parse(&claims.tid).map_err(|_| TokenError::Claims)?,
            tenant_generation: claims.tgen,
            role: Role::parse(&claims.role).ok_or(TokenError::Claims)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> JwtKey {
        JwtKey::new(&[7u8; 32]).unwrap()
    }

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn a_signed_token_verifies_and_carries_its_claims() {
        let id = Uuid::new_v4();
        let token = key().issue(
            &tenant(),
            "g1",
            TokenUser {
                id,
                name: "ann",
                role: Role::Manager,
            },
            1_000,
            60,
        );
        let v = key().verify(&token, 1_010).unwrap();
        assert_eq!(v.user_id, id);
        assert_eq!(v.tenant, tenant());
        assert_eq!(v.role, Role::Manager);
        assert_eq!(v.username, "ann");
    }

    #[test]
    fn expiry_wrong_key_and_tampering_are_refused() {
        let token = key().issue(
            &tenant(),
            "g1",
            TokenUser {
                id: Uuid::new_v4(),
                name: "ann",
                role: Role::Staff,
            },
            1_000,
            60,
        );
        assert_eq!(
            key().verify(&token, 1_060).unwrap_err(),
            TokenError::Expired
        );
        let other = JwtKey::new(&[8u8; 32]).unwrap();
        assert_eq!(
            other.verify(&token, 1_010).unwrap_err(),
            TokenError::Signature
        );
        let mut tampered = token.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(key().verify(&tampered, 1_010).is_err());
        // A changed payload (role raised to owner) with the old signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims.role = "owner".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert_eq!(
            key().verify(&forged, 1_010).unwrap_err(),
            TokenError::Signature
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let token = key().issue(
            &tenant(),
            "g1",
            TokenUser {
                id: Uuid::new_v4(),
                name: "ann",
                role: Role::Owner,
            },
            1_000,
            60,
        );
        let payload = token.split('.').nth(1).unwrap();
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256"}"#,
        ] {
            let h = URL_SAFE_NO_PAD.encode(header);
            assert_eq!(
                key().verify(&format!("{h}.{payload}."), 1_010).unwrap_err(),
                TokenError::Algorithm
            );
        }
        assert_eq!(
            key().verify("a.b", 1_010).unwrap_err(),
            TokenError::Malformed
        );
        assert_eq!(key().verify("", 1_010).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(JwtKey::new(b"short").is_err());
    }
}
