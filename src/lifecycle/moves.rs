//! Moving a tenant to another PostgreSQL server while it serves (`tenants move`).
//!
//! 1. The move is recorded in the control database (`tenant_moves`).
//! 2. The target storage is made and migrated; the tenant's tables are published on
//!    the source and subscribed to on the target (logical replication), which copies
//!    them and then streams every later write.
//! 3. The switch: the source's tables are locked against writes (reads go on); a
//!    marker row written after the lock reaches the target, so the target has every
//!    committed write; the source's tables get triggers that refuse writes (SQLSTATE
//!    25006, a 503 for clients), and the lock is released; then the tenant's URL is
//!    switched in the control database, which tells every replica at once.
//! 4. Replication is removed; the source is kept, read-only, until the operator
//!    confirms (`--confirm` drops it).
//!
//! Each step can be run again: a rerun resumes (a crash before the freeze leaves the
//! tenant served from the source, with a copy to start over; after it, the switch is
//! made). A failure before the switch leaves the tenant on its source, writable.

use std::time::{Duration, Instant};

use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use super::Lifecycle;
use crate::{
    db::{self, quote_ident},
    error::{AppError, Result},
    secret::Secret,
    tenant::TenantConfig,
};

/// The marker table a move writes through replication (in the tenant's schema).
const MARKER: &str = "tenant_router_move";
/// The function the freeze triggers call.
const FROZEN: &str = "tenant_router_frozen";

/// How long the initial copy may take before the attempt gives up.
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
/// How long writes may be held at the switch before the attempt gives up (and
/// releases them on the source).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a move is, for progress reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum MoveStep {
    Preparing,
    Copying { tables: usize },
    Switching,
    Switched { pause_ms: u64 },
    Cleaned,
}

/// The result of a move.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoveOutcome {
    pub tenant_id: String,
    /// `host:port` of the old and new servers.
    pub from: String,
    pub to: String,
    pub tables: usize,
    /// How long writes were held at the switch.
    pub pause_ms: u64,
    /// The old storage is kept, read-only, until `--confirm`.
    pub source_kept: bool,
}

pub(super) fn server_of(url: &str) -> String {
    // As the pools name servers (`GET /api/admin/pools`).
    if url.starts_with("sqlite") {
        return "sqlite".into();
    }
    url::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or(""),
                u.port().unwrap_or(5432)
            )
        })
        .unwrap_or_default()
}

/// The names a move of `tenant` uses on both servers: short, fixed per tenant.
fn replication_name(tenant: &TenantConfig) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(tenant.id.as_str().as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("tr_move_{hex}")
}

/// A libpq connection string for `url`, as a subscription needs it.
fn conninfo(url: &str) -> Result<String> {
    let parsed = url::Url::parse(url).map_err(|_| AppError::validation("to", "invalid URL"))?;
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let decode = |v: &str| percent_decode(v);
    let mut parts = vec![
        format!("host={}", quote(parsed.host_str().unwrap_or("localhost"))),
        format!("port={}", quote(&parsed.port().unwrap_or(5432).to_string())),
        format!(
            "dbname={}",
            quote(&decode(parsed.path().trim_start_matches('/')))
        ),
    ];
    if !parsed.username().is_empty() {
        parts.push(format!("user={}", quote(&decode(parsed.username()))));
    }
    if let Some(password) = parsed.password() {
        parts.push(format!("password={}", quote(&decode(password))));
    }
    for (key, value) in parsed.query_pairs() {
        if key == "sslmode" {
            parts.push(format!("sslmode={}", quote(&value)));
        }
    }
    Ok(parts.join(" "))
}

fn percent_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// A SQL string literal.
pub(super) fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// A SQL string literal that no server setting can reinterpret (no escapes): a
/// dollar quote whose random tag the text does not hold.
fn dollar_literal(v: &str) -> String {
    loop {
        let tag = format!("tr{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        if !v.contains(&tag) {
            return format!("${tag}${v}${tag}$");
        }
    }
}

/// The versions in the migration table of `schema`.
pub(super) async fn migrations(
    db: &DatabaseConnection,
    schema: &str,
) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT version FROM {} ORDER BY 1",
                qualified(schema, "seaql_migrations")
            ),
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect()
}

