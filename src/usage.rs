//! Usage per tenant, for billing, and the storage quota. Each replica counts in
//! memory, per tenant and day (UTC), the requests served, the committed writes and
//! the users seen, measures the storage of the tenants that wrote, and adds it all
//! to the control database every `USAGE_FLUSH_SECS` and at shutdown
//! (`control::usage`). A failed flush keeps its counts for the next one.
//!
//! The quota (`storage_quota_bytes`, default `TENANT_STORAGE_QUOTA_BYTES`; 0: none)
//! is checked against the size last measured: a tenant may pass it by what it
//! writes within one flush interval, and is refused further writes from then on,
//! until deletes bring it back under.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use chrono::{Days, NaiveDate};
use serde::Serialize;

use crate::{
    control::{ActiveUser, ControlStore, UsageCounts, UsageDay},
    error::AppError,
    registry::TenantRegistry,
    tenant::TenantConfig,
};

/// Counts not yet in the control database.
#[derive(Default)]
struct Pending {
    /// By day, then tenant id (looked up by `&str`: counting a request allocates
    /// nothing once its tenant has counts that day).
    counts: HashMap<NaiveDate, HashMap<String, UsageCounts>>,
    users: HashSet<ActiveUser>,
    /// Tenants written since their storage was last measured.
    written: HashSet<String>,
}

