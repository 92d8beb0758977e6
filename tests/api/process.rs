//! The real binary: start-up refusal of bad configuration, secrets kept out of
//! responses and logs, and shutdown on SIGTERM.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::Method;

const BIN: &str = env!("CARGO_BIN_EXE_tenant-router");
const ADMIN: &str = "process-admin-token-0123456789";

fn command(cwd: &Path, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .env_clear()
        .env("PORT", "0")
        .env("ADMIN_TOKEN", ADMIN)
        // Authentication has its own process test; the others are about other things.
        .env("AUTH_MODE", "none")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// A temporary directory with a tenants.toml of one tenant, `id`, on a SQLite file
/// beside it.
fn dir_with_sqlite_tenant(id: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[tenants.{id}]\ndatabase_url = 'sqlite://{}/{id}.db'\n",
            dir.path().display()
        ),
    )
    .unwrap();
    dir
}

/// Runs the binary expecting it to refuse to start; returns its stderr.
fn refused_start(tenants_toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.toml"), tenants_toml).unwrap();
    let output = command(dir.path(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "should exit 2");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn each_kind_of_invalid_entry_stops_start_up_naming_tenant_and_field() {
    let cases = [
        (
            "[tenants.Bad_Id]\ndatabase_url = 'sqlite://a.db'",
            "Bad_Id",
            "id",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://a.db'\ndomain = 'retail'",
            "a",
            "domain",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://a.db'\nfeatures = ['teleport']",
            "a",
            "features",
        ),
        (
            "[tenants.a]\ndatabase_url = 'mysql://u:Pw0rdX@h/db'",
            "a",
            "database_url",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://a.db'\nbranding = { primary_color = 'red' }",
            "a",
            "branding.primary_color",
        ),
        (
            "[tenants.a_b]\ndatabase_url = 'sqlite://a.db'\n[tenants.c]\ndatabase_url = 'sqlite://c.db'\nsubdomain = 'a-b'",
            "c",
            "subdomain",
        ),
        (
            "[tenants.a]\ndatabase_url = 'sqlite://data/a.db?mode=rwc'\n[tenants.b]\ndatabase_url = 'sqlite:data/./a.db'",
            "b",
            "database_url",
        ),
    ];
    for (toml, tenant, field) in cases {
        let stderr = refused_start(toml);
        let expected = format!("tenant '{tenant}': field '{field}'");
        assert!(
            stderr.contains(&expected),
            "want {expected:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("Pw0rdX"), "password leaked:\n{stderr}");
    }
}

#[test]
fn a_missing_tenants_file_is_refused_unless_tenant_configs_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path(), &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TENANTS_FILE"));

    let json = format!(
        r#"{{"solo": {{"database_url": "sqlite://{}/solo.db"}}}}"#,
        dir.path().display()
    );
    let mut server = Server::start(command(dir.path(), &[("TENANT_CONFIGS", &json)]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/products", server.address))
            .header("X-Tenant-ID", "solo")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    server.stop();
}

/// A running binary whose output is collected.
struct Server {
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let err_log = log.clone();
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            err_log.lock().unwrap().push_str(&text);
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut address = None;
        let mut line = String::new();
        while address.is_none() {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                panic!("server exited before listening: {}", log.lock().unwrap());
            }
            log.lock().unwrap().push_str(&line);
            if let Some(pos) = line.find("addr=") {
                address = Some(format!("http://{}", line[pos + 5..].trim()));
            }
        }
        let out_log = log.clone();
        let out_reader = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            out_log.lock().unwrap().push_str(&rest);
        });
        Self {
            child,
            address: address.unwrap(),
            log,
            readers: vec![err_reader, out_reader],
        }
    }

    /// Sends SIGTERM and waits; returns whether the process exited successfully.
    fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The process is gone: its pipes close, and the readers have the
                // whole output once they end.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn no_response_and_no_log_line_holds_a_database_password() {
    const PASSWORD: &str = "Sup3r-Secret-Pw";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[tenants.demo]\ndatabase_url = 'sqlite://{}/demo.db'\n\
             [tenants.pg_tenant]\ndatabase_url = 'postgres://app:{PASSWORD}@127.0.0.1:1/tenant_db'\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut server = Server::start(command(
        dir.path(),
        &[
            ("LOG_LEVEL", "trace"),
            ("POOL_CONNECT_TIMEOUT_SECS", "1"),
            ("POOL_ACQUIRE_TIMEOUT_SECS", "1"),
        ],
    ));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let bodies = rt.block_on(async {
        let client = reqwest::Client::new();
        let requests = [
            (Method::GET, "/api/tenants", None),
            (Method::GET, "/api/tenants/pg_tenant/config", None),
            (Method::GET, "/api/tenants/pg_tenant/health", None),
            (Method::GET, "/api/tenants/pg_tenant/branding", None),
            (Method::GET, "/api/products", Some("pg_tenant")),
            (Method::POST, "/api/products", Some("pg_tenant")),
            (Method::GET, "/api/products", Some("demo")),
        ];
        let mut bodies = Vec::new();
        for (method, path, tenant) in requests {
            let mut request = client
                .request(method, format!("{}{path}", server.address))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({ "name": "x", "price": 1 }));
            if let Some(t) = tenant {
                request = request.header("X-Tenant-ID", t);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            bodies.push((path, tenant, status, response.text().await.unwrap()));
        }
        bodies
    });
    assert!(server.stop(), "SIGTERM should end the server cleanly");
    let log = server.log();

    for (path, _, _, body) in &bodies {
        assert!(
            !body.contains(PASSWORD),
            "{path} leaked the password: {body}"
        );
        assert!(
            !body.contains("127.0.0.1:1"),
            "{path} leaked the database host: {body}"
        );
    }
    let pg_products = bodies
        .iter()
        .find(|b| b.0 == "/api/products" && b.1 == Some("pg_tenant"))
        .unwrap();
    assert_eq!(
        pg_products.2, 503,
        "unreachable database is 503: {}",
        pg_products.3
    );
    assert!(pg_products.3.contains("tenant_unavailable"));
    assert!(!log.contains(PASSWORD), "log leaked the password:\n{log}");
    assert!(
        log.contains("opening tenant pool failed"),
        "the failure is logged:\n{log}"
    );

    // Every log line written inside a tenant request names the tenant.
    for line in log
        .lines()
        .filter(|l| l.contains("request{") && l.contains("/api/products"))
    {
        assert!(
            line.contains("tenant_id="),
            "line without tenant id: {line}"
        );
    }
}