/// The rows of `schema.table`.
pub(super) async fn count_rows(
    db: &DatabaseConnection,
    schema: &str,
    table: &str,
) -> Result<i64, DbErr> {
    query_i64(
        db,
        &format!("SELECT count(*) FROM {}", qualified(schema, table)),
    )
    .await
}

/// The nonce the freeze recorded on the source (the marker the target had).
async fn frozen_nonce(db: &DatabaseConnection, schema: &str) -> Result<Option<String>, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT obj_description(p.oid, 'pg_proc') FROM pg_proc p \
                 JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.proname = '{FROZEN}' AND n.nspname = {}",
                literal(schema)
            ),
        ))
        .await?;
    Ok(row.and_then(|r| r.try_get_by_index::<Option<String>>(0).ok().flatten()))
}

pub(super) async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, 2).await
}

/// A pool of one: session settings (`SET …`) apply to every later statement.
pub(super) async fn connect_one(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, 1).await
}

async fn connect_with(url: &str, connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    crate::db::connect(options).await
}

async fn query_i64(db: &DatabaseConnection, sql: &str) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_string()))
        .await?
        .ok_or_else(|| DbErr::Custom("no row".into()))?;
    row.try_get_by_index::<i64>(0)
}

/// The tenant's tables in `schema`, without the migration table and the marker.
async fn tables(db: &DatabaseConnection, schema: &str) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' \
             AND table_name NOT IN ('seaql_migrations', 'tenant_router_move') ORDER BY 1",
            [schema.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect()
}

/// Whether the source's tables refuse writes (a move froze them).
async fn is_frozen(db: &DatabaseConnection, schema: &str) -> Result<bool, DbErr> {
    let sql = format!(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.proname = '{FROZEN}' AND n.nspname = {}",
        literal(schema)
    );
    Ok(query_i64(db, &sql).await? > 0)
}

fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Removes the subscription on the target and the slot and publication on the
/// source, if they exist.
async fn drop_replication(
    source: &DatabaseConnection,
    target: &DatabaseConnection,
    name: &str,
) -> Result<(), DbErr> {
    // A subscription still being created by a mover that was killed.
    target
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND query LIKE 'CREATE SUBSCRIPTION {name} %'"
        ))
        .await?;
    let subscribed = query_i64(
        target,
        &format!(
            "SELECT count(*) FROM pg_subscription WHERE subname = {}",
            literal(name)
        ),
    )
    .await?;
    if subscribed > 0 {
        target
            .execute_unprepared(&format!("ALTER SUBSCRIPTION {name} DISABLE"))
            .await?;
        target
            .execute_unprepared(&format!("ALTER SUBSCRIPTION {name} SET (slot_name = NONE)"))
            .await?;
        target
            .execute_unprepared(&format!("DROP SUBSCRIPTION {name}"))
            .await?;
    }
    // A slot still in use (a subscription being created by a mover that was
    // killed, its walsender not yet gone): end its user, then drop it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let slots = query_i64(
            source,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = {}",
                literal(name)
            ),
        )
        .await?;
        if slots == 0 {
            break;
        }
        source
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = {} AND active_pid IS NOT NULL",
                literal(name)
            ))
            .await?;
        match source
            .execute_unprepared(&format!(
                "SELECT pg_drop_replication_slot({})",
                literal(name)
            ))
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %db::redact_error(&e), "the move's slot is still in use; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    source
        .execute_unprepared(&format!("DROP PUBLICATION IF EXISTS {name}"))
        .await?;
    Ok(())
}

impl Lifecycle {
    /// Moves tenant `id` to the PostgreSQL database at `target` (same isolation:
    /// its own database, or its schema in that database), copying while it serves
    /// and pausing its writes only for the switch. Run again after a failure or a
    /// crash, it resumes.
    pub async fn move_tenant(
        &self,
        id: &str,
        target: &str,
        progress: &(dyn Fn(MoveStep) + Send + Sync),
    ) -> Result<MoveOutcome> {
        let prepared = self.prepare_move(id, target).await?;
        self.run_prepared(prepared, progress).await
    }

