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
