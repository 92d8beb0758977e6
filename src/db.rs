//! Opening a tenant database: URL preparation, pool options, migrations, and the
//! scrubbing of credentials from any database error before it is logged.

use std::path::Path;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::settings::PoolSettings;

/// Opens a pool on `url` with at most `max_connections`, and applies pending
/// migrations when the settings say so. A SQLite file that does not exist yet is
/// created, with its directory.
pub async fn open_pool(
    url: &str,
    max_connections: u32,
    settings: &PoolSettings,
) -> Result<DatabaseConnection, DbErr> {
    let url = prepare_url(url)?;
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.acquire_timeout)
        // Connections idle for long are returned even while the pool stays open.
        .idle_timeout(settings.idle_timeout)
        // Statement logging would put tenant data in the log.
        .sqlx_logging(false)
        // A ping before every checkout costs a round trip per request; ping only a
        // connection that sat idle long enough to have been dropped by a server.
        .test_before_acquire_if_idle_for(std::time::Duration::from_secs(30))
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(5))
                .foreign_keys(true)
        });
    let db = Database::connect(options).await?;
    if settings.auto_migrate {
        Migrator::up(&db, None).await?;
    }
    Ok(db)
}

/// For SQLite, creates the parent directory and asks for the file to be created
/// (`mode=rwc`) unless the URL chose a mode itself.
fn prepare_url(url: &str) -> Result<String, DbErr> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(url.to_string());
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(url.to_string());
    }
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            DbErr::Custom(format!("cannot create the tenant's data directory: {e}"))
        })?;
    }
    let has_mode = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mode=")));
    Ok(match (query, has_mode) {
        (_, true) => url.to_string(),
        (Some(_), false) => format!("{url}&mode=rwc"),
        (None, false) => format!("{url}?mode=rwc"),
    })
}

/// Renders a database error with any credentials it may hold removed.
pub fn redact_error(err: &DbErr) -> String {
    redact(&err.to_string())
}

/// Removes the user-info part of every `scheme://user:password@host` and the value
/// of every `password=` pair from `text`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\''
            })
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    redact_password_pairs(&out)
}

fn redact_password_pairs(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search_from = 0;
    while let Some(found) = lower[search_from..].find("password=") {
        let value_start = search_from + found + "password=".len();
        let value_end = text[value_start..]
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
            .map_or(text.len(), |n| value_start + n);
        out.push_str(&text[last..value_start]);
        out.push_str("***");
        last = value_end;
        search_from = value_end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_user_info_and_password_pairs() {
        let text = "error connecting to postgres://app:hunter2@db.internal:5432/t1?sslmode=require \
                    (host=db password=hunter3 user=app)";
        let clean = redact(text);
        assert!(!clean.contains("hunter2"), "{clean}");
        assert!(!clean.contains("hunter3"), "{clean}");
        assert!(
            clean.contains("postgres://***@db.internal:5432/t1"),
            "{clean}"
        );
    }

    #[test]
    fn redact_leaves_plain_text_alone() {
        assert_eq!(redact("no such table: products"), "no such table: products");
        assert_eq!(redact("sqlite://data/a.db"), "sqlite://data/a.db");
    }

    #[test]
    fn sqlite_urls_get_create_mode_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nested/t.db");
        let url = format!("sqlite://{}", db.display());
        assert_eq!(prepare_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.path().join("nested").is_dir());
        let ro = format!("sqlite://{}?mode=ro", db.display());
        assert_eq!(prepare_url(&ro).unwrap(), ro);
        let pg = "postgres://u:p@h/db";
        assert_eq!(prepare_url(pg).unwrap(), pg);
    }
}
