//! SPA proxy mode: msal-browser's custom auth calls the native-auth API from the browser
//! through `customAuth.authApiProxyUrl`, and Entra's endpoints send no CORS headers
//! (reference §1.3, §7.2). otpgate answers the preflights, adds CORS headers for the
//! configured origins, and can map a path prefix (`/api/auth/...`) onto `/{tenant}/...`.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::problem::{Checker, Dropped};

/// `[cors]`: SPA proxy mode for msal-browser's `customAuth.authApiProxyUrl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins allowed to call through the gateway from a browser, e.g.
    /// `https://app.example`. Empty = no CORS. No wildcard.
    pub allowed_origins: Vec<String>,
    /// Extra request headers allowed in preflights besides MSAL's own (`x-client-*`,
    /// `client-request-id`, …): the `x-` headers your fraud SDK's interceptor adds.
    pub allow_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    #[serde(with = "crate::problem::duration")]
    pub max_age: Duration,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, e.g. HUMAN's `_px3`).
    pub allow_credentials: bool,
    /// A path prefix mapped onto the tenant: with `path_prefix = "/api/auth"` and
    /// `tenant = "contoso.onmicrosoft.com"`, `/api/auth/oauth2/v2.0/initiate` is served as
    /// `/contoso.onmicrosoft.com/oauth2/v2.0/initiate`. Set `authApiProxyUrl` to
    /// `https://<gateway>/api/auth`.
    pub path_prefix: String,
    /// The tenant segment the prefix maps to (tenant id or `{name}.onmicrosoft.com`).
    pub tenant: String,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_headers: Vec::new(),
            max_age: Duration::from_secs(600),
            allow_credentials: false,
            path_prefix: String::new(),
            tenant: String::new(),
        }
    }
}

impl CorsConfig {
    /// The SPA proxy mode's runtime rules. `proof_header` (the step-up proof header) is
    /// always allowed: a browser must be able to send it, or our own step-up answers could
    /// never be satisfied from an SPA.
    pub(crate) fn build(
        &self,
        dropped: &Dropped,
        proof_header: Option<&HeaderName>,
        check: &mut Checker,
    ) -> Cors {
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            match origin.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some()
                        && matches!(u.path(), "" | "/")
                        && u.query().is_none() => {}
                _ => check.problem(
                    &dropped.element_key("cors.allowed_origins", i),
                    format!("not an origin such as https://app.example (got {origin:?})"),
                ),
            }
        }
        for (i, h) in self.allow_headers.iter().enumerate() {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                check.problem(
                    &dropped.element_key("cors.allow_headers", i),
                    format!("not a header name (got {h:?})"),
                );
            }
        }
        let mapping = match (self.path_prefix.as_str(), self.tenant.as_str()) {
            ("", "") => None,
            (prefix, tenant) => {
                if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.len() < 2 {
                    check.problem(
                        "cors.path_prefix",
                        "must start with / and not end with /, e.g. /api/auth",
                    );
                }
                if tenant.is_empty() || tenant.contains('/') {
                    check.problem(
                        "cors.tenant",
                        "required with cors.path_prefix: a tenant id or name.onmicrosoft.com",
                    );
                }
                Some((prefix.to_owned(), tenant.to_owned()))
            }
        };
        let mut headers = self.allow_headers.clone();
        if let Some(h) = proof_header {
            headers.push(h.as_str().to_owned());
        }
        Cors::new(
            &self.allowed_origins,
            &headers,
            self.max_age.as_secs(),
            self.allow_credentials,
            mapping,
        )
    }
}

/// Request headers MSAL's custom-auth client sends on every call (reference §7.1), allowed
/// in every preflight answer.
pub(crate) const MSAL_HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "x-client-sku",
    "x-client-ver",
    "x-client-os",
    "x-client-cpu",
    "x-client-current-telemetry",
    "x-client-last-telemetry",
    "client-request-id",
    "return-client-request-id",
];

/// Response headers a page (and MSAL) may read.
const EXPOSED: &str = "x-ms-request-id, client-request-id, retry-after";

/// Validated CORS settings.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins (`https://app.example`), lowercased; empty = SPA mode off.
    origins: Vec<String>,
    /// The `Access-Control-Allow-Headers` value.
    allow_headers: HeaderValue,
    max_age: HeaderValue,
    credentials: bool,
    /// `(prefix, tenant)`: `{prefix}/rest` is served as `/{tenant}/rest`.
    mapping: Option<(String, String)>,
}

