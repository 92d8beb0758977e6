//! The admin console at `/admin`: a page, a stylesheet and a script, all inside
//! the binary, served under a strict Content-Security-Policy. The page holds no
//! data: it signs in at `POST /admin/session` with the admin token, which the
//! browser then forgets; the session lives in an `HttpOnly`, `SameSite=Strict`
//! cookie ([`crate::auth::console`]) and every write carries its CSRF token. All
//! the console shows and does goes through the admin API (`/api/admin/…`,
//! `/api/tenants…`), which accepts the session in place of the token.

use axum::{
    Router,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    auth::{LoginThrottle, console::COOKIE_NAME},
    error::AppError,
    http::json::Json,
    http::{
        AppState,
        admin::{console_session, csrf_matches, csrf_refused},
        extract::ApiJson,
    },
    secret::constant_time_eq,
};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// What the console's own pages may load and do: nothing from elsewhere, no
/// inline script or style, no framing, no form posts, no plugins. Logos of
/// tenants may come from any `https:` address (the branding preview).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' https:; connect-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/console.js", get(script))
        .route("/admin/console.css", get(style))
        .route(
            "/admin/session",
            get(session).post(sign_in).delete(sign_out),
        )
}

/// Whether `path` is the console's (every answer there gets [`secure_headers`]).
pub fn is_console_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Headers on every console answer, its errors included (a 405, a 413 from the
/// body limit): the policy above, no caching, no sniffing, no referrer. Set by
/// the stack (`http::stack`), around every layer that may answer.
pub fn secure_headers(headers: &mut axum::http::HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// Whether the browser says the request comes from another site: such a request
/// never signs in or out (`Sec-Fetch-Site`, sent by every current browser).
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site != "same-origin" && site != "none")
}

/// Whether the session cookie is marked `Secure` (sent over HTTPS only): always,
/// but for a console reached on this machine's loopback address over plain HTTP
/// (`cargo run`, tests), which browsers would otherwise refuse to keep it for. A
/// proxy in front says how it was reached with `X-Forwarded-Proto`.
fn secure_cookie(headers: &HeaderMap) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok());
    if let Some(proto) = forwarded {
        return !proto.eq_ignore_ascii_case("http") || !loopback_host(headers);
    }
    !loopback_host(headers)
}

/// Whether the request's `Host` is a loopback name or address.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tr_console=; Path=/; Max-Age=0"))
}

/// `GET /admin/session`: whether the browser is signed in, and the CSRF token
/// its writes must carry. Readable only by the console's own pages (no CORS for
/// it, and the cookie is `SameSite=Strict`).
async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match console_session(&state, &headers) {
        Some(session) => Json(signed_in(&state, &session)).into_response(),
        None => Json(json!({ "signed_in": false })).into_response(),
    }
}

/// What the page learns of its session: the CSRF token, when it ends, and
/// whether tenants can be managed here (multi-tenant mode).
fn signed_in(state: &AppState, session: &crate::auth::console::Session) -> serde_json::Value {
    json!({
        "signed_in": true,
        "csrf_token": state.console.csrf_token(session),
        "expires_at": session.expires,
        "multi_tenant": state.lifecycle.is_some(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /admin/session {"token": …}`: the admin token, checked in constant time
/// and throttled like the admin routes' wrong tokens; on success a session cookie.
async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let secure = secure_cookie(&parts.headers);
    if cross_site(&parts.headers) {
        return AppError::Forbidden("sign in from the console's own page".into()).into_response();
    }
    let address = super::authenticate::client_address(&state.auth, &parts);
    let key = LoginThrottle::admin_key(&address);
    let throttle = &state.auth.throttle;
    if let Err(retry_after_secs) = throttle.begin_attempt(&[&key]).await {
        tracing::warn!(%address, "console sign-in refused: too many wrong tokens");
        return AppError::TooManyRequests { retry_after_secs }.into_response();
    }
    let request = Request::from_parts(parts, body);
    let ApiJson(SignIn { token }) = match ApiJson::<SignIn>::from_request(request, &state).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if !constant_time_eq(
        token.trim().as_bytes(),
        state.admin_token.expose().as_bytes(),
    ) {
        tracing::warn!(%address, "console sign-in refused: wrong admin token");
        return AppError::Unauthorized.into_response();
    }
    throttle.give_back(&[&key]).await;
    let value = state.console.issue();
    let Some(session) = state.console.verify(&value) else {
        return AppError::internal("a session just issued does not verify").into_response();
    };
    tracing::info!(%address, "console session started");
    let mut response = (StatusCode::CREATED, Json(signed_in(&state, &session))).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &value,
            crate::auth::console::SESSION_LIFETIME.as_secs(),
            secure,
        ),
    );
    response
}

/// `DELETE /admin/session` (with the CSRF token): ends the session here. The
/// cookie is cleared whatever happens, so that a page whose CSRF token went stale
/// still signs out of this browser; without the right token the session itself is
/// not revoked (403).
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = match console_session(&state, &headers) {
        Some(session) if csrf_matches(&state, &session, &headers) => {
            state.console.revoke(&session);
            tracing::info!("console session ended");
            StatusCode::NO_CONTENT.into_response()
        }
        Some(_) => csrf_refused().into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, secure_cookie(&headers)),
    );
    response
}
