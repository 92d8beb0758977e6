//! The shipped deployment files stay true to the service: every setting in
//! `deploy/tenant-router.env` is one the service reads, the file as shipped refuses
//! to start (no secret ships in it), and filled in it is a valid production
//! configuration.

use std::collections::HashMap;

use tenant_router::{Settings, settings::ENV_KEYS};

fn deploy_env() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tenant-router.env");
    std::fs::read_to_string(path)
        .expect("deploy/tenant-router.env")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn settings_from(pairs: &[(String, String)]) -> Result<Settings, String> {
    let mut map: HashMap<String, String> = pairs.iter().cloned().collect();
    map.insert("SETTINGS_FILE".into(), String::new());
    Settings::from_map(&map)
}

#[test]
fn every_setting_of_the_deploy_env_file_is_one_the_service_reads() {
    let env = deploy_env();
    assert!(env.len() > 10);
    for (key, _) in &env {
        assert!(ENV_KEYS.contains(&key.as_str()), "{key} is not a setting");
        // PORT is per replica (the unit sets it); in the shared file it would win.
        assert_ne!(key, "PORT");
    }
}

#[test]
fn the_shipped_env_file_refuses_to_start_until_its_secrets_are_filled_in() {
    let shipped = deploy_env();
    let err = settings_from(&shipped).expect_err("empty secrets must be refused");
    assert!(
        err.contains("ADMIN_TOKEN") || err.contains("JWT_SECRET"),
        "{err}"
    );

    let filled: Vec<(String, String)> = shipped
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "ADMIN_TOKEN" => (k, "a".repeat(48)),
            "JWT_SECRET" | "SECRET_KEY" => (k, "0f".repeat(32)),
            _ => (k, v),
        })
        .collect();
    let settings = settings_from(&filled).expect("a filled-in file is valid");
    assert!(settings.is_production());
    assert!(settings.trust_forwarded_for);
    assert_eq!(settings.auth_mode.as_str(), "jwt");
    assert!(settings.secret_box().is_ok(), "SECRET_KEY opens the box");
    assert!(tenant_router::auth::AuthService::from_settings(&settings).is_ok());
}

/// `key`, set by a deployment file, is a setting of the service, or the allocator's
/// `MIMALLOC_ALLOW_THP`, read before the service starts.
fn assert_read_by_the_process(key: &str) {
    assert!(
        ENV_KEYS.contains(&key) || key == "MIMALLOC_ALLOW_THP",
        "{key} is not a setting"
    );
}

fn deploy_file(name: &str) -> String {
    let path = format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `KEY: value` lines indented by `indent` spaces in the block that follows
/// the line `header` (our own YAML files, read line by line).
fn yaml_block(text: &str, header: &str, indent: usize) -> Vec<(String, String)> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != header).skip(1);
    let prefix = " ".repeat(indent);
    let mut pairs = Vec::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(&prefix) else {
            break;
        };
        if rest.starts_with(' ') {
            continue;
        }
        let (key, value) = rest.split_once(':').expect("KEY: value");
        pairs.push((
            key.trim().to_string(),
            value.trim().trim_matches('"').to_string(),
        ));
    }
    assert!(!pairs.is_empty(), "no block under {header:?}");
    pairs
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_the_binary_unprivileged_in_another() {
    let dockerfile = deploy_file("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].contains(" AS build"), "{stages:?}");
    assert!(
        stages[1].contains("-slim"),
        "a small runtime image: {stages:?}"
    );
    let runtime = dockerfile.split(stages[1]).nth(1).unwrap();
    // Unprivileged: a numeric user other than root, set before the entry point.
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "{user}"
    );
    assert!(
        user.split(':').all(|id| id.parse::<u32>().is_ok()),
        "{user}"
    );
    assert!(runtime.contains("HEALTHCHECK") && runtime.contains("/health"));
    // The build reads the repository's build settings (how SQLite is compiled).
    let build = dockerfile.split(stages[1]).next().unwrap();
    assert!(
        build.lines().any(|l| l == "COPY .cargo .cargo"),
        "the build stage does not copy .cargo/config.toml"
    );
    assert!(runtime.contains("COPY --from=build /usr/local/bin/tenant-router"));
    assert!(runtime.contains(r#"ENTRYPOINT ["/usr/local/bin/tenant-router"]"#));
    // What it copies exists, and every setting it sets is one the service reads.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
            assert!(
                path.exists(),
                "the Dockerfile copies {source}, which is missing"
            );
        }
    }
    let env_block: String = runtime
        .split("ENV ")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("USER"))
        .collect::<Vec<_>>()
        .join(" ");
    for pair in env_block.split_whitespace().filter(|w| w.contains('=')) {
        assert_read_by_the_process(pair.split('=').next().unwrap());
    }
    assert!(env_block.contains("MIMALLOC_ALLOW_THP=0"), "{env_block}");
    // The build context leaves out the build output and local data.
    let ignore = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore"))
        .expect(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target/") && ignore.lines().any(|l| l == "data/"));
}

