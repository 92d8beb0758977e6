//! Throttling of failed credentials. A login counts against three keys: the user
//! *from this address* (`LOGIN_MAX_FAILURES`), the user from anywhere (the higher
//! `LOGIN_MAX_FAILURES_PER_USER`) and the address (`LOGIN_MAX_FAILURES_PER_ADDRESS`).
//! A key over its limit refuses attempts (429 with `Retry-After`) until its window
//! has passed, the right password included; so a guesser elsewhere locks out only
//! their own address, unless they spread guesses over many addresses. Each time a
//! key trips again right after its window, the window doubles (up to 16 times
//! `LOGIN_THROTTLE_SECS`). Wrong admin tokens count per address (`admin:` keys,
//! `ADMIN_MAX_FAILURES_PER_ADDRESS`).
//!
//! Counters live in this process: behind a load balancer each replica counts its own,
//! so the effective limit is the per-replica limit times the replicas.

use std::time::{Duration, Instant};

use moka::future::Cache;

/// How many failures each kind of key allows within the window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One user from one address.
    pub per_user_address: u32,
    /// One user from every address.
    pub per_user: u32,
    /// One address, every user.
    pub per_address: u32,
    /// Wrong admin tokens from one address.
    pub admin_per_address: u32,
}

/// The window doubles at most this many times.
const MAX_DOUBLINGS: u32 = 4;

/// A key's failures: how many, since when, and how many times in a row its window
/// ended with the key over its limit.
#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    strikes: u32,
}

/// Failure counts per key (`pair:`, `user:`, `addr:` or `admin:`).
#[derive(Clone)]
pub struct LoginThrottle {
    failures: Cache<String, Failures>,
    window: Duration,
    limits: Limits,
}

impl LoginThrottle {
    pub fn new(window: Duration, limits: Limits) -> Self {
        Self {
            failures: Cache::builder()
                .max_capacity(100_000)
                // Long enough to remember strikes across the longest window.
                .time_to_live(window * (2 << MAX_DOUBLINGS))
                .build(),
            window,
            limits,
        }
    }

    /// The keys of a login: the user from this address, the user, the address.
    pub fn login_keys(tenant: &str, username: &str, address: &str) -> [String; 3] {
        [
            format!("pair:{tenant}:{username}@{address}"),
            format!("user:{tenant}:{username}"),
            Self::address_key(address),
        ]
    }

    pub fn address_key(address: &str) -> String {
        format!("addr:{address}")
    }

    pub fn admin_key(address: &str) -> String {
        format!("admin:{address}")
    }

    fn limit(&self, key: &str) -> u32 {
        match key.split_once(':').map(|(kind, _)| kind) {
            Some("pair") => self.limits.per_user_address,
            Some("user") => self.limits.per_user,
            Some("admin") => self.limits.admin_per_address,
            _ => self.limits.per_address,
        }
    }

    /// The window of a key with `strikes` windows in a row ended over its limit.
    fn window_after(&self, strikes: u32) -> Duration {
        self.window * (1 << strikes.min(MAX_DOUBLINGS))
    }

    /// How long `key` is still refused, if it is over its limit.
    async fn refused_for(&self, key: &str) -> Option<Duration> {
        let f = self.failures.get(key).await?;
        let window = self.window_after(f.strikes);
        let elapsed = f.since.elapsed();
        (f.count >= self.limit(key) && elapsed < window).then(|| window - elapsed)
    }

    /// Counts an attempt against each key *before* the credential is checked, so
    /// that parallel guesses cannot all slip in under the limit; `Err(seconds to
    /// wait)` when a key is over its limit (then nothing is counted). A successful
    /// attempt then takes its count back ([`LoginThrottle::succeeded`]), so only
    /// failures stay counted.
    pub async fn begin_attempt(&self, keys: &[&str]) -> Result<(), u64> {
        self.check(keys).await?;
        for key in keys {
            let limit = self.limit(key);
            let strikes_after = |f: Failures| {
                if f.count >= limit { f.strikes + 1 } else { 0 }
            };
            let f = self
                .failures
                .entry_by_ref(*key)
                .and_upsert_with(|old| {
                    let next = match old.map(|e| e.into_value()) {
                        Some(f) if f.since.elapsed() < self.window_after(f.strikes) => Failures {
                            count: f.count + 1,
                            ..f
                        },
                        // The window passed: a new one, longer if the last ended
                        // over the limit.
                        Some(f) => Failures {
                            count: 1,
                            since: Instant::now(),
                            strikes: strikes_after(f),
                        },
                        None => Failures {
                            count: 1,
                            since: Instant::now(),
                            strikes: 0,
                        },
                    };
                    std::future::ready(next)
                })
                .await
                .into_value();
            let left = self
                .window_after(f.strikes)
                .saturating_sub(f.since.elapsed());
            if f.count > limit && !left.is_zero() {
                return Err(seconds(left));
            }
        }
        Ok(())
    }

    /// `Err(seconds to wait)` if any key is over its limit.
    pub async fn check(&self, keys: &[&str]) -> Result<(), u64> {
        for key in keys {
            if let Some(left) = self.refused_for(key).await {
                return Err(seconds(left));
            }
        }
        Ok(())
    }

    /// A login succeeded: the user's failures from this address are forgotten, and
    /// the user and address keys get the attempt back.
    pub async fn succeeded(&self, keys: &[&str]) {
        for key in keys {
            if key.starts_with("pair:") {
                self.failures.invalidate(*key).await;
            } else {
                self.take_back(key).await;
            }
        }
    }