#[test]
fn sigterm_closes_the_server_cleanly() {
    let dir = dir_with_sqlite_tenant("demo");
    let mut server = Server::start(command(dir.path(), &[]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/api/products", server.address))
            .header("X-Tenant-ID", "demo")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    assert!(server.stop());
    assert!(
        server.log().contains("tenant pool closed"),
        "{}",
        server.log()
    );
}

#[test]
fn sighup_reloads_the_tenants_file_under_load_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let entry = |id: &str| {
        format!(
            "[tenants.{id}]\ndatabase_url = 'sqlite://{}/{id}.db'\n",
            dir.path().display()
        )
    };
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, entry("demo")).unwrap();
    let mut server = Server::start(command(dir.path(), &[]));
    let pid = server.child.id().to_string();
    let hangup = || {
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let address = server.address.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (client, address, stop) = (client.clone(), address.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = client
                        .get(format!("{address}/api/products"))
                        .header("X-Tenant-ID", "demo")
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    if status.as_ref().is_ok_and(|s| *s == 200) {
                        ok += 1
                    } else {
                        failed += 1
                    }
                }
                (ok, failed)
            })
        };
        let status_of = |id: &'static str| {
            let (client, address) = (client.clone(), address.clone());
            async move {
                client
                    .get(format!("{address}/api/products"))
                    .header("X-Tenant-ID", id)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(status_of("extra").await, 404);

        // A new tenant in the file is served after SIGHUP, with no restart.
        std::fs::write(&file, format!("{}{}", entry("demo"), entry("extra"))).unwrap();
        hangup();
        let mut served = false;
        for _ in 0..50 {
            if status_of("extra").await == 200 {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served, "extra never served after SIGHUP");

        // An invalid file is refused and the old tenants stay.
        std::fs::write(
            &file,
            format!(
                "{}[tenants.broken]\ndatabase_url = 'sqlite://x.db'\ndomain = 'retail'\n",
                entry("demo")
            ),
        )
        .unwrap();
        hangup();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            status_of("extra").await,
            200,
            "an invalid reload dropped a tenant"
        );

        // More reloads while the load runs.
        std::fs::write(&file, format!("{}{}", entry("demo"), entry("extra"))).unwrap();
        for _ in 0..5 {
            hangup();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load.await.unwrap();
        assert!(ok > 0);
        assert_eq!(failed, 0, "requests lost during reloads");
    });
    assert!(server.stop());
    let log = server.log();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("tenant 'broken': field 'domain'"), "{log}");
}

