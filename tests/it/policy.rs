//! Local defenses and the decision through the gateway: exact velocity across replicas on
//! one Redis, the fallback when Redis dies, the built-in proof of work end to end, and
//! monitor mode. The Entra emulator's outbox counts what was really sent.

use std::time::Duration;

use crate::fixtures::entra::{start, Env};
use crate::fixtures::flows::sms_challenge;
use crate::fixtures::redis::RedisServer;
use otpgate::emulate::entra::DEMO_CLIENT_ID;
use otpgate::stepup::pow::{client_payload, solve, AltchaChallenge};

const PHONE: &str = "+447400123456";

/// Only one velocity rule: at most 3 SMS per phone per hour.
const THREE_PER_PHONE: &str = "[[defense.velocity]]\nname = \"sms-per-phone\"\nkey = \"phone\"\n\
    channel = \"sms\"\nwindow = \"1h\"\nlimit = 3\naction = \"deny\"\n";

fn redis_toml(url: &str) -> String {
    crate::fixtures::redis_toml(url, "250ms")
}

/// The Redis store with `store.key_secret` set.
fn keyed_redis_toml(url: &str, secret: &str) -> String {
    redis_toml(url).replace(
        "[store.redis]",
        &format!("key_secret = \"{secret}\"\n[store.redis]"),
    )
}

/// `n` registration flows ready for their SMS challenge.
async fn registration_tokens(env: &Env, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for _ in 0..n {
        tokens.push(
            env.register_introspect("newphone@contoso.com")
                .await
                .token(),
        );
    }
    tokens
}

/// Two gateways in front of one emulator, sharing a store configured by `store_toml`.
async fn two_replicas(store_toml: &str) -> (Env, crate::fixtures::TestGateway) {
    let a = start(&format!("{store_toml}{THREE_PER_PHONE}")).await;
    let b = crate::fixtures::gateway(&format!(
        "[upstream]\nurl = \"http://{}\"\n{store_toml}{THREE_PER_PHONE}",
        a.entra
    ))
    .await;
    (a, b)
}

/// Fire one SMS challenge per token, alternating replicas, all at once; count 200s.
async fn burst(env: &Env, b: &crate::fixtures::TestGateway, tokens: Vec<String>) -> (usize, usize) {
    burst_to(env, b, tokens, PHONE).await
}

/// [`burst`] to `phone`.
async fn burst_to(
    env: &Env,
    b: &crate::fixtures::TestGateway,
    tokens: Vec<String>,
    phone: &str,
) -> (usize, usize) {
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let url = if i % 2 == 0 {
            env.gw.url("")
        } else {
            b.url("")
        };
        let client = env.client.clone();
        let phone = phone.to_owned();
        tasks.push(tokio::spawn(async move {
            let form = [
                ("client_id", DEMO_CLIENT_ID),
                ("continuation_token", token.as_str()),
                ("challenge_type", "oob"),
                ("challenge_channel", "sms"),
                ("challenge_target", phone.as_str()),
            ];
            client
                .post(format!(
                    "{url}/contoso.onmicrosoft.com/register/v1.0/challenge"
                ))
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    let mut five = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            s if s >= 500 => five += 1,
            _ => {}
        }
    }
    (ok, five)
}

#[tokio::test]
async fn two_replicas_on_one_redis_send_exactly_three() {
    let redis = RedisServer::start();
    let (env, b) = two_replicas(&redis_toml(&redis.url())).await;
    let tokens = registration_tokens(&env, 40).await;
    let (ok, five) = burst(&env, &b, tokens).await;
    assert_eq!(five, 0);
    assert_eq!(ok, 3, "answers that let a code through");
    assert_eq!(env.outbox().len(), 3, "exactly 3 SMS across both replicas");
}

/// Exact under a slow Redis, end to end: two replicas at the default store budgets, Redis
/// frozen for 120 ms (`CLIENT PAUSE 120 ALL`) just before each burst of 40 SMS challenges
/// to one phone with a limit of 3: the outbox gets exactly 3 codes for that phone, 100
/// times in 100 (with `reserve_timeout` cut to the 50 ms of the other operations, 6 every
/// time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_redis_lets_no_more_codes_out_than_the_limit() {
    let redis = RedisServer::start();
    let defaults = format!(
        "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"{}\"\n",
        redis.url()
    );
    let (env, b) = two_replicas(&defaults).await;
    for rep in 0..100 {
        let phone = format!("+4474001{rep:05}");
        let tokens = registration_tokens(&env, 40).await;
        redis.pause_clients(120);
        let (ok, five) = burst_to(&env, &b, tokens, &phone).await;
        let sent = env.outbox().iter().filter(|m| m.target == phone).count();
        assert_eq!(five, 0, "repetition {rep}");
        assert_eq!(
            (ok, sent),
            (3, 3),
            "repetition {rep}: answers let through, SMS sent"
        );
    }
}

