//! Risk providers against their emulators over real sockets (port 0, in-process), and the
//! guard's budget and circuit breaker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{header, HeaderValue, StatusCode};
use otpgate::emulate::human::{
    self as human_emu, Answer, HumanEmulator, HumanEmulatorConfig, Rule,
};
use otpgate::emulate::prove::{
    self as prove_emu, PhoneOutcome, ProveEmulator, ProveEmulatorConfig,
};
use otpgate::risk::human::{HumanConfig, HumanProvider, RISK_API_PATH};
use otpgate::risk::mock::{MockConfig, MockProvider};
use otpgate::risk::prove::{
    PossessionType, ProveConfig, ProveProvider, UnifySuccess, TOKEN_PATH, UNIFY_PATH,
    UNIFY_STATUS_PATH,
};
use otpgate::risk::{
    Channel, CircuitState, GuardConfig, Guarded, RiskAction, RiskError, RiskProvider, RiskRequest,
};
use serde_json::{json, Value};

use crate::fixtures::eventually;
use tokio::sync::oneshot;

const APP_ID: &str = "PXtest1234";
const AUTH: &str = "human-server-token";
const SECRET: &str = "cookie-secret-1";
/// How long the activity collector, fed by a background task, may take to report.
const COLLECTED: Duration = Duration::from_secs(5);
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) otpgate-test";

/// A running emulator: its base URL and the trigger that stops it.
struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.await.unwrap().unwrap();
    }
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, format!("http://{addr}"))
}

async fn start_human(emu: HumanEmulator) -> Running {
    let (l, base) = listener().await;
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(human_emu::serve(l, emu, async move {
        let _ = rx.await;
    }));
    Running {
        base,
        stop: Some(tx),
        done,
    }
}

async fn start_prove(emu: ProveEmulator) -> Running {
    let (l, base) = listener().await;
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(prove_emu::serve(l, emu, async move {
        let _ = rx.await;
    }));
    Running {
        base,
        stop: Some(tx),
        done,
    }
}

/// An address nothing listens on.
async fn refused_base() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn human_emulator(answer: Answer, rules: Vec<Rule>) -> HumanEmulator {
    HumanEmulator::new(HumanEmulatorConfig {
        auth_token: Some(AUTH.to_owned()),
        answer,
        rules,
    })
}

fn score(score: u8, action: &str) -> Answer {
    Answer {
        score: Some(score),
        action: Some(action.to_owned()),
        ..Answer::default()
    }
}

fn human_config(base: &str) -> HumanConfig {
    HumanConfig {
        app_id: APP_ID.to_owned(),
        auth_token: AUTH.to_owned(),
        cookie_secrets: vec![SECRET.to_owned()],
        base_url: Some(base.to_owned()),
        collector_url: Some(base.to_owned()),
        blocking_score: 70,
        activity_flush_interval: Duration::from_millis(20),
        ..HumanConfig::default()
    }
}

fn human(base: &str) -> HumanProvider {
    HumanProvider::new(&human_config(base)).unwrap()
}

/// A register-challenge SMS request from a browser.
fn sms_request(phone: &str) -> RiskRequest {
    let mut r = RiskRequest::new(
        "register_challenge",
        Channel::Sms,
        "203.0.113.7".parse().unwrap(),
    );
    r.phone = Some(phone.to_owned());
    r.url = "https://login.example.com/tenant/register/v1.0/challenge".to_owned();
    r.user_agent = Some(UA.to_owned());
    r.headers
        .insert(header::USER_AGENT, HeaderValue::from_static(UA));
    r
}

// ---------------------------------------------------------------- HUMAN

