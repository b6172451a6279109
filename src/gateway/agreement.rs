//! `explain` and the live gateway agree: every request of a table of sign-ins, sign-ups,
//! registrations, password resets and stray requests is explained first, then sent through
//! the live gateway to the Entra emulator, and explain's endpoint, channel, decision,
//! reasons, provider answer and answer-or-forward must equal what the live request's audit
//! line records. The table covers every endpoint kind and every decision (allow, step-up by
//! our proof and by the provider, throttle, deny, and monitor's `would_*`); the test fails
//! if a case stops producing the decision it is there for.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::{Explanation, Gateway, RequestKind};
use crate::emulate::entra::{EntraConfig, EntraEmulator, DEMO_CLIENT_ID, DEMO_PASSWORD};
use crate::metrics::Metrics;
use crate::proxy::ConnInfo;
use crate::store::MemoryStore;
use crate::upstream::{InProcessHandler, Upstream};

const TENANT: &str = "/contoso.onmicrosoft.com";
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const CAPABILITIES: &str = "mfa_required registration_required";

/// A gateway in front of the emulator, writing its audit lines to a file.
struct Live {
    gateway: Gateway,
    audit: PathBuf,
    /// Audit lines already compared.
    read: usize,
    /// What the table has covered: endpoint kinds and decisions.
    kinds: BTreeSet<&'static str>,
    decisions: BTreeSet<String>,
    /// The emulator behind the gateway, when it is one: its outbox has the codes.
    emulator: Option<EntraEmulator>,
    /// The audit line of the last request, once compared.
    last_line: Option<Value>,
    _dir: tempfile::TempDir,
}

/// What the live gateway answered.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn token(&self) -> String {
        self.body["continuation_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no continuation token in {}", self.body))
            .to_owned()
    }
}

impl Live {
    async fn start(toml: &str) -> Self {
        let emulator = EntraEmulator::new(EntraConfig::demo());
        let mut live = Self::start_with(toml, crate::simulate::emulator_handler(&emulator)).await;
        live.emulator = Some(emulator);
        live
    }

