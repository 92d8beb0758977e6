//! Routing benchmark: what tenant routing costs per request, and how much HTTP
//! throughput the routed service keeps against the same handler on one fixed pool.
//!
//! Run: `cargo bench --bench routing` (knobs: BENCH_SECONDS, BENCH_CONCURRENCY,
//! BENCH_TENANTS, BENCH_ROUNDS, BENCH_PAIRS, BENCH_PAIR_SECONDS; BENCH_PROFILE=N
//! loads one target alone for a profiler). It prints its figures; it asserts nothing.

use std::{
    hint::black_box,
    path::Path,
    time::{Duration, Instant},
};

mod common;

/// The binary's allocator (src/main.rs), so that the services measured here
/// allocate as the shipped one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, Request, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use common::{
    env_or, login_token, median, print_pairs, process_cpu, process_threads, seed, seed_as,
    settings, start, throughput_as,
};
use sea_orm::{QueryOrder, QuerySelect};
use tenant_router::{
    auth::{JwtKey, Role, jwt::TokenUser},
    db::{
        self,
        conn::{Checkout, TenantConn},
        pool::{ConnPool, ServerBudget, Target},
    },
    entities::product::{self, Entity as Product},
    http::{
        identify::identify_tenant,
        request_span::Observer,
        routes::{
            pagination::{Page, PageQuery},
            records::live,
        },
        stack::StackOptions,
    },
    metrics::Metrics,
    registry::TenantRegistry,
    settings::IdentifySettings,
    settings::parse_tenants_toml,
};

fn tenants_toml(n: u64, dir: &Path) -> String {
    let pool = std::env::var("BENCH_TENANT_MAX_CONNECTIONS")
        .map(|n| format!("max_connections = {n}\n"))
        .unwrap_or_default();
    (0..n)
        .map(|i| {
            format!(
                "[tenants.tenant_{i:04}]\ndatabase_url = \"sqlite://{}/tenant_{i:04}.db\"\n{pool}",
                dir.display()
            )
        })
        .collect()
}

/// Nanoseconds per call of `f`, over enough calls to take about half a second.
fn time_per_call(mut f: impl FnMut()) -> f64 {
    for _ in 0..10_000 {
        f();
    }
    let mut iterations = 10_000u64;
    loop {
        let started = Instant::now();
        for _ in 0..iterations {
            f();
        }
        let elapsed = started.elapsed();
        if elapsed > Duration::from_millis(500) {
            return elapsed.as_nanos() as f64 / iterations as f64;
        }
        iterations *= 4;
    }
}

async fn routing_cost(tenants: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let configs = parse_tenants_toml(&tenants_toml(tenants, dir.path())).expect("tenants");
    let registry = TenantRegistry::new(configs, settings(&[]).pools());
    let identify = IdentifySettings {
        by_subdomain: true,
        by_header: true,
        by_query: true,
        base_domain: "localhost".into(),
        ignored_subdomains: vec!["www".into()],
    };
    let probe = format!("tenant_{:04}", tenants / 2);
    let by_header = Request::builder()
        .uri("/api/products")
        .header("host", "127.0.0.1:8000")
        .header("x-tenant-id", probe.as_str())
        .body(())
        .expect("request");
    let by_host = Request::builder()
        .uri("/api/products")
        .header(
            "host",
            format!("{}.localhost:8000", probe.replace('_', "-")),
        )
        .body(())
        .expect("request");
    let by_query = Request::builder()
        .uri(format!("/api/products?limit=20&tenant_id={probe}"))
        .header("host", "127.0.0.1:8000")
        .body(())
        .expect("request");

    let route = |req: &Request<()>| {
        let (id, _) = identify_tenant(req.headers(), req.uri(), &identify, |l| {
            registry.by_subdomain(l)
        })
        .expect("identified");
        let config = registry.get(id.as_str()).expect("registered");
        black_box(config.is_active);
    };
    println!("\n== Identification and registry lookup ({tenants} tenants), per request");
    for (name, req) in [
        ("X-Tenant-ID header", &by_header),
        ("subdomain", &by_host),
        ("?tenant_id", &by_query),
    ] {
        let ns = time_per_call(|| route(black_box(req)));
        println!("  {name:<22} {:>8.3} µs", ns / 1000.0);
    }

    // The warm pool lookup that follows identification on every request.
    let config = registry.get(&probe).expect("registered");
    registry.connect(&config).await.expect("tenant ready");
    let rounds = 200_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(registry.connect(&config).await.expect("warm checkout"));
    }
    let ns = started.elapsed().as_nanos() as f64 / rounds as f64;
    println!("  {:<22} {:>8.3} µs", "warm checkout", ns / 1000.0);

    // What AUTH_MODE=jwt adds: the token's signature and claims.
    let key = JwtKey::new(&[42u8; 32]).expect("key");
    let token = key.issue(
        &config.id,
        &config.generation,
        TokenUser {
            id: uuid::Uuid::new_v4(),
            name: "bench",
            role: Role::Staff,
        },
        chrono::Utc::now().timestamp(),
        900,
    );
    let now = chrono::Utc::now().timestamp();
    let ns = time_per_call(|| {
        black_box(key.verify(black_box(&token), now).expect("valid"));
    });
    println!("  {:<22} {:>8.3} µs", "access token check", ns / 1000.0);
}

