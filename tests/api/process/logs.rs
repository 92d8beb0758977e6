//! Log lines as operators' tools read them: `LOG_FORMAT=json` writes one JSON
//! object per line, and every request's line names its tenant, request id, route,
//! status and latency.

use super::*;

#[test]
fn json_logs_are_one_object_per_line_and_each_request_line_names_tenant_route_status_and_latency() {
    let dir = dir_with_sqlite_tenant("demo");
    let mut server = Server::start(command(
        dir.path(),
        &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "info")],
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let ok = client
            .get(format!(
                "{}/api/products/00000000-0000-0000-0000-000000000000",
                server.address
            ))
            .header("X-Tenant-ID", "demo")
            .header("X-Request-Id", "log-test-1")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 404);
        let listed = client
            .get(format!("{}/api/products", server.address))
            .header("X-Tenant-ID", "demo")
            .header("X-Request-Id", "log-test-2")
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
        let ready = client
            .get(format!("{}/ready", server.address))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    });
    assert!(server.stop());
    let log = server.log();

    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 4, "{log}");
    let finished = |request_id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request finished" && l["span"]["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no finished line for {request_id}: {log}"))
            .clone()
    };
    for (request_id, route, status) in [
        ("log-test-1", "/api/products/{id}", 404),
        ("log-test-2", "/api/products", 200),
    ] {
        let line = finished(request_id);
        assert_eq!(line["span"]["tenant_id"], "demo", "{line}");
        assert_eq!(line["span"]["route"], route, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert!(line["latency_us"].is_u64(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
    }
}

#[test]
fn an_unknown_log_format_stops_start_up_naming_the_setting() {
    let dir = dir_with_sqlite_tenant("demo");
    let output = command(dir.path(), &[("LOG_FORMAT", "yaml")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LOG_FORMAT"), "{stderr}");
}
