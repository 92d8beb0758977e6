//! `tenant-router tenants …`: list, show, create, change, suspend, remove and
//! migrate tenants, add users, and see or abandon unfinished provisionings, on the
//! control database the admin API uses.

use std::{io::IsTerminal, process::ExitCode};

use serde_json::{Value, json};

use super::{AddUserArgs, Context, TenantCommand, context, fail};
use crate::{settings::Settings, tenant::TenantConfig};

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
        TenantCommand::Move {
            id,
            to,
            confirm,
            abort,
        } => move_tenant(&ctx, &id, to.as_deref(), confirm, abort).await,
        TenantCommand::Moves => ctx
            .lifecycle
            .moves()
            .await
            .map(|moves| println!("{:#}", json!({ "moves": moves })))
            .map_err(|e| e.to_string()),
        TenantCommand::Usage { id, from, to, json } => {
            usage(&ctx, &id, from.as_deref(), to.as_deref(), json).await
        }
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

/// Prints a tenant's usage: a row per day and the totals, or the report as JSON.
async fn usage(
    ctx: &Context,
    id: &str,
    from: Option<&str>,
    to: Option<&str>,
    as_json: bool,
) -> Result<(), String> {
    let range = crate::usage::UsageRange::parse(from, to).map_err(|e| e.to_string())?;
    let report = crate::usage::report(&ctx.control, id, range)
        .await
        .map_err(|e| crate::db::redact_error(&e))?;
    if ctx.registry.get(id).is_none() && report.days.is_empty() {
        return Err(format!("no tenant '{id}' and no usage on record for it"));
    }
    if as_json {
        println!("{:#}", json!(report));
        return Ok(());
    }
    let storage = |b: Option<u64>| b.map_or_else(|| "-".to_string(), |b| b.to_string());
    println!(
        "{:<10} {:>10} {:>8} {:>12} {:>12} {:>14}",
        "day", "requests", "writes", "rows written", "active users", "storage bytes"
    );
    for d in &report.days {
        println!(
            "{:<10} {:>10} {:>8} {:>12} {:>12} {:>14}",
            d.day,
            d.requests,
            d.writes,
            d.rows_written,
            d.active_users,
            storage(d.storage_bytes)
        );
    }
    let t = &report.total;
    println!(
        "{:<10} {:>10} {:>8} {:>12} {:>12} {:>14}",
        "total",
        t.requests,
        t.writes,
        t.rows_written,
        t.active_users,
        storage(t.storage_bytes)
    );
    Ok(())
}

async fn move_tenant(
    ctx: &Context,
    id: &str,
    to: Option<&str>,
    confirm: bool,
    abort: bool,
) -> Result<(), String> {
    if confirm {
        ctx.lifecycle
            .confirm_move(id)
            .await
            .map_err(|e| e.to_string())?;
        println!("move of {id} confirmed: the old storage was dropped");
        return Ok(());
    }
    if abort {
        ctx.lifecycle
            .abort_move(id)
            .await
            .map_err(|e| e.to_string())?;
        println!("move of {id} aborted: it stays where it was");
        return Ok(());
    }
    let to = to.ok_or("--to is required")?;
    // Drawn only when standard error is a terminal; each step is also logged.
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(4), indicatif::ProgressDrawTarget::stderr());
    let progress = |step: crate::lifecycle::moves::MoveStep| {
        use crate::lifecycle::moves::MoveStep as S;
        let (position, message) = match &step {
            S::Preparing => (0, "preparing the target".to_string()),
            S::Copying { tables } => (1, format!("copying {tables} tables")),
            S::Switching => (2, "catching up and switching".to_string()),
            S::Switched { pause_ms } => (3, format!("switched; writes paused {pause_ms} ms")),
            S::Cleaned => (4, "replication removed".to_string()),
        };
        eprintln!("move {id}: {message}");
        bar.set_position(position);
        bar.set_message(message);
    };
    let outcome = ctx
        .lifecycle
        .move_tenant(id, to, &progress)
        .await
        .map_err(|e| crate::lifecycle::moves::describe(&e))?;
    bar.finish_and_clear();
    println!("{:#}", json!(outcome));
    Ok(())
}
