//! Sessions of the admin console (`/admin`): an operator signs in once with the
//! admin token and gets a session that a browser keeps in an `HttpOnly` cookie, so
//! that the token itself is never stored by the browser, in a URL or in a page.
//!
//! A session is `<expires>.<nonce>.<mac>`: the expiry (Unix seconds), 128 random
//! bits, and an HMAC-SHA256 of both under a key derived from the admin token. Any
//! replica with the same admin token verifies it without shared state, and a new
//! admin token ends every session. The session's CSRF token is another HMAC of its
//! nonce, which the console sends as `X-CSRF-Token` with every write: a page of
//! another site can make the browser send the cookie (where `SameSite` does not
//! stop it) but cannot read the CSRF token.
//!
//! Signing out revokes the session on the replica that served it, and the browser
//! drops the cookie; a copy of the cookie replayed to another replica stays valid
//! until it expires (`SESSION_LIFETIME`).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::secret::{Secret, constant_time_eq};

/// How long a console session lasts after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// The name of the session cookie.
pub const COOKIE_NAME: &str = "tr_console";

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    nonce: String,
    /// Unix seconds.
    pub expires: u64,
}

/// Issues and checks console sessions for one admin token.
pub struct ConsoleSessions {
    key: [u8; 32],
    /// Sessions signed out on this replica, until they would have expired.
    revoked: Mutex<HashMap<String, u64>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ConsoleSessions {
    pub fn new(admin_token: &Secret) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"tenant-router console session key v1\0");
        digest.update(admin_token.expose().as_bytes());
        Self {
            key: digest.finalize().into(),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A new session, as the cookie's value.
    pub fn issue(&self) -> String {
        let expires = now_secs() + SESSION_LIFETIME.as_secs();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let expires = expires.to_string();
        let mac = self.mac(&["session", &expires, &nonce]);
        format!("{expires}.{nonce}.{mac}")
    }

    /// The session a cookie value stands for, if it is one of ours, unexpired and
    /// not signed out.
    pub fn verify(&self, value: &str) -> Option<Session> {
        if value.len() > 200 {
            return None;
        }
        let mut parts = value.split('.');
        let (expires, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expected = self.mac(&["session", expires, nonce]);
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return None;
        }
        let expires: u64 = expires.parse().ok()?;
        if expires <= now_secs() {
            return None;
        }
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        if revoked.contains_key(nonce) {
            return None;
        }
        Some(Session {
            nonce: nonce.to_string(),
            expires,
        })
    }

    /// The CSRF token of `session`, which its writes must carry.
    pub fn csrf_token(&self, session: &Session) -> String {
        self.mac(&["csrf", &session.nonce])
    }

    /// Whether `presented` is the CSRF token of `session`.
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        constant_time_eq(self.csrf_token(session).as_bytes(), presented.as_bytes())
    }

    /// Ends `session` on this replica.
    pub fn revoke(&self, session: &Session) {
        let now = now_secs();
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, expires| *expires > now);
        revoked.insert(session.nonce.clone(), session.expires);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_verifies_only_under_its_own_admin_token_and_until_revoked() {
        let token = Secret::new("the-admin-token-0123456789");
        let sessions = ConsoleSessions::new(&token);
        let cookie = sessions.issue();
        assert!(!cookie.contains(token.expose()));
        let session = sessions.verify(&cookie).expect("a fresh session verifies");
        // Another replica with the same token accepts it; another token does not.
        assert_eq!(
            ConsoleSessions::new(&token).verify(&cookie),
            Some(session.clone())
        );
        assert_eq!(
            ConsoleSessions::new(&Secret::new("another-admin-token-0123456")).verify(&cookie),
            None
        );
        // Any change to any part is refused.
        let (expires, rest) = cookie.split_once('.').unwrap();
        let later = format!("{}.{rest}", expires.parse::<u64>().unwrap() + 1);
        assert_eq!(sessions.verify(&later), None);
        assert_eq!(sessions.verify(&format!("{cookie}x")), None);
        assert_eq!(sessions.verify(""), None);
        assert_eq!(sessions.verify("1.2.3.4"), None);

        let csrf = sessions.csrf_token(&session);
        assert!(sessions.csrf_matches(&session, &csrf));
        assert!(!sessions.csrf_matches(&session, ""));
        let other = sessions.verify(&sessions.issue()).unwrap();
        assert!(!sessions.csrf_matches(&other, &csrf));

        sessions.revoke(&session);
        assert_eq!(sessions.verify(&cookie), None);
        assert!(sessions.verify(&sessions.issue()).is_some());
    }

    #[test]
    fn an_expired_session_is_refused() {
        let sessions = ConsoleSessions::new(&Secret::new("the-admin-token-0123456789"));
        let expires = (now_secs() - 1).to_string();
        let nonce = "0123456789abcdef0123456789abcdef";
        let mac = sessions.mac(&["session", &expires, nonce]);
        assert_eq!(sessions.verify(&format!("{expires}.{nonce}.{mac}")), None);
    }
}
