//! Operator authentication: `Authorization: Bearer <ADMIN_TOKEN>`, or the admin
//! console's session cookie (see [`crate::auth::console`]), whose writes must also
//! carry the session's `X-CSRF-Token`.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{auth::LoginThrottle, error::AppError, http::AppState, secret::constant_time_eq};

/// Lets the request through only with the admin token, compared in constant time,
/// or a console session (with its CSRF token for a write). Wrong tokens count
/// against the client's address: past
/// `ADMIN_MAX_FAILURES_PER_ADDRESS` within the window, the address gets 429 with
/// `Retry-After`, the right token included.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let address = super::authenticate::client_address(&state.auth, &parts);
    let key = LoginThrottle::admin_key(&address);
    let throttle = &state.auth.throttle;
    if let Err(retry_after_secs) = throttle.begin_attempt(&[&key]).await {
        tracing::warn!(%address, "admin request refused: too many wrong tokens");
        return AppError::TooManyRequests { retry_after_secs }.into_response();
    }
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Only a wrong token counts against the address: a request with no
    // credential (a page elsewhere can make a browser send any number of them)
    // or a console write without its CSRF token (a stale tab) guesses nothing,
    // and must not lock the operator out.
    let allowed = match presented {
        Some(token) => constant_time_eq(token.as_bytes(), state.admin_token.expose().as_bytes()),
        None => {
            throttle.give_back(&[&key]).await;
            match console_session(&state, &parts.headers) {
                Some(session) => {
                    if !parts.method.is_safe() && !csrf_matches(&state, &session, &parts.headers) {
                        tracing::warn!(%address, method = %parts.method, "console write refused: no valid CSRF token");
                        return csrf_refused().into_response();
                    }
                    return next.run(Request::from_parts(parts, body)).await;
                }
                None => {
                    tracing::warn!(%address, "admin request refused: no token");
                    return AppError::Unauthorized.into_response();
                }
            }
        }
    };
    if !allowed {
        tracing::warn!(%address, "admin request refused: wrong token");
        return AppError::Unauthorized.into_response();
    }
    throttle.give_back(&[&key]).await;
    next.run(Request::from_parts(parts, body)).await
}

/// The console session the request's cookie stands for, if any.
pub fn console_session(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Option<crate::auth::console::Session> {
    let value = cookie(headers, crate::auth::console::COOKIE_NAME)?;
    state.console.verify(value)
}

/// Whether the request carries `session`'s CSRF token (`X-CSRF-Token`).
pub fn csrf_matches(
    state: &AppState,
    session: &crate::auth::console::Session,
    headers: &axum::http::HeaderMap,
) -> bool {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|presented| state.console.csrf_matches(session, presented))
}

/// The value of the cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The answer to a console write without its CSRF token: 403 `forbidden`.
pub fn csrf_refused() -> AppError {
    AppError::Forbidden("a console write needs its session's X-CSRF-Token header".into())
}
