//! The admin console driven in a real headless Chromium (WebDriver): sign in,
//! provision a tenant, find it in the list, suspend it (its API answers 403), run
//! a migration of every tenant and watch it finish, delete the tenant. Each page
//! is saved as a screenshot under `target/console/`. A second test reads the
//! servers page over PostgreSQL schema tenants, whose home share it shows.

use reqwest::Method;
use serde_json::Value;

use crate::{
    browser::Browser,
    helpers::{
        ADMIN_TOKEN, AppSpec, Backend, TestApp, assert_error, spawn_app_with, standard_tenants,
    },
};

const ENTER: &str = "\u{E007}";

/// What no page of the console may hold: the admin token, a database URL, the
/// data directory's path.
async fn assert_page_holds_no_secret(browser: &Browser, app: &TestApp, page: &str) {
    let source = browser.source().await;
    for secret in [
        ADMIN_TOKEN.to_string(),
        "sqlite://".to_string(),
        "postgres://".to_string(),
        app.dir.path().display().to_string(),
    ] {
        assert!(!source.contains(&secret), "{page}: the page holds {secret}");
    }
}

/// The console's own code logged no error (a script error, or anything the
/// Content-Security-Policy blocked).
async fn assert_no_console_errors(browser: &Browser, page: &str) {
    let errors: Vec<Value> = browser
        .console_log()
        .await
        .into_iter()
        .filter(|entry| entry["level"] == "SEVERE")
        // A refused request (the wrong token's 401, the suspended tenant's 403)
        // is logged by the browser as a failed resource; that is what was asked.
        .filter(|entry| {
            !entry["message"]
                .as_str()
                .unwrap_or("")
                .contains("Failed to load resource")
        })
        .collect();
    assert!(errors.is_empty(), "{page}: console errors {errors:?}");
}

/// Follows the navigation's link to the servers page.
async fn open_servers_page(browser: &Browser) {
    browser
        .find_all("a[data-nav='servers']")
        .await
        .remove(0)
        .click()
        .await;
}

