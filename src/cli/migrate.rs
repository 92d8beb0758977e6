//! `tenant-router migrate --all`: every tenant's migrations, a bounded number at a
//! time, with a row per tenant.

use std::process::ExitCode;

use serde_json::json;

use super::{MigrateArgs, context, fail};
use crate::{
    fleet::{FleetOptions, Outcome, migrate_fleet},
    settings::Settings,
    tenant::TenantConfig,
};

/// Runs `migrate`: exit 0 when every tenant is up to date or migrated (or, in a dry
/// run, checked), 1 when any failed, 2 on bad usage.
pub async fn migrate(settings: Settings, args: MigrateArgs) -> ExitCode {
    // Single-tenant mode has one tenant, `default`, on DATABASE_URL, and no
    // control database.
    let pools = settings.pools();
    let (mut tenants, ctx) = if settings.multi_tenant_enabled {
        let ctx = match context(settings).await {
            Ok(ctx) => ctx,
            Err(e) => return fail(e),
        };
        let tenants: Vec<TenantConfig> =
            ctx.registry.list().iter().map(|t| (**t).clone()).collect();
        (tenants, Some(ctx))
    } else {
        (vec![settings.single_tenant()], None)
    };
    if !args.all {
        for id in &args.tenant {
            if !tenants.iter().any(|t| t.id.as_str() == id) {
                return fail(format!("no tenant '{id}'"));
            }
        }
        tenants.retain(|t| args.tenant.iter().any(|id| id == t.id.as_str()));
    }
    // Drawn only when standard error is a terminal.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(tenants.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} tenants, {elapsed}")
    {
        bar.set_style(style.progress_chars("#>-"));
    }
    let started = std::time::Instant::now();
    let rows = migrate_fleet(
        tenants,
        &pools,
        FleetOptions {
            concurrency: args.concurrency,
            dry_run: args.dry_run,
        },
        ctx.as_ref()
            .map(|ctx| &ctx.control as &dyn crate::db::StorageLedger),
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .await;
    bar.finish();
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
