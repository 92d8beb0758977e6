//! Tenant lifecycle without restarts: provisioning, changing, suspending and
//! removing tenants, kept in the control database and applied to the registry of
//! this replica at once and of the others on their next poll.
//!
//! The registry serves the tenants of `tenants.toml` and `TENANT_CONFIGS` (the
//! base) with the control database's rows on top: a row replaces a base entry with
//! the same id (a change made through the API to a file tenant).

pub mod moves;
mod promote;
mod provision;
mod recovery;
mod reload;

pub use recovery::{UnfinishedView, this_process};
pub use reload::{spawn_change_listener, spawn_poller, spawn_reload_on_sighup};

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

use sea_orm::DbErr;
use serde_json::{Map, Value};

use crate::{
    control::{ControlStore, Fingerprint},
    db,
    error::{AppError, Result},
    registry::TenantRegistry,
    settings::{PoolSettings, sqlite_file_on_disk},
    tenant::{ConfigError, TenantConfig, TenantId, TenantSource, parse_tenant_entry},
};

/// Fields `PATCH /api/admin/tenants/{id}` may change.
const PATCHABLE: [&str; 12] = [
    "is_active",
    "features",
    "branding",
    "contact_info",
    "gst_number",
    "domain",
    "subdomain",
    "max_connections",
    "rate_limit_per_sec",
    "rate_limit_burst",
    "max_concurrent_requests",
    "storage_quota_bytes",
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
    /// Held by a reload of the control rows from reading them to applying them:
    /// reloads take turns, so one that read the rows before a change never
    /// applies them after a reload that read the change (the poll and a change
    /// announcement can start reloads together).
    refreshing: tokio::sync::Mutex<()>,
    /// Moves this process runs now, by tenant: the step each is at.
    running_moves: Mutex<std::collections::HashMap<String, moves::MoveStep>>,
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

/// The tenants added at run time (`control`) that `base` would hide: each row
/// whose subdomain or database an entry of `base` that it does not replace has
/// too. Serving the base entry would hand it the row's data (or its subdomain),
/// so a start-up or reload that would do so is refused, naming both. A SQLite
/// entry whose path reaches the row's file through a symbolic link counts too.
pub fn conflicts(base: &[TenantConfig], control: &[TenantConfig]) -> Vec<ConfigError> {
    let overridden: HashSet<&TenantId> = control.iter().map(|t| &t.id).collect();
    let shown: Vec<&TenantConfig> = base
        .iter()
        .filter(|t| !overridden.contains(&t.id))
        .collect();
    // The file each SQLite entry's path leads to on disk, links followed: the
    // identity is by name, and a link to the row's file is the same database.
    let on_disk: Vec<Option<PathBuf>> = shown.iter().map(|t| sqlite_file_on_disk(t)).collect();
    let mut errors = Vec::new();
    for row in control {
        let storage = row.storage_identity();
        let row_file = sqlite_file_on_disk(row);
        for (entry, entry_file) in shown.iter().zip(&on_disk) {
            let field = if entry.subdomain == row.subdomain {
                "subdomain"
            } else if (storage.is_some() && entry.storage_identity() == storage)
                || (row_file.is_some() && *entry_file == row_file)
            {
                "database_url"
            } else {
                continue;
            };
            errors.push(ConfigError::new(
                Some(entry.id.as_str()),
                field,
                format!(
                    "the same {} as tenant '{}', added at run time: change this entry, or remove that tenant first",
                    if field == "subdomain" { "subdomain" } else { "database" },
                    row.id
                ),
            ));
        }
    }
    errors
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

/// `current` with the fields of `patch` (already checked to be changeable)
/// replaced, validated as a whole; the same incarnation, so its tokens stay good.
fn patched(current: &TenantConfig, patch: Map<String, Value>) -> Result<TenantConfig> {
    let mut entry: Map<String, Value> = match current.to_entry() {
        Value::Object(map) => map,
        _ => return Err(AppError::internal("tenant entry is not an object")),
    };
    entry.extend(patch);
    let mut config = parse_tenant_entry(
        current.id.as_str(),
        &Value::Object(entry),
        TenantSource::Control,
    )
    .map_err(validation)?;
    config.generation = current.generation.clone();
    Ok(config)
}

/// A failed write of a tenant's row: a subdomain or database another tenant took
/// at the same moment is 409, as when it was taken before.
fn change_error(step: &str, err: &DbErr) -> AppError {
    if db::is_unique_violation(err) {
        AppError::Conflict("another tenant has this database or subdomain".into())
    } else {
        storage_error(step, err)
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
            refreshing: tokio::sync::Mutex::new(()),
            running_moves: Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub(super) fn base(&self) -> Vec<TenantConfig> {
        self.base.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the base tenants (a reload of the file) and re-applies the control
    /// rows on top.
    /// The control database.
    pub fn control(&self) -> &ControlStore {
        &self.control
    }

    /// Whether the control database answers.
    pub async fn control_answers(&self) -> Result<(), DbErr> {
        self.control.ping().await
    }

    /// Serves `base` as the tenants of the file and `TENANT_CONFIGS`, unless it
    /// would hide a tenant added at run time ([`conflicts`]): then nothing changes
    /// and the answer lists why.
    pub async fn set_base(&self, base: Vec<TenantConfig>) -> Result<Vec<ConfigError>, DbErr> {
        let _turn = self.refreshing.lock().await;
        let (mut rows, _) = self.control.load().await?;
        // Tenants being provisioned have claimed their database and subdomain too.
        rows.extend(
            self.control
                .unfinished()
                .await?
                .into_iter()
                .filter_map(|u| u.config.ok()),
        );
        let refused = conflicts(&base, &rows);
        if refused.is_empty() {
            *self.base.write().unwrap_or_else(|p| p.into_inner()) = base;
            self.refresh_in_turn().await?;
        }
        Ok(refused)
    }

    /// [`Self::refresh`] on the way out of a failure, which stays the answer.
    async fn refresh_or_warn(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %db::redact_error(&e), "could not reload the tenants");
        }
    }

    /// Reloads the control rows into the registry.
    pub async fn refresh(&self) -> Result<(), DbErr> {
        let _turn = self.refreshing.lock().await;
        self.refresh_in_turn().await
    }

    /// [`Self::refresh`], for a caller holding `refreshing`.
    async fn refresh_in_turn(&self) -> Result<(), DbErr> {
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
        let _turn = self.refreshing.lock().await;
        let now = self.control.fingerprint().await?;
        let changed = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let changed = seen.as_ref() != Some(&now);
            *seen = Some(now);
            changed
        };
        if changed {
            self.refresh_in_turn().await?;
        }
        Ok(changed)
    }

    /// Reloads the control rows now, whatever the fingerprint says (a change was
    /// announced, or may have been missed), and remembers the fingerprint so the
    /// next poll does not reload the same state again.
    pub async fn refresh_now(&self) -> Result<(), DbErr> {
        let _turn = self.refreshing.lock().await;
        let now = self.control.fingerprint().await?;
        self.refresh_in_turn().await?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        Ok(())
    }

    /// Applies a partial change (activate or suspend, features, branding, contact
    /// details, domain, subdomain, pool size); takes effect on the next request.
    /// The change applies to the tenant as the control database holds it at that
    /// moment, not as this replica last saw it: two changes at once both apply,
    /// and a tenant removed meanwhile (through any replica) stays removed (404).
    pub async fn update(&self, id: &str, patch: Value) -> Result<Arc<TenantConfig>> {
        let known = self.existing(id)?;
        let Value::Object(patch) = patch else {
            return Err(AppError::validation("body", "expected a JSON object"));
        };
        if let Some(key) = patch.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
            return Err(AppError::validation(
                key.clone(),
                format!(
                    "{key} cannot be changed here (changeable: {})",
                    PATCHABLE.join(", ")
                ),
            ));
        }
        // Without a row of its own, a tenant of the file is changed from its entry.
        let in_file = self.base().into_iter().find(|t| t.id == known.id);
        let config = {
            // A reload that read the rows before this change must not apply them
            // after it (it would undo the change here until the next poll).
            let _turn = self.refreshing.lock().await;
            let changed = self
                .control
                .change(id, |row| {
                    let current = row
                        .or_else(|| in_file.clone())
                        .ok_or_else(|| AppError::TenantNotFound(known.id.to_string()))?;
                    let config = patched(&current, patch.clone())?;
                    self.check_free(&config, Some(&current.id))?;
                    Ok(config)
                })
                .await
                .map_err(|e| change_error("save", &e))?;
            let config = match changed {
                Ok(config) => config,
                Err(refused) => {
                    if matches!(refused, AppError::TenantNotFound(_)) {
                        // Removed through another replica: this one follows now.
                        self.registry.remove(&known.id).await;
                    }
                    return Err(refused);
                }
            };
            self.registry.upsert(config.clone()).await;
            config
        };
        tracing::info!(tenant_id = %config.id, "tenant changed");
        self.existing(id)
    }

    /// Removes a tenant added at run time: its row goes, its pool closes, and its
    /// storage is dropped only when `drop_storage` says so.
    pub async fn deprovision(&self, id: &str, drop_storage: bool) -> Result<()> {
        self.existing(id)?;
        // A move on record holds the tenant's other storage (the copy, or the
        // frozen source kept until confirmed): removing the tenant would leave it
        // behind, and the record stuck for the id's next tenant. Under the move
        // lock, the tenant is read as the control database has it now: a move
        // through another replica may have switched its database.
        let _move_lock = self.hold_move(id).await?;
        self.refresh_now()
            .await
            .map_err(|e| storage_error("refresh", &e))?;
        let current = self.existing(id)?;
        if current.source != TenantSource::Control {
            return Err(AppError::Conflict(format!(
                "tenant '{id}' is defined in the tenants file or TENANT_CONFIGS: remove it there"
            )));
        }
        if let Some(record) = self
            .control
            .find_move(id)
            .await
            .map_err(|e| storage_error("read moves", &e))?
        {
            return Err(AppError::Conflict(format!(
                "tenant '{id}' has a move on record ({}): confirm or abort it first",
                record.state
            )));
        }
        // Dropping a database takes the schemas of other tenants in it along: those
        // served, and those being provisioned (their claims; they are not served
        // yet).
        if drop_storage && let Some(storage) = current.storage_identity() {
            let provisioning = self
                .control
                .unfinished()
                .await
                .map_err(|e| storage_error("read provisionings", &e))?
                .into_iter()
                .filter_map(|u| u.config.ok().map(Arc::new));
            let inside = format!("{storage}/");
            if let Some(other) = self
                .registry
                .list()
                .into_iter()
                .chain(provisioning)
                .find(|t| {
                    t.id != current.id
                        && t.storage_identity().is_some_and(|s| s.starts_with(&inside))
                })
            {
                return Err(AppError::Conflict(format!(
                    "tenant '{}' keeps its schema in this database: remove it first, or remove this tenant without drop_database",
                    other.id
                )));
            }
        }
        // A file tenant changed at run time is a control row on top of the file's
        // entry: removing the row brings the entry back, on the same database.
        let file_storage = self
            .base
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|t| t.id == current.id)
            .map(|t| t.storage_identity());
        if let Some(file_storage) = file_storage {
            if drop_storage {
                return Err(AppError::Conflict(format!(
                    "tenant '{id}' is defined in the tenants file or TENANT_CONFIGS: remove it there before dropping its database"
                )));
            }
            // Moved since: the file's entry would come back on storage the tenant
            // has left (a move's confirm drops it), empty.
            if file_storage != current.storage_identity() {
                return Err(AppError::Conflict(format!(
                    "tenant '{id}' is defined in the tenants file or TENANT_CONFIGS on other storage than it uses now (it was moved): point that entry at its new database_url, or remove the entry there"
                )));
            }
        }
        if drop_storage
            && let Some(e) =
                crate::settings::control_database_error(&current, self.control.storage_identity())
        {
            return Err(AppError::Conflict(format!(
                "the tenant's database_url {}: remove the tenant without drop_database",
                e.message
            )));
        }
        if drop_storage {
            // Suspended first, its storage dropped next, its row deleted last: a
            // drop that fails (its server is down) or a crash leaves the tenant
            // listed and suspended, so the delete can be run again, never a tenant
            // gone with its database left behind.
            {
                let _turn = self.refreshing.lock().await;
                let suspended: Result<TenantConfig> = self
                    .control
                    .change(id, |row| {
                        // The incarnation being removed, not one provisioned
                        // again meanwhile through another replica.
                        let mut row = row
                            .filter(|row| row.generation == current.generation)
                            .ok_or_else(|| AppError::TenantNotFound(id.into()))?;
                        row.is_active = false;
                        Ok(row)
                    })
                    .await
                    .map_err(|e| change_error("suspend", &e))?;
                // Its pool closes before its storage goes (or it is gone already:
                // removed through another replica).
                self.registry.remove(&current.id).await;
                suspended?;
            }
            // The ledger forgets the storage only once the row is gone (below):
            // a tenant reactivated after a crash here finds its database missing
            // (503) rather than made again, empty.
            if let Err(e) = db::drop_storage(&current, &self.pools).await {
                let answer = storage_error("drop storage", &e);
                // Back, suspended.
                self.refresh_or_warn().await;
                tracing::warn!(tenant_id = %id, "the tenant's database could not be dropped; the tenant is kept, suspended: run the delete again");
                return Err(answer);
            }
        }
        let deleted = {
            let _turn = self.refreshing.lock().await;
            let deleted = self.control.delete(id, &current.generation).await;
            if deleted.is_ok() {
                self.registry.remove(&current.id).await;
            }
            deleted
        };
        match deleted {
            Err(e) => {
                let answer = storage_error("delete", &e);
                // A suspended tenant removed from the registry above comes back.
                self.refresh_or_warn().await;
                return Err(answer);
            }
            // Removed meanwhile through another replica (and perhaps provisioned
            // again there: that tenant stays).
            Ok(false) => {
                self.refresh_or_warn().await;
                return Err(AppError::TenantNotFound(id.into()));
            }
            Ok(true) => {}
        }
        if drop_storage
            && let Some(key) = db::storage_key(&current).map_err(|e| storage_error("forget", &e))?
            && let Err(e) = self.control.forget_storage(&key).await
        {
            // Harmless: a tenant provisioned there later makes the storage, and
            // then finds it where the ledger says.
            tracing::warn!(tenant_id = %id, error = %db::redact_error(&e), "could not forget the dropped storage");
        }
        // A file tenant that the removed row had overridden comes back.
        self.refresh()
            .await
            .map_err(|e| storage_error("refresh", &e))?;
        tracing::info!(tenant_id = %id, dropped_storage = drop_storage, "tenant deprovisioned");
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
