//! Fault injection: the risk provider, Redis and the upstream misbehave in every way we
//! could script (hang, reset, trickle, flood, break off, answer garbage). For each: the
//! documented fail mode applies within its budget, the client never sees a 5xx the design
//! does not call for (upstream faults are 502/504 by design, everything else is answered),
//! and nothing is left behind: the admin endpoint's open connections and in-flight
//! requests return to zero, the misbehaving peer is let go, and memory stays bounded.

use std::time::{Duration, Instant};

use crate::fixtures::entra::{start, start_process, Env};
use crate::fixtures::faulty::{self, Step};
use crate::fixtures::probe;
use crate::fixtures::redis::RedisServer;
use crate::fixtures::risk::serve_human;
use otpgate::emulate::human::Answer;
use otpgate::emulate::prove::{self as prove_emu, ProveEmulator, ProveEmulatorConfig};

use crate::fixtures::ALONE;

const PHONE: &str = "+447400123456";
const MOBILE: (&str, &str) = ("x-px-authorization", "1");
const BUDGET: Duration = Duration::from_millis(300);
/// How long a fail mode may take beyond the budget: a correctness bound, not a benchmark.
const SLACK: Duration = Duration::from_millis(700);
const SETTLE: Duration = Duration::from_secs(5);
/// No velocity or adaptive rules (they would refuse the repeated sends), no audit noise.
const QUIET: &str = "[defense]\nvelocity = []\nadaptive = []\n[audit]\noutput = \"off\"\n";

/// What a fail mode looks like to the client, and whether the SMS went.
fn fail_mode_applied(mode: &str, a: &crate::fixtures::entra::Answer, sent: bool) -> bool {
    match mode {
        "open" => a.status == 200 && sent,
        "closed" => a.status == 400 && a.body["suberror"] == "provider_blocked_by_rep" && !sent,
        "step_up" => a.status == 400 && a.body["suberror"] == "challenge_required" && !sent,
        other => panic!("unknown fail mode {other}"),
    }
}

/// One registration SMS through `env`, timed.
async fn send_sms(env: &Env) -> (crate::fixtures::entra::Answer, Duration, bool) {
    let token = env
        .register_introspect("newphone@contoso.com")
        .await
        .token();
    let before = env.outbox().len();
    let started = Instant::now();
    let a = env.register_sms_with(&token, PHONE, &[MOBILE]).await;
    let took = started.elapsed();
    (a, took, env.outbox().len() > before)
}

fn oversized_json_with_length() -> Vec<Step> {
    vec![
        Step::Write(faulty::head(200, "application/json", 256 << 20)),
        Step::Write(b"{\"score\":0,\"action\":\"c\",\"pad\":\"".to_vec()),
        Step::Flood {
            chunk: vec![b'a'; 64 << 10],
            times: 4096,
        },
    ]
}

fn oversized_json_chunked() -> Vec<Step> {
    vec![
        Step::Write(faulty::chunked_head(200, "application/json")),
        Step::Write(faulty::chunk(b"{\"score\":0,\"action\":\"c\",\"pad\":\"")),
        Step::Flood {
            chunk: faulty::chunk(&vec![b'a'; 64 << 10]),
            times: 4096,
        },
    ]
}

/// The provider faults a raw TCP peer can play.
fn provider_faults() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("hangs", vec![Step::Hang]),
        ("resets the connection", vec![Step::Reset]),
        ("closes without answering", vec![]),
        (
            "slow headers",
            vec![
                Step::Sleep(Duration::from_secs(2)),
                Step::Write(faulty::response(
                    200,
                    "application/json",
                    "{\"score\":0,\"action\":\"c\"}",
                )),
            ],
        ),
        (
            "slow body",
            vec![
                Step::Write(faulty::head(200, "application/json", 24)),
                Step::Write(b"{\"score\":0,".to_vec()),
                Step::Sleep(Duration::from_secs(2)),
                Step::Write(b"\"action\":\"c\"}".to_vec()),
            ],
        ),
        (
            "500",
            vec![Step::Write(faulty::response(
                500,
                "application/json",
                "{\"message\":\"boom\"}",
            ))],
        ),
        (
            "503 with Retry-After",
            vec![Step::Write(
                b"HTTP/1.1 503 X\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )],
        ),
        (
            "malformed JSON",
            vec![Step::Write(faulty::response(
                200,
                "application/json",
                "{\"score\": 0, \"action\": ",
            ))],
        ),
        (
            "JSON of another shape",
            vec![Step::Write(faulty::response(
                200,
                "application/json",
                "[1,2,3]",
            ))],
        ),
        (
            "HTML instead of JSON",
            vec![Step::Write(faulty::response(
                200,
                "text/html",
                "<html>maintenance</html>",
            ))],
        ),
        (
            "not HTTP",
            vec![Step::Write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec())],
        ),
        (
            "breaks off mid-body",
            vec![
                Step::Write(faulty::head(200, "application/json", 1000)),
                Step::Write(b"{\"score\":0,".to_vec()),
            ],
        ),
        ("oversized JSON with a length", oversized_json_with_length()),
        ("oversized JSON, chunked", oversized_json_chunked()),
    ]
}

