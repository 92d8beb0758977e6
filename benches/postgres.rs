//! PostgreSQL benchmark: routed throughput over 1,000 schema-mode tenants and over
//! 100 database-mode tenants against one fixed pool; cold-tenant latency on SQLite
//! and PostgreSQL; memory of the router with 10,000 registered tenants and 1,000
//! open pools.
//!
//! Run: `./scripts/bench.sh postgres` (starts a throwaway server with room for the
//! pools), or `cargo bench --bench postgres` with BENCH_DATABASE_URL set to a server
//! with max_connections of at least 1,300. Knobs: BENCH_SECONDS, BENCH_ROUNDS,
//! BENCH_WARMUP_SECS, BENCH_CONCURRENCY, BENCH_SCHEMA_TENANTS,
//! BENCH_DATABASE_TENANTS. It prints its
//! figures; it asserts nothing.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{env_or, median, print_pairs, quantile, seed, settings, start_stoppable};
use futures::StreamExt;
use sea_orm::ConnectionTrait;
use tenant_router::{db, settings::parse_tenants_toml, tenant::TenantConfig};

/// `server` with its database replaced by `name`, and BENCH_PG_SSLMODE (if set) as
/// its `sslmode`.
fn with_database(server: &str, name: &str) -> String {
    try_with_database(server, name).expect("BENCH_DATABASE_URL")
}

/// [`with_database`], for where a panic must not happen.
fn try_with_database(server: &str, name: &str) -> Result<String, url::ParseError> {
    let mut url = url::Url::parse(server)?;
    url.set_path(&format!("/{name}"));
    if let Ok(mode) = std::env::var("BENCH_PG_SSLMODE") {
        url.query_pairs_mut().append_pair("sslmode", &mode);
    }
    Ok(url.to_string())
}

/// Whether BENCH_PHASES (default: all) names `phase` (memory, cold, throughput).
fn phase(name: &str) -> bool {
    std::env::var("BENCH_PHASES").map_or(true, |p| p.split(',').any(|x| x.trim() == name))
}

async fn create_database(server: &str, name: &str) -> String {
    let admin = tenant_router::db::connect(with_database(server, "postgres"))
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

/// This run's databases (named `bench_<run>_…`), dropped from the server when the
/// benchmark ends, after a panic too: a server of one's own in BENCH_DATABASE_URL
/// would otherwise keep about a gigabyte of them per run. BENCH_KEEP_DATABASES=1
/// keeps them, for a rig against the same tenants.
struct RunDatabases {
    server: String,
    prefix: String,
}

impl RunDatabases {
    async fn drop_all(&self) -> Result<usize, sea_orm::DbErr> {
        // Not `with_database`, which panics on a URL that does not parse: a panic in
        // a drop that runs while a panic unwinds aborts the process.
        let url = try_with_database(&self.server, "postgres")
            .map_err(|_| sea_orm::DbErr::Custom("BENCH_DATABASE_URL does not parse".into()))?;
        let admin = tenant_router::db::connect(url).await?;
        let names: Vec<String> = admin
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                [self.prefix.clone().into()],
            ))
            .await?
            .iter()
            .map(|row| row.try_get_by_index(0))
            .collect::<Result<_, _>>()?;
        for name in &names {
            admin
                .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .await?;
        }
        admin.close().await?;
        Ok(names.len())
    }
}

impl Drop for RunDatabases {
    fn drop(&mut self) {
        if std::env::var_os("BENCH_KEEP_DATABASES").is_some() {
            println!("\n(this run's databases are kept: {}*)", self.prefix);
            return;
        }
        let dropped = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))
            .and_then(|runtime| runtime.block_on(self.drop_all()));
        match dropped {
            Ok(n) => println!("\n(dropped this run's {n} databases, {}*)", self.prefix),
            Err(e) => eprintln!(
                "could not drop this run's databases ({}*): {}",
                self.prefix,
                tenant_router::db::redact_error(&e)
            ),
        }
    }
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

/// A router started as its own process (the release binary), as it runs in
/// production: the load generator and pgbench are processes too, so that all three
/// compete for the cores alike.
struct Router {
    child: Child,
    address: String,
}

