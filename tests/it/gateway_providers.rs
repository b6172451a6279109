//! Risk providers through the gateway, against their emulators: each outcome is checked in
//! the Entra emulator's outbox (what was really sent).

use std::time::{Duration, Instant};

use crate::fixtures::entra::{start, Env};
use crate::fixtures::risk::{human_toml, serve_human, APP_ID, AUTH};
use otpgate::emulate::human::{Answer, HumanEmulatorConfig};
use otpgate::emulate::prove::{
    self as prove_emu, PhoneOutcome, ProveEmulator, ProveEmulatorConfig,
};

const PHONE: &str = "+447400123456";

fn answer(score: u8, action: &str) -> Answer {
    Answer {
        score: Some(score),
        action: Some(action.to_owned()),
        ..Answer::default()
    }
}

/// Register `PHONE` for `newphone@` through the gateway with `headers`.
async fn register(env: &Env, headers: &[(&str, &str)]) -> crate::fixtures::entra::Answer {
    let reg = env.register_introspect("newphone@contoso.com").await;
    env.register_sms_with(&reg.token(), PHONE, headers).await
}

const MOBILE: (&str, &str) = ("x-px-authorization", "1");

#[tokio::test]
async fn human_low_score_sends_the_sms() {
    let (emu, base) = serve_human(answer(5, "c")).await;
    let env = start(&human_toml(&base, "closed")).await;
    let a = register(&env, &[MOBILE, ("user-agent", "HumanTest/1.0")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(env.outbox().len(), 1);
    assert_eq!(emu.risk_requests().len(), 1, "the Risk API was asked");
}

#[tokio::test]
async fn human_challenge_reaches_a_mobile_client_and_no_sms_is_sent() {
    let (_emu, base) = serve_human(answer(95, "c")).await;
    let env = start(&human_toml(&base, "closed")).await;
    let a = register(&env, &[MOBILE]).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(
        a.body["action"], "captcha",
        "HUMAN's mobile JSON: {}",
        a.body
    );
    assert_eq!(a.body["appId"], APP_ID);
    assert!(
        a.body["page"].is_string() && a.body["uuid"].is_string(),
        "{}",
        a.body
    );
    assert!(env.outbox().is_empty(), "{:?}", env.outbox());
    let m = env.metrics().await;
    assert!(
        m.contains("otpgate_decisions_total{route=\"sms\",outcome=\"step_up\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn human_block_denies_without_an_sms() {
    let (_emu, base) = serve_human(answer(100, "b")).await;
    let env = start(&human_toml(&base, "open")).await;
    let a = register(&env, &[MOBILE]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["error"], "access_denied");
    assert_eq!(a.body["suberror"], "provider_blocked_by_rep");
    assert!(env.outbox().is_empty());
}

#[tokio::test]
async fn a_slow_provider_gets_the_fail_mode_within_its_budget() {
    let (_emu, base) = serve_human(Answer {
        latency: Some(Duration::from_secs(2)),
        ..answer(0, "c")
    })
    .await;
    let env = start(&human_toml(&base, "closed")).await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    let started = Instant::now();
    let a = env.register_sms_with(&reg.token(), PHONE, &[MOBILE]).await;
    let took = started.elapsed();
    assert_eq!(a.body["error"], "access_denied", "fail closed: {}", a.body);
    // The budget is 300 ms; the provider takes 2 s. A correctness bound, not a benchmark.
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    assert!(env.outbox().is_empty());
    let m = env.metrics().await;
    assert!(
        m.contains("otpgate_provider_calls_total{provider=\"human\",outcome=\"timeout\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn provider_faults_apply_the_fail_mode() {
    // 500, malformed JSON, connection refused: each with fail open (the SMS goes) and fail
    // closed (it does not).
    let dead = crate::fixtures::dead_addr().await;
    for (label, fault) in [
        (
            "500",
            Some(Answer {
                status: Some(500),
                ..Answer::default()
            }),
        ),
        (
            "malformed",
            Some(Answer {
                malformed: Some(true),
                ..Answer::default()
            }),
        ),
        ("refused", None),
    ] {
        let base = match fault {
            Some(answer) => serve_human(answer).await.1,
            None => format!("http://{dead}"),
        };
        for (mode, sent) in [("open", 1), ("closed", 0)] {
            let env = start(&human_toml(&base, mode)).await;
            let a = register(&env, &[MOBILE]).await;
            assert_eq!(env.outbox().len(), sent, "{label} fail {mode}: {}", a.body);
            assert_ne!(
                a.status / 100,
                5,
                "{label} fail {mode}: never a 5xx: {}",
                a.body
            );
        }
    }
}

#[tokio::test]
async fn circuit_breaker_opens_and_recovers() {
    let (emu, base) = serve_human(Answer {
        status: Some(503),
        ..Answer::default()
    })
    .await;
    let toml = format!(
        "{}[providers.circuit]\nfailure_threshold = 2\nopen_for = \"300ms\"\n",
        human_toml(&base, "open")
    );
    let env = start(&toml).await;
    for _ in 0..2 {
        register(&env, &[MOBILE]).await;
    }
    let asked = emu.risk_requests().len();
    assert_eq!(asked, 2);
    // Open: the provider is not called, the fail mode applies at once.
    register(&env, &[MOBILE]).await;
    assert_eq!(
        emu.risk_requests().len(),
        asked,
        "open circuit still called the provider"
    );
    let m = env.metrics().await;
    assert!(m.contains("outcome=\"circuit_open\"} 1"), "{m}");
    // The provider recovers; after the cool-down a probe goes through and closes it.
    emu.set_config(HumanEmulatorConfig {
        auth_token: Some(AUTH.to_owned()),
        answer: answer(95, "b"),
        rules: vec![],
    });
    // The circuit's half-open probe is due on its own schedule: each try is a real send.
    crate::fixtures::eventually(
        Duration::from_secs(5),
        "the circuit closes again",
        || async { register(&env, &[MOBILE]).await.body["suberror"] == "provider_blocked_by_rep" },
    )
    .await;
    assert!(emu.risk_requests().len() > asked);
}

async fn serve_prove(default: PhoneOutcome) -> (ProveEmulator, String) {
    let emu = ProveEmulator::new(ProveEmulatorConfig {
        client_id: "prove-client".into(),
        client_secret: "prove-secret".into(),
        default,
        ..ProveEmulatorConfig::default()
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(prove_emu::serve(l, emu.clone(), std::future::pending()));
    (emu, base)
}

fn prove_toml(base: &str) -> String {
    format!(
        "[routes.sms]\nprovider = \"prove\"\nfail_mode = \"closed\"\nbudget = \"1s\"\n\
         [providers.prove]\nbase_url = \"{base}\"\nclient_id = \"prove-client\"\nclient_secret = \"prove-secret\"\n"
    )
}

#[tokio::test]
async fn prove_pass_sends_and_fail_9132_denies() {
    let (emu, base) = serve_prove(PhoneOutcome::default()).await;
    let env = start(&prove_toml(&base)).await;
    let a = register(&env, &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(env.outbox().len(), 1);

    emu.set_phone(
        PHONE,
        PhoneOutcome {
            risk: "fail".into(),
            failure_codes: vec![9132],
            ..PhoneOutcome::default()
        },
    );
    let a = register(&env, &[]).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["suberror"], "provider_blocked_by_rep");
    assert_eq!(env.outbox().len(), 1, "no second SMS");
}

#[tokio::test]
async fn prove_possession_is_started_bound_to_the_flow_and_checked_on_retry() {
    let (_emu, base) = serve_prove(PhoneOutcome::default()).await;
    let env = start(&format!(
        "{}possession_type = \"mobile\"\n",
        prove_toml(&base)
    ))
    .await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    let token = reg.token();
    let first = env.register_sms(&token, PHONE).await;
    assert_eq!(first.status, 403, "{}", first.body);
    let cid = first.body["correlationId"].as_str().unwrap().to_owned();
    assert!(
        first.body["authToken"].is_string(),
        "what the Prove SDK needs: {}",
        first.body
    );
    assert!(env.outbox().is_empty());

    // Another flow cannot use this possession check.
    let other = env.register_introspect("newphone@contoso.com").await;
    let foreign = env
        .register_sms_with(
            &other.token(),
            PHONE,
            &[("x-otpgate-prove-correlation", &cid)],
        )
        .await;
    assert_eq!(foreign.status, 403, "a new check instead: {}", foreign.body);
    assert!(env.outbox().is_empty());

    // The same flow's retry after the client passed possession: the SMS goes.
    let retried = env
        .register_sms_with(&token, PHONE, &[("x-otpgate-prove-correlation", &cid)])
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(env.outbox().len(), 1);

    // Used once.
    let replay = env
        .register_sms_with(
            &retried.token(),
            PHONE,
            &[("x-otpgate-prove-correlation", &cid)],
        )
        .await;
    assert_eq!(replay.status, 403, "{}", replay.body);
    assert_eq!(env.outbox().len(), 1);
    let m = env.metrics().await;
    assert!(m.contains("reason=\"stepup:proof_refused\"} 2"), "{m}");
}

/// A mock rule matching an app header (not one of the base headers every provider gets)
/// sees it through the gateway: it decides, and no SMS is sent.
#[tokio::test]
async fn mock_header_rule_sees_the_apps_header_through_the_gateway() {
    let env = start(
        "[routes.sms]\nprovider = \"mock\"\nfail_mode = \"open\"\n\
         [providers.mock]\ndefault_action = \"allow\"\n\
         [[providers.mock.rules]]\nname = \"flagged\"\n\
         header = { name = \"X-Risk-Signal\", value = \"high\" }\naction = \"deny\"\n",
    )
    .await;
    let flagged = register(&env, &[("x-risk-signal", "high")]).await;
    assert_eq!(flagged.status, 400, "{}", flagged.body);
    assert_eq!(flagged.body["suberror"], "provider_blocked_by_rep");
    assert!(env.outbox().is_empty(), "the flagged request sent nothing");

    let clean = register(&env, &[("x-risk-signal", "low")]).await;
    assert_eq!(clean.status, 200, "{}", clean.body);
    assert_eq!(env.outbox().len(), 1);
}

/// The header contract of MSAL's native-auth clients on iOS/macOS and Android
/// (APP-INTEGRATION.md): their request interceptors add only `x-` headers, Android
/// lower-cases the names, and both send their own `x-client-*` and `client-request-id`.
/// Requests shaped as each SDK sends them carry the HUMAN mobile SDK's header to the
/// provider, and the answers otpgate makes itself keep what those SDKs read from an error:
/// `error`, `error_description`, `error_codes` (iOS also `error_uri`), and the correlation
/// id they take from `client-request-id`.
#[tokio::test]
async fn msal_mobile_shaped_requests_reach_the_provider_and_get_answers_they_parse() {
    let (emu, base) = serve_human(answer(5, "c")).await;
    let env = start(&format!(
        "{}[defense.destination.countries]\nFR = \"step_up\"\n",
        human_toml(&base, "closed")
    ))
    .await;
    let ios: &[(&str, &str)] = &[
        ("Accept", "application/json"),
        ("x-client-SKU", "MSAL.iOS"),
        ("x-client-Ver", "2.13.0"),
        ("x-client-OS", "18.2"),
        ("x-app-name", "Contoso"),
        ("return-client-request-id", "true"),
        ("client-request-id", "6b1d5c1e-1f0e-4b55-9d4e-0c2f6a4b1a01"),
        // What the app's MSALNativeAuthRequestInterceptor adds, as it spells it.
        ("X-PX-AUTHORIZATION", "1"),
    ];
    let android: &[(&str, &str)] = &[
        ("x-client-sku", "MSAL.Android"),
        ("x-client-ver", "7.0.0"),
        ("client-request-id", "0c9e8f1a-2b3c-4d5e-8f70-9a1b2c3d4e5f"),
        // NativeAuthRequestInterceptor's headers arrive lower-cased.
        ("x-px-authorization", "1"),
    ];
    for (sdk, headers) in [("iOS", ios), ("Android", android)] {
        let before = emu.risk_requests().len();
        let sent_before = env.outbox().len();
        let a = register(&env, headers).await;
        assert_eq!(a.status, 200, "{sdk}: {}", a.body);
        assert_eq!(
            env.outbox().len(),
            sent_before + 1,
            "{sdk}: the SMS went out"
        );
        let risk = emu.risk_requests();
        assert_eq!(risk.len(), before + 1, "{sdk}: HUMAN was asked");
        let asked = &risk[risk.len() - 1]["additional"];
        assert_eq!(
            asked["cookie_origin"], "header",
            "{sdk}: the mobile header reached HUMAN"
        );
        assert_eq!(asked["s2s_call_reason"], "mobile_error_1", "{sdk}: {asked}");

        // otpgate's own step-up (a French number here): what the SDKs surface.
        let reg = env.register_introspect("newphone@contoso.com").await;
        let up = env
            .register_sms_with(&reg.token(), "+33612345678", headers)
            .await;
        assert_eq!(
            up.status, 400,
            "{sdk}: iOS parses 400 and 401 error bodies only"
        );
        assert_eq!(
            up.body["error"], "access_denied",
            "{sdk}: a known error value"
        );
        assert_eq!(up.body["error_codes"], serde_json::json!([500572]), "{sdk}");
        assert!(up.body["error_description"].is_string(), "{sdk}");
        let correlation = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("client-request-id"))
            .unwrap()
            .1;
        assert_eq!(up.body["correlation_id"], correlation, "{sdk}");
    }
    // MSAL for iOS asks for its client-request-id back, and takes an error's correlation id
    // from that response header; Android does not ask, and uses the id it sent.
    let reg = env.register_introspect("newphone@contoso.com").await;
    let r = env
        .client
        .post(
            env.gw
                .url("/contoso.onmicrosoft.com/register/v1.0/challenge"),
        )
        .headers(
            ios.iter()
                .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                .collect(),
        )
        .form(&[
            ("client_id", otpgate::emulate::entra::DEMO_CLIENT_ID),
            ("continuation_token", reg.token().as_str()),
            ("challenge_type", "oob"),
            ("challenge_channel", "sms"),
            ("challenge_target", "+33612345679"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["client-request-id"],
        "6b1d5c1e-1f0e-4b55-9d4e-0c2f6a4b1a01",
        "iOS gets its id back on otpgate's own answer"
    );
}
