//! PostgreSQL benchmark: routed throughput over 1,000 schema-mode tenants and over
//! 100 database-mode tenants against one fixed pool; cold-tenant latency on SQLite
//! and PostgreSQL; memory of the router with 10,000 registered tenants and 1,000
//! open pools.
//!
//! Run: `./scripts/bench.sh postgres` (starts a throwaway server with room for the
//! pools), or `cargo bench --bench postgres` with BENCH_DATABASE_URL set to a server
//! with max_connections of at least 1,300. Knobs: BENCH_SECONDS, BENCH_ROUNDS,
//! BENCH_CONCURRENCY, BENCH_SCHEMA_TENANTS, BENCH_DATABASE_TENANTS. It prints its
//! figures; it asserts nothing.

mod common;

use std::{path::Path, time::Instant};

use common::{
    env_or, median, quantile, rss_mib, seed, settings, start, start_stoppable, throughput,
};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, Database};
use tenant_router::{
    db,
    tenant::{TenantConfig, TenantRegistry, parse_tenants_toml},
};

/// `server` with its database replaced by `name`, and BENCH_PG_SSLMODE (if set) as
/// its `sslmode`.
fn with_database(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).expect("BENCH_DATABASE_URL");
    url.set_path(&format!("/{name}"));
    if let Ok(mode) = std::env::var("BENCH_PG_SSLMODE") {
        url.query_pairs_mut().append_pair("sslmode", &mode);
    }
    url.to_string()
}

/// Whether BENCH_PHASES (default: all) names `phase` (memory, cold, throughput).
fn phase(name: &str) -> bool {
    std::env::var("BENCH_PHASES").map_or(true, |p| p.split(',').any(|x| x.trim() == name))
}

async fn create_database(server: &str, name: &str) -> String {
    let admin = Database::connect(with_database(server, "postgres"))
        .await
        .expect("connect");
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop");
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create");
    admin.close().await.expect("close");
    with_database(server, name)
}

/// Entries for `n` tenants named `<prefix>_<i>`; `url(i)` gives each its URL lines.
fn toml_for(prefix: &str, n: usize, extra: &str, url: impl Fn(usize) -> String) -> String {
    (0..n)
        .map(|i| format!("[tenants.{prefix}_{i:05}]\n{}{extra}\n", url(i)))
        .collect()
}