impl Cors {
    pub(crate) fn new(
        origins: &[String],
        extra_headers: &[String],
        max_age_secs: u64,
        credentials: bool,
        mapping: Option<(String, String)>,
    ) -> Self {
        let mut names: Vec<String> = MSAL_HEADERS.iter().map(|s| (*s).to_owned()).collect();
        for h in extra_headers {
            let h = h.to_ascii_lowercase();
            if !names.contains(&h) {
                names.push(h);
            }
        }
        Self {
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            allow_headers: HeaderValue::from_str(&names.join(", "))
                .unwrap_or_else(|_| HeaderValue::from_static("content-type")),
            max_age: HeaderValue::from(max_age_secs),
            credentials,
            mapping,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.origins.is_empty() || self.mapping.is_some()
    }

    /// The request's `Origin` if it is one of ours.
    fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.contains(&text).then_some(origin)
    }

    /// A preflight (`OPTIONS` with `Access-Control-Request-Method`) gets its answer here:
    /// 204 with CORS headers for an allowed origin, 403 without them otherwise. `None`: not
    /// a preflight, or SPA mode is off.
    pub(crate) fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<()>> {
        if self.origins.is_empty()
            || method != Method::OPTIONS
            || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            || !headers.contains_key(header::ORIGIN)
        {
            return None;
        }
        let mut resp = Response::new(());
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
        match self.allowed_origin(headers) {
            Some(origin) => {
                *resp.status_mut() = StatusCode::NO_CONTENT;
                let h = resp.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("POST, GET, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    self.allow_headers.clone(),
                );
                h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
                if self.credentials {
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
            }
            None => *resp.status_mut() = StatusCode::FORBIDDEN,
        }
        Some(resp)
    }

    /// Add CORS headers to any answer for an allowed origin.
    pub(crate) fn decorate(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        if self.origins.is_empty() {
            return;
        }
        response_headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed_origin(request_headers) {
            response_headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response_headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED),
            );
            if self.credentials {
                response_headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
    }

    /// Map `{prefix}/rest?query` onto `/{tenant}/rest?query`; `None` when the path is not
    /// under the prefix (it is then served as sent).
    pub(crate) fn map_path(&self, path_and_query: &str) -> Option<String> {
        let (prefix, tenant) = self.mapping.as_ref()?;
        let rest = path_and_query.strip_prefix(prefix.as_str())?;
        if !(rest.starts_with('/') || rest.starts_with('?') || rest.is_empty()) {
            return None;
        }
        Some(format!("/{tenant}{rest}"))
    }
}

/// Request headers never forwarded in SPA mode: Entra has no use for the browser's origin
/// (Microsoft's own proxy drops it).
pub(crate) const DROP_UPSTREAM: HeaderName = header::ORIGIN;

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors::new(
            &["https://app.example".into()],
            &["X-PX-AUTHORIZATION".into(), "x-otpgate-proof".into()],
            600,
            false,
            Some(("/api/auth".into(), "contoso.onmicrosoft.com".into())),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn preflight_from_an_allowed_origin() {
        let h = headers(&[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "x-client-sku, x-px-authorization",
            ),
        ]);
        let resp = cors().preflight(&Method::OPTIONS, &h).unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        let allowed = resp.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        for name in [
            "x-client-sku",
            "client-request-id",
            "x-px-authorization",
            "x-otpgate-proof",
        ] {
            assert!(allowed.contains(name), "{allowed}");
        }
        assert!(resp
            .headers()
            .get("access-control-allow-credentials")
            .is_none());
    }

    #[test]
    fn other_origins_get_no_cors_headers() {
        let h = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ]);
        let resp = cors().preflight(&Method::OPTIONS, &h).unwrap();
        assert_eq!(resp.status(), 403);
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        let mut out = HeaderMap::new();
        cors().decorate(&h, &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
    }

    #[test]
    fn not_a_preflight() {
        let h = headers(&[("origin", "https://app.example")]);
        assert!(cors().preflight(&Method::OPTIONS, &h).is_none());
        assert!(cors().preflight(&Method::POST, &h).is_none());
    }

    #[test]
    fn path_mapping() {
        let c = cors();
        assert_eq!(
            c.map_path("/api/auth/oauth2/v2.0/initiate?x=1").as_deref(),
            Some("/contoso.onmicrosoft.com/oauth2/v2.0/initiate?x=1")
        );
        assert_eq!(c.map_path("/api/authx/oauth2"), None);
        assert_eq!(c.map_path("/other"), None);
    }
}
