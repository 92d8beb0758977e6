//! The span every log line of a request is written in: its method, path and
//! request id, and the tenant id once the tenant is settled.

use std::time::Instant;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

/// The header carrying a request's id, in and out.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of a request: the caller's `X-Request-Id` when it is a sane token (so a
/// gateway's id follows the request), else a new UUID. In the request's extensions,
/// on every log line of the request and on the response.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    fn of(request: &Request) -> Self {
        let incoming = request
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                (1..=64).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        Self(incoming.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().to_string())))
    }
}

/// Opens the request's span (method, path, request id, and an empty `tenant_id` that
/// tenant resolution fills in) and logs the outcome.
pub async fn request_span(
    axum::extract::State(state): axum::extract::State<crate::http::AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = RequestId::of(&request);
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        route = tracing::field::Empty,
        request_id = %request_id.0,
        tenant_id = tracing::field::Empty,
    );
    // The route pattern (`/api/products/{id}`), where the request matched one.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|route| route.as_str().to_owned());
    if let Some(route) = &route {
        span.record("route", route.as_str());
    }
    let header_value = HeaderValue::from_str(&request_id.0).ok();
    request.extensions_mut().insert(request_id);
    let started = Instant::now();
    async move {
        let mut response = next.run(request).await;
        if let Some(value) = header_value {
            response
                .headers_mut()
                .insert(REQUEST_ID_HEADER.clone(), value);
        }
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        tracing::info!(
            status,
            latency_us = elapsed.as_micros() as u64,
            "request finished"
        );
        // The tenant the request was settled as: named on the response (only
        // after the registry found it), or single-tenant mode's one tenant.
        let tenant = response
            .headers()
            .get(&crate::http::identify::TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                state
                    .single_tenant
                    .as_ref()
                    .filter(|_| route.is_some())
                    .map(|t| t.id.as_str())
            });
        state.metrics.observe(
            tenant,
            route.as_deref().unwrap_or("unmatched"),
            status,
            elapsed,
        );
        response
    }
    .instrument(span)
    .await
}