impl Router {
    /// Starts the binary with `env` on a free port and waits until it answers.
    fn start(dir: &Path, name: &str, env: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let binary = std::env::var("BENCH_ROUTER_BIN")
            .unwrap_or_else(|_| "target/release/tenant-router".into());
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("SETTINGS_FILE", "")
            .env("AUTH_MODE", "none")
            .env("ADMIN_TOKEN", common::BENCH_ADMIN_TOKEN)
            .env(
                "SECRET_KEY",
                tenant_router::secret::SecretBox::generate_hex(),
            )
            .env(
                "CONTROL_DATABASE_URL",
                format!("sqlite://{}/{name}-control.db", dir.display()),
            )
            .env(
                "LOG_LEVEL",
                std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("starting {binary} (build it with `cargo build --release`): {e}")
        });
        let router = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up {
                return router;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start: see its log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process's resident memory now, and its peak, in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A load to put on the database: pgbench on a URL (see [`pgbench`]), or wrk on a
/// service.
enum LoadKind {
    /// One pgbench process per group of scripts.
    Pgbench {
        url: String,
        groups: Vec<Vec<String>>,
    },
    Wrk {
        address: String,
        prefix: String,
        count: usize,
    },
}

/// What one load run measured.
#[derive(Clone, Default)]
struct Load {
    rate: f64,
    /// pgbench prints a mean latency, wrk percentiles.
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// What wrk said of the failed requests (its socket-error and non-2xx lines).
    failures: Option<String>,
    /// CPU time of every process on the machine per request (µs): what a request
    /// cost the client, the service and PostgreSQL together.
    machine_us: f64,
}

/// Adds one of wrk's lines about failed requests to what `load` says of them.
fn add_failure(load: &mut Load, line: &str) {
    let line = line.trim();
    load.failures = Some(match load.failures.take() {
        Some(before) => format!("{before}; {line}"),
        None => line.to_string(),
    });
}

/// `text`'s duration as wrk prints it (`812.00us`, `1.20ms`, `1.05s`), in ms.
fn wrk_ms(text: &str) -> f64 {
    let number = |suffix: &str| text.trim_end_matches(suffix).parse::<f64>().unwrap_or(0.0);
    if text.ends_with("us") {
        number("us") / 1000.0
    } else if text.ends_with("ms") {
        number("ms")
    } else if text.ends_with('s') {
        number("s") * 1000.0
    } else {
        0.0
    }
}

/// `wrk` for `seconds` at `concurrency` connections on GET /api/products, each
/// request for a tenant drawn uniformly from `<prefix>_00000`.. (`count` of them);
/// `count` 0 sends no tenant (the single-tenant service).
fn wrk(
    dir: &Path,
    address: &str,
    prefix: &str,
    count: usize,
    concurrency: u64,
    seconds: u64,
) -> Load {
    let script = dir.join(format!("wrk-{prefix}-{count}.lua"));
    let header = if count == 0 {
        "{}".to_string()
    } else {
        format!(
            r#"{{["X-Tenant-ID"] = string.format("{prefix}_%05d", math.random(0, {}))}}"#,
            count - 1
        )
    };
    std::fs::write(
        &script,
        format!(
            "local n = 0\n\
             setup = function(thread) n = n + 1; thread:set(\"seed\", n) end\n\
             init = function() math.randomseed(os.time() * 1000 + (seed or 0)) end\n\
             request = function() return wrk.format(\"GET\", \"/api/products?limit=20\", {header}) end\n"
        ),
    )
    .expect("wrk script");
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{concurrency}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(address)
        .output()
        .expect("running wrk (apt-get install wrk, or ./scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut load = Load::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => load.rate = rate.parse().unwrap_or(0.0),
            ["50%", value] => load.p50_ms = wrk_ms(value),
            ["99%", value] => load.p99_ms = wrk_ms(value),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                load.errors += n.parse().unwrap_or(0);
                add_failure(&mut load, line);
            }
            ["Socket", "errors:", rest @ ..] => {
                let n = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
                if n > 0 {
                    load.errors += n;
                    add_failure(&mut load, line);
                }
            }
            _ => {}
        }
    }
    load
}

/// The SELECT that GET /api/products runs (20 rows a page, one more to tell whether
/// a next page exists), as sea-orm writes it.
const PRODUCTS_SELECT: &str = r#"SELECT "products"."id", "products"."name", "products"."price_cents", "products"."created_at", "products"."updated_at", "products"."deleted_at" FROM "products" WHERE "products"."deleted_at" IS NULL ORDER BY "products"."created_at" DESC, "products"."id" DESC LIMIT 21 OFFSET 0;"#;

