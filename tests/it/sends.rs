//! Which requests are judged as sends, and which sends count: the first-factor email code
//! of an email-OTP sign-in is judged per flow and per account; a send Entra answers without
//! a code (an error, a password prompt) gives its velocity slots back; a challenge whose
//! `id` is empty is refused; after `mfa_required`, a challenge without `id` is judged as the
//! MFA send it may be. The emulator's outbox counts what was really sent.

use crate::fixtures::entra::{start, Answer, Env, MFA_CAPS};
use crate::fixtures::probe;

const OTP_USER: &str = "otp@contoso.com";

fn is_denial(a: &Answer) -> bool {
    a.status == 400 && a.body["error"] == "access_denied"
}

/// `initiate` for the email-OTP user: the flow's first token.
async fn start_email_sign_in(env: &Env) -> String {
    let a = env
        .post(
            "/oauth2/v2.0/initiate",
            &[("username", OTP_USER), ("challenge_type", "oob redirect")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.token()
}

/// The first-factor challenge (no `id`): sends the email code, or resends it.
async fn email_challenge(env: &Env, token: &str) -> Answer {
    env.post(
        "/oauth2/v2.0/challenge",
        &[
            ("continuation_token", token),
            ("challenge_type", "oob redirect"),
        ],
    )
    .await
}

fn emails_to(env: &Env, address: &str) -> usize {
    env.outbox()
        .iter()
        .filter(|e| e.channel == "email" && e.target == address)
        .count()
}

#[tokio::test]
async fn first_factor_email_codes_are_judged_per_flow_and_per_account() {
    let env = start("[audit]\noutput = \"off\"\n").await;
    // One flow resending: the built-in `email-per-flow` (5 per 15 min) holds.
    let mut token = start_email_sign_in(&env).await;
    let mut answers = Vec::new();
    for _ in 0..7 {
        let a = email_challenge(&env, &token).await;
        if a.status == 200 {
            assert_eq!(a.body["challenge_channel"], "email", "{}", a.body);
            token = a.token();
        }
        answers.push(a);
    }
    let sent = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(sent, 5);
    assert!(answers[5..].iter().all(is_denial), "{}", answers[5].body);
    assert_eq!(emails_to(&env, OTP_USER), 5);

    // New flows for the same account: `email-per-user` (10 per hour) caps them all.
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        let t = start_email_sign_in(&env).await;
        outcomes.push(email_challenge(&env, &t).await);
    }
    let sent: Vec<bool> = outcomes.iter().map(|a| a.status == 200).collect();
    assert_eq!(sent, [true, true, true, true, true, false, false]);
    assert!(is_denial(&outcomes[5]), "{}", outcomes[5].body);
    assert_eq!(emails_to(&env, OTP_USER), 10);
    let m = env.metrics().await;
    let reason = |rule: &str| {
        probe::value(
            &m,
            &format!(
                "otpgate_decision_reasons_total{{route=\"email\",reason=\"velocity:{rule}\"}}"
            ),
        )
    };
    assert_eq!(
        (reason("email-per-flow"), reason("email-per-user")),
        (2.0, 2.0),
        "{m}"
    );
    assert_eq!(
        probe::value(
            &m,
            "otpgate_otp_send_requests_total{endpoint=\"sign_in_challenge\",channel=\"email\"}"
        ),
        14.0
    );
}

#[tokio::test]
async fn a_password_prompt_is_not_a_sent_code() {
    // Two emails per IP: without the password answers giving their slots back, the third
    // password sign-in would be refused.
    let env = start(
        "[audit]\noutput = \"off\"\n[[defense.velocity]]\nname = \"tight\"\nkey = \"ip\"\n\
         channel = \"email\"\nwindow = \"1h\"\nlimit = 2\naction = \"deny\"\n",
    )
    .await;
    for i in 0..5 {
        let a = env
            .post(
                "/oauth2/v2.0/initiate",
                &[
                    ("username", "password@contoso.com"),
                    ("challenge_type", "oob password redirect"),
                ],
            )
            .await;
        let c = env
            .post(
                "/oauth2/v2.0/challenge",
                &[
                    ("continuation_token", &a.token()),
                    ("challenge_type", "oob password redirect"),
                ],
            )
            .await;
        assert_eq!(c.status, 200, "sign-in {i}: {}", c.body);
        assert_eq!(c.body["challenge_type"], "password");
    }
    // The email-OTP user still gets exactly the two the rule allows.
    for i in 0..3 {
        let t = start_email_sign_in(&env).await;
        let a = email_challenge(&env, &t).await;
        assert_eq!(a.status == 200, i < 2, "email sign-in {i}: {}", a.body);
    }
    assert_eq!(emails_to(&env, OTP_USER), 2);
    let m = env.metrics().await;
    let forwarded = |result: &str| {
        probe::value(
            &m,
            &format!(
                "otpgate_otp_sends_forwarded_total{{channel=\"email\",country=\"unknown\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!((forwarded("no_code"), forwarded("ok")), (5.0, 2.0), "{m}");
}

#[tokio::test]
async fn a_send_entra_refuses_uses_no_slot() {
    // Two SMS per flow and per IP.
    let env = start(
        "[audit]\noutput = \"off\"\n\
         [[defense.velocity]]\nname = \"per-ip\"\nkey = \"ip\"\nchannel = \"sms\"\nwindow = \"1h\"\nlimit = 2\naction = \"deny\"\n\
         [[defense.velocity]]\nname = \"per-phone\"\nkey = \"phone\"\nchannel = \"sms\"\nwindow = \"1h\"\nlimit = 2\naction = \"deny\"\n",
    )
    .await;
    let phone = "+33612345678";
    // Stale tokens: Entra refuses each (the code is never sent).
    for i in 0..4 {
        let a = env.register_sms(&format!("stale-token-{i}"), phone).await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert_ne!(a.body["error"], "access_denied", "{}", a.body);
    }
    assert!(env.outbox().is_empty());
    // A real user now gets both codes the rules allow, and no third.
    let intro = env.register_introspect("newphone@contoso.com").await;
    let first = env.register_sms(&intro.token(), phone).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = env.register_sms(&first.token(), phone).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let third = env.register_sms(&second.token(), phone).await;
    assert!(is_denial(&third), "{}", third.body);
    assert_eq!(env.outbox().len(), 2);
    let m = env.metrics().await;
    assert_eq!(
        probe::value(
            &m,
            "otpgate_otp_sends_forwarded_total{channel=\"sms\",country=\"FR\",result=\"upstream_error\"}"
        ),
        4.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_empty_method_id_is_refused_and_never_forwarded() {
    let env = start("[audit]\noutput = \"off\"\n").await;
    let intro = env.introspect("sms@contoso.com").await;
    for id in ["", " ", "\t"] {
        let a = env.mfa_challenge(&intro.token(), id).await;
        assert_eq!(a.status, 400, "{id:?}: {}", a.body);
        assert_eq!(a.body["error"], "invalid_request", "{}", a.body);
    }
    assert!(env.outbox().is_empty());
    let m = env.metrics().await;
    assert_eq!(
        probe::value(&m, "otpgate_upstream_duration_seconds_count"),
        4.0,
        "only the password steps and introspect reached Entra: {m}"
    );
}

#[tokio::test]
async fn after_mfa_required_a_challenge_without_id_is_judged_as_an_sms() {
    let env = start(
        "[audit]\noutput = \"off\"\n[routes.sms]\nprovider = \"mock\"\n\
         [providers.mock]\ndefault_action = \"deny\"\n",
    )
    .await;
    let a = env.password_steps("sms@contoso.com").await;
    assert_eq!(a.body["suberror"], "mfa_required", "{}", a.body);
    let c = env
        .post(
            "/oauth2/v2.0/challenge",
            &[
                ("continuation_token", &a.token()),
                ("challenge_type", "oob redirect"),
                ("capabilities", MFA_CAPS),
            ],
        )
        .await;
    assert!(is_denial(&c), "{}", c.body);
    let m = env.metrics().await;
    assert_eq!(
        probe::value(
            &m,
            "otpgate_otp_send_requests_total{endpoint=\"sign_in_challenge\",channel=\"sms\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(env.outbox().is_empty());
}

/// Whether Entra falls back to the challenge types of `initiate` when the challenge names
/// others is not documented, so a first-factor challenge is judged unless both left out
/// `oob`; only a flow that never offered a code goes unjudged.
#[tokio::test]
async fn a_first_factor_challenge_is_judged_unless_no_step_offered_a_code() {
    let env = start(
        "[audit]\noutput = \"off\"\n[routes.email]\nprovider = \"mock\"\n\
         [providers.mock]\ndefault_action = \"deny\"\n",
    )
    .await;
    let judged = |m: &str| {
        probe::value(
            m,
            "otpgate_otp_send_requests_total{endpoint=\"sign_in_challenge\",channel=\"email\"}",
        )
    };
    let cases = [
        // (user, initiate's types, the challenge's types, judged)
        (OTP_USER, "oob redirect", Some("password redirect"), true),
        (
            "password@contoso.com",
            "oob password redirect",
            Some("password redirect"),
            true,
        ),
        (
            "password@contoso.com",
            "password redirect",
            Some("oob redirect"),
            true,
        ),
        ("password@contoso.com", "password redirect", None, false),
        (
            "password@contoso.com",
            "password redirect",
            Some("password redirect"),
            false,
        ),
    ];
    for (user, initiate, challenge, want) in cases {
        let before = judged(&env.metrics().await);
        let a = env
            .post(
                "/oauth2/v2.0/initiate",
                &[("username", user), ("challenge_type", initiate)],
            )
            .await;
        let token = a.token();
        let mut form = vec![("continuation_token", token.as_str())];
        if let Some(types) = challenge {
            form.push(("challenge_type", types));
        }
        let c = env.post("/oauth2/v2.0/challenge", &form).await;
        let after = judged(&env.metrics().await);
        assert_eq!(
            after - before,
            f64::from(u8::from(want)),
            "{initiate} / {challenge:?}"
        );
        assert_eq!(
            is_denial(&c),
            want,
            "{initiate} / {challenge:?}: {}",
            c.body
        );
    }
}
