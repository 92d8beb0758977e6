//! The command line: `migrate --all` and its dry run, tenant commands, users.

use super::*;

#[test]
fn migrate_all_carries_on_past_a_broken_tenant_and_a_second_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    write_sqlite_tenants(dir.path(), &["t1", "t2", "t3", "t4", "broken"]);
    // A directory where the broken tenant's database file should be.
    std::fs::create_dir(dir.path().join("broken.db")).unwrap();

    let report = dir.path().join("report.json");
    let (code, stdout, stderr) = run(
        dir.path(),
        &["migrate", "--all", "--report", report.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    let rows = report_rows(&report);
    assert_eq!(rows.len(), 5);
    for row in &rows {
        if row["tenant_id"] == "broken" {
            assert_eq!(row["status"], "failed");
            assert!(
                row["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{row}"
            );
        } else {
            assert_eq!(row["status"], "migrated", "{row}");
            assert!(row["before"].is_null());
            assert!(row["after"].as_str().is_some(), "{row}");
        }
    }

    // Repaired, the second run migrates the broken tenant and only checks the rest.
    std::fs::remove_dir(dir.path().join("broken.db")).unwrap();
    let (code, stdout, stderr) = run(
        dir.path(),
        &["migrate", "--all", "--report", report.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    for row in report_rows(&report) {
        let want = if row["tenant_id"] == "broken" {
            "migrated"
        } else {
            "up_to_date"
        };
        assert_eq!(row["status"], want, "{row}");
    }
}

#[test]
fn migrate_dry_run_reports_pending_and_changes_nothing() {
    let dir = dir_with_sqlite_tenant("one");
    let report = dir.path().join("dry.json");
    for _ in 0..2 {
        let (code, _, stderr) = run(
            dir.path(),
            &[
                "migrate",
                "--tenant",
                "one",
                "--dry-run",
                "--report",
                report.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        let rows = report_rows(&report);
        assert_eq!(rows[0]["status"], "pending");
        assert!(!rows[0]["pending"].as_array().unwrap().is_empty());
        assert!(
            !dir.path().join("one.db").exists(),
            "a dry run created the database file"
        );
    }
    let (code, _, stderr) = run(dir.path(), &["migrate", "--tenant", "nobody"]);
    assert_eq!(code, 2, "{stderr}");
}

/// A dry run on PostgreSQL creates no database and no schema, even with
/// `AUTO_CREATE_DATABASES=true`: tenants whose storage is missing have every
/// migration pending.
#[test]
fn a_dry_run_creates_no_postgres_database_or_schema() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::pg::server_url();
    let missing = crate::pg::unique_name("trdry");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shared = rt.block_on(crate::pg::fresh_database("trdryshared"));
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[tenants.dry_db]\ndatabase_url = '{}'\n[tenants.dry_schema]\ndatabase_url = '{shared}'\nisolation = 'schema'\n",
            crate::pg::url_with_database(&server, &missing)
        ),
    )
    .unwrap();
    let report = dir.path().join("dry.json");
    let output = command(dir.path(), &[("AUTO_CREATE_DATABASES", "true")])
        .args(["migrate", "--all", "--dry-run", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{text}");
    for row in report_rows(&report) {
        assert_eq!(row["status"], "pending", "{row}");
    }
    rt.block_on(async {
        use sea_orm::ConnectionTrait;
        let count = |url: String, sql: String| async move {
            let db = crate::pg::connect(&url).await;
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DatabaseBackend::Postgres,
                    sql,
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        };
        let databases = count(
            server.clone(),
            format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{missing}'"),
        )
        .await;
        assert_eq!(databases, 0, "a dry run created the database");
        let schemas = count(
            shared.clone(),
            "SELECT COUNT(*) FROM pg_namespace WHERE nspname = 'tenant_dry_schema'".into(),
        )
        .await;
        assert_eq!(schemas, 0, "a dry run created the schema");
    });
}

/// Single-tenant mode has one tenant, `default`, on DATABASE_URL: `migrate`
/// migrates it (the service answers the same through its admin API).
#[test]
fn migrate_runs_in_single_tenant_mode_on_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/app.db?mode=rwc", dir.path().display());
    let env = [
        ("MULTI_TENANT_ENABLED", "false"),
        ("DATABASE_URL", url.as_str()),
    ];
    let report = dir.path().join("report.json");
    let migrate = |args: &[&str]| {
        let output = command(dir.path(), &env)
            .arg("migrate")
            .args(args)
            .args(["--report", report.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(0), "{text}");
        let rows = report_rows(&report);
        assert_eq!(rows.len(), 1, "{text}");
        assert_eq!(rows[0]["tenant_id"], "default");
        rows[0]["status"].as_str().unwrap().to_string()
    };
    assert_eq!(migrate(&["--all", "--dry-run"]), "pending");
    assert_eq!(migrate(&["--tenant", "default"]), "migrated");
    assert_eq!(migrate(&["--all"]), "up_to_date");
    let output = command(dir.path(), &env)
        .args(["migrate", "--tenant", "nobody"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn tenant_commands_manage_the_control_database() {
    let dir = dir_with_sqlite_tenant("from_file");
    let url = format!("sqlite://{}/cli_made.db", dir.path().display());
    let (code, stdout, stderr) = run(
        dir.path(),
        &[
            "tenants",
            "create",
            "--id",
            "cli_made",
            "--database-url",
            &url,
            "--domain",
            "dental",
            "--seed-demo-data",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains(&url),
        "the database URL was printed: {stdout}"
    );
    assert!(dir.path().join("cli_made.db").exists());

    let (_, list, _) = run(dir.path(), &["tenants", "list"]);
    assert!(
        list.contains("cli_made") && list.contains("from_file"),
        "{list}"
    );
    assert_eq!(run(dir.path(), &["tenants", "suspend", "cli_made"]).0, 0);
    let (_, shown, _) = run(dir.path(), &["tenants", "show", "cli_made"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["is_active"], false);
    assert_eq!(run(dir.path(), &["tenants", "activate", "cli_made"]).0, 0);
    let (code, _, stderr) = run(dir.path(), &["tenants", "delete", "from_file"]);
    assert_eq!(code, 2, "a file tenant is not deleted here: {stderr}");
    assert_eq!(
        run(
            dir.path(),
            &["tenants", "delete", "cli_made", "--drop-database"]
        )
        .0,
        0
    );
    assert!(!dir.path().join("cli_made.db").exists());
    let (_, list, _) = run(dir.path(), &["tenants", "list"]);
    assert!(!list.contains("cli_made"), "{list}");
}

#[test]
fn the_cli_gives_a_new_tenant_its_owner_and_a_file_tenant_its_users() {
    let dir = dir_with_sqlite_tenant("from_file");
    let url = format!("sqlite://{}/cli_owned.db", dir.path().display());
    let create = [
        "tenants",
        "create",
        "--id",
        "cli_owned",
        "--database-url",
        &url,
        "--owner",
        "boss",
    ];
    // The password comes from the environment (or standard input), never an argument.
    let (code, out) = run_with(
        dir.path(),
        &[("TENANT_USER_PASSWORD", "cli-owner-password")],
        &create,
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("cli-owner-password"), "{out}");
    let add = [
        "tenants",
        "add-user",
        "from_file",
        "--username",
        "clerk",
        "--role",
        "manager",
    ];
    let (code, out) = run_with(dir.path(), &[], &add, "clerk-password-1\n");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_with(dir.path(), &[], &add, "clerk-password-1\n");
    assert_eq!(code, 2, "a second user of that name is refused: {out}");
    let (code, out) = run_with(
        dir.path(),
        &[],
        &["tenants", "add-user", "from_file", "--username", "weak"],
        "short\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("password"), "{out}");

    let mut server = Server::start(command(
        dir.path(),
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", "cli-test-jwt-secret-0123456789abcdef"),
        ],
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        for (tenant, user, password, role) in [
            ("cli_owned", "boss", "cli-owner-password", "owner"),
            ("from_file", "clerk", "clerk-password-1", "manager"),
        ] {
            let response = client
                .post(format!("{}/api/auth/login", server.address))
                .header("X-Tenant-ID", tenant)
                .json(&serde_json::json!({ "username": user, "password": password }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{user}@{tenant}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["role"], role);
        }
    });
    server.stop();
}

#[test]
fn usage_counted_until_shutdown_is_kept_and_the_cli_reports_it() {
    let dir = dir_with_sqlite_tenant("t1");
    // No flush but the one at shutdown.
    let mut server = Server::start(command(dir.path(), &[("USAGE_FLUSH_SECS", "3600")]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        for n in 0..3 {
            let created = client
                .post(format!("{}/api/products", server.address))
                .header("X-Tenant-ID", "t1")
                .json(&serde_json::json!({ "name": format!("p{n}"), "price": 1.0 }))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
        }
        let listed = client
            .get(format!("{}/api/products", server.address))
            .header("X-Tenant-ID", "t1")
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
    });
    assert!(server.stop(), "{}", server.log());

    let (code, stdout, stderr) = run(dir.path(), &["tenants", "usage", "t1", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["total"]["requests"], 4, "{report}");
    assert_eq!(report["total"]["writes"], 3, "{report}");
    assert_eq!(report["total"]["rows_written"], 3, "{report}");
    assert!(
        report["total"]["storage_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );

    let (code, table, _) = run(dir.path(), &["tenants", "usage", "t1"]);
    assert_eq!(code, 0);
    let total = table.lines().find(|l| l.starts_with("total")).unwrap();
    let columns: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(columns[1..4], ["4", "3", "3"], "{table}");

    let (code, _, stderr) = run(dir.path(), &["tenants", "usage", "t1", "--from", "soon"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("YYYY-MM-DD"), "{stderr}");
    let (code, _, stderr) = run(dir.path(), &["tenants", "usage", "nobody"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("nobody"), "{stderr}");
}
