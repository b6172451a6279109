//! Invariants of small seeded simulations: the counts add up, the outbox agrees with them,
//! a seed gives one report, a config that refuses SMS shows none sent, and a config without
//! velocity rules lets the pumpers through.

use std::io::Write as _;

use super::report::{Class, ClassReport, SendKind};
use super::{run, Options, Report};

/// Small enough for a debug build; every class still acts.
const SCALE: f64 = 0.03;

fn simulate(config: Option<&str>, seed: u64) -> Report {
    let file = config.map(|text| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    });
    let options = Options {
        config: file.as_ref().map(|f| f.path().to_path_buf()),
        seed,
        hours: 24.0,
        scale: SCALE,
    };
    run(&options).unwrap()
}

fn class(r: &Report, class: Class) -> &ClassReport {
    r.classes.iter().find(|c| c.class == class).unwrap()
}

fn check_counts(r: &Report) {
    let mut delivered = 0;
    for c in &r.classes {
        for (kind, k) in &c.by_kind {
            let accounted = k.sent + k.stopped() + k.not_sent_other;
            assert_eq!(accounted, k.attempts, "{:?} {kind}: {k:?}", c.class);
            assert_eq!(k.delivered, k.sent, "{:?} {kind}: {k:?}", c.class);
            assert!(k.send_requests >= k.attempts, "{:?} {kind}", c.class);
            assert!(k.hindered >= k.challenged.max(k.denied).max(k.throttled));
            delivered += k.delivered;
        }
        assert_eq!(
            c.sms.attempts,
            c.by_kind["sms_mfa"].attempts + c.by_kind["sms_registration"].attempts
        );
    }
    assert_eq!(r.outbox_unattributed, 0);
    assert_eq!(r.emulator_sent_total, r.outbox_codes_read);
    assert_eq!(r.emulator_sent_total, delivered);
    let fraud_sent: u64 = r
        .classes
        .iter()
        .filter(|c| c.class.is_fraud())
        .map(|c| c.sms.delivered)
        .sum();
    assert_eq!(r.headline.fraud_sms_sent, fraud_sent);
}

#[test]
fn defaults_add_up_and_repeat() {
    let a = simulate(None, 11);
    check_counts(&a);
    // Every class took part.
    for c in &a.classes {
        assert!(c.sms.attempts > 0, "{:?} sent nothing", c.class);
    }
    let legit = class(&a, Class::Legitimate);
    assert!(legit.email.attempts > 0);
    let journeys = legit.journeys.as_ref().unwrap();
    assert!(
        journeys.completed * 10 > journeys.journeys * 9,
        "{journeys:?}"
    );
    // The bomber is capped by the per-method rule.
    let bomber = class(&a, Class::OtpBomber);
    assert!(
        bomber.sms.stopped_denied > bomber.sms.sent,
        "{:?}",
        bomber.sms
    );
    // Premium-rate blocks are refused by the destination policy.
    assert!(class(&a, Class::IrsfPumper).sms.stopped_denied > 0);

    let b = simulate(None, 11);
    assert_eq!(a, b, "the same seed gave another report");
    let c = simulate(None, 12);
    assert_ne!(a.classes, c.classes, "another seed gave the same report");
}

#[test]
fn refusing_every_sms_sends_none() {
    // The destination policy judges the numbers that requests name: registration only.
    let destination = simulate(Some("[defense.destination]\ndefault = \"deny\"\n"), 3);
    check_counts(&destination);
    for c in &destination.classes {
        let reg = &c.by_kind[SendKind::SmsRegistration.name()];
        assert_eq!(reg.delivered, 0, "{:?}: {reg:?}", c.class);
        assert_eq!(reg.stopped_denied + reg.not_sent_other, reg.attempts);
    }
    // A provider that denies every SMS stops MFA sends too.
    let provider = simulate(
        Some("[routes.sms]\nprovider = \"mock\"\n[providers.mock]\ndefault_action = \"deny\"\n"),
        3,
    );
    check_counts(&provider);
    for c in &provider.classes {
        assert_eq!(c.sms.delivered, 0, "{:?}: {:?}", c.class, c.sms);
    }
    assert!(class(&provider, Class::Legitimate).email.delivered > 0);
    let legit = class(&provider, Class::Legitimate)
        .journeys
        .clone()
        .unwrap();
    assert!(legit.blocked > 0);
}

#[test]
fn no_velocity_or_adaptive_rules_let_the_pumpers_through() {
    let weak = simulate(Some("[defense]\nvelocity = []\nadaptive = []\n"), 4);
    check_counts(&weak);
    for pumper in [
        Class::LowAndSlow,
        Class::PowSolver,
        Class::CodeEntering,
        Class::OtpBomber,
    ] {
        let s = &class(&weak, pumper).sms;
        assert_eq!(s.sent, s.attempts, "{pumper:?}: {s:?}");
        assert_eq!(s.challenged, 0, "{pumper:?}");
    }
    // Only its premium-rate numbers are refused, by type.
    let irsf = &class(&weak, Class::IrsfPumper).sms;
    assert!(irsf.sent * 10 >= irsf.attempts * 9, "{irsf:?}");
    let defaults = simulate(None, 4);
    assert!(
        weak.headline.fraud_sms_stopped_share < defaults.headline.fraud_sms_stopped_share,
        "{} vs {}",
        weak.headline.fraud_sms_stopped_share,
        defaults.headline.fraud_sms_stopped_share
    );
}

#[test]
fn human_and_prove_are_refused() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"[routes.sms]\nprovider = \"prove\"\n[providers.prove]\nclient_id = \"x\"\nclient_secret = \"y\"\n")
        .unwrap();
    let options = Options {
        config: Some(f.path().to_path_buf()),
        scale: SCALE,
        ..Options::default()
    };
    match run(&options) {
        Err(e) => assert!(e.to_string().contains("Prove"), "{e}"),
        Ok(_) => panic!("a Prove route was simulated"),
    }
}

#[test]
fn the_adaptive_rules_stop_pumpers_the_velocity_rules_miss() {
    let velocity_only = simulate(Some("[defense]\nadaptive = []\n"), 5);
    let defaults = simulate(None, 5);
    check_counts(&defaults);
    for pumper in [Class::IrsfPumper, Class::LowAndSlow, Class::PowSolver] {
        let before = &class(&velocity_only, pumper).sms;
        let after = &class(&defaults, pumper).sms;
        assert!(
            after.sent < before.sent,
            "{pumper:?}: {after:?} against {before:?}"
        );
    }
}
