//! Memory under hostile load, measured on the real process.

use super::*;

/// Resident memory of process `pid` now and at its peak, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_flood_of_failed_logins_keeps_memory_bounded() {
    // Each Argon2 verification needs 19 MiB; 200 at once must neither hold 200 work
    // areas nor leave them behind.
    let dir = dir_with_sqlite_tenant("acme");
    let mut server = Server::start(command(
        dir.path(),
        &[
            ("AUTH_MODE", "jwt"),
            ("LOGIN_MAX_FAILURES_PER_ADDRESS", "100000"),
            ("LOGIN_MAX_FAILURES_PER_USER", "100000"),
        ],
    ));
    let pid = server.child.id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let flood = |n: usize| {
        let (client, address) = (client.clone(), server.address.clone());
        async move {
            let logins = (0..n).map(|i| {
                client
                    .post(format!("{address}/api/auth/login"))
                    .header("X-Tenant-ID", "acme")
                    .json(&serde_json::json!({ "username": format!("nobody{i}"), "password": "not-the-password" }))
                    .send()
            });
            for response in futures::future::join_all(logins).await {
                assert_eq!(response.unwrap().status(), 401);
            }
        }
    };
    let (idle, _) = rss_mib(pid);
    rt.block_on(flood(200));
    let (after, peak) = rss_mib(pid);
    assert!(
        peak - idle < 150.0,
        "peak {peak:.0} MiB against {idle:.0} MiB idle"
    );
    assert!(
        after - idle < 150.0,
        "{after:.0} MiB after against {idle:.0} MiB idle"
    );
    assert!(server.stop());
}

/// How many of process `pid`'s mappings asked the kernel for transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`, the `hg` flag in smaps).
fn huge_page_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "hg"))
        .count()
}

#[test]
fn each_sqlite_connection_costs_a_fraction_of_a_mib() {
    // Each SQLite connection is a thread, and the allocator gives each thread a heap
    // of its own. When the allocator asks for transparent huge pages, a thread's
    // first allocation faults in 2 MiB: 256 connections to files touched once held
    // 322 MiB, against 107 MiB without.
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..100).map(|i| format!("file{i:03}")).collect();
    write_sqlite_tenants(dir.path(), &ids);
    let mut server = Server::start(command(
        dir.path(),
        &[
            ("SQLITE_MAX_CONNECTIONS", "128"),
            // Every connection opened stays open until it is measured.
            ("CONNECTION_IDLE_TIMEOUT_SECS", "3600"),
        ],
    ));
    let pid = server.child.id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let get = |id: &str| {
        let request = client
            .get(format!("{}/api/products", server.address))
            .header("X-Tenant-ID", id);
        let status = rt.block_on(request.send()).unwrap().status();
        assert_eq!(status, 200, "{id}");
    };
    let open = || {
        let request = client
            .get(format!("{}/api/admin/pools", server.address))
            .bearer_auth(ADMIN);
        let stats: serde_json::Value = rt
            .block_on(async { request.send().await.unwrap().json().await })
            .unwrap();
        let sqlite = stats["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["server"] == "sqlite")
            .cloned()
            .unwrap_or_else(|| panic!("no sqlite server in {stats}"));
        sqlite["open"].as_u64().unwrap()
    };
    // The first tenant pays for what every request loads once (migrations, the
    // statement caches' first entries); the others measure a connection each.
    get(&ids[0]);
    let (before, opened_before) = (rss_mib(pid).0, open());
    for id in &ids[1..] {
        get(id);
    }
    let (after, opened) = (rss_mib(pid).0, open() - opened_before);
    assert!(opened >= 90, "only {opened} connections were opened");
    let each = (after - before) / opened as f64;
    assert!(
        each < 0.6,
        "{each:.2} MiB per SQLite connection ({before:.0} MiB before, {after:.0} MiB with {opened} more)"
    );
    assert_eq!(
        huge_page_mappings(pid),
        0,
        "the allocator asked for transparent huge pages"
    );
    assert!(server.stop());
}
