//! Micro-benches of the pieces every gated request runs: classify and canonicalize the
//! path, parse the form body, learn from Entra's answer, HUMAN token v3 decrypt + verify, phone parse + destination
//! rules, `decide`, and one memory-store window reservation.
//!
//! `cargo bench --bench hot_path`. Figures belong in BENCHMARKS.md only from a quiet machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use http::Method;

use otpgate::defense::DestinationPolicy;
use otpgate::emulate::human::{mint_cookie, mint_mobile_token, payload};
use otpgate::entra::classify::{canonical_path, classify, EndpointKind};
use otpgate::entra::learn;
use otpgate::entra::params;
use otpgate::policy::{
    decide, Inputs, LocalAction, LocalVerdict, ProofInput, ProviderInput, Reason,
};
use otpgate::risk::human::token::{self, DecryptCache, Limits};
use otpgate::risk::{FailMode, RiskAction};
use otpgate::store::{MemoryStore, Store};

mod fixtures;

/// The allocator the `otpgate` binary runs with (`src/main.rs`), so that the figures are
/// the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use fixtures::{continuation_token, register_body, TENANT};

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    let cases = [
        ("gated", format!("/{TENANT}/register/v1.0/challenge")),
        (
            "pass_through",
            format!("/{TENANT}/v2.0/.well-known/openid-configuration"),
        ),
        // Escapes of unreserved characters: decoded, then matched.
        ("escaped", format!("/{TENANT}/oauth2/v2.0/%63hallenge")),
        // A dot segment in front of a native-auth word: refused as ambiguous.
        ("ambiguous", format!("/{TENANT}/x/../oauth2/v2.0/initiate")),
    ];
    for (name, path) in &cases {
        g.bench_function(format!("classify/{name}"), |b| {
            b.iter(|| classify(black_box(&Method::POST), black_box(path)))
        });
    }
    g.bench_function("canonical_path/escaped", |b| {
        b.iter(|| canonical_path(black_box(&cases[2].1)))
    });
    g.finish();
}

fn bench_params(c: &mut Criterion) {
    let mut g = c.benchmark_group("params");
    let body = register_body(&continuation_token(0), "+447400123456");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse/register_challenge", |b| {
        b.iter(|| params::parse(None, black_box(body.as_bytes())).unwrap())
    });
    g.finish();
}

/// Learning from Entra's answers: a password-grant token answer (three JWT-sized tokens,
/// about 3.6 KB, of which nothing is learned) and an introspect answer (a continuation
/// token and a method).
fn bench_learn(c: &mut Criterion) {
    let filler = |n: usize, seed: usize| -> String {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..n)
            .map(|i| alphabet[(i * 31 + seed) % 64] as char)
            .collect()
    };
    let token = format!(
        r#"{{"token_type":"Bearer","scope":"openid profile offline_access","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAiOiJKV1Qi.{}","refresh_token":"{}","id_token":"eyJ0eXAiOiJKV1Qi.{}","client_info":"{}"}}"#,
        filler(1400, 3),
        filler(900, 4),
        filler(1100, 5),
        filler(120, 6)
    );
    let introspect = format!(
        r#"{{"continuation_token":"{}","methods":[{{"id":"0f3c1e2a-5b6d-4e7f-8a9b-1c2d3e4f5a6b","challenge_type":"oob","challenge_channel":"sms","login_hint":"+44********56"}}]}}"#,
        filler(420, 7)
    );
    let mut g = c.benchmark_group("learn");
    for (name, kind, body) in [
        ("token_answer", EndpointKind::Token, &token),
        (
            "introspect_answer",
            EndpointKind::SignInIntrospect,
            &introspect,
        ),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("parse_response/{name}"), |b| {
            b.iter(|| learn::parse_response(kind, 200, black_box(body.as_bytes())))
        });
    }
    g.finish();
}

fn bench_human_token(c: &mut Criterion) {
    let mut g = c.benchmark_group("human_token_v3");
    let secrets = vec!["bench-cookie-secret".to_owned()];
    let limits = Limits::default();
    let p = payload(0, "c", Duration::from_secs(3600));
    let mobile = mint_mobile_token(&secrets[0], &p);
    let mobile = mobile.strip_prefix("3:").unwrap().to_owned();
    let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15";
    let cookie = mint_cookie(&secrets[0], &p, ua, "");
    // 1000 PBKDF2-HMAC-SHA256 iterations per token dominate: the producers' default.
    g.bench_function("verify/mobile_header", |b| {
        b.iter(|| {
            let (_, ok) =
                token::verify(black_box(&mobile), &secrets, &limits, true, "", "").unwrap();
            assert!(ok);
        })
    });
    g.bench_function("verify/cookie", |b| {
        b.iter(|| {
            let (_, ok) =
                token::verify(black_box(&cookie), &secrets, &limits, false, ua, "").unwrap();
            assert!(ok);
        })
    });
    // The same tokens sent again: answered from the provider's cache of decrypted tokens,
    // the HMAC still checked.
    let cache = DecryptCache::default();
    // Any time before the tokens' expiry (an hour from now).
    let now = 0.0;
    let cached = |raw: &str, mobile: bool, ua: &str| {
        let (_, ok) =
            token::verify_cached(raw, &secrets, &limits, mobile, ua, "", &cache, now).unwrap();
        assert!(ok);
    };
    g.bench_function("verify/mobile_header/cached", |b| {
        b.iter(|| cached(black_box(&mobile), true, ""))
    });
    g.bench_function("verify/cookie/cached", |b| {
        b.iter(|| cached(black_box(&cookie), false, ua))
    });
    // A token that fails the cheap checks must cost nothing like a real one.
    let hostile = format!("00:{}:1000:{}", "A".repeat(24), "%%%");
    g.bench_function("verify/malformed", |b| {
        b.iter(|| token::verify(black_box(&hostile), &secrets, &limits, true, "", "").is_err())
    });
    // A forged token that passes them, at the highest iteration count accepted (5000): its
    // HMAC matches no secret, so no key derivation runs.
    let forged = format!(
        "{}:{}:5000:{}",
        "0".repeat(64),
        "A".repeat(24),
        "A".repeat(64)
    );
    g.bench_function("verify/forged_max_iterations", |b| {
        b.iter(|| token::verify(black_box(&forged), &secrets, &limits, true, "", "").is_err())
    });
    // The same as a cookie under two secrets (rotation): seven signed-field candidates
    // per secret.
    let rotating = vec![secrets[0].clone(), "previous-cookie-secret".to_owned()];
    g.bench_function("verify/forged_cookie_two_secrets", |b| {
        b.iter(|| {
            token::verify(black_box(&forged), &rotating, &limits, false, ua, "1.2.3.4").is_err()
        })
    });
    g.finish();
}

