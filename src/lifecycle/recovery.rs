//! Provisionings a crash cut short: listed for the operator, rolled back at
//! start-up when their process is gone (on this host) or their lease has run out
//! (another host), or abandoned by hand.

use sea_orm::DbErr;

use super::{Lifecycle, storage_error};
use crate::{
    db,
    error::{AppError, Result},
    tenant::TenantId,
};

/// An unfinished provisioning as the CLI and the admin API show it.
#[derive(Debug, serde::Serialize)]
pub struct UnfinishedView {
    pub id: String,
    pub claimed_by: Option<String>,
    /// Whether it makes the storage (dropped on roll-back); `null` before it looked.
    pub made_storage: Option<bool>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Its process is gone (or silent past the lease): safe to roll back.
    pub abandoned: bool,
}

/// How long a provisioning claimed on another host may go without recording a
/// step before it counts as abandoned. On this host a dead process is seen at once.
const PROVISIONING_LEASE: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// This process, as it signs the provisionings it claims: `host/pid/nonce`. The
/// nonce tells this process from an earlier one that had the same pid.
pub fn this_process() -> &'static str {
    static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ME.get_or_init(|| {
        format!(
            "{}/{}/{}",
            host_name(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace('/', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `row`'s provisioning can no longer finish: its process, on this host,
/// is gone (or is an earlier process with this one's pid); or, anywhere, it has
/// recorded no step for [`PROVISIONING_LEASE`].
fn is_abandoned(row: &crate::control::Unfinished, now: chrono::DateTime<chrono::Utc>) -> bool {
    if now - row.updated_at > PROVISIONING_LEASE {
        return true;
    }
    let Some(claimer) = row.claimed_by.as_deref() else {
        // Claimed by a version that did not sign its claims.
        return true;
    };
    claimer_gone(claimer, this_process()) == Some(true)
}

/// `Some(true)` when `claimer` was a process of this host that is gone, `None`
/// when this host cannot tell (another host, or no `/proc`).
fn claimer_gone(claimer: &str, me: &str) -> Option<bool> {
    // A roll-back that took the claim over is judged by its own process, and a
    // claim by its process, whatever call in it made it (`#token`).
    let claimer = claimer.strip_prefix(ROLLBACK).unwrap_or(claimer);
    let claimer = claimer.split('#').next().unwrap_or(claimer);
    let mut parts = claimer.splitn(3, '/');
    let (host, pid, nonce) = (parts.next()?, parts.next()?, parts.next()?);
    let mut mine = me.splitn(3, '/');
    let (my_host, my_pid, my_nonce) = (mine.next()?, mine.next()?, mine.next()?);
    if host != my_host {
        return None;
    }
    if pid == my_pid {
        return Some(nonce != my_nonce);
    }
    let pid: u32 = pid.parse().ok()?;
    if !std::path::Path::new("/proc/self").exists() {
        return None;
    }
    // A live process with that pid may be another program that reused it: then
    // the lease decides. A process that has exited but not yet been reaped by its
    // parent (a zombie, state `Z`; `X` while it goes) is gone too: a supervisor
    // may take seconds to reap it, and a restart can come first.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => Some(true),
        Ok(stat) => {
            // `pid (name) state …`: the name may hold spaces and parentheses.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            Some(matches!(state, Some('Z' | 'X')))
        }
    }
}

/// Why [`Lifecycle::roll_back`] left a row: it was no longer the claim read.
const LOST_CLAIM: &str = "the provisioning finished or was rolled back meanwhile";

/// How a roll-back signs the claim it takes over: `rollback:` and its process.
pub(super) const ROLLBACK: &str = "rollback:";

impl Lifecycle {
    /// Every provisioning that has not finished, with whether its process is gone.
    pub async fn unfinished(&self) -> Result<Vec<UnfinishedView>> {
        let rows = self
            .control
            .unfinished()
            .await
            .map_err(|e| storage_error("read provisionings", &e))?;
        let now = chrono::Utc::now();
        Ok(rows
            .into_iter()
            .map(|row| UnfinishedView {
                abandoned: is_abandoned(&row, now),
                id: row.id,
                claimed_by: row.claimed_by,
                made_storage: row.made_storage,
                updated_at: row.updated_at,
            })
            .collect())
    }

    /// Rolls back every provisioning whose process is gone (a crash): drops the
    /// storage it made, then its row, so the id is free again. Run at start-up;
    /// returns the ids rolled back. One that fails is logged and left for the next
    /// start or an operator.
    pub async fn recover(&self) -> Result<Vec<String>, DbErr> {
        let now = chrono::Utc::now();
        self.roll_back_where(|row| is_abandoned(row, now)).await
    }

    /// Rolls back each unfinished provisioning that `chosen` picks, logging each;
    /// returns the ids rolled back. One that fails is logged and left.
    async fn roll_back_where(
        &self,
        chosen: impl Fn(&crate::control::Unfinished) -> bool,
    ) -> Result<Vec<String>, DbErr> {
        let mut done = Vec::new();
        for row in self.control.unfinished().await? {
            if !chosen(&row) {
                continue;
            }
            match self.roll_back(&row).await {
                Ok(()) => {
                    tracing::warn!(tenant_id = %row.id, claimed_by = row.claimed_by.as_deref().unwrap_or(""), "unfinished provisioning rolled back");
                    done.push(row.id);
                }
                Err(e) => {
                    tracing::error!(tenant_id = %row.id, error = %e, "unfinished provisioning could not be rolled back")
                }
            }
        }
        Ok(done)
    }

    /// Rolls back the unfinished provisionings that hold what `config` claims (its
    /// id, subdomain or storage) and whose process on this host is gone: what a
    /// provisioning refused by such a claim does before trying again. A claim
    /// that is only silent past its lease is left to start-up and operators: its
    /// process may be alive on another host (the lease is not renewed during a
    /// long step, and is read against this host's clock), or slow here. Returns
    /// how many.
    pub(super) async fn recover_blocking(
        &self,
        config: &crate::tenant::TenantConfig,
    ) -> Result<usize, DbErr> {
        let storage = config.storage_identity();
        let blocks = |row: &crate::control::Unfinished| {
            row.id == config.id.as_str()
                || row.config.as_ref().is_ok_and(|other| {
                    other.subdomain == config.subdomain
                        || (storage.is_some() && other.storage_identity() == storage)
                })
        };
        // A roll-back that took the claim over and died counts as gone too (its
        // name says whose it was); a live one is left to finish.
        let gone = |row: &crate::control::Unfinished| match row.claimed_by.as_deref() {
            None => true,
            Some(claimer) => claimer_gone(claimer, this_process()) == Some(true),
        };
        let done = self.roll_back_where(|row| blocks(row) && gone(row)).await?;
        Ok(done.len())
    }

    /// Rolls back the unfinished provisioning of `id` (the operator's clean-up): a
    /// 409 while its process is still alive, unless `force`.
    pub async fn abandon(&self, raw: &str, force: bool) -> Result<()> {
        let id =
            TenantId::parse(raw).map_err(|m| AppError::InvalidTenantId(format!("path: {m}")))?;
        let rows = self
            .control
            .unfinished()
            .await
            .map_err(|e| storage_error("read provisionings", &e))?;
        let Some(row) = rows.into_iter().find(|r| r.id == id.as_str()) else {
            return Err(AppError::NotFound(format!(
                "no unfinished provisioning of '{id}'"
            )));
        };
        if !force && !is_abandoned(&row, chrono::Utc::now()) {
            return Err(AppError::Conflict(format!(
                "the provisioning of '{id}' is under way in a live process; pass force to roll it back anyway"
            )));
        }
        self.roll_back(&row).await.map_err(|why| {
            if why == LOST_CLAIM {
                AppError::Conflict(format!(
                    "the provisioning of '{id}' finished or was rolled back meanwhile"
                ))
            } else {
                AppError::internal(why)
            }
        })?;
        tracing::warn!(tenant_id = %id, forced = force, "unfinished provisioning rolled back by the operator");
        Ok(())
    }

    /// Drops the storage `row`'s provisioning made (if it made any), then the row:
    /// in that order, so a crash in between leaves the row for the next attempt.
    pub(super) async fn roll_back(&self, row: &crate::control::Unfinished) -> Result<(), String> {
        // First the claim is taken from its process, for this roll-back: one still
        // alive (a forced abandon) can then neither record its storage nor mark
        // the tenant ready, and the storage it made is known from then on. A row
        // that is no longer that claim is left alone. The taker is named, so that
        // a roll-back cut short is judged like any claimer (`claimer_gone`).
        let taker = format!("{ROLLBACK}{}", super::provision::claim_token());
        let made_storage = self
            .control
            .disown(&row.id, row.claimed_by.as_deref(), Some(&taker))
            .await
            .map_err(|e| format!("taking over its claim: {}", db::redact_error(&e)))?
            .ok_or_else(|| LOST_CLAIM.to_string())?;
        let undone = async {
            if made_storage == Some(true) {
                let config = row.config.as_ref().map_err(Clone::clone)?;
                self.drop_storage(config)
                    .await
                    .map_err(|e| format!("dropping its storage: {}", db::redact_error(&e)))?;
            }
            self.control
                .release_claim(&row.id, &taker)
                .await
                .map_err(|e| format!("removing its row: {}", db::redact_error(&e)))
        }
        .await;
        if undone.is_err() {
            // Left unsigned, so that the next provisioning of the id (or start-up)
            // rolls it back again at once, rather than wait for this live process.
            if let Err(e) = self.control.disown(&row.id, Some(&taker), None).await {
                tracing::warn!(tenant_id = %row.id, error = %db::redact_error(&e), "could not leave a failed roll-back's claim unsigned");
            }
        }
        undone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_gone_when_its_process_on_this_host_is() {
        let me = "host-a/100/aaaa";
        assert_eq!(claimer_gone("host-a/100/aaaa", me), Some(false));
        // An earlier process with this pid.
        assert_eq!(claimer_gone("host-a/100/bbbb", me), Some(true));
        // Another host: only the lease can tell.
        assert_eq!(claimer_gone("host-b/100/aaaa", me), None);
        assert_eq!(claimer_gone("garbage", me), None);
        // A roll-back's own claim, by its process.
        assert_eq!(claimer_gone("rollback:host-a/100/aaaa", me), Some(false));
        assert_eq!(claimer_gone("rollback:host-a/100/bbbb", me), Some(true));
        // A call's claim, by its process.
        assert_eq!(claimer_gone("host-a/100/aaaa#1f2e3d4c", me), Some(false));
        assert_eq!(
            claimer_gone("rollback:host-a/100/aaaa#1f2e3d4c", me),
            Some(false)
        );
        assert_eq!(claimer_gone("host-a/100/bbbb#1f2e3d4c", me), Some(true));
        let alive = format!("host-a/{}/cccc", std::process::id());
        assert_eq!(claimer_gone(&alive, me), Some(false));
        // Pids are below 2^22 on Linux.
        assert_eq!(claimer_gone("host-a/99999999/cccc", me), Some(true));
    }

    #[test]
    fn a_process_that_exited_and_was_not_reaped_yet_is_gone() {
        let me = "host-a/100/aaaa";
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let claimer = format!("host-a/{}/dddd", child.id());
        let stat = format!("/proc/{}/stat", child.id());
        // Until it exits it is alive; then a zombie until `wait` reaps it.
        let zombie = (0..1000).any(|_| {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            if state.contains(") Z") {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        });
        assert!(zombie, "the child never became a zombie");
        assert_eq!(claimer_gone(&claimer, me), Some(true));
        child.wait().unwrap();
        assert_eq!(claimer_gone(&claimer, me), Some(true));
    }
}
