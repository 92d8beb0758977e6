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

/// Makes the ids of requests that come without a sane one: random (version 4)
/// UUIDs, as tower-http's `MakeRequestUuid` makes, from a generator seeded once
/// per thread by the operating system rather than a `getrandom` system call per
/// request (one of the six a request made). Ids name requests in logs; they are
/// never secrets.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeRequestId;

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let id = uuid::Builder::from_random_bytes(random_bytes()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut text);
        axum::http::HeaderValue::from_str(text)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// 16 bytes from this thread's xoshiro256++ generator.
fn random_bytes() -> [u8; 16] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<[u64; 4]> = Cell::new({
            // Two OS-random UUIDs: 244 random bits. A version 4 UUID is never
            // zero, so neither is the state (the one state the generator cannot
            // leave); the `| 1` says so where it matters.
            let (a, b) = (uuid::Uuid::new_v4().as_u64_pair(), uuid::Uuid::new_v4().as_u64_pair());
            [a.0 | 1, a.1, b.0, b.1]
        });
    }
    STATE.with(|state| {
        let mut s = state.get();
        let mut next = || {
            let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            result
        };
        let (high, low) = (next(), next());
        state.set(s);
        ((u128::from(high) << 64) | u128::from(low)).to_be_bytes()
    })
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tower_http::request_id::MakeRequestId as _;

    fn ids(count: usize) -> Vec<uuid::Uuid> {
        let request = axum::http::Request::new(());
        (0..count)
            .map(|_| {
                let id = super::MakeRequestId
                    .make_request_id(&request)
                    .expect("an id");
                id.header_value().to_str().unwrap().parse().unwrap()
            })
            .collect()
    }

    /// Version 4 UUIDs, in their hyphenated form, each one new: within a thread
    /// and across threads (each seeded on its own).
    #[test]
    fn request_ids_are_new_random_uuids() {
        let mut all = ids(20_000);
        let others: Vec<_> = (0..4).map(|_| std::thread::spawn(|| ids(5_000))).collect();
        for other in others {
            all.extend(other.join().unwrap());
        }
        assert!(
            all.iter()
                .all(|id| id.get_version_num() == 4 && id.get_variant() == uuid::Variant::RFC4122)
        );
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
        // Every bit a version 4 UUID leaves random takes both values.
        let (ones, zeros) = all.iter().fold((0u128, 0u128), |(o, z), id| {
            (o | id.as_u128(), z | !id.as_u128())
        });
        let fixed = 0xF000u128 << 64 | 0xC000_0000_0000_0000u128;
        assert_eq!(ones | fixed, u128::MAX);
        assert_eq!(zeros | fixed, u128::MAX);
    }
}
