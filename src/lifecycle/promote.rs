//! Promoting a SQLite tenant to PostgreSQL (`tenants move ID --to postgres://…`
//! for a tenant on a SQLite file). SQLite has no change stream, so the copy is
//! made while the tenant's writes are held: the file's write lock is taken
//! (`BEGIN IMMEDIATE` waits for a write in progress), triggers that refuse writes
//! are added to every table, and the lock is released; every row is copied into
//! the migrated PostgreSQL database in one transaction; then the control database
//! switches the tenant's URL. Reads go on throughout; writes are refused (503,
//! retried by clients) for the copy's duration, which grows with the tenant's
//! size. A rerun after a failure or a crash copies again (the target's tables are
//! emptied first) and switches; the file is kept, read-only, until `--confirm`.

use std::time::Instant;

use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement,
    TransactionTrait, Value,
};

use super::{
    Lifecycle,
    moves::{MoveOutcome, MoveStep},
};
use crate::{
    db::{self, quote_ident},
    error::{AppError, Result},
    tenant::TenantConfig,
};

/// The message of the freeze triggers; the router answers 503 to it.
const MOVED: &str = db::TENANT_MOVED;
const TRIGGER_PREFIX: &str = "tenant_router_frozen_";

async fn open_file(url: &str) -> Result<DatabaseConnection, DbErr> {
    // One connection, so that BEGIN IMMEDIATE … COMMIT run on the same one; the
    // file must exist (no create).
    let url = url.replace("mode=rwc", "mode=rw");
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .min_connections(0)
        .sqlx_logging(false);
    crate::db::connect(options).await
}

async fn sqlite_tables(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> 'seaql_migrations' ORDER BY name"
                .to_string(),
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect()
}

async fn is_frozen(db: &DatabaseConnection) -> Result<bool, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE '{TRIGGER_PREFIX}%'"
            ),
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)? > 0)
}

/// Holds writes (the write lock), adds the triggers refusing them, releases.
async fn freeze(db: &DatabaseConnection, tables: &[String]) -> Result<(), DbErr> {
    db.execute_unprepared("BEGIN IMMEDIATE").await?;
    let result = async {
        for table in tables {
            for (suffix, event) in [("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")] {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER IF NOT EXISTS {} BEFORE {event} ON {} BEGIN SELECT RAISE(ABORT, '{MOVED}'); END",
                    quote_ident(&format!("{TRIGGER_PREFIX}{table}_{suffix}")),
                    quote_ident(table)
                ))
                .await?;
            }
        }
        Ok::<_, DbErr>(())
    }
    .await;
    match result {
        Ok(()) => db.execute_unprepared("COMMIT").await.map(|_| ()),
        Err(e) => {
            let _ = db.execute_unprepared("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Removes the triggers (a promotion that did not switch, or was aborted).
pub(super) async fn unfreeze_file(url: &str) -> Result<(), DbErr> {
    let db = open_file(url).await?;
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '{TRIGGER_PREFIX}%'"
            ),
        ))
        .await?;
    for row in rows {
        let name: String = row.try_get_by_index(0)?;
        db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {}", quote_ident(&name)))
            .await?;
    }
    db.close().await
}

/// Whether the file's tables refuse writes (a promotion froze them).
pub(super) async fn file_is_frozen(url: &str) -> Result<bool, DbErr> {
    let db = open_file(url).await?;
    let frozen = is_frozen(&db).await;
    db.close().await?;
    frozen
}

/// The columns of `table` on the target, with the type each value is cast to.
async fn target_columns(
    target: &DatabaseConnection,
    table: &str,
) -> Result<Vec<(String, String)>, DbErr> {
    let rows = target
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT column_name::text, udt_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            [table.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
        .collect()
}

/// A SQLite value (its type and its text, or hex for a blob) as the text
/// PostgreSQL reads for `udt`; an error for a blob in a column of another type.
fn as_text(kind: &str, text: Option<String>, udt: &str) -> Result<Option<String>, DbErr> {
    let Some(text) = text else {
        return Ok(None);
    };
    if kind != "blob" {
        return Ok(Some(text));
    }
    let hex = text.to_lowercase();
    match udt {
        "uuid" if hex.len() == 32 => Ok(Some(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ))),
        "bytea" => Ok(Some(format!("\\x{hex}"))),
        other => Err(DbErr::Custom(format!(
            "a binary value in a column of type {other}: not copied"
        ))),
    }
}

/// The versions in the SQLite file's migration table.
async fn sqlite_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT version FROM seaql_migrations ORDER BY 1".to_string(),
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect()
}

/// The column names of a SQLite table.
async fn sqlite_columns(db: &DatabaseConnection, table: &str) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!(
                "SELECT name FROM pragma_table_info({})",
                super::moves::literal(table)
            ),
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect()
}

/// `tables` ordered so that a table comes after those its foreign keys name
/// (on the target), so that rows can be inserted with the keys checked.
async fn in_key_order(
    target: &DatabaseConnection,
    tables: &[String],
) -> Result<Vec<String>, DbErr> {
    let rows = target
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c \
             JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE c.contype = 'f' AND n.nspname = 'public'"
                .to_string(),
        ))
        .await?;
    let mut edges: Vec<(String, String)> = Vec::new();
    for row in rows {
        let child: String = row.try_get_by_index(0)?;
        let parent: String = row.try_get_by_index(1)?;
        let clean = |s: String| s.trim_matches('"').to_string();
        edges.push((clean(child), clean(parent)));
    }
    let mut ordered: Vec<String> = Vec::new();
    let mut left: Vec<String> = tables.to_vec();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|t| {
                edges.iter().all(|(child, parent)| {
                    child != *t
                        || parent == *t
                        || ordered.contains(parent)
                        || !left.contains(parent)
                })
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(DbErr::Custom(
                "the tables' foreign keys form a cycle".into(),
            ));
        }
        left.retain(|t| !ready.contains(t));
        ordered.extend(ready);
    }
    Ok(ordered)
}

