//! Database URLs: SQLite paths and create modes, PostgreSQL database names and the
//! maintenance URL, identifier quoting.

use std::path::Path;

use sea_orm::DbErr;

/// The file of a `sqlite:` URL, unless it is in memory.
pub fn sqlite_path(url: &str) -> Option<String> {
    crate::tenant::sqlite_file_of(url).map(str::to_string)
}

pub(super) fn database_name(url: &str) -> Result<String, DbErr> {
    let parsed = url::Url::parse(url).map_err(|_| DbErr::Custom("invalid database URL".into()))?;
    Ok(parsed.path().trim_start_matches('/').to_string())
}

/// The same server's maintenance database, `postgres`.
pub fn maintenance_url(url: &str) -> Result<String, DbErr> {
    let mut parsed =
        url::Url::parse(url).map_err(|_| DbErr::Custom("invalid database URL".into()))?;
    parsed.set_path("/postgres");
    Ok(parsed.to_string())
}

/// Quotes a PostgreSQL identifier (`"` doubled), for names that were validated but
/// may hold `-`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// For SQLite, asks for the file to be created (`mode=rwc`) unless the URL chose a
/// mode itself; `postgresql://` becomes `postgres://`. Touches no file: see
/// [`make_sqlite_dir`].
pub fn prepare_url(url: &str) -> Result<String, DbErr> {
    if let Some(rest) = url.strip_prefix("postgresql://") {
        return Ok(format!("postgres://{rest}"));
    }
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
    let has_mode = query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mode=")));
    Ok(match (query, has_mode) {
        (_, true) => url.to_string(),
        (Some(_), false) => format!("{url}&mode=rwc"),
        (None, false) => format!("{url}?mode=rwc"),
    })
}

/// Creates the directory of a SQLite URL's file; other URLs need nothing.
pub fn make_sqlite_dir(url: &str) -> Result<(), DbErr> {
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = Path::new(&path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            DbErr::Custom(format!("cannot create the tenant's data directory: {e}"))
        })?;
    }
    Ok(())
}

/// A prepared SQLite URL that opens the file only if it exists (`mode=rwc` becomes
/// `mode=rw`); other URLs unchanged.
pub fn without_create(url: &str) -> String {
    if !url.starts_with("sqlite:") {
        return url.to_string();
    }
    match url.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|kv| if kv == "mode=rwc" { "mode=rw" } else { kv })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => format!("{url}?mode=rw"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode_and_a_directory_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nested/t.db");
        let url = format!("sqlite://{}", db.display());
        assert_eq!(prepare_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(!dir.path().join("nested").exists());
        make_sqlite_dir(&url).unwrap();
        assert!(dir.path().join("nested").is_dir());
        // A storage that exists already is opened, never created.
        assert_eq!(
            without_create(&format!("{url}?mode=rwc")),
            format!("{url}?mode=rw")
        );
        assert_eq!(
            without_create(&format!("{url}?cache=shared&mode=rwc")),
            format!("{url}?cache=shared&mode=rw")
        );
        assert_eq!(without_create(&url), format!("{url}?mode=rw"));
        let ro = format!("sqlite://{}?mode=ro", db.display());
        assert_eq!(prepare_url(&ro).unwrap(), ro);
        let pg = "postgres://u:p@h/db";
        assert_eq!(prepare_url(pg).unwrap(), pg);
        assert_eq!(prepare_url("postgresql://u:p@h/db").unwrap(), pg);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("tenant_acme-mfg"), "\"tenant_acme-mfg\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
