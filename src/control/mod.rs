//! The control database: tenants added, changed or suspended at run time, shared by
//! every replica of the router.
//!
//! A SQLite file by default (`CONTROL_DATABASE_URL`), PostgreSQL in production. Rows
//! are validated with the same rules as `tenants.toml` when they are loaded.

use chrono::Utc;
use migration::control::ControlMigrator;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectOptions, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, sea_query::Expr,
};
use serde_json::Value;

use std::sync::Arc;

pub mod moves;
pub mod notify;
mod usage;

pub use moves::MoveRecord;
pub use notify::{Change, ChangeFeed};
pub use usage::{ActiveUser, UsageCounts, UsageDay};

use crate::{
    secret::SecretBox,
    tenant::{ConfigError, TenantConfig, TenantSource, parse_tenant_entry},
};

/// The `tenant_configs` table.
pub mod tenant_config {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_configs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub database_url: String,
        pub domain: String,
        pub subdomain: String,
        pub features: Option<Json>,
        pub branding: Json,
        pub gst_number: Option<String>,
        pub contact_info: Json,
        pub is_active: bool,
        pub demo: bool,
        pub max_connections: Option<i32>,
        pub isolation: String,
        pub state: String,
        /// The process provisioning the tenant (`host/pid/nonce`), while it does.
        pub claimed_by: Option<String>,
        /// `existing` or `new`: the storage as provisioning found it.
        pub storage: Option<String>,
        /// Where the tenant's data is (no credentials); unique.
        pub storage_key: Option<String>,
        /// The tenant's incarnation (see `TenantConfig::generation`).
        pub generation: Option<String>,
        /// The tenant's own limits (`rate_limit_per_sec`, `rate_limit_burst`,
        /// `max_concurrent_requests`, `storage_quota_bytes`), as in its entry.
        pub limits: Option<Json>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `initialised_storage` table (see [`crate::db::StorageLedger`]).
pub mod initialised_storage {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "initialised_storage")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub storage_key: String,
        pub tenant_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use tenant_config::{ActiveModel, Column, Entity as TenantConfigs, Model};

const PROVISIONING: &str = "provisioning";
const READY: &str = "ready";
const STORAGE_EXISTING: &str = "existing";
const STORAGE_NEW: &str = "new";

/// What [`ControlStore::claim`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// A tenant (ready, or being provisioned) has the id.
    IdTaken,
    /// Another tenant has the database or the subdomain.
    StorageOrSubdomainTaken,
}

/// A provisioning that has not finished (see [`ControlStore::unfinished`]).
#[derive(Debug)]
pub struct Unfinished {
    pub id: String,
    /// The process that claimed it (`host/pid/nonce`).
    pub claimed_by: Option<String>,
    /// Whether provisioning found no storage and so makes it; `None` before it
    /// looked (nothing was made yet).
    pub made_storage: Option<bool>,
    /// The last step it recorded.
    pub updated_at: chrono::DateTime<Utc>,
    /// Its configuration, needed to drop what it made.
    pub config: Result<TenantConfig, String>,
}

/// What changed in the control database, cheaply: row count and newest update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(u64, Option<chrono::DateTime<Utc>>);

/// The control database. Database URLs are sealed with the [`SecretBox`] before they
/// are written, so a copy of the control database does not reveal credentials.
#[derive(Clone)]
pub struct ControlStore {
    db: DatabaseConnection,
    secrets: Arc<SecretBox>,
    /// The prepared URL of a PostgreSQL control database, for [`ChangeFeed`]s
    /// (a secret: never logged).
    listen_url: Option<Arc<str>>,
    /// The directory of a SQLite control database (for move locks).
    sqlite_dir: Option<std::path::PathBuf>,
    /// Where the control database is (see `TenantConfig::storage_identity`): no
    /// tenant's data may be there.
    storage_identity: Option<String>,
}

