//! Soak and lifecycle: two otpgate processes on one Redis behind a round-robin balancer,
//! mixed traffic (pass-through, allowed sends, denied sends, step-ups solved with the
//! built-in proof of work, and one phone hammered past its velocity limit), SIGHUP reloads
//! on a schedule and one rolling restart of a replica. It checks that no request the design
//! says succeeds fails, that the SMS Entra sent equal both the audit lines and the sends
//! clients saw, that the velocity limit holds exactly across replicas and the restart, that
//! memory stays flat after warm-up, and that nothing is left in flight.
//!
//! It runs twice: on one `redis-server`, and on a three-master Redis Cluster.
//!
//! `OTPGATE_SOAK_SECS` sets the length: 60 s on one server and 30 s on the cluster by
//! default (run with the suite), and the full soak of either is
//! `OTPGATE_SOAK_SECS=600 cargo test --release --test it soak::two_replicas_on_redis -- --nocapture`
//! (or `soak::two_replicas_on_a_redis_cluster`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::fixtures::flows::{register_until_challenge, sms_challenge, TENANT_PATH};
use crate::fixtures::probe::rss_kib_of;
use crate::fixtures::process::Otpgate;
use crate::fixtures::redis::{RedisCluster, RedisServer};
use otpgate::emulate::entra::{serve, EntraConfig, EntraEmulator};
use otpgate::stepup::pow::{client_payload, solve, AltchaChallenge};

/// One phone every worker keeps sending to: exactly this many SMS may reach it.
const HOT_PHONE: &str = "+447911123456";
const HOT_LIMIT: usize = 3;
/// A premium-rate number: the destination policy denies it.
const DENIED_PHONE: &str = "+449090123456";
const WORKERS: usize = 6;
/// The audit log's phone HMAC key: the test finds the hot phone's lines by its hash.
const AUDIT_KEY: &str = "soak-audit-key";
/// Growth of a replica's resident memory allowed between the end of warm-up and the end.
const RSS_SLACK_KIB: u64 = 16 * 1024;

