//! Manufacturing rules: bills of materials reference live materials; production
//! orders go planned → in_progress → done, consume stock when done, and are
//! refused whole when a material is short.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error, spawn_app_on};

const TENANT: &str = "acme_manufacturing";

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.as_tenant(Method::POST, TENANT, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let response = post(app, path, body).await;
    assert_eq!(response.status(), 201, "{path}");
    response.json().await.unwrap()
}

async fn material(app: &TestApp, name: &str, stock: f64) -> String {
    let m = created(
        app,
        "/api/manufacturing/materials",
        json!({ "name": name, "unit": "kg", "stock": stock }),
    )
    .await;
    m["id"].as_str().unwrap().to_string()
}

async fn stock_of(app: &TestApp, id: &str) -> f64 {
    let m: Value = app
        .as_tenant(
            Method::GET,
            TENANT,
            &format!("/api/manufacturing/materials/{id}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    m["stock"].as_f64().unwrap()
}

/// A BOM using 2 of steel and 0.5 of paint per unit, and an order of `quantity`.
async fn order_for(app: &TestApp, steel: &str, paint: &str, quantity: f64) -> String {
    let bom = created(
        app,
        "/api/manufacturing/boms",
        json!({ "name": "Cabinet", "items": [
            { "material_id": steel, "quantity": 2.0 },
            { "material_id": paint, "quantity": 0.5 },
        ]}),
    )
    .await;
    assert_eq!(bom["items"].as_array().unwrap().len(), 2);
    let order = created(
        app,
        "/api/manufacturing/production-orders",
        json!({ "bom_id": bom["id"], "quantity": quantity }),
    )
    .await;
    assert_eq!(order["status"], "planned");
    order["id"].as_str().unwrap().to_string()
}

async fn completing_an_order_consumes_its_materials(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let (steel, paint) = (
        material(&app, "Steel", 100.0).await,
        material(&app, "Paint", 10.0).await,
    );
    let order = order_for(&app, &steel, &paint, 10.0).await;

    let path = format!("/api/manufacturing/production-orders/{order}");
    let early = post(&app, &format!("{path}/complete"), json!({})).await;
    assert_error(early, 409, "conflict").await;
    let started: Value = post(&app, &format!("{path}/start"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(started["status"], "in_progress");
    let done: Value = post(&app, &format!("{path}/complete"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "done");
    assert_eq!(stock_of(&app, &steel).await, 80.0);
    assert_eq!(stock_of(&app, &paint).await, 5.0);
    let again = post(&app, &format!("{path}/complete"), json!({})).await;
    assert_error(again, 409, "conflict").await;
    assert_eq!(
        stock_of(&app, &steel).await,
        80.0,
        "a done order consumes once"
    );
}

async fn an_order_short_of_any_material_is_refused_and_consumes_nothing(backend: Backend) {
    let app = spawn_app_on(backend).await;
    // Plenty of steel, too little paint for 10 units (5 needed).
    let (steel, paint) = (
        material(&app, "Steel", 100.0).await,
        material(&app, "Paint", 4.0).await,
    );
    let order = order_for(&app, &steel, &paint, 10.0).await;
    let path = format!("/api/manufacturing/production-orders/{order}");
    post(&app, &format!("{path}/start"), json!({})).await;
    let refused = post(&app, &format!("{path}/complete"), json!({})).await;
    let body = assert_error(refused, 409, "conflict").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&paint),
        "{body}"
    );
    assert_eq!(
        stock_of(&app, &steel).await,
        100.0,
        "steel was consumed by a refused order"
    );
    assert_eq!(stock_of(&app, &paint).await, 4.0);
    let order: Value = app
        .as_tenant(Method::GET, TENANT, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "in_progress");
}

async fn boms_and_orders_refuse_what_does_not_exist(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let steel = material(&app, "Steel", 1.0).await;
    let unknown = "6f1c1a55-35c2-4d29-9a8e-3d1a3f0f7a11";
    let cases = [
        (json!({ "name": "x", "items": [] }), "items"),
        (
            json!({ "name": "x", "items": [{ "material_id": unknown, "quantity": 1 }] }),
            "items[0].material_id",
        ),
        (
            json!({ "name": "x", "items": [{ "material_id": steel, "quantity": 0 }] }),
            "items[0].quantity",
        ),
        (
            json!({ "name": "x", "items": [{ "material_id": steel, "quantity": 1 }, { "material_id": steel, "quantity": 2 }] }),
            "items[1].material_id",
        ),
    ];
    for (body, field) in cases {
        let error = assert_error(
            post(&app, "/api/manufacturing/boms", body).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let order = post(
        &app,
        "/api/manufacturing/production-orders",
        json!({ "bom_id": unknown, "quantity": 1 }),
    )
    .await;
    let error = assert_error(order, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "bom_id");
    let dental = app
        .as_tenant(
            Method::GET,
            "dental_clinic_abc",
            "/api/manufacturing/production-orders",
        )
        .send()
        .await
        .unwrap();
    assert_error(dental, 403, "feature_not_enabled").await;
}

async fn a_deleted_material_is_gone_and_cannot_go_into_a_bom(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let steel = material(&app, "Steel", 5.0).await;
    let path = format!("/api/manufacturing/materials/{steel}");
    let deleted = app
        .as_tenant(Method::DELETE, TENANT, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(
        app.as_tenant(Method::GET, TENANT, &path)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let bom = post(
        &app,
        "/api/manufacturing/boms",
        json!({ "name": "x", "items": [{ "material_id": steel, "quantity": 1 }] }),
    )
    .await;
    let error = assert_error(bom, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "items[0].material_id");

    // A material deleted after an order's BOM took it: the completion says so
    // (it had said "not enough …, 10 in stock").
    let (steel, paint) = (
        material(&app, "Steel", 100.0).await,
        material(&app, "Paint", 100.0).await,
    );
    let order = order_for(&app, &steel, &paint, 2.0).await;
    let order = format!("/api/manufacturing/production-orders/{order}");
    post(&app, &format!("{order}/start"), json!({})).await;
    let deleted = app
        .as_tenant(
            Method::DELETE,
            TENANT,
            &format!("/api/manufacturing/materials/{paint}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let refused = post(&app, &format!("{order}/complete"), json!({})).await;
    let body = assert_error(refused, 409, "conflict").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&paint) && message.contains("was deleted"),
        "{message}"
    );
    assert_eq!(stock_of(&app, &steel).await, 100.0);
}

async fn orders_completed_at_once_share_the_stock_without_errors(backend: Backend) {
    let app = spawn_app_on(backend).await;
    // Stock for three of the four orders: 3 x 10 x 2 = 60 of 70 steel.
    let (steel, paint) = (
        material(&app, "Steel", 70.0).await,
        material(&app, "Paint", 100.0).await,
    );
    let mut orders = Vec::new();
    for _ in 0..4 {
        let order = order_for(&app, &steel, &paint, 10.0).await;
        let path = format!("/api/manufacturing/production-orders/{order}");
        assert_eq!(
            post(&app, &format!("{path}/start"), json!({}))
                .await
                .status(),
            200
        );
        orders.push(format!("{path}/complete"));
    }
    let completions = orders.iter().map(|path| post(&app, path, json!({})));
    let statuses: Vec<u16> = futures::future::join_all(completions)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    // Each is done or refused whole for short stock; none fails on a lock clash.
    let done = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(done, 3, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(stock_of(&app, &steel).await, 10.0);
}

/// Makes an order of `quantity` units of a BOM taking `per_unit` of `material`,
/// starts it and completes it; returns the completion's answer.
async fn produce(app: &TestApp, material: &str, per_unit: f64, quantity: f64) -> reqwest::Response {
    let bom = created(
        app,
        "/api/manufacturing/boms",
        json!({ "name": "Cast", "items": [{ "material_id": material, "quantity": per_unit }] }),
    )
    .await;
    let order = created(
        app,
        "/api/manufacturing/production-orders",
        json!({ "bom_id": bom["id"], "quantity": quantity }),
    )
    .await;
    let path = format!(
        "/api/manufacturing/production-orders/{}",
        order["id"].as_str().unwrap()
    );
    let started = post(app, &format!("{path}/start"), json!({})).await;
    assert_eq!(started.status(), 200);
    post(app, &format!("{path}/complete"), json!({})).await
}

async fn an_order_that_takes_exactly_the_stock_left_is_served(backend: Backend) {
    let app = spawn_app_on(backend).await;
    // In binary floating point 0.3 - 0.1 - 0.1 is 0.09999999999999998, short of
    // the third 0.1; counted in millionths, the three orders take the whole stock.
    let resin = material(&app, "Resin", 0.3).await;
    for round in 0..3 {
        let done = produce(&app, &resin, 0.1, 1.0).await;
        let status = done.status();
        assert_eq!(status, 200, "order {round}: {}", done.text().await.unwrap());
    }
    assert_eq!(stock_of(&app, &resin).await, 0.0);
    // Three units of 0.1 against 0.3: 0.30000000000000004 in floating point.
    let resin = material(&app, "Resin", 0.3).await;
    assert_eq!(produce(&app, &resin, 0.1, 3.0).await.status(), 200);
    assert_eq!(stock_of(&app, &resin).await, 0.0);
    // Below a millionth a quantity is nothing, and a sign of zero is dropped.
    let dust = post(
        &app,
        "/api/manufacturing/boms",
        json!({ "name": "Dust", "items": [{ "material_id": resin, "quantity": 1e-9 }] }),
    )
    .await;
    assert_error(dust, 422, "validation_failed").await;
    let zero = created(
        &app,
        "/api/manufacturing/materials",
        json!({ "name": "None", "unit": "kg", "stock": -0.0 }),
    )
    .await;
    assert_eq!(zero["stock"].to_string(), "0.0", "{zero}");
}

async fn a_bills_items_keep_the_order_they_were_given_in(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let mut items = Vec::new();
    for n in 1..=8 {
        let id = material(&app, &format!("Part {n}"), 10.0).await;
        items.push(json!({ "material_id": id, "quantity": n }));
    }
    let quantities = |bom: &Value| -> Vec<f64> {
        bom["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["quantity"].as_f64().unwrap())
            .collect()
    };
    let given: Vec<f64> = (1..=8).map(f64::from).collect();
    let bom = created(
        &app,
        "/api/manufacturing/boms",
        json!({ "name": "Kit", "items": items }),
    )
    .await;
    assert_eq!(quantities(&bom), given, "{bom}");
    let path = format!("/api/manufacturing/boms/{}", bom["id"].as_str().unwrap());
    let shown: Value = app
        .as_tenant(Method::GET, TENANT, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(quantities(&shown), given, "{shown}");
    let listed: Value = app
        .as_tenant(Method::GET, TENANT, "/api/manufacturing/boms")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(quantities(&listed["items"][0]), given, "{listed}");
}

crate::on_every_backend!(
    an_order_that_takes_exactly_the_stock_left_is_served,
    a_bills_items_keep_the_order_they_were_given_in,
    orders_completed_at_once_share_the_stock_without_errors,
    a_deleted_material_is_gone_and_cannot_go_into_a_bom,
    completing_an_order_consumes_its_materials,
    an_order_short_of_any_material_is_refused_and_consumes_nothing,
    boms_and_orders_refuse_what_does_not_exist,
);