impl ControlStore {
    /// Opens (creating a SQLite file if needed) and migrates the control database.
    pub async fn open(url: &str, secrets: Arc<SecretBox>) -> Result<Self, DbErr> {
        let storage_identity = crate::tenant::storage_identity_of(url, None);
        let url = crate::db::prepare_url(url)?;
        // A server that refuses connections fails start-up at once, saying so;
        // the driver would retry in silence until its 30 s timeout.
        crate::db::check_reachable(&url, std::time::Duration::from_secs(5)).await?;
        crate::db::make_sqlite_dir(&url)?;
        let listen_url = url.starts_with("postgres").then(|| Arc::from(url.as_str()));
        let sqlite_dir = crate::db::sqlite_path(&url).map(|p| {
            std::path::Path::new(&p)
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default()
        });
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(4)
            .min_connections(0)
            .sqlx_logging(false);
        let db = crate::db::connect(options).await?;
        // Replicas starting together on a new control database race to create it.
        crate::db::migrate_with::<ControlMigrator>(&db, "tenant-router:control").await?;
        Ok(Self {
            db,
            secrets,
            listen_url,
            sqlite_dir,
            storage_identity,
        })
    }

    /// Where the control database is (see `TenantConfig::storage_identity`).
    pub fn storage_identity(&self) -> Option<&str> {
        self.storage_identity.as_deref()
    }

    /// A round trip to the control database.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    /// Every ready tenant, validated; rows that fail validation are returned as
    /// errors (naming the tenant and field) rather than served.
    pub async fn load(&self) -> Result<(Vec<TenantConfig>, Vec<ConfigError>), DbErr> {
        let rows = TenantConfigs::find()
            .filter(Column::State.eq(READY))
            .all(&self.db)
            .await?;
        let mut tenants = Vec::with_capacity(rows.len());
        let mut errors = Vec::new();
        for row in rows {
            match self.config_of(&row) {
                Ok(config) => tenants.push(config),
                Err(mut e) => errors.append(&mut e),
            }
        }
        Ok((tenants, errors))
    }

    /// The tenant a row holds, validated as `load` validates it.
    fn config_of(&self, row: &Model) -> Result<TenantConfig, Vec<ConfigError>> {
        let url = self.secrets.open(&row.database_url).map_err(|why| {
            vec![ConfigError {
                tenant: Some(row.id.clone()),
                field: "database_url".into(),
                message: format!("cannot be opened: {why}"),
            }]
        })?;
        let mut config = parse_tenant_entry(&row.id, &entry_of(row, url), TenantSource::Control)?;
        if let Some(generation) = &row.generation {
            config.generation = generation.clone();
        }
        Ok(config)
    }

    /// Changes a tenant as its ready row holds it now: `change` gets that tenant
    /// (`None` without a ready row) and returns the new one, or why not. The row is
    /// locked from the read to the write (a write transaction; `FOR UPDATE` on
    /// PostgreSQL), so two changes at once, through any replicas, apply one after
    /// the other, and a row deleted meanwhile is not written back. Without a ready
    /// row the new tenant is inserted (a file tenant's first change); a row still
    /// being provisioned makes that insert a unique violation.
    pub async fn change<E>(
        &self,
        id: &str,
        mut change: impl FnMut(Option<TenantConfig>) -> Result<TenantConfig, E>,
    ) -> Result<Result<TenantConfig, E>, DbErr> {
        match self.change_once(id, &mut change).await {
            // Two first changes of a file tenant at once: with no row there was
            // nothing to lock, and one insert lost. Once more, on the row the other
            // made. (Otherwise a subdomain or database taken meanwhile: the same
            // again, and the answer.)
            Err(e) if is_unique_violation(&e) => self.change_once(id, &mut change).await,
            other => other,
        }
    }

    async fn change_once<E>(
        &self,
        id: &str,
        change: &mut impl FnMut(Option<TenantConfig>) -> Result<TenantConfig, E>,
    ) -> Result<Result<TenantConfig, E>, DbErr> {
        let txn = crate::db::begin_write(&self.db).await?;
        let row = TenantConfigs::find_by_id(id)
            .lock_exclusive()
            .one(&txn)
            .await?
            .filter(|row| row.state == READY);
        let current = match &row {
            Some(row) => Some(self.config_of(row).map_err(|errors| {
                let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
                DbErr::Custom(format!("the tenant's row is invalid: {}", why.join("; ")))
            })?),
            None => None,
        };
        let config = match change(current) {
            Ok(config) => config,
            Err(refused) => {
                txn.rollback().await?;
                return Ok(Err(refused));
            }
        };
        let mut model = self.active_model(&config, READY)?;
        match row {
            Some(old) => {
                model.created_at = Set(old.created_at);
                model.update(&txn).await?;
            }
            None => {
                TenantConfigs::insert(model).exec(&txn).await?;
            }
        }
        txn.commit().await?;
        Ok(Ok(config))
    }