/// The same on a real three-master Redis Cluster (`store.redis.cluster = true`): the
/// gateway's calls split by slot, and the limit holds exactly across both replicas.
#[tokio::test]
async fn two_replicas_on_a_redis_cluster_send_exactly_three() {
    let cluster = crate::fixtures::redis::RedisCluster::start();
    let toml = format!("{}cluster = true\n", redis_toml(&cluster.url()));
    let (env, b) = two_replicas(&toml).await;
    let tokens = registration_tokens(&env, 40).await;
    let (ok, five) = burst(&env, &b, tokens).await;
    assert_eq!(five, 0);
    assert_eq!(ok, 3, "answers that let a code through");
    assert_eq!(env.outbox().len(), 3, "exactly 3 SMS across both replicas");
    let m = env.metrics().await;
    assert_eq!(
        crate::fixtures::probe::value(&m, "otpgate_store_shared_errors_total"),
        0.0,
        "no call refused by the cluster (CROSSSLOT): {m}"
    );
}

#[tokio::test]
async fn replicas_sharing_a_key_secret_share_counts_under_keys_that_hide_the_phone() {
    let redis = RedisServer::start();
    let (env, b) = two_replicas(&keyed_redis_toml(&redis.url(), "one-secret-for-all")).await;
    let tokens = registration_tokens(&env, 12).await;
    let (ok, five) = burst(&env, &b, tokens).await;
    assert_eq!(five, 0);
    assert_eq!(ok, 3, "answers that let a code through");
    assert_eq!(env.outbox().len(), 3, "exactly 3 SMS across both replicas");

    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sha = |value: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(value));
    assert!(
        keys.iter().any(|k| k.contains("vel:sms-per-phone:")),
        "{keys:?}"
    );
    for key in &keys {
        for secret in [PHONE, "7400123456", "127.0.0.1"] {
            assert!(!key.contains(secret), "{key}");
            assert!(
                !key.contains(&sha(secret)),
                "{key} holds the SHA-256 of {secret}"
            );
        }
    }
}

#[tokio::test]
async fn two_replicas_on_memory_stores_each_count_alone() {
    let (env, b) = two_replicas("").await;
    let tokens = registration_tokens(&env, 40).await;
    let (_, five) = burst(&env, &b, tokens).await;
    assert_eq!(five, 0);
    let sent = env.outbox().len();
    // Each replica allows 3 on its own: why several replicas need Redis.
    println!("memory stores, two replicas, limit 3 per phone: {sent} SMS sent");
    assert!(sent >= 3);
}

#[tokio::test]
async fn redis_down_falls_back_and_comes_back() {
    let mut redis = RedisServer::start();
    let env = start(&format!("{}{THREE_PER_PHONE}", redis_toml(&redis.url()))).await;
    let tokens = registration_tokens(&env, 8).await;
    // Two sends while Redis is up.
    for t in &tokens[..2] {
        assert_eq!(env.register_sms(t, PHONE).await.status, 200);
    }
    assert_eq!(env.readyz().await, (200, "ready\n".into()));

    redis.stop();
    // Decided on the local fallback: never a 5xx; the local window starts empty, so three
    // more are allowed on this replica, then denied.
    let mut statuses = Vec::new();
    for t in &tokens[2..6] {
        statuses.push(env.register_sms(t, PHONE).await.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 400],
        "per-replica counting while Redis is down"
    );
    let (status, body) = env.readyz().await;
    assert_eq!(status, 200, "degraded still serves");
    assert!(body.starts_with("degraded"), "{body}");
    let m = env.metrics().await;
    assert!(m.contains("otpgate_store_degraded 1"), "{m}");

    redis.restart();
    env.until_ready(Duration::from_secs(10), "back on Redis")
        .await;
    // Back on Redis (emptied by the restart): shared counting again.
    let a = env.register_sms(&tokens[6], PHONE).await;
    assert_ne!(a.status / 100, 5);
    let m = env.metrics().await;
    assert!(m.contains("otpgate_store_recoveries_total 1"), "{m}");
}

