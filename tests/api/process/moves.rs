//! `tenants move`: a PostgreSQL tenant moved to another server while three
//! replicas serve it and a writer keeps inserting through all of them; and the
//! move killed with SIGKILL at several points, then run again.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};

use super::command;
use crate::{
    helpers::{AppSpec, TEST_SECRET_KEY, TestApp, spawn_app_with},
    pg::{self, PgCluster},
};

/// What the writer saw: the names of the products each replica acknowledged
/// (2xx), the refused attempts, and the longest stretch without an acknowledged
/// write while it kept trying.
#[derive(Default)]
struct Writes {
    acknowledged: Vec<String>,
    refused: usize,
    longest_gap: Duration,
}

/// Inserts products through the replicas in turn, one at a time, until `stop`
/// or `limit` writes; a refused write is tried again (under a new name) at once.
async fn writer(
    apps: Vec<String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    limit: usize,
) -> Writes {
    writer_of("moving".into(), apps, stop, limit).await
}

async fn writer_of(
    tenant: String,
    apps: Vec<String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    limit: usize,
) -> Writes {
    let client = reqwest::Client::new();
    let mut writes = Writes::default();
    let mut last_ok = Instant::now();
    let started = Instant::now();
    for i in 0..limit {
        if stop.load(std::sync::atomic::Ordering::Relaxed)
            || started.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        let name = format!("w{i:05}");
        let app = &apps[i % apps.len()];
        let response = client
            .post(format!("{app}/api/products"))
            .header("X-Tenant-ID", &tenant)
            .json(&json!({ "name": name, "price": 1.0 }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                writes.acknowledged.push(name);
                writes.longest_gap = writes.longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
            }
            _ => writes.refused += 1,
        }
        // A steady writer, not a flood: the suite runs other tests beside it on
        // two cores.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writes
}

fn control_env(control: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("CONTROL_DATABASE_URL", control),
        ("SECRET_KEY", TEST_SECRET_KEY),
        ("MULTI_TENANT_ENABLED", "true"),
        ("AUTO_CREATE_DATABASES", "true"),
    ]
}

fn run_move(dir: &Path, control: &str, args: &[&str]) -> (i32, String, String) {
    run_move_of("moving", dir, control, args)
}

