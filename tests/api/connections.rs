//! The connection layer on live PostgreSQL servers. Schema-mode tenants of one
//! database share that database's pool, so one connection serves a tenant right
//! after another: each request must see only its own tenant's rows, also after
//! requests cancelled mid-transaction and errors inside a transaction. With default
//! settings a server of a hundred connections serves twelve hundred tenants without
//! ever being asked for more, and a tenant whose server refuses connections gets its
//! 503 at once.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{StreamExt, stream};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectOptions, ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

use crate::{
    helpers::{AppSpec, TestApp, assert_error, spawn_app_with},
    pg,
};

/// An app whose tenants are given as the text of a tenants file.
async fn spawn_with_toml(toml: &str, env: &[(&str, &str)]) -> TestApp {
    let spec = env
        .iter()
        .fold(AppSpec::from_toml(toml), |spec, (k, v)| spec.env(k, v));
    spawn_app_with(spec).await
}

/// Tenants-file entries for schema-mode tenants `ids`, all in the database at `url`.
fn schema_tenants(ids: &[String], url: &str, domain: &str) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "[tenants.{id}]\ndatabase_url = \"{url}\"\nisolation = \"schema\"\n\
                 domain = \"{domain}\"\n"
            )
        })
        .collect()
}

/// The database name in a PostgreSQL URL.
fn database_name(url: &str) -> String {
    url::Url::parse(url)
        .expect("database URL")
        .path()
        .trim_start_matches('/')
        .to_string()
}

/// Every item of a tenant's list route, page after page.
async fn all_items(app: &TestApp, tenant: &str, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut offset = 0;
    loop {
        let response = app
            .as_tenant(
                Method::GET,
                tenant,
                &format!("{path}?limit=200&offset={offset}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path} for {tenant}");
        let page: Value = response.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => return items,
        }
    }
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect()
}

/// The sorted names of a tenant's products.
async fn product_names(app: &TestApp, tenant: &str) -> Vec<String> {
    let mut names = names(&all_items(app, tenant, "/api/products").await);
    names.sort();
    names
}

/// A small seeded generator (splitmix64): the load is random, and the seed it
/// prints (or `TEST_SEED`) repeats it.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Self {
        let seed = std::env::var("TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: TEST_SEED={seed}");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[tokio::test]
async fn a_request_right_after_another_tenants_on_the_same_connection_sees_only_its_own_rows() {
    let started = Instant::now();
    let database = pg::fresh_database("trk").await;
    let ids: Vec<String> = (0..6).map(|i| format!("neighbour_{i}")).collect();
    // One shared pool of at most two connections for six tenants: every connection
    // goes from one tenant to another all the time.
    let app = spawn_with_toml(
        &schema_tenants(&ids, &database, "default"),
        &[
            ("AUTO_CREATE_DATABASES", "true"),
            ("MAX_CONNECTIONS_PER_SERVER", "2"),
            ("MAX_CONNECTIONS_PER_TENANT", "1"),
        ],
    )
    .await;
    let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
    for id in &ids {
        let mut own: Vec<String> = (0..3).map(|k| format!("{id} #{k}")).collect();
        for (k, name) in own.iter().enumerate() {
            app.create_product(id, name, 1.0 + k as f64).await;
        }
        own.sort();
        expected.insert(id, own);
    }
    let mut rng = Rng::seeded("right_after_another_tenant");
    let mut requests = 0;

    // One tenant after another, one request at a time: each takes one of the
    // pool's two connections, last used by another tenant.
    for _ in 0..20 {
        for id in &ids {
            assert_eq!(
                product_names(&app, id).await,
                expected[id.as_str()],
                "rows seen by {id}"
            );
            requests += 1;
        }
    }
    // All tenants at once, in a random order, three requests each per round.
    for _ in 0..30 {
        let mut order: Vec<&String> = ids.iter().chain(&ids).chain(&ids).collect();
        rng.shuffle(&mut order);
        let seen = futures::future::join_all(order.iter().map(|id| {
            let app = &app;
            async move { (*id, product_names(app, id).await) }
        }))
        .await;
        for (id, names) in seen {
            assert_eq!(names, expected[id.as_str()], "rows seen by {id}");
        }
        requests += order.len();
    }

    // The six tenants are one pool of the one database, and it reused its
    // connections rather than opening one per request.
    let stats = app.pool_stats().await;
    let pools = stats["connection_pools"]
        .as_array()
        .unwrap_or_else(|| panic!("no connection_pools: {stats}"));
    let name = database_name(&database);
    let shared: Vec<&Value> = pools.iter().filter(|p| p["database"] == name).collect();
    assert_eq!(shared.len(), 1, "pools of {name}: {stats}");
    assert_eq!(shared[0]["tenants"], ids.len(), "{stats}");
    assert!(shared[0]["open"].as_u64().unwrap() <= 2, "{stats}");
    let server = stats["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no servers: {stats}"))
        .iter()
        .find(|s| s["server"] == shared[0]["server"])
        .unwrap_or_else(|| panic!("no server entry for the pool: {stats}"));
    assert!(server["peak_open"].as_u64().unwrap() <= 2, "{stats}");
    let opened = server["opened"].as_u64().unwrap();
    eprintln!(
        "{requests} reads over {} tenants, {opened} connections opened, in {:?}",
        ids.len(),
        started.elapsed()
    );
    assert!(
        opened * 4 < requests as u64,
        "{opened} connections opened for {requests} requests: {stats}"
    );
}

