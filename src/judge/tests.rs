//! Each phase of judging on its own: `defend`, `assess`, `prove`, `settle`, over a judge
//! built from a small config and an in-memory store.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Version};

use super::*;
use crate::entra::classify::EndpointKind;
use crate::store::{DownStore, MemoryStore};

const FLOW: &[u8] = b"0123456789abcdef";
const UK_MOBILE: &str = "+447400123456";
/// A UK premium-rate number: denied by the shipped number-type rules.
const PREMIUM: &str = "+449090123456";
const ONE_PER_PHONE: &str = "[[defense.velocity]]\nname = \"once\"\n\
     key = \"phone\"\nchannel = \"sms\"\nwindow = \"1h\"\nlimit = 1\naction = \"deny\"\n";

fn settings(toml: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otpgate.toml");
    std::fs::write(
        &path,
        format!(
            "[upstream]\nurl = \"http://entra.judge.invalid\"\n\
             [stepup]\nkey = \"judge-tests-stepup-key-0123456789abcdef\"\n{toml}"
        ),
    )
    .unwrap();
    match crate::config::load_with_env(Some(&path), Vec::new()) {
        Ok((_, settings)) => settings,
        Err(problems) => panic!("test config invalid:\n{problems}"),
    }
}

fn judge_on(toml: &str, store: Arc<dyn Store>) -> Judge {
    let settings = settings(toml);
    let keys = settings.store.key_hasher();
    Judge::build(&settings, store, keys, Metrics::new()).unwrap()
}

fn judge(toml: &str) -> Judge {
    judge_on(toml, Arc::new(MemoryStore::new(10_000)))
}

fn register(phone: &str) -> OtpSend {
    OtpSend {
        endpoint: EndpointKind::RegisterChallenge,
        channel: Channel::Sms,
        target: Target::Phone(phone.into()),
        method_id: None,
        label: None,
        channel_known: true,
    }
}

/// What a subject borrows.
struct Request {
    send: OtpSend,
    flow: FlowId,
    headers: HeaderMap,
}

impl Request {
    fn new(send: OtpSend) -> Self {
        Self {
            send,
            flow: FlowId::parse(FLOW).unwrap(),
            headers: HeaderMap::new(),
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            send: &self.send,
            flow: &self.flow,
            client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            client_id: Some("client"),
            user: None,
            headers: &self.headers,
            method: &Method::POST,
            version: Version::HTTP_11,
            url: "/contoso.onmicrosoft.com/register/v1.0/challenge".into(),
            traceparent: None,
        }
    }
}

fn labels(reasons: impl IntoIterator<Item = Reason>) -> Vec<String> {
    reasons.into_iter().map(|r| r.to_string()).collect()
}

#[tokio::test]
async fn defend_denies_a_premium_destination_without_counting_it() {
    let j = judge(ONE_PER_PHONE);
    let req = Request::new(register(PREMIUM));
    let defense = j.defend(&req.subject(), &j.sms).await;
    assert!(defense.denies());
    assert_eq!(
        labels(defense.local.into_iter().map(|v| v.reason)),
        ["destination:type:premium_rate:deny"]
    );
    assert!(
        defense.velocity.reservations.is_empty(),
        "a denied destination takes no velocity slot"
    );
    assert_eq!(defense.phone.map(|p| p.e164).as_deref(), Some(PREMIUM));
}

#[tokio::test]
async fn defend_counts_the_phone_and_refuses_beyond_the_limit() {
    let j = judge(ONE_PER_PHONE);
    let req = Request::new(register(UK_MOBILE));
    let first = j.defend(&req.subject(), &j.sms).await;
    assert!(first.local.is_empty() && !first.denies());
    assert_eq!(first.velocity.reservations.len(), 1, "one slot taken");
    let second = j.defend(&req.subject(), &j.sms).await;
    assert!(second.denies());
    assert_eq!(
        labels(second.local.into_iter().map(|v| v.reason)),
        ["velocity:once:deny"]
    );
}

