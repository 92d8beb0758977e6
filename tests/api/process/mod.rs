//! The real binary, where the behaviour is about a process: starting and stopping
//! ([`startup`]), secrets in logs ([`secrets`]), the command line ([`cli`]),
//! memory ([`memory`]), log lines ([`logs`]), SIGKILL at any moment ([`crashes`]) and what an operator
//! does after trouble ([`recovery`]). Shared here: starting the binary and
//! reading its output.

mod cli;
mod crashes;
mod logs;
mod memory;
mod moves;
mod recovery;
mod secrets;
mod startup;

use std::{
    io::{BufRead, BufReader},
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
        // Line by line, so that a test can wait for a line while the server runs.
        let follow = |mut from: Box<dyn BufRead + Send>, log: Arc<Mutex<String>>| {
            std::thread::spawn(move || {
                let mut line = String::new();
                while from.read_line(&mut line).is_ok_and(|n| n > 0) {
                    log.lock().unwrap().push_str(&line);
                    line.clear();
                }
            })
        };
        let err_reader = follow(Box::new(BufReader::new(stderr)), err_log);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut address = None;
        let mut line = String::new();
        while address.is_none() {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                panic!("server exited before listening: {}", log.lock().unwrap());
            }
            log.lock().unwrap().push_str(&line);
            // `addr=127.0.0.1:1234` in text logs, `"addr":"127.0.0.1:1234"` in JSON.
            if let Some(pos) = line.find("addr=") {
                address = Some(format!("http://{}", line[pos + 5..].trim()));
            } else if let Some(pos) = line.find("\"addr\":\"") {
                let rest = &line[pos + 8..];
                address = rest.find('"').map(|end| format!("http://{}", &rest[..end]));
            }
        }
        let out_reader = follow(Box::new(stdout), log.clone());
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

    /// Waits up to 10 s for `text` to appear in the output; whether it did.
    fn wait_for_log(&self, text: &str) -> bool {
        for _ in 0..200 {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
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
