//! The identification matrix: each source alone, agreement, conflict, absence,
//! malformed ids (which never touch the disk), unknown and suspended tenants.

use reqwest::{Method, header::HeaderValue};

use crate::helpers::{
    AppSpec, Backend, Tenant, assert_error, spawn_app_on, spawn_app_with, standard_tenants,
};

async fn each_source_identifies_the_tenant_and_the_response_names_it(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let requests = [
        app.as_tenant(Method::GET, "demo", "/api/products"),
        app.request(Method::GET, "/api/products?tenant_id=demo"),
        app.request(Method::GET, "/api/products")
            .header("Host", "demo.localhost"),
        app.request(Method::GET, "/api/products")
            .header("Host", "DEMO.LOCALHOST:8000"),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-tenant-id"], "demo");
    }
}

async fn tenant_scoped_errors_also_carry_the_tenant_header(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let response = app
        .as_tenant(
            Method::GET,
            "demo",
            "/api/products/6f1c1a55-35c2-4d29-9a8e-3d1a3f0f7a11",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-tenant-id"], "demo");
    assert_error(response, 404, "not_found").await;
}

async fn no_identification_is_tenant_required(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let response = app
        .request(Method::GET, "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "tenant_required").await;
    let bare_base = app
        .request(Method::GET, "/api/products")
        .header("Host", "localhost");
    assert_error(bare_base.send().await.unwrap(), 400, "tenant_required").await;
}

async fn sources_that_disagree_are_a_conflict_and_sources_that_agree_are_fine(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let conflicts = [
        app.as_tenant(
            Method::GET,
            "demo",
            "/api/products?tenant_id=acme_manufacturing",
        ),
        app.as_tenant(Method::GET, "demo", "/api/products")
            .header("Host", "acme-manufacturing.localhost"),
        app.request(Method::GET, "/api/products?tenant_id=demo")
            .header("Host", "acme-manufacturing.localhost"),
    ];
    for request in conflicts {
        assert_error(request.send().await.unwrap(), 400, "tenant_conflict").await;
    }
    let agree = app
        .as_tenant(Method::GET, "demo", "/api/products?tenant_id=demo")
        .header("Host", "demo.localhost");
    assert_eq!(agree.send().await.unwrap().status(), 200);
}

async fn malformed_ids_are_refused_before_anything_touches_the_disk(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let too_long = "a".repeat(64);
    let header_values: Vec<HeaderValue> = [
        "../etc",
        "a;drop table x",
        "Demo",
        "DEMO",
        "",
        too_long.as_str(),
        "demo/../../etc/passwd",
        "demo%00",
    ]
    .iter()
    .map(|v| HeaderValue::from_str(v).unwrap())
    .chain([HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap()])
    .collect();
    for value in header_values {
        let response = app
            .request(Method::GET, "/api/products")
            .header("X-Tenant-ID", value.clone())
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_tenant_id").await;
    }
    let queries = [
        "..%2Fetc",
        "a%3Bdrop%20table%20x",
        "Demo",
        "",
        "caf%C3%A9",
        &"b".repeat(64),
    ];
    for q in queries {
        let response = app
            .request(Method::GET, &format!("/api/products?tenant_id={q}"))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_tenant_id").await;
    }
    let hosts = ["bad_label.localhost", "UPPER_CASE.localhost"];
    for host in hosts {
        let response = app
            .request(Method::GET, "/api/products")
            .header("Host", host)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_tenant_id").await;
    }
    assert!(
        app.data_files().is_empty(),
        "files created: {:?}",
        app.data_files()
    );
    assert_eq!(app.pool_stats().await["pools_built"], 0);
}

async fn unknown_tenants_are_not_found(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let unknown = [
        app.as_tenant(Method::GET, "nobody", "/api/products"),
        app.request(Method::GET, "/api/products?tenant_id=nobody"),
        app.request(Method::GET, "/api/products")
            .header("Host", "nobody.localhost"),
    ];
    for request in unknown {
        assert_error(request.send().await.unwrap(), 404, "tenant_not_found").await;
    }
    assert!(app.data_files().is_empty());
    assert_eq!(app.pool_stats().await["pools_built"], 0);
}

async fn a_suspended_tenant_is_refused(backend: Backend) {
    let mut tenants = standard_tenants();
    tenants.push(Tenant::new("closed_clinic", "dental").with("is_active = false"));
    let app = spawn_app_with(AppSpec::new(tenants).on(backend)).await;
    let response = app
        .as_tenant(Method::GET, "closed_clinic", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "tenant_inactive").await;
    assert!(app.data_files().is_empty());
    assert_eq!(app.pool_stats().await["pools_built"], 0);
}

async fn a_switched_off_source_is_ignored(backend: Backend) {
    let app = spawn_app_with(
        AppSpec::new(standard_tenants())
            .env("IDENTIFY_BY_QUERY", "false")
            .on(backend),
    )
    .await;
    let response = app
        .request(Method::GET, "/api/products?tenant_id=demo")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "tenant_required").await;
    let header = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), 200);
}

