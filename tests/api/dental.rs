//! `/api/dental/treatments` and `/api/dental/supplies`: treatments of patients,
//! supplies and their low-stock filter, and the feature gate, on every backend.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error, spawn_app_on};

const CLINIC: &str = "dental_clinic_abc";

async fn post(app: &TestApp, path: &str, body: Value) -> Value {
    let response = app
        .as_tenant(Method::POST, CLINIC, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "POST {path} {body}");
    response.json().await.unwrap()
}

async fn get(app: &TestApp, path: &str) -> Value {
    let response = app
        .as_tenant(Method::GET, CLINIC, path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

async fn create_patient(app: &TestApp, name: &str) -> String {
    let patient = post(app, "/api/dental/patients", json!({ "name": name })).await;
    patient["id"].as_str().unwrap().to_string()
}

async fn create_treatment(app: &TestApp, patient_id: &str, description: &str) -> Value {
    post(
        app,
        "/api/dental/treatments",
        json!({ "patient_id": patient_id, "description": description, "cost": 120.5 }),
    )
    .await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect()
}

async fn a_treatment_is_created_for_a_patient_and_read_back(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let patient_id = create_patient(&app, "Asha Rao").await;
    let created = post(
        &app,
        "/api/dental/treatments",
        json!({
            "patient_id": patient_id,
            "description": "Root canal",
            "cost": 350.75,
            "scheduled_on": "2030-01-15",
        }),
    )
    .await;
    assert_eq!(created["patient_id"], patient_id.as_str());
    assert_eq!(created["status"], "planned", "the default status");
    assert_eq!(created["cost"], 350.75);
    assert_eq!(created["scheduled_on"], "2030-01-15");

    let fetched = get(
        &app,
        &format!("/api/dental/treatments/{}", created["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(fetched, created);
}

async fn a_treatment_status_changes_with_patch(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let patient_id = create_patient(&app, "Asha Rao").await;
    let created = create_treatment(&app, &patient_id, "Filling").await;
    let path = format!("/api/dental/treatments/{}", created["id"].as_str().unwrap());

    let patched = app
        .as_tenant(Method::PATCH, CLINIC, &path)
        .json(&json!({ "status": "in_progress" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["status"], "in_progress");
    assert_eq!(patched["description"], "Filling", "absent fields stay");
    assert_eq!(patched["cost"], 120.5, "absent fields stay");

    let fetched = get(&app, &path).await;
    assert_eq!(fetched["status"], "in_progress");
}

async fn treatments_are_filtered_by_patient_id(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let asha = create_patient(&app, "Asha Rao").await;
    let ben = create_patient(&app, "Ben Okafor").await;
    let first = create_treatment(&app, &asha, "Cleaning").await;
    let second = create_treatment(&app, &asha, "X-ray").await;
    create_treatment(&app, &ben, "Extraction").await;

    let page = get(&app, &format!("/api/dental/treatments?patient_id={asha}")).await;
    let mut listed = ids(&page);
    listed.sort();
    let mut expected = vec![
        first["id"].as_str().unwrap().to_string(),
        second["id"].as_str().unwrap().to_string(),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

async fn a_treatment_for_an_unknown_patient_is_422_naming_patient_id(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let response = app
        .as_tenant(Method::POST, CLINIC, "/api/dental/treatments")
        .json(&json!({
            "patient_id": uuid::Uuid::new_v4(),
            "description": "Crown",
            "cost": 800,
        }))
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "patient_id");
}

async fn a_deleted_treatment_is_404_and_absent_from_the_list(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let patient_id = create_patient(&app, "Asha Rao").await;
    let kept = create_treatment(&app, &patient_id, "Cleaning").await;
    let deleted = create_treatment(&app, &patient_id, "Whitening").await;
    let path = format!("/api/dental/treatments/{}", deleted["id"].as_str().unwrap());

    let response = app
        .as_tenant(Method::DELETE, CLINIC, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let gone = app
        .as_tenant(Method::GET, CLINIC, &path)
        .send()
        .await
        .unwrap();
    assert_error(gone, 404, "not_found").await;

    let page = get(&app, "/api/dental/treatments").await;
    assert_eq!(ids(&page), vec![kept["id"].as_str().unwrap().to_string()]);
}

async fn the_low_stock_filter_returns_supplies_at_or_below_their_reorder_level(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let at_level = post(
        &app,
        "/api/dental/supplies",
        json!({ "name": "Gloves", "unit": "box", "stock": 10, "reorder_level": 10 }),
    )
    .await;
    let below = post(
        &app,
        "/api/dental/supplies",
        json!({ "name": "Masks", "unit": "box", "stock": 2.5, "reorder_level": 5 }),
    )
    .await;
    post(
        &app,
        "/api/dental/supplies",
        json!({ "name": "Composite", "unit": "syringe", "stock": 40, "reorder_level": 5 }),
    )
    .await;

    let page = get(&app, "/api/dental/supplies?low_stock=true").await;
    let mut listed = ids(&page);
    listed.sort();
    let mut expected = vec![
        at_level["id"].as_str().unwrap().to_string(),
        below["id"].as_str().unwrap().to_string(),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

async fn a_negative_stock_is_422_naming_stock(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let response = app
        .as_tenant(Method::POST, CLINIC, "/api/dental/supplies")
        .json(&json!({ "name": "Gloves", "unit": "box", "stock": -1 }))
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "stock");
}

async fn a_manufacturing_tenant_is_refused_treatments_and_supplies(backend: Backend) {
    let app = spawn_app_on(backend).await;
    for (path, feature) in [
        ("/api/dental/treatments", "treatment_tracking"),
        ("/api/dental/supplies", "dental_supplies"),
    ] {
        let response = app
            .as_tenant(Method::GET, "acme_manufacturing", path)
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 403, "feature_not_enabled").await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains(feature),
            "{body}"
        );
    }
}

async fn a_deleted_patient_is_gone_and_takes_no_new_treatment(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let patient = create_patient(&app, "Leaving Patient").await;
    let path = format!("/api/dental/patients/{patient}");
    let deleted = app
        .as_tenant(Method::DELETE, CLINIC, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(
        app.as_tenant(Method::GET, CLINIC, &path)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let treatment = app
        .as_tenant(Method::POST, CLINIC, "/api/dental/treatments")
        .json(&json!({ "patient_id": patient, "description": "Check-up", "cost": 10 }))
        .send()
        .await
        .unwrap();
    let error = assert_error(treatment, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "patient_id");
}

crate::on_every_backend!(
    a_deleted_patient_is_gone_and_takes_no_new_treatment,
    a_treatment_is_created_for_a_patient_and_read_back,
    a_treatment_status_changes_with_patch,
    treatments_are_filtered_by_patient_id,
    a_treatment_for_an_unknown_patient_is_422_naming_patient_id,
    a_deleted_treatment_is_404_and_absent_from_the_list,
    the_low_stock_filter_returns_supplies_at_or_below_their_reorder_level,
    a_negative_stock_is_422_naming_stock,
    a_manufacturing_tenant_is_refused_treatments_and_supplies,
);
