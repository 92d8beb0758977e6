//! Roles: what each role reaches, who may grant what, and the last owner.

use super::*;

// In each tenant's database: these run on SQLite, PostgreSQL database mode and
// schema mode alike.
crate::on_every_backend!(
    each_role_reaches_exactly_what_it_may,
    two_owners_demoting_each_other_at_once_leave_one,
    one_username_created_twice_at_once_is_one_user_and_a_conflict,
);

async fn each_role_reaches_exactly_what_it_may(backend: Backend) {
    let app = auth_app(|s| s.on(backend)).await;
    let tokens = one_of_each_role(&app).await;
    // (method, path, body, lowest role allowed)
    let matrix: Vec<(Method, &str, Option<Value>, Role)> = vec![
        (Method::GET, "/api/products", None, Role::Staff),
        (
            Method::POST,
            "/api/products",
            Some(json!({ "name": "p", "price": 1.0 })),
            Role::Staff,
        ),
        (Method::GET, "/api/dental/patients", None, Role::Staff),
        (Method::GET, "/api/cash-flow", None, Role::Staff),
        (
            Method::GET,
            "/api/cash-flow/summary?year=2026",
            None,
            Role::Manager,
        ),
        (Method::GET, "/api/data/status", None, Role::Manager),
        (Method::GET, "/api/users", None, Role::Admin),
        (
            Method::POST,
            "/api/users",
            Some(json!({ "username": "new-hire", "password": "new-hire-pass", "role": "staff" })),
            Role::Admin,
        ),
        (Method::GET, "/api/api-keys", None, Role::Admin),
        (Method::GET, "/api/audit", None, Role::Admin),
        (Method::POST, "/api/data/reset", None, Role::Admin),
    ];
    for (method, path, body, lowest) in &matrix {
        for (role, token) in &tokens {
            // A user created by an earlier role's request must not make a later one 409.
            let body = body.clone().map(|mut b| {
                if b.get("username").is_some() {
                    b["username"] = json!(format!("hire-by-{}", role.as_str()));
                }
                b
            });
            let mut request = app
                .as_tenant(method.clone(), "alpha", path)
                .bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            if role >= lowest {
                assert!(
                    response.status().is_success(),
                    "{role:?} on {method} {path}: {}",
                    response.status()
                );
            } else {
                assert_error(response, 403, "forbidden").await;
            }
        }
    }
}

#[tokio::test]
async fn nobody_grants_more_than_they_have_and_the_last_owner_stays() {
    let app = auth_app(|s| s).await;
    let tokens = one_of_each_role(&app).await;
    let admin = &tokens[2].1;
    let owner = &tokens[3].1;
    let post_user = |token: &str, name: &str, role: &str| {
        app.as_tenant(Method::POST, "alpha", "/api/users")
            .bearer_auth(token)
            .json(&json!({ "username": name, "password": "long-password", "role": role }))
            .send()
    };
    assert_error(
        post_user(admin, "boss", "owner").await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        post_user(owner, "boss", "owner").await.unwrap().status(),
        201
    );
    // An admin's key cannot be an owner's.
    let key = app
        .as_tenant(Method::POST, "alpha", "/api/api-keys")
        .bearer_auth(admin)
        .json(&json!({ "name": "k", "role": "owner" }))
        .send()
        .await
        .unwrap();
    assert_error(key, 403, "forbidden").await;

    // Three owners now (olivia, owner-user, boss): demote two, the third must stay.
    let users: Value = json_of(
        app.as_tenant(Method::GET, "alpha", "/api/users")
            .bearer_auth(owner),
    )
    .await;
    let owners: Vec<String> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "owner")
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(owners.len(), 3);
    let patch = |id: &str, body: Value| {
        app.as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
            .bearer_auth(owner)
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(&owners[0], json!({ "role": "admin" }))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        patch(&owners[1], json!({ "is_active": false }))
            .await
            .unwrap()
            .status(),
        200
    );
    let last = patch(&owners[2], json!({ "role": "staff" })).await.unwrap();
    assert_error(last, 409, "conflict").await;

    // A demotion takes effect on the user's existing token.
    let manager = &tokens[1].1;
    let report = || {
        app.as_tenant(Method::GET, "alpha", "/api/data/status")
            .bearer_auth(manager)
            .send()
    };
    assert_eq!(report().await.unwrap().status(), 200);
    let manager_id = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "manager-user")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        patch(&manager_id, json!({ "role": "staff" }))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_error(report().await.unwrap(), 403, "forbidden").await;
}