/// [`PRODUCTS_SELECT`] on the tables of `schema`, as a schema tenant's statement
/// reaches PostgreSQL.
fn products_select_in(schema: &str) -> String {
    PRODUCTS_SELECT.replace(
        r#"FROM "products""#,
        &format!(r#"FROM "{schema}"."products""#),
    )
}

/// pgbench with prepared statements on `url`, as fast as PostgreSQL answers on this
/// machine: one process per group of scripts, all at once, `concurrency` clients
/// split between them, each transaction one script of its process's group drawn
/// at random. With [`PRODUCTS_SELECT`] alone, the ceiling for the service.
fn pgbench(dir: &Path, url: &str, groups: &[Vec<String>], concurrency: u64, seconds: u64) -> Load {
    let binary = std::env::var("BENCH_PGBENCH").unwrap_or_else(|_| "pgbench".into());
    let processes = groups.len() as u64;
    let children: Vec<_> = groups
        .iter()
        .enumerate()
        .map(|(g, scripts)| {
            let clients = concurrency / processes + u64::from((g as u64) < concurrency % processes);
            let mut command = Command::new(&binary);
            command.args([
                "-n",
                "-M",
                "prepared",
                &format!("-j{}", clients.min(2)),
                &format!("-c{clients}"),
                &format!("-T{seconds}"),
            ]);
            for (i, sql) in scripts.iter().enumerate() {
                let script = dir.join(format!("pgbench-{g}-{i}.sql"));
                std::fs::write(&script, sql).expect("pgbench script");
                command.arg("-f").arg(script);
            }
            command
                .arg(url)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("running {binary}: {e}"))
        })
        .collect();
    let mut load = Load::default();
    for child in children {
        let output = child.wait_with_output().expect("pgbench");
        let text = String::from_utf8_lossy(&output.stdout);
        let field = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
        };
        let rate: f64 = field("tps = ").and_then(|t| t.parse().ok()).unwrap_or(0.0);
        assert!(
            rate > 0.0,
            "pgbench printed no rate: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        load.rate += rate;
        load.mean_ms += field("latency average = ")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.0)
            / processes as f64;
        load.errors += field("number of failed transactions: ")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
    }
    load
}

