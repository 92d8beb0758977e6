//! Errors as responses: each [`AppError`] leaves as `{"error": {"code": "...",
//! "message": "..."}}` with its HTTP status, and `Retry-After` or
//! `WWW-Authenticate` where the error calls for one.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    error::{AppError, UnavailableCause},
    http::json::Json,
};

impl AppError {
    /// The HTTP status the error answers with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::TenantRequired | Self::InvalidTenantId(_) | Self::TenantConflict { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::TenantNotFound(_) | Self::UnknownSubdomain(_) | Self::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            Self::TenantInactive(_)
            | Self::FeatureNotEnabled(_)
            | Self::Forbidden(_)
            | Self::TenantMismatch { .. } => StatusCode::FORBIDDEN,
            Self::TenantUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized | Self::Unauthenticated | Self::LoginFailed => {
                StatusCode::UNAUTHORIZED
            }
            Self::TooManyRequests { .. } | Self::OverLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Internal { detail } = &self {
            // The span of the request carries the tenant id.
            tracing::error!(error = %detail, "request failed");
        }
        let mut body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        if let Self::Validation {
            field: Some(field), ..
        } = &self
        {
            body["error"]["field"] = json!(field);
        }
        let mut response = (self.status_code(), Json(body)).into_response();
        match &self {
            Self::TenantUnavailable {
                retry_after_secs,
                cause,
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                if *cause != UnavailableCause::Router {
                    response.extensions_mut().insert(*cause);
                }
            }
            Self::Timeout { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            Self::TooManyRequests { retry_after_secs }
            | Self::OverLimit {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unauthorized | Self::Unauthenticated => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
