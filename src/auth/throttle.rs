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
    async fn check(&self, keys: &[&str]) -> Result<(), u64> {
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

    /// Counts an attempt against each key *before* the password is checked, so that
    /// parallel guesses cannot all slip in under the limit; `Err(seconds to wait)`
    /// when a key is over its limit. A successful login then takes its attempt back
    /// ([`LoginThrottle::succeeded`]), so only failures stay counted.
    pub async fn begin_attempt(&self, keys: &[&str]) -> Result<(), u64> {
        self.check(keys).await?;
        for key in keys {
            let window = self.window;
            let (count, since) = self
                .failures
                .entry_by_ref(*key)
                .and_upsert_with(|old| {
                    let next = match old.map(|e| e.into_value()) {
                        Some((count, since)) if since.elapsed() < window => (count + 1, since),
                        _ => (1, Instant::now()),
                    };
                    std::future::ready(next)
                })
                .await
                .into_value();
            let elapsed = since.elapsed();
            if count > self.limit(key) && elapsed < self.window {
                return Err((self.window - elapsed).as_secs().max(1));
            }
        }
        Ok(())
    }

    /// A login succeeded: the user's failures are forgotten, and the address gets its
    /// attempt back.
    pub async fn succeeded(&self, user_key: &str, address_key: &str) {
        self.failures.invalidate(user_key).await;
        self.take_back(address_key).await;
    }

    /// An attempt that checked no password (the database failed, the client left):
    /// both keys get it back.
    pub async fn give_back(&self, user_key: &str, address_key: &str) {
        self.take_back(user_key).await;
        self.take_back(address_key).await;
    }

    async fn take_back(&self, key: &str) {
        self.failures
            .entry_by_ref(key)
            .and_compute_with(|old| {
                let op = match old.map(|e| e.into_value()) {
                    Some((count, since)) if count > 1 => {
                        moka::ops::compute::Op::Put((count - 1, since))
                    }
                    Some(_) => moka::ops::compute::Op::Remove,
                    None => moka::ops::compute::Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_trips_and_the_window_resets_it() {
        let t = LoginThrottle::new(Duration::from_millis(200), 2, 10);
        let key = LoginThrottle::user_key("acme", "ann");
        assert!(t.begin_attempt(&[&key]).await.is_ok());
        assert!(t.begin_attempt(&[&key]).await.is_ok());
        assert!(t.begin_attempt(&[&key]).await.is_err());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(t.begin_attempt(&[&key]).await.is_ok());
    }

    #[tokio::test]
    async fn parallel_attempts_are_counted_before_any_finishes() {
        let t = LoginThrottle::new(Duration::from_secs(60), 3, 1000);
        let key = LoginThrottle::user_key("acme", "ann");
        let attempts = (0..50).map(|_| {
            let (t, key) = (t.clone(), key.clone());
            tokio::spawn(async move { t.begin_attempt(&[&key]).await.is_ok() })
        });
        let mut allowed = 0;
        for a in attempts {
            allowed += usize::from(a.await.unwrap());
        }
        assert_eq!(allowed, 3);
    }

    #[tokio::test]
    async fn an_attempt_given_back_does_not_count() {
        let t = LoginThrottle::new(Duration::from_secs(60), 1, 1);
        let (user, addr) = (
            LoginThrottle::user_key("acme", "ann"),
            LoginThrottle::address_key("10.0.0.1"),
        );
        for _ in 0..3 {
            assert!(t.begin_attempt(&[&user, &addr]).await.is_ok());
            t.give_back(&user, &addr).await;
        }
        assert!(t.begin_attempt(&[&user, &addr]).await.is_ok());
        assert!(t.begin_attempt(&[&user, &addr]).await.is_err());
    }

    #[tokio::test]
    async fn a_success_forgets_the_user_and_gives_the_address_its_attempt_back() {
        let t = LoginThrottle::new(Duration::from_secs(60), 2, 2);
        let (user, addr) = (
            LoginThrottle::user_key("acme", "ann"),
            LoginThrottle::address_key("10.0.0.1"),
        );
        for _ in 0..5 {
            assert!(t.begin_attempt(&[&user, &addr]).await.is_ok());
            t.succeeded(&user, &addr).await;
        }
        assert!(t.begin_attempt(&[&addr]).await.is_ok());
        assert!(t.begin_attempt(&[&addr]).await.is_ok());
        assert!(t.begin_attempt(&[&addr]).await.is_err());
    }
}
