//! Secrets kept out of responses and log lines: database passwords, user
//! passwords, tokens and keys.

use super::*;

#[test]
fn no_response_and_no_log_line_holds_a_database_password() {
    const PASSWORD: &str = "Sup3r-Secret-Pw";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[tenants.demo]\ndatabase_url = 'sqlite://{}/demo.db'\n\
             [tenants.pg_tenant]\ndatabase_url = 'postgres://app:{PASSWORD}@127.0.0.1:1/tenant_db'\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut server = Server::start(command(
        dir.path(),
        &[
            ("LOG_LEVEL", "trace"),
            ("POOL_CONNECT_TIMEOUT_SECS", "1"),
            ("POOL_ACQUIRE_TIMEOUT_SECS", "1"),
        ],
    ));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let bodies = rt.block_on(async {
        let client = reqwest::Client::new();
        let requests = [
            (Method::GET, "/api/tenants", None),
            (Method::GET, "/api/tenants/pg_tenant/config", None),
            (Method::GET, "/api/tenants/pg_tenant/health", None),
            (Method::GET, "/api/tenants/pg_tenant/branding", None),
            (Method::GET, "/api/products", Some("pg_tenant")),
            (Method::POST, "/api/products", Some("pg_tenant")),
            (Method::GET, "/api/products", Some("demo")),
        ];
        let mut bodies = Vec::new();
        for (method, path, tenant) in requests {
            let mut request = client
                .request(method, format!("{}{path}", server.address))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({ "name": "x", "price": 1 }));
            if let Some(t) = tenant {
                request = request.header("X-Tenant-ID", t);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            bodies.push((path, tenant, status, response.text().await.unwrap()));
        }
        bodies
    });
    assert!(server.stop(), "SIGTERM should end the server cleanly");
    let log = server.log();

    for (path, _, _, body) in &bodies {
        assert!(
            !body.contains(PASSWORD),
            "{path} leaked the password: {body}"
        );
        assert!(
            !body.contains("127.0.0.1:1"),
            "{path} leaked the database host: {body}"
        );
    }
    let pg_products = bodies
        .iter()
        .find(|b| b.0 == "/api/products" && b.1 == Some("pg_tenant"))
        .unwrap();
    assert_eq!(
        pg_products.2, 503,
        "unreachable database is 503: {}",
        pg_products.3
    );
    assert!(pg_products.3.contains("tenant_unavailable"));
    assert!(!log.contains(PASSWORD), "log leaked the password:\n{log}");
    assert!(
        log.contains("opening tenant pool failed"),
        "the failure is logged:\n{log}"
    );

    // Every log line written inside a tenant request names the tenant.
    for line in log
        .lines()
        .filter(|l| l.contains("request{") && l.contains("/api/products"))
    {
        assert!(
            line.contains("tenant_id="),
            "line without tenant id: {line}"
        );
    }
}

#[test]
fn no_password_token_or_key_reaches_a_log_line() {
    const JWT_SECRET: &str = "process-jwt-secret-0123456789abcdef-xyz";
    const PASSWORD: &str = "Sup3r-secret-login-pw";
    const WRONG: &str = "Wr0ng-guess-pw-123";
    const SECOND: &str = "Another-s3cret-pw";
    const CHANGED: &str = "Changed-s3cret-pw";
    let dir = dir_with_sqlite_tenant("alpha");
    let mut server = Server::start(command(
        dir.path(),
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", JWT_SECRET),
            ("LOG_LEVEL", "trace"),
        ],
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (token, key) = rt.block_on(async {
        let client = reqwest::Client::new();
        let url = |path: &str| format!("{}{path}", server.address);
        let send = |request: reqwest::RequestBuilder| async move {
            let response = request.header("X-Tenant-ID", "alpha").send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        };
        let add = client
            .post(url("/api/admin/tenants/alpha/users"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "username": "ann", "password": PASSWORD, "role": "owner" }));
        assert_eq!(send(add).await.0, 201);
        let login = |password: &'static str| {
            client
                .post(url("/api/auth/login"))
                .json(&serde_json::json!({ "username": "ann", "password": password }))
        };
        assert_eq!(send(login(WRONG)).await.0, 401);
        let (status, body) = send(login(PASSWORD)).await;
        assert_eq!(status, 200);
        let token = body["access_token"].as_str().unwrap().to_string();
        let (status, _) = send(client.get(url("/api/products")).bearer_auth(&token)).await;
        assert_eq!(status, 200);
        let (status, created) = send(
            client
                .post(url("/api/api-keys"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "name": "etl" })),
        )
        .await;
        assert_eq!(status, 201);
        let key = created["key"].as_str().unwrap().to_string();
        let (status, _) = send(client.get(url("/api/products")).header("X-API-Key", &key)).await;
        assert_eq!(status, 200);
        let revoke = client
            .delete(url(&format!(
                "/api/api-keys/{}",
                created["id"].as_str().unwrap()
            )))
            .bearer_auth(&token);
        assert_eq!(send(revoke).await.0, 204);
        let (status, _) = send(client.get(url("/api/products")).bearer_auth(&key)).await;
        assert_eq!(status, 401);
        let (status, bob) = send(
            client
                .post(url("/api/users"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "username": "bob", "password": SECOND })),
        )
        .await;
        assert_eq!(status, 201);
        let change = client
            .patch(url(&format!("/api/users/{}", bob["id"].as_str().unwrap())))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "password": CHANGED }));
        assert_eq!(send(change).await.0, 200);
        (token, key)
    });
    assert!(server.stop(), "SIGTERM should end the server cleanly");
    let log = server.log();
    assert!(log.contains("login failed"), "the run was logged:\n{log}");
    let token_signature = token.rsplit('.').next().unwrap();
    let key_secret = key.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("a password", PASSWORD),
        ("a wrong password", WRONG),
        ("a new user's password", SECOND),
        ("a changed password", CHANGED),
        ("the access token", token.as_str()),
        ("the token's signature", token_signature),
        ("the API key", key.as_str()),
        ("the API key's secret", key_secret),
        ("the JWT secret", JWT_SECRET),
        ("the admin token", ADMIN),
    ] {
        assert!(!log.contains(secret), "the log holds {what}:\n{log}");
    }
    assert!(!log.contains("$argon2id$"), "the log holds a password hash");
}