/// What a manufacturing tenant is given before the load: materials with plenty of
/// stock and one without any, and two orders that can never complete.
struct Plant {
    id: String,
    /// Order on a BOM of plentiful materials, never started: completing it takes
    /// every material's stock, then fails (409) inside the transaction.
    planned_order: String,
    /// Started order on a BOM that includes the empty material: completing it
    /// fails (409) on that material and rolls back.
    short_order: String,
    /// A plentiful material, for the BOMs the load creates.
    bom_material: String,
}

const PLENTY: f64 = 1_000_000.0;
const PLENTIFUL_MATERIALS: usize = 8;
const STEPS_PER_TENANT: usize = 64;

async fn created(app: &TestApp, tenant: &str, path: &str, body: Value) -> Value {
    let response = app
        .as_tenant(Method::POST, tenant, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "POST {path} for {tenant}");
    response.json().await.unwrap()
}

async fn set_up_plant(app: &TestApp, id: &str) -> Plant {
    let mut plentiful = Vec::new();
    for k in 0..PLENTIFUL_MATERIALS {
        let m = created(
            app,
            id,
            "/api/manufacturing/materials",
            json!({ "name": format!("{id}:plenty{k}"), "unit": "kg", "stock": PLENTY }),
        )
        .await;
        plentiful.push(m["id"].as_str().unwrap().to_string());
    }
    let empty = created(
        app,
        id,
        "/api/manufacturing/materials",
        json!({ "name": format!("{id}:empty"), "unit": "kg", "stock": 0.0 }),
    )
    .await;
    let items = |ids: &[&String]| -> Vec<Value> {
        ids.iter()
            .map(|m| json!({ "material_id": m, "quantity": 1.0 }))
            .collect()
    };
    let all_plenty: Vec<&String> = plentiful.iter().collect();
    let mut with_empty = all_plenty.clone();
    let empty_id = empty["id"].as_str().unwrap().to_string();
    with_empty.push(&empty_id);
    let good_bom = created(
        app,
        id,
        "/api/manufacturing/boms",
        json!({ "name": format!("{id}:bom-good"), "items": items(&all_plenty) }),
    )
    .await;
    let short_bom = created(
        app,
        id,
        "/api/manufacturing/boms",
        json!({ "name": format!("{id}:bom-short"), "items": items(&with_empty) }),
    )
    .await;
    let order = |bom: &Value| json!({ "bom_id": bom["id"], "quantity": 1.0 });
    let planned = created(
        app,
        id,
        "/api/manufacturing/production-orders",
        order(&good_bom),
    )
    .await;
    let short = created(
        app,
        id,
        "/api/manufacturing/production-orders",
        order(&short_bom),
    )
    .await;
    let short_order = short["id"].as_str().unwrap().to_string();
    let started = app
        .as_tenant(
            Method::POST,
            id,
            &format!("/api/manufacturing/production-orders/{short_order}/start"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200, "start the short order of {id}");
    Plant {
        id: id.to_string(),
        planned_order: planned["id"].as_str().unwrap().to_string(),
        short_order,
        bom_material: plentiful[0].clone(),
    }
}

/// One step of the load on a tenant. `cancel_after` is a client-side timeout of a
/// few milliseconds: the request is abandoned, mostly while the server is still
/// waiting for a connection or in the middle of its transaction.
#[derive(Debug, Clone, Copy)]
enum Step {
    CreateProduct {
        cancel_after: Option<Duration>,
    },
    CreateBom {
        cancel_after: Option<Duration>,
    },
    CompletePlanned {
        cancel_after: Option<Duration>,
    },
    CompleteShort {
        cancel_after: Option<Duration>,
    },
    /// A read of the products, abandoned or answered with the tenant's own rows
    /// only: an abandoned one may leave its connection to be drained.
    ReadProducts {
        cancel_after: Option<Duration>,
    },
    CheckProducts,
    CheckMaterials,
}

impl Step {
    fn random(rng: &mut Rng) -> Self {
        let cancel = |rng: &mut Rng| Some(Duration::from_millis(1 + rng.below(25) as u64));
        match rng.below(14) {
            0 | 1 => Step::CreateProduct { cancel_after: None },
            2 | 3 => Step::CreateProduct {
                cancel_after: cancel(rng),
            },
            4 => Step::CreateBom { cancel_after: None },
            5 => Step::CreateBom {
                cancel_after: cancel(rng),
            },
            6 => Step::CompletePlanned { cancel_after: None },
            7 | 8 => Step::CompletePlanned {
                cancel_after: cancel(rng),
            },
            9 => Step::CompleteShort {
                cancel_after: cancel(rng),
            },
            10 => Step::CompleteShort { cancel_after: None },
            11 | 12 => Step::ReadProducts {
                cancel_after: cancel(rng),
            },
            _ if rng.below(2) == 0 => Step::CheckProducts,
            _ => Step::CheckMaterials,
        }
    }
}

/// Writes per tenant: acknowledged (2xx), and abandoned (may or may not have landed).
#[derive(Default)]
struct Ledger {
    products: HashMap<String, HashSet<String>>,
    boms: HashMap<String, HashSet<String>>,
    abandoned_products: HashMap<String, usize>,
    abandoned_boms: HashMap<String, usize>,
    cancelled: usize,
    /// How long completions that failed inside their transaction took.
    failed_in: Vec<Duration>,
}

/// Sends `request`, abandoning it after `cancel_after`: the status if it was
/// answered in time, `None` if it was abandoned first.
async fn send(
    request: reqwest::RequestBuilder,
    cancel_after: Option<Duration>,
) -> Option<StatusCode> {
    let request = match cancel_after {
        Some(limit) => request.timeout(limit),
        None => request,
    };
    match request.send().await {
        Ok(response) => Some(response.status()),
        Err(e) if e.is_timeout() && cancel_after.is_some() => None,
        Err(e) => panic!("request failed: {e}"),
    }
}

/// The names a tenant's list holds are its own, and include every write
/// acknowledged before the list was asked for.
fn assert_own(tenant: &str, what: &str, names: &[String], acknowledged: &HashSet<String>) {
    let prefix = format!("{tenant}:");
    let foreign: Vec<&String> = names.iter().filter(|n| !n.starts_with(&prefix)).collect();
    assert!(
        foreign.is_empty(),
        "{tenant} sees foreign {what}: {foreign:?}"
    );
    let listed: HashSet<&String> = names.iter().collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !listed.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{tenant} lacks acknowledged {what}: {missing:?}"
    );
}

