//! Building the application from settings and serving it.

use std::{fmt, future::Future, net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;

use crate::{
    control::ControlStore,
    http::{AppState, AppStateInner},
    lifecycle::{self, Lifecycle},
    registry::TenantRegistry,
    secret::Secret,
    settings::Settings,
    tenant::ConfigError,
};

/// Why the service could not start.
#[derive(Debug)]
pub enum StartupError {
    Settings(String),
    Tenants(Vec<ConfigError>),
    /// The control database could not be opened (the detail is already scrubbed).
    Control(String),
    /// The address (`HOST`, `PORT`) could not be listened on.
    Bind {
        host: String,
        port: u16,
        error: std::io::Error,
    },
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Settings(m) => write!(f, "invalid settings: {m}"),
            Self::Tenants(errors) => {
                write!(f, "invalid tenant configuration:")?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
            Self::Control(m) => write!(
                f,
                "cannot open the control database (CONTROL_DATABASE_URL): {m}"
            ),
            Self::Bind { host, port, error } => {
                write!(f, "cannot listen on HOST={host} PORT={port}: {error}")
            }
        }
    }
}

impl std::error::Error for StartupError {}

/// A built, bound application, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    header_timeout: std::time::Duration,
    answer_timeout: std::time::Duration,
}

impl Application {
    /// Loads tenants, builds the registry (opening no pool) and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let (tenants, single_tenant, control) = if settings.multi_tenant_enabled {
            let base = settings.load_tenants().map_err(StartupError::Tenants)?;
            let secrets = Arc::new(settings.secret_box().map_err(StartupError::Settings)?);
            let control = ControlStore::open(settings.control_database_url.expose(), secrets)
                .await
                .map_err(|e| StartupError::Control(crate::db::redact_error(&e)))?;
            let (rows, errors) = control
                .load()
                .await
                .map_err(|e| StartupError::Control(crate::db::redact_error(&e)))?;
            for e in errors {
                tracing::error!(error = %e, "control database tenant left out");
            }
            let hidden = lifecycle::conflicts(&base, &rows);
            if !hidden.is_empty() {
                return Err(StartupError::Tenants(hidden));
            }
            let tenants = lifecycle::merge(&base, rows);
            if tenants.is_empty() {
                tracing::warn!("no tenants are configured; every tenant request will be refused");
            }
            (tenants, None, Some((control, base)))
        } else {
            let single = settings.single_tenant();
            (vec![single.clone()], Some(Arc::new(single)), None)
        };
        tracing::info!(
            tenants = tenants.len(),
            multi_tenant = settings.multi_tenant_enabled,
            "tenant registry loaded"
        );

        let admin_token = match &settings.admin_token {
            Some(token) => token.clone(),
            None => {
                let token = crate::secret::generate_token();
                // Logged once, on purpose: it is the only way the operator learns it.
                tracing::warn!("ADMIN_TOKEN is not set; the admin token for this run is {token}");
                Secret::new(token)
            }
        };

        let auth = Arc::new(
            crate::auth::AuthService::from_settings(&settings).map_err(StartupError::Settings)?,
        );
        let registry = TenantRegistry::new(tenants, settings.pools());
        registry.set_initialiser(Arc::new(crate::demo::DemoSeed {
            demo_login: !settings.is_production(),
        }));
        if let Some((control, _)) = &control {
            registry.set_ledger(Arc::new(control.clone()));
        }
        let lifecycle = control.map(|(control, base)| {
            let lifecycle = Arc::new(Lifecycle::new(
                registry.clone(),
                control,
                base,
                settings.pools(),
                settings.identification().ignored_subdomains,
            ));
            if settings.control_poll_secs > 0 {
                lifecycle::spawn_poller(
                    Arc::downgrade(&lifecycle),
                    std::time::Duration::from_secs(settings.control_poll_secs),
                );
            }
            lifecycle::spawn_change_listener(Arc::downgrade(&lifecycle));
            lifecycle::spawn_reload_on_sighup(Arc::downgrade(&lifecycle), settings.clone());
            lifecycle
        });
        if let Some(lifecycle) = &lifecycle {
            // Provisionings that a crash cut short: drop what they made, free the ids.
            match lifecycle.recover().await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::warn!(tenants = ?ids, "rolled back unfinished provisionings")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %crate::db::redact_error(&e), "cannot read unfinished provisionings")
                }
            }
            // Moves whose process died before the switch: their tenants take
            // writes again before this replica serves (each bounded: a source
            // server that does not answer is left for the next start or the
            // operator).
            if let Err(e) = lifecycle.release_cut_short_moves().await {
                tracing::error!(error = %crate::db::redact_error(&e), "cannot read the moves on record")
            }
        }
        if lifecycle.is_none() && settings.tenant_storage_quota_bytes > 0 {
            // Usage is metered into the control database, which single-tenant mode
            // does not open.
            tracing::warn!(
                "TENANT_STORAGE_QUOTA_BYTES has no effect in single-tenant mode: usage and quotas need MULTI_TENANT_ENABLED=true"
            );
        }
        let usage = lifecycle.as_ref().map(|lifecycle| {
            let meter = Arc::new(crate::usage::UsageMeter::new(
                lifecycle.control().clone(),
                registry.clone(),
                settings.tenant_storage_quota_bytes,
            ));
            crate::usage::spawn_flusher(
                Arc::downgrade(&meter),
                std::time::Duration::from_secs(settings.usage_flush_secs),
            );
            meter
        });
        let metrics = Arc::new(crate::metrics::Metrics::new(
            settings.metrics_max_tenants,
            settings.metrics_enabled,
        ));
        registry.set_events(metrics.clone());
        let state = AppState::new(AppStateInner {
            registry,
            identify: Arc::new(settings.identification()),
            single_tenant,
            console: Arc::new(crate::auth::console::ConsoleSessions::new(&admin_token)),
            fleet: Arc::new(crate::fleet::FleetJobs::new()),
            admin_token: Arc::new(admin_token),
            lifecycle,
            auth,
            writes: Arc::default(),
            limits: Arc::new(crate::limits::TenantLimiter::new(
                crate::limits::LimitDefaults {
                    rate_limit_per_sec: settings.tenant_rate_limit_per_sec,
                    rate_limit_burst: settings.tenant_rate_limit_burst,
                    max_concurrent_requests: settings.tenant_max_concurrent_requests,
                },
            )),
            metrics,
            usage,
        });
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .await
            .map_err(|error| StartupError::Bind {
                host: settings.host.clone(),
                port: settings.port,
                error,
            })?;
        let router = crate::http::router(
            state.clone(),
            crate::http::stack::StackOptions {
                body_timeout: std::time::Duration::from_secs(settings.http_body_timeout_secs),
                request_timeout: std::time::Duration::from_secs(settings.http_request_timeout_secs),
                cors_origins: settings.cors_origins().map_err(StartupError::Settings)?,
                observer: None,
            },
        );
        Ok(Self {
            header_timeout: std::time::Duration::from_secs(settings.http_header_timeout_secs),
            answer_timeout: std::time::Duration::from_secs(settings.http_send_timeout_secs),
            listener,
            router,
            state,
        })
    }

    /// The address actually bound (the port is chosen by the OS when `PORT=0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and
    /// closes every tenant pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let registry = self.state.registry.clone();
        let writes = self.state.writes.clone();
        crate::http::server::serve(
            self.listener,
            self.router,
            self.header_timeout,
            self.answer_timeout,
            shutdown,
        )
        .await;
        // Writes whose clients left run on detached; let them finish with their
        // audit rows before the pools close.
        writes.wait_idle(std::time::Duration::from_secs(30)).await;
        // This replica's last counts, measured while the pools are still open.
        if let Some(usage) = &self.state.usage {
            usage.flush().await;
        }
        registry.close_all().await;
        Ok(())
    }
}
