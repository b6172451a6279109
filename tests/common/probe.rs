//! What the hardening suites measure: the gateway's admin metrics (read over HTTP, as an
//! operator would), the test process's resident memory (the gateway runs in-process), and
//! "back to zero" checks with a deadline.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Resident set size of this process in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    rss_kib_at("/proc/self/status")
}

/// Resident set size of process `pid` in KiB (`VmRSS`).
pub fn rss_kib_of(pid: u32) -> u64 {
    rss_kib_at(&format!("/proc/{pid}/status"))
}

fn rss_kib_at(path: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The admin `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample whose name and labels are exactly `series`, e.g.
/// `otpgate_open_connections` or `otpgate_requests_total{kind="token",class="2xx"}`;
/// 0 when absent.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The sum of every sample of `family` (all label sets), e.g. `otpgate_decisions_total`.
pub fn sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Open client connections and requests in flight, from the admin endpoint.
pub async fn load(admin: SocketAddr) -> (f64, f64) {
    let m = metrics(admin).await;
    (
        value(&m, "otpgate_open_connections"),
        value(&m, "otpgate_in_flight_requests"),
    )
}

/// Wait until the gateway holds no client connection and no request in flight: after a
/// fault, nothing may be left behind. Panics with the last reading after `within`.
pub async fn settles(admin: SocketAddr, within: Duration, what: &str) -> Duration {
    until(admin, within, what, |open, in_flight| {
        open == 0.0 && in_flight == 0.0
    })
    .await
}

/// Wait until `ok(open connections, requests in flight)` holds. Panics with the last
/// reading after `within`.
pub async fn until(
    admin: SocketAddr,
    within: Duration,
    what: &str,
    ok: impl Fn(f64, f64) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let (open, in_flight) = load(admin).await;
        if ok(open, in_flight) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: after {within:?} still {open} open connections, {in_flight} in flight"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
