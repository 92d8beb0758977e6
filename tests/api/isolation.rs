//! Each tenant sees only its own rows, however it is identified.

use reqwest::Method;

use crate::helpers::{AppSpec, Backend, Tenant, spawn_app_on, spawn_app_with};

async fn a_product_of_one_tenant_is_invisible_to_the_others_by_every_method(backend: Backend) {
    let app = spawn_app_on(backend).await;
    app.create_product("dental_clinic_abc", "Dental floss", 3.5)
        .await;

    for other in ["acme_manufacturing", "demo"] {
        let label = other.replace('_', "-");
        let by_header = app.as_tenant(Method::GET, other, "/api/products");
        let by_query = app.request(Method::GET, &format!("/api/products?tenant_id={other}"));
        let by_host = app
            .request(Method::GET, "/api/products")
            .header("Host", format!("{label}.localhost"));
        for request in [by_header, by_query, by_host] {
            assert!(
                app.product_names(request).await.is_empty(),
                "{other} sees a foreign row"
            );
        }
    }

    let owner_views = [
        app.as_tenant(Method::GET, "dental_clinic_abc", "/api/products"),
        app.request(Method::GET, "/api/products?tenant_id=dental_clinic_abc"),
        app.request(Method::GET, "/api/products")
            .header("Host", "dental-clinic-abc.localhost:8000"),
    ];
    for request in owner_views {
        assert_eq!(app.product_names(request).await, ["Dental floss"]);
    }
}

async fn twenty_tenants_writing_and_reading_concurrently_each_see_exactly_their_own_rows(
    backend: Backend,
) {
    let ids: Vec<String> = (0..20).map(|i| format!("tenant_{i:02}")).collect();
    let app = spawn_app_with(
        AppSpec::new(ids.iter().map(|id| Tenant::new(id, "default")).collect()).on(backend),
    )
    .await;

    let work = ids.iter().map(|id| {
        let app = &app;
        async move {
            for n in 0..5 {
                app.create_product(id, &format!("{id}-item-{n}"), 1.0 + n as f64)
                    .await;
            }
            let mut names = app
                .product_names(app.as_tenant(Method::GET, id, "/api/products"))
                .await;
            names.sort();
            let expected: Vec<String> = (0..5).map(|n| format!("{id}-item-{n}")).collect();
            assert_eq!(names, expected, "rows seen by {id}");
        }
    });
    futures::future::join_all(work).await;

    assert_eq!(app.pool_stats().await["pools_built"], 20);
}

crate::on_every_backend!(
    a_product_of_one_tenant_is_invisible_to_the_others_by_every_method,
    twenty_tenants_writing_and_reading_concurrently_each_see_exactly_their_own_rows,
);
