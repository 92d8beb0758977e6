//! The tenants the registry serves, by id and by subdomain label: a table
//! replaced as a whole, so a reader never sees half a change.

use std::{collections::HashMap, sync::Arc};

use super::{TenantRegistry, same_storage};
use crate::tenant::{TenantConfig, TenantId};

/// Configurations by id and by subdomain label; replaced as a whole.
#[derive(Default)]
pub(super) struct TenantTable {
    pub(super) by_id: HashMap<TenantId, Arc<TenantConfig>>,
    pub(super) by_subdomain: HashMap<String, TenantId>,
}

impl TenantTable {
    pub(super) fn new(tenants: Vec<TenantConfig>) -> Self {
        let mut table = Self::default();
        for t in tenants {
            table.by_subdomain.insert(t.subdomain.clone(), t.id.clone());
            table.by_id.insert(t.id.clone(), Arc::new(t));
        }
        table
    }
}

impl TenantRegistry {
    pub(super) fn table(&self) -> Arc<TenantTable> {
        // A poisoned lock still holds a whole table: it is only ever swapped.
        match self.inner.table.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces every tenant at once (a reload). Pools of tenants that are gone, or
    /// whose database settings changed, are closed, and their breakers forgotten
    /// (a failure of the old database says nothing of the new one); the others
    /// stay open.
    pub async fn replace_all(&self, tenants: Vec<TenantConfig>) {
        let new = Arc::new(TenantTable::new(tenants));
        let old = self.swap_table(new.clone());
        for (id, before) in &old.by_id {
            let keep = new
                .by_id
                .get(id)
                .is_some_and(|after| same_storage(before, after));
            if !keep {
                self.forget_storage_of(id).await;
            }
        }
        self.inner.handles.run_pending_tasks().await;
    }

    /// Adds or replaces one tenant; its pool is closed if its database settings
    /// changed, so the next request opens the new one.
    pub async fn upsert(&self, tenant: TenantConfig) {
        let id = tenant.id.clone();
        let mut changed_storage = false;
        self.update_table(|table| {
            if let Some(old) = table.by_id.get(&id) {
                table.by_subdomain.remove(&old.subdomain);
                changed_storage = !same_storage(old, &tenant);
            }
            table
                .by_subdomain
                .insert(tenant.subdomain.clone(), id.clone());
            table.by_id.insert(id.clone(), Arc::new(tenant));
        });
        if changed_storage {
            self.forget_storage_of(&id).await;
        }
    }

    /// Closes the tenant's pool and forgets its initialisation and its breaker:
    /// the next request opens its storage afresh.
    async fn forget_storage_of(&self, id: &TenantId) {
        self.ready().remove(id);
        self.inner.handles.invalidate(id).await;
        self.breakers().remove(id);
    }

    /// Removes a tenant and closes its pool; returns its last configuration.
    pub async fn remove(&self, id: &TenantId) -> Option<Arc<TenantConfig>> {
        let mut removed = None;
        self.update_table(|table| {
            removed = table.by_id.remove(id);
            if let Some(old) = &removed {
                table.by_subdomain.remove(&old.subdomain);
            }
        });
        self.forget_storage_of(id).await;
        self.inner.handles.run_pending_tasks().await;
        removed
    }

    pub(super) fn swap_table(&self, new: Arc<TenantTable>) -> Arc<TenantTable> {
        let mut guard = self.inner.table.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, new)
    }

    /// Copies the table, changes the copy, and swaps it in; readers never wait on
    /// the change.
    pub(super) fn update_table(&self, change: impl FnOnce(&mut TenantTable)) {
        let mut guard = self.inner.table.write().unwrap_or_else(|p| p.into_inner());
        let mut table = TenantTable {
            by_id: guard.by_id.clone(),
            by_subdomain: guard.by_subdomain.clone(),
        };
        change(&mut table);
        *guard = Arc::new(table);
    }

    /// The tenant's configuration, if it is registered.
    pub fn get(&self, id: &str) -> Option<Arc<TenantConfig>> {
        self.table().by_id.get(id).cloned()
    }

    /// The tenant whose subdomain label is `label`.
    pub fn by_subdomain(&self, label: &str) -> Option<TenantId> {
        self.table().by_subdomain.get(label).cloned()
    }

    /// All tenants, sorted by id.
    pub fn list(&self) -> Vec<Arc<TenantConfig>> {
        let mut all: Vec<_> = self.table().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}
