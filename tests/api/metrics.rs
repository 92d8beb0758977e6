//! `GET /metrics`: per-tenant series with the right counts after real traffic, the
//! connection layer's gauges, the admin token, and a bounded number of series
//! however many tenants there are.

use std::collections::BTreeSet;

use futures::StreamExt;
use reqwest::Method;

use crate::helpers::{AppSpec, Tenant, TestApp, spawn_app, spawn_app_with};

async fn scrape(app: &TestApp) -> String {
    let response = app.admin(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.unwrap()
}

/// The value of the sample `name{labels}`, if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test]
async fn a_request_refused_before_it_reaches_a_known_tenant_is_still_that_tenants() {
    let mut tenants = crate::helpers::standard_tenants();
    tenants.push(Tenant::new("closed_clinic", "dental").with("is_active = false"));
    let app = spawn_app_with(AppSpec::new(tenants).with_auth()).await;
    app.add_user("demo", "dora", "a long enough password", "staff")
        .await;
    let demo = app.login("demo", "dora", "a long enough password").await;
    let suspended = app
        .as_tenant(Method::GET, "closed_clinic", "/api/products")
        .send()
        .await
        .unwrap();
    let mismatch = app
        .as_tenant(Method::GET, "acme_manufacturing", "/api/products")
        .bearer_auth(&demo)
        .send()
        .await
        .unwrap();
    let no_credential = app
        .as_tenant(Method::GET, "dental_clinic_abc", "/api/products")
        .send()
        .await
        .unwrap();
    let unknown = app
        .as_tenant(Method::GET, "no_such_tenant", "/api/products")
        .send()
        .await
        .unwrap();
    for (response, status, tenant) in [
        (&suspended, 403, Some("closed_clinic")),
        (&mismatch, 403, Some("acme_manufacturing")),
        (&no_credential, 401, Some("dental_clinic_abc")),
        (&unknown, 404, None),
    ] {
        assert_eq!(response.status(), status, "{tenant:?}");
        let header = response
            .headers()
            .get("x-tenant-id")
            .map(|v| v.to_str().unwrap());
        assert_eq!(header, tenant, "{status}");
    }
    let text = scrape(&app).await;
    for tenant in [
        "closed_clinic",
        "acme_manufacturing",
        "dental_clinic_abc",
        "none",
    ] {
        let series = format!(
            "tenant_router_requests_total{{tenant=\"{tenant}\",route=\"/api/products\",status=\"4xx\"}}"
        );
        assert_eq!(sample(&text, &series), Some(1.0), "{series}\n{text}");
    }
}

#[tokio::test]
async fn metrics_count_each_tenants_requests_by_route_and_status() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let r = app
            .as_tenant(Method::GET, "dental_clinic_abc", "/api/products")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..2 {
        let r = app
            .as_tenant(Method::GET, "acme_manufacturing", "/api/products")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let refused = app
        .as_tenant(Method::GET, "acme_manufacturing", "/api/dental/patients")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let unknown = app
        .as_tenant(Method::GET, "no_such_tenant", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let text = scrape(&app).await;
    let requests = |tenant: &str, route: &str, status: &str| {
        sample(
            &text,
            &format!(
                "tenant_router_requests_total{{tenant=\"{tenant}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(
        requests("dental_clinic_abc", "/api/products", "2xx"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        requests("acme_manufacturing", "/api/products", "2xx"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests("acme_manufacturing", "/api/dental/patients", "4xx"),
        Some(1.0),
        "{text}"
    );
    // A tenant the registry does not know gets no series of its own.
    assert_eq!(
        requests("none", "/api/products", "4xx"),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("no_such_tenant"), "{text}");
    assert_eq!(
        sample(
            &text,
            "tenant_router_request_duration_seconds_count{tenant=\"dental_clinic_abc\",route=\"/api/products\"}"
        ),
        Some(3.0),
        "{text}"
    );
    // The connection layer: the tenants' SQLite files are one server.
    assert!(
        sample(
            &text,
            "tenant_router_server_connections_open{server=\"sqlite\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "tenant_router_server_connections_opened_total{server=\"sqlite\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{text}"
    );
    // SQLite connections are never drained, only PostgreSQL's.
    assert_eq!(
        sample(
            &text,
            "tenant_router_server_connections_drained_total{server=\"sqlite\"}"
        ),
        Some(0.0),
        "{text}"
    );
    // Nor have SQLite files schema tenants with homes.
    for placement in ["home", "away"] {
        assert_eq!(
            sample(
                &text,
                &format!(
                    "tenant_router_server_schema_checkouts_{placement}_total{{server=\"sqlite\"}}"
                )
            ),
            Some(0.0),
            "{text}"
        );
    }
    assert_eq!(
        sample(&text, "tenant_router_tenant_pools_open"),
        Some(2.0),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(!text.contains("sqlite://"), "a database URL in the metrics");
}

#[tokio::test]
async fn metrics_need_the_admin_token() {
    let app = spawn_app().await;
    let none = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = app
        .request(Method::GET, "/metrics")
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

/// 2,000 tenants and requests naming unknown ones: the tenant label takes at most
/// METRICS_MAX_TENANTS ids, plus `other` and `none`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_series_stay_bounded_with_two_thousand_tenants() {
    const TENANTS: usize = 2000;
    const CAP: usize = 50;
    let tenants = (0..TENANTS)
        .map(|i| Tenant::new(&format!("t{i:04}"), "dental"))
        .collect();
    let app =
        spawn_app_with(AppSpec::new(tenants).env("METRICS_MAX_TENANTS", &CAP.to_string())).await;
    // A manufacturing route: refused by the feature gate, after the tenant is
    // settled and without opening its database.
    let requests = (0..TENANTS)
        .map(|i| format!("t{i:04}"))
        .chain((0..200).map(|i| format!("unknown{i}")));
    futures::stream::iter(requests)
        .map(|id| {
            let request = app.as_tenant(Method::GET, &id, "/api/manufacturing/materials");
            async move { request.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(16)
        .for_each(|status| async move { assert!(status == 403 || status == 404, "{status}") })
        .await;

    let text = scrape(&app).await;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tenant_router_requests_total{"))
        .collect();
    let tenants: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split("tenant=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        tenants.contains("other") && tenants.contains("none"),
        "{tenants:?}"
    );
    assert_eq!(tenants.len(), CAP + 2, "{tenants:?}");
    let total: f64 = lines
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(total >= (TENANTS + 200) as f64, "{total}");
    // The documented bound: (cap + 2) tenant labels x routes x status classes.
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < 2_000, "{series} series");
}

#[tokio::test]
async fn metrics_switched_off_count_nothing_and_answer_404() {
    let app = spawn_app_with(
        AppSpec::new(crate::helpers::standard_tenants()).env("METRICS_ENABLED", "false"),
    )
    .await;
    let r = app
        .as_tenant(Method::GET, "dental_clinic_abc", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let response = app.admin(Method::GET, "/metrics").send().await.unwrap();
    crate::helpers::assert_error(response, 404, "not_found").await;
}

/// Logins by outcome: a success, wrong passwords, then the throttle's refusals.
#[tokio::test]
async fn logins_are_counted_by_tenant_and_outcome() {
    let app = spawn_app_with(
        AppSpec::new(vec![Tenant::new("demo", "default").with("demo = true")])
            .with_auth()
            .env("LOGIN_MAX_FAILURES", "2"),
    )
    .await;
    app.login("demo", "demo", "demo123").await;
    let attempt = || {
        app.as_tenant(Method::POST, "demo", "/api/auth/login")
            .json(&serde_json::json!({ "username": "demo", "password": "wrong-password" }))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(attempt().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429, 429]);

    let text = scrape(&app).await;
    let logins = |outcome: &str| {
        sample(
            &text,
            &format!("tenant_router_logins_total{{tenant=\"demo\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(logins("succeeded"), Some(1.0), "{text}");
    assert_eq!(logins("failed"), Some(2.0), "{text}");
    assert_eq!(logins("throttled"), Some(2.0), "{text}");
}

/// A tenant whose database cannot open: its breaker's trip and state, the time its
/// open took by outcome, and a working tenant's open beside it.
#[tokio::test]
async fn breaker_trips_and_state_and_tenant_open_times_are_reported() {
    // A pause long enough to be still open at the scrape on a busy machine.
    let app = spawn_app_with(
        AppSpec::new(vec![
            Tenant::new("good", "default"),
            Tenant::new("broken", "default"),
        ])
        .env("BREAKER_COOLDOWN_SECS", "60"),
    )
    .await;
    std::fs::create_dir_all(app.data_dir().join("broken.db")).unwrap();
    let before = scrape(&app).await;
    assert_eq!(
        sample(
            &before,
            "tenant_router_breaker_trips_total{tenant=\"broken\"}"
        ),
        None,
        "{before}"
    );
    let refused = app
        .as_tenant(Method::GET, "broken", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let served = app
        .as_tenant(Method::GET, "good", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);

    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            "tenant_router_breaker_trips_total{tenant=\"broken\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tenant_router_tenant_breaker_open{tenant=\"broken\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tenant_router_breaker_trips_total{tenant=\"good\"}"),
        None
    );
    for outcome in ["ready", "failed"] {
        assert_eq!(
            sample(
                &text,
                &format!(
                    "tenant_router_tenant_open_duration_seconds_count{{outcome=\"{outcome}\"}}"
                )
            ),
            Some(1.0),
            "{outcome}: {text}"
        );
    }
    // Every tenant migration the process applied is counted: the good tenant's
    // (other tests in this process add theirs).
    let applied = sample(&text, "tenant_router_migrations_applied_total").unwrap();
    let known = <migration::Migrator as migration::MigratorTrait>::migrations().len();
    assert!(applied >= known as f64, "{text}");
}

/// Requests refused by a tenant's rate limit are counted for that tenant only.
#[tokio::test]
async fn limit_refusals_are_counted_per_tenant() {
    let app = spawn_app_with(AppSpec::new(vec![
        Tenant::new("limited", "default")
            .with("rate_limit_per_sec = 1")
            .with("rate_limit_burst = 2"),
        Tenant::new("free", "default"),
    ]))
    .await;
    let mut refused = 0;
    for _ in 0..5 {
        for tenant in ["limited", "free"] {
            let r = app
                .as_tenant(Method::GET, tenant, "/api/products")
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                assert_eq!(tenant, "limited");
                refused += 1;
            }
        }
    }
    assert!(refused >= 2, "{refused}");
    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            "tenant_router_limit_refusals_total{tenant=\"limited\"}"
        ),
        Some(f64::from(refused)),
        "{text}"
    );
    assert_eq!(
        sample(&text, "tenant_router_limit_refusals_total{tenant=\"free\"}"),
        None
    );
}

/// With AUTO_MIGRATE=false a tenant opens with its migrations pending: the gauge
/// says how many, until the operator migrates it.
#[tokio::test]
async fn pending_migrations_are_reported_until_the_tenant_is_migrated() {
    let app = spawn_app_with(
        AppSpec::new(vec![Tenant::new("t1", "default")]).env("AUTO_MIGRATE", "false"),
    )
    .await;
    let health = app
        .admin(Method::GET, "/api/tenants/t1/health")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let known = <migration::Migrator as migration::MigratorTrait>::migrations().len();
    let pending = |text: &str| {
        sample(
            text,
            "tenant_router_tenant_migrations_pending{tenant=\"t1\"}",
        )
    };
    let text = scrape(&app).await;
    assert_eq!(pending(&text), Some(known as f64), "{text}");

    let migrated = app
        .admin(Method::POST, "/api/admin/tenants/t1/migrate")
        .send()
        .await
        .unwrap();
    assert_eq!(migrated.status(), 200);
    let text = scrape(&app).await;
    assert_eq!(pending(&text), Some(0.0), "{text}");
}
