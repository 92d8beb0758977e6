//! The OpenAPI 3.1 contract, generated from the handlers' annotations (utoipa),
//! served at `GET /openapi.json`, with Swagger UI at `/docs` (its files are inside
//! the binary). Each handler states its path, parameters, body and success
//! answers; what every route of a kind can answer (the errors of tenant
//! resolution, authentication, limits; the admin token's 401) and its security are
//! added here, once, by [`CommonAnswers`].

use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        Components, ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi as Spec, RefOr,
        ResponseBuilder, Type,
        path::{Operation, ParameterBuilder, ParameterIn},
        security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        },
    },
};

use crate::http::routes;

/// Every error: `{"error": {"code", "message", "field"?}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// An error's stable code and its message.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable, documented: `tenant_required`, `validation_failed`, …
    pub code: String,
    pub message: String,
    /// The offending field, for `validation_failed`.
    pub field: Option<String>,
}

/// The contract.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenant-router",
        description = "A database-per-tenant HTTP service. Tenant routes are identified by subdomain, `X-Tenant-ID` or `?tenant_id=`, and authenticated by an access token or API key; admin routes need the admin token.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        crate::http::health,
        crate::http::ready,
        routes::products::list,
        routes::products::create,
        routes::products::show,
        routes::products::update,
        routes::products::remove,
        routes::dental::patients::list,
        routes::dental::patients::create,
        routes::dental::patients::show,
        routes::dental::patients::remove,
        routes::dental::supplies::list,
        routes::dental::supplies::create,
        routes::dental::supplies::show,
        routes::dental::supplies::update,
        routes::dental::supplies::remove,
        routes::dental::treatments::list,
        routes::dental::treatments::create,
        routes::dental::treatments::show,
        routes::dental::treatments::update,
        routes::dental::treatments::remove,
        routes::manufacturing::boms::list,
        routes::manufacturing::boms::create,
        routes::manufacturing::boms::show,
        routes::manufacturing::boms::remove,
        routes::manufacturing::materials::list,
        routes::manufacturing::materials::create,
        routes::manufacturing::materials::show,
        routes::manufacturing::materials::remove,
        routes::cash_flow::list,
        routes::cash_flow::create,
        routes::cash_flow::show,
        routes::cash_flow::remove,
        routes::cash_flow::summary,
        routes::api_keys::list,
        routes::api_keys::create,
        routes::api_keys::show,
        routes::api_keys::revoke,
        routes::users::list,
        routes::users::create,
        routes::users::show,
        routes::users::update,
        routes::audit::list,
        routes::auth::login,
        routes::auth::me,
        routes::data::status,
        routes::data::reset,
        routes::tenants::list,
        routes::tenants::config,
        routes::tenants::health,
        routes::tenants::pools,
        routes::tenants::branding,
        routes::admin_tenants::create,
        routes::admin_tenants::update,
        routes::admin_tenants::remove,
        routes::admin_tenants::migrate,
        routes::admin_tenants::migrations,
        routes::admin_tenants::create_user,
        routes::admin_tenants::unfinished,
        routes::admin_tenants::abandon,
        routes::usage::usage,
        routes::fleet::list,
        routes::fleet::start,
        routes::fleet::jobs,
        routes::fleet::job,
        routes::audit::admin_list,
        routes::moves::start,
        routes::moves::list,
        routes::moves::confirm,
        routes::moves::abort,
        routes::manufacturing::production_orders::list,
        routes::manufacturing::production_orders::create,
        routes::manufacturing::production_orders::show,
        routes::manufacturing::production_orders::start,
        routes::manufacturing::production_orders::complete,
        crate::http::openapi::metrics_doc,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&CommonAnswers),
    tags(
        (name = "service", description = "Liveness and readiness"),
        (name = "products", description = "The common catalogue (every tenant)"),
        (name = "dental", description = "Patients, treatments and supplies (dental features)"),
        (name = "manufacturing", description = "Materials, bills of materials and production orders (manufacturing features)"),
        (name = "cash-flow", description = "Income and expenses (every tenant)"),
        (name = "auth", description = "Logging in, and who the caller is"),
        (name = "users", description = "The tenant's users (role admin)"),
        (name = "api-keys", description = "The tenant's API keys (role admin)"),
        (name = "audit", description = "The tenant's audit log (role admin)"),
        (name = "data", description = "Demo data of a demo tenant"),
        (name = "tenants", description = "Operating tenants (admin token)"),
    )
)]
pub struct ApiDoc;

/// The kind of route an operation is, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/health`, `/ready`, `/openapi.json`, branding: no credential.
    Public,
    /// The admin token.
    Admin,
    /// Identified and authenticated as a tenant's caller.
    Tenant,
    /// `POST /api/auth/login`: identified, no credential.
    Login,
}

fn kind(path: &str) -> Kind {
    if path == "/api/auth/login" {
        Kind::Login
    } else if path.starts_with("/api/admin/")
        || path == "/metrics"
        || path == "/api/tenants"
        || (path.starts_with("/api/tenants/") && !path.ends_with("/branding"))
    {
        Kind::Admin
    } else if path.starts_with("/api/") && !path.ends_with("/branding") {
        Kind::Tenant
    } else {
        Kind::Public
    }
}

/// The answers and security every route of a kind shares (see the module).
pub struct CommonAnswers;

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ErrorBody",
            ))))
            .build(),
    );
    if description.contains("Retry-After") {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    RefOr::T(response.build())
}

