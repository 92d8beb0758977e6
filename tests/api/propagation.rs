//! Replicas on one PostgreSQL control database hear of each other's changes at
//! once: the database notifies every listening replica when `tenant_configs`
//! changes (`LISTEN`/`NOTIFY`). Polling is switched off here
//! (`CONTROL_POLL_SECS=0`), so the notifications are the only way a change can
//! travel; after a lost connection a replica connects again and reloads.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{AppSpec, TestApp, spawn_app_with},
    pg,
};

/// How long a change may take to reach another replica (issue 14: one second).
const PROPAGATION: Duration = Duration::from_secs(1);

async fn replicas(control: &str, count: usize) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for _ in 0..count {
        apps.push(
            spawn_app_with(
                AppSpec::from_toml("")
                    .env("CONTROL_DATABASE_URL", control)
                    .env("CONTROL_POLL_SECS", "0"),
            )
            .await,
        );
    }
    apps
}

/// The tenant's configuration as `app` serves it (`None`: it has no such tenant).
async fn config(app: &TestApp, id: &str) -> Option<Value> {
    let response = app
        .admin(Method::GET, &format!("/api/tenants/{id}/config"))
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => Some(response.json().await.unwrap()),
        404 => None,
        other => panic!("config of {id}: {other}"),
    }
}

