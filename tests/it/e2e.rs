//! End to end with the real client: Microsoft's `@azure/msal-browser/custom-auth` in
//! headless Chromium, through otpgate in SPA proxy mode, against the Entra emulator.
//!
//! This test starts, in-process on loopback port 0: the Entra emulator (demo users), a
//! static server for the test page (`tests/e2e/dist`, a different origin from the
//! gateway, as a real SPA is), and the gateway configured by `tests/e2e/otpgate.toml` with
//! the page's origin allowed. Then it runs `node tests/e2e/run.mjs`, which builds the
//! page, drives Chromium through the scenarios and exits non-zero on any failure.
//!
//! Ignored by plain `cargo test`: it needs Node, `npm ci` in `tests/e2e` and Chromium.
//! `scripts/e2e` installs what is missing and runs it (`scripts/test` calls it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use otpgate::emulate::entra::{serve, EntraConfig, EntraEmulator};
use otpgate::server::Server;

/// The whole driver run may take this long (it normally takes well under a minute).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(240);

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("e2e")
}

/// Serve `dir` (flat: `index.html`, `app.js`) on a loopback port; returns its address.
async fn static_server(dir: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let dir = dir.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let dir = dir.clone();
                    async move { Ok::<_, Infallible>(static_file(&dir, req.uri().path()).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn static_file(dir: &Path, path: &str) -> Response<Full<Bytes>> {
    let name = match path.trim_start_matches('/') {
        "" => "index.html",
        n => n,
    };
    let kind = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    };
    let found = if name.contains('/') || name.contains("..") {
        None
    } else {
        tokio::fs::read(dir.join(name)).await.ok()
    };
    match found {
        Some(body) => Response::builder()
            .header("content-type", kind)
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found")))
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node, `npm ci` in tests/e2e and Chromium: run scripts/e2e"]
async fn msal_custom_auth_in_chromium_through_otpgate() {
    let dir = e2e_dir();

    // The Entra emulator with the demo users.
    let entra_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entra = entra_listener.local_addr().unwrap();
    tokio::spawn(serve(
        entra_listener,
        EntraEmulator::new(EntraConfig::demo()),
        std::future::pending(),
    ));

    // The page, on its own origin.
    let page = static_server(dir.join("dist")).await;
    let origin = format!("http://{page}");

    // The gateway: the committed config, with the addresses only known now from the
    // environment, as a deployment would set them.
    let env = vec![
        (
            "OTPGATE__SERVER__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (
            "OTPGATE__ADMIN__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (
            "OTPGATE__UPSTREAM__URL".to_owned(),
            format!("http://{entra}"),
        ),
        ("OTPGATE__CORS__ALLOWED_ORIGINS".to_owned(), origin.clone()),
    ];
    let settings = match otpgate::config::load_with_env(Some(&dir.join("otpgate.toml")), env) {
        Ok((_, s)) => s,
        Err(p) => panic!("tests/e2e/otpgate.toml is invalid:\n{p}"),
    };
    let server = Server::bind(settings).await.unwrap();
    let gateway = server.local_addr().unwrap();
    let admin = server.admin_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async move {
        let _ = stop_rx.await;
    }));

    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
    let mut child = tokio::process::Command::new(node)
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("E2E_PAGE_URL", format!("{origin}/"))
        .env("E2E_GATEWAY_URL", format!("http://{gateway}"))
        .env("E2E_EMULATOR_URL", format!("http://{entra}"))
        .env("E2E_ADMIN_URL", format!("http://{admin}"))
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start node (is Node.js installed?)");
    let status = match tokio::time::timeout(DRIVER_TIMEOUT, child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = child.kill().await;
            panic!("e2e driver still running after {DRIVER_TIMEOUT:?}");
        }
    };

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), served).await;
    assert!(
        status.success(),
        "e2e driver failed ({status}); see its output above and tests/e2e/artifacts/"
    );
}
