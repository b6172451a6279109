//! The upstream client's own connection pool (`otpgate::upstream`), against a real upstream
//! over loopback, plain and over TLS with HTTP/1.1 or HTTP/2 by ALPN: connections are
//! reused, answers read to the end give theirs back, answers dropped half-read take
//! theirs with them, connections the upstream closed are not used, idle ones are closed
//! after the timeout, and the idle stack stays within its bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use otpgate::proxy::{self, ForwardError};
use otpgate::upstream::Upstream;

/// A test upstream that counts connections and can close all of them on demand.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<watch::Sender<usize>>,
    close: watch::Sender<u64>,
    /// The file of the CA certificate when it speaks TLS.
    ca_file: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

struct OpenGuard(Arc<watch::Sender<usize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let version = format!("{:?}", req.version());
    let uri = req.uri().to_string();
    let host = req
        .headers()
        .get(http::header::HOST)
        .map(|h| h.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut resp = Response::builder()
        .header("x-version", version)
        .header("x-uri", uri)
        .header("x-host", host);
    let body = match path.as_str() {
        "/empty" => {
            resp = resp.status(204);
            Bytes::new()
        }
        "/big" => {
            resp = resp.status(200);
            Bytes::from(vec![b'x'; 4 << 20])
        }
        "/close" => {
            resp = resp.status(200).header(http::header::CONNECTION, "close");
            Bytes::from_static(b"last on this connection")
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            resp = resp.status(200);
            Bytes::from_static(b"slow")
        }
        _ => {
            resp = resp.status(200);
            body
        }
    };
    Ok(resp.body(Full::new(body)).unwrap())
}

impl Server {
    /// Plain HTTP/1.1 (and h2c by prior knowledge, which the pool never uses).
    async fn plain() -> Self {
        Self::start(None).await
    }

    /// TLS with these ALPN protocols.
    async fn tls(alpn: &[&[u8]]) -> Self {
        Self::start(Some(alpn.iter().map(|p| p.to_vec()).collect())).await
    }

    async fn start(alpn: Option<Vec<Vec<u8>>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(watch::Sender::new(0usize));
        let (close, close_rx) = watch::channel(0u64);
        let dir = tempfile::tempdir().unwrap();
        let mut ca_file = None;
        let acceptor = alpn.map(|alpn| {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let path = dir.path().join("ca.pem");
            std::fs::write(&path, cert.cert.pem()).unwrap();
            ca_file = Some(path);
            let key = rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                .unwrap();
            let mut config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .unwrap();
            config.alpn_protocols = alpn;
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let (acc, op) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                op.send_modify(|n| *n += 1);
                let guard = OpenGuard(op.clone());
                let mut close_rx = close_rx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    close_rx.borrow_and_update();
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let conn =
                                builder.serve_connection(TokioIo::new(tls), service_fn(answer));
                            serve_until_closed(conn, close_rx).await;
                        }
                        None => {
                            let conn =
                                builder.serve_connection(TokioIo::new(stream), service_fn(answer));
                            serve_until_closed(conn, close_rx).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            open,
            close,
            ca_file,
            _dir: dir,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Close every connection the server holds (gracefully: an idle one at once) and wait
    /// until they are gone.
    async fn close_all(&self) {
        self.close.send_modify(|n| *n += 1);
        self.open_becomes(0).await;
    }

    /// Wait until `n` connections are open.
    async fn open_becomes(&self, n: usize) {
        let mut open = self.open.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(5), open.wait_for(|v| *v == n));
        assert!(
            matches!(waited.await, Ok(Ok(_))),
            "still {} connections open, not {n}",
            *open.borrow()
        );
    }

    /// A pool for this server, with extra `[upstream]` keys.
    fn upstream(&self, extra: &str) -> Upstream {
        let (url, ca) = match &self.ca_file {
            Some(path) => (
                format!("https://localhost:{}", self.addr.port()),
                format!("ca_file = \"{}\"\n", path.display()),
            ),
            None => (format!("http://{}", self.addr), String::new()),
        };
        let settings =
            crate::fixtures::settings(&format!("[upstream]\nurl = \"{url}\"\n{ca}{extra}"));
        Upstream::new(&settings.upstream).unwrap()
    }
}

async fn serve_until_closed<C>(conn: C, mut close: watch::Receiver<u64>)
where
    C: std::future::Future + GracefulShutdown,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = close.changed() => {}
    }
    conn.as_mut().shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// `graceful_shutdown` of the auto connection, over plain or TLS streams.
trait GracefulShutdown {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulShutdown for auto::Connection<'_, I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::Future: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

fn get(path: &str) -> Request<proxy::Body> {
    Request::get(path)
        .body(proxy::full(Full::new(Bytes::new())))
        .unwrap()
}

fn post(path: &str, body: &'static str) -> Request<proxy::Body> {
    Request::post(path)
        .body(proxy::full(Full::new(Bytes::from_static(body.as_bytes()))))
        .unwrap()
}

/// Send and read the whole answer: status, headers, body.
async fn fetch(up: &Upstream, req: Request<proxy::Body>) -> (http::response::Parts, Bytes) {
    let resp = up.send(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn one_http1_connection_carries_sequential_requests() {
    let server = Server::plain().await;
    let up = server.upstream("");
    for i in 0..50 {
        let (parts, body) = fetch(&up, post("/echo?i=1", "hello")).await;
        assert_eq!(parts.status, 200, "request {i}");
        assert_eq!(body, "hello");
        assert_eq!(parts.headers["x-version"], "HTTP/1.1");
        assert_eq!(
            parts.headers["x-uri"], "/echo?i=1",
            "origin form over HTTP/1.1"
        );
        assert_eq!(
            parts.headers["x-host"],
            server.addr.to_string(),
            "Host is the upstream"
        );
    }
    // An empty answer is never polled, and gives its connection back all the same.
    for _ in 0..5 {
        let (parts, body) = fetch(&up, get("/empty")).await;
        assert_eq!(parts.status, 204);
        assert!(body.is_empty());
    }
    assert_eq!(server.accepted(), 1, "every request on one connection");
    assert_eq!(up.pool_state(), (1, false));
}

#[tokio::test]
async fn an_answer_dropped_half_read_takes_its_connection_with_it() {
    let server = Server::plain().await;
    let up = server.upstream("");
    let resp = up.send(get("/big")).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_eq!(up.pool_state().0, 0, "a half-read connection is not pooled");
    // The next request gets a fresh connection and a whole answer.
    let (parts, body) = fetch(&up, post("/echo", "again")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "again");
    assert_eq!(server.accepted(), 2);
    // A big answer read to its end gives its connection back.
    let (_, big) = fetch(&up, get("/big")).await;
    assert_eq!(big.len(), 4 << 20);
    let _ = fetch(&up, get("/x")).await;
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let server = Server::plain().await;
    let up = server.upstream("");
    for round in 1..=3 {
        let (parts, body) = fetch(&up, post("/echo", "before")).await;
        assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"before"[..]));
        server.close_all().await;
        // Sent at once, before the pool's connection task may have seen the close: the
        // request is either not given to the closed connection or given back unsent.
        let (parts, body) = fetch(&up, post("/echo", "after")).await;
        assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"after"[..]));
        assert_eq!(server.accepted(), 2 * round);
        server.close_all().await;
    }
}

#[tokio::test]
async fn concurrent_requests_open_connections_and_the_idle_stack_is_bounded() {
    let server = Server::plain().await;
    let up = server.upstream("pool_max_idle = 3\n");
    let sends: Vec<_> = (0..12)
        .map(|_| {
            let up = up.clone();
            tokio::spawn(async move { fetch(&up, get("/slow")).await })
        })
        .collect();
    for send in sends {
        let (parts, body) = send.await.unwrap();
        assert_eq!(parts.status, 200);
        assert_eq!(body, "slow");
    }
    assert_eq!(
        server.accepted(),
        12,
        "twelve at once need twelve connections"
    );
    assert_eq!(up.pool_state().0, 3, "only pool_max_idle are kept");
    server.open_becomes(3).await;
    for _ in 0..10 {
        let _ = fetch(&up, get("/x")).await;
    }
    assert_eq!(server.accepted(), 12, "the kept ones are reused");
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = Server::plain().await;
    let up = server.upstream("pool_idle_timeout = \"300ms\"\n");
    let _ = fetch(&up, get("/x")).await;
    assert_eq!(up.pool_state().0, 1);
    // No request comes to notice: the pool closes it by itself.
    server.open_becomes(0).await;
    assert_eq!(up.pool_state().0, 0);
    let (parts, _) = fetch(&up, get("/x")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn tls_upstream_offering_http2_gets_one_shared_http2_connection() {
    let server = Server::tls(&[b"h2", b"http/1.1"]).await;
    let up = server.upstream("");
    let sends: Vec<_> = (0..16)
        .map(|i| {
            let up = up.clone();
            tokio::spawn(async move {
                let path = if i % 2 == 0 { "/slow" } else { "/echo?q=2" };
                fetch(&up, get(path)).await
            })
        })
        .collect();
    for send in sends {
        let (parts, _) = send.await.unwrap();
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["x-version"], "HTTP/2.0");
        assert_eq!(
            parts.headers["x-host"], "",
            "no Host beside :authority (nginx refuses both as a duplicate)"
        );
        let uri = parts.headers["x-uri"].to_str().unwrap();
        let port = server.addr.port();
        assert!(
            uri == format!("https://localhost:{port}/slow")
                || uri == format!("https://localhost:{port}/echo?q=2"),
            "HTTP/2 carries scheme and authority: {uri}"
        );
    }
    // The first requests may each have dialled before any connection was known to be
    // HTTP/2; after that, one connection is shared.
    let after_first_round = server.accepted();
    assert!(after_first_round >= 1);
    for _ in 0..10 {
        let (parts, body) = fetch(&up, post("/echo", "h2 body")).await;
        assert_eq!(parts.status, 200);
        assert_eq!(body, "h2 body");
    }
    assert_eq!(
        server.accepted(),
        after_first_round,
        "the shared one is reused"
    );
    assert_eq!(up.pool_state(), (0, true));
    // The upstream closes it: the next request dials again.
    server.close_all().await;
    let (parts, body) = fetch(&up, post("/echo", "reconnected")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "reconnected");
    assert_eq!(server.accepted(), after_first_round + 1);
}

#[tokio::test]
async fn tls_upstream_offering_only_http1_gets_pooled_http1_connections() {
    let server = Server::tls(&[b"http/1.1"]).await;
    let up = server.upstream("");
    for _ in 0..20 {
        let (parts, body) = fetch(&up, post("/echo?tls=1", "over tls")).await;
        assert_eq!(parts.status, 200);
        assert_eq!(body, "over tls");
        assert_eq!(parts.headers["x-version"], "HTTP/1.1");
        assert_eq!(parts.headers["x-uri"], "/echo?tls=1");
        assert_eq!(
            parts.headers["x-host"],
            format!("localhost:{}", server.addr.port())
        );
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(up.pool_state(), (1, false));
}

#[tokio::test]
async fn an_untrusted_tls_upstream_is_unreachable() {
    let server = Server::tls(&[b"h2", b"http/1.1"]).await;
    let url = format!("https://localhost:{}", server.addr.port());
    let settings = crate::fixtures::settings(&format!("[upstream]\nurl = \"{url}\"\n"));
    let up = Upstream::new(&settings.upstream).unwrap();
    match up.send(get("/x")).await {
        Err(ForwardError::Unreachable(e)) => {
            assert!(e.to_lowercase().contains("certificate"), "{e}")
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_and_slow_upstreams_are_unreachable_and_timed_out() {
    let dead = crate::fixtures::dead_addr().await;
    let settings = crate::fixtures::settings(&format!("[upstream]\nurl = \"http://{dead}\"\n"));
    let up = Upstream::new(&settings.upstream).unwrap();
    assert!(matches!(
        up.send(get("/x")).await,
        Err(ForwardError::Unreachable(_))
    ));
    let server = Server::plain().await;
    let up = server.upstream("response_timeout = \"100ms\"\n");
    assert!(matches!(
        up.send(get("/slow")).await,
        Err(ForwardError::Timeout)
    ));
    // The timed-out request's connection is not reused; the pool still works.
    let (parts, _) = fetch(&up, get("/x")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn head_answers_and_connection_close_are_handled() {
    let server = Server::plain().await;
    let up = server.upstream("");
    // A HEAD answer announces a length but has no body; its connection is reused.
    for _ in 0..3 {
        let req = Request::head("/echo")
            .body(proxy::full(Full::new(Bytes::new())))
            .unwrap();
        let (parts, body) = fetch(&up, req).await;
        assert_eq!(parts.status, 200);
        assert!(body.is_empty());
    }
    assert_eq!(server.accepted(), 1);
    // `Connection: close`: that answer arrives whole, and the next request dials again.
    let (parts, body) = fetch(&up, get("/close")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "last on this connection");
    let (parts, body) = fetch(&up, post("/echo", "next")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "next");
    assert_eq!(server.accepted(), 2);
    assert_eq!(up.pool_state().0, 1);
}
