//! Loading the tenants of `tenants.toml` and the `TENANT_CONFIGS` environment
//! variable (a JSON object of the same shape; its entries replace the file's with
//! the same id), each entry validated by [`crate::tenant::parse_tenant_entry`]'s
//! rules, all errors reported at once.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::tenant::{
    ConfigError, RawTenant, TenantConfig, TenantId, TenantSource, check_tenant_database_url,
    path_error, shared_storage_error, validate_entries,
};

/// Parses the text of a tenants file: a `[tenants.<id>]` table per tenant.
pub fn parse_tenants_toml(text: &str) -> Result<Vec<TenantConfig>, Vec<ConfigError>> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| {
        vec![ConfigError::new(
            None,
            "tenants",
            toml_syntax_error(text, &e),
        )]
    })?;
    if let Some(key) = doc.keys().find(|k| k.as_str() != "tenants") {
        return Err(vec![ConfigError::new(
            None,
            key.as_str(),
            "unknown top-level key (tenants go under [tenants.<id>])",
        )]);
    }
    let Some(tenants) = doc.get("tenants") else {
        return Ok(Vec::new());
    };
    let Some(tenants) = tenants.as_table() else {
        return Err(vec![ConfigError::new(
            None,
            "tenants",
            "must be a table of tenants keyed by id",
        )]);
    };
    validate_entries(
        tenants.iter().map(|(id, value)| {
            let raw = serde_path_to_error::deserialize::<_, RawTenant>(value.clone());
            (id.as_str(), raw.map_err(path_error))
        }),
        TenantSource::File,
    )
}

/// Describes a TOML syntax error by its message and position only: the error's own
/// text quotes the offending line, which may hold a database password.
pub fn toml_syntax_error(text: &str, err: &toml::de::Error) -> String {
    let position = err
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    format!("not valid TOML{position}: {}", err.message())
}

/// Parses `TENANT_CONFIGS`: a JSON object keyed by tenant id, with the file's fields.
pub fn parse_tenants_json(text: &str) -> Result<Vec<TenantConfig>, Vec<ConfigError>> {
    // A key given twice (a tenant, or a field of one) is refused, not "the last
    // wins", as TOML and the admin API refuse it.
    let invalid = |e: String| {
        vec![ConfigError::new(
            None,
            "TENANT_CONFIGS",
            format!("must be a JSON object keyed by tenant id: {e}"),
        )]
    };
    let crate::validate::StrictJson(value) =
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(invalid("not an object".into()));
    };
    validate_entries(
        map.iter().map(|(id, value)| {
            let raw = serde_path_to_error::deserialize::<_, RawTenant>(value);
            (id.as_str(), raw.map_err(path_error))
        }),
        TenantSource::Env,
    )
}