/// Creates and migrates every tenant's storage, a few at a time.
async fn provision(tenants: &[TenantConfig]) {
    let pools = settings(&[]).pools();
    futures::stream::iter(tenants)
        .map(|t| {
            let pools = pools.clone();
            async move {
                db::create_tenant_database(t, &pools)
                    .await
                    .expect("provision")
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

fn write_tenants(dir: &Path, name: &str, toml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, toml).expect("write tenants");
    path.display().to_string()
}

/// First-request latency of each tenant of `toml` (storage already provisioned).
async fn cold_latency(label: &str, dir: &Path, toml: &str, ids: &[String]) {
    let file = write_tenants(dir, &format!("cold-{}.toml", ids.len()), toml);
    let running = start_stoppable(settings(&[
        ("TENANTS_FILE", file),
        ("MAX_OPEN_POOLS", "2000".into()),
    ]))
    .await;
    let address = running.address.clone();
    let client = reqwest::Client::new();
    let mut samples = Vec::with_capacity(ids.len());
    for id in ids {
        let started = Instant::now();
        let status = client
            .get(format!("{address}/api/products"))
            .header("X-Tenant-ID", id)
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status, 200, "cold request of {id}");
        samples.push(started.elapsed());
    }
    // Give the server's connections back before the next phase.
    running.stop().await;
    println!(
        "  {label:<34} p50 {:>7.1} ms   p99 {:>7.1} ms   ({} tenants)",
        quantile(&mut samples, 0.5).as_secs_f64() * 1000.0,
        quantile(&mut samples, 0.99).as_secs_f64() * 1000.0,
        ids.len()
    );
}

/// Resident memory added by registering `tenants`, then by opening the pools of
/// those whose id starts with `open_prefix` (their storage is provisioned).
async fn memory(label: &str, toml: &str, open_prefix: &str) {
    let before = rss_mib();
    let tenants = parse_tenants_toml(toml).expect("tenants");
    let ids: Vec<_> = tenants
        .iter()
        .filter(|t| t.id.as_str().starts_with(open_prefix))
        .map(|t| t.id.clone())
        .collect();
    let open = ids.len();
    let registry = TenantRegistry::new(tenants, {
        let mut p = settings(&[]).pools();
        p.max_open_pools = 20_000;
        p.max_connections_per_tenant = 1;
        p
    });
    let registered = rss_mib();
    futures::stream::iter(ids)
        .map(|id| {
            let registry = registry.clone();
            async move {
                let config = registry.get(id.as_str()).expect("registered");
                registry.connect(&config).await.expect("tenant ready");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let opened = rss_mib();
    println!(
        "  {label:<34} registry {:>6.1} MiB   +{open} open pools {:>6.1} MiB   (process {:.1} MiB)",
        registered - before,
        opened - registered,
        opened
    );
    registry.close_all().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = std::env::var("BENCH_DATABASE_URL")
        .expect("BENCH_DATABASE_URL is not set: run ./scripts/bench.sh postgres");
    let schema_tenants = env_or("BENCH_SCHEMA_TENANTS", 1000) as usize;
    let database_tenants = env_or("BENCH_DATABASE_TENANTS", 100) as usize;
    let (concurrency, seconds, rounds) = (
        env_or("BENCH_CONCURRENCY", 32),
        env_or("BENCH_SECONDS", 5),
        env_or("BENCH_ROUNDS", 3),
    );
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

        // Storage for every phase.
        let shared = create_database(&server, &format!("bench_{run}_shared")).await;
        let schema_toml = toml_for("sch", schema_tenants, "max_connections = 1\n", |_| {
            format!("database_url = \"{shared}\"\nisolation = \"schema\"\n")
        });
        let db_toml = toml_for("dbt", database_tenants, "max_connections = 2\n", |i| {
            format!("database_url = \"{}\"\n", with_database(&server, &format!("bench_{run}_db_{i:05}")))
        });
        let sqlite_dir = dir.path().join("sqlite");
        let sqlite_toml = toml_for("lite", 1000, "", |i| {
            format!("database_url = \"sqlite://{}/lite_{i:05}.db\"\n", sqlite_dir.display())
        });
        let started = Instant::now();
        let schema_configs = parse_tenants_toml(&schema_toml).expect("schema tenants");
        let db_configs = parse_tenants_toml(&db_toml).expect("database tenants");
        let sqlite_configs = parse_tenants_toml(&sqlite_toml).expect("sqlite tenants");
        provision(&schema_configs).await;
        provision(&db_configs).await;
        provision(&sqlite_configs).await;
        println!(
            "\n(provisioned {schema_tenants} schema, {database_tenants} database and 1000 SQLite tenants in {:.1} s)",
            started.elapsed().as_secs_f64()
        );

        if phase("memory") {
        println!("\n== Memory of the router: 10,000 registered tenants, 1,000 open pools");
        let mut many = sqlite_toml.clone();
        many.push_str(&toml_for("idle", 9000, "", |i| {
            format!("database_url = \"sqlite://{}/idle_{i:05}.db\"\n", sqlite_dir.display())
        }));
        memory("SQLite (a thread per connection)", &many, "lite_").await;
        let mut many = schema_toml.clone();
        many.push_str(&toml_for("idlepg", 10_000 - schema_tenants.min(10_000), "", |_| {
            format!("database_url = \"{shared}\"\nisolation = \"schema\"\n")
        }));
        memory("PostgreSQL, schema mode", &many, "sch_").await;
        }

        if phase("cold") {
        println!("\n== Cold-tenant latency: the first request to a tenant whose pool is not open");
        let sqlite_ids: Vec<String> = (0..200).map(|i| format!("lite_{i:05}")).collect();
        cold_latency("SQLite", dir.path(), &sqlite_toml, &sqlite_ids).await;
        let schema_ids: Vec<String> = (0..200.min(schema_tenants)).map(|i| format!("sch_{i:05}")).collect();
        cold_latency("PostgreSQL, schema mode", dir.path(), &schema_toml, &schema_ids).await;
        let db_ids: Vec<String> = (0..database_tenants).map(|i| format!("dbt_{i:05}")).collect();
        cold_latency("PostgreSQL, database mode", dir.path(), &db_toml, &db_ids).await;
        }
        if !phase("throughput") {
            return;
        }

        println!(
            "\n== HTTP throughput on PostgreSQL, GET /api/products?limit=10 ({concurrency} connections, \
             {seconds} s x {rounds} rounds each, interleaved)"
        );
        let schema_file = write_tenants(dir.path(), "schema.toml", &schema_toml);
        let schema_addr = start(settings(&[
            ("TENANTS_FILE", schema_file),
            ("MAX_OPEN_POOLS", schema_tenants.to_string()),
        ]))
        .await;
        let db_file = write_tenants(dir.path(), "db.toml", &db_toml);
        let db_addr = start(settings(&[
            ("TENANTS_FILE", db_file),
            ("MAX_OPEN_POOLS", database_tenants.to_string()),
        ]))
        .await;
        let fixed = create_database(&server, &format!("bench_{run}_fixed")).await;
        let fixed_addr = start(settings(&[
            ("MULTI_TENANT_ENABLED", "false".into()),
            ("DATABASE_URL", fixed),
            ("DEFAULT_MAX_CONNECTIONS", concurrency.to_string()),
        ]))
        .await;
        let schema_ids: Vec<String> = (0..schema_tenants).map(|i| format!("sch_{i:05}")).collect();
        let db_ids: Vec<String> = (0..database_tenants).map(|i| format!("dbt_{i:05}")).collect();
        for (address, ids) in [(&schema_addr, &schema_ids), (&db_addr, &db_ids)] {
            futures::stream::iter(ids.iter())
                .map(|id| seed(address, Some(id), 10))
                .buffer_unordered(16)
                .collect::<Vec<()>>()
                .await;
        }
        seed(&fixed_addr, None, 10).await;

        let targets: [(&str, &str, &[String]); 3] = [
            ("schema-mode tenants", &schema_addr, &schema_ids),
            ("database-mode tenants", &db_addr, &db_ids),
            ("fixed pool", &fixed_addr, &[]),
        ];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
        let mut failed = 0;
        for (_, address, ids) in &targets {
            throughput(address, ids, concurrency, 2).await;
        }
        for round in 1..=rounds {
            let mut line = format!("  round {round}:");
            for (i, (name, address, ids)) in targets.iter().enumerate() {
                let (rate, errors) = throughput(address, ids, concurrency, seconds).await;
                failed += errors;
                rates[i].push(rate);
                line.push_str(&format!("  {name} {rate:>7.0}"));
            }
            println!("{line}  req/s");
        }
        let m: Vec<f64> = rates.into_iter().map(median).collect();
        println!(
            "  median req/s: {schema_tenants} schema-mode tenants {:.0}, {database_tenants} database-mode tenants {:.0}, fixed pool {:.0}",
            m[0], m[1], m[2]
        );
        println!("  {schema_tenants} schema-mode tenants / fixed pool: {:.1}%", 100.0 * m[0] / m[2]);
        println!("  {database_tenants} database-mode tenants / fixed pool: {:.1}%", 100.0 * m[1] / m[2]);
        println!("  failed requests: {failed}");
    });
}
