//! A breaker per tenant: a certain failure of a tenant's database drops its handle
//! and pauses attempts to reach it (a fast 503) for `BREAKER_COOLDOWN_SECS`,
//! doubled with each failure in a row up to a minute.

use std::{
    collections::HashMap,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::TenantRegistry;
use crate::{
    error::{AppError, UnavailableCause},
    tenant::TenantId,
};

/// Longest pause of a tripped breaker.
pub(super) const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// A tenant's run of failures and the end of its pause.
pub(super) struct Breaker {
    pub(super) failures: u32,
    pub(super) open_until: Instant,
}

impl TenantRegistry {
    pub(super) fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Breaker>> {
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A fast 503 while the tenant's breaker is open.
    pub(super) fn check_breaker(&self, id: &TenantId) -> Result<(), AppError> {
        let now = Instant::now();
        if let Some(b) = self.breakers().get(id)
            && b.open_until > now
        {
            self.inner
                .counters
                .short_circuited
                .fetch_add(1, Ordering::Relaxed);
            let left = b.open_until - now;
            return Err(AppError::TenantUnavailable {
                retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64,
                cause: crate::error::UnavailableCause::Router,
            });
        }
        Ok(())
    }

    /// Records a failure of the tenant's database; returns the pause in seconds.
    pub(super) fn trip_breaker(&self, id: &TenantId) -> u64 {
        self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        // Its storage may have gone or been replaced: check it again on recovery.
        self.ready().remove(id);
        let base = self.inner.settings.breaker_cooldown;
        let mut breakers = self.breakers();
        let breaker = breakers.entry(id.clone()).or_insert(Breaker {
            failures: 0,
            open_until: Instant::now(),
        });
        breaker.failures = breaker.failures.saturating_add(1);
        let pause = base
            .saturating_mul(1 << breaker.failures.saturating_sub(1).min(16))
            .min(MAX_COOLDOWN);
        breaker.open_until = Instant::now() + pause;
        drop(breakers);
        if let Some(events) = self.events() {
            events.breaker_tripped(id);
        }
        tracing::warn!(tenant_id = %id, pause_secs = pause.as_secs(), "tenant database failing; pausing attempts");
        pause.as_secs().max(1)
    }

    pub(super) fn reset_breaker(&self, id: &TenantId) {
        if self.breakers().remove(id).is_some() {
            tracing::info!(tenant_id = %id, "tenant database recovered");
        }
    }

    /// Called when a request of `tenant` that started at `started` could not use its
    /// database. A certain failure trips the breaker and drops the handle, so that
    /// the next requests fail fast; reports about a handle built since, or already
    /// reported, change nothing.
    pub async fn report_unavailable(
        &self,
        tenant: &TenantId,
        cause: UnavailableCause,
        started: Instant,
    ) {
        let Some(handle) = self.inner.handles.get(tenant).await else {
            return;
        };
        let failed = match cause {
            UnavailableCause::DatabaseFailed => true,
            UnavailableCause::AcquireTimeout => handle.pool.stats().open == 0,
            UnavailableCause::Router => false,
        };
        if !failed || handle.opened_at > started || handle.reported.swap(true, Ordering::Relaxed) {
            return;
        }
        self.trip_breaker(tenant);
        self.inner.handles.invalidate(tenant).await;
    }

    /// The tenants whose breaker is open now.
    pub fn open_breakers(&self) -> Vec<TenantId> {
        let now = Instant::now();
        self.breakers()
            .iter()
            .filter(|(_, b)| b.open_until > now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether the tenant's breaker is open now (its requests get 503 at once).
    pub fn breaker_open(&self, id: &TenantId) -> bool {
        let now = Instant::now();
        self.breakers().get(id).is_some_and(|b| b.open_until > now)
    }

    /// Whether the tenant has a handle now (it has been used recently).
    pub fn is_open(&self, id: &TenantId) -> bool {
        self.inner.handles.contains_key(id)
    }
}
