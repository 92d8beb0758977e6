//! Tenant lifecycle without restarts: provisioning, changing, suspending and
//! removing tenants, kept in the control database and applied to the registry of
//! this replica at once and of the others on their next poll.
//!
//! The registry serves the tenants of `tenants.toml` and `TENANT_CONFIGS` (the
//! base) with the control database's rows on top: a row replaces a base entry with
//! the same id (a change made through the API to a file tenant).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use sea_orm::DbErr;
use serde_json::{Map, Value};

use crate::{
    auth::users::{self, NewUser},
    control::{Claim, ControlStore, Fingerprint},
    db, demo,
    error::{AppError, Result},
    registry::TenantRegistry,
    settings::PoolSettings,
    tenant::{ConfigError, TenantConfig, TenantId, TenantSource, parse_tenant_entry},
};

/// Fields `PATCH /api/admin/tenants/{id}` may change.
const PATCHABLE: [&str; 8] = [
    "is_active",
    "features",
    "branding",
    "contact_info",
    "gst_number",
    "domain",
    "subdomain",
    "max_connections",
];

/// Provisioning, changes and removal of tenants.
pub struct Lifecycle {
    registry: TenantRegistry,
    control: ControlStore,
    base: RwLock<Vec<TenantConfig>>,
    pools: PoolSettings,
    /// `IGNORED_SUBDOMAINS`: labels no tenant may take.
    ignored_subdomains: Vec<String>,
    seen: Mutex<Option<Fingerprint>>,
}

/// The base tenants with the control rows on top. A control row whose subdomain
/// another tenant already uses is left out (and logged).
pub fn merge(base: &[TenantConfig], control: Vec<TenantConfig>) -> Vec<TenantConfig> {
    let overridden: HashSet<&TenantId> = control.iter().map(|t| &t.id).collect();
    let mut merged: Vec<TenantConfig> = base
        .iter()
        .filter(|t| !overridden.contains(&t.id))
        .cloned()
        .collect();
    let mut labels: HashSet<String> = merged.iter().map(|t| t.subdomain.clone()).collect();
    let mut storages: HashSet<String> =
        merged.iter().filter_map(|t| t.storage_identity()).collect();
    for tenant in control {
        if labels.contains(&tenant.subdomain) {
            tracing::error!(tenant_id = %tenant.id, subdomain = %tenant.subdomain, "control database tenant left out: its subdomain is taken");
        } else if let Some(storage) = tenant.storage_identity()
            && storages.contains(&storage)
        {
            tracing::error!(tenant_id = %tenant.id, "control database tenant left out: another tenant uses its database");
        } else {
            labels.insert(tenant.subdomain.clone());
            storages.extend(tenant.storage_identity());
            merged.push(tenant);
        }
    }
    merged.sort_by(|a, b| a.id.cmp(&b.id));
    merged
}

fn validation(errors: Vec<ConfigError>) -> AppError {
    let field = errors.first().map(|e| e.field.clone());
    let message = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    AppError::Validation { field, message }
}

fn storage_error(step: &str, err: &DbErr) -> AppError {
    tracing::warn!(step, error = %db::redact_error(err), "provisioning step failed");
    if db::is_unavailable(err) {
        AppError::TenantUnavailable {
            retry_after_secs: 1,
            cause: crate::error::UnavailableCause::Router,
        }
    } else {
        AppError::internal(format!("{step}: {}", db::redact_error(err)))
    }
}

impl Lifecycle {
    pub fn new(
        registry: TenantRegistry,
        control: ControlStore,
        base: Vec<TenantConfig>,
        pools: PoolSettings,
        ignored_subdomains: Vec<String>,
    ) -> Self {
        Self {
            registry,
            control,
            base: RwLock::new(base),
            pools,
            ignored_subdomains,
            seen: Mutex::new(None),
        }
    }

    fn base(&self) -> Vec<TenantConfig> {
        self.base.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the base tenants (a reload of the file) and re-applies the control
    /// rows on top.
    pub async fn set_base(&self, base: Vec<TenantConfig>) -> Result<(), DbErr> {
        *self.base.write().unwrap_or_else(|p| p.into_inner()) = base;
        self.refresh().await
    }

    /// Reloads the control rows into the registry.
    pub async fn refresh(&self) -> Result<(), DbErr> {
        let (rows, errors) = self.control.load().await?;
        for e in errors {
            tracing::error!(error = %e, "control database tenant left out");
        }
        self.registry.replace_all(merge(&self.base(), rows)).await;
        Ok(())
    }

    /// Refreshes when the control database changed since the last look: how a
    /// change made through another replica reaches this one.
    pub async fn poll(&self) -> Result<bool, DbErr> {
        let now = self.control.fingerprint().await?;
        let changed = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let changed = seen.as_ref() != Some(&now);
            *seen = Some(now);
            changed
        };
        if changed {
            self.refresh().await?;
        }
        Ok(changed)
    }

