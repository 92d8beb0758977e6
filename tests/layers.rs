//! The layers of `src/` (see ARCHITECTURE.md), checked on every test run: each
//! top-level module belongs to one layer, imports only from its own layer and the
//! ones below, the top-level modules form no cycle, and nothing below the HTTP layer
//! names axum, hyper, tower or `AppState`.
//!
//! The check reads the source text: `crate::` paths (including `use crate::{a, b}`
//! groups) outside `#[cfg(test)]` code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Bottom to top. A module may use modules of its own layer and of the layers
/// before it.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "types",
        &["tenant", "secret", "error", "entities", "validate"],
    ),
    ("configuration", &["settings", "telemetry"]),
    ("connections", &["db", "registry", "control"]),
    ("auth", &["auth"]),
    (
        "operations",
        &[
            "audit",
            "demo",
            "fleet",
            "lifecycle",
            "limits",
            "metrics",
            "usage",
        ],
    ),
    ("http", &["http"]),
    ("entry", &["startup", "cli"]),
];

/// The layer from which transport types may be named.
const HTTP_LAYER: &str = "http";

/// Names that tie code to the HTTP stack.
const HTTP_NAMES: &[&str] = &["axum", "hyper", "tower", "tower_http", "AppState"];

#[test]
fn the_modules_of_src_form_one_way_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_sources(&src);
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "the layers of src/ are broken (see ARCHITECTURE.md):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_check_finds_a_cycle_an_upward_import_and_an_axum_import() {
    let files = vec![
        ("tenant/mod.rs".to_string(), "use crate::db::Pool;".to_string()),
        (
            "db/mod.rs".to_string(),
            "use crate::{tenant::TenantId, error::AppError};\nuse axum::Json;".to_string(),
        ),
        (
            "error.rs".to_string(),
            "// crate::http is only mentioned here\nfn f() {}\n#[cfg(test)]\nmod tests { use crate::http; }"
                .to_string(),
        ),
        ("newcomer.rs".to_string(), String::new()),
    ];
    let problems = check(&files).join("\n");
    assert!(
        problems.contains("tenant (types) imports db (connections)"),
        "{problems}"
    );
    assert!(problems.contains("cycle: db -> tenant -> db"), "{problems}");
    assert!(problems.contains("db/mod.rs names axum"), "{problems}");
    assert!(problems.contains("newcomer is in no layer"), "{problems}");
    assert!(
        !problems.contains("error (types) imports http"),
        "{problems}"
    );
}

/// Every `.rs` file under `src`, as (path relative to `src`, text).
fn read_sources(src: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The problems found, one line each.
fn check(files: &[(String, String)]) -> Vec<String> {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, modules))| modules.iter().map(move |m| (*m, i)))
        .collect();
    let http = LAYERS
        .iter()
        .position(|(name, _)| *name == HTTP_LAYER)
        .unwrap();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let module = top_module(path);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&layer) = layer_of.get(module.as_str()) else {
            problems.push(format!(
                "{module} is in no layer: add it to LAYERS and ARCHITECTURE.md"
            ));
            continue;
        };
        let code = code_of(text);
        let targets = edges.entry(module.clone()).or_default();
        for target in crate_paths(&code) {
            if target == module || !layer_of.contains_key(target.as_str()) {
                continue;
            }
            targets.insert(target);
        }
        if layer < http {
            for name in HTTP_NAMES {
                if mentions(&code, name) {
                    problems.push(format!("{path} names {name}, below the HTTP layer"));
                }
            }
        }
    }
    for (module, targets) in &edges {
        let layer = layer_of[module.as_str()];
        for target in targets {
            let other = layer_of[target.as_str()];
            if other > layer {
                problems.push(format!(
                    "{module} ({}) imports {target} ({}), a layer above it",
                    LAYERS[layer].0, LAYERS[other].0
                ));
            }
        }
    }
    for cycle in cycles(&edges) {
        problems.push(format!("cycle: {}", cycle.join(" -> ")));
    }
    problems
}

/// `tenant/registry.rs` → `tenant`, `error.rs` → `error`.
fn top_module(path: &str) -> String {
    let first = path.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// The text without comments and without the `#[cfg(test)]` item and what follows
/// it (test modules come last in this codebase).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path, expanding `crate::{a::x, b}` groups.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    out.extend(first_ident(&item));
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else if depth == 1 {
                    item.push(c);
                } else if item.trim().is_empty() {
                    // Nested group at the start of an item: not a module name.
                } else {
                    item.push(c);
                }
            }
        } else {
            out.extend(first_ident(after));
        }
        rest = after;
    }
    out
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

/// Whether `name` occurs as a whole identifier.
fn mentions(code: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(name).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Each cycle among the modules, as a path that returns to its start (one per
/// strongly connected component of more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for start in edges.keys() {
        if reported.contains(start) {
            continue;
        }
        if let Some(path) = path_back(edges, start) {
            reported.extend(path.iter().cloned());
            out.push(path);
        }
    }
    out
}

/// A shortest path from `start` back to itself, if there is one (breadth first).
fn path_back(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in edges.get(node).into_iter().flatten() {
            if next == start {
                let mut back = Vec::new();
                let mut at = node;
                while at != start {
                    back.push(at.to_string());
                    at = previous[at];
                }
                back.reverse();
                let mut path = vec![start.to_string()];
                path.extend(back);
                path.push(start.to_string());
                return Some(path);
            }
            if !previous.contains_key(next.as_str()) && next != start {
                previous.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}
