//! The HTTP layer: [`AppState`], the middleware a request passes through
//! (identification, authentication, feature gate, audit), extractors, error
//! responses, the routes and the server loop. Nothing below this module knows axum
//! or [`AppState`]; see ARCHITECTURE.md.

pub mod admin;
pub mod audit;
pub mod authenticate;
pub mod console;
mod error;
pub mod extract;
pub mod feature_gate;
pub mod identify;
pub mod json;
pub mod openapi;
mod parser_errors;
pub mod request_span;
pub mod routes;
pub mod server;
pub mod stack;
mod stalled_writes;
mod state;
pub mod timestamp;

pub use state::{AppState, AppStateInner};

use axum::{Router, middleware, routing::get};
use serde_json::{Value, json};
use tower::ServiceBuilder;

use crate::{
    error::AppError,
    http::json::Json,
    http::{
        authenticate::{authenticate, require_auth},
        identify::identify,
        routes::{admin_routes, tenant_routes},
    },
};

/// The whole application: its routes in the HTTP stack (`stack`), which counts
/// each request in the state's metrics.
pub fn router(state: AppState, mut stack: stack::StackOptions) -> Router {
    stack.observer = Some(request_span::Observer {
        metrics: state.metrics.clone(),
        single_tenant: state.single_tenant.as_ref().map(|t| t.id.to_string()),
    });
    let routes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(routes::tenants::public_router())
        .merge(openapi::router())
        .merge(console::router())
        .merge(admin_routes(&state))
        .merge(
            // Tenant-scoped: identified, authenticated, held to the tenant's
            // limits (only a caller with a credential counts: anonymous requests
            // are refused at once, or are logins, which have throttles of their
            // own), then audited.
            // Each group is one `route_layer`: every layer call boxes the route once
            // more, and each middleware function clones all the boxes below it per
            // request.
            tenant_routes()
                .into_router()
                .route_layer(
                    ServiceBuilder::new()
                        .layer(middleware::from_fn(require_auth))
                        .layer(middleware::from_fn_with_state(
                            state.clone(),
                            crate::http::authenticate::limit,
                        ))
                        .layer(middleware::from_fn_with_state(
                            state.clone(),
                            crate::http::audit::record_writes,
                        )),
                )
                .merge(routes::auth::login_router())
                .route_layer(
                    ServiceBuilder::new()
                        .layer(middleware::from_fn_with_state(state.clone(), identify))
                        .layer(middleware::from_fn_with_state(state.clone(), authenticate)),
                ),
        )
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .with_state(state);
    stack::wrap(routes, &stack)
}

/// Alive: answers while the process serves.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "Alive", body = Object, example = json!({"status": "ok"}))))]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// How long `/ready` waits for the control database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready to serve: the listener answers (this request is the proof) and, in
/// multi-tenant mode, the control database, where the tenants live, answers too.
/// 503 `not_ready` otherwise, so that a load balancer or an orchestrator's
/// readiness probe sends requests to another replica; `/health` stays 200 (alive).
#[utoipa::path(get, path = "/ready", tag = "service",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The control database does not answer (`not_ready`)", body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<Value>, AppError> {
    if let Some(lifecycle) = &state.lifecycle {
        let answer = tokio::time::timeout(READY_TIMEOUT, lifecycle.control_answers()).await;
        let failure = match answer {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(crate::db::redact_error(&e)),
            Err(_) => Some(format!("no answer within {READY_TIMEOUT:?}")),
        };
        if let Some(error) = failure {
            tracing::warn!(%error, "not ready: the control database does not answer");
            return Err(AppError::NotReady(
                "the control database does not answer".into(),
            ));
        }
    }
    Ok(Json(json!({ "status": "ready" })))
}
