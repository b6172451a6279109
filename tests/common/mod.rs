//! Shared test harness: an in-process echo upstream and an in-process gateway, both on
//! port 0 over real sockets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use otpgate::server::Server;

pub mod entra;
pub mod faulty;
pub mod flows;
pub mod h2raw;
pub mod probe;
pub mod process;
pub mod wire;

/// How the test upstream behaves.
#[derive(Clone, Copy)]
pub enum Upstream {
    /// Echo the request body back; report what arrived in `x-echo-*` headers.
    Echo,
    /// Wait this long before answering like `Echo`.
    Slow(Duration),
}

type Body = BoxBody<Bytes, hyper::Error>;

async fn echo(req: Request<Incoming>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let entry = headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| serde_json::Value::Array(vec![]));
        if let serde_json::Value::Array(a) = entry {
            a.push(serde_json::Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    Response::builder()
        .status(200)
        .header("x-echo-method", method)
        .header("x-echo-uri", uri)
        .header("x-echo-version", version)
        .header(
            "x-echo-headers",
            serde_json::Value::Object(headers).to_string(),
        )
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "must-not-arrive")
        .header("keep-alive", "timeout=5")
        .body(req.into_body().boxed())
        .unwrap()
}

/// Start a test upstream; returns its address.
pub async fn upstream(mode: Upstream) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req| async move {
                    if let Upstream::Slow(d) = mode {
                        tokio::time::sleep(d).await;
                    }
                    Ok::<_, Infallible>(echo(req).await)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: std::sync::Arc<otpgate::metrics::Metrics>,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Begin graceful shutdown (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Settings from a TOML snippet; listeners default to port 0 on loopback.
pub fn settings(toml: &str) -> otpgate::config::Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    let full =
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{toml}");
    std::fs::write(&path, merge_sections(&full)).unwrap();
    match otpgate::config::load_with_env(Some(&path), Vec::new()) {
        Ok((_, s)) => s,
        Err(p) => panic!("test config invalid:\n{p}"),
    }
}

/// Later `[section]` blocks with the same name are merged into the first, so tests can
/// add keys to `[server]` without repeating the defaults above.
fn merge_sections(toml: &str) -> String {
    let mut order: Vec<String> = vec![];
    let mut bodies: std::collections::HashMap<String, String> = Default::default();
    let mut current = String::new();
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            current = t.to_owned();
            if !bodies.contains_key(&current) {
                order.push(current.clone());
                bodies.insert(current.clone(), String::new());
            }
            continue;
        }
        let body = bodies.entry(current.clone()).or_default();
        if !order.contains(&current) {
            order.insert(0, current.clone());
        }
        body.push_str(line);
        body.push('\n');
    }
    let mut out = String::new();
    for name in order {
        if !name.is_empty() {
            out.push_str(&name);
            out.push('\n');
        }
        out.push_str(&bodies[&name]);
    }
    out
}

/// Start a gateway in-process with `toml` (which must set `[upstream] url`).
pub async fn gateway(toml: &str) -> TestGateway {
    otpgate::tls::install_crypto_provider();
    let server = Server::bind(settings(toml)).await.unwrap();
    let addr = server.local_addr().unwrap();
    let admin = server.admin_addr().unwrap();
    let metrics = server.metrics();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    TestGateway {
        addr,
        admin,
        metrics,
        stop: Some(tx),
        task,
    }
}

/// A reqwest client that speaks HTTP/1.1 only and never pools.
pub fn client() -> reqwest::Client {
    otpgate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap()
}

pub fn full(b: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(b.into())
}