async fn assert_materials_untouched(app: &TestApp, tenant: &str) {
    let materials = all_items(app, tenant, "/api/manufacturing/materials").await;
    assert_own(tenant, "materials", &names(&materials), &HashSet::new());
    assert_eq!(materials.len(), PLENTIFUL_MATERIALS + 1, "{materials:?}");
    for m in &materials {
        let want = if m["name"].as_str().unwrap().ends_with(":empty") {
            0.0
        } else {
            PLENTY
        };
        assert_eq!(
            m["stock"].as_f64().unwrap(),
            want,
            "{tenant}: stock of {m} after completions that all failed"
        );
    }
}

/// The products acknowledged to `tenant` so far.
fn acknowledged_products(ledger: &Mutex<Ledger>, tenant: &str) -> HashSet<String> {
    let ledger = ledger.lock().unwrap();
    ledger.products.get(tenant).cloned().unwrap_or_default()
}

async fn run_step(app: &TestApp, plant: &Plant, step: Step, ledger: &Mutex<Ledger>) {
    let t = plant.id.as_str();
    let orders = "/api/manufacturing/production-orders";
    match step {
        Step::CreateProduct { cancel_after } => {
            let name = format!("{t}:{}", uuid::Uuid::new_v4());
            let request = app
                .as_tenant(Method::POST, t, "/api/products")
                .json(&json!({ "name": name, "price": 1.5 }));
            let status = send(request, cancel_after).await;
            let mut ledger = ledger.lock().unwrap();
            match status {
                Some(s) if s == 201 => {
                    ledger.products.entry(t.into()).or_default().insert(name);
                }
                Some(s) => panic!("create product for {t}: {s}"),
                None => {
                    *ledger.abandoned_products.entry(t.into()).or_default() += 1;
                    ledger.cancelled += 1;
                }
            }
        }
        Step::CreateBom { cancel_after } => {
            let name = format!("{t}:{}", uuid::Uuid::new_v4());
            let request = app
                .as_tenant(Method::POST, t, "/api/manufacturing/boms")
                .json(&json!({ "name": name, "items": [
                    { "material_id": plant.bom_material, "quantity": 2.0 },
                ]}));
            let status = send(request, cancel_after).await;
            let mut ledger = ledger.lock().unwrap();
            match status {
                Some(s) if s == 201 => {
                    ledger.boms.entry(t.into()).or_default().insert(name);
                }
                Some(s) => panic!("create BOM for {t}: {s}"),
                None => {
                    *ledger.abandoned_boms.entry(t.into()).or_default() += 1;
                    ledger.cancelled += 1;
                }
            }
        }
        Step::CompletePlanned { cancel_after } | Step::CompleteShort { cancel_after } => {
            let order = match step {
                Step::CompletePlanned { .. } => &plant.planned_order,
                _ => &plant.short_order,
            };
            let path = format!("{orders}/{order}/complete");
            let sent = Instant::now();
            let status = send(app.as_tenant(Method::POST, t, &path), cancel_after).await;
            match status {
                Some(s) if s == 409 => ledger.lock().unwrap().failed_in.push(sent.elapsed()),
                Some(s) => panic!("{step:?} for {t}: {s}, not 409"),
                None => ledger.lock().unwrap().cancelled += 1,
            }
        }
        Step::ReadProducts { cancel_after } => {
            let acknowledged = acknowledged_products(ledger, t);
            let request = app.as_tenant(Method::GET, t, "/api/products?limit=200");
            let request = match cancel_after {
                Some(limit) => request.timeout(limit),
                None => request,
            };
            match request.send().await {
                Ok(response) => {
                    assert_eq!(response.status(), 200, "read products for {t}");
                    // The body may still be cut off by the timeout.
                    if let Ok(page) = response.json::<Value>().await {
                        let items = page["items"].as_array().unwrap();
                        assert_own(t, "products", &names(items), &acknowledged);
                    }
                }
                Err(e) if e.is_timeout() => ledger.lock().unwrap().cancelled += 1,
                Err(e) => panic!("read products for {t}: {e}"),
            }
        }
        Step::CheckProducts => {
            let acknowledged = acknowledged_products(ledger, t);
            let names = names(&all_items(app, t, "/api/products").await);
            assert_own(t, "products", &names, &acknowledged);
        }
        Step::CheckMaterials => assert_materials_untouched(app, t).await,
    }
}

