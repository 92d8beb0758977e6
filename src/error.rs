//! The service's one error type, as data: each kind has a stable code and a message
//! for the client. Internal details (database errors, paths, URLs) are logged with
//! the tenant id and never sent to the client. The HTTP layer turns an error into a
//! response (`http::error`); the database layer turns a `DbErr` into one
//! (`db::errors`).

use crate::tenant::{Feature, TenantId};

/// Why a tenant's database could not serve a request. Put on the 503 response (as an
/// extension) so that tenant resolution can tell the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableCause {
    /// The router said no: breaker open, budget exhausted, pool closed under the
    /// request. Nothing to report.
    Router,
    /// The database failed for certain (unreachable, gone, shut down).
    DatabaseFailed,
    /// No connection came within the deadline: a busy pool or a dead server.
    AcquireTimeout,
}

/// `Result` with the service's error type as the default.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no tenant given: use the subdomain, the X-Tenant-ID header or ?tenant_id=")]
    TenantRequired,
    #[error("{0}")]
    InvalidTenantId(String),
    #[error(
        "the request names two different tenants ({first} by {first_source}, {second} by {second_source})"
    )]
    TenantConflict {
        first: String,
        first_source: &'static str,
        second: String,
        second_source: &'static str,
    },
    #[error("tenant '{0}' does not exist")]
    TenantNotFound(String),
    /// The host's subdomain names no tenant, and nothing else in the request does.
    #[error("no tenant has the subdomain '{0}'")]
    UnknownSubdomain(String),
    #[error("tenant '{0}' is suspended")]
    TenantInactive(TenantId),
    #[error("this tenant does not have the '{0}' feature")]
    FeatureNotEnabled(Feature),
    /// The tenant's database cannot be reached now; the detail is for the log only.
    #[error("this tenant's database is temporarily unavailable; retry later")]
    TenantUnavailable {
        retry_after_secs: u64,
        /// Why; the authenticate middleware tells the registry about database
        /// failures, so that it can close the pool and pause attempts.
        cause: UnavailableCause,
    },
    #[error("{message}")]
    Validation {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("a valid admin token is required")]
    Unauthorized,
    /// A tenant route without a valid access token or API key.
    #[error("a valid access token or API key is required")]
    Unauthenticated,
    #[error("invalid username or password")]
    LoginFailed,
    /// The credential belongs to another tenant than the one the request names.
    #[error("the credential was issued by tenant '{credential}', not '{request}'")]
    TenantMismatch { credential: String, request: String },
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// The tenant is over one of its limits (`limit` names it).
    #[error("the tenant is over its {limit}; retry in {retry_after_secs} s")]
    OverLimit {
        limit: &'static str,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request clashes with what exists (a duplicate tenant id or subdomain).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed in a way no route could serve (two `Host`
    /// headers).
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body was not received in time")]
    RequestTimeout,
    /// A body longer than the limit, refused before more of it is read.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The tenant's storage is at or past its quota; writes that add data are
    /// refused until deletes bring it under.
    #[error(
        "the tenant's storage ({used} bytes) is at its quota of {quota} bytes; delete data or raise the quota"
    )]
    QuotaExceeded { used: u64, quota: u64 },
    /// The request ran past `HTTP_REQUEST_TIMEOUT_SECS`; its work was cancelled.
    #[error("the request did not finish within {secs} s")]
    Timeout { secs: u64 },
    /// The service is up but cannot serve yet (its control database does not
    /// answer); `GET /ready` says so, so that a load balancer sends requests elsewhere.
    #[error("{0}")]
    NotReady(String),
    /// A failure the client cannot fix; `detail` goes to the log, never to the client.
    #[error("internal error")]
    Internal { detail: String },
}

impl AppError {
    /// A 422 that names the offending field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An internal error whose detail is logged and hidden from the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            detail: detail.to_string(),
        }
    }

    /// The stable, documented error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TenantRequired => "tenant_required",
            Self::InvalidTenantId(_) => "invalid_tenant_id",
            Self::TenantConflict { .. } => "tenant_conflict",
            Self::TenantNotFound(_) | Self::UnknownSubdomain(_) => "tenant_not_found",
            Self::TenantInactive(_) => "tenant_inactive",
            Self::FeatureNotEnabled(_) => "feature_not_enabled",
            Self::TenantUnavailable { .. } => "tenant_unavailable",
            Self::Validation { .. } => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized | Self::Unauthenticated | Self::LoginFailed => "unauthorized",
            Self::TenantMismatch { .. } => "tenant_mismatch",
            Self::TooManyRequests { .. } | Self::OverLimit { .. } => "too_many_requests",
            Self::Forbidden(_) => "forbidden",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::BadRequest(_) => "bad_request",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Timeout { .. } => "timeout",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::NotReady(_) => "not_ready",
            Self::Internal { .. } => "internal_error",
        }
    }
}