fn add_errors(operation: &mut Operation, errors: &[(&str, &str)]) {
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry((*status).to_string())
            .or_insert_with(|| error_response(description));
    }
}

/// What any route can answer, whatever its kind.
const ANY: &[(&str, &str)] = &[
    (
        "400",
        "A malformed request: more than one Host header (`bad_request`)",
    ),
    (
        "408",
        "The body paused for HTTP_BODY_TIMEOUT_SECS (`request_timeout`)",
    ),
    ("413", "The body is over 256 KiB (`payload_too_large`)"),
    (
        "503",
        "Past HTTP_REQUEST_TIMEOUT_SECS (`timeout`), or the tenant's database cannot be reached now (`tenant_unavailable`); has Retry-After",
    ),
];

/// What a route that names a tenant in its path can answer.
const TENANT_IN_PATH: &[(&str, &str)] = &[
    ("400", "A malformed tenant id (`invalid_tenant_id`)"),
    ("404", "No such tenant (`tenant_not_found`)"),
];

/// What a route of a tenant can answer before its handler runs.
const TENANT: &[(&str, &str)] = &[
    (
        "400",
        "No tenant named (`tenant_required`), a malformed id (`invalid_tenant_id`), two tenants named (`tenant_conflict`)",
    ),
    ("401", "No valid access token or API key (`unauthorized`)"),
    (
        "403",
        "The tenant is suspended (`tenant_inactive`), lacks the route's feature (`feature_not_enabled`), the credential is another tenant's (`tenant_mismatch`), or the role is too low (`forbidden`)",
    ),
    (
        "404",
        "No such tenant (`tenant_not_found`) or record (`not_found`)",
    ),
    (
        "422",
        "A bad body, query parameter or path id (`validation_failed`, naming `field`)",
    ),
    (
        "429",
        "Over the tenant's request rate or concurrency, or (a login) too many failed logins (`too_many_requests`); has Retry-After",
    ),
];

const WRITE: &[(&str, &str)] = &[(
    "507",
    "The tenant's storage is at its quota (`quota_exceeded`); deletes are still allowed",
)];

const ADMIN: &[(&str, &str)] = &[
    ("401", "No valid admin token (`unauthorized`)"),
    (
        "404",
        "No such tenant (`tenant_not_found`), or tenant management is off in single-tenant mode (`not_found`)",
    ),
    (
        "409",
        "A duplicate tenant id or subdomain, or a file tenant removed through the API (`conflict`)",
    ),
    (
        "422",
        "A bad body or query parameter (`validation_failed`, naming `field`)",
    ),
    (
        "429",
        "Too many wrong admin tokens from this address (`too_many_requests`); has Retry-After",
    ),
];

/// What an admin route that writes can answer besides.
const ADMIN_WRITE: &[(&str, &str)] = &[(
    "403",
    "Called with the console's session cookie but without its `X-CSRF-Token` (`forbidden`)",
)];

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut Spec) {
        let components = openapi.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token (ADMIN_TOKEN)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /api/auth/login, or an API key",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let kind = kind(path);
            for (method, operation) in [
                ("get", item.get.as_mut()),
                ("post", item.post.as_mut()),
                ("put", item.put.as_mut()),
                ("patch", item.patch.as_mut()),
                ("delete", item.delete.as_mut()),
            ] {
                let Some(operation) = operation else { continue };
                match kind {
                    Kind::Admin => {
                        add_errors(operation, ADMIN);
                        if method != "get" {
                            add_errors(operation, ADMIN_WRITE);
                        }
                        operation.security = Some(vec![SecurityRequirement::new(
                            "admin_token",
                            Vec::<String>::new(),
                        )]);
                    }
                    Kind::Tenant | Kind::Login => {
                        add_errors(operation, TENANT);
                        if method != "get" && method != "delete" {
                            add_errors(operation, WRITE);
                        }
                        let parameters = operation.parameters.get_or_insert_with(Vec::new);
                        parameters.push(RefOr::T(
                            ParameterBuilder::new()
                                .name("X-Tenant-ID")
                                .parameter_in(ParameterIn::Header)
                                .description(Some(
                                    "The tenant, unless the subdomain, ?tenant_id= or the credential names it",
                                ))
                                .schema(Some(
                                    ObjectBuilder::new()
                                        .schema_type(Type::String)
                                        .pattern(Some("^[a-z0-9][a-z0-9_-]{0,62}$")),
                                ))
                                .build(),
                        ));
                        if kind == Kind::Tenant {
                            operation.security = Some(vec![
                                SecurityRequirement::new("access_token", Vec::<String>::new()),
                                SecurityRequirement::new("api_key", Vec::<String>::new()),
                            ]);
                        }
                    }
                    Kind::Public => {}
                }
                if kind != Kind::Tenant && path.contains("{id}") {
                    add_errors(operation, TENANT_IN_PATH);
                }
                add_errors(operation, ANY);
            }
        }
    }
}

/// `GET /metrics` is served by `routes::tenants`; described here, where its
/// text answer is.
#[utoipa::path(get, path = "/metrics", tag = "tenants",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text", body = String),
              (status = 404, description = "Metrics are switched off (`not_found`)", body = ErrorBody)))]
#[allow(dead_code)]
pub(crate) fn metrics_doc() {}

/// `GET /openapi.json` and `GET /docs` (Swagger UI), public.
pub fn router() -> axum::Router<crate::http::AppState> {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into()
}