#[tokio::test]
async fn defend_applies_the_fail_mode_when_the_store_cannot_count() {
    let closed = judge_on(
        &format!("{ONE_PER_PHONE}[routes.sms]\nfail_mode = \"closed\"\n"),
        Arc::new(DownStore),
    );
    let req = Request::new(register(UK_MOBILE));
    let defense = closed.defend(&req.subject(), &closed.sms).await;
    assert!(defense.denies());
    assert_eq!(
        labels(defense.local.into_iter().map(|v| v.reason)),
        ["velocity:store_error"]
    );
    let open = judge_on(
        &format!("{ONE_PER_PHONE}[routes.sms]\nfail_mode = \"open\"\n"),
        Arc::new(DownStore),
    );
    let defense = open.defend(&req.subject(), &open.sms).await;
    assert!(defense.local.is_empty(), "fail open: nothing refuses");
}

const MOCK: &str = "[routes.sms]\nprovider = \"mock\"\nfail_mode = \"closed\"\n\
    [providers.mock]\ndefault_action = \"allow\"\n\
    [[providers.mock.rules]]\nname = \"pumping\"\nphone_prefix = \"+4474003\"\naction = \"deny\"\n\
    [[providers.mock.rules]]\nname = \"down\"\nphone_prefix = \"+4474009\"\nerror = \"unavailable\"\n";

#[tokio::test]
async fn assess_asks_the_route_provider_and_resolves_its_failure_by_the_fail_mode() {
    let j = judge(MOCK);
    let pumped = Request::new(register("+447400300001"));
    let a = j.assess(&pumped.subject(), &j.sms, None).await;
    assert_eq!(a.provider, Some("mock"));
    assert_eq!(a.answer, ProviderAnswer::Said(RiskAction::Deny));
    assert!(matches!(
        a.input,
        ProviderInput::Verdict {
            action: RiskAction::Deny,
            ..
        }
    ));
    assert!(a.latency.is_some());

    let down = Request::new(register("+447400900001"));
    let a = j.assess(&down.subject(), &j.sms, None).await;
    assert_eq!(a.answer, ProviderAnswer::Failed("unavailable"));
    assert_eq!(
        a.input,
        ProviderInput::Failed {
            error: "unavailable",
            fail_mode: FailMode::Closed,
        }
    );
}

#[tokio::test]
async fn assess_without_a_provider_asks_nobody() {
    let j = judge("");
    let req = Request::new(register(UK_MOBILE));
    let a = j.assess(&req.subject(), &j.sms, None).await;
    assert_eq!(a.provider, None);
    assert_eq!(a.answer, ProviderAnswer::NotAsked);
    assert_eq!(a.input, ProviderInput::NotAsked);
}

fn step_up_inputs() -> Inputs {
    Inputs {
        local: vec![LocalVerdict {
            action: LocalAction::StepUp,
            reason: Reason::Velocity {
                rule: "soft".into(),
                action: "step_up",
            },
            monitor: false,
        }],
        provider: ProviderInput::NotAsked,
        proof: ProofInput::None,
        monitor: false,
    }
}

#[tokio::test]
async fn prove_challenges_then_accepts_a_solved_proof_once() {
    let j = judge("");
    let mut req = Request::new(register(UK_MOBILE));
    let (decision, challenge) = j.prove(&req.subject(), step_up_inputs(), None).await;
    assert_eq!(decision.enforced, Outcome::StepUp(StepUpBy::Builtin));
    let challenge = challenge.expect("our step-up comes with a challenge");

    let number = crate::stepup::pow::solve(&challenge).unwrap();
    let payload = crate::stepup::pow::client_payload(&challenge, number);
    req.headers.insert(
        j.proof_header.clone(),
        HeaderValue::from_str(&payload).unwrap(),
    );
    let (decision, challenge) = j.prove(&req.subject(), step_up_inputs(), None).await;
    assert_eq!(decision.enforced, Outcome::Allow);
    assert!(challenge.is_none());
    assert!(decision.reasons.contains(&Reason::ProofAccepted));

    // Spent: the same proof again is refused and challenged anew.
    let (decision, challenge) = j.prove(&req.subject(), step_up_inputs(), None).await;
    assert_eq!(decision.enforced, Outcome::StepUp(StepUpBy::Builtin));
    assert!(challenge.is_some());
    assert!(decision
        .reasons
        .iter()
        .any(|r| matches!(r, Reason::ProofRefused(_))));
}

