//! What every request passes through around the routes, from tower-http: its
//! request id (kept from the caller when sane, else a new UUID; on the response),
//! its trace span and closing log line, CORS for the configured origins, gzip, a
//! deadline for the whole request, a caught panic, and the body's limit and
//! timeout; and one `Host` header at most. Whatever these layers answer by
//! themselves leaves in the service's JSON error shape.

use std::{any::Any, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderValue, Method, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::RequestBodyTimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    error::AppError,
    http::{
        extract::MAX_BODY_BYTES,
        request_span::{
            MakeRequestId, Observer, REQUEST_ID_HEADER, log_response, observe, request_span,
        },
    },
};

/// How the stack is set up (from settings).
#[derive(Clone)]
pub struct StackOptions {
    /// How long a client may pause while sending a body (`HTTP_BODY_TIMEOUT_SECS`).
    pub body_timeout: Duration,
    /// How long a whole request may take (`HTTP_REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// Origins allowed to call the API from a browser (`CORS_ALLOWED_ORIGINS`),
    /// already checked; empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Where each request's figures go, if anywhere.
    pub observer: Option<Observer>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            cors_origins: Vec::new(),
            observer: None,
        }
    }
}

/// Wraps `router` (every route and its fallback) in the stack, outermost first.
pub fn wrap(router: Router, options: &StackOptions) -> Router {
    // One `layer` call. Each call boxes every route once more, and each of axum's
    // middleware functions clones, for each request, every box below it: with a
    // call per layer, a request made about 120 boxed clones, an eighth of its work.
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::map_request(drop_unsafe_request_id))
            .layer(SetRequestIdLayer::new(
                REQUEST_ID_HEADER.clone(),
                MakeRequestId,
            ))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_request(())
                    .on_response(log_response)
                    // Errors are logged where they happen, with their cause.
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER.clone()))
            .layer(middleware::from_fn_with_state(
                options.observer.clone(),
                observe,
            ))
            .option_layer(cors(&options.cors_origins))
            .layer(CompressionLayer::new().gzip(true))
            // Above the layers that change the request's body type: a middleware
            // function takes axum's own. So a request with two Host headers and a
            // body over the limit gets this 400, not the 413.
            .layer(middleware::from_fn(shape_answers))
            .layer(middleware::from_fn_with_state(
                options.request_timeout,
                deadline,
            ))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(RequestBodyTimeoutLayer::new(options.body_timeout))
            .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES)),
    )
}

/// Whether a request's write may still commit: shared by [`deadline`], which
/// answers 503 at the request's deadline, and the write (`http::audit`), which
/// runs on in a task of its own and must not commit once its client has been
/// told it timed out, nor, its client gone, past the deadline. The first to
/// move the gate wins.
#[derive(Clone)]
pub struct CommitGate(std::sync::Arc<GateState>);

struct GateState {
    state: std::sync::atomic::AtomicU8,
    deadline: tokio::time::Instant,
}

const OPEN: u8 = 0;
const COMMITTING: u8 = 1;
const TIMED_OUT: u8 = 2;

impl CommitGate {
    fn new(deadline: tokio::time::Instant) -> Self {
        Self(std::sync::Arc::new(GateState {
            state: std::sync::atomic::AtomicU8::new(OPEN),
            deadline,
        }))
    }

    /// The write is about to commit: `false` once the deadline has answered, or
    /// has passed with no one left to answer (the write must roll back).
    pub fn begin_commit(&self) -> bool {
        if tokio::time::Instant::now() >= self.0.deadline {
            self.time_out();
            return false;
        }
        self.swap(OPEN, COMMITTING)
    }

    /// The deadline has come: `false` while a commit is under way (its outcome is
    /// the answer).
    fn time_out(&self) -> bool {
        self.swap(OPEN, TIMED_OUT)
    }

    fn swap(&self, from: u8, to: u8) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The deadline of a whole request (`HTTP_REQUEST_TIMEOUT_SECS`): past it, 503
/// `timeout`, and the request's work is dropped, unless its write has begun to
/// commit, whose outcome is then the answer.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    mut request: Request,
    next: middleware::Next,
) -> Response {
    let at = tokio::time::Instant::now() + limit;
    // Only a write can commit: a read needs no gate (nor its allocation).
    let gate = (!request.method().is_safe()).then(|| CommitGate::new(at));
    if let Some(gate) = &gate {
        request.extensions_mut().insert(gate.clone());
    }
    let run = next.run(request);
    tokio::pin!(run);
    tokio::select! {
        response = &mut run => response,
        () = tokio::time::sleep_until(at) => {
            if gate.as_ref().is_none_or(CommitGate::time_out) {
                let secs = limit.as_secs().max(1);
                tracing::warn!(timeout_secs = secs, "request cancelled at its deadline");
                AppError::Timeout { secs }.into_response()
            } else {
                run.await
            }
        }
    }
}

/// What every answer of the layers below gets, in one middleware (each of axum's
/// middleware layers costs every request a clone of the stack below it): one
/// `Host` header at most ([`single_host`]), the service's JSON error shape
/// ([`json_errors`]), and under `/admin` the console's security headers, whichever
/// layer answered (a 405, a 413 from the body limit).
async fn shape_answers(request: Request, next: middleware::Next) -> Response {
    let console = crate::http::console::is_console_path(request.uri().path());
    let mut response = match single_host(&request) {
        Some(refused) => refused,
        None => json_errors(next.run(request).await),
    };
    if console {
        crate::http::console::secure_headers(response.headers_mut());
    }
    response
}

/// Refuses a request with more than one `Host` header (400 `bad_request`): which
/// one names the tenant would be a guess, and a proxy may have read the other.
fn single_host(request: &Request) -> Option<Response> {
    let hosts = request.headers().get_all(header::HOST);
    hosts.iter().nth(1).is_some().then(|| {
        AppError::BadRequest("the request has more than one Host header".into()).into_response()
    })
}

/// An `X-Request-Id` from the caller is kept only when it is a short token of
/// letters, digits and `-_.`: it goes into every log line of the request.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let sane = |v: &HeaderValue| {
        (1..=64).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let headers = request.headers_mut();
    let values = headers.get_all(&REQUEST_ID_HEADER);
    let keep = values.iter().count() == 1 && values.iter().all(sane);
    if !keep {
        headers.remove(&REQUEST_ID_HEADER);
    }
    request
}

/// CORS for `origins`, or none: a browser page from anywhere else gets no
/// `Access-Control-Allow-Origin` and cannot read a response.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                crate::http::identify::TENANT_HEADER.clone(),
                REQUEST_ID_HEADER.clone(),
            ])
            .expose_headers([
                crate::http::identify::TENANT_HEADER.clone(),
                REQUEST_ID_HEADER.clone(),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The layers below answer a body over the limit (413) themselves, without a
/// JSON body, and so does the docs page's file server for a file it does not have
/// (404) or a path it cannot read (400): those answers get the service's error
/// shape; every answer of the service's own is JSON already.
fn json_errors(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        }
        .into_response(),
        StatusCode::NOT_FOUND => AppError::NotFound("no such route".into()).into_response(),
        StatusCode::BAD_REQUEST => {
            AppError::BadRequest("the request could not be read".into()).into_response()
        }
        _ => response,
    }
}

/// A handler that panicked: 500 `internal_error`, the panic's message (redacted)
/// in the log, and the server goes on.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    AppError::internal(format!(
        "the handler panicked: {}",
        crate::secret::redact(message)
    ))
    .into_response()
}