/// Step up every SMS to a GB number with the built-in proof of work.
const GB_STEP_UP: &str = "[defense.destination.countries]\nGB = \"step_up\"\n";

fn challenge_of(a: &crate::fixtures::entra::Answer) -> AltchaChallenge {
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["suberror"], "challenge_required", "{}", a.body);
    assert_eq!(
        a.body["otpgate_challenge"]["header"], "x-otpgate-proof",
        "{}",
        a.body
    );
    serde_json::from_value(a.body["otpgate_challenge"]["altcha"].clone()).unwrap()
}

#[tokio::test]
async fn proof_of_work_step_up_end_to_end() {
    let env = start(GB_STEP_UP).await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    let token = reg.token();
    let stepped = env.register_sms(&token, PHONE).await;
    let challenge = challenge_of(&stepped);
    assert!(env.outbox().is_empty(), "no SMS before the proof");

    let number = solve(&challenge).expect("solvable");
    let proof = client_payload(&challenge, number);
    let sent = env
        .register_sms_with(&token, PHONE, &[("x-otpgate-proof", &proof)])
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(env.outbox().len(), 1);

    // The same proof again, on the next step of the same flow: refused, no second SMS.
    let replay = env
        .register_sms_with(&sent.token(), PHONE, &[("x-otpgate-proof", &proof)])
        .await;
    challenge_of(&replay);
    assert_eq!(env.outbox().len(), 1);

    // A proof for another flow is refused too.
    let other = env.register_introspect("newphone@contoso.com").await;
    let fresh = challenge_of(&env.register_sms(&other.token(), PHONE).await);
    let foreign = client_payload(&fresh, solve(&fresh).unwrap());
    let elsewhere = env.register_introspect("newphone@contoso.com").await;
    let refused = env
        .register_sms_with(&elsewhere.token(), PHONE, &[("x-otpgate-proof", &foreign)])
        .await;
    challenge_of(&refused);
    assert_eq!(env.outbox().len(), 1);
    let m = env.metrics().await;
    assert!(m.contains("reason=\"stepup:proof_refused\"} 2"), "{m}");
    assert!(m.contains("reason=\"stepup:proof_accepted\"} 1"), "{m}");
}

#[tokio::test]
async fn destination_rules_deny_before_entra_sends() {
    let env = start("").await;
    for (phone, why) in [
        ("+449090123456", "premium rate"),
        ("+881612345678", "satellite prefix"),
        ("+4470 1234 5678", "personal number"),
        ("not a number", "unparseable"),
    ] {
        let reg = env.register_introspect("newphone@contoso.com").await;
        let a = env.register_sms(&reg.token(), phone).await;
        assert_eq!(a.status, 400, "{why}: {}", a.body);
        assert_eq!(a.body["suberror"], "provider_blocked_by_rep", "{why}");
    }
    assert!(env.outbox().is_empty(), "{:?}", env.outbox());
}

#[tokio::test]
async fn monitor_mode_forwards_what_it_would_deny() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let env = start(&format!(
        "[defense.destination]\nmonitor = true\n[audit]\noutput = \"file\"\npath = \"{}\"\n",
        audit.display()
    ))
    .await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    let a = env.register_sms(&reg.token(), "+449090123456").await;
    assert_eq!(a.status, 200, "monitor mode forwards: {}", a.body);
    assert_eq!(env.outbox().len(), 1);
    let m = env.metrics().await;
    assert!(
        m.contains("otpgate_decisions_total{route=\"sms\",outcome=\"would_deny\"} 1"),
        "{m}"
    );
    let text = crate::fixtures::until_written(
        &audit,
        Duration::from_secs(5),
        "the send's audit line",
        |text| text.contains("register_challenge"),
    )
    .await;
    let line = text
        .lines()
        .find(|l| l.contains("register_challenge"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["decision"], "would_deny");
    assert_eq!(v["country"], "GB");
    assert!(
        v["reasons"]
            .to_string()
            .contains("would:destination:type:premium_rate"),
        "{v}"
    );

    // The same through global monitor mode and a velocity rule.
    let env = start(&format!(
        "[policy]\nmonitor = true\n{}",
        THREE_PER_PHONE.replace("limit = 3", "limit = 1")
    ))
    .await;
    for token in registration_tokens(&env, 2).await {
        assert_eq!(env.register_sms(&token, PHONE).await.status, 200);
    }
    assert_eq!(env.outbox().len(), 2);
    let m = env.metrics().await;
    assert!(m.contains("outcome=\"would_deny\"} 1"), "{m}");
}

