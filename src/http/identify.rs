//! Tenant identification: which tenant a request is about, from the subdomain of its
//! `Host`, the `X-Tenant-ID` header or the `tenant_id` query parameter.
//!
//! [`identify_tenant`] is a pure function over the request head; the middleware
//! [`identify`] runs it for tenant-scoped routes and leaves what the request names
//! ([`Named`]) to the authentication step, which settles the tenant.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderName, Uri, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    error::AppError,
    http::AppState,
    settings::IdentifySettings,
    tenant::{TenantConfig, TenantId},
};

/// The header that names a tenant, on requests and on every tenant-scoped response.
pub static TENANT_HEADER: HeaderName = HeaderName::from_static("x-tenant-id");

/// The query parameter that names a tenant.
pub const TENANT_QUERY_PARAM: &str = "tenant_id";

/// Where a tenant id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    Subdomain,
    Header,
    Query,
}

impl IdSource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdSource::Subdomain => "subdomain",
            IdSource::Header => "X-Tenant-ID header",
            IdSource::Query => "tenant_id query parameter",
        }
    }
}

/// Finds the tenant a request names. Malformed input in any source is refused
/// first (400 `invalid_tenant_id`), then disagreement between sources (400
/// `tenant_conflict`), then absence (400 `tenant_required`). A subdomain label that
/// names no tenant is a 404 when nothing else names one, and is ignored otherwise
/// (a host such as `api.example.com` that is not a tenant's).
pub fn identify_tenant(
    headers: &HeaderMap,
    uri: &Uri,
    settings: &IdentifySettings,
    subdomain_to_tenant: impl Fn(&str) -> Option<TenantId>,
) -> Result<(TenantId, IdSource), AppError> {
    let label = if settings.by_subdomain {
        subdomain_label(headers, uri, settings)?
    } else {
        None
    };
    let mut found: Vec<(TenantId, IdSource)> = Vec::with_capacity(2);
    if settings.by_header {
        for value in headers.get_all(&TENANT_HEADER) {
            let raw = value.to_str().map_err(|_| {
                AppError::InvalidTenantId("X-Tenant-ID header: tenant id must be ASCII".into())
            })?;
            found.push((parse_id(raw, IdSource::Header)?, IdSource::Header));
        }
    }
    if settings.by_query
        && let Some(query) = uri.query()
    {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == TENANT_QUERY_PARAM {
                found.push((parse_id(&value, IdSource::Query)?, IdSource::Query));
            }
        }
    }
    if let Some(label) = label {
        match subdomain_to_tenant(&label) {
            Some(id) => found.insert(0, (id, IdSource::Subdomain)),
            None if found.is_empty() => {
                return Err(AppError::UnknownSubdomain(label));
            }
            None => {}
        }
    }

    let mut found = found.into_iter();
    let (first, first_source) = found.next().ok_or(AppError::TenantRequired)?;
    if let Some((other, other_source)) = found.find(|(id, _)| *id != first) {
        return Err(AppError::TenantConflict {
            first: first.to_string(),
            first_source: first_source.as_str(),
            second: other.to_string(),
            second_source: other_source.as_str(),
        });
    }
    Ok((first, first_source))
}

fn parse_id(raw: &str, source: IdSource) -> Result<TenantId, AppError> {
    TenantId::parse(raw).map_err(|m| AppError::InvalidTenantId(format!("{}: {m}", source.as_str())))
}