    /// Provisions a tenant from `body` (the fields of a tenants-file entry, plus
    /// `id` and optionally `seed_demo_data`): validate, claim the id, create and
    /// migrate its storage, seed, register. A failure undoes what this call made,
    /// so a retry starts clean.
    pub async fn provision(&self, body: Value) -> Result<Arc<TenantConfig>> {
        let Value::Object(mut fields) = body else {
            return Err(AppError::validation("body", "expected a JSON object"));
        };
        let id = match fields.remove("id") {
            Some(Value::String(id)) => id,
            Some(_) => return Err(AppError::validation("id", "id must be a string")),
            None => return Err(AppError::validation("id", "id is required")),
        };
        let seed = match fields.remove("seed_demo_data") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(_) => {
                return Err(AppError::validation(
                    "seed_demo_data",
                    "seed_demo_data must be true or false",
                ));
            }
        };
        let owner = fields.remove("owner").map(owner_from).transpose()?;
        let mut config = parse_tenant_entry(&id, &Value::Object(fields), TenantSource::Control)
            .map_err(validation)?;
        // A new incarnation: tokens of an earlier tenant with this id are refused.
        config.generation = uuid::Uuid::new_v4().simple().to_string();
        self.check_free(&config, None)?;
        match self
            .control
            .claim(&config, this_process())
            .await
            .map_err(|e| storage_error("claim", &e))?
        {
            Claim::Claimed => {}
            Claim::IdTaken => {
                return Err(AppError::Conflict(format!(
                    "tenant '{}' already exists",
                    config.id
                )));
            }
            Claim::StorageOrSubdomainTaken => {
                return Err(AppError::Conflict(
                    "another tenant has this database or subdomain".into(),
                ));
            }
        }
        match self.make_storage(&config, seed, owner).await {
            Ok(()) => {}
            Err(e) => {
                if let Err(undo) = self.control.delete(config.id.as_str()).await {
                    tracing::error!(tenant_id = %config.id, error = %db::redact_error(&undo), "could not release the claim");
                }
                return Err(e);
            }
        }
        self.control
            .mark_ready(config.id.as_str())
            .await
            .map_err(|e| storage_error("register", &e))?;
        self.registry.upsert(config.clone()).await;
        tracing::info!(tenant_id = %config.id, "tenant provisioned");
        self.registry
            .get(config.id.as_str())
            .ok_or_else(|| AppError::internal("provisioned tenant missing from the registry"))
    }

    /// Creates and migrates the storage, seeds it and creates its first owner; drops
    /// what it created if a later step fails.
    async fn make_storage(
        &self,
        config: &TenantConfig,
        seed: bool,
        owner: Option<NewUser>,
    ) -> Result<()> {
        let existed = db::storage_exists(config, &self.pools)
            .await
            .map_err(|e| storage_error("check storage", &e))?;
        // Written before anything is made: after a crash, start-up knows whether
        // the storage is provisioning's to drop.
        self.control
            .record_storage(config.id.as_str(), existed)
            .await
            .map_err(|e| storage_error("record storage", &e))?;
        let result = async {
            db::create_tenant_database(config, &self.pools)
                .await
                .map_err(|e| storage_error("create and migrate", &e))?;
            if seed || owner.is_some() {
                let pool = db::open_pool(config, 1, &self.pools)
                    .await
                    .map_err(|e| storage_error("seed", &e))?;
                let filled = async {
                    if seed {
                        demo::seed(&pool, config)
                            .await
                            .map_err(|e| storage_error("seed", &e))?;
                    }
                    if let Some(owner) = owner {
                        crate::audit::create_user_as_operator(&pool, owner, "provisioning").await?;
                    }
                    Ok::<(), AppError>(())
                }
                .await;
                let _ = pool.close().await;
                filled?;
            }
            // From now on the storage is known: if it disappears, it is reported,
            // not made again empty.
            if let Some(key) = db::storage_key(config).map_err(|e| storage_error("record", &e))? {
                db::StorageLedger::record_initialised(&self.control, &key, config.id.as_str())
                    .await
                    .map_err(|e| storage_error("record", &e))?;
            }
            Ok(())
        }
        .await;
        if result.is_err()
            && !existed
            && let Err(e) = self.drop_storage(config).await
        {
            tracing::error!(tenant_id = %config.id, error = %db::redact_error(&e), "could not remove half-made storage");
        }
        result
    }

    /// A 409 if `config`'s id (when `replacing` is `None`) or subdomain is taken.
    fn check_free(&self, config: &TenantConfig, replacing: Option<&TenantId>) -> Result<()> {
        if let Some(e) = crate::settings::ignored_subdomain_error(config, &self.ignored_subdomains)
        {
            return Err(AppError::validation("subdomain", e.message));
        }
        if replacing.is_none() && self.registry.get(config.id.as_str()).is_some() {
            return Err(AppError::Conflict(format!(
                "tenant '{}' already exists",
                config.id
            )));
        }
        if let Some(storage) = config.storage_identity()
            && let Some(other) = self
                .registry
                .list()
                .into_iter()
                .find(|t| t.id != config.id && t.storage_identity().as_ref() == Some(&storage))
        {
            return Err(AppError::Conflict(format!(
                "the database is already used by tenant '{}': each tenant needs its own database (or schema)",
                other.id
            )));
        }
        if let Some(owner) = self.registry.by_subdomain(&config.subdomain)
            && owner != config.id
        {
            return Err(AppError::Conflict(format!(
                "subdomain '{}' belongs to tenant '{owner}'",
                config.subdomain
            )));
        }
        Ok(())
    }

    /// Applies a partial change (activate or suspend, features, branding, contact
    /// details, domain, subdomain, pool size); takes effect on the next request.
    pub async fn update(&self, id: &str, patch: Value) -> Result<Arc<TenantConfig>> {
        let current = self.existing(id)?;
        let Value::Object(patch) = patch else {
            return Err(AppError::validation("body", "expected a JSON object"));
        };
        let mut entry: Map<String, Value> = match current.to_entry() {
            Value::Object(map) => map,
            _ => return Err(AppError::internal("tenant entry is not an object")),
        };
        for (key, value) in patch {
            if !PATCHABLE.contains(&key.as_str()) {
                return Err(AppError::validation(
                    key.clone(),
                    format!(
                        "{key} cannot be changed here (changeable: {})",
                        PATCHABLE.join(", ")
                    ),
                ));
            }
            entry.insert(key, value);
        }
        let mut config = parse_tenant_entry(id, &Value::Object(entry), TenantSource::Control)
            .map_err(validation)?;
        // The same tenant, changed: its tokens stay good.
        config.generation = current.generation.clone();
        self.check_free(&config, Some(&current.id))?;
        self.control
            .save(&config)
            .await
            .map_err(|e| storage_error("save", &e))?;
        self.registry.upsert(config).await;
        tracing::info!(tenant_id = %id, "tenant changed");
        self.existing(id)
    }

    /// Removes a tenant added at run time: its row goes, its pool closes, and its
    /// storage is dropped only when `drop_storage` says so.
    pub async fn deprovision(&self, id: &str, drop_storage: bool) -> Result<()> {
        let current = self.existing(id)?;
        if current.source != TenantSource::Control {
            return Err(AppError::Conflict(format!(
                "tenant '{id}' is defined in the tenants file or TENANT_CONFIGS: remove it there"
            )));
        }
        // Dropping a database takes the schemas of other tenants in it along.
        if drop_storage
            && let Some(storage) = current.storage_identity()
            && let Some(other) = self.registry.list().into_iter().find(|t| {
                t.id != current.id
                    && t.storage_identity()
                        .is_some_and(|s| s.starts_with(&format!("{storage}/")))
            })
        {
            return Err(AppError::Conflict(format!(
                "tenant '{}' keeps its schema in this database: remove it first, or remove this tenant without drop_database",
                other.id
            )));
        }
        self.control
            .delete(id)
            .await
            .map_err(|e| storage_error("delete", &e))?;
        self.registry.remove(&current.id).await;
        if drop_storage {
            self.drop_storage(&current)
                .await
                .map_err(|e| storage_error("drop storage", &e))?;
        }
        // A file tenant that the removed row had overridden comes back.
        self.refresh()
            .await
            .map_err(|e| storage_error("refresh", &e))?;
        tracing::info!(tenant_id = %id, dropped_storage = drop_storage, "tenant deprovisioned");
        Ok(())
    }

    /// Every provisioning that has not finished, with whether its process is gone.
    pub async fn unfinished(&self) -> Result<Vec<UnfinishedView>> {
        let rows = self
            .control
            .unfinished()
            .await
            .map_err(|e| storage_error("read provisionings", &e))?;
        let now = chrono::Utc::now();
        Ok(rows
            .into_iter()
            .map(|row| UnfinishedView {
                abandoned: is_abandoned(&row, now),
                id: row.id,
                claimed_by: row.claimed_by,
                made_storage: row.made_storage,
                updated_at: row.updated_at,
            })
            .collect())
    }

    /// Rolls back every provisioning whose process is gone (a crash): drops the
    /// storage it made, then its row, so the id is free again. Run at start-up;
    /// returns the ids rolled back. One that fails is logged and left for the next
    /// start or an operator.
    pub async fn recover(&self) -> Result<Vec<String>, DbErr> {
        let now = chrono::Utc::now();
        let mut done = Vec::new();
        for row in self.control.unfinished().await? {
            if !is_abandoned(&row, now) {
                continue;
            }
            match self.roll_back(&row).await {
                Ok(()) => {
                    tracing::warn!(tenant_id = %row.id, claimed_by = row.claimed_by.as_deref().unwrap_or(""), "unfinished provisioning rolled back");
                    done.push(row.id);
                }
                Err(e) => {
                    tracing::error!(tenant_id = %row.id, error = %e, "unfinished provisioning could not be rolled back")
                }
            }
        }
        Ok(done)
    }

    /// Rolls back the unfinished provisioning of `id` (the operator's clean-up): a
    /// 409 while its process is still alive, unless `force`.
    pub async fn abandon(&self, raw: &str, force: bool) -> Result<()> {
        let id =
            TenantId::parse(raw).map_err(|m| AppError::InvalidTenantId(format!("path: {m}")))?;
        let rows = self
            .control
            .unfinished()
            .await
            .map_err(|e| storage_error("read provisionings", &e))?;
        let Some(row) = rows.into_iter().find(|r| r.id == id.as_str()) else {
            return Err(AppError::NotFound(format!(
                "no unfinished provisioning of '{id}'"
            )));
        };
        if !force && !is_abandoned(&row, chrono::Utc::now()) {
            return Err(AppError::Conflict(format!(
                "the provisioning of '{id}' is under way in a live process; pass force to roll it back anyway"
            )));
        }
        self.roll_back(&row).await.map_err(AppError::internal)?;
        tracing::warn!(tenant_id = %id, forced = force, "unfinished provisioning rolled back by the operator");
        Ok(())
    }

    /// Drops the storage `row`'s provisioning made (if it made any), then the row:
    /// in that order, so a crash in between leaves the row for the next attempt.
    async fn roll_back(&self, row: &crate::control::Unfinished) -> Result<(), String> {
        if row.made_storage == Some(true) {
            let config = row.config.as_ref().map_err(Clone::clone)?;
            self.drop_storage(config)
                .await
                .map_err(|e| format!("dropping its storage: {}", db::redact_error(&e)))?;
        }
        self.control
            .release(&row.id)
            .await
            .map_err(|e| format!("removing its row: {}", db::redact_error(&e)))?;
        Ok(())
    }

    /// Drops the tenant's storage and forgets it was initialised, so a tenant
    /// there later starts afresh.
    async fn drop_storage(&self, config: &TenantConfig) -> Result<(), DbErr> {
        db::drop_storage(config, &self.pools).await?;
        if let Some(key) = db::storage_key(config)? {
            self.control.forget_storage(&key).await?;
        }
        Ok(())
    }

    fn existing(&self, raw: &str) -> Result<Arc<TenantConfig>> {
        let id =
            TenantId::parse(raw).map_err(|m| AppError::InvalidTenantId(format!("path: {m}")))?;
        self.registry
            .get(id.as_str())
            .ok_or_else(|| AppError::TenantNotFound(id.to_string()))
    }
}

