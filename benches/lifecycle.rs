//! Lifecycle benchmark: `tenant-router migrate --all` (the real binary) over 1,000
//! SQLite tenants and 200 PostgreSQL tenants, a full migration and then a run with
//! nothing pending; and the time to provision one tenant through the admin API on
//! SQLite and PostgreSQL (both modes), p50 and p99.
//!
//! Run: `./scripts/bench.sh lifecycle`, or `cargo bench --bench lifecycle` with
//! BENCH_DATABASE_URL set. Knobs: BENCH_SQLITE_TENANTS, BENCH_PG_TENANTS,
//! BENCH_PROVISIONS, BENCH_MIGRATE_CONCURRENCY. It prints its figures.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{env_or, quantile, settings, start_stoppable};
use sea_orm::ConnectionTrait;

fn with_database(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).expect("BENCH_DATABASE_URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Runs `tenant-router migrate --all` in `dir`; returns the wall time and the
/// summary line it printed.
fn migrate_all(dir: &Path, concurrency: u64) -> (Duration, String) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_tenant-router"))
        .current_dir(dir)
        .env_clear()
        .env(
            "CONTROL_DATABASE_URL",
            format!("sqlite://{}/control.db", dir.display()),
        )
        .args([
            "migrate",
            "--all",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .output()
        .expect("run tenant-router migrate");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        output.status.success(),
        "migrate failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (took, stdout)
}

fn fleet(label: &str, dir: &Path, toml: &str, concurrency: u64) {
    std::fs::write(dir.join("tenants.toml"), toml).expect("write tenants");
    let (full, summary) = migrate_all(dir, concurrency);
    println!(
        "  {label:<36} full {:>7.2} s   ({summary})",
        full.as_secs_f64()
    );
    let (noop, summary) = migrate_all(dir, concurrency);
    println!(
        "  {label:<36} no-op {:>6.2} s   ({summary})",
        noop.as_secs_f64()
    );
}

async fn provisioning(label: &str, address: &str, bodies: Vec<serde_json::Value>) {
    let client = reqwest::Client::new();
    let mut samples = Vec::with_capacity(bodies.len());
    for body in &bodies {
        let started = Instant::now();
        let status = client
            .post(format!("{address}/api/admin/tenants"))
            .bearer_auth("bench-admin-token-0123456789")
            .json(body)
            .send()
            .await
            .expect("provision")
            .status();
        assert_eq!(status, 201, "provisioning {body}");
        samples.push(started.elapsed());
    }
    println!(
        "  {label:<36} p50 {:>7.1} ms   p99 {:>7.1} ms   ({} tenants)",
        quantile(&mut samples, 0.5).as_secs_f64() * 1000.0,
        quantile(&mut samples, 0.99).as_secs_f64() * 1000.0,
        bodies.len()
    );
}

fn main() {
    let _scratch = common::scratch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = std::env::var("BENCH_DATABASE_URL")
        .expect("BENCH_DATABASE_URL is not set: run ./scripts/bench.sh lifecycle");
    let sqlite_tenants = env_or("BENCH_SQLITE_TENANTS", 1000);
    let pg_tenants = env_or("BENCH_PG_TENANTS", 200);
    let provisions = env_or("BENCH_PROVISIONS", 50) as usize;
    let concurrency = env_or("BENCH_MIGRATE_CONCURRENCY", 8);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");

        println!("\n== tenant-router migrate --all (concurrency {concurrency})");
        let sqlite_dir = dir.path().join("sqlite");
        std::fs::create_dir_all(&sqlite_dir).expect("dir");
        let toml: String = (0..sqlite_tenants)
            .map(|i| {
                format!(
                    "[tenants.lite_{i:05}]\ndatabase_url = \"sqlite://{}/lite_{i:05}.db\"\n",
                    sqlite_dir.display()
                )
            })
            .collect();
        fleet(
            &format!("{sqlite_tenants} SQLite tenants"),
            &sqlite_dir,
            &toml,
            concurrency,
        );

        let pg_dir = dir.path().join("pg");
        std::fs::create_dir_all(&pg_dir).expect("dir");
        let admin = tenant_router::db::connect(with_database(&server, "postgres"))
            .await
            .expect("connect");
        let names: Vec<String> = (0..pg_tenants)
            .map(|i| format!("fleet_{run}_{i:05}"))
            .collect();
        for name in &names {
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create database");
        }
        admin.close().await.expect("close");
        let toml: String = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    "[tenants.pg_{i:05}]\ndatabase_url = \"{}\"\n",
                    with_database(&server, name)
                )
            })
            .collect();
        fleet(
            &format!("{pg_tenants} PostgreSQL database-mode tenants"),
            &pg_dir,
            &toml,
            concurrency,
        );

        println!("\n== Provisioning one tenant through POST /api/admin/tenants");
        let running = start_stoppable(settings(&[])).await;
        let lite = dir.path().join("provisioned");
        provisioning(
            "SQLite",
            &running.address,
            (0..provisions)
                .map(|i| {
                    serde_json::json!({
                        "id": format!("new_lite_{i:04}"),
                        "database_url": format!("sqlite://{}/new_lite_{i:04}.db", lite.display()),
                    })
                })
                .collect(),
        )
        .await;
        provisioning(
            "PostgreSQL, database mode",
            &running.address,
            (0..provisions)
                .map(|i| {
                    serde_json::json!({
                        "id": format!("new_db_{i:04}"),
                        "database_url": with_database(&server, &format!("prov_{run}_{i:04}")),
                    })
                })
                .collect(),
        )
        .await;
        provisioning(
            "PostgreSQL, schema mode",
            &running.address,
            (0..provisions)
                .map(|i| {
                    serde_json::json!({
                        "id": format!("new_schema_{i:04}"),
                        "database_url": with_database(&server, "postgres"),
                        "isolation": "schema",
                    })
                })
                .collect(),
        )
        .await;
        running.stop().await;
    });
}