    /// An attempt that checked no credential (the database failed, the client
    /// left): every key gets it back.
    pub async fn give_back(&self, keys: &[&str]) {
        for key in keys {
            self.take_back(key).await;
        }
    }

    async fn take_back(&self, key: &str) {
        self.failures
            .entry_by_ref(key)
            .and_compute_with(|old| {
                let op = match old.map(|e| e.into_value()) {
                    Some(f) if f.count > 1 || f.strikes > 0 => {
                        moka::ops::compute::Op::Put(Failures {
                            count: f.count.saturating_sub(1),
                            ..f
                        })
                    }
                    Some(_) => moka::ops::compute::Op::Remove,
                    None => moka::ops::compute::Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }
}

/// Whole seconds to wait, at least 1.
fn seconds(left: Duration) -> u64 {
    left.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user_address: u32, per_user: u32, per_address: u32) -> Limits {
        Limits {
            per_user_address,
            per_user,
            per_address,
            admin_per_address: per_address,
        }
    }

    fn keys(user: &str, address: &str) -> [String; 3] {
        LoginThrottle::login_keys("acme", user, address)
    }

    fn refs(keys: &[String; 3]) -> [&str; 3] {
        [&keys[0], &keys[1], &keys[2]]
    }

    #[tokio::test]
    async fn the_limit_trips_and_the_window_resets_it() {
        let t = LoginThrottle::new(Duration::from_millis(200), limits(2, 10, 10));
        let k = keys("ann", "10.0.0.1");
        assert!(t.begin_attempt(&refs(&k)).await.is_ok());
        assert!(t.begin_attempt(&refs(&k)).await.is_ok());
        assert!(t.begin_attempt(&refs(&k)).await.is_err());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(t.begin_attempt(&refs(&k)).await.is_ok());
    }

    #[tokio::test]
    async fn a_guesser_elsewhere_does_not_lock_the_user_out() {
        let t = LoginThrottle::new(Duration::from_secs(60), limits(3, 10, 50));
        let attacker = keys("ann", "203.0.113.9");
        for _ in 0..3 {
            assert!(t.begin_attempt(&refs(&attacker)).await.is_ok());
        }
        assert!(t.begin_attempt(&refs(&attacker)).await.is_err());
        // Ann, from her own address, is not refused.
        let ann = keys("ann", "198.51.100.7");
        assert!(t.begin_attempt(&refs(&ann)).await.is_ok());
    }

    #[tokio::test]
    async fn guesses_spread_over_addresses_meet_the_per_user_ceiling() {
        let t = LoginThrottle::new(Duration::from_secs(60), limits(3, 4, 50));
        for i in 0..4 {
            let k = keys("ann", &format!("203.0.113.{i}"));
            assert!(t.begin_attempt(&refs(&k)).await.is_ok());
        }
        let fifth = keys("ann", "203.0.113.200");
        assert!(t.begin_attempt(&refs(&fifth)).await.is_err());
        // Another user is not affected.
        let bob = keys("bob", "203.0.113.200");
        assert!(t.begin_attempt(&refs(&bob)).await.is_ok());
    }

    #[tokio::test]
    async fn a_key_that_trips_again_after_its_window_waits_twice_as_long() {
        let window = Duration::from_secs(1);
        let t = LoginThrottle::new(window, limits(1, 10, 50));
        let k = keys("ann", "203.0.113.9");
        assert!(t.begin_attempt(&refs(&k)).await.is_ok());
        assert_eq!(t.begin_attempt(&refs(&k)).await, Err(1));
        // Wait for the window to pass (a condition on the throttle's own clock).
        while t.check(&refs(&k)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(t.begin_attempt(&refs(&k)).await.is_ok());
        // The second window is two seconds long: more than one second is left.
        assert_eq!(t.begin_attempt(&refs(&k)).await, Err(2));
    }

    #[tokio::test]
    async fn parallel_attempts_are_counted_before_any_finishes() {
        let t = LoginThrottle::new(Duration::from_secs(60), limits(3, 10, 1000));
        let k = keys("ann", "10.0.0.1");
        let attempts = (0..50).map(|_| {
            let (t, k) = (t.clone(), k.clone());
            tokio::spawn(async move { t.begin_attempt(&refs(&k)).await.is_ok() })
        });
        let mut allowed = 0;
        for a in attempts {
            allowed += usize::from(a.await.unwrap());
        }
        assert_eq!(allowed, 3);
    }

    #[tokio::test]
    async fn an_attempt_given_back_does_not_count() {
        let t = LoginThrottle::new(Duration::from_secs(60), limits(1, 1, 1));
        let k = keys("ann", "10.0.0.1");
        for _ in 0..3 {
            assert!(t.begin_attempt(&refs(&k)).await.is_ok());
            t.give_back(&refs(&k)).await;
        }
        assert!(t.begin_attempt(&refs(&k)).await.is_ok());
        assert!(t.begin_attempt(&refs(&k)).await.is_err());
    }

    #[tokio::test]
    async fn a_success_forgets_the_pair_and_gives_the_address_its_attempt_back() {
        let t = LoginThrottle::new(Duration::from_secs(60), limits(2, 10, 2));
        let k = keys("ann", "10.0.0.1");
        for _ in 0..5 {
            assert!(t.begin_attempt(&refs(&k)).await.is_ok());
            t.succeeded(&refs(&k)).await;
        }
        let addr = LoginThrottle::address_key("10.0.0.1");
        assert!(t.begin_attempt(&[&addr]).await.is_ok());
        assert!(t.begin_attempt(&[&addr]).await.is_ok());
        assert!(t.begin_attempt(&[&addr]).await.is_err());
    }
}
