//! The audit log's rows: who (user, API key, gateway or operator) did what (entity,
//! id, action), when, and in which request, in the tenant's own database. The HTTP
//! layer records every write through the tenant API (`http::audit`); provisioning
//! and the CLI record the users they create.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbErr, TransactionSession};

use crate::{
    auth::{
        Principal,
        users::{self, NewUser},
    },
    entities::{audit_entry, user},
    error::AppError,
};

/// What one audit row says.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub principal: &'a Principal,
    pub entity: &'a str,
    pub entity_id: Option<String>,
    pub action: &'a str,
    pub request_id: &'a str,
}

/// Writes one audit row.
pub async fn record(db: &impl ConnectionTrait, event: AuditEvent<'_>) -> Result<(), DbErr> {
    audit_entry::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        at: Set(Utc::now()),
        actor_kind: Set(event.principal.kind.as_str().into()),
        actor_id: Set(event.principal.id.map(|id| id.to_string())),
        actor_name: Set(event.principal.name.clone()),
        entity: Set(event.entity.into()),
        entity_id: Set(event.entity_id),
        action: Set(event.action.into()),
        request_id: Set(event.request_id.into()),
    }
    .insert(db)
    .await
    .map(|_| ())
}

/// Creates a user for the operator (admin route, provisioning, CLI) and its audit
/// row, in one transaction: both or neither.
pub async fn create_user_as_operator<C>(
    db: &C,
    new: NewUser,
    request_id: &str,
) -> Result<user::Model, AppError>
where
    C: ConnectionTrait + sea_orm::TransactionTrait,
{
    // Hashing is slow: done before the transaction takes the write lock.
    let prepared = users::prepare(new, false).await?;
    let txn = crate::db::begin_write(db).await?;
    let created = users::insert(&txn, prepared).await?;
    record(
        &txn,
        AuditEvent {
            principal: &Principal::operator(),
            entity: "users",
            entity_id: Some(created.id.to_string()),
            action: "create",
            request_id,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(created)
}
