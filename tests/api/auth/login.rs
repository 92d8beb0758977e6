//! Logging in: throttling by user and address, refused users and bodies, a
//! provisioned owner, the demo login and its absence in production.

use super::*;

#[tokio::test]
async fn repeated_failed_logins_are_throttled_and_the_right_password_works_after_the_window() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "3")
            .env("LOGIN_THROTTLE_SECS", "2")
    })
    .await;
    let login = |password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .json(&json!({ "username": "olivia", "password": password }))
            .send()
    };
    for _ in 0..3 {
        assert_error(login("wrong").await.unwrap(), 401, "unauthorized").await;
    }
    let throttled = login(OWNER_PASSWORD).await.unwrap();
    assert!(throttled.headers().contains_key("retry-after"));
    assert_error(throttled, 429, "too_many_requests").await;
    // Another user of the same tenant is not locked out by olivia's failures.
    app.login("beta", "bert", OWNER_PASSWORD).await;

    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let after = login(OWNER_PASSWORD).await.unwrap();
    assert_eq!(after.status(), 200);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn unknown_users_inactive_users_and_bad_bodies_cannot_log_in() {
    let app = auth_app(|s| s).await;
    let owner = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let id = app
        .add_user("alpha", "leaver", "leaver-password", "staff")
        .await;
    let login = |name: &str, password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .json(&json!({ "username": name, "password": password }))
            .send()
    };
    let leaver_token = app.login("alpha", "leaver", "leaver-password").await;
    let before = app
        .as_tenant(Method::GET, "alpha", "/api/products")
        .bearer_auth(&leaver_token)
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    let deactivate = app
        .as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
        .bearer_auth(&owner)
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(deactivate.status(), 200);
    // The token from before the deactivation stops working at once.
    let after = app
        .as_tenant(Method::GET, "alpha", "/api/products")
        .bearer_auth(&leaver_token)
        .send()
        .await
        .unwrap();
    assert_error(after, 401, "unauthorized").await;
    let unknown: Value = assert_error(
        login("nobody", "whatever-pw").await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let inactive: Value = assert_error(
        login("leaver", "leaver-password").await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // The same answer for both: the response does not tell which usernames exist.
    assert_eq!(unknown, inactive);
    // Olivia's password does not work at beta.
    let elsewhere = app
        .as_tenant(Method::POST, "beta", "/api/auth/login")
        .json(&json!({ "username": "olivia", "password": OWNER_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_error(elsewhere, 401, "unauthorized").await;
    let missing = app
        .as_tenant(Method::POST, "alpha", "/api/auth/login")
        .json(&json!({ "username": "olivia" }))
        .send()
        .await
        .unwrap();
    let body = assert_error(missing, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "password");
}

#[tokio::test]
async fn a_tenant_provisioned_with_an_owner_can_log_in_and_a_weak_owner_password_makes_nothing() {
    let app = auth_app(|s| s).await;
    let weak = app
        .admin(Method::POST, "/api/admin/tenants")
        .json(&json!({
            "id": "gamma",
            "database_url": format!("sqlite://{}/gamma.db", app.data_dir().display()),
            "owner": { "username": "gina", "password": "short" },
        }))
        .send()
        .await
        .unwrap();
    let body = assert_error(weak, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "owner.password");
    assert!(!app.data_files().contains(&"gamma.db".to_string()));

    let created = app
        .admin(Method::POST, "/api/admin/tenants")
        .json(&json!({
            "id": "gamma",
            "database_url": format!("sqlite://{}/gamma.db", app.data_dir().display()),
            "owner": { "username": "gina", "password": "gamma-owner-pw" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let token = app.login("gamma", "gina", "gamma-owner-pw").await;
    let me: Value = json_of(app.request(Method::GET, "/api/auth/me").bearer_auth(&token)).await;
    assert_eq!(me["tenant_id"], "gamma");
    assert_eq!(me["role"], "owner");
    // The owner's creation is in gamma's audit log, as the operator's.
    let audit = json_of(
        app.request(Method::GET, "/api/audit?entity=users")
            .bearer_auth(&token),
    )
    .await;
    let rows = audit["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{audit}");
    assert_eq!(rows[0]["actor"]["kind"], "operator");
    assert_eq!(rows[0]["request_id"], "provisioning");
}

#[tokio::test]
async fn the_demo_tenant_has_the_documented_login() {
    let app = spawn_app_with(
        AppSpec::new(vec![Tenant::new("demo", "default").with("demo = true")]).with_auth(),
    )
    .await;
    let token = app.login("demo", "demo", "demo123").await;
    let names = app
        .product_names(
            app.as_tenant(Method::GET, "demo", "/api/products")
                .bearer_auth(&token),
        )
        .await;
    assert!(!names.is_empty());
}

#[tokio::test]
async fn failures_from_one_address_are_throttled_across_usernames() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "100")
            .env("LOGIN_MAX_FAILURES_PER_ADDRESS", "4")
    })
    .await;
    for i in 0..4 {
        let response = app
            .as_tenant(Method::POST, "alpha", "/api/auth/login")
            .json(&json!({ "username": format!("guess{i}"), "password": "guess-password" }))
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "unauthorized").await;
    }
    // The address is now refused, for a real user with the right password too.
    let response = app
        .as_tenant(Method::POST, "beta", "/api/auth/login")
        .json(&json!({ "username": "bert", "password": OWNER_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_error(response, 429, "too_many_requests").await;
}

#[tokio::test]
async fn production_has_no_demo_login() {
    let app = spawn_app_with(
        AppSpec::new(vec![Tenant::new("demo", "default").with("demo = true")])
            .with_auth()
            .env("APP_ENV", "production"),
    )
    .await;
    let response = app
        .as_tenant(Method::POST, "demo", "/api/auth/login")
        .json(&json!({ "username": "demo", "password": "demo123" }))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn a_bad_body_is_refused_without_quoting_it() {
    let app = auth_app(|s| s).await;
    let response = app
        .as_tenant(Method::POST, "alpha", "/api/auth/login")
        .json(&json!({ "username": "olivia", "password": 98765432 }))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "password");
    assert!(!body.to_string().contains("98765432"), "{body}");
}

#[tokio::test]
async fn a_guesser_at_another_address_cannot_lock_the_user_out() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "3")
            .env("TRUST_FORWARDED_FOR", "true")
    })
    .await;
    let login = |from: &str, password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .header("x-forwarded-for", from)
            .json(&json!({ "username": "olivia", "password": password }))
            .send()
    };
    for _ in 0..3 {
        assert_error(
            login("203.0.113.9", "wrong").await.unwrap(),
            401,
            "unauthorized",
        )
        .await;
    }
    // The guesser's address is refused for olivia, the right password included...
    assert_error(
        login("203.0.113.9", OWNER_PASSWORD).await.unwrap(),
        429,
        "too_many_requests",
    )
    .await;
    // ...but olivia, from her own address, logs in.
    assert_eq!(
        login("198.51.100.7", OWNER_PASSWORD)
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_guesser_cannot_choose_the_address_it_is_counted_at() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "3")
            .env("TRUST_FORWARDED_FOR", "true")
    })
    .await;
    // The client's own line first, the load balancer's line last.
    let login = |own: String, password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .header("x-forwarded-for", own)
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({ "username": "olivia", "password": password }))
            .send()
    };
    for i in 0..3 {
        let wrong = login(format!("10.9.9.{i}"), "wrong").await.unwrap();
        assert_error(wrong, 401, "unauthorized").await;
    }
    let refused = login("10.9.9.200".into(), OWNER_PASSWORD).await.unwrap();
    assert_error(refused, 429, "too_many_requests").await;
}

