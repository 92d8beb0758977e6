//! Auditing every write made through the tenant API: each leaves one row in the
//! tenant's own database saying who (user, API key, gateway or operator), what
//! (entity, id, action), when, and in which request.
//!
//! [`record_writes`] is a route layer over every tenant route, so a route added later
//! is audited without remembering to: a `POST`, `PUT`, `PATCH` or `DELETE` runs in
//! one transaction on one connection (the handler's [`crate::http::extract::TenantDb`]),
//! and a successful one gets its row in that transaction before it commits, with
//! the entity and action read from the route's path and the id from the path or
//! from the created record. A write and its audit row commit together or not at
//! all; a failed write leaves nothing.

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::Instrument;

use crate::{
    audit::{AuditEvent, record},
    auth::Principal,
    error::AppError,
    http::AppState,
    http::identify::TenantContext,
    http::request_span::RequestId,
    http::stack::CommitGate,
};

/// The audited writes still running, which shutdown waits for: a write whose client
/// hung up runs on in a task of its own, and must not be cut off between its write
/// and its audit row when the service stops.
#[derive(Default)]
pub struct WritesInFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held while one write runs.
pub struct WriteGuard(std::sync::Arc<WritesInFlight>);

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

impl WritesInFlight {
    pub fn enter(self: &std::sync::Arc<Self>) -> WriteGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        WriteGuard(self.clone())
    }

    /// Waits until no write runs, or `limit` has passed.
    pub async fn wait_idle(&self, limit: std::time::Duration) {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!("shutting down with writes still running");
        }
    }
}

/// The entity and action a write to `path` (a route pattern) with `method` is:
/// `POST /api/dental/patients` is (`patients`, `create`), `DELETE
/// /api/products/{id}` (`products`, `delete`), `POST
/// /api/manufacturing/production-orders/{id}/start` (`production-orders`, `start`).
pub fn describe(method: &Method, path: &str) -> (String, String) {
    let segments: Vec<&str> = path
        .trim_start_matches("/api/")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // The area prefix (`dental`, `manufacturing`) is not the entity.
    let rest = match segments.first() {
        Some(&"dental") | Some(&"manufacturing") if segments.len() > 1 => &segments[1..],
        _ => &segments[..],
    };
    let entity = rest.first().copied().unwrap_or("unknown").to_string();
    let action = match rest.last() {
        Some(last) if rest.len() > 1 && !last.starts_with('{') => (*last).to_string(),
        _ => match *method {
            Method::POST => "create".into(),
            Method::PUT | Method::PATCH => "update".into(),
            Method::DELETE => "delete".into(),
            _ => method.as_str().to_ascii_lowercase(),
        },
    };
    (entity, action)
}

/// Route layer: records each successful write of the tenant API.
pub async fn record_writes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(request).await;
    }
    // Boxed: the write path's state is large, and a read should not carry it
    // (every layer's future is moved into a box of its own).
    Box::pin(record_write(state, request, next)).await
}

/// [`record_writes`] for a write: buffer the body, begin the transaction, run the
/// handler, write the audit row, commit.
async fn record_write(state: AppState, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let extensions = request.extensions();
    let (Some(path), Some(tenant), Some(principal)) = (
        extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string()),
        extensions.get::<TenantContext>().cloned(),
        extensions.get::<Principal>().cloned(),
    ) else {
        return AppError::internal("audit layer mounted outside tenant resolution").into_response();
    };
    let request_id = RequestId::of(extensions).0;
    let gate = extensions.get::<CommitGate>().cloned();
    let path_id = path_id(&path, request.uri().path());
    // A tenant at its storage quota may still delete, never add.
    if method != Method::DELETE
        && let Some(usage) = &state.usage
        && let Err(e) = usage.check_quota(&tenant.config)
    {
        return e.into_response();
    }

    // The whole body is read before the transaction begins: a slow client must
    // not hold the tenant's write lock.
    let mut request = match crate::http::extract::buffer_body(request, &state).await {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let conn = match state.registry.connect(&tenant.config).await {
        Ok(conn) => conn,
        Err(e) => return e.into_response(),
    };
    let txn = match crate::db::begin_write(&conn).await {
        Ok(txn) => txn,
        Err(e) => return AppError::from(e).into_response(),
    };
    // For the tenant's usage: the rows this write changes, its audit row aside.
    let schema = tenant.config.schema_name();
    let rows_mark = match &state.usage {
        Some(_) => match crate::db::rows_written_mark(&txn, schema.as_deref()).await {
            Ok(mark) => Some(mark),
            Err(e) => return AppError::from(e).into_response(),
        },
        None => None,
    };
    request
        .extensions_mut()
        .insert(crate::http::extract::RequestConn(conn));

    // The write and its row run in a task of their own: a client that hangs up
    // cancels the request's future, and must not cancel it between the two.
    let guard = state.writes.enter();
    let task = async move {
        let _guard = guard;
        let response = next.run(request).await;
        if !response.status().is_success() {
            // Nothing of a failed write stays, even what it wrote before failing.
            if let Err(e) = txn.rollback().await {
                tracing::warn!(error = %crate::db::redact_error(&e), "rolling back a failed write failed");
            }
            return response;
        }
        let rows_written = match rows_mark {
            Some(mark) => {
                match crate::db::rows_written_since(&txn, schema.as_deref(), mark).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        // Counted as none rather than failing the write.
                        tracing::warn!(error = %crate::db::redact_error(&e), "cannot count the rows a write changed");
                        0
                    }
                }
            }
            None => 0,
        };
        let (entity, action) = describe(&method, &path);
        let (response, entity_id) = match path_id {
            Some(id) => (response, Some(id)),
            None => created_id(response).await,
        };
        let event = AuditEvent {
            principal: &principal,
            entity: &entity,
            entity_id,
            action: &action,
            request_id: &request_id,
        };
        // The write and its audit row commit together, or neither does; and
        // not at all once the client has been answered 503 at the deadline.
        let committed = match record(&txn, event).await {
            Ok(()) if gate.as_ref().is_none_or(CommitGate::begin_commit) => txn.commit().await,
            Ok(()) => {
                let _ = txn.rollback().await;
                tracing::warn!(%entity, %action, "write rolled back: its request was answered 503 at its deadline");
                return AppError::Timeout { secs: 0 }.into_response();
            }
            Err(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
        };
        if let Err(e) = committed {
            tracing::error!(error = %crate::db::redact_error(&e), %entity, %action, "write not committed: its audit row could not be written");
            return AppError::from(e).into_response();
        }
        if let Some(usage) = &state.usage {
            usage.write(tenant.config.id.as_str(), rows_written);
        }
        // Changes to users take effect once committed.
        if let Some(ForgetUser(user)) = response.extensions().get::<ForgetUser>() {
            state.auth.forget_user(&tenant.config.id, *user).await;
        }
        response
    };
    match tokio::spawn(task.instrument(tracing::Span::current())).await {
        Ok(response) => response,
        Err(e) => AppError::internal(format!("write task failed: {e}")).into_response(),
    }
}

