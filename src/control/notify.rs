//! Changes to the tenants, as PostgreSQL announces them: the control database's
//! trigger (control migration `m20261202_100005`) notifies the channel
//! [`CHANNEL`] whenever `tenant_configs` changes, and [`ChangeFeed`] waits for
//! those notifications on a connection of its own.

use sea_orm::{DbErr, sqlx::postgres::PgListener};

/// The channel the control database's trigger notifies.
pub const CHANNEL: &str = "tenant_router_tenants";

/// What [`ChangeFeed::next`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The tenants changed (one or more committed changes).
    Changed,
    /// The connection was lost and made again: changes in between may have been
    /// missed, so the caller reloads everything.
    Reconnected,
}

/// A connection listening on [`CHANNEL`].
pub struct ChangeFeed {
    listener: PgListener,
}

impl ChangeFeed {
    /// Connects to the control database at `url` (prepared) and listens.
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        let mut listener = PgListener::connect(url)
            .await
            .map_err(|e| DbErr::Custom(format!("cannot listen for tenant changes: {e}")))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|e| DbErr::Custom(format!("cannot listen for tenant changes: {e}")))?;
        Ok(Self { listener })
    }

    /// Waits for the next change. Notifications that arrived together are taken
    /// as one. An error means the connection is gone; connect again.
    pub async fn next(&mut self) -> Result<Change, DbErr> {
        let first = self
            .listener
            .try_recv()
            .await
            .map_err(|e| DbErr::Custom(format!("tenant change feed: {e}")))?;
        if first.is_none() {
            return Ok(Change::Reconnected);
        }
        while self.listener.next_buffered().is_some() {}
        Ok(Change::Changed)
    }
}

impl super::ControlStore {
    /// A feed of tenant changes, on PostgreSQL; `None` on SQLite, which has no
    /// notifications (replicas poll).
    pub async fn change_feed(&self) -> Option<Result<ChangeFeed, DbErr>> {
        let url = self.listen_url.as_deref()?;
        Some(ChangeFeed::connect(url).await)
    }
}