async fn routed_app(dir: &Path, tenants: u64, extra: &[(&str, String)]) -> String {
    let tenants_file = dir.join("tenants.toml");
    std::fs::write(&tenants_file, tenants_toml(tenants, &dir.join("data"))).expect("write");
    let mut env = vec![
        ("TENANTS_FILE", tenants_file.display().to_string()),
        ("MAX_OPEN_POOLS", tenants.to_string()),
    ];
    env.extend_from_slice(extra);
    start(settings(&env)).await
}

type DirectPools = Arc<HashMap<String, Arc<ConnPool>>>;

/// A product as GET /api/products shows it.
#[derive(serde::Serialize)]
struct ProductView {
    id: uuid::Uuid,
    name: String,
    price: f64,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// GET /api/products without routing: the pool is picked from a map by the
/// `X-Tenant-ID` header as is, then the handler's query and page are the same.
async fn direct_list(
    State(pools): State<DirectPools>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(pool) = headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| pools.get(id))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(page) = query.checked() else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let Ok(conn) = pool.checkout(None, deadline).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let db = TenantConn::new(Checkout::new(conn, pool.clone(), None));
    let rows = live::<Product>()
        .order_by_desc(product::Column::CreatedAt)
        .order_by_desc(product::Column::Id)
        .limit(page.fetch())
        .offset(page.offset)
        .all(&db)
        .await;
    match rows {
        Ok(rows) => Json(Page::from_rows(rows, page, |m: product::Model| {
            ProductView {
                id: m.id,
                name: m.name,
                price: m.price_cents as f64 / 100.0,
                created_at: m.created_at,
                updated_at: m.updated_at,
            }
        }))
        .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The routed service's `tenants` files reached through pools picked directly: no
/// identification, registry, authentication, feature gate, tenant permit or
/// per-tenant counting, but the same HTTP stack around the same handler (request
/// id, span, metrics, compression, deadlines), and the same pools: one per file,
/// under one budget of real connections.
async fn direct_app(dir: &Path, tenants: u64) -> String {
    let pools = settings(&[]).pools();
    let mut map = HashMap::new();
    let mut budget = None;
    for i in 0..tenants {
        let url = format!("sqlite://{}/tenant_{i:04}.db", dir.display());
        let target = Target::parse(&db::prepare_url(&url).expect("url")).expect("target");
        let server = budget
            .get_or_insert_with(|| {
                let limit = Some(pools.sqlite_max_connections);
                ServerBudget::new(&target, limit, None, pools.connect_timeout)
            })
            .clone();
        let pool = ConnPool::new(
            server,
            target,
            pools.connection_idle_timeout,
            pools.connect_timeout,
        );
        map.insert(format!("tenant_{i:04}"), pool);
    }
    let routes = axum::Router::new()
        .route("/api/products", get(direct_list))
        .with_state(Arc::new(map));
    let stack = StackOptions {
        observer: Some(Observer {
            metrics: Arc::new(Metrics::new(tenants as usize, true)),
            single_tenant: None,
        }),
        ..StackOptions::default()
    };
    let app = tenant_router::http::stack::wrap(routes, &stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Three services with the same handler: routed over `tenants` tenants, routed
/// with one tenant (the routing layer alone), and single-tenant mode (one fixed
/// pool). Rounds are interleaved so that drift on the machine hits all alike.
async fn http_comparison(tenants: u64, concurrency: u64, seconds: u64, rounds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("many")).expect("dir");
    std::fs::create_dir_all(dir.path().join("one")).expect("dir");
    std::fs::create_dir_all(dir.path().join("one_jwt")).expect("dir");
    let many_addr = routed_app(&dir.path().join("many"), tenants, &[]).await;
    let one_addr = routed_app(&dir.path().join("one"), 1, &[]).await;
    // The one-tenant service again, with authentication on: what a token costs.
    let jwt_addr = routed_app(
        &dir.path().join("one_jwt"),
        1,
        &[
            ("AUTH_MODE", "jwt".into()),
            ("JWT_SECRET", "bench-jwt-secret-0123456789abcdef0123".into()),
        ],
    )
    .await;
    // What metrics cost: two more one-tenant services, alike but for metrics, run
    // back to back in each round (in turn first), each round's ratio taken.
    std::fs::create_dir_all(dir.path().join("one_metrics")).expect("dir");
    let metrics_addr = routed_app(&dir.path().join("one_metrics"), 1, &[]).await;
    std::fs::create_dir_all(dir.path().join("one_nometrics")).expect("dir");
    let nometrics_addr = routed_app(
        &dir.path().join("one_nometrics"),
        1,
        &[("METRICS_ENABLED", "false".into())],
    )
    .await;
    let single_addr = start(settings(&[
        ("MULTI_TENANT_ENABLED", "false".into()),
        (
            "DATABASE_URL",
            format!("sqlite://{}/single.db", dir.path().display()),
        ),
    ]))
    .await;

    let ids: Vec<String> = (0..tenants).map(|i| format!("tenant_{i:04}")).collect();
    for id in &ids {
        seed(&many_addr, Some(id), 10).await;
    }
    let one = vec!["tenant_0000".to_string()];
    seed(&one_addr, Some(&one[0]), 10).await;
    seed(&single_addr, None, 10).await;
    seed(&metrics_addr, Some(&one[0]), 10).await;
    seed(&nometrics_addr, Some(&one[0]), 10).await;
    let token = login_token(&jwt_addr, &one[0]).await;
    seed_as(&jwt_addr, Some(&one[0]), Some(&token), 10).await;
    // The many-tenant service's files, now created, migrated and seeded.
    let direct_addr = direct_app(&dir.path().join("many").join("data"), tenants).await;

    println!(
        "\n== HTTP throughput, GET /api/products?limit=10 ({concurrency} connections, \
         {seconds} s x {rounds} rounds each, interleaved)"
    );
    let targets: [(&str, &str, &[String], Option<&str>); 7] = [
        ("routed, many tenants", &many_addr, &ids, None),
        ("routed, one tenant", &one_addr, &one, None),
        ("single pool", &single_addr, &[], None),
        ("one tenant, jwt", &jwt_addr, &one, Some(&token)),
        ("direct pools, many", &direct_addr, &ids, None),
        ("one tenant, metrics", &metrics_addr, &one, None),
        ("one tenant, no metrics", &nometrics_addr, &one, None),
    ];
    // BENCH_PROFILE=N: load only target N (0 to 6) for a profiler, then stop.
    if let Some(n) = std::env::var("BENCH_PROFILE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let (name, address, ids, token) = targets[n.min(6)];
        let (rate, _) = throughput_as(address, ids, token, concurrency, seconds).await;
        println!("  profile run, {name}: {rate:.0} req/s");
        return;
    }
    // A run of target `k`: its rate, failures, and the process's CPU time per
    // request in µs (every service and the load generator share this process, so
    // the difference between two targets is what their services do differently;
    // on two busy cores it varies far less than a rate does).
    let targets = &targets;
    let measured = |k: usize, secs: u64| async move {
        let (_, address, ids, token) = targets[k];
        let before = process_cpu();
        let (rate, errors) = throughput_as(address, ids, token, concurrency, secs).await;
        let cpu = process_cpu().saturating_sub(before).as_secs_f64();
        let per_request = if rate > 0.0 {
            cpu * 1e6 / (rate * secs as f64)
        } else {
            0.0
        };
        (rate, errors, per_request)
    };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut failed = 0;
    for (_, address, ids, token) in targets {
        throughput_as(address, ids, *token, concurrency, 1).await;
    }
    for round in 1..=rounds {
        let mut line = format!("  round {round}:");
        // The metrics pair (the last two) in turn first.
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 0 {
            order.swap(5, 6);
        }
        for i in order {
            let name = targets[i].0;
            let (rate, errors, cpu) = measured(i, seconds).await;
            failed += errors;
            rates[i].push(rate);
            cpus[i].push(cpu);
            line.push_str(&format!("  {name} {rate:>7.0}"));
        }
        println!("{line}  req/s");
    }
    let metrics_ratios: Vec<f64> = rates[5]
        .iter()
        .zip(&rates[6])
        .map(|(with, without)| with / without)
        .collect();
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    let single = medians[2];
    println!(
        "  median req/s: {tenants} tenants {:.0}, one tenant {:.0}, single pool {single:.0}",
        medians[0], medians[1]
    );
    let cpu: Vec<String> = targets
        .iter()
        .zip(cpus)
        .map(|((name, ..), c)| format!("{name} {:.0}", median(c)))
        .collect();
    println!(
        "  median CPU per request, µs (the whole process): {}",
        cpu.join(", ")
    );
    println!(
        "  routed over {tenants} tenants / single pool: {:.1}% (goal: at least 95%)",
        100.0 * medians[0] / single
    );
    println!(
        "  routed over {tenants} tenants / the same {tenants} files through pools picked directly: {:.1}% (what routing costs)",
        100.0 * medians[0] / medians[4]
    );
    println!(
        "  routed over {tenants} tenants / routed with one tenant: {:.1}% (what serving {tenants} files costs)",
        100.0 * medians[0] / medians[1]
    );
    println!(
        "  routed with one tenant / single pool: {:.1}% (the routing layer alone)",
        100.0 * medians[1] / single
    );
    println!(
        "  one tenant with AUTH_MODE=jwt / without: {:.1}% (what checking a token costs)",
        100.0 * medians[3] / medians[1]
    );
    println!(
        "  one tenant with metrics / without, back to back: {:.1}% (median of the rounds' ratios {}; what metrics cost; goal: at least 97%)",
        100.0 * median(metrics_ratios.clone()),
        metrics_ratios
            .iter()
            .map(|r| format!("{:.1}", 100.0 * r))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // The routing ratios again, their two loads alternating in short runs (as the
    // PostgreSQL benchmark does): rounds a minute apart meet this shared machine in
    // different states, which the medians above carry into their ratios.
    let (pairs, pair_seconds) = (env_or("BENCH_PAIRS", 11), env_or("BENCH_PAIR_SECONDS", 3));
    if pairs > 0 {
        println!(
            "\n== In pairs: each ratio's two loads alternating, {pairs} pairs of {pair_seconds} s \
             runs; the ratio of each pair"
        );
    }
    let ratios: [(String, usize, usize, Option<f64>); 3] = [
        (
            format!("routed over {tenants} tenants / single pool"),
            0,
            2,
            Some(95.0),
        ),
        (format!("routed over {tenants} / direct pools"), 0, 4, None),
        (
            format!("routed over {tenants} / routed with one"),
            0,
            1,
            None,
        ),
    ];
    for (name, over, under, goal) in ratios.into_iter().filter(|_| pairs > 0) {
        let run = |k: usize| measured(k, pair_seconds);
        let (mut each, mut each_cpu) = (Vec::new(), Vec::new());
        for i in 0..pairs {
            // Which goes first alternates too, so a drift favours neither.
            let (x, y) = if i % 2 == 0 {
                let x = run(over).await;
                (x, run(under).await)
            } else {
                let y = run(under).await;
                (run(over).await, y)
            };
            failed += x.1 + y.1;
            if x.0 > 0.0 && y.0 > 0.0 {
                each.push(100.0 * x.0 / y.0);
                each_cpu.push(100.0 * x.2 / y.2);
            }
        }
        print_pairs(&name, each, goal);
        // The same pairs' CPU per request: what the first costs against the second.
        print_pairs("  CPU per request, the same pairs", each_cpu, None);
    }
    println!("  failed requests: {failed}");
    println!("  threads in this process: {}", process_threads());
}

fn main() {
    let _scratch = common::scratch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tenants = env_or("BENCH_TENANTS", 100);
    runtime.block_on(async {
        routing_cost(tenants).await;
        http_comparison(
            tenants,
            env_or("BENCH_CONCURRENCY", 32),
            env_or("BENCH_SECONDS", 5),
            env_or("BENCH_ROUNDS", 3),
        )
        .await;
    });
}
