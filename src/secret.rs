//! A string that must never reach a response or a log line.

use std::fmt;

/// Holds a secret (a database URL, a token). `Debug` and `Display` print a
/// placeholder; the value is read only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it is handed to the thing that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Compares two byte strings through their SHA-256 digests, so that the time a
/// token check takes tells an attacker neither how many leading bytes were right
/// nor how long the secret is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Digests of equal length, so that the time taken does not tell how long the
    // secret is (a length check would return early).
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Removes the user-info part of every `scheme://user:password@host` and the value
/// of every `password=` pair from `text`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // Not at a quote: `'` may stand in a password as it is, and a quoted URL's
        // closing quote comes after its `@` anyway.
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    redact_password_pairs(&out)
}

fn redact_password_pairs(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search_from = 0;
    while let Some(found) = lower[search_from..].find("password=") {
        let mut value_start = search_from + found + "password=".len();
        // A quoted value (`password='it''s'`, libpq style) ends at its closing
        // quote, not at a space or quote inside it.
        let quote = text[value_start..]
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"');
        let value_end = match quote {
            Some(q) => {
                value_start += 1;
                let mut end = text.len();
                let mut escaped = false;
                for (i, c) in text[value_start..].char_indices() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        end = value_start + i;
                        break;
                    }
                }
                end
            }
            None => text[value_start..]
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
                .map_or(text.len(), |n| value_start + n),
        };
        out.push_str(&text[last..value_start]);
        out.push_str("***");
        last = value_end;
        search_from = value_end;
    }
    out.push_str(&text[last..]);
    out
}

/// A random token for when `ADMIN_TOKEN` is unset: 244 random bits from two v4 UUIDs.
pub fn generate_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_password_is_redacted_whole() {
        let text = r"host='db' password='se cr\'et' user='u'";
        let redacted = redact(text);
        assert!(
            !redacted.contains("se cr") && !redacted.contains("et'"),
            "{redacted}"
        );
        assert!(redacted.contains("user='u'"), "{redacted}");
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("postgres://u:hunter2@db/x");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "postgres://u:hunter2@db/x");
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

/// Seals secrets for storage (the database URLs in the control database) with
/// ChaCha20-Poly1305 under `SECRET_KEY`; opens them with that key or, during a key
/// rotation, with `SECRET_KEY_PREVIOUS`.
pub struct SecretBox {
    current: chacha20poly1305::Key,
    previous: Option<chacha20poly1305::Key>,
}

/// Marks a sealed value: `enc:v1:` then base64 of nonce and ciphertext.
const SEALED_PREFIX: &str = "enc:v1:";

fn parse_key(name: &str, hex: &str) -> Result<chacha20poly1305::Key, String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{name} must be 64 hexadecimal characters (32 bytes)"
        ));
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_default();
    }
    Ok(chacha20poly1305::Key::from(bytes))
}