    /// What a move checks and records before it copies anything: the tenant, the
    /// target, the move on record (a new one is written). Holds the tenant's move
    /// lock, for [`Self::run_prepared`]. An error here leaves nothing recorded.
    async fn prepare_move(&self, id: &str, target: &str) -> Result<PreparedMove> {
        self.move_plan(id, target)?;
        // One process at a time moves (or aborts, or confirms) a tenant.
        let lock = self.hold_move(id).await?;
        // The tenant as the control database has it now (another process may
        // have changed it).
        self.refresh_now().await.map_err(|e| storage_error(&e))?;
        let (tenant, target_url) = self.move_plan(id, target)?;
        let source_url = tenant.database_url.expose().to_string();
        let record = self
            .control
            .find_move(id)
            .await
            .map_err(|e| storage_error(&e))?;
        let mut target_tenant = (*tenant).clone();
        target_tenant.database_url = Secret::new(target_url.clone());
        match &record {
            None => {
                if db::storage_key(&target_tenant)? == db::storage_key(&tenant)? {
                    return Err(AppError::validation("to", "the tenant is already there"));
                }
                self.check_free(&target_tenant, Some(&tenant.id))?;
                self.control
                    .start_move(id, &source_url, &target_url)
                    .await
                    .map_err(|e| storage_error(&e))?;
            }
            Some(r) if r.target_url.expose() != target_url => {
                return Err(AppError::Conflict(format!(
                    "tenant '{id}' is being moved to another server; finish or abort that move first"
                )));
            }
            Some(r) if r.state != "switched" && r.source_url.expose() != source_url => {
                return Err(AppError::Conflict(format!(
                    "tenant '{id}' changed its database during the move; abort the move"
                )));
            }
            // Released at a start-up after its process died: copied again.
            Some(r) if r.state == "released" => self
                .control
                .resume_move(id)
                .await
                .map_err(|e| storage_error(&e))?,
            Some(_) => {}
        }
        let source_url = record
            .as_ref()
            .map(|r| r.source_url.expose().to_string())
            .unwrap_or(source_url);
        let mut source_tenant = (*tenant).clone();
        source_tenant.database_url = Secret::new(source_url);
        Ok(PreparedMove {
            _lock: lock,
            source: source_tenant,
            target: target_tenant,
            switched: record.as_ref().is_some_and(|r| r.state == "switched"),
            fresh: record.is_none(),
        })
    }

    /// Runs a move that [`Self::prepare_move`] recorded; a failure is noted on its
    /// record and logged.
    async fn run_prepared(
        &self,
        prepared: PreparedMove,
        progress: &(dyn Fn(MoveStep) + Send + Sync),
    ) -> Result<MoveOutcome> {
        let PreparedMove {
            _lock,
            source,
            mut target,
            switched,
            fresh,
        } = prepared;
        let outcome = if source.database_url.expose().starts_with("sqlite") {
            target.isolation = crate::tenant::Isolation::Database;
            self.run_promotion(&source, &target, switched, fresh, progress)
                .await
        } else {
            self.run_move(&source, &target, switched, fresh, progress)
                .await
        };
        if let Err(e) = &outcome {
            let id = source.id.as_str();
            let error = describe(e);
            let _ = self.control.note_move_error(id, Some(error.clone())).await;
            tracing::warn!(tenant_id = %id, %error, "the move did not finish; run it again to resume");
        }
        outcome
    }

    /// The move lock of `id` (see [`crate::control::ControlStore::lock_move`]).
    pub(super) async fn hold_move(&self, id: &str) -> Result<crate::control::moves::MoveLock> {
        self.control
            .lock_move(id)
            .await
            .map_err(|e| storage_error(&e))?
            .ok_or_else(|| {
                AppError::Conflict(format!(
                    "another process is moving or removing tenant '{id}' (or aborting or confirming its move) now; try again"
                ))
            })
    }

    /// Switches the tenant's URL; when the answer is lost, the record says
    /// whether it happened. `Ok(false)`: not switched.
    pub(super) async fn switch(
        &self,
        target: &TenantConfig,
        source_url: &str,
        pause_ms: i64,
    ) -> Result<bool> {
        match self.control.switch_move(target, source_url, pause_ms).await {
            Ok(()) => Ok(true),
            Err(e) => {
                let record = self
                    .control
                    .find_move(target.id.as_str())
                    .await
                    .map_err(|e| storage_error(&e))?;
                if record.is_some_and(|r| r.state == "switched") {
                    return Ok(true);
                }
                tracing::warn!(tenant_id = %target.id, error = %db::redact_error(&e), "the switch did not happen");
                Ok(false)
            }
        }
    }

