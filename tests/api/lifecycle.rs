//! Tenant lifecycle without restarts: provisioning through the admin API on every
//! backend, refusal of duplicates, undoing a failed provisioning, suspension,
//! changes, removal, persistence, and replicas sharing the control database.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{AppSpec, Backend, Storage, TestApp, assert_error, spawn_app_with, standard_tenants},
    pg,
};

/// The body that provisions `id` on `backend`.
async fn provision_body(app: &TestApp, backend: Backend, id: &str) -> Value {
    let storage = Storage::new(backend, app.data_dir()).await;
    let mut body = match &storage {
        Storage::Sqlite(dir) => {
            json!({ "database_url": format!("sqlite://{}/{id}.db", dir.display()) })
        }
        Storage::PgDatabase { server, prefix } => {
            json!({ "database_url": pg::url_with_database(server, &format!("{prefix}_{id}")) })
        }
        Storage::PgSchema { database_url } => {
            json!({ "database_url": database_url, "isolation": "schema" })
        }
    };
    body["id"] = json!(id);
    body["domain"] = json!("dental");
    body["branding"] = json!({ "company_name": "New Clinic", "primary_color": "#112233" });
    body["seed_demo_data"] = json!(true);
    body
}

/// What `GET /api/tenants/{id}/config` answers.
async fn config_of(app: &TestApp, id: &str) -> Value {
    let response = app
        .admin(Method::GET, &format!("/api/tenants/{id}/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "config of {id}");
    response.json().await.unwrap()
}

/// `GET /api/admin/provisionings`: the provisionings not finished.
async fn provisionings(app: &TestApp) -> Value {
    app.admin(Method::GET, "/api/admin/provisionings")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn provision(app: &TestApp, body: &Value) -> reqwest::Response {
    app.admin(Method::POST, "/api/admin/tenants")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn a_provisioned_tenant_answers_at_once_with_its_demo_data(backend: Backend) {
    let app = spawn_app_with(AppSpec::new(standard_tenants()).on(backend)).await;
    let body = provision_body(&app, backend, "new_clinic").await;
    let response = provision(&app, &body).await;
    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("database_url") && !text.contains("sqlite") && !text.contains("postgres"),
        "{text}"
    );
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["id"], "new_clinic");
    assert_eq!(created["source"], "control");

    let products = app
        .product_names(app.as_tenant(Method::GET, "new_clinic", "/api/products"))
        .await;
    assert_eq!(products.len(), 5, "{products:?}");
    let patients = app
        .as_tenant(Method::GET, "new_clinic", "/api/dental/patients")
        .send()
        .await
        .unwrap();
    assert_eq!(patients.status(), 200);
    let branding: Value = app
        .request(Method::GET, "/api/tenants/new_clinic/branding")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(branding["branding"]["company_name"], "New Clinic");

    let migrations: Value = app
        .admin(Method::GET, "/api/admin/tenants/new_clinic/migrations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = migrations["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == "applied"),
        "{migrations}"
    );
    let migrate: Value = app
        .admin(Method::POST, "/api/admin/tenants/new_clinic/migrate")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(migrate["applied"], 0);
}

async fn duplicates_and_bad_bodies_are_refused(backend: Backend) {
    let app = spawn_app_with(AppSpec::new(standard_tenants()).on(backend)).await;
    let body = provision_body(&app, backend, "twin").await;
    assert_eq!(provision(&app, &body).await.status(), 201);
    assert_error(provision(&app, &body).await, 409, "conflict").await;

    let mut same_label = provision_body(&app, backend, "other_twin").await;
    same_label["subdomain"] = json!("twin");
    assert_error(provision(&app, &same_label).await, 409, "conflict").await;
    let mut file_id = provision_body(&app, backend, "demo").await;
    file_id["subdomain"] = json!("demo-two");
    assert_error(provision(&app, &file_id).await, 409, "conflict").await;

    for (change, field) in [
        (json!({ "id": "Bad Id" }), "id"),
        (json!({ "domain": "retail" }), "domain"),
        (
            json!({ "database_url": "mysql://u:p@h/db" }),
            "database_url",
        ),
        (json!({ "colour": "red" }), "colour"),
        // IGNORED_SUBDOMAINS (www by default) never names a tenant.
        (json!({ "subdomain": "www" }), "subdomain"),
    ] {
        let mut bad = provision_body(&app, backend, "bad_one").await;
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let error = assert_error(provision(&app, &bad).await, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "{error}");
        assert!(!error.to_string().contains("mysql://u:p"), "{error}");
    }
    // A key given twice is refused, as on every other route, not "the last wins".
    let twice = r#"{"id": "bad_two", "id": "bad_three", "database_url": "sqlite://x.db"}"#;
    let patch_twice =
        r#"{"is_active": true, "branding": {"company_name": "A", "company_name": "B"}}"#;
    for (method, path, text) in [
        (Method::POST, "/api/admin/tenants", twice),
        (Method::PATCH, "/api/admin/tenants/twin", patch_twice),
    ] {
        let response = app
            .admin(method, path)
            .header("Content-Type", "application/json")
            .body(text)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 422, "validation_failed").await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("duplicate"),
            "{error}"
        );
    }
    let unauthorized = app
        .request(Method::POST, "/api/admin/tenants")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(unauthorized, 401, "unauthorized").await;
}