fn bench_destination(c: &mut Criterion) {
    let mut g = c.benchmark_group("destination");
    let policy = DestinationPolicy::default();
    for (name, target) in [
        ("gb_mobile", "+447400123456"),
        ("gb_mobile_formatted", "+44 (0)7400 123 456"),
        ("gb_premium", "+449098790000"),
        ("satellite_prefix", "+881612345678"),
    ] {
        g.bench_function(format!("check/{name}"), |b| {
            b.iter(|| policy.check(black_box(target)))
        });
    }
    // Example numbers of every region in turn: traffic to many countries, as SMS pumping
    // sends it. Each check lands on another region's compiled patterns.
    let mixed: Vec<String> = phonenumber::metadata::DATABASE
        .iter()
        .filter_map(|meta| {
            let example = meta.descriptors().mobile()?.example()?;
            Some(format!("+{}{example}", meta.country_code()))
        })
        .collect();
    let mut i = 0usize;
    g.bench_function(format!("check/mixed_{}_regions", mixed.len()), |b| {
        b.iter(|| {
            i = (i + 1) % mixed.len();
            policy.check(black_box(&mixed[i]))
        })
    });
    // The load bench's spray list (`benches/load/mobiles.txt`): the numbers the default
    // policy allows, so every check runs to the end.
    let spray: Vec<&str> = include_str!("load/mobiles.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut j = 0usize;
    g.bench_function(format!("check/spray_list_{}", spray.len()), |b| {
        b.iter(|| {
            j = (j + 1) % spray.len();
            policy.check(black_box(spray[j]))
        })
    });
    g.finish();
}

fn bench_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    let allow = Inputs {
        local: vec![],
        provider: ProviderInput::Verdict {
            action: RiskAction::Allow,
            reasons: vec![],
        },
        proof: ProofInput::None,
        monitor: false,
    };
    let mixed = Inputs {
        local: vec![
            LocalVerdict {
                action: LocalAction::StepUp,
                reason: Reason::Velocity {
                    rule: "sms-per-ip".into(),
                    action: "step_up",
                },
                monitor: false,
            },
            LocalVerdict {
                action: LocalAction::Throttle {
                    retry_after: Duration::from_secs(30),
                },
                reason: Reason::Velocity {
                    rule: "sms-per-ip-burst".into(),
                    action: "throttle",
                },
                monitor: true,
            },
        ],
        provider: ProviderInput::Failed {
            error: "timeout",
            fail_mode: FailMode::StepUp,
        },
        proof: ProofInput::Valid,
        monitor: false,
    };
    g.bench_function("allow", |b| b.iter(|| decide(black_box(&allow))));
    g.bench_function("mixed", |b| b.iter(|| decide(black_box(&mixed))));
    g.finish();
}

fn bench_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_store");
    let store = MemoryStore::new(1_000_000);
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("vel:sms-per-phone:{:064x}", i * 7919))
        .collect();
    let hour = Duration::from_secs(3600);
    // Three earlier sends in every window, as for a phone that asked a few times.
    for k in &keys {
        for n in 0..3 {
            let r = store
                .reserve(k, &format!("seed-{n}"), hour, 5)
                .now_or_never();
            assert!(r.unwrap().unwrap().reserved);
        }
    }
    let mut i = 0usize;
    // reserve + release leaves the store as it was, so every iteration sees the same state.
    g.bench_function("reserve_release", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let w = store
                .reserve(&keys[i], "bench-id", hour, 5)
                .now_or_never()
                .unwrap()
                .unwrap();
            assert!(w.reserved);
            store.release(&keys[i], "bench-id").now_or_never();
        })
    });
    let full: Vec<String> = keys.iter().map(|k| format!("{k}:full")).collect();
    for k in &full {
        for n in 0..5 {
            store
                .reserve(k, &format!("seed-{n}"), hour, 5)
                .now_or_never();
        }
    }
    g.bench_function("reserve_at_limit", |b| {
        b.iter(|| {
            i = (i + 1) % full.len();
            let w = store
                .reserve(&full[i], "bench-id", hour, 5)
                .now_or_never()
                .unwrap()
                .unwrap();
            assert!(!w.reserved);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_classify,
    bench_params,
    bench_learn,
    bench_human_token,
    bench_destination,
    bench_decide,
    bench_store
);
criterion_main!(benches);
