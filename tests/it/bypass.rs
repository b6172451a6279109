//! The bypass suite: every way a client might reach a code-sending endpoint without being
//! gated. The gateway denies every SMS to a GB number (`GB = "deny"`), so a request that is
//! gated gets `access_denied` and one that slipped through ungated would reach the Entra
//! emulator and send a code. Each variant must be gated exactly like the canonical request
//! (judged and denied, and, with an allowed number, forwarded and sent) or refused; the
//! emulator's outbox and the gateway's count of forwarded requests prove nothing unchecked
//! went through. Beyond `gating`, which covers the classic path tricks one by one.

use std::time::Duration;

use crate::fixtures::entra::{start, Env};
use crate::fixtures::h2raw::{self, Outcome, H2};
use crate::fixtures::probe;
use crate::fixtures::wire::{self, Reply};
use otpgate::emulate::entra::DEMO_CLIENT_ID;

/// Every SMS to GB is denied; no velocity rule, so allowed sends are never throttled.
const DENY_GB: &str = "[defense]\nvelocity = []\n[defense.destination.countries]\nGB = \"deny\"\n\
    [audit]\noutput = \"off\"\n";

const PATH: &str = "/contoso.onmicrosoft.com/register/v1.0/challenge";
/// Denied by the configuration.
const DENIED: &str = "+447400123456";
/// Allowed: a French mobile number.
const ALLOWED: &str = "+33612345678";
const FORM: &str = "Content-Type: application/x-www-form-urlencoded\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Judged like the canonical request: denied for `DENIED`, sent for `ALLOWED`.
    Gated,
    /// Judged and denied for `DENIED`; with `ALLOWED` forwarded, though Entra itself
    /// refuses to send.
    GatedUnsendable,
    /// Answered with this status before anything reaches Entra.
    Refused(u16),
}

type Build = Box<dyn Fn(&str, &str) -> Vec<u8>>;

struct Case {
    name: String,
    want: Want,
    /// The request bytes for a flow's continuation token and a phone number.
    build: Build,
}

fn case(
    name: impl Into<String>,
    want: Want,
    build: impl Fn(&str, &str) -> Vec<u8> + 'static,
) -> Case {
    Case {
        name: name.into(),
        want,
        build: Box::new(build),
    }
}

/// The phone registration challenge's parameters, form-encoded.
fn form(token: &str, phone: &str) -> String {
    format!(
        "client_id={DEMO_CLIENT_ID}&continuation_token={token}&challenge_type=oob&challenge_channel=sms&challenge_target={}",
        phone.replace('+', "%2B")
    )
}

/// The same with `challenge_target` left out, to put it somewhere else.
fn form_without_target(token: &str) -> String {
    format!("client_id={DEMO_CLIENT_ID}&continuation_token={token}&challenge_type=oob&challenge_channel=sms")
}