/// This replica's usage counters, and the storage sizes last measured.
pub struct UsageMeter {
    control: ControlStore,
    registry: TenantRegistry,
    default_quota: u64,
    pending: Mutex<Pending>,
    sizes: Mutex<HashMap<String, u64>>,
    /// Flushes take turns: a report waits for a flush under way, whose sizes and
    /// counts are already gone from `pending` but not yet in the control database.
    flushing: tokio::sync::Mutex<()>,
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pending {
    fn entry(&mut self, tenant: &str, day: NaiveDate) -> &mut UsageCounts {
        let tenants = self.counts.entry(day).or_default();
        if !tenants.contains_key(tenant) {
            tenants.insert(
                tenant.to_owned(),
                UsageCounts {
                    tenant_id: tenant.to_owned(),
                    day: day.to_string(),
                    ..UsageCounts::default()
                },
            );
        }
        tenants
            .get_mut(tenant)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Puts back what a failed flush took, under what came meanwhile.
    fn restore(&mut self, counts: Vec<UsageCounts>, users: Vec<ActiveUser>) {
        for old in counts {
            let Ok(day) = NaiveDate::parse_from_str(&old.day, "%Y-%m-%d") else {
                continue;
            };
            let now = self.entry(&old.tenant_id, day);
            now.requests += old.requests;
            now.writes += old.writes;
            now.rows_written += old.rows_written;
            now.storage_bytes = now.storage_bytes.or(old.storage_bytes);
        }
        self.users.extend(users);
    }
}

impl UsageMeter {
    pub fn new(control: ControlStore, registry: TenantRegistry, default_quota: u64) -> Self {
        Self {
            control,
            registry,
            default_quota,
            pending: Mutex::default(),
            sizes: Mutex::default(),
            flushing: tokio::sync::Mutex::default(),
        }
    }

    /// A request served for `tenant` (any status).
    pub fn request(&self, tenant: &str) {
        lock(&self.pending).entry(tenant, today()).requests += 1;
    }

    /// A committed write of `tenant`'s that changed `rows` rows; its storage is
    /// measured at the next flush.
    pub fn write(&self, tenant: &str, rows: u64) {
        let mut pending = lock(&self.pending);
        let counts = pending.entry(tenant, today());
        counts.writes += 1;
        counts.rows_written += rows;
        pending.written.insert(tenant.to_owned());
    }

    /// A user of `tenant` made a request.
    pub fn user(&self, tenant: &str, user: uuid::Uuid) {
        let day = today();
        let mut pending = lock(&self.pending);
        pending.entry(tenant, day);
        pending.users.insert(ActiveUser {
            tenant_id: tenant.to_owned(),
            day: day.to_string(),
            user_id: user.to_string(),
        });
    }

    /// The tenant's storage as last measured by this replica, if it was.
    pub fn storage_bytes(&self, tenant: &str) -> Option<u64> {
        lock(&self.sizes).get(tenant).copied()
    }

    /// The tenant's quota in bytes (0: none).
    pub fn quota_of(&self, tenant: &TenantConfig) -> u64 {
        tenant
            .limits
            .storage_quota_bytes
            .unwrap_or(self.default_quota)
    }

    /// 507 `quota_exceeded` when the tenant's storage, as last measured, is at or
    /// past its quota: for writes that add data (deletes are always let through).
    pub fn check_quota(&self, tenant: &TenantConfig) -> Result<(), AppError> {
        let quota = self.quota_of(tenant);
        match self.storage_bytes(tenant.id.as_str()) {
            Some(used) if quota > 0 && used >= quota => {
                Err(AppError::QuotaExceeded { used, quota })
            }
            _ => Ok(()),
        }
    }

    /// Measures the storage of `tenant` now, keeps the figure for the quota and
    /// today's usage row.
    async fn measure(&self, tenant: &TenantConfig) -> Result<u64, AppError> {
        let bytes = match crate::db::file_storage_bytes(tenant) {
            Some(bytes) => bytes,
            None => {
                let conn = self.registry.connect(tenant).await?;
                crate::db::server_storage_bytes(tenant, &conn).await?
            }
        };
        lock(&self.sizes).insert(tenant.id.to_string(), bytes);
        lock(&self.pending)
            .entry(tenant.id.as_str(), today())
            .storage_bytes = Some(bytes);
        Ok(bytes)
    }

    /// Measures the tenants written since the last flush, then adds every count to
    /// the control database; on failure the counts wait for the next flush.
    pub async fn flush(&self) {
        let _turn = self.flushing.lock().await;
        let written = std::mem::take(&mut lock(&self.pending).written);
        for id in written {
            let Some(tenant) = self.registry.get(&id) else {
                continue;
            };
            if let Err(e) = self.measure(&tenant).await {
                // Measured again after its next write.
                tracing::warn!(tenant_id = %id, error = %e, "cannot measure the tenant's storage");
            }
        }
        let (counts, users) = {
            let mut pending = lock(&self.pending);
            (
                std::mem::take(&mut pending.counts)
                    .into_values()
                    .flat_map(HashMap::into_values)
                    .collect::<Vec<_>>(),
                std::mem::take(&mut pending.users)
                    .into_iter()
                    .collect::<Vec<_>>(),
            )
        };
        if counts.is_empty() && users.is_empty() {
            return;
        }
        if let Err(e) = self.control.add_usage(&counts, &users).await {
            tracing::warn!(error = %crate::db::redact_error(&e), "usage not written to the control database; kept for the next flush");
            lock(&self.pending).restore(counts, users);
        }
    }

    /// Flushes this replica's counts, then reports `tenant`'s usage over `range`.
    pub async fn read(&self, tenant: &str, range: UsageRange) -> Result<UsageReport, AppError> {
        self.flush().await;
        Ok(report(&self.control, tenant, range).await?)
    }
}

/// The longest range one report may cover, in days.
pub const MAX_DAYS: u64 = 366;
/// The range when none is given: the last 30 days, today included.
pub const DEFAULT_DAYS: u64 = 30;

/// Days from `from` to `to`, both included (UTC).
#[derive(Debug, Clone, Copy)]
pub struct UsageRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl UsageRange {
    /// From the `from` and `to` a caller gave (`YYYY-MM-DD`, each optional): to
    /// defaults to today, from to [`DEFAULT_DAYS`] before to; at most
    /// [`MAX_DAYS`]; 422 naming the field otherwise.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Self, AppError> {
        let day = |field: &str, text: &str| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| AppError::validation(field, "expected a day as YYYY-MM-DD"))
        };
        let to = match to {
            Some(text) => day("to", text)?,
            None => chrono::Utc::now().date_naive(),
        };
        let from = match from {
            Some(text) => day("from", text)?,
            None => to
                .checked_sub_days(Days::new(DEFAULT_DAYS - 1))
                .unwrap_or(to),
        };
        if from > to {
            return Err(AppError::validation("from", "from is after to"));
        }
        if (to - from).num_days() >= MAX_DAYS as i64 {
            return Err(AppError::validation(
                "from",
                format!("at most {MAX_DAYS} days at a time"),
            ));
        }
        Ok(Self { from, to })
    }
}