/// The label in front of the base domain (`<label>.<base_domain>`), if the host is a
/// subdomain of it and not an ignored label such as `www`.
fn subdomain_label(
    headers: &HeaderMap,
    uri: &Uri,
    settings: &IdentifySettings,
) -> Result<Option<String>, AppError> {
    // An absolute-form target (`GET http://host/path`) names the host; the Host
    // header is then ignored (RFC 9112, 3.2.2).
    let host = match (uri.host(), headers.get(header::HOST)) {
        (Some(h), _) => h,
        (None, Some(value)) => match value.to_str() {
            Ok(h) => h,
            Err(_) => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    let host = host.to_ascii_lowercase();
    // IPv6 literals ("[::1]:8000") are never subdomains.
    if host.starts_with('[') {
        return Ok(None);
    }
    let name = host
        .rsplit_once(':')
        .map_or(host.as_str(), |(name, _port)| name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let Some(prefix) = name
        .strip_suffix(settings.base_domain.as_str())
        .and_then(|p| p.strip_suffix('.'))
    else {
        return Ok(None);
    };
    // Only `<label>.<base_domain>` names a tenant; deeper hosts are not tenants'.
    if prefix.contains('.') || settings.ignored_subdomains.iter().any(|s| s == prefix) {
        return Ok(None);
    }
    let valid = !prefix.is_empty()
        && prefix.len() <= 63
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(AppError::InvalidTenantId(
            "subdomain: the tenant's subdomain must be one DNS label (letters, digits, '-')".into(),
        ));
    }
    Ok(Some(prefix.to_string()))
}

/// The tenant a request is served as; put in the request's extensions by
/// [`super::authenticate::authenticate`] and read by handlers.
#[derive(Clone, Debug)]
pub struct TenantContext {
    pub config: Arc<TenantConfig>,
}

impl<S: Send + Sync> FromRequestParts<S> for TenantContext {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .ok_or_else(|| AppError::internal("tenant route mounted without authenticate"))
    }
}

/// What a request names as its tenant, in its extensions: put there by
/// [`identify`], settled with the caller's credential by
/// [`super::authenticate::authenticate`].
#[derive(Clone, Debug)]
pub enum Named {
    Tenant(TenantId),
    /// No source names a tenant.
    Nothing,
    /// The host is `<label>.<base domain>` and no tenant has that subdomain (a
    /// host such as `api.example.com`): a 404 unless a credential names the tenant.
    UnknownSubdomain(String),
}

/// Middleware, the first step for tenant-scoped routes: finds what the request
/// names as its tenant (nothing to find in single-tenant mode) and refuses
/// malformed or conflicting names.
pub async fn identify(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let named = match &state.single_tenant {
        Some(single) => Named::Tenant(single.id.clone()),
        None => match identify_tenant(request.headers(), request.uri(), &state.identify, |label| {
            state.registry.by_subdomain(label)
        }) {
            Ok((id, _source)) => Named::Tenant(id),
            Err(AppError::TenantRequired) => Named::Nothing,
            Err(AppError::UnknownSubdomain(label)) => Named::UnknownSubdomain(label),
            Err(e) => return e.into_response(),
        },
    };
    request.extensions_mut().insert(named);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn settings() -> IdentifySettings {
        IdentifySettings {
            by_subdomain: true,
            by_header: true,
            by_query: true,
            base_domain: "example.com".into(),
            ignored_subdomains: vec!["www".into()],
        }
    }

    fn lookup(label: &str) -> Option<TenantId> {
        match label {
            "acme" => TenantId::parse("acme").ok(),
            "dental-abc" => TenantId::parse("dental_abc").ok(),
            _ => None,
        }
    }

    fn identify(req: Request<()>) -> Result<(TenantId, IdSource), AppError> {
        identify_tenant(req.headers(), req.uri(), &settings(), lookup)
    }

    fn code(req: Request<()>) -> &'static str {
        identify(req).expect_err("should be refused").code()
    }

    fn get(uri: &str) -> axum::http::request::Builder {
        Request::builder().uri(uri)
    }

    #[test]
    fn each_source_identifies_on_its_own() {
        let by_host = get("/")
            .header("host", "dental-abc.example.com:8000")
            .body(())
            .unwrap();
        assert_eq!(identify(by_host).unwrap().0.as_str(), "dental_abc");
        let by_header = get("/").header("x-tenant-id", "acme").body(()).unwrap();
        assert_eq!(identify(by_header).unwrap().1, IdSource::Header);
        let by_query = get("/p?limit=2&tenant_id=acme").body(()).unwrap();
        assert_eq!(identify(by_query).unwrap().1, IdSource::Query);
    }

    #[test]
    fn agreeing_sources_are_fine_and_disagreeing_ones_conflict() {
        let same = get("/?tenant_id=acme")
            .header("host", "ACME.example.com")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap();
        assert_eq!(identify(same).unwrap().1, IdSource::Subdomain);
        let differ = get("/?tenant_id=other")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap();
        assert_eq!(code(differ), "tenant_conflict");
        let two_headers = get("/")
            .header("x-tenant-id", "a")
            .header("x-tenant-id", "b")
            .body(())
            .unwrap();
        assert_eq!(code(two_headers), "tenant_conflict");
    }

    #[test]
    fn nothing_is_tenant_required() {
        assert_eq!(code(get("/").body(()).unwrap()), "tenant_required");
        let bare = get("/").header("host", "example.com").body(()).unwrap();
        assert_eq!(code(bare), "tenant_required");
        let www = get("/").header("host", "www.example.com").body(()).unwrap();
        assert_eq!(code(www), "tenant_required");
        let ip = get("/").header("host", "127.0.0.1:8000").body(()).unwrap();
        assert_eq!(code(ip), "tenant_required");
    }

    #[test]
    fn malformed_ids_are_invalid() {
        for bad in ["../etc", "a;drop table x", "Acme", "", &"a".repeat(64)] {
            let req = get("/").header("x-tenant-id", bad).body(()).unwrap();
            assert_eq!(code(req), "invalid_tenant_id", "{bad:?}");
        }
        let non_ascii = get("/")
            .header(
                "x-tenant-id",
                axum::http::HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
            )
            .body(())
            .unwrap();
        assert_eq!(code(non_ascii), "invalid_tenant_id");
        let query = get("/?tenant_id=..%2Fetc").body(()).unwrap();
        assert_eq!(code(query), "invalid_tenant_id");
        let bad_label = get("/")
            .header("host", "bad_label.example.com")
            .body(())
            .unwrap();
        assert_eq!(code(bad_label), "invalid_tenant_id");
        let bad_header_unknown_host = get("/")
            .header("host", "nobody.example.com")
            .header("x-tenant-id", "../x")
            .body(())
            .unwrap();
        assert_eq!(code(bad_header_unknown_host), "invalid_tenant_id");
    }

    #[test]
    fn invalid_input_wins_over_conflict() {
        let req = get("/?tenant_id=Bad")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap();
        assert_eq!(code(req), "invalid_tenant_id");
    }

    #[test]
    fn unknown_subdomain_is_not_found_unless_another_source_names_the_tenant() {
        let req = get("/")
            .header("host", "nobody.example.com")
            .body(())
            .unwrap();
        assert_eq!(code(req), "tenant_not_found");
        let api_host = get("/")
            .header("host", "api.example.com")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap();
        assert_eq!(identify(api_host).unwrap().1, IdSource::Header);
    }

    #[test]
    fn an_absolute_form_target_names_the_host_and_the_host_header_is_ignored() {
        let absolute = get("http://acme.example.com/api/products")
            .header("host", "dental-abc.example.com")
            .body(())
            .unwrap();
        assert_eq!(identify(absolute).unwrap().0.as_str(), "acme");
    }

    #[test]
    fn deeper_hosts_are_not_subdomains() {
        let nested = get("/").header("host", "a.b.example.com").body(()).unwrap();
        assert_eq!(code(nested), "tenant_required");
        let nested_with_header = get("/")
            .header("host", "a.b.example.com")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap();
        assert_eq!(identify(nested_with_header).unwrap().1, IdSource::Header);
    }

    #[test]
    fn disabled_sources_are_ignored() {
        let mut s = settings();
        s.by_header = false;
        let req = get("/").header("x-tenant-id", "acme").body(()).unwrap();
        let err = identify_tenant(req.headers(), req.uri(), &s, lookup).unwrap_err();
        assert_eq!(err.code(), "tenant_required");
    }
}
