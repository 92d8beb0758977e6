//! The command line: `serve` (the default), `tenants …` and `migrate …`.
//!
//! Tenant commands work on the same control database as the admin API, so a
//! running service picks their changes up on its next poll.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::{
    control::ControlStore,
    fleet::{FleetOptions, Outcome, migrate_fleet},
    lifecycle::{self, Lifecycle},
    registry::TenantRegistry,
    settings::Settings,
    tenant::TenantConfig,
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

/// The environment variable a new user's password may come in (never an argument,
/// which other users of the machine can read in the process list).
pub const PASSWORD_ENV: &str = "TENANT_USER_PASSWORD";

/// The password from [`PASSWORD_ENV`], or the first line of standard input.
fn read_password() -> Result<String, String> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err(format!(
            "no password: set {PASSWORD_ENV} or write it on standard input"
        ));
    }
    Ok(password)
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

/// Everything the commands need: the merged tenants and the lifecycle.
struct Context {
    settings: Settings,
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
        settings,
        registry,
        lifecycle,
        control,
    })
}

fn view(t: &TenantConfig) -> Value {
    json!({
        "id": t.id,
        "domain": t.domain,
        "subdomain": t.subdomain,
        "features": t.features,
        "branding": t.branding,
        "gst_number": t.gst_number,
        "contact_info": t.contact_info,
        "is_active": t.is_active,
        "isolation": t.isolation,
        "source": t.source,
    })
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("tenant-router: {message}");
    ExitCode::from(2)
}

