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
