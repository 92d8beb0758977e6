//! The HTTP stack every request passes through (tower-http): request ids, CORS for
//! the configured origins only, gzip when asked for, and a handler's panic answered
//! as a JSON 500 while the server goes on.

use axum::{Router, routing::get};
use reqwest::Method;
use tenant_router::http::{server::serve, stack};

use crate::helpers::{AppSpec, assert_error, spawn_app, spawn_app_with, standard_tenants};

#[tokio::test]
async fn a_sane_request_id_is_kept_and_any_other_is_replaced_by_a_new_one() {
    let app = spawn_app().await;
    let kept = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .header("X-Request-Id", "gateway-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "gateway-42.a_b");

    for unsafe_id in ["has space", "quote\"d", &"x".repeat(65)] {
        let replaced = app
            .as_tenant(Method::GET, "demo", "/api/products")
            .header("X-Request-Id", unsafe_id)
            .send()
            .await
            .unwrap();
        let id = replaced.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, unsafe_id);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }

    // None given: each response gets its own.
    let ids: Vec<String> =
        futures::future::join_all((0..2).map(|_| app.request(Method::GET, "/health").send()))
            .await
            .into_iter()
            .map(|r| {
                r.unwrap().headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let app = spawn_app_with(AppSpec::new(standard_tenants()).env(
        "CORS_ALLOWED_ORIGINS",
        "https://app.example.com, http://localhost:5173",
    ))
    .await;
    let preflight = |origin: &str| {
        app.request(Method::OPTIONS, "/api/products")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, x-tenant-id",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");

    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A plain request from an allowed page: readable, with the tenant header exposed.
    let read = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .header("Origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let exposed = read.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-tenant-id"), "{exposed}");
}

#[tokio::test]
async fn without_configured_origins_no_page_elsewhere_may_read_a_response() {
    let app = spawn_app().await;
    let read = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(read.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_origin_that_is_not_bare_is_refused_at_start_up() {
    for origin in [
        "app.example.com",
        "https://app.example.com/path",
        "ftp://x.example.com",
        "*",
    ] {
        let mut env = std::collections::HashMap::new();
        env.insert("CORS_ALLOWED_ORIGINS".to_string(), origin.to_string());
        env.insert("SETTINGS_FILE".to_string(), String::new());
        let refused = tenant_router::settings::Settings::from_map(&env).unwrap_err();
        assert!(
            refused.contains("CORS_ALLOWED_ORIGINS"),
            "{origin}: {refused}"
        );
    }
}

#[tokio::test]
async fn responses_are_gzipped_for_a_client_that_asks() {
    let app = spawn_app().await;
    for n in 0..20 {
        app.create_product("demo", &format!("Product number {n}"), 1.0)
            .await;
    }
    let plain = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();

    let zipped = app
        .as_tenant(Method::GET, "demo", "/api/products")
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let zipped = zipped.bytes().await.unwrap();
    assert!(
        zipped.len() < plain.len() / 2,
        "{} of {}",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&zipped[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, plain);

    // Errors too stay JSON under compression.
    let missing = app
        .as_tenant(Method::GET, "nobody", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(missing, 404, "tenant_not_found").await;
}

async fn boom() -> &'static str {
    panic!("postgres://app:hunter2@db/x went away")
}

#[tokio::test]
async fn a_panicking_handler_gets_a_json_500_and_the_server_goes_on() {
    let routes = Router::new()
        .route("/boom", get(boom))
        .route("/fine", get(|| async { "fine" }));
    let app = stack::wrap(routes, &stack::StackOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        app,
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(5),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let boom = client.get(format!("{address}/boom")).send().await.unwrap();
        assert!(boom.headers().contains_key("x-request-id"));
        let body = assert_error(boom, 500, "internal_error").await;
        assert!(!body.to_string().contains("hunter2"), "{body}");
        let fine = client.get(format!("{address}/fine")).send().await.unwrap();
        assert_eq!(fine.text().await.unwrap(), "fine");
    }
    let _ = stop.send(());
    server.await.unwrap();
}