#[tokio::test]
async fn an_admin_cannot_take_over_another_admin_but_changes_itself() {
    let app = auth_app(|s| s).await;
    let tokens = one_of_each_role(&app).await;
    let (admin, owner) = (&tokens[2].1, &tokens[3].1);
    let other_admin = app
        .add_user("alpha", "second-admin", "second-admin-pw", "admin")
        .await;
    let own_id = json_of(
        app.as_tenant(Method::GET, "alpha", "/api/auth/me")
            .bearer_auth(admin),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = |token: &str, id: &str, body: Value| {
        app.as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let takeover = patch(admin, &other_admin, json!({ "password": "taken-over-pw" }))
        .await
        .unwrap();
    assert_error(takeover, 403, "forbidden").await;
    let own = patch(admin, &own_id, json!({ "password": "my-new-password" }))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    app.login("alpha", "admin-user", "my-new-password").await;
    let by_owner = patch(owner, &other_admin, json!({ "is_active": false }))
        .await
        .unwrap();
    assert_eq!(by_owner.status(), 200);
}

async fn two_owners_demoting_each_other_at_once_leave_one(backend: Backend) {
    // The race is a matter of timing: several fresh rounds.
    for round in 0..4 {
        let app = auth_app(|s| s.on(backend)).await;
        let olivia_id = json_of(
            app.as_tenant(Method::GET, "alpha", "/api/auth/me")
                .bearer_auth(app.login("alpha", "olivia", OWNER_PASSWORD).await),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let second_id = app
            .add_user("alpha", "second", "second-password", "owner")
            .await;
        let olivia = app.login("alpha", "olivia", OWNER_PASSWORD).await;
        let second = app.login("alpha", "second", "second-password").await;
        let demote = |token: &str, id: &str| {
            app.as_tenant(Method::PATCH, "alpha", &format!("/api/users/{id}"))
                .bearer_auth(token)
                .json(&json!({ "role": "staff" }))
                .send()
        };
        let (first, other) = tokio::join!(demote(&olivia, &second_id), demote(&second, &olivia_id));
        let statuses = [
            first.unwrap().status().as_u16(),
            other.unwrap().status().as_u16(),
        ];
        // Whoever is still an owner can list the users; count the owners.
        let mut owners = None;
        for token in [&olivia, &second] {
            let response = app
                .as_tenant(Method::GET, "alpha", "/api/users")
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                let users: Value = response.json().await.unwrap();
                owners = Some(
                    users["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|u| u["role"] == "owner" && u["is_active"] == true)
                        .count(),
                );
            }
        }
        assert_eq!(owners, Some(1), "round {round}: statuses {statuses:?}");
        // One wins; the other is refused cleanly (409 last owner, or 403 when the
        // winner's demotion already took its rights), never a 5xx from a lock clash.
        let mut sorted = statuses;
        sorted.sort_unstable();
        assert!(
            sorted == [200, 403] || sorted == [200, 409],
            "round {round}: {statuses:?}"
        );
    }
}

async fn one_username_created_twice_at_once_is_one_user_and_a_conflict(backend: Backend) {
    let app = auth_app(|s| s.on(backend)).await;
    let create = || {
        app.admin(Method::POST, "/api/admin/tenants/alpha/users")
            .json(&json!({ "username": "twin", "password": "twin-password", "role": "staff" }))
            .send()
    };
    let (a, b) = tokio::join!(create(), create());
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
}
