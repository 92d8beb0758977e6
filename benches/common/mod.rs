//! Pieces both benchmarks use: settings, a service on port 0, a load generator,
//! seeding and statistics.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tenant_router::{Application, Settings};

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// The benchmark process's scratch directory (the services' control databases),
/// removed with everything in it when the guard drops: hold it first in `main`, so
/// that it outlives the runtime and the services.
pub fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tenant-router-bench-")
        .tempdir()
        .expect("scratch directory");
    SCRATCH
        .set(dir.path().to_path_buf())
        .expect("one scratch directory per process");
    dir
}

fn scratch_path() -> &'static Path {
    SCRATCH
        .get()
        .expect("main holds common::scratch() before starting services")
}

pub const BENCH_ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// Gives `tenant` a staff user through the admin route and logs it in: the token.
pub async fn login_token(address: &str, tenant: &str) -> String {
    let client = reqwest::Client::new();
    let credentials = serde_json::json!({ "username": "bench", "password": "bench-password" });
    let mut user = credentials.clone();
    user["role"] = "staff".into();
    let status = client
        .post(format!("{address}/api/admin/tenants/{tenant}/users"))
        .bearer_auth(BENCH_ADMIN_TOKEN)
        .json(&user)
        .send()
        .await
        .expect("add user")
        .status();
    assert_eq!(status, 201, "adding the bench user");
    let body: serde_json::Value = client
        .post(format!("{address}/api/auth/login"))
        .header("X-Tenant-ID", tenant)
        .json(&credentials)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    body["access_token"].as_str().expect("token").to_string()
}

pub fn settings(env: &[(&str, String)]) -> Settings {
    let mut map: HashMap<String, String> = HashMap::from([
        ("PORT".into(), "0".into()),
        ("SETTINGS_FILE".into(), String::new()),
        ("ADMIN_TOKEN".into(), BENCH_ADMIN_TOKEN.into()),
        // The ratios compare routing, on both sides alike; the routing benchmark
        // times token checks on their own.
        ("AUTH_MODE".into(), "none".into()),
        (
            "SECRET_KEY".into(),
            tenant_router::secret::SecretBox::generate_hex(),
        ),
        (
            "CONTROL_DATABASE_URL".into(),
            format!(
                "sqlite://{}/{}/control.db",
                scratch_path().display(),
                uuid::Uuid::new_v4().simple()
            ),
        ),
    ]);
    // Pool sizing knobs apply to both sides alike.
    for key in ["DEFAULT_MAX_CONNECTIONS", "POOL_IDLE_TIMEOUT_SECS"] {
        if let Ok(value) = std::env::var(key) {
            map.insert(key.into(), value);
        }
    }
    map.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Settings::from_map(&map).expect("bench settings")
}

/// Requests per second of GET /api/products from `concurrency` workers for
/// `seconds`; `tenants` empty means no identification (single-pool service).
pub async fn throughput(
    address: &str,
    tenants: &[String],
    concurrency: u64,
    seconds: u64,
) -> (f64, u64) {
    throughput_as(address, tenants, None, concurrency, seconds).await
}

/// [`throughput`] with `Authorization: Bearer <token>` on every request.
pub async fn throughput_as(
    address: &str,
    tenants: &[String],
    token: Option<&str>,
    concurrency: u64,
    seconds: u64,
) -> (f64, u64) {
    let token: Option<Arc<str>> = token.map(Arc::from);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let url = format!("{address}/api/products?limit=10");
    let tenants: Arc<Vec<String>> = Arc::new(tenants.to_vec());
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, stop, done, errors, url, tenants, token) = (
                client.clone(),
                stop.clone(),
                done.clone(),
                errors.clone(),
                url.clone(),
                tenants.clone(),
                token.clone(),
            );
            tokio::spawn(async move {
                let mut i = w as usize;
                while !stop.load(Ordering::Relaxed) {
                    let mut request = client.get(&url);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    if !tenants.is_empty() {
                        request = request.header("X-Tenant-ID", &tenants[i % tenants.len()]);
                        i += concurrency as usize;
                    }
                    match request.send().await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for w in workers {
        let _ = w.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        errors.load(Ordering::Relaxed),
    )
}

pub async fn seed(address: &str, tenant: Option<&str>, products: usize) {
    seed_as(address, tenant, None, products).await
}

/// [`seed`] with `Authorization: Bearer <token>`.
pub async fn seed_as(address: &str, tenant: Option<&str>, token: Option<&str>, products: usize) {
    let client = reqwest::Client::new();
    for n in 0..products {
        let mut request = client
            .post(format!("{address}/api/products"))
            .json(&serde_json::json!({ "name": format!("Product {n}"), "price": 10.0 + n as f64 }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(t) = tenant {
            request = request.header("X-Tenant-ID", t);
        }
        let status = request.send().await.expect("seed").status();
        assert_eq!(status, 201, "seeding");
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Prints what pairs of alternating runs say of a ratio: the median of the pairs'
/// ratios (in %), their quartiles and range, how many reached `goal` if there is
/// one, and every ratio in order of size.
pub fn print_pairs(name: &str, mut ratios: Vec<f64>, goal: Option<f64>) {
    if ratios.is_empty() {
        return;
    }
    ratios.sort_by(f64::total_cmp);
    // Quantiles interpolated between the two nearest ratios.
    let at = |q: f64| {
        let rank = (ratios.len() - 1) as f64 * q;
        let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
        ratios[low] + (ratios[high] - ratios[low]) * (rank - low as f64)
    };
    let reached = goal
        .map(|goal| {
            let n = ratios.iter().filter(|r| **r >= goal).count();
            format!("   {n} of {} pairs at {goal}% or more", ratios.len())
        })
        .unwrap_or_default();
    println!(
        "  {name:<36} median {:>5.1}%   quartiles {:>5.1}-{:>5.1}%   range {:>5.1}-{:>5.1}%{reached}",
        at(0.5),
        at(0.25),
        at(0.75),
        ratios[0],
        ratios[ratios.len() - 1],
    );
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "    the pairs' ratios, in order of size: {}",
        each.join(" ")
    );
}

pub async fn start(settings: Settings) -> String {
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr().expect("addr"));
    tokio::spawn(app.run_until(std::future::pending()));
    address
}

/// `ticks` of the kernel's CPU accounting (`/proc`), which counts in Linux's
/// `USER_HZ`: 100 a second.
fn clock_ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// The CPU time this process has used so far, user and system, over all its
/// threads (those that have ended too), from `/proc/self/stat`: in clock ticks of
/// 10 ms, so a run of a few seconds reads it within a percent.
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name, which ends at the last ')': utime and stime are the
    // 12th and 13th fields.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    clock_ticks(ticks)
}

/// The CPU time every process on the machine has used so far (user, nice, system,
/// irq and softirq; not idle, I/O wait or time stolen by a hypervisor), from the
/// first line of `/proc/stat`, in clock ticks of 10 ms. Over a
/// load that keeps the machine busy, its growth per request is what a request costs
/// every process together: the client, the service and the database server.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .map(|l| {
            let fields: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
        })
        .unwrap_or(0);
    clock_ticks(ticks)
}

/// The thread count of this process (sqlx runs one thread per SQLite connection).
pub fn process_threads() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .map(|l| l[8..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The `q`-quantile (0..=1) of `samples`.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

/// The resident memory of this process, in MiB.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A service started by [`start_stoppable`].
pub struct Running {
    pub address: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the service and waits until its pools are closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Like [`start`], but the service can be stopped, closing its pools.
pub async fn start_stoppable(settings: Settings) -> Running {
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        address,
        stop,
        task,
    }
}
