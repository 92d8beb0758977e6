//! Operator authentication: `Authorization: Bearer <ADMIN_TOKEN>`.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{error::AppError, secret::constant_time_eq, startup::AppState};

/// Lets the request through only with the admin token, compared in constant time.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token)
            if constant_time_eq(token.as_bytes(), state.admin_token.expose().as_bytes()) =>
        {
            next.run(request).await
        }
        _ => AppError::Unauthorized.into_response(),
    }
}

/// A random token for when `ADMIN_TOKEN` is unset: 244 random bits from two v4 UUIDs.
pub fn generate_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