/// One provider fault under each fail mode: failures, and the slowest answer.
async fn provider_fault(name: &'static str, script: Vec<Step>) -> (Vec<String>, Duration) {
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let peer = faulty::serve(script).await;
    for mode in ["open", "closed", "step_up"] {
        let env = start(&human_toml(&peer.url(), mode)).await;
        let (a, took, sent) = send_sms(&env).await;
        slowest = slowest.max(took);
        if !fail_mode_applied(mode, &a, sent) || took > BUDGET + SLACK {
            failures.push(format!(
                "{name}, fail {mode}: {} in {took:?}, sms sent: {sent}: {}",
                a.status, a.body
            ));
        }
        let m = env.metrics().await;
        let ok = probe::value(
            &m,
            "otpgate_provider_calls_total{provider=\"human\",outcome=\"ok\"}",
        );
        if probe::sum(&m, "otpgate_provider_calls_total") != 1.0 || ok != 0.0 {
            failures.push(format!(
                "{name}, fail {mode}: provider outcome not counted as a failure"
            ));
        }
        probe::settles(env.gw.admin, SETTLE, name).await;
    }
    peer.released(SETTLE, name).await;
    assert!(peer.requests() >= 3, "{name}: the provider was asked");
    (failures, slowest)
}

// Several runtime threads: the faulty peers flooding 256 MiB answers run beside the
// gateways under test, and on one thread they could hold back the gateways' timers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_faults_resolve_by_fail_mode_within_the_budget() {
    // Alone: its own peers flood 256 MiB answers, and its deadlines are tight.
    let _alone = ALONE.write().await;
    let results = futures_util::future::join_all(
        provider_faults()
            .into_iter()
            .map(|(name, script)| provider_fault(name, script)),
    )
    .await;
    let slowest = results.iter().map(|r| r.1).max().unwrap_or_default();
    let failures: Vec<String> = results.into_iter().flat_map(|r| r.0).collect();
    println!("provider faults: slowest answer {slowest:?} (budget {BUDGET:?})");
    assert!(
        failures.is_empty(),
        "provider faults not resolved by the fail mode:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn an_oversized_provider_answer_does_not_grow_memory() {
    let _alone = ALONE.write().await;
    for (name, script) in [
        ("with a length", oversized_json_with_length()),
        ("chunked", oversized_json_chunked()),
    ] {
        let peer = faulty::serve(script).await;
        // The gateway is a child process: its memory is measured alone.
        let env = start_process(&format!(
            "{}[providers.circuit]\nfailure_threshold = 1000\n",
            human_toml(&peer.url(), "closed").replace("budget = \"300ms\"", "budget = \"2s\"")
        ))
        .await;
        // Several answers of up to 256 MiB each, cut by a 2 s budget.
        env.register_introspect("newphone@contoso.com").await;
        let before = env.gw.rss_kib();
        let mut peak = before;
        for _ in 0..4 {
            let (a, took, sent) = send_sms(&env).await;
            assert!(
                fail_mode_applied("closed", &a, sent),
                "{name}: {} {}",
                a.status,
                a.body
            );
            assert!(took < Duration::from_secs(2) + SLACK, "{name}: {took:?}");
            peak = peak.max(env.gw.rss_kib());
        }
        let after = env.gw.rss_kib();
        println!("oversized provider answer ({name}): RSS {before} KiB before, {after} KiB after, peak {peak} KiB");
        // Reading up to the provider-answer cap, never the 256 MiB (measured: 1.2 MiB).
        assert!(
            peak.saturating_sub(before) < 4 * 1024,
            "{name}: reading the provider's answer grew memory by {} KiB",
            peak - before
        );
        probe::settles(env.gw.admin, SETTLE, name).await;
        peer.released(SETTLE, name).await;
    }
}

