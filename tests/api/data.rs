//! The demo tenant's sample data, `GET /api/data/status` and `POST /api/data/reset`.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{AppSpec, Backend, Tenant, TestApp, spawn_app_with};

async fn demo_app(backend: Backend) -> TestApp {
    spawn_app_with(
        AppSpec::new(vec![
            Tenant::new("showcase", "dental").with("demo = true"),
            Tenant::new("plain", "default"),
        ])
        .on(backend),
    )
    .await
}

async fn status(app: &TestApp, tenant: &str) -> Value {
    let response = app
        .as_tenant(Method::GET, tenant, "/api/data/status")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["tables"].clone()
}

async fn a_demo_tenant_is_seeded_on_first_use(backend: Backend) {
    let app = demo_app(backend).await;
    let tables = status(&app, "showcase").await;
    assert_eq!(tables["products"], 5, "{tables}");
    assert_eq!(tables["patients"], 3, "{tables}");
    assert_eq!(tables["treatments"], 3, "{tables}");
    assert_eq!(tables["cash_flow_entries"], 36, "{tables}");
    let summary: Value = app
        .as_tenant(Method::GET, "showcase", "/api/cash-flow/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        summary["totals"]["income"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    let plain = status(&app, "plain").await;
    assert!(
        plain.as_object().unwrap().values().all(|n| *n == 0),
        "{plain}"
    );
}

crate::on_every_backend!(
    a_demo_tenant_is_seeded_on_first_use,
    a_reset_among_writes_clears_and_refuses_only_what_it_removed,
);

#[tokio::test]
async fn reset_clears_business_data_and_reseeds_only_a_demo_tenant() {
    let app = demo_app(Backend::Sqlite).await;
    app.create_product("showcase", "added by a visitor", 1.0)
        .await;
    app.create_product("plain", "real data", 1.0).await;
    assert_eq!(status(&app, "showcase").await["products"], 6);

    let reset = |tenant: &'static str| {
        // Who may reset (admins and owners) is the role matrix's to show (auth.rs).
        app.as_tenant(Method::POST, tenant, "/api/data/reset")
            .send()
    };
    let demo: Value = reset("showcase").await.unwrap().json().await.unwrap();
    assert_eq!(demo["reseeded"], true);
    assert_eq!(demo["tables"]["products"], 5, "{demo}");
    let names = app
        .product_names(app.as_tenant(Method::GET, "showcase", "/api/products"))
        .await;
    assert!(
        !names.contains(&"added by a visitor".to_string()),
        "{names:?}"
    );

    let plain: Value = reset("plain").await.unwrap().json().await.unwrap();
    assert_eq!(plain["reseeded"], false);
    assert!(
        plain["tables"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| *n == 0),
        "{plain}"
    );
}

/// A reset while the tenant's clients write: each answer is the reset's or the
/// write's (a write whose patient the reset removed is refused), never a 500.
async fn a_reset_among_writes_clears_and_refuses_only_what_it_removed(backend: Backend) {
    let clinic = Tenant::new("clinic", "dental").with(
        r#"features = ["patient_management", "treatment_tracking", "bom_management", "production_tracking", "material_management"]"#,
    );
    let app = spawn_app_with(AppSpec::new(vec![clinic]).on(backend)).await;
    let post = |path: &str, body: Value| {
        app.as_tenant(Method::POST, "clinic", path)
            .json(&body)
            .send()
    };
    // A material, a bill of it, an order, started and completed: each step may
    // find what the one before made removed by a reset (404, 409 or 422).
    let producer = || async {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let mut made = |response: reqwest::Response| {
                statuses.push(response.status().as_u16());
                response
            };
            let material = made(
                post(
                    "/api/manufacturing/materials",
                    serde_json::json!({ "name": "m", "unit": "kg", "stock": 1000 }),
                )
                .await
                .unwrap(),
            );
            let Some(material) = material
                .json::<Value>()
                .await
                .ok()
                .filter(|m| m["id"].is_string())
            else {
                continue;
            };
            let bom = made(
                post(
                    "/api/manufacturing/boms",
                    serde_json::json!({ "name": "b", "items": [{ "material_id": material["id"], "quantity": 1 }] }),
                )
                .await
                .unwrap(),
            );
            let Some(bom) = bom
                .json::<Value>()
                .await
                .ok()
                .filter(|b| b["id"].is_string())
            else {
                continue;
            };
            let order = made(
                post(
                    "/api/manufacturing/production-orders",
                    serde_json::json!({ "bom_id": bom["id"], "quantity": 2 }),
                )
                .await
                .unwrap(),
            );
            let Some(order) = order
                .json::<Value>()
                .await
                .ok()
                .filter(|o| o["id"].is_string())
            else {
                continue;
            };
            let path = format!(
                "/api/manufacturing/production-orders/{}",
                order["id"].as_str().unwrap()
            );
            for step in ["start", "complete"] {
                made(
                    post(&format!("{path}/{step}"), serde_json::json!({}))
                        .await
                        .unwrap(),
                );
            }
        }
        statuses
    };
    let writer = || async {
        let mut statuses = Vec::new();
        for _ in 0..12 {
            let patient = post("/api/dental/patients", serde_json::json!({ "name": "p" }))
                .await
                .unwrap();
            statuses.push(patient.status().as_u16());
            let Ok(patient) = patient.json::<Value>().await else {
                continue;
            };
            let Some(id) = patient["id"].as_str() else {
                continue;
            };
            let treatment = post(
                "/api/dental/treatments",
                serde_json::json!({ "patient_id": id, "description": "d", "cost": 1 }),
            )
            .await
            .unwrap();
            statuses.push(treatment.status().as_u16());
        }
        statuses
    };
    let resetter = || async {
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let reset = post("/api/data/reset", serde_json::json!({}))
                .await
                .unwrap();
            statuses.push(reset.status().as_u16());
        }
        statuses
    };
    let writers = futures::future::join_all((0..6).map(|_| writer()));
    let producers = futures::future::join_all((0..4).map(|_| producer()));
    let resetters = futures::future::join_all((0..2).map(|_| resetter()));
    let (writes, produced, resets) = tokio::join!(writers, producers, resetters);
    let resets: Vec<u16> = resets.into_iter().flatten().collect();
    assert!(resets.iter().all(|s| *s == 200), "resets: {resets:?}");
    let writes: Vec<u16> = writes.into_iter().flatten().collect();
    assert!(
        writes.iter().all(|s| matches!(s, 201 | 409 | 422)),
        "writes: {writes:?}"
    );
    let produced: Vec<u16> = produced.into_iter().flatten().collect();
    assert!(
        produced
            .iter()
            .all(|s| matches!(s, 200 | 201 | 404 | 409 | 422)),
        "manufacturing: {produced:?}"
    );
    assert!(produced.contains(&200), "manufacturing: {produced:?}");
    assert!(writes.contains(&201), "writes: {writes:?}");
    // After one more reset, nothing is left.
    assert_eq!(
        post("/api/data/reset", serde_json::json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    let tables = status(&app, "clinic").await;
    assert!(
        tables.as_object().unwrap().values().all(|n| *n == 0),
        "{tables}"
    );
}
