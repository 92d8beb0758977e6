//! Request extractors that answer with the service's JSON errors: bodies, query
//! strings and path ids that fail to parse become 422 `validation_failed` naming
//! the field, and [`TenantDb`] hands a handler its tenant's pool.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{db::conn::TenantConn, error::AppError, http::AppState, http::identify::TenantContext};

/// Largest request body accepted. The HTTP stack (`http::stack`) refuses a longer
/// one: on its `Content-Length` before a byte is read, or once the limit has
/// streamed in.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Reads a whole request body: 413 `payload_too_large` past [`MAX_BODY_BYTES`],
/// 408 `request_timeout` when the client stops sending it for
/// `HTTP_BODY_TIMEOUT_SECS` (the stack's body timeout), 422 for any other failure,
/// and for a body sent with a `Content-Encoding` (none is decoded: read as it
/// came, a compressed body would mean one thing here and another to a proxy that
/// decodes it).
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, AppError> {
    let encoded = request
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(AppError::validation(
            "body",
            "a Content-Encoding is not accepted: send the body as it is",
        ));
    }
    match Bytes::from_request(request, state).await {
        Ok(bytes) => Ok(bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(AppError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            })
        }
        Err(rejection) if timed_out(&rejection) => Err(AppError::RequestTimeout),
        Err(_) => Err(AppError::validation("body", "the body could not be read")),
    }
}

/// Whether a body failed because the stack's body timeout fired.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Reads a whole request body the way [`ApiJson`] does, so that a layer can hold
/// the body before it takes a database lock, and hand the request on with the body
/// in memory.
pub async fn buffer_body<S: Send + Sync>(request: Request, state: &S) -> Result<Request, AppError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(Request::from_parts(parts.clone(), body), state).await?;
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// The connection (in its open transaction) that the audit layer holds for a
/// write request: [`TenantDb`] hands the handler this one, so that the write and
/// its audit row commit together.
#[derive(Clone)]
pub struct RequestConn(pub TenantConn);

/// `Json<T>` with the service's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(AppError::validation(
                "body",
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = read_body(request, state).await?;
        // Every body of the API is an object. serde would also read a struct from
        // an array of its fields in order (`["name", 5]`), which the contract
        // does not offer.
        let first = bytes
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if first.is_some_and(|b| *b != b'{') {
            return Err(AppError::validation(
                "body",
                "the body must be a JSON object",
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| serde_error(e.path().to_string(), e.inner()))?;
        // One JSON value and nothing after it but white space.
        de.end()
            .map_err(|_| AppError::validation("body", "the body has text after its JSON value"))?;
        Ok(ApiJson(value))
    }
}

pub use crate::validate::StrictJson;

/// `Query<T>` with the service's error shape; unknown parameters (such as
/// `tenant_id`) are left to their own readers.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| serde_error(e.path().to_string(), e.inner()))
    }
}

/// Builds a 422 from a serde error: the path if serde gave one, else the field
/// named in a "missing field `x`" message.
fn serde_error(path: String, inner: &impl std::fmt::Display) -> AppError {
    let message = inner.to_string();
    let field = if path != "." && !path.is_empty() {
        path
    } else {
        message
            .split('`')
            .nth(1)
            .map(str::to_string)
            .unwrap_or_else(|| "body".to_string())
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    // serde quotes the offending value ("invalid type: integer `12345678`, expected
    // a string"), and the value may be a password: keep only what was expected.
    let message = match message.split_once(": ") {
        Some((kind, rest)) if kind.starts_with("invalid ") => {
            match rest.split_once(", expected ") {
                Some((_value, expected)) => format!("{kind}, expected {expected}"),
                None => kind.to_string(),
            }
        }
        _ => message,
    };
    AppError::Validation {
        message: format!("{field}: {message}"),
        field: Some(field),
    }
}

/// A path segment that must be a UUID.
pub struct IdPath(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| AppError::validation("id", "the path needs an id"))?;
        uuid::Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| AppError::validation("id", "id must be a UUID"))
    }
}

/// A tenant id in the path (`/api/tenants/{id}/…`), validated; anything else is a
/// 400 `invalid_tenant_id` in the service's error shape.
pub struct TenantPath(pub crate::tenant::TenantId);

impl<S: Send + Sync> FromRequestParts<S> for TenantPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    AppError::InvalidTenantId("path: the tenant id is not valid UTF-8".into())
                })?;
        crate::tenant::TenantId::parse(&raw)
            .map(TenantPath)
            .map_err(|m| AppError::InvalidTenantId(format!("path: {m}")))
    }
}

/// A connection to the identified tenant's data, pointed at its schema, held for
/// the handler's whole run and given back to its pool when dropped.
pub struct TenantDb(pub TenantConn);

impl FromRequestParts<AppState> for TenantDb {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(RequestConn(conn)) = parts.extensions.get::<RequestConn>() {
            return Ok(TenantDb(conn.clone()));
        }
        let ctx = TenantContext::from_request_parts(parts, state).await?;
        state.registry.connect(&ctx.config).await.map(TenantDb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_field_is_named() {
        let err = serde_json::from_str::<serde_json::Value>("{}")
            .map(|_| ())
            .err();
        assert!(err.is_none());
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            name: String,
        }
        let mut de = serde_json::Deserializer::from_slice(b"{}");
        let e = serde_path_to_error::deserialize::<_, Body>(&mut de).unwrap_err();
        match serde_error(e.path().to_string(), e.inner()) {
            AppError::Validation { field, .. } => assert_eq!(field.as_deref(), Some("name")),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn text_after_the_json_value_is_refused() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            name: String,
        }
        let request = |body: &'static str| {
            Request::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let trailing = ApiJson::<Body>::from_request(request(r#"{"name":"a"} xx"#), &()).await;
        match trailing {
            Err(AppError::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("body")),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let second =
            ApiJson::<Body>::from_request(request(r#"{"name":"a"}{"name":"b"}"#), &()).await;
        assert!(second.is_err());
        let spaced = ApiJson::<Body>::from_request(request("{\"name\":\"a\"} \n"), &()).await;
        assert!(spaced.is_ok());
        for not_an_object in [r#"["a"]"#, r#" ["a"]"#, "\"a\"", "null"] {
            match ApiJson::<Body>::from_request(request(not_an_object), &()).await {
                Err(AppError::Validation { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("body"), "{not_an_object}")
                }
                other => panic!("{not_an_object}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[tokio::test]
    async fn an_encoded_body_is_refused_and_identity_is_plain() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            name: String,
        }
        let request = |encoding: &str| {
            Request::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_ENCODING, encoding)
                .body(axum::body::Body::from(r#"{"name":"a"}"#))
                .unwrap()
        };
        for encoding in ["gzip", "deflate", "br", "x-anything"] {
            match ApiJson::<Body>::from_request(request(encoding), &()).await {
                Err(AppError::Validation { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("body"), "{encoding}")
                }
                other => panic!("{encoding}: {:?}", other.map(|_| ())),
            }
        }
        assert!(
            ApiJson::<Body>::from_request(request("identity"), &())
                .await
                .is_ok()
        );
    }

    #[test]
    fn type_errors_do_not_quote_the_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            password: String,
        }
        let mut de = serde_json::Deserializer::from_slice(br#"{"password": 98765432}"#);
        let e = serde_path_to_error::deserialize::<_, Body>(&mut de).unwrap_err();
        let err = serde_error(e.path().to_string(), e.inner());
        let text = err.to_string();
        assert!(!text.contains("98765432"), "{text}");
        assert!(text.contains("expected a string"), "{text}");
    }
}
