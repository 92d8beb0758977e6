//! `spawn_app()` and a small client: one fresh app and data directory per test.

use std::{collections::HashMap, path::PathBuf};

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tempfile::TempDir;
use tenant_router::{Application, Settings};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The key sealing database URLs in the tests' control databases.
pub const TEST_SECRET_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// One tenant of a test's `tenants.toml`.
pub struct Tenant {
    pub id: String,
    pub domain: &'static str,
    /// Extra TOML lines for the entry (`is_active = false`, `features = [...]`).
    pub extra: String,
}

impl Tenant {
    pub fn new(id: &str, domain: &'static str) -> Self {
        Self {
            id: id.to_string(),
            domain,
            extra: String::new(),
        }
    }

    pub fn with(mut self, line: &str) -> Self {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }
}

/// Where a test's tenants keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file per tenant under the test's temp directory.
    Sqlite,
    /// A PostgreSQL database per tenant on the test server.
    PgDatabase,
    /// A schema per tenant in one PostgreSQL database of the test's own.
    PgSchema,
}

/// Generates, for each named `async fn(Backend)`, a test per backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await } )*
        }
        mod pg_database {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::PgDatabase).await } )*
        }
        mod pg_schema {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::PgSchema).await } )*
        }
    };
}

/// What a test's app is started with.
pub struct AppSpec {
    pub tenants: Vec<Tenant>,
    pub env: Vec<(String, String)>,
    pub backend: Backend,
    /// A whole tenants file, written instead of `tenants`' entries.
    pub raw_toml: Option<String>,
}

impl AppSpec {
    pub fn new(tenants: Vec<Tenant>) -> Self {
        Self {
            tenants,
            env: Vec::new(),
            backend: Backend::Sqlite,
            raw_toml: None,
        }
    }

    /// Tenants given as the text of a tenants file.
    pub fn from_toml(text: &str) -> Self {
        let mut spec = Self::new(Vec::new());
        spec.raw_toml = Some(text.to_string());
        spec
    }

    pub fn on(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Every tenant route needs a token or API key (`AUTH_MODE=jwt`), signed with
    /// [`TEST_JWT_SECRET`].
    pub fn with_auth(self) -> Self {
        self.env("AUTH_MODE", "jwt")
            .env("JWT_SECRET", TEST_JWT_SECRET)
    }
}

/// The key the tests' tokens are signed with (AppSpec::with_auth).
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
}

/// The standard three tenants: a dental clinic, a manufacturer and a demo.
pub fn standard_tenants() -> Vec<Tenant> {
    vec![
        Tenant::new("dental_clinic_abc", "dental"),
        Tenant::new("acme_manufacturing", "manufacturing"),
        Tenant::new("demo", "default"),
    ]
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppSpec::new(standard_tenants())).await
}

pub async fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_app_with(AppSpec::new(standard_tenants()).on(backend)).await
}

/// Where the tenants of one app keep their data.
pub enum Storage {
    Sqlite(PathBuf),
    /// Database names get this prefix, so that tests never share one.
    PgDatabase {
        server: String,
        prefix: String,
    },
    /// The one database all schema-mode tenants share.
    PgSchema {
        database_url: String,
    },
}

impl Storage {
    pub async fn new(backend: Backend, data_dir: PathBuf) -> Self {
        match backend {
            Backend::Sqlite => Storage::Sqlite(data_dir),
            Backend::PgDatabase => Storage::PgDatabase {
                server: crate::pg::server_url(),
                prefix: crate::pg::unique_name("trt"),
            },
            Backend::PgSchema => Storage::PgSchema {
                database_url: crate::pg::fresh_database("trs").await,
            },
        }
    }

    /// The `database_url` (and `isolation`) lines of a tenant's entry.
    pub fn url_lines(&self, id: &str) -> String {
        match self {
            Storage::Sqlite(dir) => {
                format!("database_url = \"sqlite://{}/{id}.db\"\n", dir.display())
            }
            Storage::PgDatabase { server, prefix } => format!(
                "database_url = \"{}\"\n",
                crate::pg::url_with_database(server, &format!("{prefix}_{id}"))
            ),
            Storage::PgSchema { database_url } => {
                format!("database_url = \"{database_url}\"\nisolation = \"schema\"\n")
            }
        }
    }
}