/// A tenant's usage over a range, as the API and the CLI show it.
#[derive(Debug, Serialize)]
pub struct UsageReport {
    pub tenant_id: String,
    pub from: String,
    pub to: String,
    /// The days with any usage, in order.
    pub days: Vec<UsageDay>,
    pub total: UsageTotal,
}

/// A report's totals.
#[derive(Debug, Serialize)]
pub struct UsageTotal {
    pub requests: u64,
    pub writes: u64,
    pub rows_written: u64,
    /// Distinct users over the whole range.
    pub active_users: u64,
    /// The latest size measured within the range.
    pub storage_bytes: Option<u64>,
}

/// Reads `tenant`'s usage over `range` from the control database.
pub async fn report(
    control: &ControlStore,
    tenant: &str,
    range: UsageRange,
) -> Result<UsageReport, sea_orm::DbErr> {
    let (from, to) = (range.from.to_string(), range.to.to_string());
    let (days, active_users) = control.usage(tenant, &from, &to).await?;
    let total = UsageTotal {
        requests: days.iter().map(|d| d.requests).sum(),
        writes: days.iter().map(|d| d.writes).sum(),
        rows_written: days.iter().map(|d| d.rows_written).sum(),
        active_users,
        storage_bytes: days.iter().rev().find_map(|d| d.storage_bytes),
    };
    Ok(UsageReport {
        tenant_id: tenant.to_owned(),
        from,
        to,
        days,
        total,
    })
}

/// Flushes `meter` every `every` until it is dropped.
pub fn spawn_flusher(meter: std::sync::Weak<UsageMeter>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(meter) = meter.upgrade() else {
                return;
            };
            meter.flush().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use super::{UsageMeter, UsageRange};
    use crate::{
        control::ControlStore,
        registry::TenantRegistry,
        secret::SecretBox,
        settings::{Settings, parse_tenants_toml},
    };

    /// A report asked for while the periodic flush is writing reads what that flush
    /// measured: the quota refused a write on a size the report must show. Before
    /// flushes took turns, the report's own flush found nothing left to write and
    /// read the control database before the periodic one had written to it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_shows_the_size_a_flush_under_way_measured() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(SecretBox::from_hex(&SecretBox::generate_hex(), None).unwrap());
        let control = ControlStore::open(
            &format!("sqlite://{}/control.db?mode=rwc", dir.path().display()),
            secrets,
        )
        .await
        .unwrap();
        // Never opened: a SQLite tenant's size is its file's.
        let file = dir.path().join("t.db");
        let toml = format!(
            "[tenants.t]\ndatabase_url = \"sqlite://{}?mode=rwc\"\n",
            file.display()
        );
        let env: HashMap<String, String> = [("SETTINGS_FILE".to_string(), String::new())].into();
        let registry = TenantRegistry::new(
            parse_tenants_toml(&toml).unwrap(),
            Settings::from_map(&env).unwrap().pools(),
        );
        let meter = Arc::new(UsageMeter::new(control, registry, 0));
        let range = UsageRange::parse(None, None).unwrap();

        for round in 1..=20u64 {
            let size = round * 4096;
            std::fs::write(&file, vec![0u8; size as usize]).unwrap();
            meter.write("t", 1);
            let periodic = tokio::spawn({
                let meter = meter.clone();
                async move { meter.flush().await }
            });
            while meter.storage_bytes("t") != Some(size) {
                tokio::task::yield_now().await;
            }
            let report = meter.read("t", range).await.unwrap();
            assert_eq!(
                report.total.storage_bytes,
                Some(size),
                "round {round}: the report missed the size measured before it"
            );
            periodic.await.unwrap();
        }
    }
}