    async fn start_with(toml: &str, upstream: InProcessHandler) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let path = dir.path().join("otpgate.toml");
        std::fs::write(
            &path,
            format!(
                "[upstream]\nurl = \"http://entra.agreement.invalid\"\n\
                 [audit]\noutput = \"file\"\npath = \"{}\"\nhmac_key = \"agreement\"\n{toml}",
                audit.display()
            ),
        )
        .unwrap();
        let settings = match crate::config::load_with_env(Some(&path), Vec::new()) {
            Ok((_, settings)) => settings,
            Err(problems) => panic!("case config invalid:\n{problems}"),
        };
        let upstream = Upstream::in_process(&settings.upstream, upstream).unwrap();
        let store = Arc::new(MemoryStore::new(settings.store.max_entries));
        let gateway =
            Gateway::with_upstream(Arc::new(settings), Metrics::new(), store, upstream).unwrap();
        Self {
            gateway,
            audit,
            read: 0,
            kinds: BTreeSet::new(),
            decisions: BTreeSet::new(),
            emulator: None,
            last_line: None,
            _dir: dir,
        }
    }

    /// Explain `POST {TENANT}{endpoint}` with `form`, then send it live; assert that both
    /// agree and return the live answer.
    async fn post(&mut self, endpoint: &str, form: &[(&str, &str)]) -> Answer {
        let mut full = vec![("client_id", DEMO_CLIENT_ID)];
        full.extend_from_slice(form);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&full)
            .finish();
        self.exchange(Method::POST, &format!("{TENANT}{endpoint}"), body)
            .await
    }

    async fn exchange(&mut self, method: Method, target: &str, body: String) -> Answer {
        let request = || {
            Request::builder()
                .method(method.clone())
                .uri(target)
                .header(header::HOST, "login.contoso.example")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap()
        };
        let (parts, _) = request().into_parts();
        let explained = self.gateway.explain(&parts, body.as_bytes(), CLIENT).await;
        let conn = ConnInfo {
            peer: SocketAddr::new(CLIENT, 50_000),
            tls: true,
        };
        let resp = self.gateway.handle(request(), conn).await;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            self.gateway
                .inner
                .audit
                .flush(Duration::from_secs(10))
                .await,
            "the audit writer did not catch up"
        );
        let line = self.next_line();
        agree(&explained, line.as_ref(), status, target);
        self.last_line = line;
        self.kinds.insert(explained.kind.as_str());
        if let Some(verdict) = &explained.verdict {
            self.decisions.insert(verdict.decision.label().to_owned());
        }
        Answer { status, body }
    }

    /// The audit line the last request wrote, if it wrote one.
    fn next_line(&mut self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() <= self.read + 1,
            "one request wrote {} audit lines",
            lines.len() - self.read
        );
        let line = lines
            .get(self.read)
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")));
        self.read = lines.len();
        line
    }

    /// `initiate` … `introspect` for a password user whose sign-in needs MFA: the
    /// continuation token and the methods as (id, channel).
    async fn mfa_sign_in(&mut self, username: &str) -> (String, Vec<(String, String)>) {
        let ct = self.password_sign_in(username).await;
        let answer = self.post("/oauth2/v2.0/token", &password_grant(&ct)).await;
        assert_eq!(answer.body["error"], "invalid_grant", "{}", answer.body);
        assert_eq!(answer.body["suberror"], "mfa_required", "{}", answer.body);
        let introspect = self
            .post(
                "/oauth2/v2.0/introspect",
                &[("continuation_token", &answer.token())],
            )
            .await;
        let methods = introspect.body["methods"]
            .as_array()
            .unwrap_or_else(|| panic!("no methods in {}", introspect.body))
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_owned(),
                    m["challenge_channel"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (introspect.token(), methods)
    }

    /// `initiate` and the password prompt: the token for the password grant.
    async fn password_sign_in(&mut self, username: &str) -> String {
        let initiate = self
            .post(
                "/oauth2/v2.0/initiate",
                &[
                    ("username", username),
                    ("challenge_type", "password redirect"),
                    ("capabilities", CAPABILITIES),
                ],
            )
            .await;
        let prompt = self
            .post(
                "/oauth2/v2.0/challenge",
                &[
                    ("continuation_token", &initiate.token()),
                    ("challenge_type", "password redirect"),
                ],
            )
            .await;
        assert_eq!(prompt.body["challenge_type"], "password", "{}", prompt.body);
        prompt.token()
    }

    /// An MFA challenge to the method on `channel`.
    async fn mfa_challenge(
        &mut self,
        ct: &str,
        methods: &[(String, String)],
        channel: &str,
    ) -> Answer {
        let (id, _) = methods
            .iter()
            .find(|(_, c)| c == channel)
            .unwrap_or_else(|| panic!("no {channel} method in {methods:?}"));
        self.post(
            "/oauth2/v2.0/challenge",
            &[
                ("continuation_token", ct),
                ("id", id),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await
    }

    /// `newphone@` signs in, is told to register, and asks for a code to `phone`.
    async fn register(&mut self, phone: &str) -> Answer {
        let ct = self.password_sign_in("newphone@contoso.com").await;
        let answer = self.post("/oauth2/v2.0/token", &password_grant(&ct)).await;
        assert_eq!(
            answer.body["suberror"], "registration_required",
            "{}",
            answer.body
        );
        let introspect = self
            .post(
                "/register/v1.0/introspect",
                &[("continuation_token", &answer.token())],
            )
            .await;
        self.post(
            "/register/v1.0/challenge",
            &[
                ("continuation_token", &introspect.token()),
                ("challenge_type", "oob"),
                ("challenge_channel", "sms"),
                ("challenge_target", phone),
            ],
        )
        .await
    }

    /// Assert that the table reached each of `decisions`.
    fn covered(&self, decisions: &[&str]) {
        for decision in decisions {
            assert!(
                self.decisions.contains(*decision),
                "no request of this case was decided {decision}: {:?}",
                self.decisions
            );
        }
    }
}

fn password_grant(ct: &str) -> [(&'static str, &str); 4] {
    [
        ("continuation_token", ct),
        ("grant_type", "password"),
        ("password", DEMO_PASSWORD),
        ("scope", "openid offline_access"),
    ]
}

/// Explain's account of a request against the live request's audit line and status.
fn agree(explained: &Explanation, line: Option<&Value>, status: u16, target: &str) {
    let Some(line) = line else {
        assert_eq!(
            explained.kind,
            RequestKind::PassThrough,
            "{target}: explain says {}, but the live request wrote no audit line",
            explained.kind.as_str()
        );
        assert!(explained.refused.is_none() && explained.verdict.is_none());
        return;
    };
    let verdict = explained.verdict.as_ref();
    let fields = [
        ("endpoint", explained.kind.as_str().to_owned()),
        (
            "channel",
            explained
                .send
                .as_ref()
                .map_or("", |s| s.channel.as_str())
                .to_owned(),
        ),
        (
            "decision",
            verdict.map_or("", |v| v.decision.label()).to_owned(),
        ),
        (
            "provider_verdict",
            verdict
                .map_or("", |v| v.provider_answer.as_str())
                .to_owned(),
        ),
        ("route", verdict.map_or("", |v| v.route).to_owned()),
    ];
    for (field, explained_value) in fields {
        assert_eq!(
            line[field].as_str(),
            Some(explained_value.as_str()),
            "{target}: {field} differs: explain {explained_value:?}, live {line}"
        );
    }
    let reasons: Vec<String> = verdict
        .map(|v| v.decision.reasons.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    assert_eq!(
        line["reasons"],
        serde_json::json!(reasons),
        "{target}: reasons differ (explain {reasons:?}, live {line})"
    );
    match (&explained.refused, explained.answer) {
        (Some(fault), _) => {
            assert_eq!(
                line["fault"].as_str(),
                Some(fault.label()),
                "{target}: explain refuses ({fault}), live {line}"
            );
            assert_eq!(
                status,
                fault.to_response(None).status().as_u16(),
                "{target}: {line}"
            );
        }
        (None, Some(answered)) => {
            assert_eq!(status, answered.as_u16(), "{target}: {line}");
            assert_eq!(line["upstream_status"], 0, "{target}: forwarded: {line}");
        }
        (None, None) => {
            assert_eq!(line["fault"], "", "{target}: {line}");
            assert_ne!(
                line["upstream_status"], 0,
                "{target}: not forwarded: {line}"
            );
        }
    }
}

/// The default config, no provider: every endpoint kind, each flow to its send.
#[tokio::test]
async fn every_endpoint_under_the_defaults() {
    let mut live = Live::start("").await;

    // Discovery streams through ungated.
    live.exchange(
        Method::GET,
        &format!("{TENANT}/v2.0/.well-known/openid-configuration"),
        String::new(),
    )
    .await;
    // A path that is not canonical is refused.
    let ambiguous = live
        .post("/oauth2/v2.0/initiate/", &[("username", "sms@contoso.com")])
        .await;
    assert_eq!(ambiguous.status, 400);

    // SMS MFA: an allowed send.
    let (ct, methods) = live.mfa_sign_in("sms@contoso.com").await;
    let sent = live.mfa_challenge(&ct, &methods, "sms").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let code = live
        .post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", &sent.token()),
                ("grant_type", "mfa_oob"),
                ("oob", "000000"),
                ("scope", "openid offline_access"),
            ],
        )
        .await;
    assert_eq!(code.body["error"], "invalid_grant", "{}", code.body);

    // Email MFA of a user with both methods.
    let (ct, methods) = live.mfa_sign_in("both@contoso.com").await;
    live.mfa_challenge(&ct, &methods, "email").await;

    // Registration: allowed, and to a satellite range the defaults deny.
    let registered = live.register("+447400111222").await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let ct = registered.token();
    live.post(
        "/register/v1.0/continue",
        &[
            ("continuation_token", &ct),
            ("grant_type", "oob"),
            ("oob", "000000"),
        ],
    )
    .await;
    let satellite = live.register("+881612345678").await;
    assert_ne!(satellite.status, 200, "{}", satellite.body);

    // Email-code sign-in (the first factor is a code).
    let initiate = live
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    live.post(
        "/oauth2/v2.0/challenge",
        &[
            ("continuation_token", &initiate.token()),
            ("challenge_type", "oob redirect"),
        ],
    )
    .await;

    // Sign-up with an email code.
    let start = live
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "new-user@contoso.com"),
                ("challenge_type", "oob password redirect"),
            ],
        )
        .await;
    let challenge = live
        .post(
            "/signup/v1.0/challenge",
            &[
                ("continuation_token", &start.token()),
                ("challenge_type", "oob password redirect"),
            ],
        )
        .await;
    live.post(
        "/signup/v1.0/continue",
        &[
            ("continuation_token", &challenge.token()),
            ("grant_type", "oob"),
            ("oob", "000000"),
        ],
    )
    .await;

    // Password reset: the email code, then the steps after it.
    let start = live
        .post(
            "/resetpassword/v1.0/start",
            &[
                ("username", "password@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    let challenge = live
        .post(
            "/resetpassword/v1.0/challenge",
            &[
                ("continuation_token", &start.token()),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    let ct = challenge.token();
    for (endpoint, form) in [
        (
            "/resetpassword/v1.0/continue",
            vec![
                ("continuation_token", ct.as_str()),
                ("grant_type", "oob"),
                ("oob", "000000"),
            ],
        ),
        (
            "/resetpassword/v1.0/submit",
            vec![
                ("continuation_token", ct.as_str()),
                ("new_password", "n3w-Passw0rd!"),
            ],
        ),
        (
            "/resetpassword/v1.0/poll_completion",
            vec![("continuation_token", ct.as_str())],
        ),
    ] {
        live.post(endpoint, &form).await;
    }

    // The V2 entry point and its HAL steps.
    live.post(
        "/oauth2/v2.0/authorize-challenge",
        &[("username", "sms@contoso.com")],
    )
    .await;
    live.post("/api/v0.1/signin/start", &[("username", "sms@contoso.com")])
        .await;

    live.covered(&["allow", "deny"]);
    assert_eq!(
        live.kinds.len(),
        super::EndpointKind::ALL.len() + 2,
        "kinds reached: {:?}",
        live.kinds
    );
}

/// Velocity: a throttle, our proof of work, and a monitor-only rule, over resends.
#[tokio::test]
async fn velocity_throttle_step_up_and_monitor() {
    let mut live = Live::start(
        r#"
[stepup]
key = "agreement-stepup-key-0123456789abcdef"
[[defense.velocity]]
name = "sms-burst"
key = "phone_prefix"
prefix_digits = 12
channel = "sms"
window = "1h"
limit = 1
action = "throttle"
[[defense.velocity]]
name = "email-per-ip"
key = "ip"
channel = "email"
window = "1h"
limit = 1
action = "step_up"
[[defense.velocity]]
name = "watch-user"
key = "user"
window = "1h"
limit = 1
action = "deny"
monitor = true
"#,
    )
    .await;
    let registered = live.register("+447400111222").await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let again = live.register("+447400111222").await;
    assert_eq!(again.status, 429, "{}", again.body);

    let (ct, methods) = live.mfa_sign_in("both@contoso.com").await;
    let first = live.mfa_challenge(&ct, &methods, "email").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = live.mfa_challenge(&first.token(), &methods, "email").await;
    assert_ne!(second.status, 200, "{}", second.body);
    live.covered(&["allow", "throttle", "step_up"]);
}

/// A provider's answers (allow, step-up, deny, a failure under the fail mode) on both
/// routes, enforced.
#[tokio::test]
async fn provider_answers() {
    let mut live = Live::start(PROVIDER).await;
    for phone in [
        "+447400200001",
        "+447400300001",
        "+447400400001",
        "+447400500001",
    ] {
        live.register(phone).await;
    }
    let (ct, methods) = live.mfa_sign_in("both@contoso.com").await;
    live.mfa_challenge(&ct, &methods, "email").await;
    live.covered(&["allow", "step_up", "deny"]);
}

/// The same provider answers under policy monitor mode: forwarded, labelled `would_*`.
#[tokio::test]
async fn provider_answers_monitored() {
    let mut live = Live::start(&format!("{PROVIDER}\n[policy]\nmonitor = true\n")).await;
    for phone in ["+447400200001", "+447400300001", "+447400400001"] {
        live.register(phone).await;
    }
    live.covered(&["would_step_up", "would_deny"]);
}

/// A route in monitor mode (email), the other enforced (SMS).
#[tokio::test]
async fn route_monitor() {
    let toml = PROVIDER.replace(
        "[routes.email]\nprovider = \"mock\"",
        "[routes.email]\nprovider = \"mock\"\nmonitor = true",
    );
    assert_ne!(toml, PROVIDER);
    let mut live = Live::start(&format!(
        "{toml}\n[[defense.velocity]]\nname = \"email-once\"\nkey = \"flow\"\n\
         channel = \"email\"\nwindow = \"1h\"\nlimit = 1\naction = \"deny\"\n"
    ))
    .await;
    live.register("+447400300001").await;
    let (ct, methods) = live.mfa_sign_in("both@contoso.com").await;
    let first = live.mfa_challenge(&ct, &methods, "email").await;
    live.mfa_challenge(&first.token(), &methods, "email").await;
    live.covered(&["deny", "allow", "would_deny"]);
}

/// The mock provider on both routes: step-up, deny and a timeout by registered number,
/// allow otherwise.
const PROVIDER: &str = r#"
[routes.sms]
provider = "mock"
fail_mode = "step_up"
[routes.email]
provider = "mock"
[stepup]
key = "agreement-stepup-key-0123456789abcdef"
[providers.mock]
default_action = "allow"
[[providers.mock.rules]]
name = "suspicious"
phone_prefix = "+4474002"
action = "step_up"
[[providers.mock.rules]]
name = "pumping"
phone_prefix = "+4474003"
action = "deny"
[[providers.mock.rules]]
name = "slow"
phone_prefix = "+4474004"
error = "timeout"
"#;

/// A request whose handling panics (here: in the upstream call) is answered 500 and still
/// audited, with its endpoint, its request id and the fault.
#[tokio::test]
async fn a_request_that_panics_is_audited() {
    let upstream: InProcessHandler = Arc::new(|_| Box::pin(async { panic!("upstream broke") }));
    let mut live = Live::start_with("", upstream).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{TENANT}/oauth2/v2.0/initiate"))
        .header(header::HOST, "login.contoso.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("client-request-id", "9d1f0c4e-3b7a-4c52-9e1d-0a6b5c4d3e2f")
        .body(Full::new(Bytes::from_static(b"username=sms%40contoso.com")))
        .unwrap();
    let conn = ConnInfo {
        peer: SocketAddr::new(CLIENT, 50_000),
        tls: true,
    };
    let resp = live.gateway.handle(req, conn).await;
    assert_eq!(resp.status(), 500);
    assert!(
        live.gateway
            .inner
            .audit
            .flush(Duration::from_secs(10))
            .await
    );
    let line = live
        .next_line()
        .expect("no audit line for the failed request");
    assert_eq!(line["endpoint"], "sign_in_initiate", "{line}");
    assert_eq!(line["fault"], "internal", "{line}");
    assert_eq!(line["status"], 500, "{line}");
    assert_eq!(
        line["request_id"], "9d1f0c4e-3b7a-4c52-9e1d-0a6b5c4d3e2f",
        "{line}"
    );
}

/// A code Entra accepts is an audit line of its own, in the flow of the send it verifies;
/// a wrong code is not.
#[tokio::test]
async fn a_verified_code_is_audited_in_its_sends_flow() {
    let mut live = Live::start("").await;
    let (ct, methods) = live.mfa_sign_in("sms@contoso.com").await;
    let sent = live.mfa_challenge(&ct, &methods, "sms").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let send_line = live.last_line.take().unwrap();
    assert_eq!(send_line["code_sent"], true, "{send_line}");
    assert_eq!(send_line["code_verified"], false, "{send_line}");
    let code = live
        .emulator
        .as_ref()
        .unwrap()
        .outbox()
        .last()
        .unwrap()
        .code
        .clone();
    let redeem = |oob: &str| {
        [
            ("continuation_token", sent.token()),
            ("grant_type", "mfa_oob".to_owned()),
            ("oob", oob.to_owned()),
            ("scope", "openid offline_access".to_owned()),
        ]
    };
    let wrong = redeem("00000000");
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = live.post("/oauth2/v2.0/token", &wrong).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let line = live.last_line.take().unwrap();
    assert_eq!(line["code_verified"], false, "a wrong code: {line}");
    let right = redeem(&code);
    let right: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = live.post("/oauth2/v2.0/token", &right).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let line = live.last_line.take().unwrap();
    assert_eq!(line["code_verified"], true, "{line}");
    assert_eq!(line["flow"], send_line["flow"], "{line}");
}
