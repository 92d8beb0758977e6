//! The span every log line of a request is written in (its method, path, route,
//! request id, and the tenant id once the tenant is settled), the line that closes
//! it, and the request's figures for `GET /metrics`.

use std::time::{Duration, Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderName, request::Parts},
    middleware::Next,
    response::Response,
};

/// The header carrying a request's id, in and out.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of a request, as set by the stack (`http::stack`): the caller's
/// `X-Request-Id` when it is a sane token (so a gateway's id follows the request),
/// else a new UUID. On every log line of the request and on the response.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id the stack put in a request's extensions; empty outside the stack.
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        Self(
            extensions
                .get::<tower_http::request_id::RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

/// The request's span: method, path, route pattern (where one matched), request id,
/// and an empty `tenant_id` that tenant resolution fills in.
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        route = tracing::field::Empty,
        request_id = %RequestId::of(request.extensions()).0,
        tenant_id = tracing::field::Empty,
    );
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        span.record("route", route.as_str());
    }
    span
}

/// The request's closing log line, in its span.
pub fn log_response<B>(response: &axum::http::Response<B>, latency: Duration, _: &tracing::Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_us = latency.as_micros() as u64,
        "request finished"
    );
}

/// Where [`observe`] counts requests: the metrics, and single-tenant mode's one
/// tenant (whose responses carry no tenant header).
#[derive(Clone)]
pub struct Observer {
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub single_tenant: Option<String>,
    /// Where a tenant's requests are counted for its usage (multi-tenant mode).
    pub usage: Option<std::sync::Arc<crate::usage::UsageMeter>>,
}

/// Counts the request for `GET /metrics`: its tenant, route pattern, status and
/// latency.
pub async fn observe(
    axum::extract::State(observer): axum::extract::State<Option<Observer>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(observer) = observer else {
        return next.run(request).await;
    };
    // The route pattern (`/api/products/{id}`), where the request matched one.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|route| route.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    // The tenant the request was settled as: named on the response (only after
    // the registry found it), or single-tenant mode's one tenant.
    let named = response
        .headers()
        .get(&crate::http::identify::TENANT_HEADER)
        .and_then(|v| v.to_str().ok());
    if let (Some(usage), Some(tenant)) = (&observer.usage, named) {
        usage.request(tenant);
    }
    let tenant = named.or_else(|| {
        observer
            .single_tenant
            .as_deref()
            .filter(|_| route.is_some())
    });
    observer.metrics.observe(
        tenant,
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