    /// The checks a move passes before anything is done: a PostgreSQL tenant, a
    /// valid `postgres://` target. Returns the tenant and the prepared target URL.
    fn move_plan(&self, id: &str, target: &str) -> Result<(std::sync::Arc<TenantConfig>, String)> {
        let tenant = self.existing(id)?;
        crate::tenant::check_database_url(target)
            .and_then(|()| crate::tenant::check_url_parameters(target))
            .map_err(|m| AppError::validation("to", m))?;
        let target_url =
            db::prepare_url(target).map_err(|_| AppError::validation("to", "invalid URL"))?;
        if !target_url.starts_with("postgres://") {
            return Err(AppError::validation(
                "to",
                "the target must be a postgres:// URL",
            ));
        }
        Ok((tenant, target_url))
    }

    async fn run_move(
        &self,
        source_tenant: &TenantConfig,
        target_tenant: &TenantConfig,
        switched: bool,
        fresh: bool,
        progress: &(dyn Fn(MoveStep) + Send + Sync),
    ) -> Result<MoveOutcome> {
        let id = source_tenant.id.as_str();
        let name = replication_name(source_tenant);
        let schema = source_tenant
            .schema_name()
            .unwrap_or_else(|| "public".to_string());
        let mut pause_ms = 0;
        let source = connect(source_tenant.database_url.expose()).await?;
        progress(MoveStep::Preparing);
        // The target's storage and tables (as migrations make them).
        db::create_tenant_database(target_tenant, &self.pools).await?;
        let target = connect_one(target_tenant.database_url.expose()).await?;
        let list = tables(&source, &schema).await?;
        if !switched {
            if migrations(&source, &schema).await? != migrations(&target, &schema).await? {
                return Err(AppError::validation(
                    "id",
                    "the tenant's database is not at the latest migration: migrate it first",
                ));
            }
            if fresh {
                // A new move goes into an empty place only.
                for table in &list {
                    let rows = query_i64(
                        &target,
                        &format!("SELECT count(*) FROM {}", qualified(&schema, table)),
                    )
                    .await?;
                    if rows > 0 {
                        return Err(AppError::validation(
                            "to",
                            "the target already holds data: give an empty database",
                        ));
                    }
                }
            }
            if is_frozen(&source, &schema).await? {
                // A freeze that a crash cut short of its switch: the target had
                // every write if it has the freeze's marker.
                let nonce = frozen_nonce(&source, &schema).await?.unwrap_or_default();
                let seen = query_i64(
                    &target,
                    &format!(
                        "SELECT count(*) FROM {} WHERE nonce = {}",
                        qualified(&schema, MARKER),
                        literal(&nonce)
                    ),
                )
                .await
                .unwrap_or(0);
                if nonce.is_empty() || seen == 0 {
                    return Err(AppError::Conflict(
                        "the source is frozen but the target never confirmed the freeze: abort the move, then run it again".into(),
                    ));
                }
            } else {
                self.copy(
                    &source,
                    &target,
                    &schema,
                    &name,
                    &list,
                    source_tenant,
                    progress,
                )
                .await?;
                progress(MoveStep::Switching);
                pause_ms = self.freeze(&source, &target, &schema, &list).await?;
            }
            // Frozen: the target has every committed write. Switch.
            let started = Instant::now();
            // No reload may apply rows read before the switch after it: it would
            // send the tenant back to its frozen source until the next poll.
            let turn = self.refreshing.lock().await;
            if !self
                .switch(
                    target_tenant,
                    source_tenant.database_url.expose(),
                    pause_ms as i64,
                )
                .await?
            {
                // Not switched: the source takes writes again (reloads need not
                // wait for that).
                drop(turn);
                unfreeze(&source, &schema, &list).await?;
                return Err(AppError::internal(
                    "the switch failed; the tenant stays on its source",
                ));
            }
            pause_ms += started.elapsed().as_millis() as u64;
            self.registry.upsert(target_tenant.clone()).await;
            drop(turn);
            tracing::info!(tenant_id = %id, pause_ms, from = %server_of(source_tenant.database_url.expose()), to = %server_of(target_tenant.database_url.expose()), "tenant moved");
            progress(MoveStep::Switched { pause_ms });
        }
        drop_replication(&source, &target, &name).await?;
        for (db, label) in [(&source, "source"), (&target, "target")] {
            if let Err(e) = db
                .execute_unprepared(&format!(
                    "DROP TABLE IF EXISTS {}",
                    qualified(&schema, MARKER)
                ))
                .await
            {
                tracing::warn!(tenant_id = %id, error = %db::redact_error(&e), "{label}: cannot drop the move's marker table");
            }
        }
        let _ = source.close().await;
        let _ = target.close().await;
        progress(MoveStep::Cleaned);
        Ok(MoveOutcome {
            tenant_id: id.to_string(),
            from: server_of(source_tenant.database_url.expose()),
            to: server_of(target_tenant.database_url.expose()),
            tables: list.len(),
            pause_ms,
            source_kept: true,
        })
    }

