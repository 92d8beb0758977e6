//! Black-box tests: the real application on port 0, real SQLite files in a temp
//! directory per test, and the real binary where the behaviour is about a process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod auth;
mod browser;
mod cash_flow;
mod connections;
mod console;
mod console_browser;
mod data;
mod dental;
mod deploy;
mod feature_gate;
mod helpers;
mod http_stack;
mod identification;
mod isolation;
mod lifecycle;
mod limits;
mod manufacturing;
mod metrics;
mod openapi;
mod pg;
mod pools;
mod postgres;
mod process;
mod products;
mod propagation;
mod settings;
mod single_tenant;
mod tenant_limits;
mod usage;