/// The TOML entry of `tenant`.
pub fn tenant_toml(tenant: &Tenant, storage: &Storage) -> String {
    format!(
        "[tenants.{id}]\n{url}domain = \"{domain}\"\n\
         branding = {{ company_name = \"{id} Ltd\", primary_color = \"#2E86AB\" }}\n\
         contact_info = {{ email = \"info@{id}.example\" }}\n{extra}\n",
        id = tenant.id,
        url = storage.url_lines(&tenant.id),
        domain = tenant.domain,
        extra = tenant.extra,
    )
}

pub async fn spawn_app_with(spec: AppSpec) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let tenants_file = dir.path().join("tenants.toml");
    let storage = Storage::new(spec.backend, data_dir.clone()).await;
    let toml: String = match &spec.raw_toml {
        Some(text) => text.clone(),
        None => spec
            .tenants
            .iter()
            .map(|t| tenant_toml(t, &storage))
            .collect(),
    };
    std::fs::write(&tenants_file, toml).expect("write tenants.toml");

    let mut env: HashMap<String, String> = HashMap::from([
        ("PORT".into(), "0".into()),
        ("SETTINGS_FILE".into(), String::new()),
        ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("TENANTS_FILE".into(), tenants_file.display().to_string()),
        (
            "DATABASE_URL".into(),
            format!("sqlite://{}/single.db", data_dir.display()),
        ),
        (
            "CONTROL_DATABASE_URL".into(),
            format!("sqlite://{}/control/control.db", dir.path().display()),
        ),
        ("SECRET_KEY".into(), TEST_SECRET_KEY.into()),
        // Suites other than auth.rs test other things; AppSpec::with_auth turns it on.
        ("AUTH_MODE".into(), "none".into()),
    ]);
    if spec.backend != Backend::Sqlite {
        env.insert("AUTO_CREATE_DATABASES".into(), "true".into());
    }
    env.extend(spec.env);
    let settings = Settings::from_map(&env).expect("settings");
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr().expect("bound"));
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        dir,
    }
}

impl TestApp {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Files under the data directory (empty if it does not exist).
    pub fn data_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.data_dir()) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.address, path))
    }

    /// A request identified by the `X-Tenant-ID` header.
    pub fn as_tenant(&self, method: Method, tenant: &str, path: &str) -> RequestBuilder {
        self.request(method, path).header("X-Tenant-ID", tenant)
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn create_product(&self, tenant: &str, name: &str, price: f64) -> Value {
        let response = self
            .as_tenant(Method::POST, tenant, "/api/products")
            .json(&serde_json::json!({ "name": name, "price": price }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create product for {tenant}");
        response.json().await.unwrap()
    }

    /// Names of the products a request (however identified) lists.
    pub async fn product_names(&self, request: RequestBuilder) -> Vec<String> {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Adds a user to `tenant` through the operator route; returns its id.
    pub async fn add_user(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
        role: &str,
    ) -> String {
        let response = self
            .admin(Method::POST, &format!("/api/admin/tenants/{tenant}/users"))
            .json(&serde_json::json!({ "username": username, "password": password, "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "add user {username} to {tenant}");
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// Logs in to `tenant` (by header) and returns the access token.
    pub async fn login(&self, tenant: &str, username: &str, password: &str) -> String {
        let response = self
            .as_tenant(Method::POST, tenant, "/api/auth/login")
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login {username}@{tenant}");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn pool_stats(&self) -> Value {
        let response = self
            .admin(Method::GET, "/api/admin/pools")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// Asserts the documented error shape and returns the body.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status for expected {code}");
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body
}

/// Held by the tests that load the machine most (the thousand-tenant load, the
/// moves with their writers and servers, the browser): one at a time, in this process or in
/// another (nextest runs each test in a process of its own), so that on two cores
/// none starves another past its deadlines. Released when dropped.
pub async fn heavy_test() -> std::fs::File {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/heavy-tests.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("the heavy-test lock file");
        file.lock().expect("the heavy-test lock");
        file
    })
    .await
    .unwrap()
}
