//! The request path: a few explicit phases over one per-request context.
//!
//! admit (in-flight limit) → check target (no open proxy) → classify → forward or answer →
//! log. Requests nothing gates stream through both ways without buffering.

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::proxy::{self, Body, ConnInfo, ForwardError, Upstream};

/// Shared state of the request path. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    in_flight: Arc<Semaphore>,
}

/// What one request carries through the phases.
struct RequestCtx {
    request_id: String,
    started: Instant,
    method: Method,
    /// Path only: queries may carry continuation tokens, which are never logged.
    path: String,
    kind: &'static str,
}

impl Gateway {
    pub fn new(
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::tls::TlsError> {
        let upstream = Upstream::new(&settings.upstream)?;
        let in_flight = Arc::new(Semaphore::new(settings.server.max_in_flight));
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                upstream,
                metrics,
                in_flight,
            }),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Handle one client request. Never fails: every fault becomes an Entra-shaped answer.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let mut ctx = RequestCtx {
            request_id: request_id(req.headers()),
            started: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            kind: "pass_through",
        };
        let correlation = req
            .headers()
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        // Excess load gets a fast 503 rather than a queue.
        let permit = match self.inner.in_flight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.inner.metrics.overload_rejections.inc();
                let resp = GatewayError::Overloaded.to_response(correlation.as_deref());
                self.finish(&ctx, &resp, Some("overloaded"));
                return resp;
            }
        };
        self.inner.metrics.in_flight_inc();
        let result = self.route(req, conn, &mut ctx).await;
        self.inner.metrics.in_flight_dec();
        drop(permit);

        match result {
            Ok(resp) => {
                self.finish(&ctx, &resp, None);
                resp
            }
            Err(err) => {
                let resp = err.to_response(correlation.as_deref());
                self.finish(&ctx, &resp, Some(err.label()));
                resp
            }
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        _ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError> {
        let original_host = check_target(&req, &self.inner.settings.server.hosts)?;
        let (mut parts, body) = req.into_parts();
        let client = proxy::client_ip(
            conn.peer.ip().to_canonical(),
            &parts.headers,
            &self.inner.settings.server.trusted_proxies,
        );
        proxy::prepare_request(
            &mut parts.headers,
            client,
            conn.tls,
            original_host.as_deref(),
        );
        let req = Request::from_parts(parts, proxy::streamed(body));
        self.forward(req).await
    }

    async fn forward(&self, req: Request<Body>) -> Result<Response<Body>, GatewayError> {
        let sent = Instant::now();
        match self.inner.upstream.send(req).await {
            Ok(resp) => {
                self.inner.metrics.upstream_done(sent.elapsed());
                let (mut parts, body) = resp.into_parts();
                proxy::prepare_response(&mut parts.headers);
                Ok(Response::from_parts(parts, proxy::streamed(body)))
            }
            Err(ForwardError::Timeout) => {
                self.inner.metrics.upstream_failed("timeout");
                Err(GatewayError::UpstreamTimeout)
            }
            Err(ForwardError::Unreachable(e)) => {
                self.inner.metrics.upstream_failed("unreachable");
                Err(GatewayError::UpstreamUnreachable(e))
            }
        }
    }

    fn finish(&self, ctx: &RequestCtx, resp: &Response<Body>, fault: Option<&'static str>) {
        self.inner.metrics.request_done(ctx.kind, resp.status());
        tracing::info!(
            target: "otpgate::access",
            request_id = %ctx.request_id,
            method = %ctx.method,
            path = %ctx.path,
            kind = ctx.kind,
            status = resp.status().as_u16(),
            latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            fault = fault.unwrap_or(""),
            "request"
        );
    }
}

/// The request id for logs: the client's `client-request-id` when it is a plain token,
/// otherwise a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Refuse what would make us an open proxy: `CONNECT`, absolute-form targets for a host
/// other than the one addressed, and hosts outside `server.hosts` when it is set. Returns
/// the host the client addressed (for `X-Forwarded-Host`).
pub fn check_target<B>(req: &Request<B>, hosts: &[String]) -> Result<Option<String>, GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::MethodNotAllowed("CONNECT is not supported."));
    }
    let header_host = req
        .headers()
        .get(header::HOST)
        .map(|v| {
            v.to_str()
                .map_err(|_| GatewayError::BadRequest("Invalid Host header."))
        })
        .transpose()?;
    let uri_host = req.uri().authority().map(|a| a.as_str());
    let addressed = match req.version() {
        // HTTP/2 and HTTP/3 always carry :authority; it is the target, not a proxy request.
        Version::HTTP_2 | Version::HTTP_3 => uri_host.or(header_host),
        _ => {
            if let Some(abs) = uri_host {
                // Absolute-form: only for the host the request is addressed to anyway.
                let same = header_host.is_some_and(|h| h.eq_ignore_ascii_case(abs));
                if !same || req.uri().scheme().is_none() {
                    return Err(GatewayError::BadRequest(
                        "Absolute-form request targets for another host are not accepted.",
                    ));
                }
            }
            header_host
        }
    };
    if !hosts.is_empty() {
        let name = addressed.map(host_without_port).unwrap_or_default();
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return Err(GatewayError::UnknownHost);
        }
    }
    Ok(addressed.map(str::to_owned))
}

fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str, version: Version, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri).version(version);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn target_checks() {
        let any: Vec<String> = vec![];
        let only = vec!["login.example.com".to_owned()];
        let ok = |r: Request<()>, h: &[String]| check_target(&r, h).is_ok();
        assert!(ok(
            req(Method::GET, "/x", Version::HTTP_11, Some("a")),
            &any
        ));
        assert!(!ok(
            req(Method::CONNECT, "a:443", Version::HTTP_11, Some("a:443")),
            &any
        ));
        assert!(!ok(
            req(
                Method::GET,
                "http://evil.example/x",
                Version::HTTP_11,
                Some("a")
            ),
            &any
        ));
        assert!(ok(
            req(Method::GET, "http://a/x", Version::HTTP_11, Some("a")),
            &any
        ));
        assert!(ok(
            req(
                Method::GET,
                "/x",
                Version::HTTP_11,
                Some("LOGIN.example.com:8443")
            ),
            &only
        ));
        assert!(!ok(
            req(
                Method::GET,
                "/x",
                Version::HTTP_11,
                Some("other.example.com")
            ),
            &only
        ));
        assert!(!ok(req(Method::GET, "/x", Version::HTTP_11, None), &only));
        assert!(ok(
            req(
                Method::GET,
                "https://login.example.com/x",
                Version::HTTP_2,
                None
            ),
            &only
        ));
        assert!(!ok(
            req(Method::GET, "https://evil.example/x", Version::HTTP_2, None),
            &only
        ));
    }
}
