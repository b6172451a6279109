//! The admin listener: `/livez`, `/readyz` and `/metrics`, on their own address.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;

/// Lifecycle state, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Readiness shared between the server and the admin listener.
#[derive(Default)]
pub(crate) struct Health {
    phase: AtomicU8,
    /// Why the gateway is degraded (still serving, e.g. on a fallback store), if it is.
    degraded: Mutex<Vec<String>>,
}

impl Health {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }

    /// Mark a degraded condition on or off; `reason` is a short fixed label.
    pub(crate) fn set_degraded(&self, reason: &str, on: bool) {
        let mut list = self.degraded.lock();
        list.retain(|r| r != reason);
        if on {
            list.push(reason.to_owned());
        }
    }

    pub(crate) fn degraded(&self) -> Vec<String> {
        self.degraded.lock().clone()
    }
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// What `POST /demo/reset` runs; only `otpgate demo` sets one.
pub(crate) type ResetHook = Arc<dyn Fn() + Send + Sync>;

/// Answer one admin request.
pub(crate) fn answer(
    req: &Request<Incoming>,
    health: &Health,
    metrics: &Metrics,
    reset: Option<&ResetHook>,
) -> Response<Full<Bytes>> {
    if let (Some(reset), "/demo/reset") = (reset, req.uri().path()) {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n", "text/plain");
        }
        reset();
        return text(
            StatusCode::OK,
            "reset: velocity counts, learned flows, proofs and the emulator's users and outbox\n",
            "text/plain",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            "text/plain",
        );
    }
    match req.uri().path() {
        "/livez" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => {
            let degraded = health.degraded();
            match health.phase() {
                Phase::Ready if degraded.is_empty() => {
                    text(StatusCode::OK, "ready\n", "text/plain")
                }
                // Degraded still serves: say why, but stay in rotation.
                Phase::Ready => text(
                    StatusCode::OK,
                    format!("degraded: {}\n", degraded.join(", ")),
                    "text/plain",
                ),
                Phase::Starting => {
                    text(StatusCode::SERVICE_UNAVAILABLE, "starting\n", "text/plain")
                }
                Phase::Draining => {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
                }
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            metrics.render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

/// Serve the admin endpoints on `listener` until `shutdown` resolves; `/admin/v1/` is the
/// admin API of the gateway in force (`live`), when its settings turn it on.
pub(crate) async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    reset: Option<ResetHook>,
    live: Arc<ArcSwap<Gateway>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let health = health.clone();
        let metrics = metrics.clone();
        let reset = reset.clone();
        let live = live.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                // The API answers for the gateway in force now; the rest as before.
                let asked = if req.uri().path().starts_with("/admin/v1/") {
                    let store_down = health.degraded().iter().any(|d| d.starts_with("store"));
                    Err((live.load_full(), store_down))
                } else {
                    Ok(answer(&req, &health, &metrics, reset.as_ref()))
                };
                async move {
                    let resp = match asked {
                        Ok(resp) => resp,
                        Err((gateway, store_down)) => {
                            crate::admin_api::handle(req, &gateway, store_down).await
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
