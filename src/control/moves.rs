//! The `tenant_moves` table: one row per tenant being moved (see
//! `lifecycle::moves`). URLs are sealed like the tenants' own.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, entity::prelude::*,
};

use super::ControlStore;

pub mod tenant_move {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_moves")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub source_url: String,
        pub target_url: String,
        pub state: String,
        pub pause_ms: Option<i64>,
        pub error: Option<String>,
        pub started_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The right to move a tenant, held until dropped (see
/// [`ControlStore::lock_move`]).
pub enum MoveLock {
    Postgres(sea_orm::DatabaseConnection),
    File(std::fs::File),
}

/// A move as recorded, with its URLs opened.
#[derive(Debug, Clone)]
pub struct MoveRecord {
    pub tenant_id: String,
    pub source_url: crate::secret::Secret,
    pub target_url: crate::secret::Secret,
    /// `copying`, `released` (cut short; its source takes writes again) or
    /// `switched`.
    pub state: String,
    pub pause_ms: Option<i64>,
    pub error: Option<String>,
    pub started_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

impl ControlStore {
    /// The recorded move of `tenant`, if any.
    pub async fn find_move(&self, tenant: &str) -> Result<Option<MoveRecord>, DbErr> {
        let Some(row) = tenant_move::Entity::find_by_id(tenant)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let open = |sealed: &str| {
            self.secrets
                .open(sealed)
                .map(crate::secret::Secret::new)
                .map_err(DbErr::Custom)
        };
        Ok(Some(MoveRecord {
            source_url: open(&row.source_url)?,
            target_url: open(&row.target_url)?,
            tenant_id: row.tenant_id,
            state: row.state,
            pause_ms: row.pause_ms,
            error: row.error,
            started_at: row.started_at,
            updated_at: row.updated_at,
        }))
    }

    /// Every recorded move.
    pub async fn moves(&self) -> Result<Vec<MoveRecord>, DbErr> {
        let ids: Vec<String> = tenant_move::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| m.tenant_id)
            .collect();
        let mut records = Vec::new();
        for id in ids {
            if let Some(record) = self.find_move(&id).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Records the start of a move of `tenant` from `source` to `target`.
    pub async fn start_move(&self, tenant: &str, source: &str, target: &str) -> Result<(), DbErr> {
        let seal = |url: &str| self.secrets.seal(url).map_err(DbErr::Custom);
        let now = Utc::now();
        tenant_move::ActiveModel {
            tenant_id: Set(tenant.to_string()),
            source_url: Set(seal(source)?),
            target_url: Set(seal(target)?),
            state: Set("copying".into()),
            pause_ms: Set(None),
            error: Set(None),
            started_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await
        .map(|_| ())
    }

    /// Notes the last attempt's error (`None`: it went on).
    pub async fn note_move_error(&self, tenant: &str, error: Option<String>) -> Result<(), DbErr> {
        tenant_move::ActiveModel {
            tenant_id: Set(tenant.to_string()),
            error: Set(error),
            updated_at: Set(Utc::now()),
            ..Default::default()
        }
        .update(&self.db)
        .await
        .map(|_| ())
    }

    /// Marks the move of `tenant` `released` (its source takes writes again),
    /// with `error`, if it has not switched; whether it has not. The update waits
    /// for a switch in flight (it holds the row); and a switch needs the move
    /// `copying`, so a mover still alive (its lock lost with its connection)
    /// can no longer switch to a copy that misses the writes made from now on.
    pub async fn release_move(&self, tenant: &str, error: &str) -> Result<bool, DbErr> {
        let updated = tenant_move::Entity::update_many()
            .col_expr(tenant_move::Column::State, Expr::value("released"))
            .col_expr(tenant_move::Column::Error, Expr::value(error))
            .col_expr(tenant_move::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(tenant_move::Column::TenantId.eq(tenant))
            // Released already, by a start-up cut short before it unfroze.
            .filter(tenant_move::Column::State.is_in(["copying", "released"]))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected == 1)
    }

    /// A released move run again: `copying`, so that it may switch.
    pub async fn resume_move(&self, tenant: &str) -> Result<(), DbErr> {
        tenant_move::Entity::update_many()
            .col_expr(tenant_move::Column::State, Expr::value("copying"))
            .col_expr(tenant_move::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(tenant_move::Column::TenantId.eq(tenant))
            .filter(tenant_move::Column::State.eq("released"))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    /// The switch: the tenant's row now names `target`'s URL (and isolation and
    /// storage key; nothing else of the row changes, so that a change made during
    /// the move stays) and the move is `switched`, in one transaction, so that no
    /// reader sees one without the other. Refused when the tenant's URL is no
    /// longer `source`, or when a tenant of the control database was removed.
    /// A tenant of the tenants file gets its first control row here.
    pub async fn switch_move(
        &self,
        target: &crate::tenant::TenantConfig,
        source: &str,
        pause_ms: i64,
    ) -> Result<(), DbErr> {
        use sea_orm::TransactionTrait;
        let txn = self.db.begin().await?;
        let existing = super::tenant_config::Entity::find_by_id(target.id.as_str())
            .one(&txn)
            .await?;
        let fresh = self.active_model(target, super::READY)?;
        match existing {
            Some(old) => {
                let current = self
                    .secrets
                    .open(&old.database_url)
                    .map_err(DbErr::Custom)?;
                if current != source {
                    return Err(DbErr::Custom(
                        "the tenant's database URL changed during the move".into(),
                    ));
                }
                let mut row: super::ActiveModel = old.into();
                row.database_url = fresh.database_url;
                row.isolation = fresh.isolation;
                row.storage_key = fresh.storage_key;
                row.updated_at = Set(Utc::now());
                row.update(&txn).await?;
            }
            None if target.source == crate::tenant::TenantSource::Control => {
                return Err(DbErr::Custom(
                    "the tenant was removed during the move".into(),
                ));
            }
            None => {
                super::tenant_config::Entity::insert(fresh)
                    .exec(&txn)
                    .await?;
            }
        }
        let updated = tenant_move::Entity::update_many()
            .col_expr(
                tenant_move::Column::State,
                sea_orm::sea_query::Expr::value("switched"),
            )
            .col_expr(
                tenant_move::Column::PauseMs,
                sea_orm::sea_query::Expr::value(pause_ms),
            )
            .col_expr(
                tenant_move::Column::Error,
                sea_orm::sea_query::Expr::value(Option::<String>::None),
            )
            .col_expr(
                tenant_move::Column::UpdatedAt,
                sea_orm::sea_query::Expr::value(Utc::now()),
            )
            .filter(tenant_move::Column::TenantId.eq(target.id.as_str()))
            .filter(tenant_move::Column::State.eq("copying"))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(DbErr::Custom("the move is no longer under way".into()));
        }
        txn.commit().await
    }

    /// Holds the right to move (or abort, or confirm the move of) `tenant` until
    /// the returned guard is dropped; `None` while another process holds it. On
    /// PostgreSQL a session advisory lock on a connection of its own, on SQLite a
    /// lock on a file beside the control database: either ends with its process.
    pub async fn lock_move(&self, tenant: &str) -> Result<Option<MoveLock>, DbErr> {
        match &self.listen_url {
            Some(url) => {
                let mut options = sea_orm::ConnectOptions::new(url.to_string());
                options
                    .max_connections(1)
                    .min_connections(0)
                    .sqlx_logging(false);
                let db = crate::db::connect(options).await?;
                let row = db
                    .query_one_raw(sea_orm::Statement::from_sql_and_values(
                        sea_orm::DbBackend::Postgres,
                        "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                        [format!("tenant-router:move:{tenant}").into()],
                    ))
                    .await?
                    .ok_or_else(|| DbErr::Custom("no row".into()))?;
                let locked: bool = row.try_get_by_index(0)?;
                Ok(locked.then_some(MoveLock::Postgres(db)))
            }
            None => {
                let dir = self
                    .sqlite_dir
                    .clone()
                    .ok_or_else(|| DbErr::Custom("no place for the move lock".into()))?;
                let path = dir.join(format!("move-{tenant}.lock"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| DbErr::Custom(format!("move lock: {e}")))?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(MoveLock::File(file))),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => {
                        Err(DbErr::Custom(format!("move lock: {e}")))
                    }
                }
            }
        }
    }

    /// Forgets a move (confirmed, or abandoned before its switch).
    pub async fn finish_move(&self, tenant: &str) -> Result<(), DbErr> {
        tenant_move::Entity::delete_by_id(tenant)
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}
