//! The command line: `serve` (the default), `tenants …` and `migrate …`.
//!
//! Tenant commands work on the same control database as the admin API, so a
//! running service picks their changes up on its next poll.

mod migrate;
mod tenants;

pub use migrate::migrate;
pub use tenants::tenants;

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Args, Parser, Subcommand};

use crate::{
    control::ControlStore,
    lifecycle::{self, Lifecycle},
    registry::TenantRegistry,
    settings::Settings,
};

/// A database-per-tenant HTTP service. Settings come from the environment (see the
/// README); with no command it serves.
#[derive(Debug, Parser)]
#[command(name = "tenant-router", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// List, show, create, suspend, activate or delete tenants.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// Migrate tenant databases.
    Migrate(MigrateArgs),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Every tenant, one a line.
    List,
    /// One tenant's configuration (never its database URL), as JSON.
    Show { id: String },
    /// Provision a tenant: create and migrate its database, then register it.
    Create(CreateArgs),
    /// Add a user to a tenant (a file tenant's first owner, say).
    AddUser(AddUserArgs),
    /// Suspend a tenant: its requests get 403 tenant_inactive.
    Suspend { id: String },
    /// Activate a suspended tenant.
    Activate { id: String },
    /// Seal every database URL in the control database with SECRET_KEY (after a key
    /// rotation, with the old key in SECRET_KEY_PREVIOUS).
    Reencrypt,
    /// Provisionings that have not finished (under way, or cut short by a crash).
    Unfinished,
    /// Roll back an unfinished provisioning: drop the storage it made and free the
    /// id. Refused while its process is alive, unless --force.
    Abandon {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// A tenant's usage per day (requests, writes, active users, storage), from
    /// the control database; a running replica adds its counts every
    /// USAGE_FLUSH_SECS.
    Usage {
        id: String,
        /// The first day, YYYY-MM-DD (default: 29 days before --to).
        #[arg(long)]
        from: Option<String>,
        /// The last day, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a PostgreSQL tenant to another database or server while it serves:
    /// copy (logical replication), catch up, pause its writes for the switch, switch.
    /// Run it again to resume a move that failed or was cut short. The old storage
    /// is kept, read-only, until --confirm.
    Move {
        id: String,
        /// The target database URL (postgres://…), same isolation.
        #[arg(long, required_unless_present_any = ["confirm", "abort"])]
        to: Option<String>,
        /// After the switch: drop the old storage and forget the move.
        #[arg(long, conflicts_with_all = ["to", "abort"])]
        confirm: bool,
        /// Before the switch: stop, the tenant staying where it is.
        #[arg(long, conflicts_with_all = ["to", "confirm"])]
        abort: bool,
    },
    /// The moves under way or waiting for --confirm.
    Moves,
    /// Remove a tenant added at run time.
    Delete {
        id: String,
        /// Also drop its database (or schema, or SQLite file) and all its data.
        #[arg(long)]
        drop_database: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub id: String,
    /// sqlite://… or postgres://…
    #[arg(long)]
    pub database_url: String,
    /// dental, manufacturing or default.
    #[arg(long, default_value = "default")]
    pub domain: String,
    #[arg(long)]
    pub subdomain: Option<String>,
    /// database (default) or schema.
    #[arg(long)]
    pub isolation: Option<String>,
    #[arg(long)]
    pub company_name: Option<String>,
    /// Seed sample data.
    #[arg(long)]
    pub seed_demo_data: bool,
    /// Create the tenant's first owner with this username; the password is read
    /// from TENANT_USER_PASSWORD, or else from the first line of standard input.
    #[arg(long)]
    pub owner: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddUserArgs {
    /// The tenant.
    pub id: String,
    #[arg(long)]
    pub username: String,
    /// owner, admin, manager or staff.
    #[arg(long, default_value = "staff")]
    pub role: String,
    #[arg(long)]
    pub email: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Every tenant.
    #[arg(long, conflicts_with = "tenant", required_unless_present = "tenant")]
    pub all: bool,
    /// One tenant (repeatable).
    #[arg(long)]
    pub tenant: Vec<String>,
    /// Tenants migrated at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Report what is pending; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write a JSON report (a row per tenant) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!(
        "tenant-router: {}",
        crate::secret::redact(&message.to_string())
    );
    ExitCode::from(2)
}

/// Everything the commands need: the merged tenants and the lifecycle.
struct Context {
    registry: TenantRegistry,
    lifecycle: Arc<Lifecycle>,
    control: ControlStore,
}

async fn context(settings: Settings) -> Result<Context, String> {
    if !settings.multi_tenant_enabled {
        return Err("tenant commands need MULTI_TENANT_ENABLED=true".into());
    }
    let base = settings.load_tenants().map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!("invalid tenant configuration:\n{}", lines.join("\n"))
    })?;
    let secrets = Arc::new(settings.secret_box()?);
    let control = ControlStore::open(settings.control_database_url.expose(), secrets)
        .await
        .map_err(|e| {
            format!(
                "cannot open the control database: {}",
                crate::db::redact_error(&e)
            )
        })?;
    let (rows, errors) = control.load().await.map_err(|e| {
        format!(
            "cannot read the control database: {}",
            crate::db::redact_error(&e)
        )
    })?;
    for e in errors {
        eprintln!("warning: control database tenant left out: {e}");
    }
    let registry = TenantRegistry::new(lifecycle::merge(&base, rows), settings.pools());
    registry.set_ledger(Arc::new(control.clone()));
    registry.set_initialiser(Arc::new(crate::demo::DemoSeed {
        demo_login: !settings.is_production(),
    }));
    let lifecycle = Arc::new(Lifecycle::new(
        registry.clone(),
        control.clone(),
        base,
        settings.pools(),
        settings.identification().ignored_subdomains,
    ));
    Ok(Context {
        registry,
        lifecycle,
        control,
    })
}