/// Set on a write's response by a handler that changed a user: once the write has
/// committed, what is cached of the user is dropped.
#[derive(Debug, Clone, Copy)]
pub struct ForgetUser(pub uuid::Uuid);

/// The `{id}` segment of `actual` where the route pattern `pattern` has one, as
/// the record's id reads: decoded, and a UUID in its one spelling (the handlers
/// also take `URN`, braced, unhyphenated and upper-case forms, and a search by
/// the id must find every change of the record).
fn path_id(pattern: &str, actual: &str) -> Option<String> {
    pattern
        .split('/')
        .zip(actual.split('/'))
        .find(|(p, _)| *p == "{id}")
        .map(|(_, a)| canonical_id(&percent_encoding::percent_decode_str(a).decode_utf8_lossy()))
}

/// A UUID in its hyphenated lower-case form; any other id as it is.
pub fn canonical_id(id: &str) -> String {
    uuid::Uuid::try_parse(id)
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_else(|_| id.to_string())
}

/// Reads a created record's `id` from the JSON response, and rebuilds the response.
async fn created_id(response: Response) -> (Response, Option<String>) {
    let (parts, body) = response.into_parts();
    // The body is the handler's JSON, already in memory: no limit to enforce.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let id = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string));
            (Response::from_parts(parts, Body::from(bytes)), id)
        }
        Err(e) => (
            AppError::internal(format!("response body unreadable: {e}")).into_response(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_and_action_come_from_the_route() {
        let cases = [
            (Method::POST, "/api/products", "products", "create"),
            (Method::PUT, "/api/products/{id}", "products", "update"),
            (
                Method::DELETE,
                "/api/dental/patients/{id}",
                "patients",
                "delete",
            ),
            (Method::PATCH, "/api/users/{id}", "users", "update"),
            (
                Method::POST,
                "/api/manufacturing/production-orders/{id}/complete",
                "production-orders",
                "complete",
            ),
            (Method::POST, "/api/data/reset", "data", "reset"),
        ];
        for (method, path, entity, action) in cases {
            assert_eq!(
                describe(&method, path),
                (entity.into(), action.into()),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn shutdown_waits_for_writes_in_flight() {
        let writes = std::sync::Arc::new(WritesInFlight::default());
        writes.wait_idle(std::time::Duration::from_secs(5)).await;
        let guard = writes.enter();
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            drop(guard);
        });
        writes.wait_idle(std::time::Duration::from_secs(5)).await;
        let waited = started.elapsed();
        assert!(waited >= std::time::Duration::from_millis(90), "{waited:?}");
        assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn the_path_id_is_read_where_the_pattern_has_one() {
        assert_eq!(
            path_id("/api/products/{id}", "/api/products/abc").as_deref(),
            Some("abc")
        );
        assert_eq!(path_id("/api/products", "/api/products"), None);
        let id = "a9a7b6c5-1d2e-4f30-8a4b-5c6d7e8f9012";
        for spelling in [
            id.to_string(),
            id.to_uppercase(),
            format!("urn:uuid:{id}"),
            format!("%7B{}%7D", id.to_uppercase()),
            id.replace('-', ""),
        ] {
            assert_eq!(
                path_id("/api/products/{id}", &format!("/api/products/{spelling}")).as_deref(),
                Some(id),
                "{spelling}"
            );
        }
    }
}