/// Refuses a tenant whose subdomain is one of `ignored` (such as `www`): requests
/// for that label are never identified by subdomain, so the tenant could not be
/// reached that way. Refuses a tenant whose data would be in the control
/// database (whose storage identity is `control`).
pub fn check_against_settings(
    tenants: &[TenantConfig],
    ignored: &[String],
    control: Option<&str>,
) -> Result<(), Vec<ConfigError>> {
    let errors: Vec<ConfigError> = tenants
        .iter()
        .flat_map(|t| {
            [
                ignored_subdomain_error(t, ignored),
                control_database_error(t, control),
            ]
        })
        .flatten()
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The error for one tenant whose subdomain is in `ignored`, if it is.
pub fn ignored_subdomain_error(tenant: &TenantConfig, ignored: &[String]) -> Option<ConfigError> {
    ignored.contains(&tenant.subdomain).then(|| {
        ConfigError::new(
            Some(tenant.id.as_str()),
            "subdomain",
            format!(
                "'{}' is in IGNORED_SUBDOMAINS, so it never names a tenant; choose another",
                tenant.subdomain
            ),
        )
    })
}

/// The error for one tenant whose database is the control database, whose
/// storage identity is `control`: removing the tenant with its database would
/// remove every tenant added at run time.
pub fn control_database_error(tenant: &TenantConfig, control: Option<&str>) -> Option<ConfigError> {
    let control = control?;
    let storage = tenant.storage_identity()?;
    // The same file under another path (a link to it, or to a directory on its
    // way): its tables would be migrated into the control database, and a removal
    // with `drop_database` would delete it.
    let same_file = || {
        let control_file = control.strip_prefix("sqlite:")?;
        Some(sqlite_file_on_disk(tenant)? == std::fs::canonicalize(control_file).ok()?)
    };
    // The database or file itself: a schema tenant in a PostgreSQL control
    // database keeps to its schema, and dropping it drops that schema alone.
    (storage == control || same_file() == Some(true)).then(|| {
        ConfigError::new(
            Some(tenant.id.as_str()),
            "database_url",
            "is the control database (CONTROL_DATABASE_URL): each tenant needs a database of its own",
        )
    })
}

/// Reads the tenants file (if given or present) and `TENANT_CONFIGS`, lets env
/// entries replace file entries with the same id, and checks that no two tenants
/// share a subdomain or a database.
pub fn load_tenants(
    file: Option<&Path>,
    file_required: bool,
    env_json: Option<&str>,
) -> Result<Vec<TenantConfig>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut by_id: HashMap<TenantId, TenantConfig> = HashMap::new();

    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) => match parse_tenants_toml(&text) {
                Ok(list) => by_id.extend(list.into_iter().map(|t| (t.id.clone(), t))),
                Err(mut e) => errors.append(&mut e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file_required => {}
            Err(e) => errors.push(ConfigError::new(
                None,
                "TENANTS_FILE",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }
    if let Some(json) = env_json {
        match parse_tenants_json(json) {
            Ok(list) => by_id.extend(list.into_iter().map(|t| (t.id.clone(), t))),
            Err(mut e) => errors.append(&mut e),
        }
    }

    let mut tenants: Vec<TenantConfig> = by_id.into_values().collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    let mut labels: HashMap<&str, &TenantId> = HashMap::new();
    for t in &tenants {
        if let Some(other) = labels.insert(&t.subdomain, &t.id) {
            errors.push(ConfigError::new(
                Some(t.id.as_str()),
                "subdomain",
                format!(
                    "'{}' is already the subdomain of tenant '{other}'",
                    t.subdomain
                ),
            ));
        }
    }
    for t in &tenants {
        if let Err(message) = check_tenant_database_url(t.database_url.expose()) {
            errors.push(ConfigError::new(
                Some(t.id.as_str()),
                "database_url",
                message,
            ));
        }
    }
    let mut storages: HashMap<String, &TenantId> = HashMap::new();
    for t in &tenants {
        if let Some(key) = t.storage_identity()
            && let Some(other) = storages.insert(key, &t.id)
        {
            errors.push(shared_storage_error(&t.id, other));
        }
    }
    // The same file reached through a symbolic link: an identity says nothing of
    // links, the file system does (for files that exist).
    let mut files: HashMap<PathBuf, (&TenantId, Option<String>)> = HashMap::new();
    for t in &tenants {
        if let Some(file) = sqlite_file_on_disk(t)
            && let Some((other, identity)) = files.insert(file, (&t.id, t.storage_identity()))
            && identity != t.storage_identity()
        {
            errors.push(shared_storage_error(&t.id, other));
        }
    }
    if errors.is_empty() {
        Ok(tenants)
    } else {
        Err(errors)
    }
}

/// The file a SQLite tenant's path leads to, symbolic links followed, if it
/// exists.
pub fn sqlite_file_on_disk(tenant: &TenantConfig) -> Option<PathBuf> {
    std::fs::canonicalize(crate::tenant::sqlite_file_of(tenant.database_url.expose())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Domain, Feature};

    fn one_error(toml: &str) -> ConfigError {
        let errs = parse_tenants_toml(toml).expect_err("should be refused");
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn parses_a_full_entry() {
        let list = parse_tenants_toml(
            r##"
            [tenants.dental_clinic_abc]
            database_url = "sqlite://data/a.db?mode=rwc"
            domain = "dental"
            gst_number = "GST1"
            branding = { company_name = "ABC", primary_color = "#2E86AB" }
            contact_info = { phone = "+91-1", email = "info@abc.com" }
            "##,
        )
        .unwrap();
        let t = &list[0];
        assert_eq!(t.id.as_str(), "dental_clinic_abc");
        assert_eq!(t.subdomain, "dental-clinic-abc");
        assert_eq!(t.domain, Domain::Dental);
        assert!(t.features.contains(Feature::PatientManagement));
        assert!(t.is_active);
        assert_eq!(t.source, TenantSource::File);
    }

    #[test]
    fn names_tenant_and_field_for_each_kind_of_bad_entry() {
        let cases = [
            ("[tenants.Bad]\ndatabase_url='sqlite://x.db'", "Bad", "id"),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\ndomain='retail'",
                "a",
                "domain",
            ),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nfeatures=['teleport']",
                "a",
                "features",
            ),
            (
                "[tenants.a]\ndatabase_url='mysql://u:p@h/db'",
                "a",
                "database_url",
            ),
            ("[tenants.a]\ndomain='dental'", "a", "database_url"),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nbranding={primary_color='blue'}",
                "a",
                "branding.primary_color",
            ),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nis_active='yes'",
                "a",
                "is_active",
            ),
            (
                "[tenants.a]\ndatabase_url='sqlite://x.db'\ncolour='x'",
                "a",
                "colour",
            ),
        ];
        for (text, tenant, field) in cases {
            let e = one_error(text);
            assert_eq!(e.tenant.as_deref(), Some(tenant), "{text}");
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn schema_isolation_needs_postgres_and_a_short_id() {
        let e = one_error("[tenants.a]\ndatabase_url='sqlite://x.db'\nisolation='schema'");
        assert_eq!(e.field, "isolation");
        let e = one_error("[tenants.a]\ndatabase_url='postgres://u:p@h/db'\nisolation='shared'");
        assert_eq!(e.field, "isolation");
        let long = "a".repeat(57);
        let e = one_error(&format!(
            "[tenants.{long}]\ndatabase_url='postgres://u:p@h/db'\nisolation='schema'"
        ));
        assert_eq!(e.field, "isolation");
        let ok = parse_tenants_toml(
            "[tenants.a]\ndatabase_url='postgres://u:p@h/db?sslmode=require'\nisolation='schema'",
        )
        .unwrap();
        assert_eq!(ok[0].schema_name().as_deref(), Some("tenant_a"));
    }

    #[test]
    fn postgres_database_names_must_be_plain() {
        for url in [
            "postgres://u:p@h/",
            "postgres://u:p@h/a%22b",
            "postgres://u:p@h/a;b",
            "postgres:///db",
        ] {
            let e = one_error(&format!("[tenants.a]\ndatabase_url='{url}'"));
            assert_eq!(e.field, "database_url", "{url}");
        }
    }

    #[test]
    fn unsupported_scheme_message_does_not_echo_the_url() {
        let e = one_error("[tenants.a]\ndatabase_url='mysql://user:hunter2@h/db'");
        assert!(e.message.contains("mysql"));
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn a_syntax_error_does_not_quote_the_line() {
        let e = one_error(
            "[tenants.a]\ndatabase_url = \"postgres://u:hunter2@h/db\"\ndatabase_url = \"x\"\n",
        );
        assert!(e.message.contains("line 3"), "{e}");
        assert!(!e.message.contains("hunter2"), "{e}");
        let e = one_error("[tenants.a]\ndatabase_url = \"postgres://u:hunter2@h/db\n");
        assert!(!e.message.contains("hunter2"), "{e}");
    }

    #[test]
    fn explicit_features_replace_the_preset() {
        let list = parse_tenants_toml(
            "[tenants.a]\ndatabase_url='sqlite://x.db'\ndomain='dental'\nfeatures=['bom_management']",
        )
        .unwrap();
        assert!(list[0].features.contains(Feature::BomManagement));
        assert!(!list[0].features.contains(Feature::PatientManagement));
    }

    #[test]
    fn env_entry_replaces_file_entry_with_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(
            &path,
            "[tenants.a]\ndatabase_url='sqlite://a.db'\ndomain='dental'\n",
        )
        .unwrap();
        let env = r#"{"a": {"database_url": "sqlite://b.db", "domain": "manufacturing"},
                      "c": {"database_url": "sqlite://c.db"}}"#;
        let list = load_tenants(Some(&path), true, Some(env)).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].domain, Domain::Manufacturing);
        assert_eq!(list[0].source, TenantSource::Env);
        assert_eq!(list[0].database_url.expose(), "sqlite://b.db");
    }

    #[test]
    fn logo_urls_are_web_addresses_or_paths_and_names_are_plain_text() {
        for (logo, ok) in [
            ("https://cdn.example.com/logo.png", true),
            ("http://example.com/l.png", true),
            ("/assets/branding/a/logo.png", true),
            ("javascript:alert(1)", false),
            ("JavaScript:alert(1)", false),
            ("data:image/png;base64,AAAA", false),
            ("//evil.example/logo.png", false),
            ("/\\evil.example/logo.png", false),
            ("/logo.png\" onerror=\"x", false),
        ] {
            let toml = format!(
                "[tenants.a]\ndatabase_url='sqlite://x.db'\nbranding={{logo_url={logo:?}}}"
            );
            let result = parse_tenants_toml(&toml);
            assert_eq!(result.is_ok(), ok, "{logo}: {result:?}");
            if let Err(errors) = result {
                assert!(
                    errors
                        .iter()
                        .any(|e| e.to_string().contains("branding.logo_url"))
                );
            }
        }
        let markup =
            "[tenants.a]\ndatabase_url='sqlite://x.db'\nbranding={company_name='<b>ABC</b>'}";
        let errors = parse_tenants_toml(markup).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("branding.company_name"))
        );
    }

    #[test]
    fn two_tenants_on_one_database_are_refused_wherever_they_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenants.toml");
        std::fs::write(
            &file,
            "[tenants.a]\ndatabase_url = 'sqlite://data/a.db?mode=rwc'\n\
             [tenants.s1]\ndatabase_url = 'postgres://u:p@db.example:5432/shared'\nisolation = 'schema'\n\
             [tenants.s2]\ndatabase_url = 'postgres://v:q@db.example/shared'\nisolation = 'schema'\n\
             [tenants.whole]\ndatabase_url = 'postgres://u:p@db.example/shared'\n",
        )
        .unwrap();
        // Schema tenants of one database, and a database tenant beside them, differ.
        assert_eq!(load_tenants(Some(&file), true, None).unwrap().len(), 4);
        // The same file spelt another way, from the environment.
        let env = r#"{"b": {"database_url": "sqlite:data/./a.db"}}"#;
        let errs = load_tenants(Some(&file), true, Some(env)).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "database_url");
        assert!(errs[0].message.contains("tenant 'a'"), "{}", errs[0]);
        // Through a `..`.
        let env = r#"{"b": {"database_url": "sqlite://data/../data/a.db"}}"#;
        let errs = load_tenants(Some(&file), true, Some(env)).unwrap_err();
        assert!(errs[0].message.contains("tenant 'a'"), "{errs:?}");
        // Percent-encoded: the driver would decode it, so it is refused outright.
        let env = r#"{"b": {"database_url": "sqlite://data/%61.db"}}"#;
        let errs = load_tenants(Some(&file), true, Some(env)).unwrap_err();
        assert!(errs[0].message.contains("percent-encode"), "{errs:?}");
        // The same database under other credentials.
        let env = r#"{"c": {"database_url": "postgres://x:y@DB.example.:5432/shared"}}"#;
        let errs = load_tenants(Some(&file), true, Some(env)).unwrap_err();
        let text = errs[0].to_string();
        assert!(text.contains("'whole'") && text.contains("'c'"), "{text}");
        assert!(!errs[0].to_string().contains("x:y"), "{}", errs[0]);
        // Under another name, with the driver's parameters that would override
        // the server, database or user the URL names.
        for query in [
            "dbname=shared",
            "host=db.example",
            "hostaddr=10.0.0.1",
            "port=5432",
            "user=x",
            "password=secret-in-query",
        ] {
            let env = format!(
                r#"{{"d": {{"database_url": "postgres://x:y@other.example/other?sslmode=require&{query}"}}}}"#
            );
            let errs = load_tenants(Some(&file), true, Some(&env)).unwrap_err();
            let text = errs[0].to_string();
            assert!(text.contains("query parameter"), "{query}: {text}");
            assert!(!text.contains("secret-in-query"), "{text}");
        }
    }

    #[test]
    fn a_misplaced_value_is_not_quoted_in_the_error() {
        let toml = "[tenants]\nacme = \"postgres://app:LeakPw44@db1.internal/acme\"\n";
        let errs = parse_tenants_toml(toml).unwrap_err();
        let text = format!("{errs:?}");
        assert!(
            !text.contains("LeakPw44") && !text.contains("db1.internal"),
            "{text}"
        );
        assert!(text.contains("invalid type: string, expected"), "{text}");
        let json = r#"{"acme": "postgres://app:LeakPw45@db1.internal/acme",
                       "b": {"database_url": "sqlite://b.db", "isolation": "postgres://u:LeakPw46@h/d"},
                       "c": {"database_url": "sqlite://c.db", "is_active": "postgres://u:Leak\"Pw47@h/d"},
                       "d": {"database_url": "sqlite://d.db", "colour": 1}}"#;
        let errs = parse_tenants_json(json).unwrap_err();
        let text = format!("{errs:?}");
        assert!(!text.contains("LeakPw") && !text.contains("Pw47"), "{text}");
        assert!(
            text.contains("invalid type: string, expected a boolean"),
            "{text}"
        );
        // Field names are the operator's to fix, not secrets.
        assert!(text.contains("`colour`"), "{text}");
    }

    #[test]
    fn a_key_given_twice_in_tenant_configs_is_refused() {
        for json in [
            r#"{"a": {"database_url": "sqlite://a.db", "is_active": false, "is_active": true}}"#,
            r#"{"a": {"database_url": "sqlite://a.db", "branding": {"company_name": "A", "company_name": "B"}}}"#,
            r#"{"b": {"database_url": "sqlite://b1.db"}, "b": {"database_url": "sqlite://b2.db"}}"#,
        ] {
            let errs = parse_tenants_json(json).unwrap_err();
            let text = format!("{errs:?}");
            assert!(text.contains("duplicate field"), "{json}: {text}");
            assert!(!text.contains("b2.db"), "{text}");
        }
        assert_eq!(
            parse_tenants_json(r#"{"a": {"database_url": "sqlite://a.db"}}"#)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_same_file_through_a_symbolic_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/a.db"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("link")).unwrap();
        let env = format!(
            r#"{{"a": {{"database_url": "sqlite://{0}/data/a.db"}},
                 "b": {{"database_url": "sqlite://{0}/link/a.db"}},
                 "c": {{"database_url": "sqlite://{0}/link/c.db"}}}}"#,
            dir.path().display()
        );
        let errs = load_tenants(None, false, Some(&env)).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "database_url");
        assert!(errs[0].to_string().contains("tenant 'a'"), "{}", errs[0]);
    }

    #[test]
    fn a_tenant_on_the_control_database_is_refused() {
        let control = crate::tenant::storage_identity_of("sqlite://data/control.db?mode=rwc", None);
        let pg_control =
            crate::tenant::storage_identity_of("postgres://u:p@db.example/control", None);
        let env = r#"{"a": {"database_url": "sqlite://./data/../data/control.db"},
                      "b": {"database_url": "sqlite://data/b.db"},
                      "c": {"database_url": "postgres://v:q@DB.example:5432/control"},
                      "d": {"database_url": "postgres://v:q@db.example/control", "isolation": "schema"},
                      "e": {"database_url": "postgres://v:q@db.example/control_2"}}"#;
        let tenants = load_tenants(None, false, Some(env)).unwrap();
        let errs = check_against_settings(&tenants, &[], control.as_deref()).unwrap_err();
        let refused: Vec<_> = errs.iter().map(|e| e.tenant.clone().unwrap()).collect();
        assert_eq!(refused, ["a"], "{errs:?}");
        assert_eq!(errs[0].field, "database_url");
        let errs = check_against_settings(&tenants, &[], pg_control.as_deref()).unwrap_err();
        let refused: Vec<_> = errs.iter().map(|e| e.tenant.clone().unwrap()).collect();
        assert_eq!(refused, ["c"], "{errs:?}");
        assert!(check_against_settings(&tenants, &[], None).is_ok());
    }

    #[test]
    fn the_control_database_through_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/control.db"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("dirlink")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("data/control.db"),
            dir.path().join("data/filelink.db"),
        )
        .unwrap();
        let control = crate::tenant::storage_identity_of(
            &format!("sqlite://{}/data/control.db", dir.path().display()),
            None,
        );
        for link in ["dirlink/control.db", "data/filelink.db"] {
            let env = format!(
                r#"{{"a": {{"database_url": "sqlite://{0}/{link}"}},
                     "c": {{"database_url": "sqlite://{0}/dirlink/c.db"}}}}"#,
                dir.path().display()
            );
            let tenants = load_tenants(None, false, Some(&env)).unwrap();
            let errs = check_against_settings(&tenants, &[], control.as_deref()).unwrap_err();
            let refused: Vec<_> = errs.iter().map(|e| e.tenant.clone().unwrap()).collect();
            assert_eq!(refused, ["a"], "{link}: {errs:?}");
        }
    }

    #[test]
    fn duplicate_subdomain_is_refused() {
        let env = r#"{"a_b": {"database_url": "sqlite://1.db"},
                      "x": {"database_url": "sqlite://2.db", "subdomain": "a-b"}}"#;
        let errs = load_tenants(None, false, Some(env)).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "subdomain");
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let missing = Path::new("/nonexistent/tenants.toml");
        assert!(
            load_tenants(Some(missing), false, Some("{}"))
                .unwrap()
                .is_empty()
        );
        let errs = load_tenants(Some(missing), true, None).unwrap_err();
        assert_eq!(errs[0].field, "TENANTS_FILE");
    }
}
