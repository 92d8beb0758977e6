//! Cash flow: entries, filters, the monthly summary, and soft delete.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

async fn entry(app: &TestApp, kind: &str, amount: f64, tax: f64, date: &str) -> Value {
    let response = app
        .as_tenant(Method::POST, "demo", "/api/cash-flow")
        .json(&json!({ "kind": kind, "amount": amount, "tax": tax, "date": date }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn get(app: &TestApp, path: &str) -> Value {
    let response = app
        .as_tenant(Method::GET, "demo", path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_monthly_summary_adds_up_each_month_and_the_year() {
    let app = spawn_app().await;
    entry(&app, "income", 1000.0, 180.0, "2026-01-15").await;
    entry(&app, "income", 500.5, 90.09, "2026-01-31").await;
    entry(&app, "expense", 300.25, 54.05, "2026-01-10").await;
    entry(&app, "expense", 99.99, 0.0, "2026-03-01").await;
    entry(&app, "income", 7777.0, 0.0, "2025-12-31").await;

    let summary = get(&app, "/api/cash-flow/summary?year=2026").await;
    let months = summary["months"].as_array().unwrap();
    assert_eq!(months.len(), 12);
    assert_eq!(months[0]["month"], "2026-01");
    assert_eq!(months[0]["income"], 1500.5);
    assert_eq!(months[0]["expense"], 300.25);
    assert_eq!(months[0]["income_tax"], 270.09);
    assert_eq!(months[0]["net"], 1200.25);
    assert_eq!(months[1]["net"], 0.0);
    assert_eq!(months[2]["expense"], 99.99);
    assert_eq!(
        summary["totals"]["income"], 1500.5,
        "last year's entry is not counted"
    );
    assert_eq!(summary["totals"]["net"], 1100.26);
}

#[tokio::test]
async fn lists_filter_by_kind_and_date() {
    let app = spawn_app().await;
    entry(&app, "income", 10.0, 0.0, "2026-02-01").await;
    entry(&app, "expense", 20.0, 0.0, "2026-02-15").await;
    entry(&app, "expense", 30.0, 0.0, "2026-04-01").await;
    let expenses = get(&app, "/api/cash-flow?kind=expense").await;
    assert_eq!(expenses["items"].as_array().unwrap().len(), 2);
    let february = get(&app, "/api/cash-flow?from=2026-02-01&to=2026-02-28").await;
    assert_eq!(february["items"].as_array().unwrap().len(), 2);
    let bad = app
        .as_tenant(Method::GET, "demo", "/api/cash-flow?kind=gift")
        .send()
        .await
        .unwrap();
    let error = assert_error(bad, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "kind");
    let bad_date = app
        .as_tenant(Method::POST, "demo", "/api/cash-flow")
        .json(&json!({ "kind": "income", "amount": 1, "date": "2026-13-01" }))
        .send()
        .await
        .unwrap();
    let error = assert_error(bad_date, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "date");
    // Years past 9999 or before 1 would sort among the others by their text.
    for date in ["+10000-06-01", "-0005-01-01", "0000-01-01"] {
        let refused = app
            .as_tenant(Method::POST, "demo", "/api/cash-flow")
            .json(&json!({ "kind": "income", "amount": 1, "date": date }))
            .send()
            .await
            .unwrap();
        let error = assert_error(refused, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], "date", "{date}");
    }
    for query in ["to=%2B10000-01-01", "from=-0005-01-01", "summary?year=-5"] {
        let path = match query.strip_prefix("summary") {
            Some(rest) => format!("/api/cash-flow/summary{rest}"),
            None => format!("/api/cash-flow?{query}"),
        };
        let refused = app
            .as_tenant(Method::GET, "demo", &path)
            .send()
            .await
            .unwrap();
        assert_error(refused, 422, "validation_failed").await;
    }
    let all = get(&app, "/api/cash-flow").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    // The earliest year's months read as dates do: four digits.
    let summary = get(&app, "/api/cash-flow/summary?year=1").await;
    assert_eq!(summary["months"][0]["month"], "0001-01", "{summary}");
}

#[tokio::test]
async fn a_deleted_entry_leaves_lists_and_sums_but_stays_in_the_database() {
    let app = spawn_app().await;
    let kept = entry(&app, "income", 100.0, 0.0, "2026-05-05").await;
    let gone = entry(&app, "income", 50.0, 0.0, "2026-05-06").await;
    let path = format!("/api/cash-flow/{}", gone["id"].as_str().unwrap());
    let deleted = app
        .as_tenant(Method::DELETE, "demo", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(
        app.as_tenant(Method::GET, "demo", &path)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let list = get(&app, "/api/cash-flow").await;
    let ids: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, [&kept["id"]]);
    let summary = get(&app, "/api/cash-flow/summary?year=2026").await;
    assert_eq!(summary["totals"]["income"], 100.0);

    // Soft: the row is still in the tenant's database, marked deleted.
    let db = tenant_router::db::connect(format!("sqlite://{}/demo.db", app.data_dir().display()))
        .await
        .unwrap();
    let row = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT count(*) AS n FROM cash_flow_entries WHERE deleted_at IS NOT NULL",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1);
}
