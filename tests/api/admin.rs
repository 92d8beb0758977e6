//! Operator routes (admin token) and public branding; no database URL ever shows.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, AppSpec, assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn tenant_routes_need_the_admin_token() {
    let app = spawn_app().await;
    for path in [
        "/api/tenants",
        "/api/tenants/demo/config",
        "/api/tenants/demo/health",
        "/api/admin/pools",
    ] {
        let none = app.request(Method::GET, path).send().await.unwrap();
        assert_error(none, 401, "unauthorized").await;
        let wrong = app
            .request(Method::GET, path)
            .bearer_auth("test-admin-token-0123456780")
            .send()
            .await
            .unwrap();
        assert_error(wrong, 401, "unauthorized").await;
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        let lower = app
            .request(Method::GET, path)
            .header("Authorization", format!("bearer {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(lower.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_tenant_list_shows_everything_but_the_database_url() {
    let app = spawn_app().await;
    let response = app.admin(Method::GET, "/api/tenants").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme_manufacturing", "demo", "dental_clinic_abc"]);
    assert!(!text.contains("database_url"), "{text}");
    assert!(!text.contains("sqlite"), "{text}");
    assert!(!text.contains(".db"), "{text}");

    let config = app
        .admin(Method::GET, "/api/tenants/dental_clinic_abc/config")
        .send()
        .await
        .unwrap();
    let text = config.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["domain"], "dental");
    assert_eq!(body["subdomain"], "dental-clinic-abc");
    assert!(
        body["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "patient_management")
    );
    assert!(!text.contains("sqlite") && !text.contains(".db"), "{text}");
}

#[tokio::test]
async fn path_ids_are_validated_and_unknown_ones_are_not_found() {
    let app = spawn_app().await;
    let invalid = app
        .admin(Method::GET, "/api/tenants/Bad%20Id/config")
        .send()
        .await
        .unwrap();
    assert_error(invalid, 400, "invalid_tenant_id").await;
    let unknown = app
        .admin(Method::GET, "/api/tenants/nobody/config")
        .send()
        .await
        .unwrap();
    assert_error(unknown, 404, "tenant_not_found").await;
    // A migration run's id that is not a number (not even UTF-8) is a bad id,
    // in JSON too; a number that names no run is not found.
    for (job, status, code) in [
        ("%ff", 422, "validation_failed"),
        ("abc", 422, "validation_failed"),
        ("-1", 422, "validation_failed"),
        ("12345", 404, "not_found"),
    ] {
        let response = app
            .admin(Method::GET, &format!("/api/admin/migrations/{job}"))
            .send()
            .await
            .unwrap();
        let error = assert_error(response, status, code).await;
        if status == 422 {
            assert_eq!(error["error"]["field"], "job", "{error}");
        }
    }
    let branding = app
        .request(Method::GET, "/api/tenants/nobody/branding")
        .send()
        .await
        .unwrap();
    assert_error(branding, 404, "tenant_not_found").await;
    assert!(app.data_files().is_empty());
}

#[tokio::test]
async fn branding_is_public() {
    let app = spawn_app().await;
    let response = app
        .request(Method::GET, "/api/tenants/demo/branding")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["branding"]["company_name"], "demo Ltd");
    assert_eq!(body["branding"]["primary_color"], "#2E86AB");
    assert_eq!(body["contact_info"]["email"], "info@demo.example");
}

#[tokio::test]
async fn tenant_health_pings_its_database() {
    let app = spawn_app().await;
    let response = app
        .admin(Method::GET, "/api/tenants/demo/health")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(body["round_trip_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(app.pool_stats().await["pools_open"], 1);
}

#[tokio::test]
async fn service_health_needs_nothing() {
    let app = spawn_app().await;
    let response = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({ "status": "ok" })
    );
}

/// `/ready` answers 200 while the control database answers, and 503 `not_ready`
/// (in bounded time) once it does not, while `/health` (alive) stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_control_database_and_health_does_not() {
    let cluster = crate::pg::PgCluster::start(20);
    let app = spawn_app_with(AppSpec::new(vec![]).env("CONTROL_DATABASE_URL", &cluster.url)).await;
    let ready = || app.request(Method::GET, "/ready").send();
    let response = ready().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({ "status": "ready" })
    );

    cluster.stop();
    let started = std::time::Instant::now();
    let response = ready().await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_error(response, 503, "not_ready").await;
    let health = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn wrong_admin_tokens_are_throttled_per_address_and_any_length_is_refused_alike() {
    let app = spawn_app_with(
        AppSpec::new(vec![])
            .env("ADMIN_MAX_FAILURES_PER_ADDRESS", "4")
            .env("TRUST_FORWARDED_FOR", "true"),
    )
    .await;
    let pools = |from: &str, token: &str| {
        app.request(Method::GET, "/api/admin/pools")
            .header("x-forwarded-for", from)
            .bearer_auth(token)
            .send()
    };
    // Requests with no credential at all guess nothing (a page elsewhere can make
    // an operator's browser send them): 401, and they do not count.
    for _ in 0..10 {
        let bare = app
            .request(Method::GET, "/api/admin/pools")
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_error(bare, 401, "unauthorized").await;
    }
    // Wrong tokens of every length, one byte off included: 401 alike.
    let almost = format!("{}x", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    for wrong in [
        "x",
        almost.as_str(),
        &format!("{ADMIN_TOKEN}0"),
        &"y".repeat(500),
    ] {
        assert_error(
            pools("203.0.113.9", wrong).await.unwrap(),
            401,
            "unauthorized",
        )
        .await;
    }
    // The address is refused now, the right token included...
    let refused = pools("203.0.113.9", ADMIN_TOKEN).await.unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 429, "too_many_requests").await;
    // ...while an operator elsewhere is not.
    assert_eq!(
        pools("198.51.100.7", ADMIN_TOKEN).await.unwrap().status(),
        200
    );
}