/// `POST target` with `headers`, a `Content-Length` for `body`, and `Connection: close`.
fn post(target: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: gw\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn form_post(target: &str, body: &str) -> Vec<u8> {
    post(target, FORM, body)
}

/// A request written out in full: `head` holds the request line and every header line.
fn raw(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\n\r\n{body}").into_bytes()
}

/// `body` as chunks of `size` bytes, each with a chunk extension when `ext`.
fn chunked(body: &str, size: usize, ext: bool, trailers: &str) -> String {
    let mut out = String::new();
    for piece in body.as_bytes().chunks(size) {
        let ext = if ext { ";note=\"x\"" } else { "" };
        out.push_str(&format!("{:x}{ext}\r\n", piece.len()));
        out.push_str(std::str::from_utf8(piece).unwrap());
        out.push_str("\r\n");
    }
    out.push_str("0\r\n");
    out.push_str(trailers);
    out.push_str("\r\n");
    out
}

/// Every byte of every segment percent-encoded (upper-case hex).
fn escape_all(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.bytes().map(|b| format!("%{b:02X}")).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

/// What the gateway and the emulator have seen so far.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    outbox: usize,
    /// Requests forwarded to Entra (each has an upstream latency sample).
    forwarded: f64,
    denied: f64,
    labelled: f64,
}

async fn seen(env: &Env) -> Seen {
    let m = env.metrics().await;
    Seen {
        outbox: env.outbox().len(),
        forwarded: probe::value(&m, "otpgate_upstream_duration_seconds_count"),
        denied: probe::value(
            &m,
            "otpgate_decisions_total{route=\"sms\",outcome=\"deny\"}",
        ),
        labelled: probe::value(
            &m,
            "otpgate_otp_send_requests_total{endpoint=\"register_challenge\",channel=\"sms\"}",
        ),
    }
}

/// A fresh registration flow, so a request that slipped through would really send a code.
async fn token(env: &Env) -> String {
    env.register_introspect("newphone@contoso.com")
        .await
        .token()
}

/// An answer for a failure report: its status and the start of its body.
fn short(r: &Reply) -> (u16, String) {
    (r.status, r.text().chars().take(160).collect())
}

fn is_denial(r: &Reply) -> bool {
    let body = r.json();
    r.status == 400
        && body["error"] == "access_denied"
        && body["suberror"] == "provider_blocked_by_rep"
}

/// Send the case with the denied number, then (when gated) with the allowed one, and check
/// what each did. Returns a line for the failure report, or `None` when it held.
async fn check(env: &Env, tokens: &Env, c: &Case) -> Option<String> {
    let t = token(tokens).await;
    let before = seen(env).await;
    let ex = wire::exchange(env.gw.addr, &(c.build)(&t, DENIED), 1).await;
    let after = seen(env).await;
    let got = ex.replies.first().map(short);
    if after.outbox != before.outbox || after.forwarded != before.forwarded {
        return Some(format!(
            "{}: SLIPPED THROUGH: forwarded {} → {}, outbox {} → {}; answer {got:?}",
            c.name, before.forwarded, after.forwarded, before.outbox, after.outbox
        ));
    }
    match c.want {
        Want::Refused(status) => {
            let ok = ex.replies.len() == 1 && ex.replies[0].status == status;
            if !ok || after.denied != before.denied {
                return Some(format!("{}: want refused {status}, got {got:?}", c.name));
            }
            None
        }
        Want::Gated | Want::GatedUnsendable => {
            let denied = ex.replies.len() == 1 && is_denial(&ex.replies[0]);
            if !denied
                || after.denied != before.denied + 1.0
                || after.labelled != before.labelled + 1.0
            {
                return Some(format!("{}: want gated and denied, got {got:?}", c.name));
            }
            // The same request with an allowed number is judged, forwarded and sent.
            let t = token(tokens).await;
            let before = seen(env).await;
            let ex = wire::exchange(env.gw.addr, &(c.build)(&t, ALLOWED), 1).await;
            let after = seen(env).await;
            let sent = env.outbox().last().map(|e| e.target.clone());
            let ok = if c.want == Want::GatedUnsendable {
                after.forwarded == before.forwarded + 1.0 && after.outbox == before.outbox
            } else {
                ex.replies.first().is_some_and(|r| r.status == 200)
                    && after.outbox == before.outbox + 1
                    && sent.as_deref() == Some(ALLOWED)
            } && after.labelled == before.labelled + 1.0;
            if !ok {
                return Some(format!(
                    "{}: with an allowed number want 200 and one SMS, got {:?}, outbox {} → {}",
                    c.name,
                    ex.replies.first().map(short),
                    before.outbox,
                    after.outbox
                ));
            }
            None
        }
    }
}

/// Run a table through `env`, starting flows through `tokens` (the same gateway, or one in
/// front of the same emulator); report every failure at once.
async fn run(env: &Env, tokens: &Env, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        if let Some(f) = check(env, tokens, c).await {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn target_cases() -> Vec<Case> {
    use Want::*;
    let mut cases = vec![
        case("canonical", Gated, |t, p| form_post(PATH, &form(t, p))),
        case(
            "unreserved escapes, upper-case hex, every segment",
            Gated,
            |t, p| {
                form_post(
                    "/contoso%2Eonmicrosoft%2Ecom/%52egister/v1%2E0/%43hallenge",
                    &form(t, p),
                )
            },
        ),
        case("unreserved escapes, lower-case hex", Gated, |t, p| {
            form_post(
                "/%63ontoso.onmicrosoft.com/re%67ister/v1%2e0/challen%67e",
                &form(t, p),
            )
        }),
        case("every byte escaped", Gated, |t, p| {
            form_post(&escape_all(PATH), &form(t, p))
        }),
        case(
            "doubled slash after the tenant (MSAL iOS, authority ending in /)",
            Gated,
            |t, p| {
                form_post(
                    "/contoso.onmicrosoft.com//register/v1.0/challenge",
                    &form(t, p),
                )
            },
        ),
        case("tripled slash after the tenant", Refused(400), |t, p| {
            form_post(
                "/contoso.onmicrosoft.com///register/v1.0/challenge",
                &form(t, p),
            )
        }),
        case("upper-case path", Gated, |t, p| {
            form_post(
                "/CONTOSO.ONMICROSOFT.COM/REGISTER/V1.0/CHALLENGE",
                &form(t, p),
            )
        }),
        case("tenant id instead of its name", Gated, |t, p| {
            form_post(
                "/b6a1c2d3-0e4f-4a5b-8c6d-7e8f9a0b1c2d/register/v1.0/challenge",
                &form(t, p),
            )
        }),
        case("absolute-form", Gated, |t, p| {
            form_post(&format!("http://gw{PATH}"), &form(t, p))
        }),
        case(
            "absolute-form, upper-case scheme and host",
            Gated,
            |t, p| form_post(&format!("HTTP://GW{PATH}"), &form(t, p)),
        ),
        case("absolute-form https on a plain listener", Gated, |t, p| {
            form_post(&format!("https://gw{PATH}"), &form(t, p))
        }),
        case("absolute-form for another host", Refused(400), |t, p| {
            form_post(&format!("http://login.evil.example{PATH}"), &form(t, p))
        }),
        case("absolute-form with user info", Refused(400), |t, p| {
            form_post(&format!("http://user@gw{PATH}"), &form(t, p))
        }),
        case("target without a leading slash", Refused(400), |t, p| {
            form_post(PATH.trim_start_matches('/'), &form(t, p))
        }),
        case("lower-case method", Refused(400), |t, p| {
            let mut r = form_post(PATH, &form(t, p));
            r[..4].copy_from_slice(b"post");
            r
        }),
        case("mixed-case method", Refused(400), |t, p| {
            let mut r = form_post(PATH, &form(t, p));
            r[..4].copy_from_slice(b"Post");
            r
        }),
        case("PUT", Refused(400), |t, p| {
            let mut r = b"PUT".to_vec();
            r.extend_from_slice(&form_post(PATH, &form(t, p))[4..]);
            r
        }),
    ];
    // Encoded separators and overlong UTF-8 at each slash of the path, and inside a segment.
    let tricks = [
        "%2F",
        "%2f",
        "%252F",
        "%252f",
        "%25252F",
        "%C0%AF",
        "%c0%af",
        "%E0%80%AF",
        "%F0%80%80%AF",
        "%5C",
        "%5c",
        "%255C",
        "%C1%9C",
        "%EF%BC%8F",
        "%u002F",
        "%2F%2E%2E%2F",
        "/%2e/",
        "/%2E%2E/x/",
        "/%C0%AE/",
        "/%C0%AE%C0%AE/x/",
        "%00/",
        "/%20/",
        "%3B/",
        "%09/",
    ];
    let segments = ["contoso.onmicrosoft.com", "register", "v1.0", "challenge"];
    for trick in tricks {
        for at in 1..segments.len() {
            let path = format!(
                "/{}{trick}{}",
                segments[..at].join("/"),
                segments[at..].join("/")
            );
            cases.push(case(format!("path {path}"), Refused(400), move |t, p| {
                form_post(&path, &form(t, p))
            }));
        }
    }
    for inside in [
        "reg%C0%AFister",
        "re%E0%80%AFgister",
        "regist%65r%00",
        "re%25gister",
        "%72egister%2e",
    ] {
        let path = format!("/contoso.onmicrosoft.com/{inside}/v1.0/challenge");
        cases.push(case(format!("path {path}"), Refused(400), move |t, p| {
            form_post(&path, &form(t, p))
        }));
    }
    cases
}

fn framing_cases() -> Vec<Case> {
    use Want::*;
    vec![
        case("no Host", Gated, |t, p| {
            let body = form(t, p);
            raw(
                &format!(
                    "POST {PATH} HTTP/1.1\r\n{FORM}Content-Length: {}\r\nConnection: close",
                    body.len()
                ),
                &body,
            )
        }),
        case("Host with another port", Gated, |t, p| {
            let body = form(t, p);
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw:8443\r\n{FORM}Content-Length: {}\r\nConnection: close", body.len()), &body)
        }),
        case("two Host headers", Refused(400), |t, p| {
            let body = form(t, p);
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\nHost: login.evil.example\r\n{FORM}Content-Length: {}\r\nConnection: close", body.len()), &body)
        }),
        case("HTTP/1.0", Gated, |t, p| {
            let body = form(t, p);
            raw(
                &format!(
                    "POST {PATH} HTTP/1.0\r\nHost: gw\r\n{FORM}Content-Length: {}",
                    body.len()
                ),
                &body,
            )
        }),
        case("Expect: 100-continue", Gated, |t, p| {
            post(
                PATH,
                &format!("{FORM}Expect: 100-continue\r\n"),
                &form(t, p),
            )
        }),
        case("chunked", Gated, |t, p| {
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Transfer-Encoding: chunked\r\nConnection: close"), &chunked(&form(t, p), 64, false, ""))
        }),
        case(
            "chunked, one byte per chunk, with extensions",
            Gated,
            |t, p| {
                raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Transfer-Encoding: chunked\r\nConnection: close"), &chunked(&form(t, p), 1, true, ""))
            },
        ),
        case(
            "chunked, with trailers naming another target and type",
            Gated,
            |t, p| {
                // Trailers are not parameters: the body's target is the one judged (and the one
                // Entra reads).
                raw(
                &format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Trailer: challenge_target, content-type\r\nTransfer-Encoding: chunked\r\nConnection: close"),
                &chunked(&form(t, p), 16, false, "challenge_target: +33612345678\r\ncontent-type: application/json\r\n"),
            )
            },
        ),
        case("Content-Length, then Transfer-Encoding", Gated, |t, p| {
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Content-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close"), &chunked(&form(t, p), 40, false, ""))
        }),
        case("Transfer-Encoding, then Content-Length", Gated, |t, p| {
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Transfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close"), &chunked(&form(t, p), 40, false, ""))
        }),
        case(
            "Transfer-Encoding: chunked, identity",
            Refused(400),
            |t, p| {
                raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Transfer-Encoding: chunked, identity\r\nConnection: close"), &chunked(&form(t, p), 40, false, ""))
            },
        ),
        case("Transfer-Encoding: identity", Refused(400), |t, p| {
            let body = form(t, p);
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Transfer-Encoding: identity\r\nContent-Length: {}\r\nConnection: close", body.len()), &body)
        }),
        case("Transfer-Encoding: xchunked", Refused(400), |t, p| {
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Transfer-Encoding: xchunked\r\nConnection: close"), &chunked(&form(t, p), 40, false, ""))
        }),
        case("Transfer-Encoding on HTTP/1.0", Refused(400), |t, p| {
            raw(
                &format!("POST {PATH} HTTP/1.0\r\nHost: gw\r\n{FORM}Transfer-Encoding: chunked"),
                &chunked(&form(t, p), 40, false, ""),
            )
        }),
        case(
            "two different Content-Length values",
            Refused(400),
            |t, p| {
                let body = form(t, p);
                raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Content-Length: {}\r\nContent-Length: 5\r\nConnection: close", body.len()), &body)
            },
        ),
        case("header folding in Content-Type", Refused(400), |t, p| {
            let body = form(t, p);
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json;\r\n application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close", body.len()), &body)
        }),
        case("header folding in Content-Length", Refused(400), |t, p| {
            let body = form(t, p);
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Content-Length:\r\n {}\r\nConnection: close", body.len()), &body)
        }),
        case("header folding in another header", Refused(400), |t, p| {
            let body = form(t, p);
            raw(&format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\nX-Note: a\r\n\tb\r\n{FORM}Content-Length: {}\r\nConnection: close", body.len()), &body)
        }),
    ]
}

fn parameter_cases() -> Vec<Case> {
    use Want::*;
    vec![
        case("every parameter in the query", Gated, |t, p| {
            raw(
                &format!(
                    "POST {PATH}?{} HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close",
                    form(t, p)
                ),
                "",
            )
        }),
        case(
            "target in the query, the rest in the body",
            Gated,
            |t, p| {
                form_post(
                    &format!("{PATH}?challenge_target={}", p.replace('+', "%2B")),
                    &form_without_target(t),
                )
            },
        ),
        case("escaped parameter name", Gated, |t, p| {
            form_post(
                PATH,
                &format!(
                    "{}&challenge%5Ftarget={}",
                    form_without_target(t),
                    p.replace('+', "%2B")
                ),
            )
        }),
        case("channel in capitals", Gated, |t, p| {
            form_post(PATH, &form(t, p).replace("channel=sms", "channel=SMS"))
        }),
        case("no channel", Gated, |t, p| {
            form_post(PATH, &form(t, p).replace("&challenge_channel=sms", ""))
        }),
        case(
            "channel email with a phone target",
            GatedUnsendable,
            |t, p| {
                // Entra would refuse it; the gateway still judges it as the SMS it could be.
                form_post(PATH, &form(t, p).replace("channel=sms", "channel=email"))
            },
        ),
        case(
            "Content-Type in capitals with a quoted charset",
            Gated,
            |t, p| {
                post(
                    PATH,
                    "Content-Type: APPLICATION/X-WWW-FORM-URLENCODED; Charset=\"UTF-8\"\r\n",
                    &form(t, p),
                )
            },
        ),
        case("target in the query and the body", Refused(400), |t, p| {
            form_post(
                &format!("{PATH}?challenge_target=%2B33612345678"),
                &form(t, p),
            )
        }),
        case(
            "target twice, once with an escaped name",
            Refused(400),
            |t, p| {
                form_post(
                    PATH,
                    &format!("{}&challenge%5ftarget=%2B33612345678", form(t, p)),
                )
            },
        ),
        case("target twice, in another case", Refused(400), |t, p| {
            form_post(
                PATH,
                &format!("{}&CHALLENGE_TARGET=%2B33612345678", form(t, p)),
            )
        }),
        case("semicolon separator", Refused(400), |t, p| {
            form_post(
                PATH,
                &format!(
                    "{}&x=1;challenge_target={}",
                    form_without_target(t),
                    p.replace('+', "%2B")
                ),
            )
        }),
        case("JSON body", Refused(415), |t, p| {
            let body = serde_json::json!({"client_id": DEMO_CLIENT_ID, "continuation_token": t, "challenge_type": "oob", "challenge_channel": "sms", "challenge_target": p}).to_string();
            post(PATH, "Content-Type: application/json\r\n", &body)
        }),
        case("JSON body labelled as a form", Refused(400), |t, p| {
            let body =
                serde_json::json!({"continuation_token": t, "challenge_target": p}).to_string();
            form_post(PATH, &body)
        }),
        case("multipart body", Refused(415), |t, p| {
            let mut body = String::new();
            for (k, v) in [
                ("client_id", DEMO_CLIENT_ID),
                ("continuation_token", t),
                ("challenge_type", "oob"),
                ("challenge_channel", "sms"),
                ("challenge_target", p),
            ] {
                body.push_str(&format!(
                    "--b\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                ));
            }
            body.push_str("--b--\r\n");
            post(
                PATH,
                "Content-Type: multipart/form-data; boundary=b\r\n",
                &body,
            )
        }),
        case("text/plain body", Refused(415), |t, p| {
            post(PATH, "Content-Type: text/plain\r\n", &form(t, p))
        }),
        case("form body without a Content-Type", Refused(415), |t, p| {
            post(PATH, "", &form(t, p))
        }),
        case("gzip body", Refused(415), |t, p| {
            // The bytes need not be valid gzip: any Content-Encoding is refused unread.
            post(
                PATH,
                &format!("{FORM}Content-Encoding: gzip\r\n"),
                &form(t, p),
            )
        }),
        case("Content-Encoding: identity", Refused(415), |t, p| {
            post(
                PATH,
                &format!("{FORM}Content-Encoding: identity\r\n"),
                &form(t, p),
            )
        }),
        case("charset utf-16", Refused(415), |t, p| {
            post(
                PATH,
                "Content-Type: application/x-www-form-urlencoded; charset=utf-16\r\n",
                &form(t, p),
            )
        }),
        case("charset spelled utf8", Gated, |t, p| {
            post(
                PATH,
                "Content-Type: application/x-www-form-urlencoded;charset=utf8\r\n",
                &form(t, p),
            )
        }),
        case("charset UTF8 with spaces around it", Gated, |t, p| {
            post(
                PATH,
                "Content-Type: application/x-www-form-urlencoded ; charset = UTF8 \r\n",
                &form(t, p),
            )
        }),
        case("charset latin-1", Refused(415), |t, p| {
            post(
                PATH,
                "Content-Type: application/x-www-form-urlencoded; charset=iso-8859-1\r\n",
                &form(t, p),
            )
        }),
        case("target as an array", Refused(400), |t, p| {
            form_post(
                PATH,
                &format!(
                    "{}&challenge_target[]={}",
                    form_without_target(t),
                    p.replace('+', "%2B")
                ),
            )
        }),
        case("target with an index", Refused(400), |t, p| {
            form_post(
                PATH,
                &format!(
                    "{}&CHALLENGE_TARGET[0]={}",
                    form_without_target(t),
                    p.replace('+', "%2B")
                ),
            )
        }),
        case("target with escaped brackets", Refused(400), |t, p| {
            form_post(
                PATH,
                &format!(
                    "{}&challenge_target%5B%5D={}",
                    form_without_target(t),
                    p.replace('+', "%2B")
                ),
            )
        }),
        case("target with a model prefix", Refused(400), |t, p| {
            form_post(
                PATH,
                &format!(
                    "{}&request.challenge_target={}",
                    form_without_target(t),
                    p.replace('+', "%2B")
                ),
            )
        }),
        case("target in a cookie", Refused(400), |t, p| {
            post(
                PATH,
                &format!(
                    "{FORM}Cookie: fpc=1; challenge_target={}\r\n",
                    p.replace('+', "%2B")
                ),
                &form_without_target(t),
            )
        }),
        case(
            "target in the form and in a cookie",
            Refused(400),
            |t, p| {
                post(
                    PATH,
                    &format!("{FORM}Cookie: challenge_target=%2B33612345678\r\n"),
                    &form(t, p),
                )
            },
        ),
        case("two Content-Type headers", Refused(415), |t, p| {
            post(
                PATH,
                &format!("{FORM}Content-Type: application/json\r\n"),
                &form(t, p),
            )
        }),
    ]
}

#[tokio::test]
async fn request_target_variants_are_gated_or_refused() {
    let env = start(DENY_GB).await;
    run(&env, &env, &target_cases()).await;
}

#[tokio::test]
async fn framing_variants_are_gated_or_refused() {
    let env = start(DENY_GB).await;
    run(&env, &env, &framing_cases()).await;
}

#[tokio::test]
async fn parameter_and_body_variants_are_gated_or_refused() {
    let env = start(DENY_GB).await;
    run(&env, &env, &parameter_cases()).await;
}

#[tokio::test]
async fn spellings_of_a_denied_number_are_all_denied() {
    // Entra reads a number more leniently than a strict parser would; every spelling that
    // could reach the same phone must be judged as that phone (or refused as unparseable).
    let env = start(DENY_GB).await;
    let spellings = [
        "+44 7400 123456",
        "+44-7400-123456",
        "+44.7400.123456",
        "+(44)7400123456",
        "+44 (0)7400 123456",
        "+ 447400123456",
        " +447400123456 ",
        "+4.4.7.4.0.0.1.2.3.4.5.6",
        "+44)7400(123456",
        "447400123456",
        "00447400123456",
        "+４４７４００１２３４５６",
        "+447400123456;ext=1",
        "+447400123456#",
        "tel:+447400123456",
        "+447400123456@",
    ];
    let mut failures = Vec::new();
    for phone in spellings {
        let t = token(&env).await;
        let before = seen(&env).await;
        let body = format!(
            "{}&challenge_target={}",
            form_without_target(&t),
            form_urlencoded::byte_serialize(phone.as_bytes()).collect::<String>()
        );
        let ex = wire::exchange(env.gw.addr, &form_post(PATH, &body), 1).await;
        let after = seen(&env).await;
        let r = ex.replies.first();
        let refused = r.is_some_and(|r| r.status == 400);
        if !refused || after.outbox != before.outbox || after.forwarded != before.forwarded {
            failures.push(format!("{phone:?}: {:?}", r.map(|r| (r.status, r.text()))));
        }
    }
    assert!(
        failures.is_empty(),
        "spellings that were not denied:\n{}",
        failures.join("\n")
    );
    assert!(env.outbox().is_empty(), "{:?}", env.outbox());
}

#[tokio::test]
async fn pipelined_requests_are_each_gated() {
    let env = start(DENY_GB).await;

    // Two sends in one write: both judged, both denied.
    let (a, b) = (token(&env).await, token(&env).await);
    let before = seen(&env).await;
    let mut bytes = format!(
        "POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Content-Length: {}\r\n\r\n{}",
        form(&a, DENIED).len(),
        form(&a, DENIED)
    )
    .into_bytes();
    bytes.extend_from_slice(&form_post(
        "/CONTOSO.onmicrosoft.com/register/v1.0/challenge",
        &form(&b, DENIED),
    ));
    let ex = wire::exchange(env.gw.addr, &bytes, 2).await;
    assert_eq!(ex.replies.len(), 2, "{ex:?}");
    assert!(ex.replies.iter().all(is_denial), "{ex:?}");
    let after = seen(&env).await;
    assert_eq!(after.denied, before.denied + 2.0);
    assert_eq!(after.forwarded, before.forwarded);

    // An ungated request first, then a send: the send is still judged.
    let t = token(&env).await;
    let before = seen(&env).await;
    let mut bytes = b"GET /contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec();
    bytes.extend_from_slice(&form_post(PATH, &form(&t, DENIED)));
    let ex = wire::exchange(env.gw.addr, &bytes, 2).await;
    assert_eq!(ex.replies.len(), 2, "{ex:?}");
    assert_eq!(ex.replies[0].status, 200, "{ex:?}");
    assert!(is_denial(&ex.replies[1]), "{ex:?}");
    let after = seen(&env).await;
    assert_eq!(
        after.forwarded,
        before.forwarded + 1.0,
        "only the GET went upstream"
    );
    assert_eq!(after.denied, before.denied + 1.0);

    // A send hidden after a request that is refused before its body is read (declared too
    // large): the rest of the bytes are never taken for a request.
    let t = token(&env).await;
    let before = seen(&env).await;
    let hidden = form_post(PATH, &form(&t, ALLOWED));
    let mut bytes =
        format!("POST {PATH} HTTP/1.1\r\nHost: gw\r\n{FORM}Content-Length: 100000\r\n\r\n")
            .into_bytes();
    bytes.extend_from_slice(&hidden);
    let ex = wire::exchange(env.gw.addr, &bytes, 2).await;
    assert_eq!(ex.replies.len(), 1, "{ex:?}");
    assert_eq!(ex.replies[0].status, 413);
    let after = seen(&env).await;
    assert_eq!(after, before, "nothing judged, forwarded or sent");

    // Smuggling attempts: a send inside the body of a request framed both by
    // Content-Length and chunked. The gateway reads it chunked, answers once and closes;
    // the hidden request is never parsed, let alone forwarded.
    for (label, head) in [
        (
            "CL.TE",
            "Content-Length: {cl}\r\nTransfer-Encoding: chunked",
        ),
        (
            "TE.CL",
            "Transfer-Encoding: chunked\r\nContent-Length: {cl}",
        ),
    ] {
        let t = token(&env).await;
        let before = seen(&env).await;
        let hidden = String::from_utf8(form_post(PATH, &form(&t, ALLOWED))).unwrap();
        let body = format!("0\r\n\r\n{hidden}");
        let head = head.replace("{cl}", &body.len().to_string());
        let bytes = format!(
            "POST /contoso.onmicrosoft.com/oauth2/v2.0/initiate HTTP/1.1\r\nHost: gw\r\n{FORM}{head}\r\n\r\n{body}"
        );
        let ex = wire::exchange(env.gw.addr, bytes.as_bytes(), 2).await;
        assert_eq!(ex.replies.len(), 1, "{label}: {ex:?}");
        assert!(
            ex.closed,
            "{label}: the connection is closed after an ambiguous frame"
        );
        let after = seen(&env).await;
        assert_eq!(after.outbox, before.outbox, "{label}: no SMS");
        assert_eq!(
            after.labelled, before.labelled,
            "{label}: the hidden send was never parsed"
        );
    }
    assert!(env.outbox().is_empty(), "{:?}", env.outbox());
}

/// HTTP/2 header fields, pseudo-headers first.
type Fields = Vec<(&'static str, &'static str)>;

/// One request on a fresh h2c connection, stream 1.
async fn h2_request(env: &Env, fields: &[(&str, &str)], body: &[u8]) -> Outcome {
    let mut h2 = H2::connect(env.gw.addr).await;
    h2.headers(1, fields, body.is_empty()).await;
    if !body.is_empty() {
        h2.data(1, body, true).await;
    }
    h2.outcome(1, Duration::from_secs(5)).await
}

#[tokio::test]
async fn http2_pseudo_header_variants_are_gated_or_refused() {
    let env = start(DENY_GB).await;
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let base = |path: &'static str| -> Fields {
        vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "gw"),
            (":path", path),
            ct,
        ]
    };
    // (name, fields, gated?, body kind)
    #[derive(Clone, Copy)]
    enum Body {
        Form,
        Query,
        /// The form, with a `content-length` that is this much off.
        LengthOff(i64),
    }
    let absolute = "http://gw/contoso.onmicrosoft.com/register/v1.0/challenge";
    let relative: &'static str = PATH.trim_start_matches('/');
    let cases: Vec<(&str, Fields, bool, Body)> = vec![
        ("canonical", base(PATH), true, Body::Form),
        (
            "unreserved escapes",
            base("/contoso%2Eonmicrosoft.com/%72egister/v1%2e0/Challenge"),
            true,
            Body::Form,
        ),
        (
            "upper-case path",
            base("/CONTOSO.ONMICROSOFT.COM/REGISTER/V1.0/CHALLENGE"),
            true,
            Body::Form,
        ),
        ("parameters in :path's query", base(PATH), true, Body::Query),
        (
            "host header instead of :authority",
            vec![
                (":method", "POST"),
                (":scheme", "http"),
                (":path", PATH),
                ("host", "gw"),
                ct,
            ],
            true,
            Body::Form,
        ),
        (
            "// after the tenant in :path (MSAL iOS)",
            base("/contoso.onmicrosoft.com//register/v1.0/challenge"),
            true,
            Body::Form,
        ),
        (
            "// inside the endpoint in :path",
            base("/contoso.onmicrosoft.com/register//v1.0/challenge"),
            false,
            Body::Form,
        ),
        (
            "leading // in :path",
            base("//contoso.onmicrosoft.com/register/v1.0/challenge"),
            false,
            Body::Form,
        ),
        (
            "%2F in :path",
            base("/contoso.onmicrosoft.com/register%2Fv1.0/challenge"),
            false,
            Body::Form,
        ),
        (
            "%2f in :path",
            base("/contoso.onmicrosoft.com/register/v1.0%2fchallenge"),
            false,
            Body::Form,
        ),
        (
            "dot segment in :path",
            base("/contoso.onmicrosoft.com/register/./v1.0/challenge"),
            false,
            Body::Form,
        ),
        (
            "dot-dot segment in :path",
            base("/contoso.onmicrosoft.com/x/../register/v1.0/challenge"),
            false,
            Body::Form,
        ),
        (
            "encoded dot-dot in :path",
            base("/contoso.onmicrosoft.com/x/%2E%2E/register/v1.0/challenge"),
            false,
            Body::Form,
        ),
        (
            "overlong slash in :path",
            base("/contoso.onmicrosoft.com/register%C0%AFv1.0/challenge"),
            false,
            Body::Form,
        ),
        ("absolute :path", base(absolute), false, Body::Form),
        (
            ":path without a leading slash",
            base(relative),
            false,
            Body::Form,
        ),
        (
            "lower-case :method",
            vec![
                (":method", "post"),
                (":scheme", "http"),
                (":authority", "gw"),
                (":path", PATH),
                ct,
            ],
            false,
            Body::Form,
        ),
        (
            "two :path pseudo-headers",
            vec![
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "gw"),
                (":path", "/static/x.png"),
                (":path", PATH),
                ct,
            ],
            false,
            Body::Form,
        ),
        (
            "transfer-encoding header",
            {
                let mut f = base(PATH);
                f.push(("transfer-encoding", "chunked"));
                f
            },
            false,
            Body::Form,
        ),
        (
            "content-length shorter than the body",
            base(PATH),
            false,
            Body::LengthOff(-10),
        ),
        (
            "content-length longer than the body",
            base(PATH),
            false,
            Body::LengthOff(10),
        ),
    ];
    let mut failures = Vec::new();
    for (name, fields, gated, body_kind) in cases {
        for phone in if gated {
            vec![DENIED, ALLOWED]
        } else {
            vec![DENIED]
        } {
            let t = token(&env).await;
            let before = seen(&env).await;
            let body = form(&t, phone);
            let query_path;
            let length;
            let mut fields = fields.clone();
            let sent_body: &[u8] = match body_kind {
                Body::Form => body.as_bytes(),
                Body::Query => {
                    query_path = format!("{PATH}?{body}");
                    for f in fields.iter_mut().filter(|f| f.0 == ":path") {
                        f.1 = &query_path;
                    }
                    fields.retain(|f| f.0 != "content-type");
                    b""
                }
                Body::LengthOff(off) => {
                    length = (body.len() as i64 + off).to_string();
                    fields.push(("content-length", &length));
                    body.as_bytes()
                }
            };
            let outcome = h2_request(&env, &fields, sent_body).await;
            let after = seen(&env).await;
            let slipped = after.forwarded != before.forwarded && phone == DENIED;
            let ok = match (gated, phone) {
                (true, DENIED) => {
                    outcome == Outcome::Status(400) && after.denied == before.denied + 1.0
                }
                (true, _) => outcome == Outcome::Status(200) && after.outbox == before.outbox + 1,
                (false, _) => {
                    let refused = match outcome {
                        Outcome::Status(s) => (400..500).contains(&s),
                        Outcome::Reset(_) | Outcome::GoAway(_) => true,
                        Outcome::Closed | Outcome::TimedOut => false,
                    };
                    refused && after.denied == before.denied && after.outbox == before.outbox
                }
            };
            if slipped || !ok {
                failures.push(format!(
                    "{name} ({phone}): {outcome:?}, forwarded {} → {}, outbox {} → {}",
                    before.forwarded, after.forwarded, before.outbox, after.outbox
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "HTTP/2 variants that were not gated or refused:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn host_games_with_server_hosts() {
    let env = start(&format!(
        "{DENY_GB}[server]\nhosts = [\"login.example.com\"]\n"
    ))
    .await;
    // Flows start through a second gateway without a host list, in front of the same
    // emulator (the test client addresses 127.0.0.1).
    let side = Env {
        gw: crate::fixtures::gateway(&format!(
            "[upstream]\nurl = \"http://{}\"\n{DENY_GB}",
            env.entra
        ))
        .await,
        emulator: env.emulator.clone(),
        entra: env.entra,
        client: crate::fixtures::client(),
    };
    use Want::*;
    let with_head = |head: &'static str| {
        move |t: &str, p: &str| {
            let body = form(t, p);
            raw(
                &format!(
                    "{head}\r\n{FORM}Content-Length: {}\r\nConnection: close",
                    body.len()
                ),
                &body,
            )
        }
    };
    let cases = vec![
        case("listed host", Gated, with_head("POST /contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.example.com")),
        case("listed host, other case and a port", Gated, with_head("POST /contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: LOGIN.Example.COM:8443")),
        case("unlisted host", Refused(400), with_head("POST /contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.evil.example")),
        case("no Host", Refused(400), with_head("POST /contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1")),
        case("listed, then unlisted Host", Refused(400), with_head("POST /contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.example.com\r\nHost: login.evil.example")),
        case("unlisted, then listed Host", Refused(400), with_head("POST /contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.evil.example\r\nHost: login.example.com")),
        case("listed host with a trailing dot", Refused(400), with_head("POST /contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.example.com.")),
        case("absolute-form for the listed host", Gated, with_head("POST http://login.example.com/contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.example.com")),
        case("absolute-form for another host, listed Host", Refused(400), with_head("POST http://login.evil.example/contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.example.com")),
        case("absolute-form for the listed host, unlisted Host", Refused(400), with_head("POST http://login.example.com/contoso.onmicrosoft.com/register/v1.0/challenge HTTP/1.1\r\nHost: login.evil.example")),
    ];
    run(&env, &side, &cases).await;

    // HTTP/2: :authority is the host.
    for (authority, host, gated) in [
        ("login.example.com", None, true),
        ("login.evil.example", None, false),
        ("login.evil.example", Some("login.example.com"), false),
        ("login.example.com", Some("login.evil.example"), false),
    ] {
        let t = token(&side).await;
        let before = seen(&env).await;
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", authority),
            (":path", PATH),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        if let Some(h) = host {
            fields.push(("host", h));
        }
        let outcome = h2_request(&env, &fields, form(&t, DENIED).as_bytes()).await;
        let after = seen(&env).await;
        assert_eq!(after.forwarded, before.forwarded, "{authority} {host:?}");
        assert_eq!(
            after.denied,
            before.denied + if gated { 1.0 } else { 0.0 },
            "{authority} {host:?}: {outcome:?}"
        );
        assert!(
            matches!(outcome, Outcome::Status(400) | Outcome::Reset(_)),
            "{authority} {host:?}: {outcome:?}"
        );
    }
    let outbox = env.outbox();
    assert!(
        outbox.iter().all(|e| e.target == ALLOWED),
        "only the allowed controls were sent: {outbox:?}"
    );
}

#[tokio::test]
async fn many_sends_on_one_http2_connection_are_each_gated() {
    let env = start(DENY_GB).await;
    let before = seen(&env).await;
    let mut h2 = H2::connect(env.gw.addr).await;
    let mut ids = Vec::new();
    for i in 0..20u32 {
        let id = 2 * i + 1;
        let t = token(&env).await;
        h2.headers(
            id,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "gw"),
                (":path", PATH),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            false,
        )
        .await;
        h2.data(id, form(&t, DENIED).as_bytes(), true).await;
        ids.push(id);
    }
    let mut statuses = std::collections::BTreeMap::new();
    while statuses.len() < ids.len() {
        let Some(f) = h2.frame(Duration::from_secs(5)).await else {
            break;
        };
        if f.kind == h2raw::HEADERS && !statuses.contains_key(&f.stream) {
            statuses.insert(f.stream, h2raw::status(&f.payload));
        }
    }
    assert_eq!(
        statuses.len(),
        ids.len(),
        "every stream answered: {statuses:?}"
    );
    assert!(statuses.values().all(|s| *s == 400), "{statuses:?}");
    let after = seen(&env).await;
    assert_eq!(after.denied, before.denied + 20.0);
    assert_eq!(
        after.forwarded,
        before.forwarded + 4.0 * 20.0,
        "only the 4 flow steps per token went upstream"
    );
    assert!(env.outbox().is_empty());
}

/// An origin (or a middlebox before it) that honours URL and method overrides, as IIS URL
/// Rewrite, ASP.NET and Express's method-override do, in front of the Entra emulator: it
/// serves the path of `X-Original-URL` / `X-Rewrite-URL` and the method of
/// `X-HTTP-Method-Override` and its kin, in either spelling (CGI reads `X_Original_URL` as
/// the same variable). Returns its address.
async fn lenient_origin(entra: std::net::SocketAddr) -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = crate::fixtures::client();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let client = client.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let client = client.clone();
                        async move {
                            let header = |names: &[&str]| {
                                req.headers().iter().find_map(|(k, v)| {
                                    let k = k.as_str().replace('_', "-");
                                    names
                                        .contains(&k.as_str())
                                        .then(|| v.to_str().unwrap_or_default().to_owned())
                                })
                            };
                            let path = header(&[
                                "x-original-url",
                                "x-rewrite-url",
                                "x-original-uri",
                                "x-override-url",
                            ])
                            .unwrap_or_else(|| req.uri().path().to_owned());
                            let method = header(&[
                                "x-http-method-override",
                                "x-http-method",
                                "x-method-override",
                                "x-original-method",
                            ])
                            .unwrap_or_else(|| req.method().to_string());
                            let query = req
                                .uri()
                                .query()
                                .map(|q| format!("?{q}"))
                                .unwrap_or_default();
                            let content_type = req.headers().get("content-type").cloned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut out = client.request(
                                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                                format!("http://{entra}{path}{query}"),
                            );
                            if let Some(ct) = content_type {
                                out = out.header("content-type", ct);
                            }
                            let answer = out.body(body).send().await.unwrap();
                            let status = answer.status();
                            let bytes = answer.bytes().await.unwrap();
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn url_and_method_overrides_cannot_steer_a_lenient_origin() {
    let tokens = start(DENY_GB).await;
    let origin = lenient_origin(tokens.entra).await;
    let gw = crate::fixtures::gateway(&format!("[upstream]\nurl = \"http://{origin}\"\n{DENY_GB}"))
        .await;
    let h2 = crate::fixtures::h2_client();
    let h1 = crate::fixtures::client();
    let mut failures = Vec::new();
    let overrides = [
        ("X-Original-URL", PATH, None),
        ("X-Rewrite-URL", PATH, None),
        ("X_Original_URL", PATH, None),
        (
            "X-Original-URL",
            PATH,
            Some(("X-HTTP-Method-Override", "POST")),
        ),
        ("X-Rewrite-URL", PATH, Some(("X_HTTP_Method", "POST"))),
    ];
    for (version, client) in [("HTTP/1.1", &h1), ("HTTP/2", &h2)] {
        for (name, path, method) in overrides {
            for phone in [DENIED, ALLOWED] {
                let t = token(&tokens).await;
                let before = tokens.outbox().len();
                // A harmless-looking request: POST /favicon.ico, or GET with the form in the
                // query when the method is overridden too.
                let mut req = match method {
                    None => client
                        .post(gw.url("/favicon.ico"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form(&t, phone)),
                    Some((m, v)) => client
                        .get(gw.url(&format!("/favicon.ico?{}", form(&t, phone))))
                        .header(m, v),
                };
                req = req.header(name, path);
                let status = req.send().await.unwrap().status();
                if tokens.outbox().len() != before {
                    failures.push(format!(
                        "{version} {name} {method:?} {phone}: a code was sent ({status})"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The origin does honour overrides: sent to it directly, the same request sends a code.
    let t = token(&tokens).await;
    let direct = h1
        .post(format!("http://{origin}/favicon.ico"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Original-URL", PATH)
        .body(form(&t, ALLOWED))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(
        tokens.outbox().last().map(|e| e.target.clone()).as_deref(),
        Some(ALLOWED)
    );
}

/// First-factor email codes and MFA challenges whose method is empty, hidden in a cookie or
/// in an array spelling: each judged (and denied by a provider that denies everything) or
/// refused; the outbox stays empty.
#[tokio::test]
async fn email_first_factor_and_hidden_method_ids_are_judged_or_refused() {
    let env = start(
        "[routes.sms]\nprovider = \"mock\"\n[routes.email]\nprovider = \"mock\"\n\
         [providers.mock]\ndefault_action = \"deny\"\n[defense]\nvelocity = []\n[audit]\noutput = \"off\"\n",
    )
    .await;
    let initiate = |challenge_type: &'static str| {
        let env = &env;
        async move {
            env.post(
                "/oauth2/v2.0/initiate",
                &[
                    ("username", "otp@contoso.com"),
                    ("challenge_type", challenge_type),
                ],
            )
            .await
            .token()
        }
    };
    let denied =
        |a: &crate::fixtures::entra::Answer| a.status == 400 && a.body["error"] == "access_denied";
    let refused = |a: &crate::fixtures::entra::Answer| {
        a.status == 400 && a.body["error"] == "invalid_request"
    };
    let mut failures = Vec::new();
    // The email code of an email-OTP sign-in, in the spellings of challenge_type.
    for challenge_type in [
        Some("oob redirect"),
        Some("OOB Redirect"),
        Some("redirect oob password"),
        None,
    ] {
        let t = initiate("oob redirect").await;
        let mut form = vec![("continuation_token", t.as_str())];
        if let Some(ct) = challenge_type {
            form.push(("challenge_type", ct));
        }
        let a = env.post("/oauth2/v2.0/challenge", &form).await;
        if !denied(&a) {
            failures.push(format!(
                "first factor, challenge_type {challenge_type:?}: {} {}",
                a.status, a.body
            ));
        }
    }
    // MFA method ids that are empty, hidden or in an array spelling.
    let intro = env.introspect("sms@contoso.com").await;
    let id = intro.body["methods"][0]["id"].as_str().unwrap().to_owned();
    let intro_token = intro.token();
    /// A case's name, its extra form fields and its extra headers.
    type Hidden<'a> = (&'a str, Vec<(String, String)>, Vec<(&'a str, String)>);
    let hidden: Vec<Hidden> = vec![
        ("empty id", vec![("id".into(), String::new())], vec![]),
        ("blank ID", vec![("ID".into(), " ".into())], vec![]),
        ("id as an array", vec![("id[]".into(), id.clone())], vec![]),
        (
            "id with an index",
            vec![("id[0]".into(), id.clone())],
            vec![],
        ),
        (
            "id in a cookie",
            vec![],
            vec![("cookie", format!("id={id}"))],
        ),
        (
            "id in a cookie and empty in the form",
            vec![("id".into(), String::new())],
            vec![("cookie", format!("fpc=1; ID={id}"))],
        ),
    ];
    for (name, fields, headers) in hidden {
        let mut form: Vec<(&str, &str)> = vec![
            ("continuation_token", intro_token.as_str()),
            ("challenge_type", "oob redirect"),
        ];
        form.extend(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = env
            .post_with("/oauth2/v2.0/challenge", &form, &headers)
            .await;
        if !refused(&a) {
            failures.push(format!("{name}: {} {}", a.status, a.body));
        }
    }
    // After mfa_required, no id at all: judged as the MFA send it may be.
    let a = env.password_steps("sms@contoso.com").await;
    let c = env
        .post(
            "/oauth2/v2.0/challenge",
            &[
                ("continuation_token", &a.token()),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    if !denied(&c) {
        failures.push(format!("no id after mfa_required: {} {}", c.status, c.body));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(env.outbox().is_empty(), "{:?}", env.outbox());
}
