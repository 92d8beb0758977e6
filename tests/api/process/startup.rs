//! Starting and stopping: bad configuration refused naming tenant and field,
//! production's requirements, SIGTERM and SIGHUP.

use super::*;

#[test]
fn each_kind_of_invalid_entry_stops_start_up_naming_tenant_and_field() {
    let cases = [
        (
            "[tenants.Bad_Id]\ndatabase_url = 'sqlite://a.db'",
            "Bad_Id",
            "id",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://a.db'\ndomain = 'retail'",
            "a",
            "domain",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://a.db'\nfeatures = ['teleport']",
            "a",
            "features",
        ),
        (
            "[tenants.a]\ndatabase_url = 'mysql://u:Pw0rdX@h/db'",
            "a",
            "database_url",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://a.db'\nbranding = { primary_color = 'red' }",
            "a",
            "branding.primary_color",
        ),
        (
            "[tenants.a_b]\ndatabase_url = 'sqlite://a.db'\n[tenants.c]\ndatabase_url = 'sqlite://c.db'\nsubdomain = 'a-b'",
            "c",
            "subdomain",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://data/a.db?mode=rwc'\n[tenants.b]\ndatabase_url = 'sqlite:data/./a.db'",
            "b",
            "database_url",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://data/a.db?mode=rwc'\n[tenants.b]\ndatabase_url = 'sqlite://data/../data/a.db'",
            "b",
            "database_url",
        ),
        // A URL where a table belongs: the message must not quote it.
        ("[tenants]\na = 'postgres://u:Pw0rdX@h/db'", "a", "entry"),
        (
            "[tenants.a]\ndatabase_url = 'postgres://u:p@h/db?password=Pw0rdX'",
            "a",
            "database_url",
        ),
    ];
    for (toml, tenant, field) in cases {
        let stderr = refused_start(toml);
        let expected = format!("tenant '{tenant}': field '{field}'");
        assert!(
            stderr.contains(&expected),
            "want {expected:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("Pw0rdX"), "password leaked:\n{stderr}");
    }
}

#[test]
fn a_missing_tenants_file_is_refused_unless_tenant_configs_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TENANTS_FILE"));

    let json = format!(
        r#"{{"solo": {{"database_url": "sqlite://{}/solo.db"}}}}"#,
        dir.path().display()
    );
    let mut server = Server::start(command(dir.path(), &[("TENANT_CONFIGS", &json)]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/products", server.address))
            .header("X-Tenant-ID", "solo")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    server.stop();
}

#[test]
fn sigterm_closes_the_server_cleanly() {
    let dir = dir_with_sqlite_tenant("demo");
    let mut server = Server::start(command(dir.path(), &[]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/products", server.address))
            .header("X-Tenant-ID", "demo")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    assert!(server.stop());
    assert!(
        server.log().contains("tenant pool closed"),
        "{}",
        server.log()
    );
}

/// The status of `GET /api/products` for `tenant`.
async fn products_status(client: &reqwest::Client, address: &str, tenant: &str) -> u16 {
    client
        .get(format!("{address}/api/products"))
        .header("X-Tenant-ID", tenant)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits for `tenant` to be served, as it is once a reload that adds it is done.
async fn served_soon(client: &reqwest::Client, address: &str, tenant: &str) {
    for _ in 0..100 {
        if products_status(client, address, tenant).await == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{tenant} never served after SIGHUP");
}

#[test]
fn sighup_reloads_the_tenants_file_under_load_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let entry = |id: &str| {
        format!(
            "[tenants.{id}]\ndatabase_url = 'sqlite://{}/{id}.db'\n",
            dir.path().display()
        )
    };
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, entry("demo")).unwrap();
    let mut server = Server::start(command(dir.path(), &[]));
    let pid = server.child.id().to_string();
    let hangup = || {
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let address = server.address.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (client, address, stop) = (client.clone(), address.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = client
                        .get(format!("{address}/api/products"))
                        .header("X-Tenant-ID", "demo")
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    if status.as_ref().is_ok_and(|s| *s == 200) {
                        ok += 1
                    } else {
                        failed += 1
                    }
                }
                (ok, failed)
            })
        };
        assert_eq!(products_status(&client, &address, "extra").await, 404);

        // A new tenant in the file is served after SIGHUP, with no restart.
        std::fs::write(&file, format!("{}{}", entry("demo"), entry("extra"))).unwrap();
        hangup();
        served_soon(&client, &address, "extra").await;

        // An invalid file is refused and the old tenants stay.
        std::fs::write(
            &file,
            format!(
                "{}[tenants.broken]\ndatabase_url = 'sqlite://x.db'\ndomain = 'retail'\n",
                entry("demo")
            ),
        )
        .unwrap();
        hangup();
        assert!(server.wait_for_log("reload refused"), "{}", server.log());
        assert_eq!(
            products_status(&client, &address, "extra").await,
            200,
            "an invalid reload dropped a tenant"
        );

        // A file caught empty while it is rewritten in place is no reason to
        // drop every tenant: refused too.
        std::fs::write(&file, "").unwrap();
        hangup();
        assert!(server.wait_for_log("holds no tenant"), "{}", server.log());
        assert_eq!(products_status(&client, &address, "demo").await, 200);

        // More reloads while the load runs.
        std::fs::write(&file, format!("{}{}", entry("demo"), entry("extra"))).unwrap();
        for _ in 0..5 {
            hangup();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load.await.unwrap();
        assert!(ok > 0);
        assert_eq!(failed, 0, "requests lost during reloads");
    });
    assert!(server.stop());
    let log = server.log();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("tenant 'broken': field 'domain'"), "{log}");
}

