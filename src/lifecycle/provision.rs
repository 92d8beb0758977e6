//! Provisioning a tenant: validate the entry, claim its id and storage in the
//! control database, make and migrate its storage, create its first owner, and
//! register it; each step recorded so that a crash leaves it complete or undone.

use std::sync::Arc;

use serde_json::Value;

use super::{Lifecycle, storage_error, this_process, validation};
use crate::{
    auth::users::{self, NewUser},
    control::Claim,
    db, demo,
    error::{AppError, Result},
    tenant::{TenantConfig, TenantId, TenantSource, parse_tenant_entry},
};

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

impl Lifecycle {
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
        // This call's own claim: its process (how recovery judges it) and a token
        // of the call, so that a later provisioning of the id in this process (a
        // retry after an operator rolled this one back) holds a claim this one
        // can neither finish nor release.
        let me = claim_token();
        let mut retried = false;
        loop {
            let taken = match self
                .control
                .claim(&config, &me)
                .await
                .map_err(|e| storage_error("claim", &e))?
            {
                Claim::Claimed => break,
                Claim::IdTaken => AppError::Conflict(format!(
                    "tenant '{}' already exists, or is being provisioned (GET /api/admin/provisionings)",
                    config.id
                )),
                Claim::StorageOrSubdomainTaken => {
                    AppError::Conflict("another tenant has this database or subdomain".into())
                }
            };
            // The holder may be a provisioning whose process died after start-up
            // rolled back what it found: roll it back now, and try once more, so
            // that a retry after a crash is not refused.
            if retried
                || self
                    .recover_blocking(&config)
                    .await
                    .map_err(|e| storage_error("roll back", &e))?
                    == 0
            {
                return Err(taken);
            }
            retried = true;
        }
        // Again, under the reload turn: a reload of the tenants file that read the
        // control rows before the claim may have added an entry on this database
        // since the first check. One that reads them from now on sees the claim.
        let again = {
            let _turn = self.refreshing.lock().await;
            self.check_free(&config, None)
        };
        if let Err(e) = again {
            self.let_go(config.id.as_str(), &me).await;
            return Err(e);
        }
        let made = match self.make_storage(&config, &me, seed, owner).await {
            Ok(made) => made,
            Err(e) => {
                self.let_go(config.id.as_str(), &me).await;
                return Err(e);
            }
        };
        {
            // See `update`: no reload may apply rows read before this.
            let _turn = self.refreshing.lock().await;
            let still_ours = self
                .control
                .mark_ready(config.id.as_str(), &me)
                .await
                .map_err(|e| storage_error("register", &e))?;
            if !still_ours {
                // An operator rolled the provisioning back meanwhile: its roll-back
                // dropped what it knew of, and the row. What this call made after
                // that goes too, but only under a claim of its own again: by now a
                // new provisioning may hold the id and that storage (it found the
                // storage and adopted it), and must keep it.
                if made {
                    self.drop_unclaimed(&config).await;
                }
                return Err(rolled_back_meanwhile(&config));
            }
            self.registry.upsert(config.clone()).await;
        }
        tracing::info!(tenant_id = %config.id, "tenant provisioned");
        self.registry
            .get(config.id.as_str())
            .ok_or_else(|| AppError::internal("provisioned tenant missing from the registry"))
    }

    /// Drops the storage a provisioning made after its claim was rolled back, if no
    /// one has claimed the id or the storage since: under a claim of its own again
    /// (recorded as storage it made, so that a crash here leaves it to recovery),
    /// released once the storage is gone. The roll-back's own claim may still be
    /// on record for a moment: it is waited for, a few times.
    async fn drop_unclaimed(&self, config: &TenantConfig) {
        let me = claim_token();
        let mut tries = 0;
        let claimed = loop {
            match self.control.claim(config, &me).await {
                Ok(Claim::Claimed) => break true,
                Ok(_) if tries < 10 && self.held_by_a_rollback(config).await => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Ok(_) => {
                    tracing::warn!(tenant_id = %config.id, "the storage of a provisioning rolled back meanwhile is kept: another provisioning holds it now");
                    break false;
                }
                Err(e) => {
                    tracing::error!(tenant_id = %config.id, error = %db::redact_error(&e), "could not claim the storage of a provisioning rolled back meanwhile; it is kept");
                    break false;
                }
            }
        };
        if !claimed {
            return;
        }
        let recorded = self
            .control
            .record_storage(config.id.as_str(), &me, false)
            .await
            .unwrap_or(false);
        match self.drop_storage(config).await {
            Ok(()) => self.let_go(config.id.as_str(), &me).await,
            // The claim stays, its storage recorded as made: recovery drops it.
            Err(e) => {
                tracing::error!(tenant_id = %config.id, error = %db::redact_error(&e), recorded, "could not remove the storage of a provisioning rolled back meanwhile; left to recovery")
            }
        }
    }

    /// Releases the claim `me` holds on `id` (logged if it cannot be).
    async fn let_go(&self, id: &str, me: &str) {
        if let Err(e) = self.control.release_claim(id, me).await {
            tracing::error!(tenant_id = %id, error = %db::redact_error(&e), "could not release the claim");
        }
    }

    /// Whether the unfinished provisioning holding `config`'s id is a roll-back's.
    async fn held_by_a_rollback(&self, config: &TenantConfig) -> bool {
        self.control.unfinished().await.is_ok_and(|rows| {
            rows.iter().any(|row| {
                row.id == config.id.as_str()
                    && row
                        .claimed_by
                        .as_deref()
                        .is_some_and(|c| c.starts_with(super::recovery::ROLLBACK))
            })
        })
    }

    /// Creates and migrates the storage, seeds it and creates its first owner; drops
    /// what it created if a later step fails. `true` when it made the storage (it
    /// did not exist).
    pub(super) async fn make_storage(
        &self,
        config: &TenantConfig,
        me: &str,
        seed: bool,
        owner: Option<NewUser>,
    ) -> Result<bool> {
        let existed = db::storage_exists(config, &self.pools)
            .await
            .map_err(|e| storage_error("check storage", &e))?;
        // Written before anything is made: after a crash, start-up knows whether
        // the storage is provisioning's to drop. A claim taken over by an
        // operator's roll-back stops here, before anything is made.
        let ours = self
            .control
            .record_storage(config.id.as_str(), me, existed)
            .await
            .map_err(|e| storage_error("record storage", &e))?;
        if !ours {
            return Err(rolled_back_meanwhile(config));
        }
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
        if result.is_err() && !existed {
            // Still this call's claim (the same record written again answers
            // that)? Else a roll-back took it, and may have dropped the storage
            // before this made it: it goes under a claim of its own again.
            let ours = self
                .control
                .record_storage(config.id.as_str(), me, existed)
                .await
                .unwrap_or(false);
            if !ours {
                self.drop_unclaimed(config).await;
            } else if let Err(e) = self.drop_storage(config).await {
                tracing::error!(tenant_id = %config.id, error = %db::redact_error(&e), "could not remove half-made storage");
            }
        }
        result.map(|()| !existed)
    }

    /// A 409 if `config`'s id (when `replacing` is `None`), database or subdomain is
    /// taken; a 422 if its subdomain is ignored or its database is the control
    /// database.
    pub(super) fn check_free(
        &self,
        config: &TenantConfig,
        replacing: Option<&TenantId>,
    ) -> Result<()> {
        if let Some(e) = crate::settings::ignored_subdomain_error(config, &self.ignored_subdomains)
        {
            return Err(AppError::validation("subdomain", e.message));
        }
        // A new database URL (a tenant's first, or a move's target): a row
        // already in the control database keeps the one it has.
        let new_url = replacing
            .and_then(|id| self.registry.get(id.as_str()))
            .is_none_or(|current| current.database_url != config.database_url);
        if new_url {
            crate::tenant::check_tenant_database_url(config.database_url.expose())
                .map_err(|m| AppError::validation("database_url", format!("database_url {m}")))?;
            if let Some(e) =
                crate::settings::control_database_error(config, self.control.storage_identity())
            {
                return Err(AppError::validation("database_url", e.message));
            }
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
        if new_url
            && let Some(file) = crate::settings::sqlite_file_on_disk(config)
            && let Some(other) = self.registry.list().into_iter().find(|t| {
                t.id != config.id && crate::settings::sqlite_file_on_disk(t).as_ref() == Some(&file)
            })
        {
            return Err(AppError::Conflict(format!(
                "the database is already used by tenant '{}' (through a link): each tenant needs its own database",
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
}

/// The 409 of a provisioning whose claim an operator's roll-back took meanwhile.
fn rolled_back_meanwhile(config: &TenantConfig) -> AppError {
    AppError::Conflict(format!(
        "the provisioning of '{}' was rolled back by an operator while it ran",
        config.id
    ))
}

/// A claim of one call in this process: `host/pid/nonce#token`. Recovery judges
/// the process (`claimer_gone` reads up to the `#`).
pub(super) fn claim_token() -> String {
    format!(
        "{}#{}",
        this_process(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