#[tokio::test]
async fn velocity_per_flow_stops_the_fourth_send() {
    let env = start("").await;
    let intro = env.introspect("sms@contoso.com").await;
    let id = intro.body["methods"][0]["id"].as_str().unwrap().to_owned();
    let mut token = intro.token();
    for _ in 0..3 {
        let a = env.mfa_challenge(&token, &id).await;
        assert_eq!(a.status, 200, "{}", a.body);
        token = a.token();
    }
    let fourth = env.mfa_challenge(&token, &id).await;
    assert_eq!(fourth.status, 400, "{}", fourth.body);
    assert_eq!(fourth.body["suberror"], "provider_blocked_by_rep");
    assert_eq!(env.outbox().len(), 3);
    let m = env.metrics().await;
    assert!(m.contains("reason=\"velocity:sms-per-flow\"} 1"), "{m}");
}

#[tokio::test]
async fn metrics_expose_every_family_after_a_scripted_run() {
    let env = start("[routes.sms]\nprovider = \"mock\"\n").await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    assert_eq!(env.register_sms(&reg.token(), PHONE).await.status, 200);
    let m = env.metrics().await;
    for family in [
        "otpgate_requests_total{kind=\"register_challenge\",class=\"2xx\"}",
        "otpgate_decisions_total{route=\"sms\",outcome=\"allow\"}",
        "otpgate_otp_sends_forwarded_total{channel=\"sms\",country=\"GB\",result=\"ok\"}",
        "otpgate_provider_calls_total{provider=\"mock\",outcome=\"ok\"}",
        "otpgate_provider_duration_seconds_bucket{",
        "otpgate_upstream_duration_seconds_bucket{",
        "otpgate_open_connections",
        "otpgate_in_flight_requests",
        "otpgate_store_degraded",
        "otpgate_store_evictions_total",
        "otpgate_config_reloads",
        "otpgate_overload_rejections_total",
    ] {
        assert!(m.contains(family), "missing {family} in\n{m}");
    }
}

/// Calls per command since start, from `INFO commandstats`.
async fn command_calls(url: &str) -> std::collections::BTreeMap<String, u64> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// Redis commands per gated SMS send, by command, over `n` sends made by `send`.
async fn commands_per_send(
    redis: &RedisServer,
    env: &Env,
    n: usize,
    expect: u16,
) -> std::collections::BTreeMap<String, f64> {
    let tokens = registration_tokens(env, n + 1).await;
    // The first send loads the scripts.
    assert_eq!(env.register_sms(&tokens[0], PHONE).await.status, expect);
    let before = command_calls(&redis.url()).await;
    for token in &tokens[1..] {
        assert_eq!(env.register_sms(token, PHONE).await.status, expect);
    }
    let after = command_calls(&redis.url()).await;
    after
        .into_iter()
        .filter(|(name, _)| name != "info")
        .map(|(name, calls)| {
            let delta = calls - before.get(&name).copied().unwrap_or(0);
            (name, delta as f64 / n as f64)
        })
        .filter(|(_, per_send)| *per_send > 0.0)
        .collect()
}

/// The default rule set with limits no test reaches (the load bench's rules).
const UNREACHED_DEFAULT_RULES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/load/velocity.toml"
));

#[tokio::test]
async fn a_gated_send_reserves_every_velocity_window_in_one_redis_call() {
    let redis = RedisServer::start();
    // The velocity windows alone: the adaptive rules' counts are calls of their own.
    let store = format!("{}[defense]\nadaptive = []\n", redis_toml(&redis.url()));
    let env = start(&format!("{store}{UNREACHED_DEFAULT_RULES}")).await;
    let forwarded = commands_per_send(&redis, &env, 20, 200).await;
    eprintln!("Redis commands per forwarded SMS send: {forwarded:?}");
    let env = start(&format!("{store}{UNREACHED_DEFAULT_RULES}{GB_STEP_UP}")).await;
    let stepped_up = commands_per_send(&redis, &env, 20, 400).await;
    eprintln!("Redis commands per stepped-up SMS send: {stepped_up:?}");
    // Seven windows apply to a registration SMS (flow, phone, range, IP twice, network,
    // country): one script call reserves them all (one server TIME), one gives them back.
    // Commands a script runs are counted too, so ZREM shows up inside the release script.
    assert_eq!(forwarded.get("evalsha"), Some(&1.0), "{forwarded:?}");
    assert_eq!(forwarded.get("time"), Some(&1.0), "{forwarded:?}");
    assert_eq!(stepped_up.get("evalsha"), Some(&2.0), "{stepped_up:?}");
}

