//! Per-tenant request limits: a rate (a token bucket: an average per second and a
//! burst above it) and a number of requests served at once. A tenant over either
//! is refused with 429 `too_many_requests` and `Retry-After` before its handler
//! runs or takes a connection, so a noisy tenant spends its own budget, not the
//! others'.
//! The defaults come from settings; a tenant's configuration overrides them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    error::AppError,
    tenant::{RequestLimits, TenantConfig, TenantId},
};

/// The service-wide defaults (0: no limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitDefaults {
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub max_concurrent_requests: u32,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limits of every tenant, and what each has used.
pub struct TenantLimiter {
    defaults: LimitDefaults,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
    /// Each tenant's semaphore, with the size it was made with.
    in_flight: Mutex<HashMap<TenantId, (u32, Arc<Semaphore>)>>,
}

/// A request admitted: holds the tenant's place among its concurrent requests
/// until dropped.
pub struct Admitted {
    _place: Option<OwnedSemaphorePermit>,
}

impl TenantLimiter {
    pub fn new(defaults: LimitDefaults) -> Self {
        Self {
            defaults,
            buckets: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force for a tenant: its own, else the defaults.
    fn limits(&self, own: &RequestLimits) -> LimitDefaults {
        let rate = own
            .rate_limit_per_sec
            .unwrap_or(self.defaults.rate_limit_per_sec);
        let burst = own
            .rate_limit_burst
            .unwrap_or(self.defaults.rate_limit_burst);
        LimitDefaults {
            rate_limit_per_sec: rate,
            // A burst of 0 means one second's worth.
            rate_limit_burst: if burst == 0 { rate } else { burst },
            max_concurrent_requests: own
                .max_concurrent_requests
                .unwrap_or(self.defaults.max_concurrent_requests),
        }
    }

    /// Admits one request of `tenant`, or refuses it with 429 and how many
    /// seconds to wait.
    pub fn admit(&self, tenant: &TenantConfig) -> Result<Admitted, AppError> {
        let limits = self.limits(&tenant.limits);
        if limits.rate_limit_per_sec > 0 {
            self.take_token(&tenant.id, &limits)?;
        }
        if limits.max_concurrent_requests == 0 {
            return Ok(Admitted { _place: None });
        }
        let semaphore = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let entry = in_flight.entry(tenant.id.clone()).or_insert_with(|| {
                let n = limits.max_concurrent_requests;
                (n, Arc::new(Semaphore::new(n as usize)))
            });
            // The limit was changed at run time: requests in flight keep their
            // places in the old semaphore; new ones count in the new one.
            if entry.0 != limits.max_concurrent_requests {
                let n = limits.max_concurrent_requests;
                *entry = (n, Arc::new(Semaphore::new(n as usize)));
            }
            entry.1.clone()
        };
        semaphore
            .try_acquire_owned()
            .map(|permit| Admitted {
                _place: Some(permit),
            })
            .map_err(|_| AppError::OverLimit {
                limit: "concurrent requests",
                retry_after_secs: 1,
            })
    }

    fn take_token(&self, id: &TenantId, limits: &LimitDefaults) -> Result<(), AppError> {
        let rate = f64::from(limits.rate_limit_per_sec);
        let capacity = f64::from(limits.rate_limit_burst.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(id.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0);
        Err(AppError::OverLimit {
            limit: "request rate",
            retry_after_secs: wait as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(limits: RequestLimits) -> TenantConfig {
        let mut config = crate::settings::parse_tenants_toml(
            "[tenants.t1]\ndatabase_url = 'sqlite://data/t1.db'\n",
        )
        .unwrap()
        .remove(0);
        config.limits = limits;
        config
    }

    #[test]
    fn a_tenant_gets_its_burst_then_is_refused_with_a_wait() {
        let limiter = TenantLimiter::new(LimitDefaults::default());
        let t = tenant(RequestLimits {
            rate_limit_per_sec: Some(1),
            rate_limit_burst: Some(3),
            max_concurrent_requests: None,
            storage_quota_bytes: None,
        });
        for _ in 0..3 {
            assert!(limiter.admit(&t).is_ok());
        }
        match limiter.admit(&t) {
            Err(
                e @ AppError::OverLimit {
                    retry_after_secs: 1,
                    ..
                },
            ) => assert_eq!(
                e.to_string(),
                "the tenant is over its request rate; retry in 1 s"
            ),
            other => panic!("{:?}", other.map(|_| "admitted")),
        }
    }

    #[test]
    fn concurrent_requests_past_the_limit_are_refused_until_one_ends() {
        let limiter = TenantLimiter::new(LimitDefaults {
            max_concurrent_requests: 2,
            ..Default::default()
        });
        let t = tenant(RequestLimits::default());
        let first = limiter.admit(&t).ok();
        let second = limiter.admit(&t).ok();
        assert!(first.is_some() && second.is_some());
        assert!(limiter.admit(&t).is_err());
        drop(first);
        assert!(limiter.admit(&t).is_ok());
    }

    #[test]
    fn no_limit_by_default() {
        let limiter = TenantLimiter::new(LimitDefaults::default());
        let t = tenant(RequestLimits::default());
        for _ in 0..10_000 {
            assert!(limiter.admit(&t).is_ok());
        }
    }
}
