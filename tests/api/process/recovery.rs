//! What an operator sees and does after trouble: unfinished provisionings listed
//! and rolled back with the CLI and the API, and a tenant database that
//! disappears under a running process reported, never recreated empty.

use super::*;

/// Writes an unfinished provisioning of `id` (on `dir/<id>.db`, made by it) into
/// the control database, claimed by `claimer`.
async fn insert_unfinished(dir: &Path, id: &str, claimer: &str) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let file = dir.join(format!("{id}.db"));
    std::fs::write(&file, b"").unwrap();
    let db = tenant_router::db::connect(format!(
        "sqlite://{}",
        dir.join("data").join("control.db").display()
    ))
    .await
    .unwrap();
    let now = chrono::Utc::now();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "INSERT INTO tenant_configs (id, database_url, domain, subdomain, branding, \
         contact_info, is_active, demo, isolation, state, claimed_by, storage, created_at, \
         updated_at) VALUES (?, ?, 'default', ?, '{}', '{}', true, false, 'database', \
         'provisioning', ?, 'new', ?, ?)",
        [
            id.into(),
            format!("sqlite://{}", file.display()).into(),
            id.into(),
            claimer.into(),
            now.into(),
            now.into(),
        ],
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
}

/// Sets `id`'s unfinished provisioning's last step `minutes` back.
async fn age_unfinished(dir: &Path, id: &str, minutes: i64) {
    use sea_orm::ConnectionTrait;
    let db = tenant_router::db::connect(format!(
        "sqlite://{}",
        dir.join("data").join("control.db").display()
    ))
    .await
    .unwrap();
    let then = chrono::Utc::now() - chrono::TimeDelta::minutes(minutes);
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Sqlite,
        "UPDATE tenant_configs SET updated_at = ? WHERE id = ?",
        [then.into(), id.into()],
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
}

#[test]
fn an_operator_sees_unfinished_provisionings_and_rolls_them_back_with_the_cli_and_the_api() {
    let dir = dir_with_sqlite_tenant("demo");
    // A first start creates the control database.
    let mut server = Server::start(command(dir.path(), &[]));
    assert!(server.stop());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // One whose process on this host is gone, one under way on another host.
    rt.block_on(insert_unfinished(
        dir.path(),
        "crashed",
        &format!("{}/4194304/dead", host.trim()),
    ));
    rt.block_on(insert_unfinished(dir.path(), "remote", "elsewhere/1/live"));

    let (code, out, err) = run(dir.path(), &["tenants", "unfinished"]);
    assert_eq!(code, 0, "{err}");
    let line = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap_or("");
    assert!(line("crashed").contains("abandoned"), "{out}");
    assert!(line("remote").contains("under way"), "{out}");
    let (code, _, err) = run(dir.path(), &["tenants", "abandon", "remote"]);
    assert_ne!(
        code, 0,
        "a live provisioning is not rolled back without --force"
    );
    assert!(err.contains("under way"), "{err}");
    let (code, out, err) = run(dir.path(), &["tenants", "abandon", "crashed"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!dir.path().join("crashed.db").exists());

    // Start-up rolls back only what is abandoned: the remote one stays, for the
    // operator to see and, knowing better, to roll back through the API.
    let mut server = Server::start(command(dir.path(), &[]));
    let address = server.address.clone();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let admin = |method: Method, path: &str| {
            client
                .request(method, format!("{address}{path}"))
                .bearer_auth(ADMIN)
        };
        let pending: serde_json::Value = admin(Method::GET, "/api/admin/provisionings")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = pending["provisionings"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{pending}");
        assert_eq!(rows[0]["id"], "remote");
        assert_eq!(rows[0]["abandoned"], false);
        assert_eq!(rows[0]["made_storage"], true);
        let body = serde_json::json!({
            "id": "remote",
            "database_url": format!("sqlite://{}/remote.db", dir.path().display()),
        });
        let taken = admin(Method::POST, "/api/admin/tenants")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(taken.status(), 409);
        let refused = admin(Method::DELETE, "/api/admin/provisionings/remote")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 409);
        let forced = admin(Method::DELETE, "/api/admin/provisionings/remote?force=true")
            .send()
            .await
            .unwrap();
        assert_eq!(forced.status(), 204);
        assert!(!dir.path().join("remote.db").exists());
        let missing = admin(Method::DELETE, "/api/admin/provisionings/remote")
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let created = admin(Method::POST, "/api/admin/tenants")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    });
    assert!(server.stop());
}