/// Waits until `app` serves a configuration of `id` that satisfies `wanted`, and
/// returns how long that took from `since`; fails after `within`.
async fn seen(
    app: &TestApp,
    id: &str,
    since: Instant,
    within: Duration,
    wanted: impl Fn(Option<&Value>) -> bool,
) -> Duration {
    loop {
        let now = config(app, id).await;
        if wanted(now.as_ref()) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "{} did not see the change to {id} within {within:?}; it serves {now:?}",
            app.address
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn sqlite_tenant(app: &TestApp, id: &str) -> Value {
    // A file every replica on this machine can open.
    json!({
        "id": id,
        "domain": "dental",
        "database_url": format!("sqlite://{}/{id}.db", app.data_dir().display()),
    })
}

#[tokio::test]
async fn a_change_through_any_replica_reaches_the_others_within_a_second_without_polling() {
    let control = pg::fresh_database("trnotify").await;
    let apps = replicas(&control, 3).await;
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    // The replicas are up and listening (a replica that starts later loads
    // everything once it listens; that is not what is timed here).
    wait_for_listeners(&control, 3).await;
    let mut figures = Vec::new();

    // Provisioned through A.
    let response = a
        .admin(Method::POST, "/api/admin/tenants")
        .json(&sqlite_tenant(a, "everywhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let since = Instant::now();
    for other in [b, c] {
        figures.push((
            "provision",
            seen(other, "everywhere", since, PROPAGATION, |t| t.is_some()).await,
        ));
    }
    // ... and it answers there.
    for other in [b, c] {
        let response = other
            .as_tenant(Method::GET, "everywhere", "/api/products")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // Suspended through B: A and C refuse it.
    let response = b
        .admin(Method::PATCH, "/api/admin/tenants/everywhere")
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let since = Instant::now();
    for other in [a, c] {
        figures.push((
            "suspend",
            seen(other, "everywhere", since, PROPAGATION, |t| {
                t.is_some_and(|t| t["is_active"] == false)
            })
            .await,
        ));
        let response = other
            .as_tenant(Method::GET, "everywhere", "/api/products")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
    }

    // Changed through C.
    let response = c
        .admin(Method::PATCH, "/api/admin/tenants/everywhere")
        .json(&json!({ "is_active": true, "branding": { "company_name": "Changed on C" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let since = Instant::now();
    for other in [a, b] {
        figures.push((
            "change",
            seen(other, "everywhere", since, PROPAGATION, |t| {
                t.is_some_and(|t| t["branding"]["company_name"] == "Changed on C")
            })
            .await,
        ));
    }

    // Deleted through A.
    let response = a
        .admin(Method::DELETE, "/api/admin/tenants/everywhere")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let since = Instant::now();
    for other in [b, c] {
        figures.push((
            "delete",
            seen(other, "everywhere", since, PROPAGATION, |t| t.is_none()).await,
        ));
    }
    eprintln!("propagation to the other replicas: {figures:?}");
}

/// The control database's sessions that are listening for tenant changes.
async fn listeners(control: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let db = pg::connect(&pg::url_with_database(control, "postgres")).await;
    let name = url::Url::parse(control)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let row = db
        .query_one_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{name}' \
                 AND query LIKE 'LISTEN%'"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    let n: i64 = row.try_get("", "n").unwrap();
    db.close().await.unwrap();
    n
}

async fn wait_for_listeners(control: &str, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while listeners(control).await < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} replicas listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replica_whose_change_feed_is_cut_connects_again_and_catches_up() {
    let control = pg::fresh_database("trnotify").await;
    let apps = replicas(&control, 2).await;
    let (a, b) = (&apps[0], &apps[1]);
    wait_for_listeners(&control, 2).await;

    // Every listening connection is cut, as a restart of the database or a
    // network failure would.
    let name = url::Url::parse(&control)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    pg::admin_execute(
        &control,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' \
             AND query LIKE 'LISTEN%'"
        ),
    )
    .await;
    // A change made now may find B still without its feed: B reloads when it
    // connects again.
    let response = a
        .admin(Method::POST, "/api/admin/tenants")
        .json(&sqlite_tenant(a, "after_the_cut"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    seen(
        b,
        "after_the_cut",
        Instant::now(),
        Duration::from_secs(30),
        |t| t.is_some(),
    )
    .await;

    // Listening again, B hears the next change within the second.
    let deadline = Instant::now() + Duration::from_secs(30);
    while listeners(&control).await < 2 {
        assert!(
            Instant::now() < deadline,
            "the replicas do not listen again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = a
        .admin(Method::POST, "/api/admin/tenants")
        .json(&sqlite_tenant(a, "next_one"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let took = seen(b, "next_one", Instant::now(), PROPAGATION, |t| t.is_some()).await;
    eprintln!("after reconnecting: {took:?}");
}

/// A replica that has not heard of a change yet (here: never, with no change feed
/// and no polling) still changes the tenant as the control database holds it: its
/// PATCH keeps another replica's suspension, and a tenant another replica removed
/// stays removed.
#[tokio::test]
async fn a_change_through_a_replica_behind_the_others_applies_to_the_tenant_as_it_is_now() {
    let shared = tempfile::tempdir().unwrap();
    let control = format!("sqlite://{}/control.db", shared.path().display());
    let replica = || {
        spawn_app_with(
            AppSpec::from_toml("")
                .env("CONTROL_DATABASE_URL", &control)
                .env("CONTROL_POLL_SECS", "0"),
        )
    };
    let a = replica().await;
    let mut tenant = sqlite_tenant(&a, "lagging");
    tenant["database_url"] = json!(format!("sqlite://{}/lagging.db", shared.path().display()));
    let response = a
        .admin(Method::POST, "/api/admin/tenants")
        .json(&tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // B loads the tenant at its start, and hears nothing after.
    let b = replica().await;
    let patch = |app: &TestApp, body: Value| {
        app.admin(Method::PATCH, "/api/admin/tenants/lagging")
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(&a, json!({ "is_active": false }))
            .await
            .unwrap()
            .status(),
        200
    );
    let response = patch(&b, json!({ "features": ["patient_management"] }))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let changed: Value = response.json().await.unwrap();
    assert_eq!(
        changed["is_active"], false,
        "the suspension was undone: {changed}"
    );
    assert_eq!(
        changed["features"],
        json!(["products", "cash_flow", "patient_management"]),
        "{changed}"
    );

    let removed = a
        .admin(Method::DELETE, "/api/admin/tenants/lagging")
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let response = patch(&b, json!({ "branding": { "company_name": "Back" } }))
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "{}", response.text().await.unwrap());
    // B follows, and a replica starting now finds no such tenant.
    assert!(config(&b, "lagging").await.is_none());
    let c = replica().await;
    assert!(config(&c, "lagging").await.is_none());
}

/// The first changes of a tenant of the file, through two replicas at once on a
/// PostgreSQL control database: with no row yet there is nothing to lock, and both
/// insert one; the second tries again on the row the first made, so both apply.
#[tokio::test]
async fn first_changes_of_a_file_tenant_through_two_replicas_at_once_both_apply() {
    let control = pg::fresh_database("trfirst").await;
    let toml = |app: &TestApp| {
        format!(
            "[tenants.filed]\ndatabase_url = 'sqlite://{}/filed.db'\ndomain = 'dental'\n",
            app.data_dir().display()
        )
    };
    let a = spawn_app_with(AppSpec::from_toml("").env("CONTROL_DATABASE_URL", &control)).await;
    let file = toml(&a);
    let b = spawn_app_with(AppSpec::from_toml(&file).env("CONTROL_DATABASE_URL", &control)).await;
    let a = spawn_app_with(AppSpec::from_toml(&file).env("CONTROL_DATABASE_URL", &control)).await;
    for round in 0..5 {
        let (suspended, renamed) = tokio::join!(
            a.admin(Method::PATCH, "/api/admin/tenants/filed")
                .json(&json!({ "is_active": false }))
                .send(),
            b.admin(Method::PATCH, "/api/admin/tenants/filed")
                .json(&json!({ "branding": { "company_name": format!("Round {round}") } }))
                .send(),
        );
        let (suspended, renamed) = (suspended.unwrap(), renamed.unwrap());
        assert_eq!(
            suspended.status(),
            200,
            "{}",
            suspended.text().await.unwrap()
        );
        assert_eq!(renamed.status(), 200, "{}", renamed.text().await.unwrap());
        // Both changes are in the row: a replica starting now reads them.
        let c =
            spawn_app_with(AppSpec::from_toml(&file).env("CONTROL_DATABASE_URL", &control)).await;
        let now = config(&c, "filed").await.unwrap();
        assert_eq!(now["is_active"], false, "round {round}: {now}");
        assert_eq!(
            now["branding"]["company_name"],
            format!("Round {round}"),
            "round {round}: {now}"
        );
        // The row removed: the file's entry again, for the next round.
        let removed = a
            .admin(Method::DELETE, "/api/admin/tenants/filed")
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), 204, "{}", removed.text().await.unwrap());
        let since = Instant::now();
        seen(&b, "filed", since, Duration::from_secs(10), |t| {
            t.is_some_and(|t| t["is_active"] == true && t["source"] == "file")
        })
        .await;
    }
}
