//! The admin console's server side: its pages and their policy, the session
//! cookie, CSRF on every write, and the admin API it is built on (the live list
//! of tenants, migration runs, a tenant's audit log). The browser tests are in
//! `console_browser.rs`.

use std::time::{Duration, Instant};

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, AppSpec, Backend, Tenant, TestApp, assert_error, spawn_app, spawn_app_with,
    standard_tenants,
};

/// A signed-in console: its cookie (as a `Cookie` header) and CSRF token.
pub struct ConsoleSession {
    pub cookie: String,
    pub csrf: String,
}

pub async fn sign_in(app: &TestApp) -> ConsoleSession {
    let response = app
        .request(Method::POST, "/admin/session")
        .json(&json!({ "token": ADMIN_TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    ConsoleSession {
        cookie: set_cookie.split(';').next().unwrap().to_string(),
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
    }
}

impl ConsoleSession {
    /// A request as the console's page makes it: the cookie, no CSRF token.
    fn request(&self, app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
        app.request(method, path).header("Cookie", &self.cookie)
    }

    /// A write as the console makes it: the cookie and the CSRF token.
    fn write(&self, app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(app, method, path)
            .header("X-CSRF-Token", &self.csrf)
    }
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_under_a_strict_policy_and_holds_no_secret() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/admin", "text/html"),
        ("/admin/", "text/html"),
        ("/admin/console.js", "text/javascript"),
        ("/admin/console.css", "text/css"),
    ] {
        let response = app.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
            "base-uri 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        assert!(!body.contains(ADMIN_TOKEN), "{path}");
        assert!(!body.contains("sqlite://data/"), "{path}");
    }
    // Its error answers carry the same headers, whichever layer gave them.
    let big = "x".repeat(300 * 1024);
    for (method, path, body, status) in [
        (Method::POST, "/admin", String::new(), 405),
        (Method::PUT, "/admin/session", String::new(), 405),
        (Method::POST, "/admin/session", big, 413),
        (Method::GET, "/admin/nothing-here", String::new(), 404),
    ] {
        let response = app.request(method, path).body(body).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let headers = response.headers();
        assert!(
            headers.contains_key("content-security-policy"),
            "{path} {status}"
        );
        assert_eq!(headers["x-frame-options"], "DENY", "{path} {status}");
        assert_eq!(headers["cache-control"], "no-store", "{path} {status}");
        assert_eq!(
            headers["x-content-type-options"], "nosniff",
            "{path} {status}"
        );
    }
    // The page loads nothing inline: no script or style in the markup itself.
    let page = app
        .request(Method::GET, "/admin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<script src="/admin/console.js" defer></script>"#));
    assert_eq!(page.matches("<script").count(), 1);
    assert!(!page.contains("<style") && !page.contains(" style="));
    assert!(!page.contains(" onclick=") && !page.contains(" onload="));
}

#[tokio::test]
async fn signing_in_sets_an_http_only_strict_cookie_that_stands_for_the_admin_token() {
    let app = spawn_app().await;
    // Without a session the console's data is refused, like the admin API's.
    let response = app
        .request(Method::GET, "/admin/session")
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["signed_in"], false);
    for path in [
        "/api/admin/tenants",
        "/api/tenants",
        "/api/admin/migrations",
    ] {
        let response = app.request(Method::GET, path).send().await.unwrap();
        assert_error(response, 401, "unauthorized").await;
    }

    // A wrong token gets no cookie.
    let response = app
        .request(Method::POST, "/admin/session")
        .json(&json!({ "token": "not-the-token" }))
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("set-cookie"));
    assert_error(response, 401, "unauthorized").await;
    // Neither does a page of another site, even with the right token.
    let response = app
        .request(Method::POST, "/admin/session")
        .header("Sec-Fetch-Site", "cross-site")
        .json(&json!({ "token": ADMIN_TOKEN }))
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("set-cookie"));
    assert_error(response, 403, "forbidden").await;
    // A body that is not the sign-in form is refused.
    let response = app
        .request(Method::POST, "/admin/session")
        .json(&json!({ "token": ADMIN_TOKEN, "remember": true }))
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "validation_failed").await;

    let response = app
        .request(Method::POST, "/admin/session")
        .json(&json!({ "token": ADMIN_TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert!(set_cookie.starts_with("tr_console="), "{set_cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(!set_cookie.contains(ADMIN_TOKEN) && !body.to_string().contains(ADMIN_TOKEN));
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // The cookie opens the admin API for reads, and /admin/session tells the page
    // its CSRF token.
    let response = app
        .request(Method::GET, "/api/admin/tenants")
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session: Value = app
        .request(Method::GET, "/admin/session")
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["signed_in"], true);
    assert_eq!(session["csrf_token"], body["csrf_token"]);

    // A cookie altered in any way opens nothing.
    let forged = format!("{}x", cookie);
    let response = app
        .request(Method::GET, "/api/admin/tenants")
        .header("Cookie", &forged)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;

    // The cookie is Secure (HTTPS only) but for plain HTTP on this machine's
    // loopback address, where the tests and `cargo run` reach it.
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    for (host, proto, secure) in [
        ("admin.example.com", None, true),
        ("admin.example.com", Some("https"), true),
        ("admin.example.com", Some("http"), true),
        ("127.0.0.1:8000", Some("https"), true),
        ("localhost:8000", None, false),
        ("[::1]:8000", Some("http"), false),
    ] {
        let mut request = app
            .request(Method::POST, "/admin/session")
            .header("Host", host)
            .json(&json!({ "token": ADMIN_TOKEN }));
        if let Some(proto) = proto {
            request = request.header("X-Forwarded-Proto", proto);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 201, "{host} {proto:?}");
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            cookie.contains("; Secure"),
            secure,
            "{host} {proto:?}: {cookie}"
        );
    }
}

#[tokio::test]
async fn a_console_write_without_its_sessions_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let session = sign_in(&app).await;
    let other = sign_in(&app).await;
    assert_ne!(session.csrf, other.csrf);
    let dir = app.data_dir();
    let new_tenant = json!({
        "id": "csrf_probe",
        "domain": "dental",
        "database_url": format!("sqlite://{}/csrf_probe.db", dir.display()),
    });

    // No token, another session's token, an empty one: 403, nothing made.
    for csrf in [None, Some(other.csrf.as_str()), Some("")] {
        let mut request = session
            .request(&app, Method::POST, "/api/admin/tenants")
            .json(&new_tenant);
        if let Some(csrf) = csrf {
            request = request.header("X-CSRF-Token", csrf);
        }
        assert_error(request.send().await.unwrap(), 403, "forbidden").await;
    }
    let response = app
        .admin(Method::GET, "/api/tenants/csrf_probe/config")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "tenant_not_found").await;
    assert!(!app.data_files().iter().any(|f| f.starts_with("csrf_probe")));

    // Every kind of write is guarded: PATCH, DELETE, the migrate action, a run.
    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/admin/tenants/demo",
            json!({ "is_active": false }),
        ),
        (Method::DELETE, "/api/admin/tenants/demo", Value::Null),
        (Method::POST, "/api/admin/tenants/demo/migrate", Value::Null),
        (Method::POST, "/api/admin/migrations", json!({})),
    ] {
        let response = session
            .request(&app, method.clone(), path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "forbidden").await;
    }
    let demo: Value = app
        .admin(Method::GET, "/api/tenants/demo/config")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(demo["is_active"], true, "the refused PATCH changed nothing");
    let runs: Value = app
        .admin(Method::GET, "/api/admin/migrations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["jobs"], json!([]), "the refused run did not start");

    // With its token the same write goes through.
    let response = session
        .write(&app, Method::POST, "/api/admin/tenants")
        .json(&new_tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // A client with the admin token itself needs no CSRF token.
    let response = app
        .admin(Method::PATCH, "/api/admin/tenants/csrf_probe")
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let app = spawn_app().await;
    let session = sign_in(&app).await;
    // Signing out is a write: it needs the CSRF token too.
    // Without it the session is not ended, but this browser's cookie is cleared.
    let response = session
        .request(&app, Method::DELETE, "/admin/session")
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_error(response, 403, "forbidden").await;
    let response = session
        .request(&app, Method::GET, "/api/admin/tenants")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a refused sign-out ends nothing");
    let response = session
        .write(&app, Method::DELETE, "/admin/session")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("tr_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let response = session
        .request(&app, Method::GET, "/api/admin/tenants")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
}

/// Every answer the console reads for a tenant and the fleet.
async fn console_reads(app: &TestApp, session: &ConsoleSession, tenant: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    // (The page and its script are the same for everyone: the first test reads
    // them for the token.)
    let paths = [
        "/admin/session".to_string(),
        "/api/admin/tenants".to_string(),
        format!("/api/admin/tenants?q={tenant}"),
        format!("/api/tenants/{tenant}/config"),
        format!("/api/tenants/{tenant}/health"),
        format!("/api/admin/tenants/{tenant}/migrations"),
        format!("/api/admin/tenants/{tenant}/usage"),
        format!("/api/admin/tenants/{tenant}/audit"),
        "/api/admin/migrations".to_string(),
        "/api/admin/pools".to_string(),
    ];
    for path in paths {
        let response = session
            .request(app, Method::GET, &path)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        bodies.push(format!("{path}\n{headers}\n{body}"));
    }
    bodies
}

async fn no_console_answer_holds_a_database_url_or_the_admin_token(backend: Backend) {
    let app = spawn_app_with(AppSpec::new(standard_tenants()).on(backend)).await;
    let session = sign_in(&app).await;
    app.create_product("demo", "Widget", 1.0).await;
    let run = session
        .write(&app, Method::POST, "/api/admin/migrations")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 202);
    let run: Value = run.json().await.unwrap();
    wait_for_run(&app, run["id"].as_u64().unwrap()).await;
    // The test server's password, where it has one.
    let server_password = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|_| backend != Backend::Sqlite)
        .and_then(|u| url::Url::parse(&u).ok())
        .and_then(|u| u.password().map(str::to_string));
    for body in console_reads(&app, &session, "demo").await {
        for secret in [ADMIN_TOKEN, "sqlite://", "postgres://"]
            .into_iter()
            .chain(server_password.as_deref())
        {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
        assert!(
            !body.contains(&app.dir.path().display().to_string()),
            "a file path in {body}"
        );
    }
}

crate::on_every_backend!(no_console_answer_holds_a_database_url_or_the_admin_token);

/// Waits for a migration run to finish and returns it.
async fn wait_for_run(app: &TestApp, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run: Value = app
            .admin(Method::GET, &format!("/api/admin/migrations/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "finished" {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn list(app: &TestApp, query: &str) -> Value {
    let response = app
        .admin(Method::GET, &format!("/api/admin/tenants{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_tenant_list_searches_filters_pages_and_shows_each_tenants_live_state() {
    let mut tenants: Vec<Tenant> = (0..23)
        .map(|i| Tenant::new(&format!("clinic_{i:02}"), "dental"))
        .collect();
    tenants.push(Tenant::new("paused", "manufacturing").with("is_active = false"));
    let app = spawn_app_with(AppSpec::new(tenants)).await;

    // Pages of 20 by id, with the total and the next offset.
    let first = list(&app, "").await;
    assert_eq!(first["total"], 24);
    assert_eq!(first["limit"], 20);
    assert_eq!(first["next_offset"], 20);
    assert_eq!(ids(&first)[0], "clinic_00");
    let second = list(&app, "?offset=20").await;
    assert_eq!(
        ids(&second),
        ["clinic_20", "clinic_21", "clinic_22", "paused"]
    );
    assert_eq!(second["next_offset"], Value::Null);
    // An offset past the end (however large) is an empty last page.
    let beyond = list(&app, &format!("?offset={}", u64::MAX)).await;
    assert_eq!(ids(&beyond), Vec::<String>::new());
    assert_eq!(beyond["next_offset"], Value::Null);
    let small = list(&app, "?limit=5&offset=5").await;
    assert_eq!(ids(&small).len(), 5);
    assert_eq!(ids(&small)[0], "clinic_05");

    // Search by id, company name (any case), e-mail and domain; filter by status.
    assert_eq!(ids(&list(&app, "?q=clinic_1").await).len(), 10);
    assert_eq!(ids(&list(&app, "?q=CLINIC_07%20LTD").await), ["clinic_07"]);
    assert_eq!(
        ids(&list(&app, "?q=info%40clinic_05.example").await),
        ["clinic_05"]
    );
    assert_eq!(ids(&list(&app, "?q=manufact").await), ["paused"]);
    assert_eq!(ids(&list(&app, "?status=suspended").await), ["paused"]);
    assert_eq!(list(&app, "?status=active").await["total"], 23);
    assert_eq!(list(&app, "?q=nobody").await["total"], 0);

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?status=deleted", "status"),
        ("?offset=-1", "offset"),
    ] {
        let response = app
            .admin(Method::GET, &format!("/api/admin/tenants{query}"))
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 422, "validation_failed").await;
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }

    // A tenant nobody has used is idle: listing it opens nothing.
    let row = |page: &Value, id: &str| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    };
    let before = row(&list(&app, "?q=clinic_03").await, "clinic_03");
    assert_eq!(before["health"], "idle");
    assert_eq!(before["pool_open"], false);
    assert_eq!(before["requests_total"], 0);
    assert_eq!(before["server"], "sqlite");
    assert_eq!(app.pool_stats().await["pools_open"], 0);

    // Used: its pool is open, a round trip is measured, its requests are counted.
    for _ in 0..3 {
        let response = app
            .as_tenant(Method::GET, "clinic_03", "/api/products")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let after = row(&list(&app, "?q=clinic_03").await, "clinic_03");
    assert_eq!(after["pool_open"], true, "{after}");
    assert_eq!(after["health"], "ok", "{after}");
    assert!(after["round_trip_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(after["requests_total"], 3);
    assert_eq!(after["errors_total"], 0);
}

#[tokio::test]
async fn watching_the_list_does_not_keep_an_idle_tenants_pool_open() {
    let app = spawn_app_with(
        AppSpec::new(vec![Tenant::new("watched", "dental")]).env("POOL_IDLE_TIMEOUT_SECS", "1"),
    )
    .await;
    let response = app
        .as_tenant(Method::GET, "watched", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = list(&app, "").await;
    assert_eq!(first["items"][0]["health"], "ok", "{first}");
    // The console refreshes the list; the pool still goes idle and closes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = list(&app, "").await;
        if page["items"][0]["pool_open"] == false {
            assert_eq!(page["items"][0]["health"], "idle");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the list kept the pool open: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_tenant_whose_database_fails_shows_its_errors_and_open_breaker_in_the_list() {
    let port = closed_port();
    let toml = format!(
        "[tenants.unreachable]\ndatabase_url = \"postgres://router:pw@127.0.0.1:{port}/gone\"\ndomain = \"default\"\n"
    );
    let app = spawn_app_with(AppSpec::from_toml(&toml)).await;
    for _ in 0..2 {
        let response = app
            .as_tenant(Method::GET, "unreachable", "/api/products")
            .send()
            .await
            .unwrap();
        assert_error(response, 503, "tenant_unavailable").await;
    }
    let page = list(&app, "").await;
    let row = &page["items"][0];
    assert_eq!(row["id"], "unreachable");
    assert_eq!(row["server"], format!("127.0.0.1:{port}"));
    assert_eq!(row["isolation"], "database");
    assert_eq!(row["breaker_open"], true, "{row}");
    assert_eq!(row["health"], "unavailable", "{row}");
    assert_eq!(row["requests_total"], 2);
    assert_eq!(row["errors_total"], 2);
    assert!(!page.to_string().contains("router:pw"));
}

#[tokio::test]
async fn a_migration_run_goes_on_in_the_background_and_reports_each_tenant() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[tenants.fresh_a]\ndatabase_url = \"sqlite://{d}/fresh_a.db?mode=rwc\"\ndomain = \"dental\"\n\
         [tenants.fresh_b]\ndatabase_url = \"sqlite://{d}/fresh_b.db?mode=rwc\"\ndomain = \"manufacturing\"\n\
         [tenants.unreachable]\ndatabase_url = \"postgres://router:secretpw@127.0.0.1:{port}/gone\"\ndomain = \"default\"\n",
        d = dir.path().display()
    );
    let app = spawn_app_with(AppSpec::from_toml(&toml)).await;
    // fresh_b is opened (and so migrated) before the run; fresh_a never was.
    let response = app
        .as_tenant(Method::GET, "fresh_b", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let response = app
        .admin(Method::POST, "/api/admin/migrations")
        .json(&json!({ "concurrency": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["total"], 3);
    let run = wait_for_run(&app, started["id"].as_u64().unwrap()).await;
    let state = |id: &str| {
        run["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(state("fresh_a")["state"], "migrated", "{run}");
    assert!(!state("fresh_a")["pending"].as_array().unwrap().is_empty());
    assert_eq!(state("fresh_b")["state"], "up_to_date", "{run}");
    let failed = state("unreachable");
    assert_eq!(failed["state"], "failed", "{run}");
    let error = failed["error"].as_str().unwrap();
    assert!(!error.is_empty());
    assert!(!run.to_string().contains("secretpw") && !run.to_string().contains("postgres://"));
    assert_eq!(
        (
            &run["migrated"],
            &run["up_to_date"],
            &run["failed"],
            &run["done"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(3))
    );
    // fresh_a serves what the run migrated.
    let response = app
        .as_tenant(Method::GET, "fresh_a", "/api/dental/patients")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Re-running the failed one: a run of that tenant alone.
    let response = app
        .admin(Method::POST, "/api/admin/migrations")
        .json(&json!({ "tenants": ["unreachable"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let rerun: Value = response.json().await.unwrap();
    let rerun = wait_for_run(&app, rerun["id"].as_u64().unwrap()).await;
    assert_eq!(rerun["total"], 1);
    assert_eq!(rerun["tenants"][0]["state"], "failed");

    // The runs are listed newest first.
    let runs: Value = app
        .admin(Method::GET, "/api/admin/migrations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["jobs"][0]["id"], rerun["id"]);
    assert_eq!(runs["jobs"][1]["id"], run["id"]);
    // The list has each run's counts; its tenants are in the run's own answer.
    assert_eq!(runs["jobs"][1]["failed"], 1);
    assert_eq!(runs["jobs"][1]["tenants"], json!([]));

    // Bad requests.
    for (body, status, code) in [
        (json!({ "tenants": ["nobody"] }), 404, "tenant_not_found"),
        (json!({ "tenants": ["../x"] }), 422, "validation_failed"),
        (json!({ "tenants": [] }), 422, "validation_failed"),
        (json!({ "concurrency": 0 }), 422, "validation_failed"),
        (json!({ "concurrency": 17 }), 422, "validation_failed"),
        (json!({ "everything": true }), 422, "validation_failed"),
    ] {
        let response = app
            .admin(Method::POST, "/api/admin/migrations")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, status, code).await;
    }
    let response = app
        .admin(Method::GET, "/api/admin/migrations/999")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    let response = app
        .admin(Method::GET, "/api/admin/migrations/x")
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "validation_failed").await;
}

#[tokio::test]
async fn an_operator_reads_a_tenants_recent_audit_rows() {
    let app = spawn_app().await;
    app.create_product("demo", "Audited widget", 2.5).await;
    let response: Response = app
        .admin(Method::GET, "/api/admin/tenants/demo/audit?limit=5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    let rows = page["items"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["entity"] == "products" && r["action"] == "create"),
        "{page}"
    );
    // Another tenant's log does not hold it.
    let other: Value = app
        .admin(Method::GET, "/api/admin/tenants/dental_clinic_abc/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !other["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["entity"] == "products")
    );
    let response = app
        .request(Method::GET, "/api/admin/tenants/demo/audit")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
    let response = app
        .admin(Method::GET, "/api/admin/tenants/nobody/audit")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "tenant_not_found").await;
}