#[tokio::test]
async fn prove_leaves_a_proof_unspent_when_our_step_up_is_not_the_question() {
    let j = judge("");
    let mut req = Request::new(register(UK_MOBILE));
    let (_, challenge) = j.prove(&req.subject(), step_up_inputs(), None).await;
    let challenge = challenge.unwrap();
    let number = crate::stepup::pow::solve(&challenge).unwrap();
    let payload = crate::stepup::pow::client_payload(&challenge, number);
    req.headers.insert(
        j.proof_header.clone(),
        HeaderValue::from_str(&payload).unwrap(),
    );
    // A deny stands whatever proof comes with it, and the proof is not looked at.
    let mut deny = step_up_inputs();
    deny.local[0].action = LocalAction::Deny;
    let (decision, challenge) = j.prove(&req.subject(), deny, None).await;
    assert_eq!(decision.enforced, Outcome::Deny);
    assert!(challenge.is_none());
    // So it still answers the step-up it was solved for.
    let (decision, _) = j.prove(&req.subject(), step_up_inputs(), None).await;
    assert_eq!(decision.enforced, Outcome::Allow);
}

#[tokio::test]
async fn settle_gives_slots_back_unless_the_send_goes_to_entra() {
    let j = judge(ONE_PER_PHONE);
    let req = Request::new(register(UK_MOBILE));
    let allow = policy::decide(&Inputs {
        local: vec![],
        provider: ProviderInput::NotAsked,
        proof: ProofInput::None,
        monitor: false,
    });
    let mut deny_inputs = step_up_inputs();
    deny_inputs.local[0].action = LocalAction::Deny;
    let deny = policy::decide(&deny_inputs);

    // Refused for another reason: the slot comes back, and the next send may take it.
    let defense = j.defend(&req.subject(), &j.sms).await;
    let held = j
        .settle(&j.sms, &deny, defense.velocity, defense.reservation_id)
        .await;
    assert!(held.is_none());

    // Let through: the slot is held until Entra answers...
    let defense = j.defend(&req.subject(), &j.sms).await;
    assert!(!defense.denies(), "the refused send's slot was given back");
    let held = j
        .settle(&j.sms, &allow, defense.velocity, defense.reservation_id)
        .await
        .expect("an allowed send holds its slots");
    assert!(j.defend(&req.subject(), &j.sms).await.denies());

    // ...and given back when Entra sent no code.
    j.give_back(&held).await;
    assert!(!j.defend(&req.subject(), &j.sms).await.denies());
}

const ONE_UNVERIFIED_PER_IP: &str = "[[defense.velocity]]\nname = \"ip\"\nkey = \"ip\"\n\
     channel = \"sms\"\nwindow = \"1h\"\nlimit = 1\naction = \"deny\"\nunverified_only = true\n";

#[tokio::test]
async fn a_verified_code_gives_back_its_unverified_only_slot() {
    let j = judge(ONE_UNVERIFIED_PER_IP);
    let allow = policy::decide(&Inputs {
        local: vec![],
        provider: ProviderInput::NotAsked,
        proof: ProofInput::None,
        monitor: false,
    });
    // One send from the address, sent by Entra and then verified in its flow.
    let req = Request::new(register(UK_MOBILE));
    let defense = j.defend(&req.subject(), &j.sms).await;
    let held = j
        .settle(&j.sms, &allow, defense.velocity, defense.reservation_id)
        .await;
    j.sent(&req.flow, &defense.conversion, held.as_ref()).await;
    assert!(
        j.defend(&req.subject(), &j.sms).await.denies(),
        "the slot is held while the code is not entered"
    );
    j.verified(&req.flow).await;
    let next = j.defend(&req.subject(), &j.sms).await;
    assert!(!next.denies(), "a verified send no longer counts");
}