impl SecretBox {
    /// From hex keys (`SECRET_KEY`, and `SECRET_KEY_PREVIOUS` while rotating).
    pub fn from_hex(current: &str, previous: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            current: parse_key("SECRET_KEY", current)?,
            previous: previous
                .map(|p| parse_key("SECRET_KEY_PREVIOUS", p))
                .transpose()?,
        })
    }

    /// A fresh random key, as hex.
    pub fn generate_hex() -> String {
        use chacha20poly1305::{KeyInit, aead::OsRng};
        chacha20poly1305::ChaCha20Poly1305::generate_key(&mut OsRng)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Seals `plaintext` under the current key.
    pub fn seal(&self, plaintext: &str) -> Result<String, String> {
        use base64::Engine;
        use chacha20poly1305::{
            AeadCore, ChaCha20Poly1305, KeyInit,
            aead::{Aead, OsRng},
        };
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = ChaCha20Poly1305::new(&self.current)
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| "sealing failed".to_string())?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// Opens a stored value. A value without the sealed prefix was stored before
    /// sealing existed and is returned as it is; `reseal` upgrades it.
    pub fn open(&self, stored: &str) -> Result<String, String> {
        Ok(self.open_with_key(stored)?.0)
    }

    /// Whether `stored` should be sealed again: it is plain, or only the previous
    /// key opens it.
    pub fn needs_reseal(&self, stored: &str) -> bool {
        matches!(self.open_with_key(stored), Ok((_, false)))
    }

    /// The plaintext, and whether the current key (or no key) opened it.
    fn open_with_key(&self, stored: &str) -> Result<(String, bool), String> {
        use base64::Engine;
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, aead::Aead};
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok((stored.to_string(), false));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the sealed value is damaged".to_string())?;
        if bytes.len() < 12 {
            return Err("the sealed value is damaged".into());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| "the sealed value is damaged".to_string())?;
        let nonce = Nonce::from(nonce);
        for (key, is_current) in
            std::iter::once((&self.current, true)).chain(self.previous.iter().map(|k| (k, false)))
        {
            if let Ok(plain) = ChaCha20Poly1305::new(key).decrypt(&nonce, sealed) {
                let plain = String::from_utf8(plain)
                    .map_err(|_| "the sealed value is not text".to_string())?;
                return Ok((plain, is_current));
            }
        }
        Err("neither SECRET_KEY nor SECRET_KEY_PREVIOUS opens it".into())
    }
}

#[cfg(test)]
mod box_tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_key_and_hide_the_text() {
        let key = SecretBox::generate_hex();
        let sb = SecretBox::from_hex(&key, None).unwrap();
        let sealed = sb.seal("postgres://u:hunter2@h/db").unwrap();
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("hunter2"));
        assert_eq!(sb.open(&sealed).unwrap(), "postgres://u:hunter2@h/db");
        assert!(!sb.needs_reseal(&sealed));
        let other = SecretBox::from_hex(&SecretBox::generate_hex(), None).unwrap();
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn rotation_opens_with_the_previous_key_and_asks_for_a_reseal() {
        let (old, new) = (SecretBox::generate_hex(), SecretBox::generate_hex());
        let sealed_old = SecretBox::from_hex(&old, None)
            .unwrap()
            .seal("secret")
            .unwrap();
        let rotating = SecretBox::from_hex(&new, Some(&old)).unwrap();
        assert_eq!(rotating.open(&sealed_old).unwrap(), "secret");
        assert!(rotating.needs_reseal(&sealed_old));
        assert!(rotating.needs_reseal("plain text from before"));
        let resealed = rotating.seal("secret").unwrap();
        assert_eq!(
            SecretBox::from_hex(&new, None)
                .unwrap()
                .open(&resealed)
                .unwrap(),
            "secret"
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(SecretBox::from_hex("abc", None).is_err());
        assert!(SecretBox::from_hex(&"g".repeat(64), None).is_err());
    }
    #[test]
    fn redact_removes_user_info_and_password_pairs() {
        let text = "error connecting to postgres://app:hunter2@db.internal:5432/t1?sslmode=require \
                    (host=db password=hunter3 user=app)";
        let clean = redact(text);
        assert!(!clean.contains("hunter2"), "{clean}");
        assert!(!clean.contains("hunter3"), "{clean}");
        assert!(
            clean.contains("postgres://***@db.internal:5432/t1"),
            "{clean}"
        );
    }

    #[test]
    fn a_password_with_a_quote_in_a_quoted_url_is_redacted() {
        let text = r#"invalid type: string "postgres://app:it'sZQX56@db1.internal/acme", expected a table"#;
        let clean = redact(text);
        assert!(!clean.contains("ZQX56"), "{clean}");
        assert!(
            clean.contains("postgres://***@db1.internal/acme"),
            "{clean}"
        );
        let quoted = "url 'postgres://db.internal/x' then a@b";
        assert_eq!(redact(quoted), quoted);
    }

    #[test]
    fn redact_leaves_plain_text_alone() {
        assert_eq!(redact("no such table: products"), "no such table: products");
        assert_eq!(redact("sqlite://data/a.db"), "sqlite://data/a.db");
    }
}