/// Runs a `tenants` command.
pub async fn tenants(settings: Settings, command: TenantCommand) -> ExitCode {
    let ctx = match context(settings).await {
        Ok(ctx) => ctx,
        Err(e) => return fail(e),
    };
    let result = match command {
        TenantCommand::List => {
            for t in ctx.registry.list() {
                println!(
                    "{:<32} {:<14} {:<8} {:<9} {}",
                    t.id.as_str(),
                    format!("{:?}", t.domain).to_lowercase(),
                    format!("{:?}", t.source).to_lowercase(),
                    if t.is_active { "active" } else { "suspended" },
                    t.subdomain
                );
            }
            Ok(())
        }
        TenantCommand::Show { id } => match ctx.registry.get(&id) {
            Some(t) => {
                println!("{:#}", view(&t));
                Ok(())
            }
            None => Err(format!("no tenant '{id}'")),
        },
        TenantCommand::Create(args) => {
            let mut body = json!({
                "id": args.id,
                "database_url": args.database_url,
                "domain": args.domain,
                "seed_demo_data": args.seed_demo_data,
            });
            if let Some(s) = args.subdomain {
                body["subdomain"] = json!(s);
            }
            if let Some(i) = args.isolation {
                body["isolation"] = json!(i);
            }
            if let Some(c) = args.company_name {
                body["branding"] = json!({ "company_name": c });
            }
            if let Some(owner) = args.owner {
                match read_password() {
                    Ok(password) => {
                        body["owner"] = json!({ "username": owner, "password": password });
                    }
                    Err(e) => return fail(e),
                }
            }
            ctx.lifecycle
                .provision(body)
                .await
                .map(|t| println!("{:#}", view(&t)))
                .map_err(|e| e.to_string())
        }
        TenantCommand::AddUser(args) => add_user(&ctx, args).await,
        TenantCommand::Suspend { id } => ctx
            .lifecycle
            .update(&id, json!({ "is_active": false }))
            .await
            .map(|_| println!("suspended {id}"))
            .map_err(|e| e.to_string()),
        TenantCommand::Activate { id } => ctx
            .lifecycle
            .update(&id, json!({ "is_active": true }))
            .await
            .map(|_| println!("activated {id}"))
            .map_err(|e| e.to_string()),
        TenantCommand::Reencrypt => ctx
            .control
            .reseal_all()
            .await
            .map(|n| println!("sealed {n} database URLs with the current key"))
            .map_err(|e| crate::db::redact_error(&e)),
        TenantCommand::Unfinished => ctx
            .lifecycle
            .unfinished()
            .await
            .map(|rows| {
                for row in rows {
                    println!(
                        "{:<32} {:<11} storage {:<8} {} {}",
                        row.id,
                        if row.abandoned {
                            "abandoned"
                        } else {
                            "under way"
                        },
                        match row.made_storage {
                            Some(true) => "new",
                            Some(false) => "existing",
                            None => "-",
                        },
                        row.updated_at.to_rfc3339(),
                        row.claimed_by.as_deref().unwrap_or("-"),
                    );
                }
            })
            .map_err(|e| e.to_string()),
        TenantCommand::Abandon { id, force } => ctx
            .lifecycle
            .abandon(&id, force)
            .await
            .map(|_| println!("rolled back the provisioning of {id}"))
            .map_err(|e| e.to_string()),
        TenantCommand::Delete { id, drop_database } => ctx
            .lifecycle
            .deprovision(&id, drop_database)
            .await
            .map(|_| println!("deleted {id}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn add_user(ctx: &Context, args: AddUserArgs) -> Result<(), String> {
    let tenant = ctx
        .registry
        .get(&args.id)
        .ok_or_else(|| format!("no tenant '{}'", args.id))?;
    let new = crate::auth::users::NewUser {
        username: args.username,
        password: read_password()?,
        email: args.email,
        role: args.role,
    };
    let db = ctx
        .registry
        .connect(&tenant)
        .await
        .map_err(|e| e.to_string())?;
    let created = crate::audit::create_user_as_operator(&db, new, "cli").await;
    drop(db);
    ctx.registry.close_all().await;
    let user = created.map_err(|e| e.to_string())?;
    println!("added {} ({}) to {}", user.username, user.role, tenant.id);
    Ok(())
}

/// Runs `migrate`: exit 0 when every tenant is up to date or migrated (or, in a dry
/// run, checked), 1 when any failed, 2 on bad usage.
pub async fn migrate(settings: Settings, args: MigrateArgs) -> ExitCode {
    let ctx = match context(settings).await {
        Ok(ctx) => ctx,
        Err(e) => return fail(e),
    };
    let mut tenants: Vec<TenantConfig> =
        ctx.registry.list().iter().map(|t| (**t).clone()).collect();
    if !args.all {
        for id in &args.tenant {
            if ctx.registry.get(id).is_none() {
                return fail(format!("no tenant '{id}'"));
            }
        }
        tenants.retain(|t| args.tenant.iter().any(|id| id == t.id.as_str()));
    }
    let on_terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let rows = migrate_fleet(
        tenants,
        &ctx.settings.pools(),
        FleetOptions {
            concurrency: args.concurrency,
            dry_run: args.dry_run,
        },
        Some(&ctx.control),
        |done, total| {
            if on_terminal {
                let width = 30;
                let filled = (done * width).checked_div(total).unwrap_or(width);
                eprint!(
                    "\r[{}{}] {done}/{total}",
                    "#".repeat(filled),
                    " ".repeat(width - filled)
                );
                if done == total {
                    eprintln!();
                }
            }
        },
    )
    .await;
    let count = |o: Outcome| rows.iter().filter(|r| r.status == o).count();
    let failed = count(Outcome::Failed);
    for row in rows.iter().filter(|r| r.status == Outcome::Failed) {
        eprintln!(
            "failed: {}: {}",
            row.tenant_id,
            row.error.as_deref().unwrap_or("unknown error")
        );
    }
    println!(
        "{} tenants in {:.1} s: {} migrated, {} up to date, {} pending, {} failed",
        rows.len(),
        started.elapsed().as_secs_f64(),
        count(Outcome::Migrated),
        count(Outcome::UpToDate),
        count(Outcome::Pending),
        failed
    );
    if let Some(path) = &args.report {
        let report = json!({ "dry_run": args.dry_run, "tenants": rows });
        if let Err(e) = std::fs::write(path, format!("{report:#}\n")) {
            return fail(format!("cannot write the report {}: {e}", path.display()));
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
