//! Keeping this replica's registry current: polling the control database, and
//! reloading `tenants.toml` on SIGHUP.

use std::time::Duration;

use super::Lifecycle;
use crate::db;

/// Polls the control database every `every` so that changes made through other
/// replicas arrive here. Ends when the lifecycle is dropped.
pub fn spawn_poller(lifecycle: std::sync::Weak<Lifecycle>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(lifecycle) = lifecycle.upgrade() else {
                break;
            };
            if let Err(e) = lifecycle.poll().await {
                tracing::warn!(error = %db::redact_error(&e), "polling the control database failed");
            }
        }
    });
}

/// With a PostgreSQL control database: reloads the tenants as soon as the
/// database announces a change (`LISTEN`), so that a change made through any
/// replica reaches this one within moments. After a lost connection it connects
/// again (waiting up to `RECONNECT_MAX` between tries) and reloads everything,
/// since changes in between were not announced; the poll stays on as the fallback
/// for a connection that is silently gone.
pub fn spawn_change_listener(lifecycle: std::sync::Weak<Lifecycle>) {
    const RECONNECT_MAX: Duration = Duration::from_secs(5);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            let Some(strong) = lifecycle.upgrade() else {
                break;
            };
            let feed = match strong.control().change_feed().await {
                None => break,
                Some(Ok(feed)) => feed,
                Some(Err(e)) => {
                    drop(strong);
                    tracing::warn!(error = %db::redact_error(&e), retry_in = ?backoff, "cannot listen for tenant changes");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            tracing::info!(again = connected_before, "listening for tenant changes");
            // Whatever changed before the feed listened: since start-up's load, or
            // while the feed was down.
            if let Err(e) = strong.refresh_now().await {
                tracing::warn!(error = %db::redact_error(&e), "reloading tenants failed");
            }
            connected_before = true;
            drop(strong);
            let mut feed = feed;
            loop {
                let change = feed.next().await;
                let Some(strong) = lifecycle.upgrade() else {
                    return;
                };
                match change {
                    Ok(change) => {
                        tracing::debug!(?change, "tenants changed: reloading");
                        if let Err(e) = strong.refresh_now().await {
                            tracing::warn!(error = %db::redact_error(&e), "reloading tenants failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %db::redact_error(&e), "the tenant change feed was lost; connecting again");
                        break;
                    }
                }
            }
        }
    });
}

/// Whether a reload would drop every tenant of the file that `before` served: a
/// file removed, or caught empty while it is rewritten in place. Removing every
/// tenant of the file takes a restart.
fn lost_the_file(
    before: &[crate::tenant::TenantConfig],
    after: &[crate::tenant::TenantConfig],
) -> bool {
    use crate::tenant::TenantSource::File;
    before.iter().any(|t| t.source == File) && !after.iter().any(|t| t.source == File)
}

/// Reloads the tenants file and `TENANT_CONFIGS` on SIGHUP. The registry is swapped
/// whole, so requests in flight finish on the configuration they started with and
/// none is dropped; an invalid file keeps the old configuration and logs why.
pub fn spawn_reload_on_sighup(
    lifecycle: std::sync::Weak<Lifecycle>,
    settings: crate::settings::Settings,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload is off");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(lifecycle) = lifecycle.upgrade() else {
                    break;
                };
                match settings.load_tenants() {
                    Ok(base) if lost_the_file(&lifecycle.base(), &base) => {
                        tracing::error!(
                            "reload refused: the tenants file is missing or holds no tenant, and it served some (a file being rewritten?); keeping the old tenants. Restart to serve none from it"
                        );
                    }
                    Ok(base) => match lifecycle.set_base(base).await {
                        Ok(refused) if refused.is_empty() => {
                            tracing::info!("tenants reloaded on SIGHUP")
                        }
                        Ok(refused) => {
                            for e in refused {
                                tracing::error!(error = %e, "reload refused: the tenants file would hide a tenant added at run time; keeping the old tenants");
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %db::redact_error(&e), "reload failed; keeping the old tenants")
                        }
                    },
                    Err(errors) => {
                        for e in errors {
                            tracing::error!(error = %e, "reload refused: invalid tenant configuration; keeping the old tenants");
                        }
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (lifecycle, settings);
}