fn run_move_of(id: &str, dir: &Path, control: &str, args: &[&str]) -> (i32, String, String) {
    let output = command(dir, &control_env(control))
        .args(["tenants", "move", id])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `tenants move moving ARGS` for `s`, on a blocking thread (the test's runtime
/// goes on serving its replicas meanwhile); it must exit 0. What it printed.
async fn run_move_to_the_end(s: &Setup, args: &[&str]) -> (String, String) {
    let (dir, control) = (s.dir.path().to_path_buf(), s.control.clone());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_move(&dir, &control, &args)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    (stdout, stderr)
}

async fn product_names(url: &str) -> Vec<String> {
    product_names_in(url, "public").await
}

async fn product_names_in(url: &str, schema: &str) -> Vec<String> {
    use sea_orm::ConnectionTrait;
    let db = pg::connect(url).await;
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!("SELECT name FROM \"{schema}\".products ORDER BY name"),
        ))
        .await
        .unwrap();
    db.close().await.unwrap();
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// `GET /api/admin/moves` of `app`.
async fn moves_of(app: &TestApp) -> Value {
    app.admin(Method::GET, "/api/admin/moves")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

struct Setup {
    source_server: PgCluster,
    target_server: PgCluster,
    control: String,
    source: String,
    target: String,
    apps: Vec<TestApp>,
    dir: tempfile::TempDir,
}

async fn setup(replicas: usize) -> Setup {
    setup_with(replicas, false).await
}

/// Two servers, a control database on the first, `replicas` replicas, and the
/// tenant `moving` on the first server: its own database, or (`schema`) schema
/// `tenant_moving` of a shared database `shared` there. The target is the same
/// kind of place on the second server.
async fn setup_with(replicas: usize, schema: bool) -> Setup {
    let source_server = PgCluster::start(100);
    let target_server = PgCluster::start(100);
    pg::admin_execute(&source_server.url, "CREATE DATABASE control").await;
    let control = pg::url_with_database(&source_server.url, "control");
    let database = if schema { "shared" } else { "t_moving" };
    if schema {
        pg::admin_execute(&source_server.url, "CREATE DATABASE shared").await;
        pg::admin_execute(&target_server.url, "CREATE DATABASE shared").await;
    }
    let source = pg::url_with_database(&source_server.url, database);
    let target = pg::url_with_database(&target_server.url, database);
    let mut apps = Vec::new();
    for _ in 0..replicas {
        apps.push(
            spawn_app_with(
                AppSpec::from_toml("")
                    .env("CONTROL_DATABASE_URL", &control)
                    .env("AUTO_CREATE_DATABASES", "true"),
            )
            .await,
        );
    }
    let response = apps[0]
        .admin(Method::POST, "/api/admin/tenants")
        .json(&json!({
            "id": "moving",
            "domain": "dental",
            "database_url": source,
            "isolation": if schema { "schema" } else { "database" },
            "seed_demo_data": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.toml"), "").unwrap();
    Setup {
        source_server,
        target_server,
        control,
        source,
        target,
        apps,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_moves_to_another_server_while_a_writer_keeps_writing_through_three_replicas() {
    let _heavy = crate::helpers::heavy_test().await;
    let s = setup(3).await;
    let before = product_names(&s.source).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addresses: Vec<String> = s.apps.iter().map(|a| a.address.clone()).collect();
    let writing = tokio::spawn(writer(addresses, stop.clone(), 5000));
    // Some writes land before the move starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (stdout, stderr) = run_move_to_the_end(&s, &["--to", &s.target]).await;
    assert!(
        !stdout.contains("postgres://") && !stderr.contains("cluster-pw"),
        "{stdout}{stderr}"
    );
    let outcome: Value = serde_json::from_str(&stdout).unwrap();
    // Writes go on after the switch, on the target.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writing.await.unwrap();

    let on_target = product_names(&s.target).await;
    let mut seen = std::collections::HashSet::new();
    for name in &on_target {
        assert!(seen.insert(name), "{name} is on the target twice");
    }
    for name in before.iter().chain(&writes.acknowledged) {
        assert!(
            seen.contains(name),
            "{name} was acknowledged but is not on the target"
        );
    }
    // Every replica serves the tenant from the target now.
    for app in &s.apps {
        let names = app
            .product_names(app.as_tenant(Method::GET, "moving", "/api/products?limit=200"))
            .await;
        assert!(!names.is_empty());
    }
    // The source is kept, and refuses writes.
    use sea_orm::ConnectionTrait;
    let source = pg::connect(&s.source).await;
    let refused = source
        .execute_unprepared(
            "INSERT INTO products (id, name, price) VALUES (gen_random_uuid(), 'late', 1)",
        )
        .await;
    assert!(refused.is_err(), "the old storage takes writes");
    source.close().await.unwrap();
    eprintln!(
        "move: {outcome}; {} writes acknowledged, {} refused and retried, longest pause seen by the writer {:?}",
        writes.acknowledged.len(),
        writes.refused,
        writes.longest_gap
    );
    assert!(writes.acknowledged.len() > 20, "the writer kept writing");
    assert!(
        writes.longest_gap < Duration::from_secs(1),
        "the writer waited {:?}",
        writes.longest_gap
    );

    // Confirming drops the old storage and forgets the move.
    run_move_to_the_end(&s, &["--confirm"]).await;
    let db = pg::connect(&pg::url_with_database(&s.source_server.url, "postgres")).await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT count(*) FROM pg_database WHERE datname = 't_moving'".to_string(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap(),
        0,
        "the old database is dropped"
    );
    db.close().await.unwrap();
    drop(s.target_server);
}

/// Where a round of the crash test kills the mover.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Once the move is recorded.
    Recorded,
    /// Once the source publishes the tenant's tables.
    Published,
    /// Once the target subscribes.
    Subscribed,
    /// Once the source is frozen (in the moment before the switch).
    Frozen,
    /// Once the switch is recorded (before replication is removed).
    Switched,
    /// A fixed time after the start.
    After(u64),
}

/// The first column of `sql`'s first row; 0 while the database does not exist.
async fn count(url: &str, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let Ok(db) = tenant_router::db::connect(url).await else {
        return 0;
    };
    let n = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            sql.to_string(),
        ))
        .await
        .ok()
        .flatten()
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0);
    let _ = db.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_killed_at_any_point_and_run_again_loses_and_duplicates_nothing() {
    let _heavy = crate::helpers::heavy_test().await;
    let s = setup(1).await;
    let rounds = [
        KillAt::Recorded,
        KillAt::Published,
        KillAt::Subscribed,
        KillAt::Frozen,
        KillAt::Switched,
        KillAt::After(0),
        KillAt::After(150),
        KillAt::After(600),
        KillAt::After(1500),
    ];
    let address = s.apps[0].address.clone();
    let mut report = Vec::new();
    for (round, kill_at) in rounds.iter().enumerate() {
        let id = format!("crash_{round}");
        let source = pg::url_with_database(&s.source_server.url, &format!("t_{id}"));
        let target = pg::url_with_database(&s.target_server.url, &format!("t_{id}"));
        let response = s.apps[0]
            .admin(Method::POST, "/api/admin/tenants")
            .json(&json!({ "id": id, "domain": "dental", "database_url": source }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writing = tokio::spawn(writer_of(
            id.clone(),
            vec![address.clone()],
            stop.clone(),
            100_000,
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;

        let mut child = command(s.dir.path(), &control_env(&s.control))
            .args(["tenants", "move", &id, "--to", &target])
            .spawn()
            .unwrap();
        let started = Instant::now();
        let name = id.clone();
        let condition = |at: KillAt| {
            let (control, source_db, target_db, name) = (
                s.control.clone(),
                source.clone(),
                target.clone(),
                name.clone(),
            );
            async move {
                match at {
                    KillAt::Recorded => {
                        count(&control, &format!("SELECT count(*) FROM tenant_moves WHERE tenant_id = '{name}'")).await > 0
                    }
                    KillAt::Published => {
                        count(&source_db, "SELECT count(*) FROM pg_publication WHERE pubname LIKE 'tr_move_%'").await > 0
                    }
                    KillAt::Subscribed => {
                        count(&target_db, "SELECT count(*) FROM pg_subscription WHERE subname LIKE 'tr_move_%'").await > 0
                    }
                    KillAt::Frozen => {
                        count(&source_db, "SELECT count(*) FROM pg_proc WHERE proname = 'tenant_router_frozen'").await > 0
                    }
                    KillAt::Switched => {
                        count(&control, &format!("SELECT count(*) FROM tenant_moves WHERE tenant_id = '{name}' AND state = 'switched'")).await > 0
                    }
                    KillAt::After(ms) => started.elapsed() >= Duration::from_millis(ms),
                }
            }
        };
        let mut killed = false;
        while started.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if condition(*kill_at).await {
                let _ = child.kill();
                killed = true;
                break;
            }
        }
        let _ = child.wait();

        // Run again: it resumes (or, if the first run had finished, finishes
        // what is left) and exits 0.
        let (dir, control, target_url, id2) = (
            s.dir.path().to_path_buf(),
            s.control.clone(),
            target.clone(),
            id.clone(),
        );
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            run_move_of(&id2, &dir, &control, &["--to", &target_url])
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "round {round} ({kill_at:?}): {stdout}\n{stderr}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writing.await.unwrap();
        let on_target = product_names(&target).await;
        let mut seen = std::collections::HashSet::new();
        for name in &on_target {
            assert!(
                seen.insert(name),
                "round {round}: {name} twice on the target"
            );
        }
        for name in &writes.acknowledged {
            assert!(
                seen.contains(name),
                "round {round} ({kill_at:?}): {name} acknowledged but not on the target"
            );
        }
        // Nothing is left of the replication on either server.
        assert_eq!(
            count(&source, "SELECT count(*) FROM pg_publication").await,
            0
        );
        assert_eq!(
            count(&source, "SELECT count(*) FROM pg_replication_slots").await,
            0
        );
        assert_eq!(
            count(&target, "SELECT count(*) FROM pg_subscription").await,
            0
        );
        report.push(format!(
            "{kill_at:?}: killed={killed}, {} writes, longest pause {:?}",
            writes.acknowledged.len(),
            writes.longest_gap
        ));
    }
    eprintln!("{report:#?}");
}

/// A confirm killed between dropping the source database and forgetting the move
/// used to leave the record behind for good: every later confirm tried to reach
/// the database it had dropped (503), abort and removal were refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirm_killed_after_dropping_the_source_is_finished_by_the_next() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let _heavy = crate::helpers::heavy_test().await;
    let s = setup(1).await;
    s.apps[0]
        .create_product("moving", "made before the move", 2.0)
        .await;
    run_move_to_the_end(&s, &["--to", &s.target]).await;
    // The confirm's first write to the control database after its drop waits on
    // this lock: it is killed there, its source dropped, its record kept.
    let ledger = pg::connect(&s.control).await;
    let held = ledger.begin().await.unwrap();
    held.execute_unprepared("LOCK TABLE initialised_storage IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut confirming = command(s.dir.path(), &control_env(&s.control))
        .args(["tenants", "move", "moving", "--confirm"])
        .spawn()
        .unwrap();
    let server = pg::connect(&s.source_server.url).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = 't_moving'",
        ))
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            confirming.try_wait().unwrap().is_none(),
            "the confirm ended before dropping the source"
        );
        assert!(Instant::now() < deadline, "the source was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    confirming.kill().unwrap();
    confirming.wait().unwrap();
    server.close().await.unwrap();
    held.rollback().await.unwrap();
    ledger.close().await.unwrap();
    assert_eq!(moves_of(&s.apps[0]).await["moves"][0]["state"], "switched");

    run_move_to_the_end(&s, &["--confirm"]).await;
    assert_eq!(moves_of(&s.apps[0]).await["moves"], json!([]));
    // The tenant, on its new server, can now be removed like any other.
    let response = s.apps[0]
        .admin(
            Method::DELETE,
            "/api/admin/tenants/moving?drop_database=true",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_tenant_moves_into_the_shared_database_of_another_server() {
    let _heavy = crate::helpers::heavy_test().await;
    let s = setup_with(2, true).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addresses: Vec<String> = s.apps.iter().map(|a| a.address.clone()).collect();
    let writing = tokio::spawn(writer(addresses, stop.clone(), 5000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    run_move_to_the_end(&s, &["--to", &s.target]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writing.await.unwrap();
    let on_target = product_names_in(&s.target, "tenant_moving").await;
    let seen: std::collections::HashSet<&String> = on_target.iter().collect();
    assert_eq!(seen.len(), on_target.len(), "a row twice on the target");
    for name in &writes.acknowledged {
        assert!(
            seen.contains(name),
            "{name} acknowledged but not on the target"
        );
    }
    // Confirmed: the schema is dropped from the source's shared database, which
    // stays.
    run_move_to_the_end(&s, &["--confirm"]).await;
    assert_eq!(
        count(
            &s.source,
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'tenant_moving'"
        )
        .await,
        0
    );
    eprintln!(
        "schema move: {} writes acknowledged, longest pause {:?}",
        writes.acknowledged.len(),
        writes.longest_gap
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_started_through_the_admin_api_is_followed_and_confirmed_there() {
    let _heavy = crate::helpers::heavy_test().await;
    let s = setup(2).await;
    let (a, b) = (&s.apps[0], &s.apps[1]);
    a.create_product("moving", "made before the move", 2.0)
        .await;
    // Bad requests change nothing, and are answered at once: the tenant's own
    // database, a URL whose query would name another server, the control database.
    for (body, status) in [
        (json!({ "to": "sqlite://somewhere.db" }), 422),
        (json!({ "to": "not a url" }), 422),
        (json!({ "to": s.target, "extra": 1 }), 422),
        (json!({ "to": s.source }), 422),
        (json!({ "to": format!("{}?host=elsewhere", s.target) }), 422),
        (json!({ "to": s.control }), 422),
    ] {
        let response = a
            .admin(Method::POST, "/api/admin/tenants/moving/move")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
    }
    let response = a
        .admin(Method::POST, "/api/admin/tenants/moving/move/confirm")
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(response, 404, "not_found").await;
    let moves = moves_of(a).await;
    assert_eq!(moves["moves"], json!([]));

    // A move that fails in the background (no server listens at the target)
    // keeps its error, also once a replica starts: a start-up releases only a
    // move whose source is frozen.
    let wrong = {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut url = url::Url::parse(&s.target).unwrap();
        url.set_port(Some(closed)).unwrap();
        url.to_string()
    };
    let response = a
        .admin(Method::POST, "/api/admin/tenants/moving/move")
        .json(&json!({ "to": wrong }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let moves = moves_of(a).await;
        if moves["moves"][0]["running"].is_null() && !moves["moves"][0]["error"].is_null() {
            break moves["moves"][0].clone();
        }
        assert!(Instant::now() < deadline, "the move did not fail: {moves}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let started =
        spawn_app_with(AppSpec::from_toml("").env("CONTROL_DATABASE_URL", &s.control)).await;
    let moves = moves_of(&started).await;
    assert_eq!(moves["moves"][0]["state"], "copying", "{moves}");
    assert_eq!(moves["moves"][0]["error"], failed["error"], "{moves}");
    let response = a
        .admin(Method::POST, "/api/admin/tenants/moving/move/abort")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let response = a
        .admin(Method::POST, "/api/admin/tenants/moving/move")
        .json(&json!({ "to": s.target }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // Followed from the other replica: the record is in the control database.
    let deadline = Instant::now() + Duration::from_secs(120);
    let record = loop {
        let moves = moves_of(b).await;
        let text = moves.to_string();
        assert!(
            !text.contains("postgres://") && !text.contains("cluster-pw"),
            "{text}"
        );
        if moves["moves"][0]["state"] == "switched" {
            break moves["moves"][0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the move did not switch: {moves}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(record["pause_ms"].as_i64().unwrap() >= 0, "{record}");
    assert_eq!(record["to"], format!("127.0.0.1:{}", s.target_server.port));
    let names = product_names(&s.target).await;
    assert!(
        names.contains(&"made before the move".to_string()),
        "{names:?}"
    );
    // Both replicas serve it from the target.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = b
            .as_tenant(Method::POST, "moving", "/api/products")
            .json(&json!({ "name": "made after the move", "price": 1.0 }))
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write after the move: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        product_names(&s.target)
            .await
            .contains(&"made after the move".to_string())
    );
    // Aborting a switched move is refused, as are a move elsewhere and removing
    // the tenant (its old storage would be left behind); confirming it ends it.
    let response = a
        .admin(Method::POST, "/api/admin/tenants/moving/move/abort")
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(response, 409, "conflict").await;
    let elsewhere = pg::url_with_database(&s.target_server.url, "elsewhere");
    let response = a
        .admin(Method::POST, "/api/admin/tenants/moving/move")
        .json(&json!({ "to": elsewhere }))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(response, 409, "conflict").await;
    for path in [
        "/api/admin/tenants/moving",
        "/api/admin/tenants/moving?drop_database=true",
    ] {
        let response = a.admin(Method::DELETE, path).send().await.unwrap();
        crate::helpers::assert_error(response, 409, "conflict").await;
    }
    // The move's background task may still be removing the replication.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let moves = moves_of(a).await;
        if moves["moves"][0]["running"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the move kept running: {moves}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = a
        .admin(Method::POST, "/api/admin/tenants/moving/move/confirm")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let moves = moves_of(a).await;
    assert_eq!(moves["moves"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_tenant_promoted_to_postgres_keeps_its_data_users_keys_and_audit_rows() {
    let _heavy = crate::helpers::heavy_test().await;
    let server = PgCluster::start(100);
    pg::admin_execute(&server.url, "CREATE DATABASE control").await;
    let control = pg::url_with_database(&server.url, "control");
    let target = pg::url_with_database(&server.url, "t_promoted");
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("promoted.db");
    let app = spawn_app_with(
        AppSpec::from_toml("")
            .with_auth()
            .env("CONTROL_DATABASE_URL", &control)
            .env("AUTO_CREATE_DATABASES", "true"),
    )
    .await;
    let response = app
        .admin(Method::POST, "/api/admin/tenants")
        .json(&json!({
            "id": "promoted",
            "domain": "dental",
            "database_url": format!("sqlite://{}", file.display()),
            "owner": { "username": "owner", "password": "a long owner password" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let token = app
        .login("promoted", "owner", "a long owner password")
        .await;
    let key: Value = app
        .as_tenant(Method::POST, "promoted", "/api/api-keys")
        .bearer_auth(&token)
        .json(&json!({ "name": "service", "role": "staff" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    let write = |name: String| {
        app.as_tenant(Method::POST, "promoted", "/api/products")
            .header("X-API-Key", &key)
            .json(&json!({ "name": name, "price": 3.5 }))
            .send()
    };
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let name = format!("before {i}");
        assert!(write(name.clone()).await.unwrap().status().is_success());
        acknowledged.push(name);
    }
    let audit_before: Value = app
        .admin(Method::GET, "/api/admin/tenants/promoted/audit?limit=200")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let audit_before = audit_before["items"].as_array().unwrap().len();

    // Promoted while a writer keeps writing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.toml"), "").unwrap();
    let mover = {
        let (dir, control, target) = (dir.path().to_path_buf(), control.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            run_move_of("promoted", &dir, &control, &["--to", &target])
        })
    };
    let mut i = 0;
    let mut longest = Duration::ZERO;
    let mut last_ok = Instant::now();
    while !mover.is_finished() || i < 5 {
        let name = format!("during {i}");
        i += 1;
        if write(name.clone()).await.unwrap().status().is_success() {
            acknowledged.push(name);
            longest = longest.max(last_ok.elapsed());
            last_ok = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (code, stdout, stderr) = mover.await.unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // After the switch every write lands in PostgreSQL; until the replica has
    // heard of the switch it answers 503, which a client retries.
    for _ in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let name = format!("after {i}");
            i += 1;
            let response = write(name.clone()).await.unwrap();
            if response.status().is_success() {
                acknowledged.push(name);
                break;
            }
            assert_eq!(response.status(), 503);
            assert!(
                Instant::now() < deadline,
                "writes still refused after the switch"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Everything is in PostgreSQL, once.
    let on_target = product_names(&target).await;
    let seen: std::collections::HashSet<&String> = on_target.iter().collect();
    assert_eq!(seen.len(), on_target.len(), "a row twice");
    for name in &acknowledged {
        assert!(
            seen.contains(name),
            "{name} acknowledged but not in PostgreSQL"
        );
    }
    // The same user logs in, the same key works, the audit log is whole.
    app.login("promoted", "owner", "a long owner password")
        .await;
    let response = app
        .as_tenant(Method::GET, "promoted", "/api/products")
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let audit_after: Value = app
        .admin(Method::GET, "/api/admin/tenants/promoted/audit?limit=200")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit_after["items"].as_array().unwrap().len() >= audit_before + 5,
        "audit rows lost: {audit_before} before"
    );
    // The file is kept, refusing writes, until confirmed.
    assert!(file.exists());
    let frozen = tenant_router::db::connect(format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    assert!(
        frozen
            .execute_unprepared("DELETE FROM products")
            .await
            .is_err()
    );
    frozen.close().await.unwrap();
    let (code, stdout, stderr) = {
        let (dir, control) = (dir.path().to_path_buf(), control.clone());
        tokio::task::spawn_blocking(move || run_move_of("promoted", &dir, &control, &["--confirm"]))
            .await
            .unwrap()
    };
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!file.exists(), "the file is dropped once confirmed");
    eprintln!("promotion: {stdout}; writes refused for {longest:?} at most");
}

async fn sqlite_count(file: &Path, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let Ok(db) = tenant_router::db::connect(format!("sqlite://{}?mode=ro", file.display())).await
    else {
        return 0;
    };
    let n = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            sql.to_string(),
        ))
        .await
        .ok()
        .flatten()
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0);
    let _ = db.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promotion_killed_at_any_point_and_run_again_loses_and_duplicates_nothing() {
    let _heavy = crate::helpers::heavy_test().await;
    let server = PgCluster::start(100);
    pg::admin_execute(&server.url, "CREATE DATABASE control").await;
    let control = pg::url_with_database(&server.url, "control");
    let files = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        AppSpec::from_toml("")
            .env("CONTROL_DATABASE_URL", &control)
            .env("AUTO_CREATE_DATABASES", "true"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.toml"), "").unwrap();
    let rounds = [
        KillAt::Recorded,
        KillAt::Frozen,
        KillAt::Switched,
        KillAt::After(0),
        KillAt::After(100),
        KillAt::After(300),
    ];
    let mut report = Vec::new();
    for (round, kill_at) in rounds.iter().enumerate() {
        let id = format!("promo_{round}");
        let file = files.path().join(format!("{id}.db"));
        let target = pg::url_with_database(&server.url, &format!("t_{id}"));
        let response = app
            .admin(Method::POST, "/api/admin/tenants")
            .json(&json!({ "id": id, "domain": "dental", "database_url": format!("sqlite://{}", file.display()) }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writing = tokio::spawn(writer_of(
            id.clone(),
            vec![app.address.clone()],
            stop.clone(),
            100_000,
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut child = command(dir.path(), &control_env(&control))
            .args(["tenants", "move", &id, "--to", &target])
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut killed = false;
        while started.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let now = match kill_at {
                KillAt::Recorded => {
                    count(&control, &format!("SELECT count(*) FROM tenant_moves WHERE tenant_id = '{id}'")).await > 0
                }
                KillAt::Frozen => {
                    sqlite_count(&file, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").await > 0
                }
                KillAt::Switched => {
                    count(&control, &format!("SELECT count(*) FROM tenant_moves WHERE tenant_id = '{id}' AND state = 'switched'")).await > 0
                }
                KillAt::After(ms) => started.elapsed() >= Duration::from_millis(*ms),
                _ => unreachable!(),
            };
            if now {
                let _ = child.kill();
                killed = true;
                break;
            }
        }
        let _ = child.wait();
        let (code, stdout, stderr) = {
            let (dir, control, target, id) = (
                dir.path().to_path_buf(),
                control.clone(),
                target.clone(),
                id.clone(),
            );
            tokio::task::spawn_blocking(move || {
                run_move_of(&id, &dir, &control, &["--to", &target])
            })
            .await
            .unwrap()
        };
        assert_eq!(code, 0, "round {round} ({kill_at:?}): {stdout}\n{stderr}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writing.await.unwrap();
        let on_target = product_names(&target).await;
        let mut seen = std::collections::HashSet::new();
        for name in &on_target {
            assert!(
                seen.insert(name),
                "round {round}: {name} twice in PostgreSQL"
            );
        }
        for name in &writes.acknowledged {
            assert!(
                seen.contains(name),
                "round {round} ({kill_at:?}): {name} acknowledged but not in PostgreSQL"
            );
        }
        report.push(format!(
            "{kill_at:?}: killed={killed}, {} writes, longest pause {:?}",
            writes.acknowledged.len(),
            writes.longest_gap
        ));
    }
    eprintln!("{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manufacturing_tenant_is_promoted_with_its_foreign_keys_and_exact_numbers() {
    let _heavy = crate::helpers::heavy_test().await;
    let server = PgCluster::start(100);
    pg::admin_execute(&server.url, "CREATE DATABASE control").await;
    let control = pg::url_with_database(&server.url, "control");
    let target = pg::url_with_database(&server.url, "t_factory");
    let files = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        AppSpec::from_toml("")
            .env("CONTROL_DATABASE_URL", &control)
            .env("AUTO_CREATE_DATABASES", "true"),
    )
    .await;
    let response = app
        .admin(Method::POST, "/api/admin/tenants")
        .json(&json!({ "id": "factory", "domain": "manufacturing",
            "database_url": format!("sqlite://{}", files.path().join("factory.db").display()) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let post = |path: &'static str, body: Value| {
        app.as_tenant(Method::POST, "factory", path)
            .json(&body)
            .send()
    };
    // A stock that 15 significant digits cannot hold exactly (stock is kept to a
    // millionth: 17 digits), compared with what the service stored.
    let steel: Value = post(
        "/api/manufacturing/materials",
        json!({ "name": "steel", "unit": "kg", "stock": 12_345_678_901.234_567 }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let stock = steel["stock"].as_f64().unwrap();
    assert_ne!(format!("{stock:.14e}").parse::<f64>().unwrap(), stock);
    let bom = post(
        "/api/manufacturing/boms",
        json!({ "name": "Cabinet", "items": [{ "material_id": steel["id"], "quantity": 2.5 }] }),
    )
    .await
    .unwrap();
    assert_eq!(bom.status(), 201);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.toml"), "").unwrap();
    let (code, stdout, stderr) = {
        let (dir, control, target) = (dir.path().to_path_buf(), control.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            run_move_of("factory", &dir, &control, &["--to", &target])
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // Served from PostgreSQL: the BOM with its item, the stock to the last bit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let boms: Value = loop {
        let response = app
            .as_tenant(Method::GET, "factory", "/api/manufacturing/boms")
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            break response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "{}", response.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(boms["items"][0]["items"][0]["quantity"], 2.5, "{boms}");
    use sea_orm::ConnectionTrait;
    let db = pg::connect(&target).await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT stock FROM materials".to_string(),
        ))
        .await
        .unwrap()
        .unwrap();
    let copied: f64 = row.try_get_by_index(0).unwrap();
    assert_eq!(copied.to_bits(), stock.to_bits(), "{copied} != {stock}");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_mover_of_the_same_tenant_is_refused_while_the_first_runs() {
    let _heavy = crate::helpers::heavy_test().await;
    let s = setup(1).await;
    let mut first = command(s.dir.path(), &control_env(&s.control))
        .args(["tenants", "move", "moving", "--to", &s.target])
        .spawn()
        .unwrap();
    // The first has recorded the move and holds it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&s.control, "SELECT count(*) FROM tenant_moves").await == 0 {
        assert!(Instant::now() < deadline, "the first mover did not start");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first mover ended early"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (dir, control) = (s.dir.path().to_path_buf(), s.control.clone());
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_move(&dir, &control, &["--abort"]))
            .await
            .unwrap();
    let still_running = first.try_wait().unwrap().is_none();
    if still_running {
        assert_ne!(code, 0, "an abort ran beside the mover: {stdout}");
        assert!(stderr.contains("another process is moving"), "{stderr}");
    }
    let status = first.wait().unwrap();
    assert!(status.success(), "the first mover failed");
    // It finished alone: the tenant is on the target, the move switched.
    assert_eq!(
        count(
            &s.control,
            "SELECT count(*) FROM tenant_moves WHERE state = 'switched'"
        )
        .await,
        1
    );
    assert!(
        still_running,
        "the first mover finished before the second tried"
    );
}

/// A promotion whose process (here the server running it) is killed while the
/// file is frozen for the copy: the next start of a replica releases the
/// tenant's writes on its file, says so on the move's record, and the move run
/// again finishes with every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promotion_killed_with_its_server_releases_the_tenants_writes_at_the_next_start() {
    use super::Server;
    let _heavy = crate::helpers::heavy_test().await;
    let pg_server = PgCluster::start(100);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.toml"), "").unwrap();
    let env = [("SECRET_KEY", TEST_SECRET_KEY)];
    let start = || {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || Server::start(command(&dir, &env)))
            .join()
            .unwrap()
    };
    let mut server = start();
    let file = dir.path().join("big.db");
    let control = dir.path().join("data").join("control.db");
    let client = reqwest::Client::new();
    let admin = |address: &str, method: Method, path: &str| {
        client
            .request(method, format!("{address}{path}"))
            .bearer_auth(super::ADMIN)
    };
    let write = |address: &str, name: &str| {
        client
            .post(format!("{address}/api/products"))
            .header("X-Tenant-ID", "big")
            .json(&json!({ "name": name, "price": 1.0 }))
            .send()
    };
    let response = admin(&server.address, Method::POST, "/api/admin/tenants")
        .json(&json!({ "id": "big", "domain": "dental", "database_url": format!("sqlite://{}", file.display()) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(write(&server.address, "first").await.unwrap().status(), 201);
    // Enough rows that the copy takes a while.
    {
        use sea_orm::ConnectionTrait;
        let db = tenant_router::db::connect(format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        db.execute_unprepared(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000) \
             INSERT INTO products (id, name, price_cents, created_at, updated_at) \
             SELECT randomblob(16), 'bulk ' || x, x, p.created_at, p.updated_at \
             FROM c, (SELECT created_at, updated_at FROM products LIMIT 1) p",
        )
        .await
        .unwrap();
        db.close().await.unwrap();
    }
    let target = pg::url_with_database(&pg_server.url, "t_big");
    let response = admin(&server.address, Method::POST, "/api/admin/tenants/big/move")
        .json(&json!({ "to": target }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let triggers = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'";
    let deadline = Instant::now() + Duration::from_secs(120);
    while sqlite_count(&file, triggers).await == 0 {
        assert!(Instant::now() < deadline, "the file was never frozen");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let copying = "SELECT count(*) FROM tenant_moves WHERE state = 'copying'";
    assert_eq!(
        sqlite_count(&control, copying).await,
        1,
        "killed after the switch: the copy was faster than the watch"
    );
    assert!(sqlite_count(&file, triggers).await > 0);

    // A replica starts: the tenant takes writes on its file again.
    let mut server = start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = write(&server.address, "after the restart")
            .await
            .unwrap()
            .status();
        if status == 201 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "writes stay refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sqlite_count(&file, triggers).await, 0);
    let moves: Value = admin(&server.address, Method::GET, "/api/admin/moves")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(moves["moves"][0]["state"], "released", "{moves}");
    assert!(
        moves["moves"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cut short")),
        "{moves}"
    );

    // Run again, the move finishes with every row, the write after the restart too.
    let response = admin(&server.address, Method::POST, "/api/admin/tenants/big/move")
        .json(&json!({ "to": target }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let moves: Value = admin(&server.address, Method::GET, "/api/admin/moves")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if moves["moves"][0]["state"] == "switched" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the move did not finish: {moves}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&target, "SELECT count(*) FROM products").await,
        50_002
    );
    let names = product_names(&target).await;
    assert!(names.contains(&"after the restart".to_string()));
    assert!(server.stop());
}
