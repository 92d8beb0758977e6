//! The `tenant_moves` table: one row per tenant being moved (see
//! `lifecycle::moves`). URLs are sealed like the tenants' own.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, EntityTrait, Set, entity::prelude::*};

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

/// A move as recorded, with its URLs opened.
#[derive(Debug, Clone)]
pub struct MoveRecord {
    pub tenant_id: String,
    pub source_url: crate::secret::Secret,
    pub target_url: crate::secret::Secret,
    /// `copying` or `switched`.
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

    /// The switch: the tenant's row now names `config`'s (new) URL and the move is
    /// `switched`, in one transaction, so that no reader sees one without the other.
    pub async fn switch_move(
        &self,
        config: &crate::tenant::TenantConfig,
        pause_ms: i64,
    ) -> Result<(), DbErr> {
        use sea_orm::TransactionTrait;
        let txn = self.db.begin().await?;
        let existing = super::tenant_config::Entity::find_by_id(config.id.as_str())
            .one(&txn)
            .await?;
        let mut row = self.active_model(config, super::READY)?;
        match existing {
            Some(old) => {
                row.created_at = Set(old.created_at);
                row.update(&txn).await?;
            }
            None => {
                super::tenant_config::Entity::insert(row).exec(&txn).await?;
            }
        }
        tenant_move::ActiveModel {
            tenant_id: Set(config.id.to_string()),
            state: Set("switched".into()),
            pause_ms: Set(Some(pause_ms)),
            error: Set(None),
            updated_at: Set(Utc::now()),
            ..Default::default()
        }
        .update(&txn)
        .await?;
        txn.commit().await
    }

    /// Forgets a move (confirmed, or abandoned before its switch).
    pub async fn finish_move(&self, tenant: &str) -> Result<(), DbErr> {
        tenant_move::Entity::delete_by_id(tenant)
            .exec(&self.db)
            .await
            .map(|_| ())
    }
}