async fn suspending_changing_and_removing_take_effect_on_the_next_request(backend: Backend) {
    let app = spawn_app_with(AppSpec::new(standard_tenants()).on(backend)).await;
    let body = provision_body(&app, backend, "short_lived").await;
    assert_eq!(provision(&app, &body).await.status(), 201);

    let patch = |change: Value| {
        app.admin(Method::PATCH, "/api/admin/tenants/short_lived")
            .json(&change)
            .send()
    };
    assert_eq!(
        patch(json!({ "is_active": false })).await.unwrap().status(),
        200
    );
    let suspended = app
        .as_tenant(Method::GET, "short_lived", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(suspended, 403, "tenant_inactive").await;
    assert_eq!(
        patch(json!({ "is_active": true, "features": ["material_management"] }))
            .await
            .unwrap()
            .status(),
        200
    );
    let materials = app
        .as_tenant(Method::GET, "short_lived", "/api/manufacturing/materials")
        .send()
        .await
        .unwrap();
    assert_eq!(materials.status(), 200);
    let patients = app
        .as_tenant(Method::GET, "short_lived", "/api/dental/patients")
        .send()
        .await
        .unwrap();
    assert_error(patients, 403, "feature_not_enabled").await;
    let refused = patch(json!({ "database_url": "sqlite://elsewhere.db" }))
        .await
        .unwrap();
    assert_error(refused, 422, "validation_failed").await;

    // A file tenant can be suspended through the API too.
    let demo = app
        .admin(Method::PATCH, "/api/admin/tenants/demo")
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(demo.status(), 200);
    let demo_request = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(demo_request, 403, "tenant_inactive").await;

    let delete = app
        .admin(
            Method::DELETE,
            "/api/admin/tenants/short_lived?drop_database=true",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let gone = app
        .as_tenant(Method::GET, "short_lived", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(gone, 404, "tenant_not_found").await;
    if backend == Backend::Sqlite {
        assert!(
            !app.data_dir().join("short_lived.db").exists(),
            "the dropped database is still there"
        );
    }
    let again = provision(&app, &body).await;
    assert_eq!(again.status(), 201, "the id is free again");

    let file_tenant = app
        .admin(Method::DELETE, "/api/admin/tenants/acme_manufacturing")
        .send()
        .await
        .unwrap();
    assert_error(file_tenant, 409, "conflict").await;
}

async fn two_provisionings_of_one_id_at_once_make_one_tenant(backend: Backend) {
    let app = spawn_app_with(AppSpec::new(standard_tenants()).on(backend)).await;
    let body = provision_body(&app, backend, "racer").await;
    let (a, b) = tokio::join!(provision(&app, &body), provision(&app, &body));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    app.create_product("racer", "after the race", 1.0).await;
}

async fn a_second_tenant_on_a_database_in_use_is_refused(backend: Backend) {
    let app = spawn_app_with(AppSpec::new(standard_tenants()).on(backend)).await;
    let first = provision_body(&app, backend, "owner_one").await;
    assert_eq!(provision(&app, &first).await.status(), 201);
    // The same database (database mode) or schema (schema mode: the schema comes
    // from the id, so only the database tenant's own URL can collide), under
    // another id: refused, and the first tenant's data is untouched.
    let mut second = first.clone();
    second["id"] = json!("owner_two");
    if backend == Backend::PgSchema {
        second.as_object_mut().unwrap().remove("isolation");
        let beside = provision(&app, &second).await;
        // A database tenant beside schema tenants keeps to `public`: allowed once,
        // and it may not drop the database that holds their schemas.
        assert_eq!(beside.status(), 201);
        let drop = app
            .admin(
                Method::DELETE,
                "/api/admin/tenants/owner_two?drop_database=true",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(drop.status(), 409);
        second["id"] = json!("owner_three");
    }
    let refused = provision(&app, &second).await;
    assert_eq!(refused.status(), 409);
    let text = refused.text().await.unwrap();
    assert!(text.contains("already used by tenant"), "{text}");
    assert!(
        !text.contains("sqlite") && !text.contains("postgres"),
        "{text}"
    );
    let products = app
        .product_names(app.as_tenant(Method::GET, "owner_one", "/api/products"))
        .await;
    assert!(!products.is_empty());

    // Two provisionings racing onto one new database under two ids: one wins.
    let mut a = provision_body(&app, backend, "race_a").await;
    let mut b = a.clone();
    b["id"] = json!("race_b");
    if backend == Backend::PgSchema {
        a.as_object_mut().unwrap().remove("isolation");
        b.as_object_mut().unwrap().remove("isolation");
        let fresh = pg::fresh_database("trs").await;
        a["database_url"] = json!(fresh);
        b["database_url"] = json!(fresh);
    }
    let (ra, rb) = tokio::join!(provision(&app, &a), provision(&app, &b));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
}

crate::on_every_backend!(
    a_second_tenant_on_a_database_in_use_is_refused,
    two_provisionings_of_one_id_at_once_make_one_tenant,
    a_provisioned_tenant_answers_at_once_with_its_demo_data,
    duplicates_and_bad_bodies_are_refused,
    suspending_changing_and_removing_take_effect_on_the_next_request,
);

#[tokio::test]
async fn a_failed_provisioning_leaves_nothing_behind_and_a_retry_succeeds() {
    let shared = pg::fresh_database("trf").await;
    // The server refuses to create tables: the tenant's schema gets made, then its
    // migration fails.
    let conn = pg::connect(&shared).await;
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        "CREATE FUNCTION refuse_tables() RETURNS event_trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'tables are refused'; END $$; \
         CREATE EVENT TRIGGER refuse_tables ON ddl_command_start WHEN TAG IN ('CREATE TABLE') \
         EXECUTE FUNCTION refuse_tables();",
    )
    .await
    .unwrap();
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    let body = json!({ "id": "unlucky", "database_url": shared, "isolation": "schema" });

    let failed = provision(&app, &body).await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    let schema_left: Option<sea_orm::QueryResult> = sea_orm::ConnectionTrait::query_one_raw(
        &conn,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'tenant_unlucky'",
        ),
    )
    .await
    .unwrap();
    assert!(schema_left.is_none(), "the half-made schema is still there");
    let list = app
        .admin(Method::GET, "/api/tenants")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains("unlucky"), "{list}");
    let request = app
        .as_tenant(Method::GET, "unlucky", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(request, 404, "tenant_not_found").await;

    sea_orm::ConnectionTrait::execute_unprepared(&conn, "DROP EVENT TRIGGER refuse_tables")
        .await
        .unwrap();
    let retried = provision(&app, &body).await;
    assert_eq!(retried.status(), 201);
    app.create_product("unlucky", "second time lucky", 1.0)
        .await;
}

#[tokio::test]
async fn with_a_sqlite_control_database_tenants_survive_a_restart_and_reach_other_replicas() {
    let control_dir = tempfile::tempdir().unwrap();
    replicas_share_the_control_database(format!(
        "sqlite://{}/control.db",
        control_dir.path().display()
    ))
    .await;
}

#[tokio::test]
async fn with_a_postgres_control_database_tenants_survive_a_restart_and_reach_other_replicas() {
    replicas_share_the_control_database(pg::fresh_database("trcontrol").await).await;
}

async fn replicas_share_the_control_database(control: String) {
    let replica = |poll: &str| {
        AppSpec::new(standard_tenants())
            .env("CONTROL_DATABASE_URL", &control)
            .env("CONTROL_POLL_SECS", poll)
    };
    let a = spawn_app_with(replica("1")).await;
    let b = spawn_app_with(replica("1")).await;
    let mut body = provision_body(&a, Backend::Sqlite, "shared_one").await;
    body["storage_quota_bytes"] = json!(123_456_789);
    body["max_concurrent_requests"] = json!(7);
    assert_eq!(provision(&a, &body).await.status(), 201);
    a.create_product("shared_one", "made on A", 1.0).await;

    // B learns of the tenant from the control database, and of its suspension.
    let wait_for = |app: &TestApp, status: u16| {
        let request = app.as_tenant(Method::GET, "shared_one", "/api/products");
        async move {
            let started = Instant::now();
            let mut last = 0;
            while started.elapsed() < Duration::from_secs(10) {
                last = request
                    .try_clone()
                    .unwrap()
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                if last == status {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("wanted {status}, last saw {last}");
        }
    };
    wait_for(&b, 200).await;
    let names = b
        .product_names(b.as_tenant(Method::GET, "shared_one", "/api/products"))
        .await;
    assert!(names.contains(&"made on A".to_string()), "{names:?}");
    let suspend = a
        .admin(Method::PATCH, "/api/admin/tenants/shared_one")
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(suspend.status(), 200);
    wait_for(&b, 403).await;

    // A fresh process on the same control database serves it from the start,
    // with the limits it was provisioned with and those changed since.
    let change = a
        .admin(Method::PATCH, "/api/admin/tenants/shared_one")
        .json(&json!({ "rate_limit_per_sec": 40 }))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 200);
    let c = spawn_app_with(replica("0")).await;
    let request = c
        .as_tenant(Method::GET, "shared_one", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(request, 403, "tenant_inactive").await;
    let config = config_of(&c, "shared_one").await;
    assert_eq!(
        config["limits"],
        json!({ "storage_quota_bytes": 123_456_789, "max_concurrent_requests": 7, "rate_limit_per_sec": 40 }),
        "{config}"
    );
}

#[tokio::test]
async fn other_spellings_of_a_database_in_use_and_the_control_database_are_refused() {
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    let dir = app.data_dir();
    let url = |path: String| json!({ "id": "second", "database_url": path });
    let first =
        json!({ "id": "first", "database_url": format!("sqlite://{}/first.db", dir.display()) });
    assert_eq!(provision(&app, &first).await.status(), 201);
    app.create_product("first", "first's own", 1.0).await;
    for other in [
        format!("sqlite://{}/../data/first.db", dir.display()),
        format!("sqlite://{}/./first.db", dir.display()),
        format!("sqlite://{}//first.db", dir.display()),
    ] {
        let refused = provision(&app, &url(other.clone())).await;
        assert_eq!(refused.status(), 409, "{other}");
    }
    // Through a symbolic link to the data directory.
    std::os::unix::fs::symlink(&dir, dir.with_file_name("linked")).unwrap();
    let linked = provision(
        &app,
        &url(format!(
            "sqlite://{}/first.db",
            dir.with_file_name("linked").display()
        )),
    )
    .await;
    assert_error(linked, 409, "conflict").await;
    // The driver decodes `%xx`; the checks here would not.
    let encoded = provision(&app, &url(format!("sqlite://{}/%66irst.db", dir.display()))).await;
    assert_error(encoded, 422, "validation_failed").await;
    // Query parameters the driver lets override the URL's database or server.
    for query in ["dbname=other", "host=127.0.0.1", "port=1", "user=other"] {
        let refused = provision(
            &app,
            &url(format!("postgres://u:p@127.0.0.1:5432/second?{query}")),
        )
        .await;
        assert_error(refused, 422, "validation_failed").await;
    }
    // The control database (beside the data directory in these tests): a tenant
    // there, removed with its database, would take every run-time tenant along.
    let control = dir.join("../control/control.db");
    let refused = provision(&app, &url(format!("sqlite://{}", control.display()))).await;
    assert_error(refused, 422, "validation_failed").await;
    assert!(control.exists());
    let names = app
        .product_names(app.as_tenant(Method::GET, "first", "/api/products"))
        .await;
    assert_eq!(names, ["first's own"]);
}

#[tokio::test]
async fn a_database_that_cannot_be_dropped_keeps_its_tenant_suspended_for_another_try() {
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    let file = app.data_dir().join("stuck.db");
    let body = json!({ "id": "stuck", "database_url": format!("sqlite://{}", file.display()) });
    assert_eq!(provision(&app, &body).await.status(), 201);
    // A directory where the file was: removing it fails.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    std::fs::create_dir(&file).unwrap();
    let delete = || {
        app.admin(
            Method::DELETE,
            "/api/admin/tenants/stuck?drop_database=true",
        )
        .send()
    };
    let failed = delete().await.unwrap();
    assert!(failed.status().is_server_error(), "{}", failed.status());
    // Still listed, suspended: the delete can be run again.
    let config = config_of(&app, "stuck").await;
    assert_eq!(config["is_active"], false, "{config}");
    let request = app
        .as_tenant(Method::GET, "stuck", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(request, 403, "tenant_inactive").await;
    std::fs::remove_dir(&file).unwrap();
    assert_eq!(delete().await.unwrap().status(), 204);
    let gone = app
        .admin(Method::GET, "/api/tenants/stuck/config")
        .send()
        .await
        .unwrap();
    assert_error(gone, 404, "tenant_not_found").await;
}

#[tokio::test]
async fn a_file_tenant_changed_at_run_time_keeps_its_database_when_removed() {
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    app.create_product("demo", "kept", 1.0).await;
    let change = app
        .admin(Method::PATCH, "/api/admin/tenants/demo")
        .json(&json!({ "gst_number": "GST1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 200);
    let refused = app
        .admin(Method::DELETE, "/api/admin/tenants/demo?drop_database=true")
        .send()
        .await
        .unwrap();
    assert_error(refused, 409, "conflict").await;
    // Without the drop, the change goes and the file's entry is back.
    let undone = app
        .admin(Method::DELETE, "/api/admin/tenants/demo")
        .send()
        .await
        .unwrap();
    assert_eq!(undone.status(), 204);
    let names = app
        .product_names(app.as_tenant(Method::GET, "demo", "/api/products"))
        .await;
    assert!(names.contains(&"kept".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_tenant_moved_elsewhere_is_not_removed_back_onto_the_storage_it_left() {
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    app.create_product("demo", "kept", 1.0).await;
    let target = pg::fresh_database("moved_file_tenant").await;
    let moved = app
        .admin(Method::POST, "/api/admin/tenants/demo/move")
        .json(&json!({ "to": target }))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let moves: Value = app
            .admin(Method::GET, "/api/admin/moves")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let record = &moves["moves"][0];
        if record["state"] == "switched" && record["running"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the move did not end: {moves}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let confirmed = app
        .admin(Method::POST, "/api/admin/tenants/demo/move/confirm")
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 204);
    // Removing the run-time copy would bring back the file's entry, on the SQLite
    // file the confirm dropped: a new, empty database.
    let refused = app
        .admin(Method::DELETE, "/api/admin/tenants/demo")
        .send()
        .await
        .unwrap();
    assert_error(refused, 409, "conflict").await;
    let names = app
        .product_names(app.as_tenant(Method::GET, "demo", "/api/products"))
        .await;
    assert!(names.contains(&"kept".to_string()), "{names:?}");
}

#[tokio::test]
async fn the_control_database_holds_no_database_password_and_the_key_can_be_rotated() {
    let (old_key, new_key) = (
        tenant_router::secret::SecretBox::generate_hex(),
        tenant_router::secret::SecretBox::generate_hex(),
    );
    let control_dir = tempfile::tempdir().unwrap();
    let control_file = control_dir.path().join("control.db");
    let control = format!("sqlite://{}", control_file.display());
    let with_keys = |current: &str, previous: Option<&str>| {
        let mut spec = AppSpec::new(standard_tenants())
            .env("CONTROL_DATABASE_URL", &control)
            .env("SECRET_KEY", current);
        if let Some(previous) = previous {
            spec = spec.env("SECRET_KEY_PREVIOUS", previous);
        }
        spec
    };
    // A PostgreSQL tenant: its URL carries the test server's password.
    let url = pg::fresh_database("trk").await;
    let password = url::Url::parse(&url)
        .unwrap()
        .password()
        .unwrap()
        .to_string();
    let app = spawn_app_with(with_keys(&old_key, None)).await;
    let created = provision(&app, &json!({ "id": "sealed", "database_url": url })).await;
    assert_eq!(created.status(), 201);

    let raw = |path: &std::path::Path| {
        // The file and its write-ahead log, as an attacker copying them would get.
        let mut bytes = std::fs::read(path).unwrap_or_default();
        bytes.extend(std::fs::read(format!("{}-wal", path.display())).unwrap_or_default());
        String::from_utf8_lossy(&bytes).into_owned()
    };
    assert!(
        !raw(&control_file).contains(&password),
        "the control database holds the password"
    );
    assert!(raw(&control_file).contains("enc:v1:"));

    // A move on record, its URLs sealed with the old key as well.
    let target = format!("{url}_target");
    let old_settings = tenant_router::Settings::from_map(&std::collections::HashMap::from([
        ("SETTINGS_FILE".to_string(), String::new()),
        ("SECRET_KEY".to_string(), old_key.clone()),
    ]))
    .unwrap();
    let old_store = tenant_router::control::ControlStore::open(
        &control,
        std::sync::Arc::new(old_settings.secret_box().unwrap()),
    )
    .await
    .unwrap();
    old_store.start_move("sealed", &url, &target).await.unwrap();

    // Rotation: the new key with the old one beside it serves the tenant...
    let rotating = spawn_app_with(with_keys(&new_key, Some(&old_key))).await;
    rotating
        .create_product("sealed", "during rotation", 1.0)
        .await;
    // ...re-sealing moves every URL to the new key...
    let settings_env = std::collections::HashMap::from([
        ("SETTINGS_FILE".to_string(), String::new()),
        ("SECRET_KEY".to_string(), new_key.clone()),
        ("SECRET_KEY_PREVIOUS".to_string(), old_key.clone()),
    ]);
    let settings = tenant_router::Settings::from_map(&settings_env).unwrap();
    let store = tenant_router::control::ControlStore::open(
        &control,
        std::sync::Arc::new(settings.secret_box().unwrap()),
    )
    .await
    .unwrap();
    // The tenant's URL and the move's two.
    assert_eq!(store.reseal_all().await.unwrap(), 3);
    assert_eq!(
        store.reseal_all().await.unwrap(),
        0,
        "resealing twice changes nothing"
    );
    let new_settings = tenant_router::Settings::from_map(&std::collections::HashMap::from([
        ("SETTINGS_FILE".to_string(), String::new()),
        ("SECRET_KEY".to_string(), new_key.clone()),
    ]))
    .unwrap();
    let new_store = tenant_router::control::ControlStore::open(
        &control,
        std::sync::Arc::new(new_settings.secret_box().unwrap()),
    )
    .await
    .unwrap();
    let record = new_store.find_move("sealed").await.unwrap().unwrap();
    assert_eq!(record.target_url.expose(), target);
    new_store.finish_move("sealed").await.unwrap();
    // ...after which the new key alone serves it, and the old one no longer does.
    let new_only = spawn_app_with(with_keys(&new_key, None)).await;
    new_only
        .create_product("sealed", "after rotation", 1.0)
        .await;
    let old_only = spawn_app_with(with_keys(&old_key, None)).await;
    let refused = old_only
        .as_tenant(Method::GET, "sealed", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(refused, 404, "tenant_not_found").await;
    assert!(!raw(&control_file).contains(&password));
}

#[tokio::test]
async fn replicas_starting_together_on_new_databases_both_come_up_and_serve() {
    // SQLite has no advisory lock: two processes creating the same control database
    // or tenant database at once race on the migration table. Several rounds, since
    // the race is a matter of timing.
    for round in 0..5 {
        let shared = tempfile::tempdir().unwrap();
        let toml = format!(
            "[tenants.together]\ndatabase_url = \"sqlite://{}/together.db\"\n",
            shared.path().display()
        );
        let control = format!("sqlite://{}/control.db?mode=rwc", shared.path().display());
        let replica = || AppSpec::from_toml(&toml).env("CONTROL_DATABASE_URL", &control);
        let (a, b) = tokio::join!(spawn_app_with(replica()), spawn_app_with(replica()));
        let first = |app: &TestApp| {
            app.as_tenant(Method::GET, "together", "/api/products")
                .send()
        };
        let (from_a, from_b) = tokio::join!(first(&a), first(&b));
        for r in [from_a.unwrap(), from_b.unwrap()] {
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_eq!(status, 200, "round {round}: {body}");
        }
    }
}

/// A provisioning whose request is cut short (here by its deadline, while its
/// database file is locked by another process) runs on to its end: the id is
/// never left claimed by a provisioning that no longer runs.
#[tokio::test]
async fn a_provisioning_cut_short_by_its_deadline_runs_to_its_end() {
    use sea_orm::ConnectionTrait;
    let app =
        spawn_app_with(AppSpec::new(standard_tenants()).env("HTTP_REQUEST_TIMEOUT_SECS", "1"))
            .await;
    std::fs::create_dir_all(app.data_dir()).unwrap();
    let file = app.data_dir().join("held.db");
    let mut options = sea_orm::ConnectOptions::new(format!("sqlite://{}?mode=rwc", file.display()));
    options.max_connections(1).min_connections(1);
    let holder = tenant_router::db::connect(options).await.unwrap();
    holder
        .execute_unprepared(
            "CREATE TABLE held (x INTEGER); BEGIN EXCLUSIVE; INSERT INTO held VALUES (1)",
        )
        .await
        .unwrap();
    let body = json!({ "id": "held", "database_url": format!("sqlite://{}", file.display()) });
    let cut_short = provision(&app, &body).await;
    assert_error(cut_short, 503, "timeout").await;
    holder.execute_unprepared("COMMIT").await.unwrap();
    holder.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = provisionings(&app).await;
        if pending["provisionings"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the provisioning stays claimed: {pending}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It finished (the lock went before the file's busy timeout), or undid
    // itself: either way a retry is answered for what is, never "stuck".
    let config = app
        .admin(Method::GET, "/api/tenants/held/config")
        .send()
        .await
        .unwrap();
    if config.status() == 404 {
        assert_eq!(provision(&app, &body).await.status(), 201);
    } else {
        assert_eq!(config.status(), 200);
    }
}

/// Holds, until the transaction returned ends, the advisory lock that a migration
/// of `schema` (empty: database mode) in `database` takes (`db::migrate`: the
/// FNV-1a of its key): a provisioning there waits at its migration.
async fn hold_migration_lock(database: &str, schema: &str) -> sea_orm::DatabaseTransaction {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let name = database
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let hash = format!("tenant-router:{name}:{schema}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let key = i64::from_ne_bytes(hash.to_ne_bytes());
    let held = pg::connect(database).await.begin().await.unwrap();
    held.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({key})"))
        .await
        .unwrap();
    held
}

/// A database tenant's database is not dropped while a schema tenant is being
/// provisioned in it: that tenant is not served yet, but its claim is on record.
#[tokio::test]
async fn a_database_is_not_dropped_under_a_schema_tenant_being_provisioned_in_it() {
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    let database = pg::fresh_database("trclaim").await;
    let holder = json!({ "id": "holder", "database_url": database });
    assert_eq!(provision(&app, &holder).await.status(), 201);
    // The guest's migration waits on its lock, held here.
    let held = hold_migration_lock(&database, "tenant_guest").await;
    let guest = json!({ "id": "guest", "database_url": database, "isolation": "schema" });
    let guest_app = &app;
    let provisioning = async move { provision(guest_app, &guest).await.status().as_u16() };
    let removal = async {
        // Once the guest's claim is on record:
        let since = Instant::now();
        loop {
            let listed = provisionings(&app).await;
            if listed.to_string().contains("\"guest\"") {
                break;
            }
            assert!(since.elapsed() < Duration::from_secs(30), "{listed}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let response = app
            .admin(
                Method::DELETE,
                "/api/admin/tenants/holder?drop_database=true",
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        held.commit().await.unwrap();
        (status, text)
    };
    let (provisioned, (removed, why)) = tokio::join!(provisioning, removal);
    assert_eq!(removed, 409, "{why}");
    assert!(why.contains("guest"), "{why}");
    assert_eq!(provisioned, 201);
    let response = app
        .as_tenant(Method::GET, "guest", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// An operator who rolls back a provisioning still under way (`?force=true`)
/// wins: the provisioning, when it gets on, finds its claim gone and answers 409,
/// instead of serving a tenant that the control database no longer holds; and a
/// provisioning of the same id made meanwhile in the same process keeps its own
/// claim (the first can neither finish nor release it).
#[tokio::test]
async fn a_provisioning_rolled_back_by_force_while_it_runs_does_not_come_back() {
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    // An existing database: the roll-back keeps it (provisioning did not make it).
    let database = pg::fresh_database("trforce").await;
    let held = hold_migration_lock(&database, "").await;
    let body = json!({ "id": "overtaken", "database_url": database });
    let provisioning = async { provision(&app, &body).await };
    let listed = || async {
        provisionings(&app)
            .await
            .to_string()
            .contains("\"overtaken\"")
    };
    // The operator rolls it back, and the client provisions the id again in the
    // same process while the first provisioning still waits.
    let retry = async {
        let since = Instant::now();
        loop {
            let response = app
                .admin(
                    Method::DELETE,
                    "/api/admin/provisionings/overtaken?force=true",
                )
                .send()
                .await
                .unwrap();
            if response.status() == 204 {
                break;
            }
            assert_eq!(response.status(), 404, "{}", response.text().await.unwrap());
            assert!(since.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = async { provision(&app, &body).await };
        let release = async {
            let since = Instant::now();
            while !listed().await {
                assert!(since.elapsed() < Duration::from_secs(30));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            held.commit().await.unwrap();
        };
        tokio::join!(again, release).0
    };
    let (first, second) = tokio::join!(provisioning, retry);
    // The first finds its claim gone; the second, its own claim, is the tenant.
    assert_error(first, 409, "conflict").await;
    assert_eq!(second.status(), 201, "{}", second.text().await.unwrap());
    let response = app
        .as_tenant(Method::GET, "overtaken", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