/// Copies every row of `tables` into the (emptied) target, in one transaction.
async fn copy_rows(
    source: &DatabaseConnection,
    target: &DatabaseConnection,
    tables: &[String],
) -> Result<u64, DbErr> {
    let txn = target.begin().await?;
    let all: Vec<String> = tables.iter().map(|t| quote_ident(t)).collect();
    txn.execute_unprepared(&format!("TRUNCATE {} CASCADE", all.join(", ")))
        .await?;
    let mut copied = 0;
    for table in &in_key_order(target, tables).await? {
        let columns = target_columns(target, table).await?;
        if columns.is_empty() {
            return Err(DbErr::Custom(format!(
                "table {table} is missing in PostgreSQL"
            )));
        }
        // Every column of the file has its place in PostgreSQL.
        for column in sqlite_columns(source, table).await? {
            if !columns.iter().any(|(c, _)| *c == column) {
                return Err(DbErr::Custom(format!(
                    "column {table}.{column} is missing in PostgreSQL"
                )));
            }
        }
        let select: Vec<String> = columns
            .iter()
            .map(|(c, _)| {
                let c = quote_ident(c);
                // Reals in full: 17 digits round-trip a double (CAST keeps 15; SQLite's
                // printf keeps 16 without the `!` flag).
                format!(
                    "typeof({c}), CASE typeof({c}) WHEN 'blob' THEN hex({c}) \
                     WHEN 'real' THEN printf('%!.17g', {c}) ELSE CAST({c} AS TEXT) END"
                )
            })
            .collect();
        let rows = source
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                format!("SELECT {} FROM {}", select.join(", "), quote_ident(table)),
            ))
            .await?;
        let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
        let placeholders: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, udt))| format!("${}::{}", i + 1, quote_ident(udt)))
            .collect();
        let insert = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote_ident(table),
            names.join(", "),
            placeholders.join(", ")
        );
        for row in rows {
            let mut values: Vec<Value> = Vec::with_capacity(columns.len());
            for (i, (_, udt)) in columns.iter().enumerate() {
                let kind: String = row.try_get_by_index(2 * i)?;
                let text: Option<String> = row.try_get_by_index(2 * i + 1)?;
                values.push(Value::String(as_text(&kind, text, udt)?));
            }
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                &insert,
                values,
            ))
            .await?;
            copied += 1;
        }
    }
    txn.commit().await?;
    Ok(copied)
}

impl Lifecycle {
    /// The promotion of a SQLite tenant (see the module).
    pub(super) async fn run_promotion(
        &self,
        source_tenant: &TenantConfig,
        target_tenant: &TenantConfig,
        switched: bool,
        fresh: bool,
        progress: &(dyn Fn(MoveStep) + Send + Sync),
    ) -> Result<MoveOutcome> {
        let id = source_tenant.id.as_str();
        let source_url = db::prepare_url(source_tenant.database_url.expose())?;
        let mut pause_ms = 0;
        let mut tables = Vec::new();
        if !switched {
            progress(MoveStep::Preparing);
            db::create_tenant_database(target_tenant, &self.pools).await?;
            let target = super::moves::connect(target_tenant.database_url.expose()).await?;
            let source = open_file(&source_url).await?;
            tables = sqlite_tables(&source).await?;
            let target_migrations = super::moves::migrations(&target, "public").await?;
            if sqlite_migrations(&source).await? != target_migrations {
                return Err(AppError::validation(
                    "id",
                    "the tenant's database is not at the latest migration: migrate it first",
                ));
            }
            if fresh {
                for table in &tables {
                    if super::moves::count_rows(&target, "public", table).await? > 0 {
                        return Err(AppError::validation(
                            "to",
                            "the target already holds data: give an empty database",
                        ));
                    }
                }
            }
            progress(MoveStep::Switching);
            let started = Instant::now();
            if !is_frozen(&source).await? {
                freeze(&source, &tables).await?;
            }
            progress(MoveStep::Copying {
                tables: tables.len(),
            });
            let copied = copy_rows(&source, &target, &tables).await;
            let mut turn = None;
            let switch = match copied {
                Ok(rows) => {
                    tracing::info!(tenant_id = %id, rows, "tenant rows copied to PostgreSQL");
                    // Held until the registry has the switch (see moves).
                    turn = Some(self.refreshing.lock().await);
                    match self
                        .switch(
                            target_tenant,
                            source_tenant.database_url.expose(),
                            started.elapsed().as_millis() as i64,
                        )
                        .await
                    {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(AppError::internal(
                            "the switch failed; the tenant stays on its file",
                        )),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(AppError::internal(db::redact_error(&e))),
            };
            let _ = source.close().await;
            let _ = target.close().await;
            if let Err(e) = switch {
                // Not switched: the file takes writes again.
                drop(turn);
                unfreeze_file(&source_url).await?;
                return Err(e);
            }
            pause_ms = started.elapsed().as_millis() as u64;
            self.registry.upsert(target_tenant.clone()).await;
            drop(turn);
            tracing::info!(tenant_id = %id, pause_ms, "tenant promoted from SQLite to PostgreSQL");
            progress(MoveStep::Switched { pause_ms });
        }
        progress(MoveStep::Cleaned);
        Ok(MoveOutcome {
            tenant_id: id.to_string(),
            from: "sqlite".into(),
            to: super::moves::server_of(target_tenant.database_url.expose()),
            tables: tables.len(),
            pause_ms,
            source_kept: true,
        })
    }
}