/// One adaptive rule on the destination's calling code: deny after two unverified sends,
/// judged at once (no grace), under any conversion below 40%.
const COUNTRY_ADAPTIVE: &str = "[defense]\nvelocity = []\n[defense.conversion]\ngrace = \"1ms\"\n\
    [[defense.adaptive]]\nname = \"country\"\nkey = \"country\"\nchannel = \"sms\"\n\
    window = \"1h\"\nmin_unverified = 2\nbelow = 0.4\naction = \"deny\"\n";

/// A registration SMS for a fresh account through `base` (a gateway's URL); the answer's
/// status and body.
async fn register_through(env: &Env, base: &str, phone: &str) -> (u16, serde_json::Value) {
    let n = rand_suffix();
    let token = env
        .register_introspect(&format!("reg{n}@contoso.com"))
        .await
        .token();
    let resp = sms_challenge(&env.client, base, &token, phone)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// A distinct number per call, for fresh account names.
fn rand_suffix() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn replicas_on_one_redis_share_conversion_and_adaptive_blocks() {
    let redis = RedisServer::start();
    let store = redis_toml(&redis.url());
    // Accounts that must register a phone: one per registration below.
    let mut users = otpgate::emulate::entra::EntraConfig::demo();
    for n in 1000..1100 {
        users.users.push(otpgate::emulate::entra::UserSpec {
            username: format!("reg{n}@contoso.com"),
            password: Some(otpgate::emulate::entra::DEMO_PASSWORD.to_owned()),
            display_name: None,
            mfa_required: true,
            mfa_methods: vec![],
        });
    }
    let a = crate::fixtures::entra::start_with(users, &format!("{store}{COUNTRY_ADAPTIVE}")).await;
    let b = crate::fixtures::gateway(&format!(
        "[upstream]\nurl = \"http://{}\"\n{store}{COUNTRY_ADAPTIVE}",
        a.entra
    ))
    .await;
    let (a_url, b_url) = (a.gw.url(""), b.url(""));

    // A home country whose codes are entered, half through each replica: the code is
    // sent through one replica and entered through the other.
    for i in 0..4 {
        let (send_via, enter_via) = if i % 2 == 0 {
            (&a_url, &b_url)
        } else {
            (&b_url, &a_url)
        };
        let (status, sent) = register_through(&a, send_via, "+447400123456").await;
        assert_eq!(status, 200, "{sent}");
        let code = a.outbox().last().unwrap().code.clone();
        let entered = a
            .client
            .post(format!(
                "{enter_via}/contoso.onmicrosoft.com/register/v1.0/continue"
            ))
            .form(&[
                ("client_id", DEMO_CLIENT_ID),
                (
                    "continuation_token",
                    sent["continuation_token"].as_str().unwrap(),
                ),
                ("grant_type", "oob"),
                ("oob", code.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(entered.status(), 200);
    }

    // A destination whose codes nobody enters: two through replica A...
    for phone in ["+37120012345", "+37120012346"] {
        let (status, body) = register_through(&a, &a_url, phone).await;
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // ...and replica B refuses the third before any request of its own went there.
    let sent_before = a.outbox().len();
    let (status, body) = register_through(&a, &b_url, "+37120012347").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "access_denied", "{body}");
    assert_eq!(a.outbox().len(), sent_before, "no code sent");
    // The home country, verified through both, is still open on both.
    for url in [&a_url, &b_url] {
        let (status, body) = register_through(&a, url, "+447400123457").await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = a.metrics().await;
    assert!(
        // Counted by the country of the number, from the send record the other replica
        // wrote: conversion per country is verifications over sends forwarded.
        metrics.contains(
            "otpgate_otp_verifications_total{endpoint=\"register_continue\",country=\"GB\"} 2"
        ),
        "{metrics}"
    );
    // The block is active on the replica that refused a send through it; the other has
    // refused nothing.
    let refusing = crate::fixtures::probe::metrics(b.admin).await;
    assert!(
        refusing.contains("otpgate_adaptive_active_keys{rule=\"country\",action=\"deny\"} 1"),
        "{refusing}"
    );
    assert!(
        !metrics.contains("otpgate_adaptive_active_keys{"),
        "{metrics}"
    );
}

/// Sentinel end to end: two replicas find the master through a real `redis-sentinel`
/// (`[store.redis.sentinel]`), and the master fails over (`SENTINEL FAILOVER`) under a
/// steady stream of registrations and SMS sends through both. No request fails, every
/// send to a fresh number goes out, and the hot phone's window (filled and replicated
/// before) still holds its limit on the new master: the replicas followed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_failover_under_load_fails_no_request_and_keeps_the_limit() {
    use crate::fixtures::redis::{redis_cli, RedisSentinel};
    use std::sync::atomic::{AtomicBool, Ordering};
    const NAME: &str = "otpgate-e2e";
    let master = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
    crate::fixtures::eventually(Duration::from_secs(10), "the replica in sync", || async {
        redis_cli(replica.port(), &["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    let sentinel = RedisSentinel::start(master.port(), NAME);
    let sentinel_port: u16 = sentinel.node().rsplit(':').next().unwrap().parse().unwrap();
    let master_port = || {
        redis_cli(
            sentinel_port,
            &["SENTINEL", "get-master-addr-by-name", NAME],
        )
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse::<u16>().ok())
    };
    crate::fixtures::eventually(
        Duration::from_secs(15),
        "sentinel knows the replica",
        || async { redis_cli(sentinel_port, &["SENTINEL", "REPLICAS", NAME]).contains("ip") },
    )
    .await;
    // The URL's address is not used with Sentinel: nothing listens there.
    let toml = format!(
        "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"redis://127.0.0.1:1\"\n\
         [store.redis.sentinel]\nmaster_name = \"{NAME}\"\nnodes = [\"{}\"]\n",
        sentinel.node()
    );
    let (env, b) = two_replicas(&toml).await;
    let tokens = registration_tokens(&env, 10).await;
    assert_eq!(
        burst(&env, &b, tokens).await,
        (3, 0),
        "the hot phone at its limit"
    );
    redis_cli(master.port(), &["WAIT", "1", "2000"]);

    let stop = AtomicBool::new(false);
    let load = async {
        let (mut sends, mut failed) = (0u32, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let token = env
                .register_introspect("newphone@contoso.com")
                .await
                .token();
            let base = if sends % 2 == 0 {
                env.gw.url("")
            } else {
                b.url("")
            };
            let phone = format!("+4474009{sends:05}");
            let answer = sms_challenge(&env.client, &base, &token, &phone)
                .send()
                .await;
            match answer.map(|r| r.status().as_u16()) {
                Ok(200) => {}
                other => failed.push(format!("send {sends}: {other:?}")),
            }
            sends += 1;
        }
        (sends, failed)
    };
    let fail_over = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis_cli(sentinel_port, &["SENTINEL", "FAILOVER", NAME]);
        crate::fixtures::eventually(
            Duration::from_secs(20),
            "sentinel names the replica",
            || async { master_port() == Some(replica.port()) },
        )
        .await;
        let b_ready = || async {
            let r = env
                .client
                .get(format!("http://{}/readyz", b.admin))
                .send()
                .await;
            r.unwrap().text().await.unwrap() == "ready\n"
        };
        env.until_ready(Duration::from_secs(20), "replica a on the new master")
            .await;
        crate::fixtures::eventually(
            Duration::from_secs(20),
            "replica b on the new master",
            b_ready,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let ((sends, failed), ()) = futures_util::join!(load, fail_over);
    println!("{sends} sends through the failover");
    assert!(
        failed.is_empty(),
        "{} of {sends} sends failed: {failed:?}",
        failed.len()
    );
    assert!(
        sends >= 20,
        "a steady load through the failover: {sends} sends"
    );

    // The window filled before the failover holds on the new master, through both.
    let tokens = registration_tokens(&env, 10).await;
    assert_eq!(
        burst(&env, &b, tokens).await,
        (0, 0),
        "no code past the limit"
    );
    let hot = env.outbox().iter().filter(|m| m.target == PHONE).count();
    assert_eq!(
        hot, 3,
        "exactly 3 SMS to the hot phone, across the failover"
    );
    assert!(
        redis_cli(replica.port(), &["DBSIZE"])
            .trim()
            .parse::<u64>()
            .unwrap()
            > 0,
        "the new master holds the state"
    );
}