    /// Claims `config.id` for provisioning by `claimer`. `false` if the id is taken
    /// (by a ready tenant or by a provisioning under way elsewhere).
    pub async fn claim(&self, config: &TenantConfig, claimer: &str) -> Result<Claim, DbErr> {
        let mut row = self.active_model(config, PROVISIONING)?;
        row.claimed_by = Set(Some(claimer.to_string()));
        match TenantConfigs::insert(row).exec(&self.db).await {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) if is_unique_violation(&e) => Ok(if self.contains(config.id.as_str()).await? {
                Claim::IdTaken
            } else {
                Claim::StorageOrSubdomainTaken
            }),
            Err(e) => Err(e),
        }
    }

    /// Records, before any storage is made, whether the claimed tenant's storage
    /// existed already: a roll-back drops only storage that provisioning made.
    /// `false` when the claim is no longer `claimer`'s (nothing is written).
    pub async fn record_storage(
        &self,
        id: &str,
        claimer: &str,
        existed: bool,
    ) -> Result<bool, DbErr> {
        let result = TenantConfigs::update_many()
            .col_expr(
                Column::Storage,
                Expr::value(if existed {
                    STORAGE_EXISTING
                } else {
                    STORAGE_NEW
                }),
            )
            .col_expr(Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(claim_of(id, Some(claimer)))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Every provisioning that has not finished: under way, or cut short by a crash.
    pub async fn unfinished(&self) -> Result<Vec<Unfinished>, DbErr> {
        let rows = TenantConfigs::find()
            .filter(Column::State.eq(PROVISIONING))
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let config = self
                    .secrets
                    .open(&row.database_url)
                    .map_err(|e| format!("database_url cannot be opened: {e}"))
                    .and_then(|url| {
                        parse_tenant_entry(&row.id, &entry_of(&row, url), TenantSource::Control)
                            .map_err(|errors| {
                                errors
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            })
                    });
                Unfinished {
                    id: row.id,
                    claimed_by: row.claimed_by,
                    made_storage: match row.storage.as_deref() {
                        Some(STORAGE_NEW) => Some(true),
                        Some(_) => Some(false),
                        None => None,
                    },
                    updated_at: row.updated_at,
                    config,
                }
            })
            .collect())
    }

    /// Marks the tenant `claimer` claimed ready: from now on it is loaded and
    /// served. `false` when the claim is no longer `claimer`'s (an operator rolled
    /// the provisioning back meanwhile): nothing changes.
    pub async fn mark_ready(&self, id: &str, claimer: &str) -> Result<bool, DbErr> {
        let result = TenantConfigs::update_many()
            .col_expr(Column::State, Expr::value(READY))
            .col_expr(Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(claim_of(id, Some(claimer)))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Takes an unfinished provisioning away from its claimer (`claimed_by` as
    /// read, `None` for none) for `taker`, a roll-back, before it drops anything
    /// (`None`: unsigned, for any roll-back to take):
    /// from then on the claimer can neither record its storage nor mark it ready.
    /// Returns whether the provisioning made its storage, as the row says once
    /// taken (no one can change that any more); `None` when the row is not that
    /// claim any more (it finished, or another roll-back took it).
    pub async fn disown(
        &self,
        id: &str,
        claimed_by: Option<&str>,
        taker: Option<&str>,
    ) -> Result<Option<Option<bool>>, DbErr> {
        let result = TenantConfigs::update_many()
            .col_expr(Column::ClaimedBy, Expr::value(taker.map(str::to_string)))
            .col_expr(Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(claim_of(id, claimed_by))
            .exec(&self.db)
            .await?;
        if result.rows_affected != 1 {
            return Ok(None);
        }
        let row = TenantConfigs::find_by_id(id).one(&self.db).await?;
        Ok(Some(row.and_then(|r| r.storage).map(|s| s == STORAGE_NEW)))
    }

    /// Removes the row of an unfinished provisioning that `claimer` still holds:
    /// how a provisioning that failed lets its id go (a claim an operator took
    /// over is that operator's to release).
    pub async fn release_claim(&self, id: &str, claimer: &str) -> Result<(), DbErr> {
        TenantConfigs::delete_many()
            .filter(claim_of(id, Some(claimer)))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    /// Removes a ready tenant's row of `generation` (the incarnation the caller
    /// removes: a tenant removed and provisioned again through another replica
    /// meanwhile is another, and stays); `false` if there was none.
    pub async fn delete(&self, id: &str, generation: &str) -> Result<bool, DbErr> {
        let result = TenantConfigs::delete_many()
            .filter(Column::Id.eq(id))
            .filter(Column::State.eq(READY))
            // A row from before generations were recorded has none.
            .filter(
                sea_orm::Condition::any()
                    .add(Column::Generation.eq(generation))
                    .add(Column::Generation.is_null()),
            )
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    /// Whether the control database holds a row (of any state) for `id`.
    pub async fn contains(&self, id: &str) -> Result<bool, DbErr> {
        Ok(TenantConfigs::find_by_id(id).count(&self.db).await? > 0)
    }

    /// Seals again every database URL that is plain or sealed with the previous key
    /// (a key rotation), the tenants' and those of moves on record; returns how
    /// many URLs changed.
    pub async fn reseal_all(&self) -> Result<usize, DbErr> {
        let rows = TenantConfigs::find().all(&self.db).await?;
        let mut changed = 0;
        for row in rows {
            if !self.secrets.needs_reseal(&row.database_url) {
                continue;
            }
            let plain = self
                .secrets
                .open(&row.database_url)
                .map_err(DbErr::Custom)?;
            let sealed = self.secrets.seal(&plain).map_err(DbErr::Custom)?;
            TenantConfigs::update_many()
                .col_expr(Column::DatabaseUrl, Expr::value(sealed))
                .filter(Column::Id.eq(row.id))
                // Unless changed since it was read: a newer URL is not replaced.
                .filter(Column::DatabaseUrl.eq(row.database_url.as_str()))
                .exec(&self.db)
                .await?;
            changed += 1;
        }
        // The URLs of moves on record are sealed too: a move left under the old
        // key could be neither confirmed nor aborted once that key is gone.
        for row in moves::tenant_move::Entity::find().all(&self.db).await? {
            // The record as read: a move started since keeps its own URLs.
            let mut update = moves::tenant_move::Entity::update_many()
                .filter(moves::tenant_move::Column::TenantId.eq(row.tenant_id.as_str()))
                .filter(moves::tenant_move::Column::SourceUrl.eq(row.source_url.as_str()))
                .filter(moves::tenant_move::Column::TargetUrl.eq(row.target_url.as_str()));
            let mut resealed = false;
            for (column, stored) in [
                (moves::tenant_move::Column::SourceUrl, &row.source_url),
                (moves::tenant_move::Column::TargetUrl, &row.target_url),
            ] {
                if self.secrets.needs_reseal(stored) {
                    let plain = self.secrets.open(stored).map_err(DbErr::Custom)?;
                    let sealed = self.secrets.seal(&plain).map_err(DbErr::Custom)?;
                    update = update.col_expr(column, Expr::value(sealed));
                    resealed = true;
                    changed += 1;
                }
            }
            if resealed {
                update.exec(&self.db).await?;
            }
        }
        Ok(changed)
    }

    /// Row count and newest `updated_at`: replicas poll this to notice changes.
    pub async fn fingerprint(&self) -> Result<Fingerprint, DbErr> {
        let count = TenantConfigs::find().count(&self.db).await?;
        let newest: Option<chrono::DateTime<Utc>> = TenantConfigs::find()
            .select_only()
            .column_as(Column::UpdatedAt.max(), "newest")
            .into_tuple::<Option<chrono::DateTime<Utc>>>()
            .one(&self.db)
            .await?
            .flatten();
        Ok(Fingerprint(count, newest))
    }
}

impl ControlStore {
    /// Forgets the tenant storage at `key` (it was dropped on purpose): a tenant
    /// there later is new, and its storage is created.
    pub async fn forget_storage(&self, key: &str) -> Result<(), DbErr> {
        initialised_storage::Entity::delete_by_id(key)
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}

impl crate::db::StorageLedger for ControlStore {
    fn is_initialised<'a>(&'a self, key: &'a str) -> crate::db::LedgerFuture<'a, bool> {
        Box::pin(async move {
            Ok(initialised_storage::Entity::find_by_id(key)
                .count(&self.db)
                .await?
                > 0)
        })
    }

    fn record_initialised<'a>(
        &'a self,
        key: &'a str,
        tenant: &'a str,
    ) -> crate::db::LedgerFuture<'a, ()> {
        Box::pin(async move {
            let row = initialised_storage::ActiveModel {
                storage_key: Set(key.to_string()),
                tenant_id: Set(tenant.to_string()),
                created_at: Set(Utc::now()),
            };
            match initialised_storage::Entity::insert(row)
                .exec(&self.db)
                .await
            {
                // Another replica recorded it first.
                Err(e) if is_unique_violation(&e) => Ok(()),
                other => other.map(|_| ()),
            }
        })
    }
}

impl ControlStore {
    fn active_model(&self, config: &TenantConfig, state: &str) -> Result<ActiveModel, DbErr> {
        let sealed = self
            .secrets
            .seal(config.database_url.expose())
            .map_err(DbErr::Custom)?;
        Ok(active_model(config, state, sealed))
    }
}

fn active_model(config: &TenantConfig, state: &str, sealed_url: String) -> ActiveModel {
    let entry = config.to_entry();
    let now = Utc::now();
    ActiveModel {
        id: Set(config.id.to_string()),
        database_url: Set(sealed_url),
        domain: Set(entry["domain"].as_str().unwrap_or("default").to_string()),
        subdomain: Set(config.subdomain.clone()),
        features: Set(config
            .explicit_features
            .as_ref()
            .map(|_| entry["features"].clone())),
        branding: Set(entry["branding"].clone()),
        gst_number: Set(config.gst_number.clone()),
        contact_info: Set(entry["contact_info"].clone()),
        is_active: Set(config.is_active),
        demo: Set(config.demo),
        max_connections: Set(config.pool.max_connections.map(|n| n as i32)),
        isolation: Set(entry["isolation"]
            .as_str()
            .unwrap_or("database")
            .to_string()),
        state: Set(state.to_string()),
        claimed_by: Set(None),
        storage: Set(None),
        storage_key: Set(config.storage_identity()),
        generation: Set(Some(config.generation.clone())),
        limits: Set(Some(serde_json::json!({
            "rate_limit_per_sec": entry["rate_limit_per_sec"],
            "rate_limit_burst": entry["rate_limit_burst"],
            "max_concurrent_requests": entry["max_concurrent_requests"],
            "storage_quota_bytes": entry["storage_quota_bytes"],
        }))),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// A row as a `TENANT_CONFIGS`-shaped entry, for the shared validator.
fn entry_of(row: &Model, database_url: String) -> Value {
    let mut entry = serde_json::json!({
        "database_url": database_url,
        "domain": row.domain,
        "subdomain": row.subdomain,
        "features": row.features,
        "branding": row.branding,
        "gst_number": row.gst_number,
        "contact_info": row.contact_info,
        "is_active": row.is_active,
        "max_connections": row.max_connections,
        "isolation": row.isolation,
        "demo": row.demo,
    });
    if let (Some(Value::Object(limits)), Value::Object(fields)) = (&row.limits, &mut entry) {
        for (name, value) in limits {
            // Only the limits' own fields, whatever else the column holds.
            if matches!(
                name.as_str(),
                "rate_limit_per_sec"
                    | "rate_limit_burst"
                    | "max_concurrent_requests"
                    | "storage_quota_bytes"
            ) {
                fields.insert(name.clone(), value.clone());
            }
        }
    }
    entry
}

/// The unfinished provisioning of `id` that `claimer` holds (`None`: unsigned).
fn claim_of(id: &str, claimer: Option<&str>) -> sea_orm::Condition {
    let held = match claimer {
        Some(claimer) => Column::ClaimedBy.eq(claimer),
        None => Column::ClaimedBy.is_null(),
    };
    sea_orm::Condition::all()
        .add(Column::Id.eq(id))
        .add(Column::State.eq(PROVISIONING))
        .add(held)
}

fn is_unique_violation(err: &DbErr) -> bool {
    // PostgreSQL 23505; SQLite 2067 (SQLITE_CONSTRAINT_UNIQUE) and 1555 (PRIMARYKEY).
    matches!(
        crate::db::sql_state(err).as_deref(),
        Some("23505" | "2067" | "1555")
    )
}