    /// Starts (again) the copy: a fresh publication and subscription, the target's
    /// tables emptied first (it serves nothing yet), and waits for the initial copy.
    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        source: &DatabaseConnection,
        target: &DatabaseConnection,
        schema: &str,
        name: &str,
        list: &[String],
        source_tenant: &TenantConfig,
        progress: &(dyn Fn(MoveStep) + Send + Sync),
    ) -> Result<()> {
        drop_replication(source, target, name).await?;
        let marker = format!(
            "CREATE TABLE IF NOT EXISTS {} (nonce text PRIMARY KEY)",
            qualified(schema, MARKER)
        );
        source.execute_unprepared(&marker).await?;
        target.execute_unprepared(&marker).await?;
        let mut all: Vec<String> = list.iter().map(|t| qualified(schema, t)).collect();
        all.push(qualified(schema, MARKER));
        target
            .execute_unprepared(&format!("TRUNCATE {} CASCADE", all.join(", ")))
            .await?;
        source
            .execute_unprepared(&format!(
                "CREATE PUBLICATION {name} FOR TABLE {}",
                all.join(", ")
            ))
            .await?;
        let connection = conninfo(source_tenant.database_url.expose())?;
        // The statement holds the source's password: keep it out of the target
        // server's log (superusers may; others' statements are not logged by
        // default either).
        let _ = target
            .execute_unprepared("SET log_statement = 'none'")
            .await;
        let _ = target
            .execute_unprepared("SET log_min_error_statement = 'panic'")
            .await;
        target
            .execute_unprepared(&format!(
                "CREATE SUBSCRIPTION {name} CONNECTION {} PUBLICATION {name} WITH (copy_data = true)",
                dollar_literal(&connection)
            ))
            .await
            .map_err(|e| AppError::internal(db::redact_error(&e)))?;
        progress(MoveStep::Copying { tables: all.len() });
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let pending = format!(
            "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid \
             WHERE s.subname = {} AND r.srsubstate <> 'r'",
            literal(name)
        );
        let known = format!(
            "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid \
             WHERE s.subname = {}",
            literal(name)
        );
        loop {
            if query_i64(target, &known).await? as usize == all.len()
                && query_i64(target, &pending).await? == 0
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(AppError::internal(
                    "the initial copy did not finish in time",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Holds the source's writes, waits until the target has them all, and makes
    /// the source refuse writes from then on; returns how long writes were held.
    async fn freeze(
        &self,
        source: &DatabaseConnection,
        target: &DatabaseConnection,
        schema: &str,
        list: &[String],
    ) -> Result<u64> {
        use sea_orm::TransactionTrait;
        let all: Vec<String> = list.iter().map(|t| qualified(schema, t)).collect();
        // All the tables at once or none (NOWAIT), tried again until they come:
        // waiting for one table while holding others would deadlock with a write
        // that takes them in another order.
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE NOWAIT", all.join(", "));
        let txn = loop {
            let txn = source.begin().await?;
            match txn.execute_unprepared(&lock).await {
                Ok(_) => break txn,
                Err(e)
                    if db::sql_state(&e).as_deref() == Some("55P03")
                        && Instant::now() < deadline =>
                {
                    txn.rollback().await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let held = Instant::now();
        // Written after the lock: once the target has it, it has every write
        // committed before, since replication applies in commit order.
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        // Flushed at commit whatever the server's synchronous_commit, so that it
        // is sent to the target at once (WAL is sent once flushed).
        let marker = source.begin().await?;
        marker
            .execute_unprepared("SET LOCAL synchronous_commit = on")
            .await?;
        marker
            .execute_unprepared(&format!(
                "INSERT INTO {} VALUES ({})",
                qualified(schema, MARKER),
                literal(&nonce)
            ))
            .await?;
        marker.commit().await?;
        let seen = format!(
            "SELECT count(*) FROM {} WHERE nonce = {}",
            qualified(schema, MARKER),
            literal(&nonce)
        );
        let deadline = held + CATCH_UP_TIMEOUT;
        while query_i64(target, &seen).await? == 0 {
            if Instant::now() > deadline {
                txn.rollback().await?;
                return Err(AppError::internal(
                    "the target did not catch up in time; writes were released",
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // No table was added since the copy began (a migration run meanwhile).
        let now_listed: Vec<String> = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = $1 AND table_type = 'BASE TABLE' \
                 AND table_name NOT IN ('seaql_migrations', 'tenant_router_move') ORDER BY 1",
                [schema.into()],
            ))
            .await?
            .iter()
            .map(|r| r.try_get_by_index::<String>(0))
            .collect::<Result<_, _>>()?;
        if now_listed != list {
            txn.rollback().await?;
            return Err(AppError::internal(
                "the tenant's tables changed during the move; run it again",
            ));
        }
        txn.execute_unprepared(&format!(
            "CREATE OR REPLACE FUNCTION {}.{FROZEN}() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION '{}' USING ERRCODE = '25006'; END $$",
            quote_ident(schema),
            db::TENANT_MOVED
        ))
        .await?;
        for table in &all {
            txn.execute_unprepared(&format!(
                "CREATE TRIGGER {FROZEN} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {}.{FROZEN}()",
                quote_ident(schema)
            ))
            .await?;
        }
        txn.execute_unprepared(&format!(
            "COMMENT ON FUNCTION {}.{FROZEN}() IS {}",
            quote_ident(schema),
            literal(&nonce)
        ))
        .await?;
        txn.commit().await?;
        Ok(held.elapsed().as_millis() as u64)
    }
}

/// Lets the source take writes again (a switch that did not happen).
async fn unfreeze(source: &DatabaseConnection, schema: &str, list: &[String]) -> Result<(), DbErr> {
    for table in list {
        source
            .execute_unprepared(&format!(
                "DROP TRIGGER IF EXISTS {FROZEN} ON {}",
                qualified(schema, table)
            ))
            .await?;
    }
    source
        .execute_unprepared(&format!(
            "DROP FUNCTION IF EXISTS {}.{FROZEN}()",
            quote_ident(schema)
        ))
        .await
        .map(|_| ())
}

/// An error as an operator should read it: the detail of an internal error
/// (credentials removed) rather than the client's "internal error".
pub fn describe(e: &AppError) -> String {
    match e {
        AppError::Internal { detail } => crate::secret::redact(detail),
        other => other.to_string(),
    }
}

fn storage_error(e: &DbErr) -> AppError {
    AppError::internal(format!("control database: {}", db::redact_error(e)))
}

/// How long a start-up may spend making one cut-short move's source writable.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a move cut short before its switch says, once a starting replica has
/// released the tenant's writes on its source.
const CUT_SHORT: &str = "cut short before its switch: the tenant's writes were released on its source; run the move again to resume";

impl Lifecycle {
    /// Moves cut short before their switch by the death of their process (a
    /// `kill -9`, a crash): no process holds their lock. Their source may be
    /// frozen (a promotion freezes the file for its whole copy; a move, for the
    /// moment before its switch), which would refuse the tenant's writes until an
    /// operator runs the move again: its writes are released, the tenant stays
    /// on its source, and the record says so. Run at start-up; returns the ids
    /// whose writes were released.
    pub async fn release_cut_short_moves(&self) -> Result<Vec<String>, DbErr> {
        let mut released = Vec::new();
        for record in self.control.moves().await? {
            let id = record.tenant_id.as_str();
            // `released` too: a start-up may have marked it and been cut short
            // before its source was writable again.
            if record.state == "switched" {
                continue;
            }
            // Held by the process running it, if any.
            let Some(_lock) = self.control.lock_move(id).await? else {
                continue;
            };
            // Each bounded: a source that does not answer is left for the next
            // start, and does not hold up the others.
            let outcome = tokio::time::timeout(RELEASE_TIMEOUT, self.release_source(&record))
                .await
                .unwrap_or_else(|_| Err(DbErr::Custom("its source did not answer in time".into())));
            match outcome {
                Ok(true) => {
                    tracing::warn!(tenant_id = %id, "a move cut short before its switch: the tenant's writes were released on its source; run the move again to resume");
                    released.push(record.tenant_id);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(tenant_id = %id, error = %db::redact_error(&e), "a move cut short before its switch: its source could not be made writable")
                }
            }
        }
        Ok(released)
    }

    /// Makes a cut-short move's frozen source writable; whether it was frozen. A
    /// source that is not frozen is left, and so is the record (its last error
    /// stays what it was).
    async fn release_source(
        &self,
        record: &crate::control::moves::MoveRecord,
    ) -> Result<bool, DbErr> {
        let id = record.tenant_id.as_str();
        if record.source_url.expose().starts_with("sqlite") {
            let file = db::prepare_url(record.source_url.expose())?;
            if !super::promote::file_is_frozen(&file).await?
                || !self.control.release_move(id, CUT_SHORT).await?
            {
                return Ok(false);
            }
            super::promote::unfreeze_file(&file).await?;
            return Ok(true);
        }
        let Some(tenant) = self.registry.get(id) else {
            return Ok(false);
        };
        let schema = tenant.schema_name().unwrap_or_else(|| "public".to_string());
        let source = connect(record.source_url.expose()).await?;
        let released = async {
            if !is_frozen(&source, &schema).await?
                || !self.control.release_move(id, CUT_SHORT).await?
            {
                return Ok(false);
            }
            unfreeze(&source, &schema, &tables(&source, &schema).await?).await?;
            Ok(true)
        }
        .await;
        let _ = source.close().await;
        released
    }
}

/// A tenant on [`Lifecycle::running_moves`], taken off when dropped.
struct Listed {
    lifecycle: std::sync::Arc<Lifecycle>,
    id: Option<String>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.lifecycle
                .running_moves
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
    }
}

/// A move checked and recorded, its lock held, ready to run.
struct PreparedMove {
    _lock: crate::control::moves::MoveLock,
    source: TenantConfig,
    target: TenantConfig,
    switched: bool,
    fresh: bool,
}

/// A recorded move, as operators see it (no URL).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoveView {
    pub tenant_id: String,
    pub from: String,
    pub to: String,
    /// `copying` (not switched yet: served from the source), `released` (cut
    /// short when its process died; served from the source, writable again; run
    /// the move again to resume) or `switched` (served from the target; the
    /// source is kept read-only until confirmed).
    pub state: String,
    pub pause_ms: Option<i64>,
    pub error: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The step a move running in this process is at (`None`: none runs here).
    pub running: Option<MoveStep>,
}

impl Lifecycle {
    /// Starts moving `id` to `target` in the background, in this process; follow
    /// it with [`Lifecycle::moves`]. 409 while this process moves it already. What
    /// can be checked before the copy (the tenant, the target, a move on record,
    /// another process moving it) is answered here, not left to the background.
    pub async fn start_move(self: &std::sync::Arc<Self>, id: &str, target: String) -> Result<()> {
        let (tenant, _) = self.move_plan(id, &target)?;
        let id = tenant.id.to_string();
        {
            let mut running = self.running_moves.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&id) {
                return Err(AppError::Conflict(format!(
                    "tenant '{id}' is being moved already"
                )));
            }
            running.insert(id.clone(), MoveStep::Preparing);
        }
        // Taken off the list however this call ends, a dropped request included,
        // or, once handed to the move's task, when that ends.
        let listed = Listed {
            lifecycle: self.clone(),
            id: Some(id.clone()),
        };
        let prepared = self.prepare_move(&id, &target).await?;
        let lifecycle = self.clone();
        tokio::spawn(async move {
            let _listed = listed;
            let progress = |step: MoveStep| {
                tracing::info!(tenant_id = %id, ?step, "move");
                lifecycle
                    .running_moves
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), step);
            };
            // Its error is on the move's record and in the log.
            let _ = lifecycle.run_prepared(prepared, &progress).await;
        });
        Ok(())
    }

    /// Every recorded move.
    pub async fn moves(&self) -> Result<Vec<MoveView>> {
        let records = self.control.moves().await.map_err(|e| storage_error(&e))?;
        let running = self
            .running_moves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(records
            .into_iter()
            .map(|r| MoveView {
                running: running.get(&r.tenant_id).cloned(),
                from: server_of(r.source_url.expose()),
                to: server_of(r.target_url.expose()),
                tenant_id: r.tenant_id,
                state: r.state,
                pause_ms: r.pause_ms,
                error: r.error,

                started_at: r.started_at,
                updated_at: r.updated_at,
            })
            .collect())
    }

    /// After a switch: drops the old storage (read-only since the switch) and
    /// forgets the move.
    pub async fn confirm_move(&self, id: &str) -> Result<()> {
        let _lock = self.hold_move(id).await?;
        self.refresh_now().await.map_err(|e| storage_error(&e))?;
        let tenant = self.existing(id)?;
        let record = self
            .control
            .find_move(id)
            .await
            .map_err(|e| storage_error(&e))?
            .ok_or_else(|| AppError::NotFound(format!("tenant '{id}' is not being moved")))?;
        if record.state != "switched" {
            return Err(AppError::Conflict(format!(
                "the move of '{id}' has not switched yet: run it to the end, or abort it"
            )));
        }
        if tenant.database_url.expose() != record.target_url.expose() {
            return Err(AppError::Conflict(format!(
                "tenant '{id}' is not served from the move's target; nothing is dropped"
            )));
        }
        let mut source = (*tenant).clone();
        source.database_url = record.source_url.clone();
        if !record.source_url.expose().starts_with("sqlite") {
            // What a cut-short clean-up may have left. A confirm cut short after
            // its drop below finds the source database gone: its slot, a
            // server-wide object, is looked for from the server's maintenance
            // database (it went before the drop, which its presence refuses).
            let from = match connect(record.source_url.expose()).await {
                Ok(from) => from,
                Err(e) if db::sql_state(&e).as_deref() == Some("3D000") => {
                    connect(&db::maintenance_url(record.source_url.expose())?).await?
                }
                Err(e) => return Err(e.into()),
            };
            let to = connect_one(record.target_url.expose()).await?;
            drop_replication(&from, &to, &replication_name(&tenant)).await?;
            let _ = from.close().await;
            let _ = to.close().await;
        }
        db::drop_storage(&source, &self.pools).await?;
        if let Some(key) = db::storage_key(&source)? {
            self.control
                .forget_storage(&key)
                .await
                .map_err(|e| storage_error(&e))?;
        }
        self.control
            .finish_move(id)
            .await
            .map_err(|e| storage_error(&e))?;
        tracing::info!(tenant_id = %id, "move confirmed: the old storage was dropped");
        Ok(())
    }

    /// Before a switch: stops the move, the tenant staying on its source (made
    /// writable again if a cut-short switch left it frozen). The target's copy is
    /// kept for the operator to drop.
    pub async fn abort_move(&self, id: &str) -> Result<()> {
        let _lock = self.hold_move(id).await?;
        self.refresh_now().await.map_err(|e| storage_error(&e))?;
        let tenant = self.existing(id)?;
        let record = self
            .control
            .find_move(id)
            .await
            .map_err(|e| storage_error(&e))?
            .ok_or_else(|| AppError::NotFound(format!("tenant '{id}' is not being moved")))?;
        if record.state == "switched" {
            return Err(AppError::Conflict(format!(
                "the move of '{id}' has switched: confirm it instead"
            )));
        }
        if record.source_url.expose().starts_with("sqlite") {
            super::promote::unfreeze_file(&db::prepare_url(record.source_url.expose())?).await?;
            self.control
                .finish_move(id)
                .await
                .map_err(|e| storage_error(&e))?;
            tracing::info!(tenant_id = %id, "promotion aborted: the tenant stays on its file");
            return Ok(());
        }
        let schema = tenant.schema_name().unwrap_or_else(|| "public".to_string());
        let source = connect(record.source_url.expose()).await?;
        let list = tables(&source, &schema).await?;
        unfreeze(&source, &schema, &list).await?;
        match connect(record.target_url.expose()).await {
            Ok(target) => {
                drop_replication(&source, &target, &replication_name(&tenant)).await?;
                let _ = target.close().await;
            }
            Err(e) => {
                tracing::warn!(tenant_id = %id, error = %db::redact_error(&e), "abort: the target does not answer; its subscription is left")
            }
        }
        source
            .execute_unprepared(&format!(
                "DROP TABLE IF EXISTS {}",
                qualified(&schema, MARKER)
            ))
            .await?;
        let _ = source.close().await;
        self.control
            .finish_move(id)
            .await
            .map_err(|e| storage_error(&e))?;
        tracing::info!(tenant_id = %id, "move aborted: the tenant stays on its source");
        Ok(())
    }
}
