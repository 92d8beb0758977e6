//! Prometheus metrics (`GET /metrics`): requests and their latency per tenant and
//! route pattern, counted as they happen, and the connection layer's and the
//! registry's counters, read at each scrape.
//!
//! The series stay bounded however many tenants there are: the first
//! `METRICS_MAX_TENANTS` tenants seen get series of their own, every later one is
//! counted under `tenant="other"`, and only a tenant the registry settled gets a
//! label at all (a request naming an unknown tenant counts as `tenant="none"`), so
//! a client cannot make series by inventing ids. Routes are the route table's
//! patterns (`/api/products/{id}`), or `unmatched`.

use std::{collections::HashSet, sync::RwLock, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{db::pool::ServerStats, registry::TenantRegistry};

/// The label of requests of no settled tenant.
pub const NO_TENANT: &str = "none";
/// The label of the tenants past the cap.
pub const OTHER_TENANTS: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tenant: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    tenant: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    tenant: String,
    outcome: String,
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Succeeded,
    /// Wrong password, unknown or inactive user.
    Failed,
    /// Refused before checking: too many failures (429).
    Throttled,
}

impl LoginOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Throttled => "throttled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 4 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// The metrics of one process.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    logins: Family<LoginLabels, Counter>,
    limit_refusals: Family<TenantLabels, Counter>,
    breaker_trips: Family<TenantLabels, Counter>,
    /// The tenants whose breaker tripped since start-up (by id): each gets a
    /// `tenant_breaker_open` gauge, 0 or 1.
    tripped: RwLock<HashSet<String>>,
    tenant_opens: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    migrations_pending: Family<TenantLabels, Gauge>,
    /// Each tenant's answered requests and 5xx answers, for the admin console's
    /// rates (not exported: `requests` has them by route).
    answered: Family<TenantLabels, Counter>,
    failed: Family<TenantLabels, Counter>,
    labelled: RwLock<HashSet<String>>,
    max_tenants: usize,
    enabled: bool,
}