/// Clients that hang up at every point of a login with the right password, the
/// middle of its hash included, take no failure with them: the user can still log
/// in from that address however many there were.
#[tokio::test]
async fn a_right_password_whose_client_hangs_up_is_no_failed_login() {
    use tokio::io::AsyncWriteExt;
    let app = auth_app(|s| s.env("LOGIN_MAX_FAILURES", "2")).await;
    let body = json!({ "username": "olivia", "password": OWNER_PASSWORD }).to_string();
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: alpha\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // How long a whole login takes here: the hang-ups spread over it.
    let started = std::time::Instant::now();
    app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let whole = started.elapsed();
    for i in 1..=8u32 {
        let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(whole * i / 8).await;
        drop(stream);
    }
    // Attempts still hashing count until they settle (429 meanwhile); once they
    // have, the login is served. Counted as failures, they would hold it at 429
    // for the whole lock-out.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = app
            .as_tenant(Method::POST, "alpha", "/api/auth/login")
            .body(body.clone())
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(std::time::Instant::now() < deadline, "still refused");
        tokio::time::sleep(whole).await;
    }
}

#[tokio::test]
async fn guesses_spread_over_many_addresses_meet_the_per_user_ceiling() {
    let app = auth_app(|s| {
        s.env("LOGIN_MAX_FAILURES", "3")
            .env("LOGIN_MAX_FAILURES_PER_USER", "4")
            .env("TRUST_FORWARDED_FOR", "true")
    })
    .await;
    let login = |from: String, password: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .header("x-forwarded-for", from)
            .json(&json!({ "username": "olivia", "password": password }))
            .send()
    };
    for i in 0..4 {
        let wrong = login(format!("203.0.113.{i}"), "wrong").await.unwrap();
        assert_error(wrong, 401, "unauthorized").await;
    }
    let refused = login("198.51.100.7".into(), OWNER_PASSWORD).await.unwrap();
    assert_error(refused, 429, "too_many_requests").await;
    // Other users are not affected.
    app.login("beta", "bert", OWNER_PASSWORD).await;
}

/// A flood of logins waits for the hashing slots without holding the tenant's
/// connections: with one connection for the tenant and a one-second wait for it,
/// every wrong guess of a flood is answered 401, none 503 for want of the
/// connection, and the tenant's other requests are served in the middle of it.
/// (Holding the connection through each hash, the flood needs it for 200 hashes
/// in a row, seconds even on a fast machine.)
#[tokio::test]
async fn a_flood_of_logins_does_not_hold_the_tenants_connections() {
    const GUESSES: usize = 200;
    let app = auth_app(|s| {
        s.env("MAX_CONNECTIONS_PER_TENANT", "1")
            .env("POOL_ACQUIRE_TIMEOUT_SECS", "1")
            .env("LOGIN_MAX_FAILURES_PER_ADDRESS", "100000")
            .env("LOGIN_MAX_FAILURES_PER_USER", "100000")
    })
    .await;
    let token = app.login("alpha", "olivia", OWNER_PASSWORD).await;
    let guesses = (0..GUESSES).map(|i| {
        app.as_tenant(Method::POST, "alpha", "/api/auth/login")
            .json(&json!({ "username": format!("nobody{i}"), "password": "wrong" }))
            .send()
    });
    let flood = tokio::spawn(futures::future::join_all(guesses));
    // In the middle of the flood: the tenant's other requests get its connection.
    for _ in 0..5 {
        let products = app
            .as_tenant(Method::GET, "alpha", "/api/products")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(products.status(), 200, "{}", products.text().await.unwrap());
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for response in flood.await.unwrap() {
        *statuses
            .entry(response.unwrap().status().as_u16())
            .or_default() += 1;
    }
    assert_eq!(statuses, [(401, GUESSES)].into(), "statuses of the flood");
}
