//! Each tenant reaches only its domain's routes (or its explicit feature list).

use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    AppSpec, Backend, Tenant, assert_error, spawn_app_on, spawn_app_with, standard_tenants,
};

async fn a_dental_tenant_is_refused_manufacturing_routes(backend: Backend) {
    let app = spawn_app_on(backend).await;
    for method in [Method::GET, Method::POST] {
        let response = app
            .as_tenant(method, "dental_clinic_abc", "/api/manufacturing/materials")
            .json(&json!({ "name": "Steel", "unit": "kg" }))
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 403, "feature_not_enabled").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("material_management")
        );
    }
}

async fn a_manufacturing_tenant_uses_materials_and_is_refused_patients(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let created = app
        .as_tenant(
            Method::POST,
            "acme_manufacturing",
            "/api/manufacturing/materials",
        )
        .json(&json!({ "name": "Steel sheet", "unit": "kg", "stock": 120.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let path = format!(
        "/api/manufacturing/materials/{}",
        created["id"].as_str().unwrap()
    );
    let fetched = app
        .as_tenant(Method::GET, "acme_manufacturing", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    let fetched: serde_json::Value = fetched.json().await.unwrap();
    assert_eq!(fetched["stock"], 120.5);

    let list = app
        .as_tenant(
            Method::GET,
            "acme_manufacturing",
            "/api/manufacturing/materials",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);

    let patients = app
        .as_tenant(Method::GET, "acme_manufacturing", "/api/dental/patients")
        .send()
        .await
        .unwrap();
    assert_error(patients, 403, "feature_not_enabled").await;
}

async fn a_dental_tenant_keeps_patients_and_the_default_tenant_only_common_features(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    let patient = app
        .as_tenant(Method::POST, "dental_clinic_abc", "/api/dental/patients")
        .json(&json!({ "name": "Asha Rao", "date_of_birth": "1990-04-01", "email": "asha@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patient.status(), 201);
    let patient: serde_json::Value = patient.json().await.unwrap();
    let path = format!("/api/dental/patients/{}", patient["id"].as_str().unwrap());
    let fetched = app
        .as_tenant(Method::GET, "dental_clinic_abc", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);

    for path in ["/api/dental/patients", "/api/manufacturing/materials"] {
        let response = app
            .as_tenant(Method::GET, "demo", path)
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "feature_not_enabled").await;
    }
    let products = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(products.status(), 200);
}

async fn an_explicit_feature_list_replaces_the_domain_preset(backend: Backend) {
    let mut tenants = standard_tenants();
    tenants.push(Tenant::new("hybrid", "dental").with("features = [\"material_management\"]"));
    let app = spawn_app_with(AppSpec::new(tenants).on(backend)).await;
    let materials = app
        .as_tenant(Method::GET, "hybrid", "/api/manufacturing/materials")
        .send()
        .await
        .unwrap();
    assert_eq!(materials.status(), 200);
    let patients = app
        .as_tenant(Method::GET, "hybrid", "/api/dental/patients")
        .send()
        .await
        .unwrap();
    assert_error(patients, 403, "feature_not_enabled").await;
    let products = app
        .as_tenant(Method::GET, "hybrid", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(products.status(), 200, "common features stay");
}

crate::on_every_backend!(
    a_dental_tenant_is_refused_manufacturing_routes,
    a_manufacturing_tenant_uses_materials_and_is_refused_patients,
    a_dental_tenant_keeps_patients_and_the_default_tenant_only_common_features,
    an_explicit_feature_list_replaces_the_domain_preset,
);