#[tokio::test]
async fn human_low_score_allows_and_reports_the_pass() {
    let emu = human_emulator(score(5, "c"), vec![]);
    let server = start_human(emu.clone()).await;
    let provider = human(&server.base);

    let verdict = provider
        .evaluate(&sms_request("+447400123456"))
        .await
        .unwrap();
    assert_eq!(verdict.action, RiskAction::Allow);
    assert_eq!(verdict.score, Some(0.05));
    assert!(verdict.challenge.is_none());
    assert!(verdict.reasons.contains(&"pass_reason:s2s".to_owned()));

    let recorded = emu.requests();
    assert!(recorded[0].authorized, "bearer token sent");
    let body = &emu.risk_requests()[0];
    assert_eq!(body["additional"]["s2s_call_reason"], "no_cookie");
    assert_eq!(body["request"]["socket_ip"], "203.0.113.7");
    assert_eq!(body["additional"]["risk_mode"], "active_blocking");
    assert!(
        !body.to_string().contains("+447400123456"),
        "the phone number is not HUMAN's business"
    );

    eventually(COLLECTED, "a page_requested activity", || {
        std::future::ready(
            emu.activities()
                .iter()
                .any(|a| a["type"] == "page_requested" && a["details"]["pass_reason"] == "s2s"),
        )
    })
    .await;
    let a = emu
        .activities()
        .into_iter()
        .find(|a| a["type"] == "page_requested")
        .unwrap();
    assert_eq!(a["px_app_id"], APP_ID);
    assert_eq!(a["details"]["s2s_call_reason"], "no_cookie");
    eventually(COLLECTED, "the sent counter", || {
        std::future::ready(provider.activity_stats().sent == 1)
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn human_captcha_for_a_mobile_client_is_the_sdk_json() {
    let emu = human_emulator(
        score(0, "c"),
        vec![Rule {
            user_agent: Some("okhttp".into()),
            answer: score(100, "c"),
            ..Rule::default()
        }],
    );
    let server = start_human(emu.clone()).await;
    let provider = human(&server.base);

    let mut req = sms_request("+447400123456");
    req.user_agent = Some("okhttp/4.12".into());
    req.headers
        .insert(header::USER_AGENT, HeaderValue::from_static("okhttp/4.12"));
    let token = human_emu::mint_mobile_token(
        SECRET,
        &human_emu::payload(0, "c", Duration::from_secs(300)),
    );
    req.headers
        .insert("x-px-authorization", HeaderValue::from_str(&token).unwrap());

    let verdict = provider.evaluate(&req).await.unwrap();
    assert_eq!(verdict.action, RiskAction::StepUp);
    assert_eq!(verdict.score, Some(1.0));
    let challenge = verdict.challenge.expect("HUMAN's challenge");
    assert_eq!(challenge.status, StatusCode::FORBIDDEN);
    assert_eq!(challenge.content_type, "application/json");
    let body: Value = serde_json::from_slice(&challenge.body).unwrap();
    assert_eq!(body["action"], "captcha");
    assert_eq!(body["appId"], APP_ID);
    assert_eq!(body["collectorUrl"], server.base.as_str());
    assert_eq!(body["uuid"].as_str(), verdict.reference.as_deref());
    let page = base64::engine::general_purpose::STANDARD
        .decode(body["page"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("Press &amp; Hold"));

    // A valid low-score token still triggers the call: OTP sends are sensitive routes.
    let sent = &emu.risk_requests()[0];
    assert_eq!(sent["additional"]["s2s_call_reason"], "sensitive_route");
    assert_eq!(sent["additional"]["cookie_origin"], "header");
    assert!(sent["additional"]["px_cookie"].is_string());
    eventually(COLLECTED, "a block activity", || {
        std::future::ready(
            emu.activities()
                .iter()
                .any(|a| a["type"] == "block" && a["details"]["block_reason"] == "s2s_high_score"),
        )
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn human_hard_block_denies_with_the_block_page() {
    let emu = human_emulator(score(100, "b"), vec![]);
    let server = start_human(emu.clone()).await;
    let provider = human(&server.base);

    let verdict = provider
        .evaluate(&sms_request("+447400123456"))
        .await
        .unwrap();
    assert_eq!(verdict.action, RiskAction::Deny);
    let challenge = verdict.challenge.unwrap();
    assert_eq!(challenge.status, StatusCode::FORBIDDEN);
    assert_eq!(challenge.content_type, "text/html");
    assert!(
        String::from_utf8_lossy(&challenge.body).contains("Access to this page has been denied")
    );
    assert!(verdict
        .reasons
        .contains(&"block_reason:s2s_high_score".to_owned()));

    // An XHR client gets the JSON block response instead.
    let mut xhr = sms_request("+447400123456");
    xhr.headers
        .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let c = provider.evaluate(&xhr).await.unwrap().challenge.unwrap();
    assert_eq!(c.content_type, "application/json");
    let v: Value = serde_json::from_slice(&c.body).unwrap();
    assert!(v["blockScript"]
        .as_str()
        .unwrap()
        .contains("captcha.js?a=b"));

    // Rate limit: deny with 429.
    emu.set_config(HumanEmulatorConfig {
        auth_token: Some(AUTH.into()),
        answer: score(100, "r"),
        rules: vec![],
    });
    let v = provider
        .evaluate(&sms_request("+447400123456"))
        .await
        .unwrap();
    assert_eq!(v.action, RiskAction::Deny);
    assert_eq!(v.challenge.unwrap().status, StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

#[tokio::test]
async fn human_valid_high_score_cookie_blocks_without_a_call_and_a_forged_one_does_not() {
    let emu = human_emulator(score(0, "c"), vec![]);
    let server = start_human(emu.clone()).await;
    let provider = human(&server.base);

    let p = human_emu::payload(100, "b", Duration::from_secs(300));
    let cookie = human_emu::mint_cookie(SECRET, &p, UA, "");
    let mut req = sms_request("+447400123456");
    req.headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("_px3={cookie}")).unwrap(),
    );
    let v = provider.evaluate(&req).await.unwrap();
    assert_eq!(v.action, RiskAction::Deny);
    assert!(v
        .reasons
        .contains(&"block_reason:cookie_high_score".to_owned()));
    assert!(
        emu.risk_requests().is_empty(),
        "decided by the cookie alone"
    );

    // The same cookie minted with another secret is not trusted: the Risk API decides.
    // Its HMAC matches none of our secrets, so it is refused before decryption.
    let forged = human_emu::mint_cookie("attacker-secret", &p, UA, "");
    req.headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("_px3={forged}")).unwrap(),
    );
    let v = provider.evaluate(&req).await.unwrap();
    assert_eq!(v.action, RiskAction::Allow);
    let call = &emu.risk_requests()[0]["additional"];
    assert_eq!(call["s2s_call_reason"], "cookie_validation_failed");
    assert_eq!(call["px_orig_cookie"], forged.as_str());
    server.stop().await;
}

#[tokio::test]
async fn human_monitor_mode_reports_a_simulated_block_and_allows() {
    let emu = human_emulator(score(100, "b"), vec![]);
    let server = start_human(emu.clone()).await;
    let cfg = HumanConfig {
        module_mode: otpgate::risk::human::ModuleMode::Monitor,
        ..human_config(&server.base)
    };
    let provider = HumanProvider::new(&cfg).unwrap();
    let v = provider
        .evaluate(&sms_request("+447400123456"))
        .await
        .unwrap();
    assert_eq!(v.action, RiskAction::Allow);
    assert!(v.reasons.contains(&"simulated_block".to_owned()));
    assert_eq!(emu.risk_requests()[0]["additional"]["risk_mode"], "monitor");
    eventually(COLLECTED, "a simulated block activity", || {
        std::future::ready(
            emu.activities()
                .iter()
                .any(|a| a["type"] == "block" && a["details"]["simulated_block"] == true),
        )
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn slow_provider_times_out_within_the_budget() {
    let emu = human_emulator(
        Answer {
            latency: Some(Duration::from_secs(2)),
            ..score(0, "c")
        },
        vec![],
    );
    let server = start_human(emu.clone()).await;
    let guard = Guarded::new(Arc::new(human(&server.base)), GuardConfig::default());

    let started = std::time::Instant::now();
    let e = guard.evaluate(&sms_request("+447400123456")).await;
    let waited = started.elapsed();
    assert_eq!(e.result, Err(RiskError::Timeout));
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    assert!(e.latency >= Duration::from_millis(300));
    // The cancelled call is still reported to HUMAN as s2s_timeout.
    eventually(COLLECTED, "an s2s_timeout activity", || {
        std::future::ready(
            emu.activities()
                .iter()
                .any(|a| a["details"]["pass_reason"] == "s2s_timeout"),
        )
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn human_failures_are_errors_of_the_right_kind() {
    let emu = human_emulator(
        Answer {
            status: Some(500),
            ..score(0, "c")
        },
        vec![],
    );
    let server = start_human(emu.clone()).await;
    let provider = human(&server.base);
    let req = sms_request("+447400123456");
    assert!(matches!(
        provider.evaluate(&req).await,
        Err(RiskError::Unavailable(_))
    ));

    emu.set_config(HumanEmulatorConfig {
        auth_token: Some(AUTH.into()),
        answer: Answer {
            malformed: Some(true),
            ..score(0, "c")
        },
        rules: vec![],
    });
    assert!(matches!(
        provider.evaluate(&req).await,
        Err(RiskError::BadResponse(_))
    ));

    emu.set_config(HumanEmulatorConfig {
        auth_token: Some(AUTH.into()),
        answer: Answer {
            status: Some(429),
            retry_after: Some(9),
            ..score(0, "c")
        },
        rules: vec![],
    });
    assert_eq!(
        provider.evaluate(&req).await,
        Err(RiskError::RateLimited {
            retry_after: Some(Duration::from_secs(9))
        })
    );

    // A wrong server token is a 4xx: the adapter's configuration is at fault.
    let wrong = HumanProvider::new(&HumanConfig {
        auth_token: "wrong".into(),
        ..human_config(&server.base)
    })
    .unwrap();
    emu.set_config(human_emulator(score(0, "c"), vec![]).config());
    assert!(matches!(
        wrong.evaluate(&req).await,
        Err(RiskError::BadResponse(_))
    ));

    let refused = human(&refused_base().await);
    assert!(matches!(
        refused.evaluate(&req).await,
        Err(RiskError::Unavailable(_))
    ));
    server.stop().await;
}

#[tokio::test]
async fn circuit_opens_after_consecutive_failures_and_stops_calling() {
    let emu = human_emulator(
        Answer {
            status: Some(503),
            ..score(0, "c")
        },
        vec![],
    );
    let server = start_human(emu.clone()).await;
    let guard = Guarded::new(
        Arc::new(human(&server.base)),
        GuardConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(3600),
            ..GuardConfig::default()
        },
    );
    let req = sms_request("+447400123456");
    for _ in 0..3 {
        assert!(matches!(
            guard.evaluate(&req).await.result,
            Err(RiskError::Unavailable(_))
        ));
    }
    assert_eq!(guard.circuit_state(), CircuitState::Open);
    let e = guard.evaluate(&req).await;
    assert_eq!(e.result, Err(RiskError::CircuitOpen));
    assert!(
        e.latency < Duration::from_millis(50),
        "an open circuit answers at once"
    );
    assert_eq!(emu.risk_requests().len(), 3, "no call while open");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn circuit_recovers_after_a_successful_probe() {
    // Requests carrying `x-fail` make the mock fail; the probe is a clean request.
    let cfg: MockConfig = serde_json::from_value(json!({
        "rules": [{"header": {"name": "x-fail"}, "error": "unavailable"}]
    }))
    .unwrap();
    let guard = Guarded::new(
        Arc::new(MockProvider::new(&cfg).unwrap()),
        GuardConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(30),
            ..GuardConfig::default()
        },
    );
    let mut failing = sms_request("+447400123456");
    failing
        .headers
        .insert("x-fail", HeaderValue::from_static("1"));
    let clean = sms_request("+447400123456");
    for _ in 0..2 {
        assert!(guard.evaluate(&failing).await.result.is_err());
    }
    assert_eq!(
        guard.evaluate(&clean).await.result,
        Err(RiskError::CircuitOpen)
    );
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(
        guard.evaluate(&clean).await.result,
        Err(RiskError::CircuitOpen)
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(guard.circuit_state(), CircuitState::HalfOpen);
    assert_eq!(
        guard.evaluate(&clean).await.result.unwrap().action,
        RiskAction::Allow
    );
    assert_eq!(guard.circuit_state(), CircuitState::Closed);
    // Closed again: one failure does not reopen it.
    assert!(guard.evaluate(&failing).await.result.is_err());
    assert!(guard.evaluate(&clean).await.result.is_ok());
}

#[tokio::test]
async fn human_emulator_admin_endpoints_over_http() {
    let emu = HumanEmulator::default();
    let server = start_human(emu.clone()).await;
    let client = crate::fixtures::http().build().unwrap();
    let r = client
        .post(format!("{}/_emulator/script", server.base))
        .json(&json!({"score": 100, "action": "b", "rules": [{"ip": "1.2.3.4", "score": 0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let minted: Value = client
        .post(format!("{}/_emulator/mint", server.base))
        .json(&json!({"secret": SECRET, "score": 0, "mobile": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(minted["token"].as_str().unwrap().starts_with("3:"));

    let provider = HumanProvider::new(&HumanConfig {
        send_async_activities: false,
        ..human_config(&server.base)
    })
    .unwrap();
    let mut from_rule = sms_request("+447400123456");
    from_rule.client_ip = "1.2.3.4".parse().unwrap();
    assert_eq!(
        provider.evaluate(&from_rule).await.unwrap().action,
        RiskAction::Allow
    );
    assert_eq!(
        provider
            .evaluate(&sms_request("+447400123456"))
            .await
            .unwrap()
            .action,
        RiskAction::Deny
    );
    let seen: Vec<Value> = client
        .get(format!("{}/_emulator/requests", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["path"], RISK_API_PATH);
    server.stop().await;
}

// ---------------------------------------------------------------- Prove

fn prove_config(base: &str) -> ProveConfig {
    let emu = ProveEmulatorConfig::default();
    ProveConfig {
        base_url: base.to_owned(),
        client_id: emu.client_id,
        client_secret: emu.client_secret,
        ..ProveConfig::default()
    }
}

fn prove(base: &str) -> ProveProvider {
    ProveProvider::new(&prove_config(base)).unwrap()
}

#[tokio::test]
async fn prove_clean_number_allows() {
    let emu = ProveEmulator::default();
    let server = start_prove(emu.clone()).await;
    let provider = prove(&server.base);

    let v = provider
        .evaluate(&sms_request("+447400123456"))
        .await
        .unwrap();
    assert_eq!(v.action, RiskAction::Allow);
    assert!(v
        .reasons
        .contains(&"prove:success=possession_required".to_owned()));
    assert!(v.reference.is_some(), "correlation id kept for support");

    let unify = emu
        .requests()
        .into_iter()
        .find(|r| r.path == UNIFY_PATH)
        .unwrap();
    assert!(unify.authorized);
    assert_eq!(unify.body["possessionType"], "none");
    assert_eq!(unify.body["checkReputation"], true);
    assert_eq!(unify.body["phoneNumber"], "+447400123456");
    assert_eq!(unify.body["ipAddress"], "203.0.113.7");
    assert!(unify.body["clientRequestId"].is_string());
    assert_eq!(emu.count(UNIFY_STATUS_PATH), 1);
    server.stop().await;
}

#[tokio::test]
async fn prove_public_sms_site_number_is_denied() {
    let emu = ProveEmulator::default();
    emu.set_phone("+447700900666", PhoneOutcome::failing(&[9132]));
    let server = start_prove(emu.clone()).await;
    let provider = prove(&server.base);

    let v = provider
        .evaluate(&sms_request("+447700900666"))
        .await
        .unwrap();
    assert_eq!(v.action, RiskAction::Deny);
    assert!(v.reasons.contains(&"prove:9132".to_owned()));

    // A short-tenure number only steps up.
    emu.set_phone(
        "+447700900777",
        PhoneOutcome {
            success: Some("possession_required".into()),
            ..PhoneOutcome::failing(&[9161])
        },
    );
    let v = provider
        .evaluate(&sms_request("+447700900777"))
        .await
        .unwrap();
    assert_eq!(v.action, RiskAction::StepUp);
    server.stop().await;
}

#[tokio::test]
async fn prove_token_is_cached_and_refreshed_on_401() {
    let emu = ProveEmulator::default();
    let server = start_prove(emu.clone()).await;
    let provider = prove(&server.base);
    for _ in 0..3 {
        let v = provider
            .evaluate(&sms_request("+447400123456"))
            .await
            .unwrap();
        assert_eq!(v.action, RiskAction::Allow);
    }
    assert_eq!(
        emu.count(TOKEN_PATH),
        1,
        "one token for several evaluations"
    );

    emu.revoke_tokens();
    let v = provider
        .evaluate(&sms_request("+447400123456"))
        .await
        .unwrap();
    assert_eq!(
        v.action,
        RiskAction::Allow,
        "the 401 is absorbed by a refresh"
    );
    assert_eq!(emu.count(TOKEN_PATH), 2);
    assert_eq!(provider.token_fetches(), 2);
    let rejected = emu
        .requests()
        .iter()
        .filter(|r| !r.authorized && r.path != TOKEN_PATH)
        .count();
    assert_eq!(rejected, 1);

    // Wrong credentials: the call fails, it is not retried forever.
    let bad = ProveProvider::new(&ProveConfig {
        client_secret: "wrong".into(),
        ..prove_config(&server.base)
    })
    .unwrap();
    assert!(matches!(
        bad.evaluate(&sms_request("+447400123456")).await,
        Err(RiskError::Unavailable(_))
    ));
    server.stop().await;
}

#[tokio::test]
async fn prove_rate_limit_and_failures_are_errors_of_the_right_kind() {
    let emu = ProveEmulator::new(ProveEmulatorConfig {
        status: Some(429),
        retry_after: Some(5),
        ..ProveEmulatorConfig::default()
    });
    let server = start_prove(emu.clone()).await;
    let provider = prove(&server.base);
    let req = sms_request("+447400123456");
    assert_eq!(
        provider.evaluate(&req).await,
        Err(RiskError::RateLimited {
            retry_after: Some(Duration::from_secs(5))
        })
    );
    emu.set_config(ProveEmulatorConfig {
        status: Some(500),
        ..ProveEmulatorConfig::default()
    });
    assert!(matches!(
        provider.evaluate(&req).await,
        Err(RiskError::Unavailable(_))
    ));
    emu.set_config(ProveEmulatorConfig {
        malformed: true,
        ..ProveEmulatorConfig::default()
    });
    assert!(matches!(
        provider.evaluate(&req).await,
        Err(RiskError::BadResponse(_))
    ));

    let refused = prove(&refused_base().await);
    assert!(matches!(
        refused.evaluate(&req).await,
        Err(RiskError::Unavailable(_))
    ));
    server.stop().await;
}

#[tokio::test]
async fn prove_without_a_phone_number_says_so_and_uses_the_app_header() {
    let emu = ProveEmulator::default();
    let server = start_prove(emu.clone()).await;
    let provider = ProveProvider::new(&ProveConfig {
        phone_header: Some("x-otpgate-phone".into()),
        ..prove_config(&server.base)
    })
    .unwrap();
    assert_eq!(
        provider.wanted_headers(),
        vec![header::HeaderName::from_static("x-otpgate-phone")]
    );

    // An MFA challenge: only the masked label is known.
    let mut req = sms_request("+447400123456");
    req.phone = None;
    req.masked_target = Some("+44 *******456".into());
    let v = provider.evaluate(&req).await.unwrap();
    assert_eq!(v.action, RiskAction::StepUp);
    assert_eq!(v.reasons, vec!["prove:phone_unknown"]);
    assert!(emu.requests().is_empty(), "nothing to ask Prove");

    req.headers
        .insert("x-otpgate-phone", HeaderValue::from_static("+447400123456"));
    let v = provider.evaluate(&req).await.unwrap();
    assert_eq!(v.action, RiskAction::Allow);
    assert_eq!(emu.count(UNIFY_PATH), 1);

    // The header claims a number the label rules out (another country, other visible
    // digits): refused without asking Prove, since Entra would text the other one.
    for claimed in ["+337400123456", "+447400123999", "+12025550456"] {
        req.headers
            .insert("x-otpgate-phone", HeaderValue::from_str(claimed).unwrap());
        let v = provider.evaluate(&req).await.unwrap();
        assert_eq!(v.action, RiskAction::Deny, "{claimed}");
        assert_eq!(v.reasons, vec!["prove:phone_mismatch"], "{claimed}");
    }
    assert_eq!(emu.count(UNIFY_PATH), 1);

    // No label learned (an unknown method): the header cannot be checked, so it is not
    // believed.
    req.masked_target = None;
    req.headers
        .insert("x-otpgate-phone", HeaderValue::from_static("+447400123456"));
    let v = provider.evaluate(&req).await.unwrap();
    assert_eq!(v.action, RiskAction::StepUp);
    assert_eq!(v.reasons, vec!["prove:phone_unverified"]);
    assert_eq!(emu.count(UNIFY_PATH), 1);
    server.stop().await;
}

#[tokio::test]
async fn prove_possession_start_status_and_bind_with_boolean_success() {
    let emu = ProveEmulator::new(ProveEmulatorConfig {
        success_as_bool: true,
        ..ProveEmulatorConfig::default()
    });
    let server = start_prove(emu.clone()).await;
    let provider = prove(&server.base);

    let start = provider
        .start_possession("+447400123456", PossessionType::Mobile, None, None)
        .await
        .unwrap();
    assert!(start.auth_token.starts_with("eyJ"));
    let status = provider
        .possession_status(&start.correlation_id, &start.client_request_id)
        .await
        .unwrap();
    assert_eq!(status.success, UnifySuccess::True, "JSON true accepted");
    assert!(status.prove_id.is_some());
    assert_eq!(provider.verdict(&status).action, RiskAction::Allow);
    let bound = provider
        .bind(
            &start.correlation_id,
            "+447400123456",
            &start.client_request_id,
        )
        .await
        .unwrap();
    assert_eq!(bound.success, UnifySuccess::True);

    // A client that has not finished possession yet.
    emu.set_phone(
        "+447700900555",
        PhoneOutcome {
            possession: "pending".into(),
            ..PhoneOutcome::default()
        },
    );
    let start = provider
        .start_possession("+447700900555", PossessionType::Mobile, None, None)
        .await
        .unwrap();
    let status = provider
        .possession_status(&start.correlation_id, &start.client_request_id)
        .await
        .unwrap();
    assert_eq!(status.success, UnifySuccess::Pending);
    assert_eq!(provider.verdict(&status).action, RiskAction::StepUp);
    server.stop().await;
}

// ---------------------------------------------------------------- mock

fn mock(rules: Value) -> MockProvider {
    MockProvider::new(&serde_json::from_value(rules).unwrap()).unwrap()
}

#[tokio::test]
async fn mock_rules_produce_every_outcome_first_match_wins() {
    let p = mock(json!({"rules": [
        {"name": "irsf-prefix", "phone_prefix": "+88213", "action": "deny", "score": 1.0},
        {"name": "bad-net", "client_ip": "198.51.100.0/24", "action": "deny"},
        {"name": "cuba", "calling_code": 53, "action": "step_up",
         "challenge": {"status": 403, "content_type": "text/html", "body": "<p>prove you are human</p>"}},
        {"name": "flaky", "header": {"name": "x-scenario", "value": "rate-limited"},
         "error": "rate_limited", "retry_after": "7s"},
        {"name": "uk", "calling_code": 44, "action": "allow", "score": 0.1}
    ]}));
    let deny = p.evaluate(&sms_request("+88213000000")).await.unwrap();
    assert_eq!(
        (deny.action, deny.reasons[0].as_str()),
        (RiskAction::Deny, "mock:irsf-prefix")
    );

    let mut from_bad_net = sms_request("+447400123456");
    from_bad_net.client_ip = "198.51.100.9".parse().unwrap();
    assert_eq!(
        p.evaluate(&from_bad_net).await.unwrap().action,
        RiskAction::Deny,
        "earlier rule wins"
    );

    let step = p.evaluate(&sms_request("+5351234567")).await.unwrap();
    assert_eq!(step.action, RiskAction::StepUp);
    assert_eq!(step.challenge.unwrap().status, StatusCode::FORBIDDEN);

    let mut limited = sms_request("+447400123456");
    limited
        .headers
        .insert("x-scenario", HeaderValue::from_static("rate-limited"));
    assert_eq!(
        p.evaluate(&limited).await,
        Err(RiskError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        })
    );
    let uk = p.evaluate(&sms_request("+447400123456")).await.unwrap();
    assert_eq!((uk.action, uk.score), (RiskAction::Allow, Some(0.1)));
    let other = p.evaluate(&sms_request("+33612345678")).await.unwrap();
    assert_eq!(
        (other.action, other.reasons[0].as_str()),
        (RiskAction::Allow, "mock:default")
    );
}

#[tokio::test(start_paused = true)]
async fn mock_latency_injection_trips_the_budget() {
    let p = mock(json!({"rules": [{"phone_prefix": "+1", "latency": "2s"}]}));
    let guard = Guarded::new(Arc::new(p), GuardConfig::default());
    let slow = guard.evaluate(&sms_request("+12025550123")).await;
    assert_eq!(slow.result, Err(RiskError::Timeout));
    assert_eq!(slow.latency, Duration::from_millis(300));
    let fast = guard.evaluate(&sms_request("+447400123456")).await;
    assert_eq!(fast.result.unwrap().action, RiskAction::Allow);
}