/// Polls the control database every `every` so that changes made through other
/// replicas arrive here. Ends when the lifecycle is dropped.
pub fn spawn_poller(lifecycle: std::sync::Weak<Lifecycle>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(lifecycle) = lifecycle.upgrade() else {
                break;
            };
            if let Err(e) = lifecycle.poll().await {
                tracing::warn!(error = %db::redact_error(&e), "polling the control database failed");
            }
        }
    });
}

/// Reloads the tenants file and `TENANT_CONFIGS` on SIGHUP. The registry is swapped
/// whole, so requests in flight finish on the configuration they started with and
/// none is dropped; an invalid file keeps the old configuration and logs why.
pub fn spawn_reload_on_sighup(
    lifecycle: std::sync::Weak<Lifecycle>,
    settings: crate::settings::Settings,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload is off");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(lifecycle) = lifecycle.upgrade() else {
                    break;
                };
                match settings.load_tenants() {
                    Ok(base) => match lifecycle.set_base(base).await {
                        Ok(()) => tracing::info!("tenants reloaded on SIGHUP"),
                        Err(e) => {
                            tracing::error!(error = %db::redact_error(&e), "reload failed; keeping the old tenants")
                        }
                    },
                    Err(errors) => {
                        for e in errors {
                            tracing::error!(error = %e, "reload refused: invalid tenant configuration; keeping the old tenants");
                        }
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (lifecycle, settings);
}

/// The `owner` of a provisioning request: a user whose role is always `owner`,
/// checked before anything is created.
fn owner_from(value: Value) -> Result<NewUser> {
    let mut owner: NewUser = serde_json::from_value(value)
        // serde's message may quote a value, and the value may be the password.
        .map_err(|_| {
            AppError::validation(
                "owner",
                "owner must be an object with username, password and optionally email",
            )
        })?;
    owner.role = crate::auth::Role::Owner.as_str().into();
    users::normalize_username(&owner.username).map_err(|_| {
        AppError::validation("owner.username", "owner.username is not a valid username")
    })?;
    crate::auth::password::check_policy(&owner.password)
        .map_err(|m| AppError::validation("owner.password", format!("owner.{m}")))?;
    Ok(owner)
}

/// An unfinished provisioning as the CLI and the admin API show it.
#[derive(Debug, serde::Serialize)]
pub struct UnfinishedView {
    pub id: String,
    pub claimed_by: Option<String>,
    /// Whether it makes the storage (dropped on roll-back); `null` before it looked.
    pub made_storage: Option<bool>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Its process is gone (or silent past the lease): safe to roll back.
    pub abandoned: bool,
}

/// How long a provisioning claimed on another host may go without recording a
/// step before it counts as abandoned. On this host a dead process is seen at once.
const PROVISIONING_LEASE: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// This process, as it signs the provisionings it claims: `host/pid/nonce`. The
/// nonce tells this process from an earlier one that had the same pid.
pub fn this_process() -> &'static str {
    static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ME.get_or_init(|| {
        format!(
            "{}/{}/{}",
            host_name(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace('/', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `row`'s provisioning can no longer finish: its process, on this host,
/// is gone (or is an earlier process with this one's pid); or, anywhere, it has
/// recorded no step for [`PROVISIONING_LEASE`].
fn is_abandoned(row: &crate::control::Unfinished, now: chrono::DateTime<chrono::Utc>) -> bool {
    if now - row.updated_at > PROVISIONING_LEASE {
        return true;
    }
    let Some(claimer) = row.claimed_by.as_deref() else {
        // Claimed by a version that did not sign its claims.
        return true;
    };
    claimer_gone(claimer, this_process()) == Some(true)
}

/// `Some(true)` when `claimer` was a process of this host that is gone, `None`
/// when this host cannot tell (another host, or no `/proc`).
fn claimer_gone(claimer: &str, me: &str) -> Option<bool> {
    let mut parts = claimer.splitn(3, '/');
    let (host, pid, nonce) = (parts.next()?, parts.next()?, parts.next()?);
    let mut mine = me.splitn(3, '/');
    let (my_host, my_pid, my_nonce) = (mine.next()?, mine.next()?, mine.next()?);
    if host != my_host {
        return None;
    }
    if pid == my_pid {
        return Some(nonce != my_nonce);
    }
    let pid: u32 = pid.parse().ok()?;
    if !std::path::Path::new("/proc/self").exists() {
        return None;
    }
    // A live process with that pid may be another program that reused it: then
    // the lease decides.
    Some(!std::path::Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_gone_when_its_process_on_this_host_is() {
        let me = "host-a/100/aaaa";
        assert_eq!(claimer_gone("host-a/100/aaaa", me), Some(false));
        // An earlier process with this pid.
        assert_eq!(claimer_gone("host-a/100/bbbb", me), Some(true));
        // Another host: only the lease can tell.
        assert_eq!(claimer_gone("host-b/100/aaaa", me), None);
        assert_eq!(claimer_gone("garbage", me), None);
        let alive = format!("host-a/{}/cccc", std::process::id());
        assert_eq!(claimer_gone(&alive, me), Some(false));
        // Pids are below 2^22 on Linux.
        assert_eq!(claimer_gone("host-a/99999999/cccc", me), Some(true));
    }
}
