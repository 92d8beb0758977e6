//! PostgreSQL for the tests: the shared server from `TEST_DATABASE_URL` (started by
//! `scripts/test.sh`), and throwaway clusters a test starts for itself when it needs
//! a server of its own (a small `max_connections`).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use sea_orm::{ConnectionTrait, DatabaseConnection};

/// The shared test server. The suite needs one: run it through `scripts/test.sh`.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the suite with ./scripts/test.sh, which starts PostgreSQL",
    )
}

/// `base` with its database replaced by `name`.
pub fn url_with_database(base: &str, name: &str) -> String {
    let mut url = url::Url::parse(base).expect("database URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A database name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub async fn connect(url: &str) -> DatabaseConnection {
    tenant_router::db::connect(url)
        .await
        .expect("connect to test PostgreSQL")
}

/// Runs `sql` on the server's maintenance database.
pub async fn admin_execute(base: &str, sql: &str) {
    let db = connect(&url_with_database(base, "postgres")).await;
    db.execute_unprepared(sql).await.expect(sql);
    db.close().await.expect("close");
}

/// Creates a fresh database on the shared server and returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    let base = server_url();
    let name = unique_name(prefix);
    admin_execute(&base, &format!("CREATE DATABASE \"{name}\"")).await;
    url_with_database(&base, &name)
}

/// A PostgreSQL cluster of a test's own, on 127.0.0.1, removed when dropped.
pub struct PgCluster {
    pub url: String,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test.sh installs it)")
        .map(|e| e.expect("entry").path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program as the `postgres` user when we are root (it refuses
/// to run as root).
fn pg_command(program: PathBuf) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl PgCluster {
    pub fn start(max_connections: u32) -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("tenant-router-test-pg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let output = pg_command(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "router", "--auth=trust", "-E", "UTF8"])
            .output()
            .expect("initdb");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let mut cluster = Self {
            url: format!("postgres://router:cluster-pw@127.0.0.1:{port}/postgres"),
            port,
            dir,
            bin,
        };
        cluster.pg_ctl_start(max_connections);
        cluster
    }

    fn pg_ctl_start(&mut self, max_connections: u32) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections={max_connections} \
             -c superuser_reserved_connections=0 -c fsync=off -c synchronous_commit=off \
             -c wal_level=logical -c max_wal_size=64MB -c min_wal_size=32MB",
            self.port,
            self.dir.path().display()
        );
        let status = pg_command(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start", "-o", &options])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed: {}", self.log());
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server at once (`-m immediate`); also done when dropped.
    pub fn stop(&self) {
        let _ = pg_command(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