fn soak_length(default_secs: u64) -> Duration {
    let secs = std::env::var("OTPGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    Duration::from_secs(secs)
}

/// The Redis both replicas share: one server, or a three-master cluster.
enum Shared {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Shared {
    fn url(&self) -> String {
        match self {
            Shared::One(server) => server.url(),
            Shared::Cluster(cluster) => cluster.url(),
        }
    }

    fn cluster(&self) -> bool {
        matches!(self, Shared::Cluster(_))
    }
}

/// A replica's config. `budget` only changes across reloads (the email route's provider
/// budget, which this traffic never uses): a reload that must change nothing visible.
/// Replica a runs on one thread (the current-thread scheduler), b on one per CPU.
fn config(entra: &str, redis: &Shared, audit: &Path, budget_ms: u32, workers: usize) -> String {
    let cluster = redis.cluster();
    let redis = redis.url();
    format!(
        r#"[server]
listen = "127.0.0.1:0"
shutdown_grace = "20s"
worker_threads = {workers}
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://{entra}"
[log]
format = "json"
level = "warn,otpgate::server=info"
[audit]
output = "file"
path = "{audit}"
hmac_key = "{AUDIT_KEY}"
max_bytes = 4194304
keep = 1000
[store]
backend = "redis"
key_secret = "soak-store-key-secret-shared-by-both-replicas"
[store.redis]
url = "{redis}"
cluster = {cluster}
timeout = "2s"
[stepup]
key = "soak-step-up-key-shared-by-both-replicas"
max_number = 2000
[defense.destination.countries]
FR = "step_up"
[[defense.velocity]]
name = "per-phone"
key = "phone"
channel = "sms"
window = "1h"
limit = {HOT_LIMIT}
action = "deny"
[[defense.velocity]]
name = "per-ip"
key = "ip"
window = "1h"
limit = 100000000
action = "throttle"
[routes.email]
budget = "{budget_ms}ms"
"#,
        audit = audit.display()
    )
}

/// Round robin over the replicas in service, as a load balancer does.
#[derive(Default)]
struct Balancer {
    live: RwLock<Vec<String>>,
    next: AtomicUsize,
}

impl Balancer {
    fn pick(&self) -> String {
        let live = self.live.read().unwrap();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % live.len();
        live[i].clone()
    }

    fn add(&self, base: String) {
        self.live.write().unwrap().push(base);
    }

    fn remove(&self, base: &str) {
        self.live.write().unwrap().retain(|b| b != base);
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    pass: AtomicU64,
    sent: AtomicU64,
    denied: AtomicU64,
    stepped_up: AtomicU64,
    hot_sent: AtomicU64,
    hot_denied: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, at: Duration, what: String) {
        self.failures
            .lock()
            .unwrap()
            .push(format!("{:.1}s {what}", at.as_secs_f64()));
    }
}

struct Traffic {
    lb: Balancer,
    tally: Tally,
    stop: AtomicBool,
    started: Instant,
    numbers: AtomicU64,
}

/// A send's answer: status and JSON body.
async fn answer(req: reqwest::RequestBuilder) -> Result<(u16, serde_json::Value), String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.json().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn is_sent(status: u16, body: &serde_json::Value) -> bool {
    status == 200 && body["challenge_type"] == "oob"
}

fn is_denied(status: u16, body: &serde_json::Value) -> bool {
    status == 400 && body["suberror"] == "provider_blocked_by_rep"
}

/// One scenario; `Err` is a failure the design says cannot happen.
async fn scenario(t: &Traffic, client: &reqwest::Client, n: u64) -> Result<(), String> {
    let tally = &t.tally;
    if n.is_multiple_of(5) {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!(
            "{}{TENANT_PATH}/v2.0/.well-known/openid-configuration",
            t.lb.pick()
        );
        let r = client.get(url).send().await.map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("pass-through: {}", r.status()));
        }
        tally.pass.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    tally.requests.fetch_add(5, Ordering::Relaxed);
    let ct = register_until_challenge(client, || t.lb.pick()).await?;
    let number = t.numbers.fetch_add(1, Ordering::Relaxed);
    match n % 5 {
        1 => {
            // A million numbers, each sent to far fewer times than the per-phone limit.
            let phone = format!("+447400{:06}", number % 1_000_000);
            let (status, body) = answer(sms_challenge(client, &t.lb.pick(), &ct, &phone)).await?;
            if !is_sent(status, &body) {
                return Err(format!("allowed send: {status} {body}"));
            }
            tally.sent.fetch_add(1, Ordering::Relaxed);
        }
        2 => {
            let (status, body) =
                answer(sms_challenge(client, &t.lb.pick(), &ct, DENIED_PHONE)).await?;
            if !is_denied(status, &body) {
                return Err(format!("premium send: {status} {body}"));
            }
            tally.denied.fetch_add(1, Ordering::Relaxed);
        }
        3 => {
            let phone = format!("+3361{:07}", number % 10_000_000);
            let (status, body) = answer(sms_challenge(client, &t.lb.pick(), &ct, &phone)).await?;
            if status != 400 || body["suberror"] != "challenge_required" {
                return Err(format!("step-up: {status} {body}"));
            }
            let challenge: AltchaChallenge =
                serde_json::from_value(body["otpgate_challenge"]["altcha"].clone())
                    .map_err(|e| format!("step-up challenge: {e} in {body}"))?;
            let proof = client_payload(&challenge, solve(&challenge).ok_or("unsolvable")?);
            tally.requests.fetch_add(1, Ordering::Relaxed);
            // The proof goes to whichever replica the balancer picks next.
            let retry =
                sms_challenge(client, &t.lb.pick(), &ct, &phone).header("x-otpgate-proof", proof);
            let (status, body) = answer(retry).await?;
            if !is_sent(status, &body) {
                return Err(format!("send with proof: {status} {body}"));
            }
            tally.stepped_up.fetch_add(1, Ordering::Relaxed);
            tally.sent.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            let (status, body) =
                answer(sms_challenge(client, &t.lb.pick(), &ct, HOT_PHONE)).await?;
            if is_sent(status, &body) {
                tally.hot_sent.fetch_add(1, Ordering::Relaxed);
                tally.sent.fetch_add(1, Ordering::Relaxed);
            } else if is_denied(status, &body) {
                tally.hot_denied.fetch_add(1, Ordering::Relaxed);
            } else {
                return Err(format!("hot phone: {status} {body}"));
            }
        }
    }
    Ok(())
}

async fn worker(t: Arc<Traffic>, first: u64) {
    let client = crate::fixtures::client();
    let mut n = first;
    while !t.stop.load(Ordering::Relaxed) {
        if let Err(e) = scenario(&t, &client, n).await {
            t.tally.fail(t.started.elapsed(), e);
        }
        n += 1;
    }
}

/// The sum of a metric's series whose line contains every one of `labels`.
async fn metric(admin: &str, name: &str, labels: &[&str]) -> f64 {
    let text = crate::fixtures::probe::metrics(admin.parse().unwrap()).await;
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the audit log says about forwarded sends Entra accepted, over every file of
/// both replicas, rotated ones included.
#[derive(Debug, Default)]
struct Audited {
    lines: usize,
    files: usize,
    sends: usize,
    hot_sends: usize,
}

fn audited(dir: &Path) -> Audited {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(AUDIT_KEY.as_bytes()).unwrap();
    mac.update(HOT_PHONE.as_bytes());
    let hot = hex::encode(mac.finalize().into_bytes());
    let mut out = Audited::default();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains(".audit") {
            continue;
        }
        out.files += 1;
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            out.lines += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["endpoint"] == "register_challenge" && v["upstream_status"] == 200 {
                out.sends += 1;
                if v["phone_hmac"] == hot.as_str() {
                    out.hot_sends += 1;
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis_with_reloads_and_a_rolling_restart() {
    soak(Shared::One(RedisServer::start()), soak_length(60)).await;
}

/// The same on a three-master Redis Cluster (`store.redis.cluster`): the hot phone's
/// window, the flows, nonces and conversion figures spread over the masters' slots.
/// Shorter by default than the single-server soak, which runs beside it in the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_redis_cluster_with_reloads_and_a_rolling_restart() {
    soak(Shared::Cluster(RedisCluster::start()), soak_length(30)).await;
}

async fn soak(redis: Shared, length: Duration) {
    let reload_every = (length / 6).min(Duration::from_secs(30));
    let restart_at = length / 2;
    let warm_up = length / 4;

    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entra = l.local_addr().unwrap().to_string();
    let emulator = EntraEmulator::new(EntraConfig::demo());
    tokio::spawn(serve(l, emulator.clone(), std::future::pending()));

    let dir = tempfile::tempdir().unwrap();
    // Rotated files are `a.audit.1`, …: every name with `.audit` in it is the log.
    let audits = [dir.path().join("a.audit"), dir.path().join("b.audit")];
    let configs = [dir.path().join("a.toml"), dir.path().join("b.toml")];
    let write_configs = |budget_ms: u32| {
        for ((config_path, audit), workers) in configs.iter().zip(&audits).zip([1, 0]) {
            let text = config(&entra, &redis, audit, budget_ms, workers);
            std::fs::write(config_path, text).unwrap();
        }
    };
    write_configs(300);
    let mut a = Otpgate::run(&configs[0]).await;
    let b = Otpgate::run(&configs[1]).await;

    let traffic = Arc::new(Traffic {
        lb: Balancer::default(),
        tally: Tally::default(),
        stop: AtomicBool::new(false),
        started: Instant::now(),
        numbers: AtomicU64::new(0),
    });
    traffic.lb.add(format!("http://{}", a.addr));
    traffic.lb.add(format!("http://{}", b.addr));
    let workers: Vec<_> = (0..WORKERS as u64)
        .map(|i| tokio::spawn(worker(traffic.clone(), i)))
        .collect();

    let started = traffic.started;
    let mut next_reload = reload_every;
    let mut reloads = 0u32;
    let mut restarted = false;
    // (seconds since start, RSS of replica b in KiB)
    let mut rss_b: Vec<(f64, u64)> = Vec::new();
    let rss_a_before = rss_kib_of(a.child.id());
    let mut rss_a_after = 0;
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = started.elapsed();
        rss_b.push((now.as_secs_f64(), rss_kib_of(b.child.id())));
        if now >= next_reload {
            reloads += 1;
            write_configs(if reloads % 2 == 1 { 350 } else { 300 });
            a.signal("-HUP");
            b.signal("-HUP");
            next_reload += reload_every;
        }
        if !restarted && now >= restart_at {
            restarted = true;
            // Out of the balancer first (as a preStop hook waits), then SIGTERM: requests
            // already on it finish during the drain.
            let base = format!("http://{}", a.addr);
            traffic.lb.remove(&base);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (status, output) = a.terminate().await;
            assert!(status.success(), "replica a exit:\n{}", output.join("\n"));
            a = Otpgate::run(&configs[0]).await;
            traffic.lb.add(format!("http://{}", a.addr));
            println!(
                "rolling restart of replica a done at {:.1}s",
                now.as_secs_f64()
            );
        }
        if restarted {
            rss_a_after = rss_kib_of(a.child.id());
        }
    }
    traffic.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let tally = &traffic.tally;
    let failures = tally.failures.lock().unwrap().clone();
    let in_flight_a = metric(&a.admin, "otpgate_in_flight_requests", &[]).await;
    let in_flight_b = metric(&b.admin, "otpgate_in_flight_requests", &[]).await;
    let reloads_ok_b = metric(&b.admin, "otpgate_config_reloads_total", &["\"ok\""]).await;
    let fallbacks = metric(&a.admin, "otpgate_store_fallbacks_total", &[]).await
        + metric(&b.admin, "otpgate_store_fallbacks_total", &[]).await;
    let dropped = metric(&a.admin, "otpgate_audit_dropped_total", &[]).await
        + metric(&b.admin, "otpgate_audit_dropped_total", &[]).await;
    let (status_a, out_a) = a.terminate().await;
    let (status_b, out_b) = b.terminate().await;
    assert!(status_a.success(), "{}", out_a.join("\n"));
    assert!(status_b.success(), "{}", out_b.join("\n"));

    let sent_by_entra = emulator.sent_total() as usize;
    let outbox = emulator.outbox();
    // The outbox keeps the newest 10,000 codes; when it holds them all, it counts the hot
    // phone's too.
    let hot_in_outbox = (outbox.len() == sent_by_entra)
        .then(|| outbox.iter().filter(|e| e.target == HOT_PHONE).count());
    let audit = audited(dir.path());
    let warm = rss_b
        .iter()
        .find(|(t, _)| *t >= warm_up.as_secs_f64())
        .map_or(0, |s| s.1);
    let last_quarter = length.as_secs_f64() * 0.75;
    let end = rss_b
        .iter()
        .filter(|(t, _)| *t >= last_quarter)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let secs = length.as_secs_f64();
    let on = if redis.cluster() {
        "Redis Cluster"
    } else {
        "Redis"
    };
    println!(
        "soak on {on}, {secs:.0}s, {WORKERS} workers: {} requests ({:.0}/s), {} pass-through, {} SMS sent \
         ({} after a step-up), {} denied, hot phone {} sent / {} denied; {reloads} reload rounds \
         (replica b counted {reloads_ok_b} ok reloads); {} failures; Entra sent {sent_by_entra}; \
         audit: {} sends, {} to the hot phone, in {} lines over {} files; RSS b {} KiB after \
         warm-up, {} KiB max in the last quarter; RSS a {} KiB at start, {} KiB at the end (after its restart)",
        tally.requests.load(Ordering::Relaxed),
        tally.requests.load(Ordering::Relaxed) as f64 / secs,
        tally.pass.load(Ordering::Relaxed),
        tally.sent.load(Ordering::Relaxed),
        tally.stepped_up.load(Ordering::Relaxed),
        tally.denied.load(Ordering::Relaxed),
        tally.hot_sent.load(Ordering::Relaxed),
        tally.hot_denied.load(Ordering::Relaxed),
        failures.len(),
        audit.sends,
        audit.hot_sends,
        audit.lines,
        audit.files,
        warm,
        end,
        rss_a_before,
        rss_a_after,
    );

    assert!(
        failures.is_empty(),
        "{} failed requests, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(restarted, "the rolling restart happened");
    assert!(reloads >= 2, "at least two reload rounds ({reloads})");
    assert!(
        reloads_ok_b >= f64::from(reloads),
        "replica b reloaded each time: {reloads_ok_b} < {reloads}"
    );
    let sent = tally.sent.load(Ordering::Relaxed) as usize;
    assert!(
        sent > 0 && tally.denied.load(Ordering::Relaxed) > 0,
        "both kinds of traffic ran"
    );
    assert!(tally.stepped_up.load(Ordering::Relaxed) > 0, "step-ups ran");
    assert_eq!(fallbacks, 0.0, "Redis served every store call");
    assert_eq!(dropped, 0.0, "no audit line dropped");
    assert_eq!(
        sent_by_entra, sent,
        "Entra sent exactly what clients saw sent"
    );
    assert_eq!(audit.sends, sent, "one audit line per SMS sent");
    assert_eq!(
        audit.hot_sends, HOT_LIMIT,
        "exactly the velocity limit reached the hot phone"
    );
    if let Some(hot) = hot_in_outbox {
        assert_eq!(hot, HOT_LIMIT, "the outbox agrees on the hot phone");
    }
    assert_eq!(
        tally.hot_sent.load(Ordering::Relaxed) as usize,
        HOT_LIMIT,
        "clients saw exactly the limit sent to the hot phone"
    );
    assert_eq!(in_flight_a + in_flight_b, 0.0, "nothing left in flight");
    assert!(
        end <= warm + RSS_SLACK_KIB,
        "replica b's memory grew from {warm} KiB after warm-up to {end} KiB"
    );
}