#[tokio::test]
async fn an_operator_runs_a_tenants_life_from_the_console() {
    // Chromium and the thousand-tenant load starved each other on two cores.
    let _heavy = crate::helpers::heavy_test().await;
    let app = spawn_app_with(AppSpec::new(standard_tenants())).await;
    let browser = Browser::start(1280, 900).await;
    let console = format!("{}/admin", app.address);

    // Not signed in: only the sign-in form, and the admin API refuses the page.
    browser.goto(&console).await;
    browser
        .wait_for("#sign-in:not([hidden]) #admin-token")
        .await;
    assert!(browser.find_all("#nav:not([hidden])").await.is_empty());
    let refused = browser
        .run("return fetch('/api/admin/tenants', {credentials: 'same-origin'}).then(r => r.status)")
        .await;
    assert_eq!(refused, 401);
    browser.screenshot("01-sign-in").await;

    // A wrong token is refused with a message; the right one, typed and sent
    // with the Enter key, signs in.
    let token = browser.wait_for("#admin-token").await;
    token.type_text("not-the-admin-token").await;
    token.type_text(ENTER).await;
    browser
        .wait_for_text("#flash", "a valid admin token is required")
        .await;
    let token = browser.wait_for("#admin-token").await;
    token.type_text(ADMIN_TOKEN).await;
    token.type_text(ENTER).await;
    browser
        .wait_for("tr[data-tenant='dental_clinic_abc']")
        .await;
    browser.wait_for_text("#flash", "Signed in").await;
    browser.screenshot("02-tenants").await;
    assert_page_holds_no_secret(&browser, &app, "tenants").await;

    // The session is an HttpOnly, SameSite=Strict cookie that scripts cannot
    // read; nothing is kept in the browser's storage, and the URL has no token.
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "tr_console")
        .expect("the session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert!(!session["value"].as_str().unwrap().contains(ADMIN_TOKEN));
    let script_view = browser
        .run("return [document.cookie, localStorage.length, sessionStorage.length, location.href]")
        .await;
    assert_eq!(script_view[0], "", "{script_view}");
    assert_eq!(script_view[1], 0);
    assert_eq!(script_view[2], 0);
    assert!(!script_view[3].as_str().unwrap().contains(ADMIN_TOKEN));

    // Provision a tenant with its first owner.
    browser
        .find_all("a[data-nav='new']")
        .await
        .remove(0)
        .click()
        .await;
    browser
        .wait_for("#new-id")
        .await
        .type_text("console_clinic")
        .await;
    browser
        .wait_for("#new-company")
        .await
        .type_text("Console Dental")
        .await;
    let file = app.data_dir().join("console_clinic.db");
    browser
        .wait_for("#new-file")
        .await
        .type_text(&file.display().to_string())
        .await;
    browser
        .wait_for("#new-owner")
        .await
        .type_text("owner")
        .await;
    browser
        .wait_for("#new-password")
        .await
        .type_text("a-long-owner-password")
        .await;
    browser.screenshot("03-provision").await;
    browser.wait_for("#provision").await.click().await;
    browser
        .wait_for_text("#flash", "Tenant console_clinic provisioned")
        .await;
    browser
        .wait_for_text("#view h1", "Tenant console_clinic")
        .await;
    browser.wait_for_text("main", "Console Dental").await;
    browser.wait_for_text("main", "5 applied, 0 pending").await;
    browser.screenshot("04-tenant").await;
    assert_page_holds_no_secret(&browser, &app, "tenant").await;
    assert!(file.exists());
    let token = app
        .login("console_clinic", "owner", "a-long-owner-password")
        .await;
    assert!(!token.is_empty());

    // It is in the list, found by searching.
    browser.goto(&format!("{console}#/tenants?q=console")).await;
    browser.wait_for("tr[data-tenant='console_clinic']").await;
    let rows = browser.find_all("tbody tr").await;
    assert_eq!(rows.len(), 1, "the search shows only the new tenant");
    browser.screenshot("05-search").await;

    // Suspend it: its API answers 403 tenant_inactive.
    browser
        .goto(&format!("{console}#/tenant/console_clinic"))
        .await;
    browser.wait_for_text("#toggle-active", "Suspend").await;
    browser.wait_for("#toggle-active").await.click().await;
    browser
        .wait_for_text("#flash", "Tenant console_clinic suspended")
        .await;
    browser.wait_for_text("#toggle-active", "Activate").await;
    let response = app
        .as_tenant(Method::GET, "console_clinic", "/api/products")
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "tenant_inactive").await;
    browser.screenshot("06-suspended").await;

    // Change its features and branding from its page: the API follows.
    let supplies = browser
        .wait_for("input[type=checkbox][value='dental_supplies']")
        .await;
    supplies.click().await;
    let drawn = browser
        .run("return document.querySelector('#view').dataset.render")
        .await;
    browser.wait_for("#save-features").await.click().await;
    browser.wait_for_text("#flash", "Features saved").await;
    // The page is drawn again with the saved features before the next change.
    let redrawn = format!(
        "#view:not([data-render='{}']) .crumbs[data-tenant='console_clinic']",
        drawn.as_str().unwrap()
    );
    browser.wait_for(&redrawn).await;
    let color = browser.wait_for("input[placeholder='#2E86AB']").await;
    color.clear().await;
    color.type_text("#123456").await;
    // Sent from the keyboard: Enter in a field submits its form.
    color.type_text(ENTER).await;
    browser
        .wait_for_text("#flash", "Branding and contact details saved")
        .await;
    let config: Value = app
        .admin(Method::GET, "/api/tenants/console_clinic/config")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["branding"]["primary_color"], "#123456", "{config}");
    let features = config["features"].as_array().unwrap();
    assert!(
        !features.contains(&Value::from("dental_supplies")),
        "{config}"
    );
    assert!(
        features.contains(&Value::from("patient_management")),
        "{config}"
    );

    // Migrate every tenant and watch the run finish: the tenants of the tenants
    // file had never been opened, so their databases are made and migrated now.
    browser
        .find_all("a[data-nav='migrations']")
        .await
        .remove(0)
        .click()
        .await;
    browser.wait_for("#migrate-all").await.click().await;
    browser.wait_for(".job[data-status='finished']").await;
    let run = browser.text(".job").await;
    assert!(run.contains("4/4 done"), "{run}");
    assert!(
        run.contains("3 migrated") && run.contains("1 up to date"),
        "{run}"
    );
    assert!(run.contains("0 failed"), "{run}");
    browser.screenshot("07-migrations").await;

    // The servers with their connections and budgets.
    open_servers_page(&browser).await;
    browser.wait_for_text("main", "sqlite").await;
    // Only PostgreSQL schema tenants have a home connection: a dash for SQLite.
    assert!(
        browser.text("main").await.contains("Served at home"),
        "the servers table has no home column"
    );
    assert_eq!(browser.text("td[data-home]").await, "–");
    browser.screenshot("08-servers").await;
    assert_page_holds_no_secret(&browser, &app, "servers").await;

    // On a phone-sized screen the list fits the width; wide tables scroll inside
    // their own box.
    browser.resize(390, 844).await;
    browser.goto(&format!("{console}#/tenants")).await;
    browser.wait_for("tr[data-tenant='console_clinic']").await;
    let overflow = browser
        .run("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is wider than the screen by {overflow}"
    );
    browser.screenshot("09-phone").await;
    browser.resize(1280, 900).await;

    // Delete: a wrong confirmation is refused; the typed id deletes it, and its
    // database with it when asked.
    browser
        .goto(&format!("{console}#/tenant/console_clinic"))
        .await;
    browser
        .wait_for("#delete-confirm")
        .await
        .type_text("console")
        .await;
    browser.wait_for("#delete-tenant").await.click().await;
    browser
        .wait_for_text("#flash", "Type console_clinic to confirm")
        .await;
    let confirm = browser.wait_for("#delete-confirm").await;
    confirm.clear().await;
    confirm.type_text("console_clinic").await;
    browser.wait_for("#delete-drop").await.click().await;
    browser.screenshot("10-delete").await;
    browser.wait_for("#delete-tenant").await.click().await;
    browser
        .wait_for_text(
            "#flash",
            "Tenant console_clinic deleted and its database dropped",
        )
        .await;
    browser.wait_for("tr[data-tenant='demo']").await;
    assert!(
        browser
            .find_all("tr[data-tenant='console_clinic']")
            .await
            .is_empty()
    );
    let response = app
        .admin(Method::GET, "/api/tenants/console_clinic/config")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "tenant_not_found").await;
    assert!(!file.exists(), "its database was dropped");
    assert_no_console_errors(&browser, "the whole run").await;

    // Signing out ends the session: the page shows the sign-in form again and
    // the cookie it had opens nothing.
    let cookie = format!("tr_console={}", session["value"].as_str().unwrap());
    browser.wait_for("#sign-out").await.click().await;
    browser.wait_for("#sign-in:not([hidden])").await;
    let response = app
        .request(Method::GET, "/api/admin/tenants")
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
    browser.quit().await;
}

