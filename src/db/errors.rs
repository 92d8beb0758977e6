//! What a database error means: unique violation, busy, a failed or unreachable
//! database (503 for the client), and its text with credentials removed.

use crate::error::{AppError, UnavailableCause};
use crate::secret::redact;

use sea_orm::{DbErr, RuntimeErr};

/// A unique index refused the row (PostgreSQL 23505; SQLite's constraint codes for
/// a unique index or primary key).
pub fn is_unique_violation(err: &DbErr) -> bool {
    sql_state(err).is_some_and(|code| matches!(code.as_str(), "23505" | "2067" | "1555"))
}

/// SQLite's "database is locked" (SQLITE_BUSY, and its extended codes).
pub(super) fn is_sqlite_busy(err: &DbErr) -> bool {
    sql_state(err).is_some_and(|code| code.parse::<i32>().is_ok_and(|c| c & 0xff == 5))
}

/// The SQLSTATE of a database error, if the error came from the server.
pub fn sql_state(err: &DbErr) -> Option<String> {
    sqlx_error(err).and_then(|e| match e {
        sea_orm::sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    })
}

pub(super) fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
        _ => None,
    }
}

/// Whether `err` came from a pool the router itself closed (idle, capacity or budget
/// eviction) while a request still held it: worth a retry, but no sign that the
/// database failed.
pub fn is_pool_closed(err: &DbErr) -> bool {
    matches!(
        err,
        DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
    ) || matches!(sqlx_error(err), Some(sea_orm::sqlx::Error::PoolClosed))
}

/// Whether `err` says for certain that the database failed (unreachable, gone, shut
/// down, broken connection), as opposed to being busy or the pool being closed by
/// the router. Such errors trip the tenant's circuit breaker.
pub fn is_database_failure(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as E;
    if is_pool_closed(err) {
        return false;
    }
    match err {
        DbErr::Conn(_) => true,
        DbErr::Custom(m) => m.contains("timed out"),
        _ => match sqlx_error(err) {
            Some(E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed) => true,
            Some(E::Database(db)) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "3D000"
                    || code == "3F000"
            }),
            _ => false,
        },
    }
}

/// Whether `err` means the tenant's database cannot be used right now (down,
/// unreachable, gone, out of connections, locked), as opposed to a bug or bad data.
/// Such errors are a 503 the client may retry, and feed the tenant's circuit breaker.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as E;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Custom(m) => m.contains("timed out"),
        _ => match sqlx_error(err) {
            Some(
                E::Io(_)
                | E::Tls(_)
                | E::PoolTimedOut
                | E::PoolClosed
                | E::WorkerCrashed
                | E::Protocol(_),
            ) => true,
            Some(E::Database(db)) if db.message().contains(TENANT_MOVED) => true,
            Some(E::Database(db)) => db.code().is_some_and(|code| {
                // 08: connection exception; 57P: operator intervention (shutdown,
                // terminated); 53300: too many connections; 3D000: no such database;
                // 3F000: no such schema (also what a schema tenant's statement that
                // found no table becomes when its schema is gone: see `db::conn`);
                // 25006: read-only (a tenant's old storage,
                // frozen by a move: its new one is being switched to); SQLite 5/6:
                // busy/locked.
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "53300"
                    || code == "3D000"
                    || code == "3F000"
                    || code == "25006"
                    || code == "5"
                    || code == "6"
            }),
            _ => false,
        },
    }
}

/// What a tenant's old storage answers a write once a move has switched it away
/// (its freeze triggers raise it): a 503, retried by the client on the new one.
pub const TENANT_MOVED: &str = "this tenant has moved to another server";

/// Renders a database error with any credentials it may hold removed.
pub fn redact_error(err: &DbErr) -> String {
    redact(&err.to_string())
}

impl UnavailableCause {
    /// What a failed database call tells of the tenant's database.
    fn of(err: &sea_orm::DbErr) -> Self {
        if is_database_failure(err) {
            Self::DatabaseFailed
        } else if matches!(
            err,
            sea_orm::DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)
        ) {
            Self::AcquireTimeout
        } else {
            Self::Router
        }
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        // A database that is down, gone or saturated is the client's to retry, and
        // the tenant's alone: the authenticate middleware reports it to the registry.
        if is_unavailable(&err) {
            tracing::warn!(error = %redact_error(&err), "tenant database unavailable");
            Self::TenantUnavailable {
                retry_after_secs: 1,
                cause: UnavailableCause::of(&err),
            }
        } else if let Some(what) = lost_race(&err) {
            Self::Conflict(what.into())
        } else {
            Self::internal(redact_error(&err))
        }
    }
}

/// A write that met another one at the same moment, and that the client can only
/// retry: a record it refers to was removed between its check and its insert (a
/// foreign key: PostgreSQL 23503, SQLite 787, when `POST /api/data/reset` or a
/// delete ran meanwhile), or two transactions waited on each other (40P01) or could
/// not be serialised (40001). 409, not 500: nothing is wrong with the service.
fn lost_race(err: &DbErr) -> Option<&'static str> {
    match sql_state(err)?.as_str() {
        "23503" | "787" => Some("a record this one refers to was removed at the same time"),
        "40P01" | "40001" => Some("the change met another one at the same time; try again"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_told_apart() {
        use sea_orm::ConnAcquireErr;
        let closed = DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed);
        assert!(
            is_unavailable(&closed) && is_pool_closed(&closed) && !is_database_failure(&closed)
        );
        let timeout = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        assert!(
            is_unavailable(&timeout) && !is_pool_closed(&timeout) && !is_database_failure(&timeout)
        );
        let io = DbErr::Conn(RuntimeErr::Internal("connection refused".into()));
        assert!(is_unavailable(&io) && is_database_failure(&io));
        assert!(!is_unavailable(&DbErr::RecordNotFound("x".into())));
        assert!(!is_unavailable(&DbErr::Custom("constraint failed".into())));
    }
}
