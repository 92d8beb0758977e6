//! Login throttling: after too many failed logins for one user, or from one client
//! address, within a window, further attempts are refused (429 with `Retry-After`)
//! until the window has passed, the right password included.
//!
//! Counters live in this process: behind a load balancer each replica counts its own,
//! so the effective limit is the per-replica limit times the replicas.

use std::time::{Duration, Instant};

use moka::future::Cache;

/// Failure counts per key (`user:<tenant>:<name>` or `addr:<ip>`).
#[derive(Clone)]
pub struct LoginThrottle {
    failures: Cache<String, (u32, Instant)>,
    window: Duration,
    per_user: u32,
    per_address: u32,
}

impl LoginThrottle {
    pub fn new(window: Duration, per_user: u32, per_address: u32) -> Self {
        Self {
            failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
            window,
            per_user,
            per_address,
        }
    }

    pub fn user_key(tenant: &str, username: &str) -> String {
        format!("user:{tenant}:{username}")
    }

    pub fn address_key(address: &str) -> String {
        format!("addr:{address}")
    }

    fn limit(&self, key: &str) -> u32 {
        if key.starts_with("addr:") {
            self.per_address
        } else {
            self.per_user
        }
    }

    /// `Err(seconds to wait)` if any key is over its limit within the window.
    pub async fn check(&self, keys: &[&str]) -> Result<(), u64> {
        for key in keys {
            if let Some((count, since)) = self.failures.get(*key).await {
                let elapsed = since.elapsed();
                if count >= self.limit(key) && elapsed < self.window {
                    return Err((self.window - elapsed).as_secs().max(1));
                }
            }
        }
        Ok(())
    }

    /// Counts a failure against each key; a window starts at its first failure.
    pub async fn record_failure(&self, keys: &[&str]) {
        for key in keys {
            let now = Instant::now();
            let entry = match self.failures.get(*key).await {
                Some((count, since)) if since.elapsed() < self.window => (count + 1, since),
                _ => (1, now),
            };
            self.failures.insert((*key).to_string(), entry).await;
        }
    }

    /// Forgets a key's failures (a user's, after a successful login).
    pub async fn clear(&self, key: &str) {
        self.failures.invalidate(key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_trips_and_the_window_resets_it() {
        let t = LoginThrottle::new(Duration::from_millis(200), 2, 10);
        let key = LoginThrottle::user_key("acme", "ann");
        assert!(t.check(&[&key]).await.is_ok());
        t.record_failure(&[&key]).await;
        assert!(t.check(&[&key]).await.is_ok());
        t.record_failure(&[&key]).await;
        assert!(t.check(&[&key]).await.is_err());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(t.check(&[&key]).await.is_ok());
    }

    #[tokio::test]
    async fn addresses_have_their_own_limit() {
        let t = LoginThrottle::new(Duration::from_secs(60), 1, 3);
        let addr = LoginThrottle::address_key("10.0.0.1");
        t.record_failure(&[&addr]).await;
        t.record_failure(&[&addr]).await;
        assert!(t.check(&[&addr]).await.is_ok());
        t.record_failure(&[&addr]).await;
        assert!(t.check(&[&addr]).await.is_err());
    }
}
