//! One whole request through `Gateway::handle`, in-process: the request is handed to the
//! gateway as a value (no client socket), every phase runs (classify, bounded body read,
//! parameters, flow lookup, destination policy, the default velocity rule set on the memory
//! store, the mock provider, `decide`, learning from the answer, metrics).
//!
//! * `gated/deny`: the mock provider denies (after the local checks), so the gateway answers
//!   itself and releases the velocity slots: no socket at all.
//! * `gated/allow`: forwarded to a fixed upstream in the same process over loopback (the
//!   upstream client has no in-process transport), so it includes one loopback round trip.
//! * `pass_through`: an ungated GET to the same upstream; `gated/allow − pass_through` is
//!   what gating adds.
//! * `gated/allow/no-adaptive`, `gated/deny/no-adaptive`: the same without the adaptive
//!   rules (`adaptive = []`): `gated/allow − gated/allow/no-adaptive` is what outcome
//!   tracking and the adaptive checks add. The others run the default adaptive rules,
//!   monitored (bench traffic enters no code, so enforced rules would refuse it).
//! * `gated/allow/redis`, `gated/deny/redis`: the same on the Redis store (behind its
//!   memory fallback, as `store.backend = "redis"` runs it), when `OTPGATE_BENCH_REDIS`
//!   names a Redis to use, e.g. `redis://127.0.0.1:6379`; keys go under `otpgate-bench:`.
//!   Every store call then crosses loopback to the server.
//!
//! `cargo bench --bench gated_request`.
//!
//! **Paired CPU mode**, for what one gateway adds over another on a shared machine whose
//! speed drifts by more than the difference (neighbours, frequency): with
//! `OTPGATE_BENCH_PAIRED=<rounds>`, the binary runs no criterion bench; each round sends
//! a block of requests through the gateway with the default adaptive rules and one through
//! the gateway without them, alternating which goes first, and measures each block's CPU
//! time on the bench's one thread (`CLOCK_THREAD_CPUTIME_ID`: user and kernel time,
//! the loopback to the upstream included, waiting excluded). It prints each scenario's
//! median CPU per request and the median of the rounds' ratios, which the drift, common
//! to both blocks of a round, cancels from:
//! `OTPGATE_BENCH_PAIRED=30 cargo bench --bench gated_request`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

/// The allocator the `otpgate` binary runs with (`src/main.rs`), so that the figures are
/// the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use fixtures::{client_ip, continuation_token, phone, register_body, CHALLENGE_ANSWER, TENANT};
use otpgate::config::Settings;
use otpgate::gateway::Gateway;
use otpgate::metrics::Metrics;
use otpgate::proxy::ConnInfo;
use otpgate::store::{FallbackStore, MemoryStore, RedisSettings, RedisStore};

/// Distinct phones, client IPs and continuation tokens cycled through.
const POOL: usize = 4096;

