//! Operator authentication: `Authorization: Bearer <ADMIN_TOKEN>`.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{auth::LoginThrottle, error::AppError, http::AppState, secret::constant_time_eq};

/// Lets the request through only with the admin token, compared in constant time.
/// Wrong tokens count against the client's address: past
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let allowed = presented.is_some_and(|token| {
        constant_time_eq(token.as_bytes(), state.admin_token.expose().as_bytes())
    });
    if !allowed {
        tracing::warn!(%address, "admin request refused: wrong or missing token");
        return AppError::Unauthorized.into_response();
    }
    throttle.give_back(&[&key]).await;
    next.run(Request::from_parts(parts, body)).await
}