#[tokio::test]
async fn provider_429_with_retry_after_opens_the_circuit_for_that_long() {
    let _shared = ALONE.read().await;
    let (emu, base) = serve_human(Answer {
        status: Some(429),
        retry_after: Some(30),
        ..Answer::default()
    })
    .await;
    let env = start(&human_toml(&base, "open")).await;
    let (a, took, sent) = send_sms(&env).await;
    assert!(
        fail_mode_applied("open", &a, sent),
        "{} {}",
        a.status,
        a.body
    );
    assert!(took < BUDGET + SLACK, "{took:?}");
    assert_eq!(emu.risk_requests().len(), 1);
    // Believed at once: the next sends do not ask the provider, the fail mode applies.
    for _ in 0..3 {
        let (a, took, sent) = send_sms(&env).await;
        assert!(
            fail_mode_applied("open", &a, sent),
            "{} {}",
            a.status,
            a.body
        );
        assert!(
            took < BUDGET,
            "an open circuit answers without waiting: {took:?}"
        );
    }
    assert_eq!(
        emu.risk_requests().len(),
        1,
        "no call while the provider asked us to wait"
    );
    let m = env.metrics().await;
    assert_eq!(
        probe::value(
            &m,
            "otpgate_provider_calls_total{provider=\"human\",outcome=\"rate_limited\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        probe::value(
            &m,
            "otpgate_provider_calls_total{provider=\"human\",outcome=\"circuit_open\"}"
        ),
        3.0,
        "{m}"
    );
    probe::settles(env.gw.admin, SETTLE, "429").await;

    // The same from Prove, failing closed.
    let prove = ProveEmulator::new(ProveEmulatorConfig {
        client_id: "prove-client".into(),
        client_secret: "prove-secret".into(),
        status: Some(429),
        retry_after: Some(30),
        ..ProveEmulatorConfig::default()
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prove_base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(prove_emu::serve(l, prove.clone(), std::future::pending()));
    let env = start(&format!(
        "{QUIET}[routes.sms]\nprovider = \"prove\"\nfail_mode = \"closed\"\nbudget = \"1s\"\n\
         [providers.prove]\nbase_url = \"{prove_base}\"\nclient_id = \"prove-client\"\nclient_secret = \"prove-secret\"\n"
    ))
    .await;
    for _ in 0..3 {
        let (a, took, sent) = send_sms(&env).await;
        assert!(
            fail_mode_applied("closed", &a, sent),
            "{} {}",
            a.status,
            a.body
        );
        assert!(took < Duration::from_secs(1) + SLACK, "{took:?}");
    }
    let asked = prove.requests().len();
    assert!(asked <= 2, "asked Prove {asked} times despite Retry-After");
    let m = env.metrics().await;
    assert_eq!(
        probe::value(
            &m,
            "otpgate_provider_calls_total{provider=\"prove\",outcome=\"circuit_open\"}"
        ),
        2.0,
        "{m}"
    );
    probe::settles(env.gw.admin, SETTLE, "prove 429").await;
}

// ---------------------------------------------------------------------------------------
// Redis

const LIMITED: &str = "[[defense.velocity]]\nname = \"sms-per-phone\"\nkey = \"phone\"\n\
    channel = \"sms\"\nwindow = \"1h\"\nlimit = 1000\naction = \"deny\"\n[audit]\noutput = \"off\"\n";

fn redis_toml(url: &str) -> String {
    format!("{}{LIMITED}", crate::fixtures::redis_toml(url, "100ms"))
}

/// What [`crate::fixtures::risk::human_toml`] configures, without velocity rules and audit.
fn human_toml(base: &str, fail_mode: &str) -> String {
    format!(
        "{QUIET}{}",
        crate::fixtures::risk::human_toml(base, fail_mode)
    )
}

/// A command to Redis over a fresh connection (the test's own, not the gateway's).
fn redis_command(port: u16, args: &[&str]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Each send: never a 5xx, decided well within the store timeout plus slack, the SMS sent
/// (the rule allows it, wherever it is counted).
async fn sends_hold(env: &Env, n: usize, what: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let token = env
            .register_introspect("newphone@contoso.com")
            .await
            .token();
        let started = Instant::now();
        let a = env.register_sms(&token, PHONE).await;
        let took = started.elapsed();
        slowest = slowest.max(took);
        assert_eq!(a.status, 200, "{what}: {}", a.body);
        // A reservation waits up to `store.redis.reserve_timeout` (1 s) for a Redis that
        // does not answer, since its late reply would decide; every other operation its
        // `timeout`.
        assert!(took < Duration::from_secs(2), "{what}: {took:?}");
    }
    slowest
}

#[tokio::test]
async fn redis_paused_erroring_and_restarted_never_fail_a_request() {
    let _shared = ALONE.read().await;
    let mut redis = RedisServer::start();
    let env = start(&redis_toml(&redis.url())).await;
    sends_hold(&env, 2, "healthy").await;
    assert_eq!(env.readyz().await.1, "ready\n");

    // Slow: frozen with SIGSTOP, connections open, nothing answers.
    redis.pause();
    let slowest = sends_hold(&env, 3, "paused").await;
    assert!(env.readyz().await.1.starts_with("degraded"));
    redis.resume();
    env.until_ready(Duration::from_secs(10), "after pause")
        .await;
    println!("redis paused: slowest send {slowest:?} (store timeout 100ms)");

    // Returning errors: every write refused (NOREPLICAS), reads still answered.
    assert!(redis_command(
        redis.port(),
        &["CONFIG", "SET", "min-replicas-to-write", "1"]
    )
    .starts_with("+OK"));
    let slowest = sends_hold(&env, 3, "erroring").await;
    let m = env.metrics().await;
    assert!(
        probe::value(&m, "otpgate_store_shared_errors_total") > 0.0,
        "{m}"
    );
    assert!(redis_command(
        redis.port(),
        &["CONFIG", "SET", "min-replicas-to-write", "0"]
    )
    .starts_with("+OK"));
    env.until_ready(Duration::from_secs(10), "after errors")
        .await;
    println!("redis erroring: slowest send {slowest:?}");

    // Down, then restarted (empty) on the same port.
    redis.stop();
    let slowest = sends_hold(&env, 3, "down").await;
    redis.restart();
    env.until_ready(Duration::from_secs(10), "after restart")
        .await;
    sends_hold(&env, 2, "restarted").await;
    println!("redis down: slowest send {slowest:?}");
    let m = env.metrics().await;
    assert!(
        probe::value(&m, "otpgate_store_recoveries_total") >= 3.0,
        "{m}"
    );
    probe::settles(env.gw.admin, SETTLE, "redis").await;
}

// ---------------------------------------------------------------------------------------
// Upstream

const INITIATE: &str = "/contoso.onmicrosoft.com/oauth2/v2.0/initiate";

/// A gateway in front of `peer` with a short response timeout.
fn upstream_toml(upstream: std::net::SocketAddr) -> String {
    format!(
        "[upstream]\nurl = \"http://{upstream}\"\nresponse_timeout = \"500ms\"\nconnect_timeout = \"500ms\"\n\
         [server]\nidle_timeout = \"1s\"\n[audit]\noutput = \"off\"\n"
    )
}

async fn gateway_for(upstream: std::net::SocketAddr) -> crate::fixtures::TestGateway {
    crate::fixtures::gateway(&upstream_toml(upstream)).await
}

/// The gateway as a child process, for checks of its own memory.
async fn gateway_for_process(upstream: std::net::SocketAddr) -> crate::fixtures::TestGateway {
    crate::fixtures::gateway_process(&upstream_toml(upstream)).await
}

/// A pass-through request, or a gated one (whose answer the gateway reads to learn from).
async fn request(
    gw: &crate::fixtures::TestGateway,
    gated: bool,
) -> reqwest::Result<reqwest::Response> {
    let c = crate::fixtures::client();
    if gated {
        c.post(gw.url(INITIATE))
            .form(&[
                ("client_id", otpgate::emulate::entra::DEMO_CLIENT_ID),
                ("username", "a@b.c"),
            ])
            .send()
            .await
    } else {
        c.get(gw.url("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"))
            .send()
            .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The gateway answers this status itself, within the response timeout (plus slack).
    Status(u16),
    /// The head arrives with this status, then the body breaks off: the client must see an
    /// error, never a silently short body.
    BrokenBody(u16),
    /// The whole body arrives intact, this long.
    Intact(usize),
    /// The body neither completed nor failed within 10 s (never wanted).
    Stalled,
}

fn upstream_faults() -> Vec<(&'static str, Vec<Step>, Expect, Expect)> {
    use Expect::*;
    let json = "{\"continuation_token\":\"t\",\"challenge_type\":\"redirect\"}";
    let big = 8 << 20;
    vec![
        // (name, script, pass-through, gated)
        ("resets", vec![Step::Reset], Status(502), Status(502)),
        ("closes without answering", vec![], Status(502), Status(502)),
        ("hangs", vec![Step::Hang], Status(504), Status(504)),
        (
            "slow headers",
            vec![
                Step::Sleep(Duration::from_secs(1)),
                Step::Write(faulty::response(200, "application/json", json)),
            ],
            Status(504),
            Status(504),
        ),
        (
            "answers garbage",
            vec![Step::Write(b"HTTP/1.1 abc\r\n\r\n".to_vec())],
            Status(502),
            Status(502),
        ),
        (
            "slow body, then complete",
            vec![
                Step::Write(faulty::head(200, "application/json", json.len())),
                Step::Write(json.as_bytes()[..10].to_vec()),
                Step::Sleep(Duration::from_millis(700)),
                Step::Write(json.as_bytes()[10..].to_vec()),
            ],
            Intact(json.len()),
            // The gateway reads a gated answer within the response timeout.
            Status(502),
        ),
        (
            "slow body that stalls",
            vec![
                Step::Write(faulty::head(200, "application/json", json.len())),
                Step::Write(json.as_bytes()[..10].to_vec()),
                Step::Hang,
            ],
            BrokenBody(200),
            Status(502),
        ),
        (
            "closes mid-body",
            vec![
                Step::Write(faulty::head(200, "application/json", 1000)),
                Step::Write(json.as_bytes().to_vec()),
            ],
            BrokenBody(200),
            Status(502),
        ),
        (
            "closes mid-chunk",
            vec![
                Step::Write(faulty::chunked_head(200, "application/json")),
                Step::Write(b"100\r\n{\"a\":".to_vec()),
            ],
            BrokenBody(200),
            Status(502),
        ),
        (
            "oversized answer with a length",
            vec![
                Step::Write(faulty::head(200, "application/json", big)),
                Step::Flood {
                    chunk: vec![b' '; 64 << 10],
                    times: big / (64 << 10),
                },
            ],
            Intact(big),
            // Too large to learn from: passed on unread.
            Intact(big),
        ),
        (
            "oversized answer, chunked",
            vec![
                Step::Write(faulty::chunked_head(200, "application/json")),
                Step::Flood {
                    chunk: faulty::chunk(&vec![b' '; 64 << 10]),
                    times: big / (64 << 10),
                },
                Step::Write(b"0\r\n\r\n".to_vec()),
            ],
            Intact(big),
            // Grows past the learning cap with no length announced: refused, not buffered.
            Status(502),
        ),
    ]
}

async fn outcome(gw: &crate::fixtures::TestGateway, gated: bool) -> (Expect, Duration) {
    let started = Instant::now();
    let resp = match request(gw, gated).await {
        Ok(r) => r,
        Err(e) => panic!("the gateway did not answer: {e}"),
    };
    let status = resp.status().as_u16();
    let head_after = started.elapsed();
    let is_gateway_error = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"))
        && (status == 502 || status == 504);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await;
    let got = match body {
        Ok(Ok(_)) if is_gateway_error => Expect::Status(status),
        Ok(Ok(b)) => Expect::Intact(b.len()),
        Ok(Err(_)) => Expect::BrokenBody(status),
        Err(_) => Expect::Stalled,
    };
    (got, head_after)
}

#[tokio::test]
async fn upstream_faults_are_502_or_504_and_leave_nothing_behind() {
    let _shared = ALONE.read().await;
    let mut failures = Vec::new();
    let dead = crate::fixtures::dead_addr().await;
    let gw = gateway_for(dead).await;
    for gated in [false, true] {
        let (got, took) = outcome(&gw, gated).await;
        if got != Expect::Status(502) || took > Duration::from_millis(500) + SLACK {
            failures.push(format!(
                "refused connection (gated: {gated}): {got:?} after {took:?}"
            ));
        }
    }
    probe::settles(gw.admin, SETTLE, "refused").await;
    let results = futures_util::future::join_all(upstream_faults().into_iter().map(
        |(name, script, pass, gated_want)| async move {
            let mut failures = Vec::new();
            let peer = faulty::serve(script).await;
            let gw = gateway_for(peer.addr).await;
            for (gated, want) in [(false, pass), (true, gated_want)] {
                let (got, took) = outcome(&gw, gated).await;
                let in_time =
                    !matches!(want, Expect::Status(_)) || took < Duration::from_millis(500) + SLACK;
                if got != want || !in_time {
                    failures.push(format!(
                        "{name} (gated: {gated}): want {want:?}, got {got:?}, head after {took:?}"
                    ));
                }
            }
            probe::settles(gw.admin, SETTLE, name).await;
            peer.released(SETTLE, name).await;
            failures
        },
    ))
    .await;
    failures.extend(results.into_iter().flatten());
    assert!(
        failures.is_empty(),
        "upstream faults not handled as designed:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn clients_that_leave_during_a_hanging_upstream_leave_nothing_behind() {
    let _shared = ALONE.read().await;
    let peer = faulty::serve(vec![Step::Hang]).await;
    let gw = crate::fixtures::gateway(&format!(
        "[upstream]\nurl = \"http://{}\"\nresponse_timeout = \"1500ms\"\n[audit]\noutput = \"off\"\n",
        peer.addr
    ))
    .await;
    // HTTP/1.1 clients that give up while their request waits on the upstream.
    let mut tasks = Vec::new();
    for gated in [false, true, false, true] {
        let url = if gated {
            gw.url(INITIATE)
        } else {
            gw.url("/x")
        };
        tasks.push(tokio::spawn(async move {
            let c = crate::fixtures::client();
            let req = if gated {
                c.post(url).form(&[("username", "a@b.c")])
            } else {
                c.get(url)
            };
            tokio::time::timeout(Duration::from_millis(300), req.send()).await
        }));
    }
    for t in tasks {
        assert!(
            t.await.unwrap().is_err(),
            "the upstream hangs: nothing can have answered"
        );
    }
    // Ungated requests end with their client. POSTs run to the end on their own (a code
    // may be on its way), which the response timeout bounds.
    let (_, in_flight) = probe::load(gw.admin).await;
    assert!(in_flight <= 2.0, "only the POSTs may outlive their clients");
    probe::settles(gw.admin, SETTLE, "abandoned HTTP/1.1 requests").await;
    // HTTP/2 clients that reset their streams.
    let mut h2 = crate::fixtures::h2raw::H2::connect(gw.addr).await;
    for id in [1u32, 3, 5] {
        h2.headers(
            id,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "gw"),
                (":path", "/x"),
            ],
            true,
        )
        .await;
    }
    crate::fixtures::eventually(SETTLE, "three h2 streams in flight", || {
        std::future::ready(gw.metrics().in_flight_now() >= 3)
    })
    .await;
    for id in [1u32, 3, 5] {
        h2.reset(id, crate::fixtures::h2raw::CANCEL).await;
    }
    // The h2 connection itself stays open; its abandoned streams must not count.
    let settled = probe::until(gw.admin, SETTLE, "abandoned requests", |open, in_flight| {
        open == 1.0 && in_flight == 0.0
    })
    .await;
    drop(h2);
    probe::settles(gw.admin, SETTLE, "abandoned requests").await;
    peer.released(SETTLE, "abandoned requests").await;
    println!("abandoned requests settled after {settled:?}");
}

#[tokio::test]
async fn an_oversized_upstream_answer_streams_in_bounded_memory() {
    let _alone = ALONE.write().await;
    let size: usize = 64 << 20;
    let peer = faulty::serve(vec![
        Step::Write(faulty::chunked_head(200, "application/octet-stream")),
        Step::Flood {
            chunk: faulty::chunk(&vec![b'x'; 64 << 10]),
            times: size / (64 << 10),
        },
        Step::Write(b"0\r\n\r\n".to_vec()),
    ])
    .await;
    let gw = gateway_for_process(peer.addr).await;
    let c = crate::fixtures::client();
    // Warm up, then stream 64 MiB through twice, reading it slowly enough that buffering
    // anywhere would show.
    let _ = c
        .get(gw.url("/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let before = gw.rss_kib();
    let mut peak = before;
    for _ in 0..2 {
        let mut resp = c.get(gw.url("/big")).send().await.unwrap();
        let mut got = 0usize;
        while let Some(chunk) = resp.chunk().await.unwrap() {
            got += chunk.len();
            if got % (8 << 20) < chunk.len() {
                peak = peak.max(gw.rss_kib());
            }
        }
        assert_eq!(got, size);
    }
    let after = gw.rss_kib();
    println!(
        "64 MiB pass-through answer: RSS {before} KiB before, {after} KiB after, peak {peak} KiB"
    );
    // A few chunks in flight, never the 64 MiB (measured: under 1 MiB).
    assert!(
        peak.saturating_sub(before) < 4 * 1024,
        "streaming grew memory by {} KiB",
        peak - before
    );
    probe::settles(gw.admin, SETTLE, "oversized").await;
}