#[test]
fn the_systemd_unit_reads_the_shared_env_file_and_turns_huge_pages_off() {
    let unit = deploy_file("tenant-router@.service");
    assert!(unit.contains("EnvironmentFile=/etc/tenant-router/tenant-router.env"));
    let set: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .collect();
    for pair in &set {
        assert_read_by_the_process(pair.split('=').next().unwrap());
    }
    assert!(set.contains(&"MIMALLOC_ALLOW_THP=0"), "{set:?}");
    assert!(set.contains(&"PORT=%i"), "{set:?}");
}

/// The value in seconds of an nginx directive written `name Ns;`.
fn nginx_seconds(conf: &str, directive: &str) -> u64 {
    conf.lines()
        .find_map(|l| l.trim().strip_prefix(directive)?.strip_prefix(' '))
        .and_then(|v| v.strip_suffix("s;"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{directive} Ns;`"))
}

#[test]
fn nginx_waits_longer_than_a_request_may_take_and_drops_idle_connections_first() {
    let settings = settings_from(&[]).expect("the defaults are valid");
    for file in ["nginx.conf", "compose.nginx.conf"] {
        let conf = deploy_file(file);
        // Otherwise a slow request gets nginx's own 504 page, not the service's 503.
        assert!(
            nginx_seconds(&conf, "proxy_read_timeout") > settings.http_request_timeout_secs,
            "{file}"
        );
        // Otherwise nginx reuses connections the replica has just closed.
        assert!(
            nginx_seconds(&conf, "keepalive_timeout") < settings.http_header_timeout_secs,
            "{file}"
        );
    }
}

#[test]
fn the_compose_file_runs_two_replicas_on_one_control_database_behind_nginx() {
    let compose = deploy_file("compose.yaml");
    for service in [
        "  postgres:",
        "  router1: &router",
        "  router2:",
        "  nginx:",
    ] {
        assert!(compose.lines().any(|l| l == service), "no {service}");
    }
    assert!(compose.contains("<<: *router"), "router2 is router1's copy");
    // The routers' settings are the service's, and valid in production once the
    // example's secrets are filled in.
    let router = compose.split("  router1: &router").nth(1).unwrap();
    let environment = yaml_block(router, "    environment:", 6);
    assert!(
        environment
            .iter()
            .any(|(k, v)| k == "APP_ENV" && v == "production")
    );
    let secrets: Vec<(String, String)> = deploy_file("compose.env.example")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    let router_env: Vec<(String, String)> = environment
        .iter()
        .cloned()
        .chain(
            secrets
                .iter()
                .filter(|(k, _)| k != "POSTGRES_PASSWORD")
                .cloned(),
        )
        .collect();
    for (key, _) in &router_env {
        assert!(ENV_KEYS.contains(&key.as_str()), "{key} is not a setting");
    }
    for (key, value) in &secrets {
        if key != "CONTROL_DATABASE_URL" {
            assert!(value.is_empty(), "the example ships a value for {key}");
        }
    }
    assert!(
        settings_from(&router_env).is_err(),
        "empty secrets are refused"
    );
    let filled: Vec<(String, String)> = router_env
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "ADMIN_TOKEN" => (k, "a".repeat(48)),
            "JWT_SECRET" | "SECRET_KEY" => (k, "0f".repeat(32)),
            _ => (k, v),
        })
        .collect();
    let settings = settings_from(&filled).expect("the compose settings are valid");
    assert!(settings.is_production());
    // nginx sends requests to both replicas.
    let nginx = deploy_file("compose.nginx.conf");
    assert!(nginx.contains("server router1:8000") && nginx.contains("server router2:8000"));
    assert!(compose.contains("./compose.nginx.conf:/etc/nginx/conf.d/default.conf:ro"));
    // Each replica has a volume of its own: its tenants file lists none, which a
    // SQLite tenant would be a different database on each (tenants go to
    // PostgreSQL through the admin API).
    let mount = "- ./compose.tenants.toml:/etc/tenant-router/tenants.toml:ro";
    assert_eq!(compose.matches(mount).count(), 2, "both routers mount it");
    let tenants = tenant_router::settings::parse_tenants_toml(&deploy_file("compose.tenants.toml"))
        .expect("the compose tenants file parses");
    assert!(tenants.is_empty(), "{} tenants", tenants.len());
}

#[test]
fn the_kubernetes_manifests_probe_health_and_readiness_and_keep_secrets_in_a_secret() {
    let configmap = deploy_file("k8s/configmap.yaml");
    let data = yaml_block(&configmap, "data:", 2);
    for (key, value) in &data {
        if key == "tenants.toml" {
            continue;
        }
        assert!(ENV_KEYS.contains(&key.as_str()), "{key} is not a setting");
        for secret in [
            "ADMIN_TOKEN",
            "JWT_SECRET",
            "SECRET_KEY",
            "CONTROL_DATABASE_URL",
        ] {
            assert_ne!(key, secret, "a secret in the ConfigMap");
        }
        assert!(!value.contains("postgres://"), "{key}");
    }
    // The ConfigMap's settings with the Secret's keys make a valid production
    // configuration.
    let mut settings: Vec<(String, String)> = data
        .into_iter()
        .filter(|(k, _)| k != "tenants.toml")
        .collect();
    settings.extend([
        ("ADMIN_TOKEN".to_string(), "a".repeat(48)),
        ("JWT_SECRET".to_string(), "0f".repeat(32)),
        ("SECRET_KEY".to_string(), "0f".repeat(32)),
        (
            "CONTROL_DATABASE_URL".to_string(),
            "postgres://u:p@db:5432/control?sslmode=require".to_string(),
        ),
    ]);
    assert!(settings_from(&settings).unwrap().is_production());

    let deployment = deploy_file("k8s/deployment.yaml");
    for needle in [
        "kind: Deployment",
        "livenessProbe:",
        "readinessProbe:",
        "path: /health",
        "path: /ready",
        "configMapRef:",
        "secretRef:",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
    ] {
        assert!(deployment.contains(needle), "the Deployment lacks {needle}");
    }
    // The readiness probe asks /ready, the liveness probe /health.
    let readiness = deployment.split("readinessProbe:").nth(1).unwrap();
    assert!(
        readiness
            .trim_start()
            .starts_with("httpGet:\n              path: /ready")
    );
    let liveness = deployment.split("livenessProbe:").nth(1).unwrap();
    assert!(
        liveness
            .trim_start()
            .starts_with("httpGet:\n              path: /health")
    );
    assert!(deploy_file("k8s/pdb.yaml").contains("kind: PodDisruptionBudget"));
    assert!(deploy_file("k8s/service.yaml").contains("kind: Service"));
}