/// A provisioning whose process died after this one started (so start-up did not
/// see it) is rolled back when its id is asked for again, even while its process
/// is a zombie that its parent has not reaped yet: the retry is not refused.
#[test]
fn a_provisioning_whose_process_died_is_rolled_back_when_its_id_is_asked_for_again() {
    let dir = dir_with_sqlite_tenant("demo");
    let mut server = Server::start(command(dir.path(), &[]));
    let mut dead = Command::new("true").spawn().unwrap();
    let stat = format!("/proc/{}/stat", dead.id());
    let zombie = (0..1000).any(|_| {
        if std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
        false
    });
    assert!(zombie, "the child never became a zombie");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(insert_unfinished(
        dir.path(),
        "crashed",
        &format!("{}/{}/dead", host.trim(), dead.id()),
    ));
    let created = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/api/admin/tenants", server.address))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({
                "id": "crashed",
                "database_url": format!("sqlite://{}/crashed.db", dir.path().display()),
            }))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(created.status(), 201);
    dead.wait().unwrap();
    // A claim whose process lives (this test) is not rolled back by a request,
    // even once it has been silent past its lease: it may be slow. Nor one of
    // another host's, however long silent: this host cannot see that process,
    // and its lease (not renewed during a step, on that host's clock) is for
    // start-up and operators to judge.
    let live = format!("{}/{}/live", host.trim(), std::process::id());
    for (id, claimer, silent_minutes) in [
        ("slow", live.as_str(), 10),
        ("remotequiet", "elsewhere/1/quiet", 3),
    ] {
        rt.block_on(insert_unfinished(dir.path(), id, claimer));
        rt.block_on(age_unfinished(dir.path(), id, silent_minutes));
        let refused = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}/api/admin/tenants", server.address))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({
                    "id": id,
                    "database_url": format!("sqlite://{}/{id}.db", dir.path().display()),
                }))
                .send()
                .await
                .unwrap()
        });
        assert_eq!(refused.status(), 409, "{id}");
        assert!(
            dir.path().join(format!("{id}.db")).exists(),
            "{id}: its storage was dropped"
        );
    }
    assert!(server.stop());
    assert!(
        server.log().contains("unfinished provisioning rolled back"),
        "{}",
        server.log()
    );
}

#[test]
fn a_vanished_tenant_database_is_reported_not_recreated_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gone_dir");
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[tenants.gone]\ndatabase_url = 'sqlite://{}/gone.db?mode=rwc'\n\
             [tenants.steady]\ndatabase_url = 'sqlite://{}/steady.db'\n",
            data.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let envs = [("BREAKER_COOLDOWN_SECS", "1")];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let request = |address: &str, method: Method, tenant: &str| {
        let request = client
            .request(method.clone(), format!("{address}/api/products"))
            .header("X-Tenant-ID", tenant);
        let request = if method == Method::POST {
            request.json(&serde_json::json!({ "name": "kept", "price": 1.0 }))
        } else {
            request
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let backup = dir.path().join("gone.backup");

    let mut server = Server::start(command(dir.path(), &envs));
    let address = server.address.clone();
    rt.block_on(async {
        for tenant in ["gone", "steady"] {
            assert_eq!(request(&address, Method::POST, tenant).await.0, 201);
        }
        // A copy taken while nothing writes (the file and its write-ahead log): the
        // operator's backup.
        std::fs::create_dir_all(&backup).unwrap();
        for name in ["gone.db", "gone.db-wal"] {
            if data.join(name).exists() {
                std::fs::copy(data.join(name), backup.join(name)).unwrap();
            }
        }
        std::fs::remove_dir_all(&data).unwrap();
        // Writes and reads fail at once, with the service's 503, and make nothing.
        for method in [Method::POST, Method::GET, Method::POST] {
            let (status, body) = request(&address, method, "gone").await;
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("tenant_unavailable"), "{body}");
        }
        // Past the breaker's pause the tenant is tried again, and still refused.
        let past_pause = std::time::Instant::now() + Duration::from_millis(2500);
        while std::time::Instant::now() < past_pause {
            assert_eq!(request(&address, Method::GET, "gone").await.0, 503);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(request(&address, Method::GET, "steady").await.0, 200);
    });
    assert!(!data.exists(), "the vanished database was created again");
    assert!(server.stop());
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("has disappeared") && l.contains("gone") && l.contains("ERROR")),
        "{log}"
    );

    // A restart does not forget: still refused, still nothing made.
    let mut server = Server::start(command(dir.path(), &envs));
    let address = server.address.clone();
    rt.block_on(async {
        assert_eq!(request(&address, Method::GET, "gone").await.0, 503);
        assert!(
            !data.exists(),
            "the vanished database was created on restart"
        );
        // The operator restores the backup: the tenant answers with its data.
        std::fs::create_dir_all(&data).unwrap();
        for entry in std::fs::read_dir(&backup).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let body = loop {
            let (status, body) = request(&address, Method::GET, "gone").await;
            if status == 200 {
                break body;
            }
            assert!(std::time::Instant::now() < deadline, "{status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(body.contains("kept"), "{body}");
    });
    assert!(server.stop());
}