/// The fixed upstream: every request gets the Entra-shaped challenge answer.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json; charset=utf-8")
                            .body(Full::new(Bytes::from_static(CHALLENGE_ANSWER.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The bench config; `adaptive`: the default adaptive rules (monitored, so that every send
/// is judged, counted and still forwarded), else none.
fn settings(upstream: SocketAddr, adaptive: bool) -> Arc<Settings> {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1"]
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://{upstream}"
[log]
level = "warn"
[audit]
output = "off"
[routes.sms]
provider = "mock"
[providers.mock]
default_action = "allow"
[[providers.mock.rules]]
name = "bench-deny"
phone_prefix = "+4474009"
action = "deny"
{velocity}
{adaptive}
"#,
        velocity = include_str!("load/velocity.toml"),
        adaptive = if adaptive {
            include_str!("load/adaptive.toml")
        } else {
            "[defense]\nadaptive = []\n"
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    std::fs::write(&path, toml).unwrap();
    let (_, settings) = otpgate::config::load_with_env(Some(&path), Vec::new())
        .unwrap_or_else(|p| panic!("bench config invalid:\n{p}"));
    Arc::new(settings)
}

fn gateway(upstream: SocketAddr, adaptive: bool) -> Gateway {
    Gateway::new(settings(upstream, adaptive), Metrics::new()).unwrap()
}

/// A gateway on the Redis store at `url`, behind the memory fallback as in production.
async fn redis_gateway(upstream: SocketAddr, url: &str) -> Gateway {
    let redis = RedisStore::connect(&RedisSettings {
        url: url.to_owned(),
        key_prefix: "otpgate-bench:".to_owned(),
        timeout: Duration::from_secs(1),
        ..RedisSettings::default()
    })
    .await
    .unwrap_or_else(|e| panic!("OTPGATE_BENCH_REDIS={url}: {e}"));
    let store = FallbackStore::new(
        Arc::new(redis),
        MemoryStore::new(100_000),
        Duration::from_secs(1),
    );
    Gateway::with_store(settings(upstream, true), Metrics::new(), Arc::new(store)).unwrap()
}

struct Gated {
    body: Bytes,
    xff: String,
}

/// Requests over `POOL` phones from `+447400{first:06}` on.
fn pool(first: usize) -> Vec<Gated> {
    (0..POOL)
        .map(|n| Gated {
            body: register_body(&continuation_token(n), &phone(first + n)).into(),
            xff: client_ip(n),
        })
        .collect()
}

fn gated_request(g: &Gated) -> Request<Full<Bytes>> {
    Request::post(format!("/{TENANT}/register/v1.0/challenge"))
        .header("host", "login.contoso.com")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)")
        .header("x-forwarded-for", &g.xff)
        .body(Full::new(g.body.clone()))
        .unwrap()
}

const CONN: ConnInfo = ConnInfo {
    peer: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000),
    tls: false,
};

async fn send(gw: &Gateway, req: Request<Full<Bytes>>) -> StatusCode {
    let resp = gw.handle(req, CONN).await;
    let status = resp.status();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(upstream());
    let gw = rt.block_on(async { gateway(upstream, true) });
    let plain = rt.block_on(async { gateway(upstream, false) });
    let allow = pool(0);
    // The mock provider denies +4474009…: destination and velocity checks still run.
    let deny = pool(900_000);
    let pass = || {
        Request::get(format!("/{TENANT}/v2.0/.well-known/openid-configuration"))
            .header("host", "login.contoso.com")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // The decisions the benches claim: forwarded, answered locally, passed through.
    let claims = |gw: &Gateway| {
        rt.block_on(async {
            assert_eq!(send(gw, gated_request(&allow[0])).await, StatusCode::OK);
            assert_eq!(
                send(gw, gated_request(&deny[0])).await,
                StatusCode::BAD_REQUEST
            );
        })
    };
    claims(&gw);
    claims(&plain);
    rt.block_on(async { assert_eq!(send(&gw, pass()).await, StatusCode::OK) });
    let redis = std::env::var("OTPGATE_BENCH_REDIS")
        .ok()
        .map(|url| rt.block_on(redis_gateway(upstream, &url)));
    if let Some(gw) = &redis {
        claims(gw);
    }

    let mut g = c.benchmark_group("gateway");
    let next = AtomicUsize::new(0);
    g.bench_function("pass_through", |b| {
        b.to_async(&rt).iter(|| async { send(&gw, pass()).await })
    });
    let stores = [("", &gw), ("/no-adaptive", &plain)]
        .into_iter()
        .chain(redis.as_ref().map(|gw| ("/redis", gw)));
    for (store, gw) in stores {
        g.bench_function(format!("gated/allow{store}"), |b| {
            b.to_async(&rt).iter(|| async {
                let n = next.fetch_add(1, Ordering::Relaxed) % POOL;
                send(gw, gated_request(&allow[n])).await
            })
        });
        g.bench_function(format!("gated/deny{store}"), |b| {
            b.to_async(&rt).iter(|| async {
                let n = next.fetch_add(1, Ordering::Relaxed) % POOL;
                send(gw, gated_request(&deny[n])).await
            })
        });
    }
    g.finish();
}

/// Makes the `i`th request of a block.
type MakeRequest<'a> = dyn Fn(usize) -> Request<Full<Bytes>> + Sync + 'a;

/// CPU per request of `n` requests made by `make`, sent through `gw` one after another.
async fn cpu_per_request(gw: &Gateway, n: usize, make: &MakeRequest<'_>) -> f64 {
    let start = cpu_time::ThreadTime::now();
    for i in 0..n {
        std::hint::black_box(send(gw, make(i)).await);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The paired CPU mode (module docs).
fn paired(rounds: usize) {
    const BLOCK: usize = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(upstream());
    let on = rt.block_on(async { gateway(upstream, true) });
    let off = rt.block_on(async { gateway(upstream, false) });
    let allow = pool(0);
    let deny = pool(900_000);
    let next = AtomicUsize::new(0);
    let pass = |_: usize| {
        Request::get(format!("/{TENANT}/v2.0/.well-known/openid-configuration"))
            .header("host", "login.contoso.com")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let sends = |reqs: &'static [Gated]| {
        let next = &next;
        move |_: usize| gated_request(&reqs[next.fetch_add(1, Ordering::Relaxed) % POOL])
    };
    let allow: &'static [Gated] = allow.leak();
    let deny: &'static [Gated] = deny.leak();
    let allow_req = sends(allow);
    let deny_req = sends(deny);
    let scenarios: [(&str, &MakeRequest<'_>); 3] = [
        ("gated/allow", &allow_req),
        ("gated/deny", &deny_req),
        ("pass_through", &pass),
    ];
    println!("{rounds} rounds of {BLOCK} requests per gateway and scenario; CPU per request");
    for (name, make) in scenarios {
        // Warm both: the pool's keys, connections, caches.
        rt.block_on(async {
            cpu_per_request(&on, POOL, make).await;
            cpu_per_request(&off, POOL, make).await;
        });
        let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (a, b) = rt.block_on(async {
                if round % 2 == 0 {
                    let a = cpu_per_request(&on, BLOCK, make).await;
                    (a, cpu_per_request(&off, BLOCK, make).await)
                } else {
                    let b = cpu_per_request(&off, BLOCK, make).await;
                    (cpu_per_request(&on, BLOCK, make).await, b)
                }
            });
            with.push(a);
            without.push(b);
            ratios.push(a / b);
        }
        let spread = |v: &[f64]| {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            format!("{lo:.2}–{hi:.2}")
        };
        println!(
            "{name:14} default adaptive rules {:7.2} µs  adaptive = [] {:7.2} µs  added {:+5.1}% (rounds' ratios {})",
            median(with),
            median(without),
            (median(ratios.clone()) - 1.0) * 100.0,
            spread(&ratios),
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(rounds) = std::env::var("OTPGATE_BENCH_PAIRED") {
        paired(
            rounds
                .parse()
                .expect("OTPGATE_BENCH_PAIRED: a number of rounds"),
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
