//! The `tenant-router` binary: settings, logging, build, serve until a signal.

use std::process::ExitCode;

use clap::Parser;
use tenant_router::{
    Application, Settings,
    cli::{self, Cli, Command},
    telemetry,
};

/// glibc's allocator spent about a tenth of a request's CPU in locks and
/// consolidation under load (`perf`); mimalloc keeps per-thread heaps. Built without
/// its huge-page advice (`no_thp` in Cargo.toml), so a thread's heap costs pages, not
/// a 2 MiB huge page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "tenant-router: {}",
                tenant_router::secret::redact(&e.to_string())
            );
            return ExitCode::from(2);
        }
    };
    match cli.command {
        None | Some(Command::Serve) => serve(settings).await,
        Some(Command::Tenants(command)) => {
            // Commands print their results; the log says only what went wrong.
            telemetry::init("warn", false);
            cli::tenants(settings, command).await
        }
        Some(Command::Migrate(args)) => {
            telemetry::init("warn", false);
            cli::migrate(settings, args).await
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    telemetry::init(&settings.log_level, settings.log_json().unwrap_or(false));
    keep_running_on_sighup(settings.multi_tenant_enabled);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("start-up failed");
            eprintln!(
                "tenant-router: {}",
                tenant_router::secret::redact(&e.to_string())
            );
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown_signal();
    match app.local_addr() {
        Ok(addr) => tracing::info!(%addr, "listening"),
        Err(e) => tracing::warn!(error = %e, "listening on an unknown address"),
    }
    if let Err(e) = app.run_until(shutdown).await {
        eprintln!(
            "tenant-router: server error: {}",
            tenant_router::secret::redact(&e.to_string())
        );
        return ExitCode::FAILURE;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Installs the Ctrl-C and SIGTERM handlers now, and returns a future that
/// completes on either. Installed before "listening" is logged, so that a signal
/// sent as soon as the server says it listens is handled, not fatal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut interrupt, mut terminate) = signals;
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let terminate = async {
                match terminate.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = interrupt => {},
                _ = terminate => {},
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    }
}

/// SIGHUP reloads the tenants (`systemctl reload`, the shipped unit's
/// `ExecReload`): a hangup must never end the process, as its default action
/// does. Taken over before start-up, so that one arriving while the service
/// starts is ignored; in single-tenant mode, which has no tenants to reload, for
/// good. (The multi-tenant reload listens from the end of start-up on.)
fn keep_running_on_sighup(multi_tenant: bool) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take over SIGHUP: a hangup ends the process");
                return;
            }
        };
        // Dropped in multi-tenant mode: the handler stays installed, the reload's
        // own listener takes each hangup from then on.
        if !multi_tenant {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP ignored: a single-tenant service has no tenants to reload"
                    );
                }
            });
        }
    }
}