/// Waits (at most 30 s) until no connection is in use or awaited on any server,
/// three polls in a row: every request the server still runs has finished.
async fn wait_until_quiet(app: &TestApp) {
    let started = std::time::Instant::now();
    let mut quiet_polls = 0;
    while quiet_polls < 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "requests still running after 30 s: {}",
            app.pool_stats().await
        );
        let stats = app.pool_stats().await;
        let busy = stats["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["in_use"].as_u64().unwrap() > 0 || s["waiting"].as_u64().unwrap() > 0);
        quiet_polls = if busy { 0 } else { quiet_polls + 1 };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cancelled_and_failed_transactions_leave_no_connection_on_the_wrong_schema() {
    let started = Instant::now();
    let database = pg::fresh_database("trx").await;
    let ids: Vec<String> = (0..8).map(|i| format!("plant_{i}")).collect();
    // Eight tenants on one pool of at most three connections.
    let app = spawn_with_toml(
        &schema_tenants(&ids, &database, "manufacturing"),
        &[
            ("AUTO_CREATE_DATABASES", "true"),
            ("MAX_CONNECTIONS_PER_SERVER", "3"),
            ("MAX_CONNECTIONS_PER_TENANT", "2"),
        ],
    )
    .await;
    let plants: Vec<Plant> =
        futures::future::join_all(ids.iter().map(|id| set_up_plant(&app, id))).await;
    let set_up = started.elapsed();

    // Every tenant at once, each running a random sequence of steps: writes (some
    // abandoned), completions that fail inside their transaction (some abandoned),
    // and reads that check what the tenant sees. Abandoned requests go on in the
    // server while their tenant's next steps start.
    let mut rng = Rng::seeded("cancelled_and_failed_transactions");
    let plans: Vec<Vec<Step>> = plants
        .iter()
        .map(|_| {
            (0..STEPS_PER_TENANT)
                .map(|_| Step::random(&mut rng))
                .collect()
        })
        .collect();
    let ledger = Mutex::new(Ledger::default());
    futures::future::join_all(plants.iter().zip(&plans).map(|(plant, steps)| {
        let (app, ledger) = (&app, &ledger);
        async move {
            for step in steps {
                run_step(app, plant, *step, ledger).await;
            }
        }
    }))
    .await;
    let steps_run = STEPS_PER_TENANT * plants.len();
    let load = started.elapsed() - set_up;

    // Afterwards every tenant sees its own rows only: every acknowledged write, at
    // most the abandoned ones besides, nothing of another tenant's, and no stock
    // taken by a completion that failed or was abandoned.
    let ledger = ledger.into_inner().unwrap();
    // An abandoned write goes on in the server (its client left, not the server)
    // and may commit after the load ends: read the final state once nothing is in
    // flight any more.
    wait_until_quiet(&app).await;
    let mut final_products: HashMap<&str, Vec<String>> = HashMap::new();
    for plant in &plants {
        let t = plant.id.as_str();
        let products = product_names(&app, t).await;
        let acknowledged = ledger.products.get(t).cloned().unwrap_or_default();
        assert_own(t, "products", &products, &acknowledged);
        let abandoned = ledger.abandoned_products.get(t).copied().unwrap_or(0);
        assert!(
            products.len() <= acknowledged.len() + abandoned,
            "{t}: {} products for {} acknowledged and {abandoned} abandoned writes",
            products.len(),
            acknowledged.len()
        );
        final_products.insert(t, products);

        let boms = names(&all_items(&app, t, "/api/manufacturing/boms").await);
        let mut acknowledged = ledger.boms.get(t).cloned().unwrap_or_default();
        acknowledged.extend([format!("{t}:bom-good"), format!("{t}:bom-short")]);
        assert_own(t, "BOMs", &boms, &acknowledged);
        let abandoned = ledger.abandoned_boms.get(t).copied().unwrap_or(0);
        assert!(
            boms.len() <= acknowledged.len() + abandoned,
            "{t}: {boms:?}"
        );

        assert_materials_untouched(&app, t).await;
        for (order, status) in [
            (&plant.planned_order, "planned"),
            (&plant.short_order, "in_progress"),
        ] {
            let response = app
                .as_tenant(
                    Method::GET,
                    t,
                    &format!("/api/manufacturing/production-orders/{order}"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["status"], status, "{t}: {body}");
        }
    }
    // And the connections they leave behind serve every tenant its own rows, all
    // tenants at once, round after round.
    for _ in 0..10 {
        let mut order: Vec<&String> = ids.iter().chain(&ids).collect();
        rng.shuffle(&mut order);
        let seen = futures::future::join_all(order.iter().map(|id| {
            let app = &app;
            async move { (*id, product_names(app, id).await) }
        }))
        .await;
        for (id, names) in seen {
            assert_eq!(names, final_products[id.as_str()], "rows seen by {id}");
        }
    }
    let mut failed_in = ledger.failed_in.clone();
    failed_in.sort();
    let acknowledged: usize = ledger.products.values().map(HashSet::len).sum::<usize>()
        + ledger.boms.values().map(HashSet::len).sum::<usize>();
    eprintln!(
        "{steps_run} steps over {} tenants: {acknowledged} writes acknowledged, {} requests \
         abandoned, {} completions failed in their transaction (median {:?}); set-up \
         {set_up:?}, load {load:?}, total {:?}; pools: {}",
        ids.len(),
        ledger.cancelled,
        failed_in.len(),
        failed_in
            .get(failed_in.len() / 2)
            .copied()
            .unwrap_or_default(),
        started.elapsed(),
        app.pool_stats().await
    );
    assert!(ledger.cancelled > 0, "no request was abandoned");
    // Completions refused from inside their transaction (a planned order cannot
    // complete) kept their connections: drained of the rollback, not closed.
    let stats = app.pool_stats().await;
    let over_servers = |field: &str| -> u64 {
        stats["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[field].as_u64().unwrap())
            .sum()
    };
    assert!(
        over_servers("drained") > 0,
        "no connection was drained: {stats}"
    );
    // Schema tenants' checkouts are counted by where they were served.
    assert!(
        over_servers("home_checkouts") > 0,
        "no checkout was served by its home: {stats}"
    );
}

/// Client backends connected to the server now, other than the one asking.
async fn client_backends(monitor: &sea_orm::DatabaseConnection) -> u64 {
    let row = monitor
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*)::bigint AS n FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap() as u64
}

#[tokio::test]
async fn a_thousand_schema_tenants_and_two_hundred_database_tenants_share_a_server_of_a_hundred_connections()
 {
    let _heavy = crate::helpers::heavy_test().await;
    const MAX_CONNECTIONS: u64 = 100;
    const REQUESTS: usize = 6_000;
    const CLIENTS: usize = 32;
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
    // Far past what the load takes (60-100 s here), so that a busy machine does not
    // fail it; it only bounds a run where the service stops answering.
    const LOAD_DEADLINE: Duration = Duration::from_secs(300);
    let started = Instant::now();
    let cluster = pg::PgCluster::start(MAX_CONNECTIONS as u32);
    pg::admin_execute(&cluster.url, "CREATE DATABASE shared").await;
    let shared = pg::url_with_database(&cluster.url, "shared");
    let schema_ids: Vec<String> = (0..1000).map(|i| format!("s{i:04}")).collect();
    let database_ids: Vec<String> = (0..200).map(|i| format!("d{i:03}")).collect();
    let mut toml = schema_tenants(&schema_ids, &shared, "default");
    for id in &database_ids {
        let url = pg::url_with_database(&cluster.url, &format!("tenant_{id}"));
        toml.push_str(&format!("[tenants.{id}]\ndatabase_url = \"{url}\"\n"));
    }
    // Storage is created on each tenant's first request; no connection settings.
    let app = spawn_with_toml(&toml, &[("AUTO_CREATE_DATABASES", "true")]).await;

    // Connections held on the server, sampled all along from a connection of the
    // test's own (opened first: it always has its slot).
    let mut options = ConnectOptions::new(cluster.url.clone());
    options.max_connections(1).sqlx_logging(false);
    let monitor = tenant_router::db::connect(options).await.unwrap();
    let (stop, peak, samples) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (stop, peak, samples) = (stop.clone(), peak.clone(), samples.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(client_backends(&monitor).await, Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            monitor.close().await.unwrap();
        })
    };

    // A uniformly random tenant per request, CLIENTS requests at a time.
    let mut rng = Rng::seeded("thousand_schema_tenants");
    let tenants: Vec<&String> = schema_ids.iter().chain(&database_ids).collect();
    let plan: Vec<&str> = (0..REQUESTS)
        .map(|_| tenants[rng.below(tenants.len())].as_str())
        .collect();
    // Bounded however the service behaves: status 0 is a request not answered in
    // time, or not sent because the load ran past its deadline.
    let load_started = Instant::now();
    let answers: Vec<(&str, u16, Duration, String, usize)> = stream::iter(plan.iter().enumerate())
        .map(|(i, id)| {
            let app = &app;
            async move {
                if load_started.elapsed() > LOAD_DEADLINE {
                    let note = "not sent: the load ran past its deadline".to_string();
                    return (*id, 0, Duration::ZERO, note, i);
                }
                let sent = Instant::now();
                let request = app
                    .as_tenant(Method::GET, id, "/api/products")
                    .timeout(REQUEST_TIMEOUT);
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response.text().await.unwrap_or_else(|e| e.to_string());
                        (*id, status, sent.elapsed(), body, i)
                    }
                    Err(e) => (*id, 0, sent.elapsed(), format!("no answer: {e}"), i),
                }
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let load = load_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, status, _, _, _) in &answers {
        *statuses.entry(*status).or_default() += 1;
    }
    let slowest = answers.iter().map(|a| a.2).max().unwrap_or_default();
    // The slowest requests, and whether each was sent within CLIENTS requests of
    // its tenant's first: then it likely waited for the tenant's storage to be made
    // and migrated ("opening").
    let first_sent: HashMap<&str, usize> = plan
        .iter()
        .enumerate()
        .rev()
        .map(|(i, id)| (*id, i))
        .collect();
    let mut by_time: Vec<_> = answers.iter().collect();
    by_time.sort_by_key(|a| std::cmp::Reverse(a.2));
    let slow: Vec<String> = by_time
        .iter()
        .take(5)
        .map(|a| {
            let opening = a.4 < first_sent[a.0] + CLIENTS;
            format!(
                "{} {:?} {}{}",
                a.0,
                a.2,
                a.1,
                if opening { " (opening)" } else { "" }
            )
        })
        .collect();
    let distinct: HashSet<&str> = plan.iter().copied().collect();
    let stats = app.pool_stats().await;
    let peak = peak.load(Ordering::Relaxed);
    let refusals = cluster.log().matches("too many clients").count();
    eprintln!(
        "{REQUESTS} requests over {} tenants in {load:?} (slowest {slowest:?}), statuses \
         {statuses:?}; {refusals} \"too many clients\" in the server's log; peak {peak} \
         server connections besides the sampler's ({} samples); total {:?}; slowest: {slow:?}; \
         servers: {}",
        distinct.len(),
        samples.load(Ordering::Relaxed),
        started.elapsed(),
        stats["servers"]
    );

    let failed: Vec<_> = answers.iter().filter(|a| a.1 != 200).take(3).collect();
    assert!(
        failed.is_empty(),
        "{} of {REQUESTS} requests failed ({statuses:?}), for example {failed:?}",
        REQUESTS - statuses.get(&200).copied().unwrap_or(0)
    );
    assert_eq!(refusals, 0, "PostgreSQL refused {refusals} connections");
    assert!(
        peak < MAX_CONNECTIONS,
        "{peak} connections besides the sampler's (one more) on a server of {MAX_CONNECTIONS}"
    );
    let servers = stats["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no servers: {stats}"));
    let server = format!("127.0.0.1:{}", cluster.port);
    let ours = servers
        .iter()
        .find(|s| s["server"] == server)
        .unwrap_or_else(|| panic!("no entry for {server}: {stats}"));
    let limit = ours["limit"].as_u64().unwrap();
    assert!(
        limit < MAX_CONNECTIONS,
        "limit {limit} leaves no room for other clients"
    );
    assert!(ours["peak_open"].as_u64().unwrap() <= limit, "{ours}");
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_tenant_whose_server_port_is_closed_gets_503_in_under_100_ms() {
    let port = closed_port();
    let toml = format!(
        "[tenants.unreachable]\n\
         database_url = \"postgres://router:pw@127.0.0.1:{port}/unreachable\"\n"
    );
    let app = spawn_with_toml(&toml, &[]).await;
    // The client's connection to the service is open before the clock starts.
    let health = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(health.status(), 200);

    for attempt in ["first", "second"] {
        let started = Instant::now();
        let response = app
            .as_tenant(Method::GET, "unreachable", "/api/products")
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(
            response.headers().contains_key("retry-after"),
            "{attempt}: no Retry-After"
        );
        assert_error(response, 503, "tenant_unavailable").await;
        eprintln!("{attempt} request: 503 in {took:?}");
        assert!(
            took < Duration::from_millis(100),
            "{attempt} request took {took:?}"
        );
    }
}