async fn a_custom_subdomain_and_base_domain_route_to_the_tenant(backend: Backend) {
    let tenants = vec![Tenant::new("dental_clinic_abc", "dental").with("subdomain = \"abc\"")];
    let app = spawn_app_with(
        AppSpec::new(tenants)
            .env("BASE_DOMAIN", "example.com")
            .on(backend),
    )
    .await;
    let response = app
        .request(Method::GET, "/api/products")
        .header("Host", "abc.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tenant-id"], "dental_clinic_abc");
    let www = app
        .request(Method::GET, "/api/products")
        .header("Host", "www.example.com")
        .send()
        .await
        .unwrap();
    assert_error(www, 400, "tenant_required").await;
}

/// `example.com.` (fully qualified) is the same base domain as `example.com`.
#[tokio::test]
async fn a_base_domain_written_with_its_final_dot_routes_the_same() {
    let tenants = vec![Tenant::new("dental_clinic_abc", "dental").with("subdomain = \"abc\"")];
    let app = spawn_app_with(AppSpec::new(tenants).env("BASE_DOMAIN", "Example.COM.")).await;
    for host in ["abc.example.com", "abc.example.com."] {
        let response = app
            .request(Method::GET, "/api/products")
            .header("Host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
        assert_eq!(response.headers()["x-tenant-id"], "dental_clinic_abc");
    }
    let unknown = app
        .request(Method::GET, "/api/products")
        .header("Host", "nobody.example.com")
        .send()
        .await
        .unwrap();
    assert_error(unknown, 404, "tenant_not_found").await;
}

crate::on_every_backend!(
    each_source_identifies_the_tenant_and_the_response_names_it,
    tenant_scoped_errors_also_carry_the_tenant_header,
    no_identification_is_tenant_required,
    sources_that_disagree_are_a_conflict_and_sources_that_agree_are_fine,
    malformed_ids_are_refused_before_anything_touches_the_disk,
    unknown_tenants_are_not_found,
    a_suspended_tenant_is_refused,
    a_switched_off_source_is_ignored,
    a_custom_subdomain_and_base_domain_route_to_the_tenant,
);

/// Sends `head` (request line and headers) on a raw connection and returns the
/// status code and the body: reqwest would not send two `Host` headers.
async fn raw_request(address: &str, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    stream
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn two_host_headers_are_refused_and_an_absolute_target_names_the_host() {
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    let (status, body) = raw_request(
        &app.address,
        "GET /api/products HTTP/1.1\r\nHost: demo.localhost\r\nHost: acme-manufacturing.localhost\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    let (status, _) = raw_request(
        &app.address,
        "GET /health HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n",
    )
    .await;
    assert_eq!(status, 400, "every route refuses it");
    let (status, body) = raw_request(
        &app.address,
        "GET /no/such/route HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n",
    )
    .await;
    assert_eq!(status, 400, "and so does the fallback: {body}");
    assert!(body.contains("bad_request"), "{body}");
    // Before the body's limit is looked at.
    let (status, body) = raw_request(
        &app.address,
        "POST /api/products HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");

    // Absolute form: the target's host names the tenant, not the Host header.
    let (status, body) = raw_request(
        &app.address,
        "GET http://demo.localhost/api/products HTTP/1.1\r\nHost: nobody.localhost\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
