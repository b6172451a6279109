//! OpenTelemetry traces (`[traces]`) against an OTLP/HTTP receiver in the test: the spans
//! of a gated request arrive with the right parent/child structure, the upstream and the
//! provider get a `traceparent` naming their client spans, a trusted caller's trace is
//! continued and an untrusted one's is not, sampling applies, and no phone number reaches
//! the collector.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;

use crate::fixtures::risk::{human_toml, serve_human};
use crate::fixtures::{gateway, upstream, Upstream};
use otpgate::emulate::entra::DEMO_CLIENT_ID;
use otpgate::emulate::human::Answer;

const PHONE: &str = "+447400123456";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: every `POST /v1/traces` body (JSON) it got.
#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = receiver.posts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let posts = posts.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let posts = posts.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let kind = parts
                                .headers
                                .get("content-type")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            posts
                                .lock()
                                .unwrap()
                                .push((format!("{} {} {kind}", parts.method, parts.uri), json));
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (receiver, addr)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let posts = self.posts.lock().unwrap();
        posts
            .iter()
            .flat_map(|(_, body)| {
                body["resourceSpans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
                    .flat_map(|s| s["spans"].as_array().into_iter().flatten())
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn raw(&self) -> String {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .map(|(head, body)| format!("{head} {body}"))
            .collect()
    }

    async fn until_spans(&self, at_least: usize) -> Vec<Value> {
        crate::fixtures::eventually(Duration::from_secs(10), "spans exported", || async {
            self.spans().len() >= at_least
        })
        .await;
        self.spans()
    }
}

async fn send_sms(base: &str, traceparent: Option<&str>) -> reqwest::Response {
    send_sms_to(base, traceparent, PHONE).await
}

async fn send_sms_to(base: &str, traceparent: Option<&str>, phone: &str) -> reqwest::Response {
    let client = crate::fixtures::client();
    let mut req = client
        .post(format!(
            "{base}/contoso.onmicrosoft.com/register/v1.0/challenge"
        ))
        .form(&[
            ("client_id", DEMO_CLIENT_ID),
            (
                "continuation_token",
                &format!("a-continuation-token-of-the-flow-{phone}"),
            ),
            ("challenge_type", "oob"),
            ("challenge_channel", "sms"),
            ("challenge_target", phone),
        ]);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    req.send().await.unwrap()
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    let found = span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .unwrap_or_else(|| panic!("no attribute {key} in {span}"));
    &found["value"]
}

#[tokio::test]
async fn a_traced_send_exports_its_phases_and_propagates_the_trace() {
    let (receiver, collector) = Receiver::start().await;
    let up = upstream(Upstream::Echo).await;
    let (human, base) = serve_human(Answer::default()).await;
    let gw = gateway(&format!(
        "[upstream]\nurl = \"http://{up}\"\n[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [traces]\notlp_endpoint = \"http://{collector}/v1/traces\"\nservice_name = \"otpgate-test\"\n{}",
        human_toml(&base, "open")
    ))
    .await;

    // A trusted caller's trace, sampled: continued.
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let resp = send_sms(&gw.url(""), Some(&caller)).await;
    assert_eq!(resp.status(), 200);
    let echoed: Value =
        serde_json::from_str(resp.headers()["x-echo-headers"].to_str().unwrap()).unwrap();
    let spans = receiver.until_spans(7).await;
    let root = named(&spans, "otpgate.gated");
    assert_eq!(root["traceId"], TRACE_ID, "the caller's trace");
    assert_eq!(root["parentSpanId"], CALLER_SPAN, "under the caller's span");
    assert_eq!(root["kind"], 2, "a server span");
    assert_eq!(
        attr(root, "otpgate.endpoint")["stringValue"],
        "register_challenge"
    );
    assert_eq!(attr(root, "otpgate.decision")["stringValue"], "allow");
    assert_eq!(attr(root, "otpgate.country")["stringValue"], "GB");
    assert_eq!(attr(root, "http.response.status_code")["intValue"], "200");
    let root_id = root["spanId"].as_str().unwrap();
    for phase in ["read", "flow", "judge", "upstream", "learn"] {
        let span = named(&spans, phase);
        assert_eq!(span["traceId"], TRACE_ID, "{phase}");
        assert_eq!(
            span["parentSpanId"], root_id,
            "{phase} under the request's span"
        );
        let (start, end) = (
            span["startTimeUnixNano"]
                .as_str()
                .unwrap()
                .parse::<u128>()
                .unwrap(),
            span["endTimeUnixNano"]
                .as_str()
                .unwrap()
                .parse::<u128>()
                .unwrap(),
        );
        assert!(start <= end, "{phase}: {span}");
    }
    let judge = named(&spans, "judge");
    let provider = named(&spans, "provider");
    assert_eq!(
        provider["parentSpanId"], judge["spanId"],
        "the provider call under judge"
    );
    assert_eq!(provider["kind"], 3, "a client span");
    assert_eq!(attr(provider, "otpgate.provider")["stringValue"], "human");
    let upstream_span = named(&spans, "upstream");
    assert_eq!(upstream_span["kind"], 3);

    // Entra and the provider got a traceparent naming their client spans.
    let sent_up = echoed["traceparent"][0].as_str().unwrap();
    assert_eq!(
        sent_up,
        format!(
            "00-{TRACE_ID}-{}-01",
            upstream_span["spanId"].as_str().unwrap()
        )
    );
    let to_human = human
        .requests()
        .into_iter()
        .find_map(|r| r.traceparent)
        .expect("a traceparent on the Risk API call");
    assert_eq!(
        to_human,
        format!("00-{TRACE_ID}-{}-01", provider["spanId"].as_str().unwrap())
    );

    // No phone number, token or code reaches the collector.
    let raw = receiver.raw();
    assert!(raw.contains("POST /v1/traces application/json"), "{raw}");
    for secret in ["7400123456", "continuation-token"] {
        assert!(!raw.contains(secret), "{secret} exported: {raw}");
    }

    // Pass-through is not traced.
    let before = receiver.spans().len();
    let r = crate::fixtures::client()
        .get(gw.url("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"))
        .header("traceparent", caller.as_str())
        .send()
        .await
        .unwrap();
    let echoed: Value =
        serde_json::from_str(r.headers()["x-echo-headers"].to_str().unwrap()).unwrap();
    assert_eq!(
        echoed["traceparent"][0],
        caller.as_str(),
        "passed on untouched"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.spans().len(), before, "no span for pass-through");
}

#[tokio::test]
async fn an_untrusted_callers_trace_is_not_continued_and_sampling_applies() {
    let (receiver, collector) = Receiver::start().await;
    let up = upstream(Upstream::Echo).await;
    // No trusted proxy: the caller's traceparent is not believed.
    let gw = gateway(&format!(
        "[upstream]\nurl = \"http://{up}\"\n[traces]\notlp_endpoint = \"http://{collector}/v1/traces\"\n"
    ))
    .await;
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let resp = send_sms(&gw.url(""), Some(&caller)).await;
    let echoed: Value =
        serde_json::from_str(resp.headers()["x-echo-headers"].to_str().unwrap()).unwrap();
    let spans = receiver.until_spans(6).await;
    let root = named(&spans, "otpgate.gated");
    assert_ne!(root["traceId"], TRACE_ID, "a trace of its own");
    assert!(root.get("parentSpanId").is_none(), "{root}");
    let sent_up = echoed["traceparent"][0].as_str().unwrap();
    assert!(
        sent_up.starts_with(&format!("00-{}-", root["traceId"].as_str().unwrap())),
        "Entra gets otpgate's trace, not the caller's: {sent_up}"
    );

    // Sampling at 0: nothing is recorded, and the caller's header passes as it came.
    let (quiet, collector) = Receiver::start().await;
    let gw = gateway(&format!(
        "[upstream]\nurl = \"http://{up}\"\n[traces]\notlp_endpoint = \"http://{collector}/v1/traces\"\n\
         sample_ratio = 0.0\n\
         [[defense.velocity]]\nname = \"sms-per-phone\"\nkey = \"phone\"\nchannel = \"sms\"\n\
         window = \"1h\"\nlimit = 3\naction = \"deny\"\n"
    ))
    .await;
    for n in 0..5 {
        let phone = format!("+44740012{n:04}");
        let resp = send_sms_to(&gw.url(""), Some(&caller), &phone).await;
        assert_eq!(resp.status(), 200);
        let echoed: Value =
            serde_json::from_str(resp.headers()["x-echo-headers"].to_str().unwrap()).unwrap();
        assert_eq!(
            echoed["traceparent"][0],
            caller.as_str(),
            "not traced: as it came"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(quiet.spans().is_empty(), "{:?}", quiet.spans());
    let m = crate::fixtures::probe::metrics(gw.admin).await;
    assert_eq!(
        crate::fixtures::probe::value(&m, "otpgate_trace_spans_exported_total"),
        0.0,
        "{m}"
    );
}