#[tokio::test]
async fn the_servers_page_shows_the_share_of_schema_tenants_checkouts_served_at_home() {
    let _heavy = crate::helpers::heavy_test().await;
    let app = spawn_app_with(AppSpec::new(standard_tenants()).on(Backend::PgSchema)).await;
    for _ in 0..3 {
        let response = app
            .as_tenant(Method::GET, "demo", "/api/products")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let stats = app.pool_stats().await;
    let checkouts = |s: &Value| {
        (
            s["home_checkouts"].as_u64().unwrap(),
            s["away_checkouts"].as_u64().unwrap(),
        )
    };
    let (home, away) = stats["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(checkouts)
        .find(|(home, away)| home + away > 0)
        .unwrap_or_else(|| panic!("no server has served a schema tenant: {stats}"));
    assert!(home > 0 && home + away >= 3, "{stats}");

    let browser = Browser::start(1280, 900).await;
    browser
        .goto(&format!("{}/admin#/servers", app.address))
        .await;
    let token = browser.wait_for("#admin-token").await;
    token.type_text(ADMIN_TOKEN).await;
    token.type_text(ENTER).await;
    browser.wait_for_text("#flash", "Signed in").await;
    open_servers_page(&browser).await;
    browser.wait_for("td[data-home]").await;
    // The page reads the counters again, so they may have grown since: the
    // share is a percentage of at least the checkouts counted above.
    let shown = browser.text("td[data-home]").await;
    let (share, total) = shown
        .split_once(" % of ")
        .unwrap_or_else(|| panic!("not a share: {shown:?}"));
    let (share, total): (f64, u64) = (share.parse().unwrap(), total.parse().unwrap());
    assert!(total >= home + away, "{shown} against {stats}");
    assert!((0.0..=100.0).contains(&share) && share > 0.0, "{shown}");
    browser.screenshot("11-servers-postgres").await;
    assert_page_holds_no_secret(&browser, &app, "servers on PostgreSQL").await;
    assert_no_console_errors(&browser, "servers on PostgreSQL").await;
    browser.quit().await;
}
