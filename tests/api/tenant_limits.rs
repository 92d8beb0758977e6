//! Per-tenant request limits: a tenant over its rate or its concurrency gets 429
//! `too_many_requests` with `Retry-After`, and the other tenants are served as
//! before; limits change at run time through PATCH.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::{AppSpec, Tenant, TestApp, assert_error, spawn_app_with};

/// Statuses and latencies of `n` requests to `tenant`, one after another.
async fn serve(app: &TestApp, tenant: &str, n: usize) -> (Vec<u16>, Vec<Duration>) {
    let mut statuses = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let status = app
            .as_tenant(Method::GET, tenant, "/api/products")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        latencies.push(started.elapsed());
        statuses.push(status);
    }
    (statuses, latencies)
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_rate_limit_gets_429_while_another_is_served_as_before() {
    let app = spawn_app_with(AppSpec::new(vec![
        Tenant::new("hot", "dental").with("rate_limit_per_sec = 5\nrate_limit_burst = 5"),
        Tenant::new("calm", "dental"),
    ]))
    .await;
    let (statuses, mut alone) = serve(&app, "calm", 100).await;
    assert!(statuses.iter().all(|s| *s == 200));

    // The hot tenant floods, 16 at a time, while the calm one is served again.
    let started = Instant::now();
    let flood = {
        let requests: Vec<_> = (0..400)
            .map(|_| app.as_tenant(Method::GET, "hot", "/api/products"))
            .collect();
        tokio::spawn(async move {
            futures::stream::iter(requests)
                .map(|r| async move {
                    let response = r.send().await.unwrap();
                    let retry_after = response.headers().get("retry-after").is_some();
                    (response.status().as_u16(), retry_after)
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        })
    };
    let (statuses, mut beside) = serve(&app, "calm", 100).await;
    let hot = flood.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();

    let calm_errors = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(
        calm_errors, 0,
        "the calm tenant failed requests: {statuses:?}"
    );
    let served = hot.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = hot.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(served + refused.len(), hot.len(), "{hot:?}");
    assert!(refused.iter().all(|(_, retry_after)| *retry_after));
    // The burst, and 5 a second after it.
    let allowed = 5.0 + 5.0 * elapsed + 1.0;
    assert!(
        served as f64 <= allowed,
        "{served} served in {elapsed:.1} s, over the limit"
    );
    assert!(!refused.is_empty());
    println!(
        "calm tenant p99 alone {:?}, beside the flood {:?}; hot tenant {served} served, {} refused in {elapsed:.1} s",
        p99(&mut alone),
        p99(&mut beside),
        refused.len()
    );

    let one = app
        .as_tenant(Method::GET, "hot", "/api/products")
        .send()
        .await
        .unwrap();
    if one.status() == 429 {
        assert_error(one, 429, "too_many_requests").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_past_a_tenants_limit_get_429_until_one_ends() {
    let app = spawn_app_with(AppSpec::new(vec![
        Tenant::new("narrow", "dental").with("max_concurrent_requests = 1"),
    ]))
    .await;
    // Opens the tenant's database before the held request.
    assert_eq!(serve(&app, "narrow", 1).await.0, [200]);

    // One request held inside the service: its body stalls half way.
    let address = app.address.trim_start_matches("http://").to_string();
    let body = r#"{"name":"held","price":1.5}"#;
    let hold = || async {
        let mut held = tokio::net::TcpStream::connect(&address).await.unwrap();
        held.write_all(
            format!(
                "POST /api/products HTTP/1.1\r\nHost: {address}\r\nX-Tenant-ID: narrow\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                &body[..5]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        held
    };
    let mut held = hold().await;

    // Wait (a condition, bounded) until the held request has taken the place. On
    // a busy machine the request before may still hold it for a moment after its
    // answer, and the held request is refused itself: it is sent again.
    let mut refused = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let response = app
            .as_tenant(Method::GET, "narrow", "/api/products")
            .send()
            .await
            .unwrap();
        let mut answer = [0u8; 64];
        match held.try_read(&mut answer) {
            Ok(n) if n > 0 => {
                let answer = String::from_utf8_lossy(&answer[..n]);
                assert!(answer.contains(" 429 "), "the held request got {answer}");
                held = hold().await;
                continue;
            }
            _ => {}
        }
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let refused = refused.expect("a second request was never refused while one was held");
    assert!(refused.headers().get("retry-after").is_some());
    assert_error(refused, 429, "too_many_requests").await;

    // The held request ends; the next is served.
    held.write_all(&body.as_bytes()[5..]).await.unwrap();
    let mut served = false;
    for _ in 0..200 {
        if serve(&app, "narrow", 1).await.0 == [200] {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "the tenant stayed refused after its request ended");
}

#[tokio::test]
async fn a_tenants_limit_changes_at_run_time() {
    let app = spawn_app_with(AppSpec::new(vec![Tenant::new("t1", "dental")])).await;
    assert_eq!(serve(&app, "t1", 20).await.0, [200; 20]);
    let patched = app
        .admin(Method::PATCH, "/api/admin/tenants/t1")
        .json(&json!({ "rate_limit_per_sec": 1, "rate_limit_burst": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let statuses = serve(&app, "t1", 5).await.0;
    assert_eq!(&statuses[..2], [200, 200], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    // The configuration shows it.
    let config: serde_json::Value = app
        .admin(Method::GET, "/api/tenants/t1/config")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["limits"]["rate_limit_per_sec"], 1, "{config}");

    let bad = app
        .admin(Method::PATCH, "/api/admin/tenants/t1")
        .json(&json!({ "max_concurrent_requests": 100_000_000 }))
        .send()
        .await
        .unwrap();
    assert_error(bad, 422, "validation_failed").await;
}

/// Requests without a credential are refused before the tenant's limits: a
/// stranger who knows a tenant's id cannot use up its allowance (nor its usage,
/// which counts only requests with a caller), and the 429 says which limit.
#[tokio::test]
async fn requests_without_a_credential_leave_the_tenants_allowance_alone() {
    let app = spawn_app_with(
        AppSpec::new(vec![
            Tenant::new("t1", "default").with("rate_limit_per_sec = 1\nrate_limit_burst = 2"),
        ])
        .with_auth(),
    )
    .await;
    app.add_user("t1", "ann", "a long password 1", "admin")
        .await;
    let token = app.login("t1", "ann", "a long password 1").await;
    for _ in 0..10 {
        let anonymous = app
            .as_tenant(Method::GET, "t1", "/api/products")
            .send()
            .await
            .unwrap();
        assert_error(anonymous, 401, "unauthorized").await;
    }
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..4 {
        let response = app
            .as_tenant(Method::GET, "t1", "/api/products")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            refusal = Some(assert_error(response, 429, "too_many_requests").await);
        }
    }
    assert_eq!(&statuses[..2], [200, 200], "{statuses:?}");
    let refusal = refusal.expect("the burst is 2: a later request is refused");
    let message = refusal["error"]["message"].as_str().unwrap();
    assert!(message.contains("request rate"), "{message}");
    let usage: serde_json::Value = app
        .admin(Method::GET, "/api/admin/tenants/t1/usage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["total"]["requests"], 4, "{usage}");
}