/// Sends one request to each tenant, `16` at a time, so that each has a pool.
async fn touch(address: &str, ids: &[String]) {
    let client = reqwest::Client::new();
    futures::stream::iter(ids)
        .map(|id| {
            let client = client.clone();
            async move {
                let status = client
                    .get(format!("{address}/api/products"))
                    .header("X-Tenant-ID", id)
                    .send()
                    .await
                    .expect("request")
                    .status();
                assert_eq!(status, 200, "first request of {id}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// The checkouts of schema tenants the service at `address` has counted so far:
/// served by the tenant's home connection, and by another (none for a service
/// without schema tenants).
async fn placements(address: &str) -> (u64, u64) {
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("{address}/api/admin/pools"))
        .bearer_auth(common::BENCH_ADMIN_TOKEN)
        .send()
        .await
        .expect("pool stats")
        .json()
        .await
        .unwrap_or_default();
    let sum = |field: &str| {
        stats["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s[field].as_u64())
            .sum()
    };
    (sum("home_checkouts"), sum("away_checkouts"))
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}_{i:05}")).collect()
}

fn main() {
    let _scratch = common::scratch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = std::env::var("BENCH_DATABASE_URL")
        .expect("BENCH_DATABASE_URL is not set: run ./scripts/bench.sh postgres");
    let schema_tenants = env_or("BENCH_SCHEMA_TENANTS", 1000) as usize;
    let database_tenants = env_or("BENCH_DATABASE_TENANTS", 100) as usize;
    let registered = env_or("BENCH_REGISTERED_TENANTS", 10_000) as usize;
    let (concurrency, seconds, rounds) = (
        env_or("BENCH_CONCURRENCY", 32),
        env_or("BENCH_SECONDS", 5),
        env_or("BENCH_ROUNDS", 3),
    );
    // Each measured run follows this much of the same load, unmeasured: it finds
    // the connections a service under that load keeps (open, each tenant's
    // statements prepared), where the loads between rounds would otherwise have
    // taken them for their own pools or let them expire.
    let warmup = env_or("BENCH_WARMUP_SECS", 10);
    // The routed service, the fixed pool (32) and pgbench (32) must fit the
    // server's 200 connections (3 reserved for superusers) together.
    let router_connections = env_or("BENCH_ROUTER_CONNECTIONS", 125);
    let dir = tempfile::tempdir().expect("temp dir");
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    // Dropped last: after the services that use them have stopped.
    let _databases = RunDatabases {
        server: server.clone(),
        prefix: format!("bench_{run}_"),
    };
    let sqlite_dir = dir.path().join("sqlite");

    // Storage for every phase.
    let (shared, fixed, schema_toml, db_toml, sqlite_toml) = runtime.block_on(async {
        let shared = create_database(&server, &format!("bench_{run}_shared")).await;
        let fixed = create_database(&server, &format!("bench_{run}_fixed")).await;
        let schema_toml = toml_for("sch", schema_tenants, "", |_| {
            format!("database_url = \"{shared}\"\nisolation = \"schema\"\n")
        });
        let db_toml = toml_for("dbt", database_tenants, "", |i| {
            format!(
                "database_url = \"{}\"\n",
                with_database(&server, &format!("bench_{run}_db_{i:05}"))
            )
        });
        let sqlite_toml = toml_for("lite", 1000, "", |i| {
            format!("database_url = \"sqlite://{}/lite_{i:05}.db\"\n", sqlite_dir.display())
        });
        let started = Instant::now();
        provision(&parse_tenants_toml(&schema_toml).expect("schema tenants")).await;
        provision(&parse_tenants_toml(&db_toml).expect("database tenants")).await;
        provision(&parse_tenants_toml(&sqlite_toml).expect("sqlite tenants")).await;
        println!(
            "\n(provisioned {schema_tenants} schema, {database_tenants} database and 1000 SQLite tenants in {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        (shared, fixed, schema_toml, db_toml, sqlite_toml)
    });

    if phase("cold") {
        runtime.block_on(async {
            println!(
                "\n== Cold-tenant latency: the first request to a tenant whose pool is not open"
            );
            cold_latency("SQLite", dir.path(), &sqlite_toml, &ids("lite", 200)).await;
            cold_latency(
                "PostgreSQL, schema mode",
                dir.path(),
                &schema_toml,
                &ids("sch", 200.min(schema_tenants)),
            )
            .await;
            cold_latency(
                "PostgreSQL, database mode",
                dir.path(),
                &db_toml,
                &ids("dbt", database_tenants),
            )
            .await;
        });
    }
    if !phase("throughput") && !phase("memory") {
        return;
    }

    // One router serves every routed load: the schema, database and SQLite tenants,
    // and enough registered (never used) tenants to make `registered` in all.
    let mut all = format!("{schema_toml}{db_toml}{sqlite_toml}");
    let unused = registered.saturating_sub(schema_tenants + database_tenants + 1000);
    all.push_str(&toml_for("idle", unused, "", |_| {
        format!("database_url = \"{shared}\"\nisolation = \"schema\"\n")
    }));
    let tenants_file = write_tenants(dir.path(), "all.toml", &all);
    // It, the fixed pool and pgbench must fit the server together.
    let routed = Router::start(
        dir.path(),
        "routed",
        &[
            ("TENANTS_FILE", tenants_file),
            ("MAX_CONNECTIONS_PER_SERVER", router_connections.to_string()),
        ],
    );
    let single = Router::start(
        dir.path(),
        "fixed",
        &[
            ("MULTI_TENANT_ENABLED", "false".into()),
            ("DATABASE_URL", fixed.clone()),
            ("MAX_CONNECTIONS_PER_TENANT", concurrency.to_string()),
            ("MAX_CONNECTIONS_PER_SERVER", concurrency.to_string()),
        ],
    );
    let (schema_ids, db_ids, lite_ids) = (
        ids("sch", schema_tenants),
        ids("dbt", database_tenants),
        ids("lite", 1000),
    );

    // Resident memory once start-up's garbage has been given back to the system:
    // the allocator returns a thread's freed pages when that thread runs again, so
    // some requests first.
    let settled = || {
        runtime.block_on(async {
            let client = reqwest::Client::new();
            for _ in 0..200 {
                let _ = client
                    .get(format!("{}/health", routed.address))
                    .send()
                    .await;
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        routed.rss_mib().0
    };
    let registered_rss = settled();
    runtime.block_on(touch(&routed.address, &schema_ids));
    let schema_rss = settled();
    runtime.block_on(touch(&routed.address, &lite_ids));
    let lite_rss = settled();
    if phase("memory") {
        println!("\n== Resident memory of the router process, {registered} tenants registered");
        println!("  none active yet                                    {registered_rss:>7.1} MiB");
        println!(
            "  {schema_tenants} PostgreSQL schema-mode tenants active         {schema_rss:>7.1} MiB"
        );
        println!("  and 1000 SQLite tenants active                     {lite_rss:>7.1} MiB");
    }
    if !phase("throughput") {
        return;
    }

    runtime.block_on(async {
        let seed_all = |ids: Vec<String>| {
            let address = routed.address.clone();
            async move {
                futures::stream::iter(ids)
                    .map(|id| {
                        let address = address.clone();
                        async move { seed(&address, Some(&id), 20).await }
                    })
                    .buffer_unordered(16)
                    .collect::<Vec<()>>()
                    .await
            }
        };
        seed_all(schema_ids.clone()).await;
        seed_all(db_ids.clone()).await;
        seed(&single.address, None, 20).await;
    });

    println!(
        "\n== Throughput, GET /api/products (20 rows), uniformly random tenant per request \
         ({concurrency} connections, {seconds} s x {rounds} rounds, interleaved, each \
         after {warmup} s of the same load; router budget {router_connections} \
         connections on the server)"
    );
    let wrk_on = |address: &str, prefix: &str, count: usize| LoadKind::Wrk {
        address: address.to_string(),
        prefix: prefix.to_string(),
        count,
    };
    let split_schemas: Vec<Vec<String>> = (0..schema_tenants)
        .map(|i| products_select_in(&format!("tenant_sch_{i:05}")))
        .collect::<Vec<_>>()
        .chunks(125)
        .map(<[String]>::to_vec)
        .collect();
    let loads: Vec<(String, LoadKind)> = vec![
        (
            "pgbench, same SELECT".into(),
            LoadKind::Pgbench {
                url: fixed.clone(),
                groups: vec![vec![PRODUCTS_SELECT.into()]],
            },
        ),
        // What PostgreSQL itself loses when each statement reads another schema's
        // tables, in the router's way (qualified, prepared once per connection and
        // schema): pgbench takes at most 128 scripts, so 100 schemas.
        (
            format!("pgbench, {} schemas", 100.min(schema_tenants)),
            LoadKind::Pgbench {
                url: shared.clone(),
                groups: vec![
                    (0..100.min(schema_tenants))
                        .map(|i| products_select_in(&format!("tenant_sch_{i:05}")))
                        .collect(),
                ],
            },
        ),
        // The same over every schema tenant: one pgbench process per 125 schemas,
        // so each PostgreSQL backend works on 125 schemas' tables at most (as if
        // the router's affinity were perfect), beside the same processes on one
        // schema. The ceiling of the 1,000-tenant goal: what the router cannot
        // win back.
        (
            format!("pgbench, {schema_tenants} schemas, split"),
            LoadKind::Pgbench {
                url: shared.clone(),
                groups: split_schemas.clone(),
            },
        ),
        (
            "pgbench, 1 schema, alike".into(),
            LoadKind::Pgbench {
                url: shared.clone(),
                groups: vec![vec![products_select_in("tenant_sch_00000")]; split_schemas.len()],
            },
        ),
        (
            "fixed pool (single-tenant)".into(),
            wrk_on(&single.address, "", 0),
        ),
        ("1 schema tenant".into(), wrk_on(&routed.address, "sch", 1)),
        (
            format!("{} schema tenants", 100.min(schema_tenants)),
            wrk_on(&routed.address, "sch", 100.min(schema_tenants)),
        ),
        (
            format!("{schema_tenants} schema tenants"),
            wrk_on(&routed.address, "sch", schema_tenants),
        ),
        (
            format!("{database_tenants} database tenants"),
            wrk_on(&routed.address, "dbt", database_tenants),
        ),
    ];
    let load = |kind: &LoadKind, seconds: u64| {
        let busy = common::machine_busy();
        let mut load = match kind {
            LoadKind::Pgbench { url, groups } => {
                pgbench(dir.path(), url, groups, concurrency, seconds)
            }
            LoadKind::Wrk {
                address,
                prefix,
                count,
            } => wrk(dir.path(), address, prefix, *count, concurrency, seconds),
        };
        let requests = load.rate * seconds as f64;
        if requests > 0.0 {
            let used = common::machine_busy().saturating_sub(busy);
            load.machine_us = used.as_secs_f64() * 1e6 / requests;
        }
        load
    };
    let mut results: Vec<Vec<Load>> = vec![Vec::new(); loads.len()];
    // Failed requests of the warm-ups count with the rest.
    let mut warmup_errors = 0;
    for round in 1..=rounds {
        for (i, (name, kind)) in loads.iter().enumerate() {
            if warmup > 0 {
                let warm = load(kind, warmup);
                if warm.errors > 0 {
                    // Which load failed, and when: a run's total alone does not say.
                    println!(
                        "  round {round}  {name:<28} warm-up: {} failed requests ({})",
                        warm.errors,
                        warm.failures.as_deref().unwrap_or("")
                    );
                }
                warmup_errors += warm.errors;
            }
            let service = match kind {
                LoadKind::Wrk { address, .. } => Some(address.as_str()),
                LoadKind::Pgbench { .. } => None,
            };
            let before = service.map(|a| runtime.block_on(placements(a)));
            let l = load(kind, seconds);
            let latency = if l.mean_ms > 0.0 {
                format!("mean {:>6.2} ms", l.mean_ms)
            } else {
                format!("p50 {:>6.2} ms   p99 {:>6.2} ms", l.p50_ms, l.p99_ms)
            };
            // How many of the schema tenants' requests their home connection served.
            let home = match (service, before) {
                (Some(address), Some((home, away))) => {
                    let (home_after, away_after) = runtime.block_on(placements(address));
                    let (home, away) = (home_after - home, away_after - away);
                    if home + away > 0 {
                        format!(
                            "   at home {:>5.1}%",
                            100.0 * home as f64 / (home + away) as f64
                        )
                    } else {
                        String::new()
                    }
                }
                _ => String::new(),
            };
            println!(
                "  round {round}  {name:<28} {:>8.0} /s   {latency}   errors {}   machine CPU {:>5.1} µs/request{home}",
                l.rate, l.errors, l.machine_us
            );
            if let Some(failures) = &l.failures {
                println!("           {failures}");
            }
            results[i].push(l);
        }
    }
    let medians: Vec<f64> = results
        .iter()
        .map(|r| median(r.iter().map(|l| l.rate).collect()))
        .collect();
    let errors: u64 = warmup_errors + results.iter().flatten().map(|l| l.errors).sum::<u64>();
    // Positions in `loads`.
    let (pgbench_one, pgbench_many, pgbench_split, pgbench_split_one) = (0, 1, 2, 3);
    let (fixed_pool, hundred, all) = (4, 6, 7);
    println!("\n  median rates:");
    for ((name, _), rate) in loads.iter().zip(&medians) {
        println!(
            "    {name:<28} {rate:>8.0} /s   {:>5.1}% of the fixed pool",
            100.0 * rate / medians[fixed_pool]
        );
    }
    println!(
        "  fixed pool / pgbench:                 {:>5.1}% (goal 50%)",
        100.0 * medians[fixed_pool] / medians[pgbench_one]
    );
    println!(
        "  {schema_tenants} schema tenants / fixed pool:   {:>5.1}% (goal 90%)",
        100.0 * medians[all] / medians[fixed_pool]
    );
    println!(
        "  {schema_tenants} / 100 schema tenants:          {:>5.1}% (goal: no fall)",
        100.0 * medians[all] / medians[hundred]
    );
    println!(
        "  pgbench, 100 schemas / one schema:    {:>5.1}% (PostgreSQL's own cost of many schemas)",
        100.0 * medians[pgbench_many] / medians[pgbench_one]
    );
    let split = medians[pgbench_split] / medians[pgbench_split_one];
    println!(
        "  pgbench, {schema_tenants} schemas / one, split:  {:>5.1}% (the same, with affinity as good as it gets)",
        100.0 * split
    );
    // The fixed pool's time per request, plus what PostgreSQL alone spends more
    // per statement over every schema (from the split pgbench runs, whose
    // processes compete for the same cores): the best the routed service could
    // do with no cost of its own for routing.
    let per_request = 1.0 / medians[fixed_pool];
    let extra = 1.0 / medians[pgbench_split] - 1.0 / medians[pgbench_split_one];
    println!(
        "  {schema_tenants} schema tenants / fixed pool, ceiling: {:>5.1}% (with routing free)",
        100.0 * per_request / (per_request + extra)
    );
    let (rss, peak) = routed.rss_mib();
    println!("  router memory after the run: {rss:.1} MiB (peak {peak:.1} MiB)");

    // Each goal's two loads again, alternating in short runs, so that both meet the
    // machine in the same state: on a shared machine the rate of one load moves by
    // a fifth between rounds about two minutes apart, which the medians above carry into
    // their ratios. Neither load disturbs the other's pools (they are other
    // processes, or the 100 schema tenants are among the 1,000), so one warm-up
    // each is enough.
    let (pairs, pair_seconds) = (env_or("BENCH_PAIRS", 11), env_or("BENCH_PAIR_SECONDS", 3));
    let goals = [
        (
            "fixed pool / pgbench".to_string(),
            fixed_pool,
            pgbench_one,
            50.0,
        ),
        (
            format!("{schema_tenants} schema tenants / fixed pool"),
            all,
            fixed_pool,
            90.0,
        ),
        (
            format!(
                "{schema_tenants} / {} schema tenants",
                100.min(schema_tenants)
            ),
            all,
            hundred,
            100.0,
        ),
    ];
    let mut pair_errors = 0;
    if pairs > 0 {
        println!(
            "\n== The goals in pairs: each goal's two loads alternating, {pairs} pairs of \
             {pair_seconds} s runs after {warmup} s of each; the ratio of each pair"
        );
    }
    for (goal, over, under, target) in goals.into_iter().filter(|_| pairs > 0) {
        let (a, b) = (&loads[over].1, &loads[under].1);
        if warmup > 0 {
            for warm in [load(a, warmup), load(b, warmup)] {
                if let Some(failures) = &warm.failures {
                    println!("  {goal}, warm-up: {failures}");
                }
                pair_errors += warm.errors;
            }
        }
        let runs: Vec<(Load, Load)> = (0..pairs)
            .filter_map(|i| {
                // Which goes first alternates too, so a drift favours neither.
                let (x, y) = if i % 2 == 0 {
                    let x = load(a, pair_seconds);
                    (x, load(b, pair_seconds))
                } else {
                    let y = load(b, pair_seconds);
                    (load(a, pair_seconds), y)
                };
                for failures in [&x.failures, &y.failures].into_iter().flatten() {
                    println!("  {goal}, pair {}: {failures}", i + 1);
                }
                pair_errors += x.errors + y.errors;
                if x.rate <= 0.0 || y.rate <= 0.0 {
                    // wrk or pgbench printed no rate: no ratio to count.
                    println!("  {goal}, pair {}: a run without a rate, left out", i + 1);
                    return None;
                }
                Some((x, y))
            })
            .collect();
        print_pairs(
            &goal,
            runs.iter().map(|(x, y)| 100.0 * x.rate / y.rate).collect(),
            Some(target),
        );
        // The same pairs by what a request cost the whole machine: the ratio the
        // rates would show if each load had the machine to itself, read from the
        // CPU time spent rather than the requests a run happened to finish.
        let costs: Vec<(f64, f64)> = runs
            .iter()
            .filter(|(x, y)| x.machine_us > 0.0 && y.machine_us > 0.0)
            .map(|(x, y)| (x.machine_us, y.machine_us))
            .collect();
        if !costs.is_empty() {
            print_pairs(
                &format!("{goal}, by CPU per request"),
                costs.iter().map(|(x, y)| 100.0 * y / x).collect(),
                Some(target),
            );
            println!(
                "    the machine's CPU per request, medians: {:.1} µs against {:.1} µs",
                median(costs.iter().map(|c| c.0).collect()),
                median(costs.iter().map(|c| c.1).collect()),
            );
        }
    }
    let errors = errors + pair_errors;
    println!("  failed requests: {errors}");
    if errors > 0 {
        // What the services said of them (their logs go with the temporary folder).
        for name in ["routed", "fixed"] {
            let log =
                std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default();
            // The last 20, leaving out the start-up warning of AUTH_MODE=none.
            let said: Vec<&str> = log
                .lines()
                .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("AUTH_MODE"))
                .collect();
            for line in &said[said.len().saturating_sub(20)..] {
                println!("  {name}: {line}");
            }
        }
    }
}