impl Metrics {
    /// Metrics that give at most `max_tenants` tenants series of their own;
    /// `enabled: false` counts nothing (`METRICS_ENABLED=false`).
    pub fn new(max_tenants: usize, enabled: bool) -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            logins: Family::default(),
            limit_refusals: Family::default(),
            breaker_trips: Family::default(),
            tripped: RwLock::new(HashSet::new()),
            tenant_opens: Family::new_with_constructor(latency_histogram),
            migrations_pending: Family::default(),
            answered: Family::default(),
            failed: Family::default(),
            labelled: RwLock::new(HashSet::new()),
            max_tenants,
            enabled,
        }
    }

    /// Whether requests are counted and `/metrics` answers.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The label for `tenant`: its id while under the cap, else `other`.
    fn tenant_label(&self, tenant: Option<&str>) -> String {
        let Some(id) = tenant else {
            return NO_TENANT.to_string();
        };
        let known = self
            .labelled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id);
        if known {
            return id.to_string();
        }
        let mut labelled = self.labelled.write().unwrap_or_else(|p| p.into_inner());
        if labelled.contains(id) || labelled.len() < self.max_tenants {
            labelled.insert(id.to_string());
            id.to_string()
        } else {
            OTHER_TENANTS.to_string()
        }
    }

    /// Counts one finished request: its tenant (`None`: not settled), route
    /// pattern, status and time taken.
    pub fn observe(&self, tenant: Option<&str>, route: &str, status: u16, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let tenant = self.tenant_label(tenant);
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let of_tenant = TenantLabels {
            tenant: tenant.clone(),
        };
        self.answered.get_or_create(&of_tenant).inc();
        if class == "5xx" {
            self.failed.get_or_create(&of_tenant).inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                tenant: tenant.clone(),
                route: route.to_string(),
                status: class.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                tenant,
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The requests `tenant` has had answered since start-up and how many of them
    /// got a 5xx; `None` when it has no series of its own (past the cap) or
    /// metrics are off.
    pub fn tenant_totals(&self, tenant: &str) -> Option<(u64, u64)> {
        if !self.enabled {
            return None;
        }
        let known = self
            .labelled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(tenant);
        if !known {
            return (self
                .labelled
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len()
                < self.max_tenants)
                .then_some((0, 0));
        }
        let labels = TenantLabels {
            tenant: tenant.to_string(),
        };
        let answered = self.answered.get(&labels).map_or(0, |c| c.get());
        let failed = self.failed.get(&labels).map_or(0, |c| c.get());
        Some((answered, failed))
    }

    /// Counts one login attempt of `tenant`.
    pub fn login(&self, tenant: &str, outcome: LoginOutcome) {
        if !self.enabled {
            return;
        }
        self.logins
            .get_or_create(&LoginLabels {
                tenant: self.tenant_label(Some(tenant)),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
    }

    /// A request of `tenant` refused by its rate or concurrency limit (429).
    pub fn limit_refused(&self, tenant: &str) {
        if !self.enabled {
            return;
        }
        self.limit_refusals
            .get_or_create(&TenantLabels {
                tenant: self.tenant_label(Some(tenant)),
            })
            .inc();
    }

    /// Everything, in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self, registry: &TenantRegistry) -> String {
        let mut out = Registry::with_prefix("tenant_router");
        out.register(
            "requests",
            "Requests by tenant, route pattern and status class",
            self.requests.clone(),
        );
        out.register(
            "request_duration_seconds",
            "Time to answer a request, by tenant and route pattern",
            self.latency.clone(),
        );
        out.register(
            "logins",
            "Login attempts by tenant and outcome (succeeded, failed, throttled)",
            self.logins.clone(),
        );
        out.register(
            "limit_refusals",
            "Requests refused 429 by their tenant's rate or concurrency limit",
            self.limit_refusals.clone(),
        );
        out.register(
            "breaker_trips",
            "Times a tenant's breaker tripped (its database failed for certain)",
            self.breaker_trips.clone(),
        );
        let open: HashSet<String> = registry
            .open_breakers()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        let breaker_open = Family::<TenantLabels, Gauge>::default();
        for id in self
            .tripped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            breaker_open
                .get_or_create(&TenantLabels {
                    tenant: self.tenant_label(Some(id)),
                })
                .inc_by(i64::from(open.contains(id)));
        }
        out.register(
            "tenant_breaker_open",
            "1 while the tenant's breaker is open (requests get a fast 503), else 0; for tenants whose breaker tripped since start-up",
            breaker_open,
        );
        out.register(
            "tenant_open_duration_seconds",
            "Time to make a tenant ready on first use (storage checked, migrations applied, seed), by outcome (ready, failed)",
            self.tenant_opens.clone(),
        );
        out.register(
            "tenant_migrations_pending",
            "Migrations a tenant has not applied, as its last open (or an operator's migration) found them",
            self.migrations_pending.clone(),
        );
        let (applied, failed) = crate::db::migration_totals();
        let migrations_applied = Counter::<u64>::default();
        migrations_applied.inc_by(applied);
        out.register(
            "migrations_applied",
            "Tenant migrations this process applied",
            migrations_applied,
        );
        let migration_failures = Counter::<u64>::default();
        migration_failures.inc_by(failed);
        out.register(
            "migration_failures",
            "Tenant migration runs of this process that failed (and rolled back)",
            migration_failures,
        );

        type Read = fn(&ServerStats) -> u64;
        let servers = registry.servers();
        let gauges: [(&str, &str, Read); 5] = [
            (
                "server_connection_limit",
                "Connections the router may hold on the server (0: not read yet)",
                |s| u64::from(s.limit),
            ),
            (
                "server_connections_open",
                "Connections open on the server",
                |s| s.open,
            ),
            (
                "server_connections_in_use",
                "Connections serving a request",
                |s| s.in_use,
            ),
            (
                "server_connections_idle",
                "Connections idle in their pools",
                |s| s.idle,
            ),
            (
                "server_checkouts_waiting",
                "Checkouts waiting for a connection of the server",
                |s| s.waiting,
            ),
        ];
        for (name, help, read) in gauges {
            let family = Family::<ServerLabels, Gauge>::default();
            for server in &servers {
                family
                    .get_or_create(&ServerLabels {
                        server: server.server.clone(),
                    })
                    .set(i64::try_from(read(server)).unwrap_or(i64::MAX));
            }
            out.register(name, help, family);
        }
        let counters: [(&str, &str, Read); 6] = [
            (
                "server_connections_opened",
                "Connections opened on the server",
                |s| s.opened,
            ),
            (
                "server_connections_closed",
                "Connections closed on the server",
                |s| s.closed,
            ),
            (
                "server_connections_drained",
                "Connections whose request was cut short or whose transaction was dropped, \
                 drained and kept instead of closed",
                |s| s.drained,
            ),
            (
                "server_checkout_timeouts",
                "Checkouts that found no connection before their deadline",
                |s| s.timeouts,
            ),
            (
                "server_schema_checkouts_home",
                "Checkouts of schema tenants served by the tenant's home connection",
                |s| s.home_checkouts,
            ),
            (
                "server_schema_checkouts_away",
                "Checkouts of schema tenants served by another connection than their home",
                |s| s.away_checkouts,
            ),
        ];
        for (name, help, read) in counters {
            let family = Family::<ServerLabels, Counter>::default();
            for server in &servers {
                family
                    .get_or_create(&ServerLabels {
                        server: server.server.clone(),
                    })
                    .inc_by(read(server));
            }
            out.register(name, help, family);
        }

        let stats = registry.stats();
        let gauge = |out: &mut Registry, name: &str, help: &str, value: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            out.register(name, help, g);
        };
        let counter = |out: &mut Registry, name: &str, help: &str, value: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(value);
            out.register(name, help, c);
        };
        gauge(
            &mut out,
            "tenant_pools_open",
            "Tenant handles open",
            stats.pools_open,
        );
        counter(
            &mut out,
            "tenant_pools_built",
            "Tenant handles built (a tenant's first use, or again after it closed)",
            stats.pools_built,
        );
        counter(
            &mut out,
            "tenant_pool_failures",
            "Tenant databases that failed to open or answer",
            stats.pool_failures,
        );
        counter(
            &mut out,
            "breaker_short_circuits",
            "Requests answered 503 at once because their tenant's breaker was open",
            stats.short_circuited,
        );
        counter(
            &mut out,
            "budget_timeouts",
            "Requests that waited past their deadline for a connection",
            stats.budget_timeouts,
        );

        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &out);
        text
    }
}

impl crate::registry::RegistryEvents for Metrics {
    fn tenant_opened(&self, _tenant: &crate::tenant::TenantId, took: Duration, ok: bool) {
        if !self.enabled {
            return;
        }
        let outcome = if ok { "ready" } else { "failed" };
        self.tenant_opens
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    fn migrations_pending(&self, tenant: &crate::tenant::TenantId, pending: usize) {
        if !self.enabled {
            return;
        }
        self.migrations_pending
            .get_or_create(&TenantLabels {
                tenant: self.tenant_label(Some(tenant.as_str())),
            })
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    fn breaker_tripped(&self, tenant: &crate::tenant::TenantId) {
        if !self.enabled {
            return;
        }
        self.tripped
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string());
        self.breaker_trips
            .get_or_create(&TenantLabels {
                tenant: self.tenant_label(Some(tenant.as_str())),
            })
            .inc();
    }
}