#[test]
fn a_reload_or_a_start_that_would_hide_a_tenant_added_at_run_time_is_refused() {
    let dir = dir_with_sqlite_tenant("demo");
    let file = dir.path().join("tenants.toml");
    let demo_entry = std::fs::read_to_string(&file).unwrap();
    let mut server = Server::start(command(dir.path(), &[]));
    let address = server.address.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    rt.block_on(async {
        let provisioned = client
            .post(format!("{address}/api/admin/tenants"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({
                "id": "added",
                "database_url": format!("sqlite://{}/added.db", dir.path().display()),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(provisioned.status(), 201);
        let made = client
            .post(format!("{address}/api/products"))
            .header("X-Tenant-ID", "added")
            .json(&serde_json::json!({ "name": "added's own", "price": 1.0 }))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 201);
    });
    // The file gains a tenant on that database, spelt another way.
    let with_intruder = format!(
        "{demo_entry}[tenants.intruder]\ndatabase_url = 'sqlite://{}/./added.db'\n",
        dir.path().display()
    );
    std::fs::write(&file, &with_intruder).unwrap();
    let pid = server.child.id().to_string();
    let hangup = || {
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
    };
    hangup();
    assert!(
        server.wait_for_log("reload refused"),
        "no refusal logged:\n{}",
        server.log()
    );
    // Then one on that database reached through a symbolic link to its directory.
    let linked = dir.path().join("linked");
    std::os::unix::fs::symlink(dir.path(), &linked).unwrap();
    let with_link = format!(
        "{demo_entry}[tenants.linked]\ndatabase_url = 'sqlite://{}/added.db'\n",
        linked.display()
    );
    std::fs::write(&file, &with_link).unwrap();
    hangup();
    assert!(
        server.wait_for_log("tenant 'linked': field 'database_url'"),
        "no refusal of the linked entry logged:\n{}",
        server.log()
    );
    // Then a file that is fine, with one more tenant, served once reloaded.
    let extra = format!(
        "[tenants.extra]\ndatabase_url = 'sqlite://{}/extra.db'\n",
        dir.path().display()
    );
    std::fs::write(&file, format!("{demo_entry}{extra}")).unwrap();
    hangup();
    rt.block_on(served_soon(&client, &address, "extra"));
    rt.block_on(async {
        assert_eq!(products_status(&client, &address, "added").await, 200);
        assert_eq!(products_status(&client, &address, "intruder").await, 404);
        assert_eq!(products_status(&client, &address, "linked").await, 404);
        let listed = client
            .get(format!("{address}/api/products"))
            .header("X-Tenant-ID", "added")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(listed.contains("added's own"), "{listed}");
    });
    assert!(server.stop());
    let log = server.log();
    assert!(log.contains("reload refused"), "{log}");
    assert!(
        log.contains("tenant 'intruder': field 'database_url'"),
        "{log}"
    );
    // Started with either file, the service refuses, naming the entry.
    for (contents, entry) in [(with_intruder, "intruder"), (with_link, "linked")] {
        std::fs::write(&file, contents).unwrap();
        let output = command(dir.path(), &[]).output().unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("tenant '{entry}': field 'database_url'"))
                && stderr.contains("'added'"),
            "{stderr}"
        );
    }
}

#[test]
fn a_reload_is_refused_while_a_tenant_on_that_database_is_being_provisioned() {
    let dir = dir_with_sqlite_tenant("demo");
    let file = dir.path().join("tenants.toml");
    let demo_entry = std::fs::read_to_string(&file).unwrap();
    let key = crate::helpers::TEST_SECRET_KEY;
    let mut server = Server::start(command(dir.path(), &[("SECRET_KEY", key)]));
    let pending_db = format!("sqlite://{}/pending.db", dir.path().display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A provisioning under way elsewhere: its claim is in the control database,
    // its tenant not yet ready.
    rt.block_on(async {
        let secrets = tenant_router::secret::SecretBox::from_hex(key, None).unwrap();
        let control = tenant_router::control::ControlStore::open(
            &format!("sqlite://{}/data/control.db", dir.path().display()),
            Arc::new(secrets),
        )
        .await
        .unwrap();
        let config = tenant_router::tenant::parse_tenant_entry(
            "pending",
            &serde_json::json!({ "database_url": pending_db }),
            tenant_router::tenant::TenantSource::Control,
        )
        .unwrap();
        let claim = control.claim(&config, "elsewhere/1/0000").await.unwrap();
        assert!(matches!(claim, tenant_router::control::Claim::Claimed));
    });
    std::fs::write(
        &file,
        format!("{demo_entry}[tenants.intruder]\ndatabase_url = '{pending_db}'\n"),
    )
    .unwrap();
    let hangup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    assert!(
        server.wait_for_log("reload refused"),
        "no refusal logged:\n{}",
        server.log()
    );
    let client = reqwest::Client::new();
    let status = rt.block_on(products_status(&client, &server.address, "intruder"));
    assert_eq!(status, 404);
    assert!(server.stop());
    assert!(
        server
            .log()
            .contains("tenant 'intruder': field 'database_url'"),
        "{}",
        server.log()
    );
}

#[test]
fn production_refuses_to_start_without_a_jwt_secret_and_auth_mode_none_warns() {
    let dir = dir_with_sqlite_tenant("a");
    let output = command(
        dir.path(),
        &[("APP_ENV", "production"), ("AUTH_MODE", "jwt")],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");

    let mut server = Server::start(command(dir.path(), &[("AUTH_MODE", "none")]));
    assert!(server.stop());
    let log = server.log();
    assert!(
        log.contains("WARN") && log.contains("AUTH_MODE=none"),
        "AUTH_MODE=none should warn at start-up:\n{log}"
    );
}

/// Settings out of their range stop start-up with code 2 and a line naming the
/// variable: before, a huge throttle window or idle time panicked inside the
/// cache library (code 101), an invalid LOG_LEVEL was ignored, and a HOST that
/// cannot be listened on failed without naming it.
#[test]
fn out_of_range_settings_stop_start_up_naming_the_variable() {
    let dir = dir_with_sqlite_tenant("demo");
    for (name, value) in [
        ("LOGIN_THROTTLE_SECS", "40000000000"),
        ("POOL_IDLE_TIMEOUT_SECS", "99999999999999"),
        ("LOG_LEVEL", "[[["),
        ("HOST", "notanip"),
    ] {
        let output = command(dir.path(), &[(name, value)]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
}

/// A control database whose server refuses connections stops start-up at once,
/// saying so (and not its password): the driver used to retry in silence for
/// 30 s.
#[test]
fn a_control_database_that_refuses_connections_stops_start_up_at_once() {
    let dir = dir_with_sqlite_tenant("demo");
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://router:CtlPassS3cret@127.0.0.1:{port}/control");
    let output = command(dir.path(), &[("CONTROL_DATABASE_URL", &url)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(!stderr.contains("CtlPassS3cret"), "{stderr}");
}

/// The shipped unit reloads with SIGHUP; a single-tenant service, which has no
/// tenants to reload, ignores it instead of dying of it; and it says which
/// settings it cannot keep.
#[test]
fn a_single_tenant_service_outlives_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/app.db", dir.path().display());
    let mut server = Server::start(command(
        dir.path(),
        &[
            ("MULTI_TENANT_ENABLED", "false"),
            ("DATABASE_URL", &database),
            ("TENANT_STORAGE_QUOTA_BYTES", "1"),
        ],
    ));
    // A quota it cannot keep (usage is metered in the control database) is named.
    assert!(
        server.wait_for_log("TENANT_STORAGE_QUOTA_BYTES has no effect"),
        "{}",
        server.log()
    );
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(status.success());
    assert!(server.wait_for_log("SIGHUP ignored"), "{}", server.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answered = rt.block_on(async {
        reqwest::get(format!("{}/api/products", server.address))
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(answered.ok(), Some(200), "{}", server.log());
    assert!(server.stop(), "{}", server.log());
}