/// Runs the binary with `args` in `cwd`; returns (exit code, stdout, stderr).
fn run(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let output = command(cwd, &[]).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A tenants.toml in `dir` with a tenant per id, each on a SQLite file beside it.
fn write_sqlite_tenants(dir: &Path, ids: &[impl AsRef<str>]) {
    let toml: String = ids
        .iter()
        .map(|id| {
            let id = id.as_ref();
            format!(
                "[tenants.{id}]\ndatabase_url = 'sqlite://{}/{id}.db'\n",
                dir.display()
            )
        })
        .collect();
    std::fs::write(dir.join("tenants.toml"), toml).unwrap();
}

fn report_rows(path: &Path) -> Vec<serde_json::Value> {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    report["tenants"].as_array().unwrap().clone()
}

#[test]
fn migrate_all_carries_on_past_a_broken_tenant_and_a_second_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    write_sqlite_tenants(dir.path(), &["t1", "t2", "t3", "t4", "broken"]);
    // A directory where the broken tenant's database file should be.
    std::fs::create_dir(dir.path().join("broken.db")).unwrap();

    let report = dir.path().join("report.json");
    let (code, stdout, stderr) = run(
        dir.path(),
        &["migrate", "--all", "--report", report.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    let rows = report_rows(&report);
    assert_eq!(rows.len(), 5);
    for row in &rows {
        if row["tenant_id"] == "broken" {
            assert_eq!(row["status"], "failed");
            assert!(
                row["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{row}"
            );
        } else {
            assert_eq!(row["status"], "migrated", "{row}");
            assert!(row["before"].is_null());
            assert!(row["after"].as_str().is_some(), "{row}");
        }
    }

    // Repaired, the second run migrates the broken tenant and only checks the rest.
    std::fs::remove_dir(dir.path().join("broken.db")).unwrap();
    let (code, stdout, stderr) = run(
        dir.path(),
        &["migrate", "--all", "--report", report.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    for row in report_rows(&report) {
        let want = if row["tenant_id"] == "broken" {
            "migrated"
        } else {
            "up_to_date"
        };
        assert_eq!(row["status"], want, "{row}");
    }
}

#[test]
fn migrate_dry_run_reports_pending_and_changes_nothing() {
    let dir = dir_with_sqlite_tenant("one");
    let report = dir.path().join("dry.json");
    for _ in 0..2 {
        let (code, _, stderr) = run(
            dir.path(),
            &[
                "migrate",
                "--tenant",
                "one",
                "--dry-run",
                "--report",
                report.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        let rows = report_rows(&report);
        assert_eq!(rows[0]["status"], "pending");
        assert!(!rows[0]["pending"].as_array().unwrap().is_empty());
        assert!(
            !dir.path().join("one.db").exists(),
            "a dry run created the database file"
        );
    }
    let (code, _, stderr) = run(dir.path(), &["migrate", "--tenant", "nobody"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn tenant_commands_manage_the_control_database() {
    let dir = dir_with_sqlite_tenant("from_file");
    let url = format!("sqlite://{}/cli_made.db", dir.path().display());
    let (code, stdout, stderr) = run(
        dir.path(),
        &[
            "tenants",
            "create",
            "--id",
            "cli_made",
            "--database-url",
            &url,
            "--domain",
            "dental",
            "--seed-demo-data",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains(&url),
        "the database URL was printed: {stdout}"
    );
    assert!(dir.path().join("cli_made.db").exists());

    let (_, list, _) = run(dir.path(), &["tenants", "list"]);
    assert!(
        list.contains("cli_made") && list.contains("from_file"),
        "{list}"
    );
    assert_eq!(run(dir.path(), &["tenants", "suspend", "cli_made"]).0, 0);
    let (_, shown, _) = run(dir.path(), &["tenants", "show", "cli_made"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["is_active"], false);
    assert_eq!(run(dir.path(), &["tenants", "activate", "cli_made"]).0, 0);
    let (code, _, stderr) = run(dir.path(), &["tenants", "delete", "from_file"]);
    assert_eq!(code, 2, "a file tenant is not deleted here: {stderr}");
    assert_eq!(
        run(
            dir.path(),
            &["tenants", "delete", "cli_made", "--drop-database"]
        )
        .0,
        0
    );
    assert!(!dir.path().join("cli_made.db").exists());
    let (_, list, _) = run(dir.path(), &["tenants", "list"]);
    assert!(!list.contains("cli_made"), "{list}");
}

#[test]
fn no_password_token_or_key_reaches_a_log_line() {
    const JWT_SECRET: &str = "process-jwt-secret-0123456789abcdef-xyz";
    const PASSWORD: &str = "Sup3r-secret-login-pw";
    const WRONG: &str = "Wr0ng-guess-pw-123";
    const SECOND: &str = "Another-s3cret-pw";
    const CHANGED: &str = "Changed-s3cret-pw";
    let dir = dir_with_sqlite_tenant("alpha");
    let mut server = Server::start(command(
        dir.path(),
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", JWT_SECRET),
            ("LOG_LEVEL", "trace"),
        ],
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (token, key) = rt.block_on(async {
        let client = reqwest::Client::new();
        let url = |path: &str| format!("{}{path}", server.address);
        let send = |request: reqwest::RequestBuilder| async move {
            let response = request.header("X-Tenant-ID", "alpha").send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        };
        let add = client
            .post(url("/api/admin/tenants/alpha/users"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "username": "ann", "password": PASSWORD, "role": "owner" }));
        assert_eq!(send(add).await.0, 201);
        let login = |password: &'static str| {
            client
                .post(url("/api/auth/login"))
                .json(&serde_json::json!({ "username": "ann", "password": password }))
        };
        assert_eq!(send(login(WRONG)).await.0, 401);
        let (status, body) = send(login(PASSWORD)).await;
        assert_eq!(status, 200);
        let token = body["access_token"].as_str().unwrap().to_string();
        let (status, _) = send(client.get(url("/api/products")).bearer_auth(&token)).await;
        assert_eq!(status, 200);
        let (status, created) = send(
            client
                .post(url("/api/api-keys"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "name": "etl" })),
        )
        .await;
        assert_eq!(status, 201);
        let key = created["key"].as_str().unwrap().to_string();
        let (status, _) = send(client.get(url("/api/products")).header("X-API-Key", &key)).await;
        assert_eq!(status, 200);
        let revoke = client
            .delete(url(&format!(
                "/api/api-keys/{}",
                created["id"].as_str().unwrap()
            )))
            .bearer_auth(&token);
        assert_eq!(send(revoke).await.0, 204);
        let (status, _) = send(client.get(url("/api/products")).bearer_auth(&key)).await;
        assert_eq!(status, 401);
        let (status, bob) = send(
            client
                .post(url("/api/users"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "username": "bob", "password": SECOND })),
        )
        .await;
        assert_eq!(status, 201);
        let change = client
            .patch(url(&format!("/api/users/{}", bob["id"].as_str().unwrap())))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "password": CHANGED }));
        assert_eq!(send(change).await.0, 200);
        (token, key)
    });
    assert!(server.stop(), "SIGTERM should end the server cleanly");
    let log = server.log();
    assert!(log.contains("login failed"), "the run was logged:\n{log}");
    let token_signature = token.rsplit('.').next().unwrap();
    let key_secret = key.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("a password", PASSWORD),
        ("a wrong password", WRONG),
        ("a new user's password", SECOND),
        ("a changed password", CHANGED),
        ("the access token", token.as_str()),
        ("the token's signature", token_signature),
        ("the API key", key.as_str()),
        ("the API key's secret", key_secret),
        ("the JWT secret", JWT_SECRET),
        ("the admin token", ADMIN),
    ] {
        assert!(!log.contains(secret), "the log holds {what}:\n{log}");
    }
    assert!(!log.contains("$argon2id$"), "the log holds a password hash");
}

/// Runs the binary with `args` and `envs`, writing `stdin` to it.
fn run_with(cwd: &Path, envs: &[(&str, &str)], args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = command(cwd, envs)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn the_cli_gives_a_new_tenant_its_owner_and_a_file_tenant_its_users() {
    let dir = dir_with_sqlite_tenant("from_file");
    let url = format!("sqlite://{}/cli_owned.db", dir.path().display());
    let create = [
        "tenants",
        "create",
        "--id",
        "cli_owned",
        "--database-url",
        &url,
        "--owner",
        "boss",
    ];
    // The password comes from the environment (or standard input), never an argument.
    let (code, out) = run_with(
        dir.path(),
        &[("TENANT_USER_PASSWORD", "cli-owner-password")],
        &create,
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("cli-owner-password"), "{out}");
    let add = [
        "tenants",
        "add-user",
        "from_file",
        "--username",
        "clerk",
        "--role",
        "manager",
    ];
    let (code, out) = run_with(dir.path(), &[], &add, "clerk-password-1\n");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_with(dir.path(), &[], &add, "clerk-password-1\n");
    assert_eq!(code, 2, "a second user of that name is refused: {out}");
    let (code, out) = run_with(
        dir.path(),
        &[],
        &["tenants", "add-user", "from_file", "--username", "weak"],
        "short\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("password"), "{out}");

    let mut server = Server::start(command(
        dir.path(),
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", "cli-test-jwt-secret-0123456789abcdef"),
        ],
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        for (tenant, user, password, role) in [
            ("cli_owned", "boss", "cli-owner-password", "owner"),
            ("from_file", "clerk", "clerk-password-1", "manager"),
        ] {
            let response = client
                .post(format!("{}/api/auth/login", server.address))
                .header("X-Tenant-ID", tenant)
                .json(&serde_json::json!({ "username": user, "password": password }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{user}@{tenant}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["role"], role);
        }
    });
    server.stop();
}

#[test]
fn production_refuses_to_start_without_a_jwt_secret_and_auth_mode_none_warns() {
    let dir = dir_with_sqlite_tenant("a");
    let output = command(
        dir.path(),
        &[("APP_ENV", "production"), ("AUTH_MODE", "jwt")],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");

    let mut server = Server::start(command(dir.path(), &[("AUTH_MODE", "none")]));
    assert!(server.stop());
    let log = server.log();
    assert!(
        log.contains("WARN") && log.contains("AUTH_MODE=none"),
        "AUTH_MODE=none should warn at start-up:\n{log}"
    );
}

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

/// Migrations recorded in a SQLite tenant file, and whether its tables exist.
async fn migration_state(file: &Path) -> (usize, bool) {
    tokio::time::timeout(Duration::from_secs(30), migration_state_now(file))
        .await
        .unwrap_or_else(|_| panic!("reading {} took over 30 s", file.display()))
}

async fn migration_state_now(file: &Path) -> (usize, bool) {
    use sea_orm::{ConnectionTrait, Database, Statement};
    // Read-write: a file whose writer was killed may need its WAL recovered, which
    // a read-only connection cannot do.
    let db = Database::connect(format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap()
                .map_or(0, |row| row.try_get_by_index::<i64>(0).unwrap() as usize)
        }
    };
    let has_migrations_table =
        count("SELECT count(*) FROM sqlite_master WHERE name = 'seaql_migrations'").await > 0;
    let recorded = if has_migrations_table {
        count("SELECT count(*) FROM seaql_migrations").await
    } else {
        0
    };
    let tables = count("SELECT count(*) FROM sqlite_master WHERE name = 'products'").await > 0;
    db.close().await.unwrap();
    (recorded, tables)
}

#[test]
fn migrate_all_killed_at_any_moment_leaves_each_tenant_before_or_after_and_a_rerun_finishes() {
    use migration::MigratorTrait;
    let all = migration::Migrator::migrations().len();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Kill points spread over a run (start-up, then tenants migrating 8 at a time),
    // each on fresh tenants; bounded to 12 runs of at most a second or so each.
    for kill_after_ms in (0..12).map(|k| 20 + k * 40) {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..24).map(|i| format!("t{i:02}")).collect();
        write_sqlite_tenants(dir.path(), &ids);
        let mut child = command(dir.path(), &[])
            .args(["migrate", "--all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Each tenant is before (nothing applied) or after (all applied).
        for id in &ids {
            let file = dir.path().join(format!("{id}.db"));
            if !file.exists() {
                continue;
            }
            let (recorded, tables) = rt.block_on(migration_state(&file));
            assert!(
                (recorded == 0 && !tables) || (recorded == all && tables),
                "killed after {kill_after_ms} ms: {id} has {recorded} of {all} migrations recorded, tables {tables}"
            );
        }
        // A re-run finishes every tenant.
        let (code, stdout, stderr) = run(dir.path(), &["migrate", "--all"]);
        assert_eq!(
            code, 0,
            "after a kill at {kill_after_ms} ms: {stdout}{stderr}"
        );
        for id in &ids {
            let state = rt.block_on(migration_state(&dir.path().join(format!("{id}.db"))));
            assert_eq!(state, (all, true), "{id} after the re-run");
        }
    }
}

/// Provisioning rows of the control database at `dir/data/control.db`, by state.
async fn provisioning_rows(dir: &Path) -> Vec<(String, Option<String>)> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let file = dir.join("data").join("control.db");
    if !file.exists() {
        return Vec::new();
    }
    let db = Database::connect(format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, storage FROM tenant_configs WHERE state = 'provisioning'",
        ))
        .await
        // The table is created by the first start; before that, there is nothing.
        .unwrap_or_default();
    let rows = rows
        .iter()
        .map(|r| {
            (
                r.try_get_by_index::<String>(0).unwrap(),
                r.try_get_by_index::<Option<String>>(1).unwrap(),
            )
        })
        .collect();
    db.close().await.unwrap();
    rows
}

#[test]
fn provisioning_killed_at_any_moment_leaves_the_tenant_complete_or_absent_after_a_restart() {
    let dir = dir_with_sqlite_tenant("demo");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    // How each round picks its moment: once the claim is visible, once the storage
    // is recorded as new, once the file exists, or at a fixed time after sending.
    enum KillAt {
        Claimed,
        StorageRecorded,
        FileMade,
        After(u64),
    }
    let rounds = [
        KillAt::Claimed,
        KillAt::StorageRecorded,
        KillAt::FileMade,
        KillAt::After(0),
        KillAt::After(15),
        KillAt::After(40),
        KillAt::After(100),
        KillAt::After(250),
        KillAt::After(600),
        KillAt::After(1500),
    ];
    let mut cut_short = 0;
    for (round, kill_at) in rounds.iter().enumerate() {
        let id = format!("p{round:02}");
        let file = dir.path().join(format!("{id}.db"));
        let body = serde_json::json!({
            "id": id,
            "database_url": format!("sqlite://{}", file.display()),
            "domain": "dental",
            "seed_demo_data": true,
            "owner": { "username": "owner", "password": "a long enough owner password" },
        });
        let mut server = Server::start(command(dir.path(), &[]));
        let post = {
            let request = client
                .post(format!("{}/api/admin/tenants", server.address))
                .bearer_auth(ADMIN)
                .json(&body);
            rt.spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        };
        rt.block_on(async {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let reached = || async {
                match kill_at {
                    KillAt::Claimed => !provisioning_rows(dir.path()).await.is_empty(),
                    KillAt::StorageRecorded => provisioning_rows(dir.path())
                        .await
                        .iter()
                        .any(|(_, storage)| storage.is_some()),
                    KillAt::FileMade => file.exists(),
                    KillAt::After(_) => true,
                }
            };
            if let KillAt::After(ms) = kill_at {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
            }
            // A round whose moment passes unseen (provisioning finished first)
            // still kills: it then checks the "complete" side.
            while !reached().await && !post.is_finished() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let _ = server.child.kill(); // SIGKILL
        let _ = server.child.wait();
        let _ = rt.block_on(post);
        let unfinished = rt.block_on(provisioning_rows(dir.path()));
        if !unfinished.is_empty() {
            cut_short += 1;
        }

        // After a restart the id is complete or absent; nothing is left half-made.
        let mut server = Server::start(command(dir.path(), &[]));
        let address = server.address.clone();
        rt.block_on(async {
            let admin = |method: Method, path: &str| {
                client
                    .request(method, format!("{address}{path}"))
                    .bearer_auth(ADMIN)
            };
            let pending: serde_json::Value = admin(Method::GET, "/api/admin/provisionings")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                pending["provisionings"],
                serde_json::json!([]),
                "round {round}"
            );
            let config = admin(Method::GET, &format!("/api/tenants/{id}/config"))
                .send()
                .await
                .unwrap()
                .status();
            if config == 404 {
                assert!(
                    !file.exists(),
                    "round {round}: {id} is absent but its file was left behind"
                );
                let retry = admin(Method::POST, "/api/admin/tenants")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(retry.status(), 201, "round {round}: retry of {id}");
            } else {
                assert_eq!(config, 200, "round {round}");
            }
            // Complete: its demo data is there.
            let products: serde_json::Value = client
                .get(format!("{address}/api/products"))
                .header("X-Tenant-ID", &id)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(
                products["items"].as_array().is_some_and(|a| !a.is_empty()),
                "round {round}: {products}"
            );
        });
        assert!(server.stop());
    }
    // The moments chosen by what the test saw land inside provisioning, so the
    // roll-back is exercised, not only the two ends.
    assert!(cut_short >= 1, "no kill landed inside a provisioning");
}

/// Writes an unfinished provisioning of `id` (on `dir/<id>.db`, made by it) into
/// the control database, claimed by `claimer`.
async fn insert_unfinished(dir: &Path, id: &str, claimer: &str) {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let file = dir.join(format!("{id}.db"));
    std::fs::write(&file, b"").unwrap();
    let db = Database::connect(format!(
        "sqlite://{}",
        dir.join("data").join("control.db").display()
    ))
    .await
    .unwrap();
    let now = chrono::Utc::now();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "INSERT INTO tenant_configs (id, database_url, domain, subdomain, branding, \
         contact_info, is_active, demo, isolation, state, claimed_by, storage, created_at, \
         updated_at) VALUES (?, ?, 'default', ?, '{}', '{}', true, false, 'database', \
         'provisioning', ?, 'new', ?, ?)",
        [
            id.into(),
            format!("sqlite://{}", file.display()).into(),
            id.into(),
            claimer.into(),
            now.into(),
            now.into(),
        ],
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
}

#[test]
fn an_operator_sees_unfinished_provisionings_and_rolls_them_back_with_the_cli_and_the_api() {
    let dir = dir_with_sqlite_tenant("demo");
    // A first start creates the control database.
    let mut server = Server::start(command(dir.path(), &[]));
    assert!(server.stop());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // One whose process on this host is gone, one under way on another host.
    rt.block_on(insert_unfinished(
        dir.path(),
        "crashed",
        &format!("{}/4194304/dead", host.trim()),
    ));
    rt.block_on(insert_unfinished(dir.path(), "remote", "elsewhere/1/live"));

    let (code, out, err) = run(dir.path(), &["tenants", "unfinished"]);
    assert_eq!(code, 0, "{err}");
    let line = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap_or("");
    assert!(line("crashed").contains("abandoned"), "{out}");
    assert!(line("remote").contains("under way"), "{out}");
    let (code, _, err) = run(dir.path(), &["tenants", "abandon", "remote"]);
    assert_ne!(
        code, 0,
        "a live provisioning is not rolled back without --force"
    );
    assert!(err.contains("under way"), "{err}");
    let (code, out, err) = run(dir.path(), &["tenants", "abandon", "crashed"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!dir.path().join("crashed.db").exists());

    // Start-up rolls back only what is abandoned: the remote one stays, for the
    // operator to see and, knowing better, to roll back through the API.
    let mut server = Server::start(command(dir.path(), &[]));
    let address = server.address.clone();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let admin = |method: Method, path: &str| {
            client
                .request(method, format!("{address}{path}"))
                .bearer_auth(ADMIN)
        };
        let pending: serde_json::Value = admin(Method::GET, "/api/admin/provisionings")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = pending["provisionings"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{pending}");
        assert_eq!(rows[0]["id"], "remote");
        assert_eq!(rows[0]["abandoned"], false);
        assert_eq!(rows[0]["made_storage"], true);
        let body = serde_json::json!({
            "id": "remote",
            "database_url": format!("sqlite://{}/remote.db", dir.path().display()),
        });
        let taken = admin(Method::POST, "/api/admin/tenants")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(taken.status(), 409);
        let refused = admin(Method::DELETE, "/api/admin/provisionings/remote")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 409);
        let forced = admin(Method::DELETE, "/api/admin/provisionings/remote?force=true")
            .send()
            .await
            .unwrap();
        assert_eq!(forced.status(), 204);
        assert!(!dir.path().join("remote.db").exists());
        let missing = admin(Method::DELETE, "/api/admin/provisionings/remote")
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let created = admin(Method::POST, "/api/admin/tenants")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    });
    assert!(server.stop());
}

#[test]
fn a_vanished_tenant_database_is_reported_not_recreated_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gone_dir");
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[tenants.gone]\ndatabase_url = 'sqlite://{}/gone.db?mode=rwc'\n\
             [tenants.steady]\ndatabase_url = 'sqlite://{}/steady.db'\n",
            data.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let envs = [("BREAKER_COOLDOWN_SECS", "1")];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let request = |address: &str, method: Method, tenant: &str| {
        let request = client
            .request(method.clone(), format!("{address}/api/products"))
            .header("X-Tenant-ID", tenant);
        let request = if method == Method::POST {
            request.json(&serde_json::json!({ "name": "kept", "price": 1.0 }))
        } else {
            request
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let backup = dir.path().join("gone.backup");

    let mut server = Server::start(command(dir.path(), &envs));
    let address = server.address.clone();
    rt.block_on(async {
        for tenant in ["gone", "steady"] {
            assert_eq!(request(&address, Method::POST, tenant).await.0, 201);
        }
        // A copy taken while nothing writes (the file and its write-ahead log): the
        // operator's backup.
        std::fs::create_dir_all(&backup).unwrap();
        for name in ["gone.db", "gone.db-wal"] {
            if data.join(name).exists() {
                std::fs::copy(data.join(name), backup.join(name)).unwrap();
            }
        }
        std::fs::remove_dir_all(&data).unwrap();
        // Writes and reads fail at once, with the service's 503, and make nothing.
        for method in [Method::POST, Method::GET, Method::POST] {
            let (status, body) = request(&address, method, "gone").await;
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("tenant_unavailable"), "{body}");
        }
        // Past the breaker's pause the tenant is tried again, and still refused.
        let past_pause = std::time::Instant::now() + Duration::from_millis(2500);
        while std::time::Instant::now() < past_pause {
            assert_eq!(request(&address, Method::GET, "gone").await.0, 503);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(request(&address, Method::GET, "steady").await.0, 200);
    });
    assert!(!data.exists(), "the vanished database was created again");
    assert!(server.stop());
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("has disappeared") && l.contains("gone") && l.contains("ERROR")),
        "{log}"
    );

    // A restart does not forget: still refused, still nothing made.
    let mut server = Server::start(command(dir.path(), &envs));
    let address = server.address.clone();
    rt.block_on(async {
        assert_eq!(request(&address, Method::GET, "gone").await.0, 503);
        assert!(
            !data.exists(),
            "the vanished database was created on restart"
        );
        // The operator restores the backup: the tenant answers with its data.
        std::fs::create_dir_all(&data).unwrap();
        for entry in std::fs::read_dir(&backup).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let body = loop {
            let (status, body) = request(&address, Method::GET, "gone").await;
            if status == 200 {
                break body;
            }
            assert!(std::time::Instant::now() < deadline, "{status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(body.contains("kept"), "{body}");
    });
    assert!(server.stop());
}
