//! Traces of gated requests, exported over OTLP/HTTP in its JSON encoding (`[traces]`, off
//! by default).
//!
//! A gated request that is sampled gets one server span (`otpgate.gated`) with a child span
//! for each phase (`read`, `flow`, `judge`, `answer`, `learn`) and client spans for the
//! risk-provider call (under `judge`) and the upstream call (`upstream`). The provider and
//! Entra receive a W3C `traceparent` naming their client span. Requests nothing gates
//! stream through untouched and are not traced.
//!
//! A `traceparent` is believed only from a peer in `server.trusted_proxies`. From a trusted
//! peer its trace id and sampled flag decide; anyone else's starts a new trace, sampled at
//! [`TracesSettings::sample_ratio`].
//!
//! Attributes name endpoint kinds, decisions, reasons, channels and countries: never a phone
//! number, token, code or header value. Spans of a request go to a bounded queue when the
//! request ends; a background task posts them to the collector in batches (at most every
//! second, or 512 spans). A full queue or a failing collector drops spans and counts them
//! (`otpgate_trace_spans_dropped_total`); the request path never waits on export.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::problem::Checker;

/// `[traces]`: OpenTelemetry traces of gated requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP traces endpoint, e.g.
    /// `http://otel-collector:4318/v1/traces`; empty = no traces.
    pub otlp_endpoint: String,
    /// Share of traces recorded, 0.0 to 1.0, when no trusted caller's `traceparent` decided.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "otpgate".into(),
        }
    }
}

/// `[traces]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesSettings {
    /// `None`: traces off.
    pub endpoint: Option<String>,
    pub sample_ratio: f64,
    pub service_name: String,
}

impl TracesConfig {
    pub(crate) fn build(&self, check: &mut Checker) -> Option<TracesSettings> {
        let mut ok = true;
        let endpoint = self.otlp_endpoint.trim();
        let endpoint = match endpoint {
            "" => None,
            url => {
                let parsed = url.parse::<http::Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if parsed.is_none() {
                    check.problem(
                        "traces.otlp_endpoint",
                        format!("{url:?} is not an http(s) URL, e.g. http://otel-collector:4318/v1/traces"),
                    );
                    ok = false;
                }
                Some(url.to_owned())
            }
        };
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            check.problem("traces.sample_ratio", "must be between 0.0 and 1.0");
            ok = false;
        }
        if self.service_name.trim().is_empty() {
            check.problem("traces.service_name", "must not be empty");
            ok = false;
        }
        ok.then(|| TracesSettings {
            endpoint,
            sample_ratio: self.sample_ratio,
            service_name: self.service_name.trim().to_owned(),
        })
    }
}

/// Spans of one request, at most this many requests' worth waiting for export.
const QUEUE: usize = 1024;
/// Spans posted in one request to the collector, at most.
const BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Upper bound on one post to the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a span is to its trace (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Self {
        Attr::Str(s.to_owned())
    }
}

impl From<String> for Attr {
    fn from(s: String) -> Self {
        Attr::Str(s)
    }
}

impl From<i64> for Attr {
    fn from(n: i64) -> Self {
        Attr::Int(n)
    }
}

impl From<bool> for Attr {
    fn from(b: bool) -> Self {
        Attr::Bool(b)
    }
}

/// A span id, fresh and random.
pub(crate) type SpanId = [u8; 8];

/// A finished span of a request's trace.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) id: SpanId,
    /// `None` only for a request's own span without a trusted caller.
    pub(crate) parent: Option<SpanId>,
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attrs: Vec<(&'static str, Attr)>,
    pub(crate) error: bool,
}

/// A finished span, with the trace it belongs to.
#[derive(Debug, Clone)]
struct Span {
    trace_id: [u8; 16],
    span: Child,
}

/// The tracer: sampling, and the queue to the exporter.
pub(crate) struct Tracer {
    ratio: f64,
    tx: mpsc::Sender<Vec<Span>>,
    metrics: Arc<Metrics>,
}

impl Tracer {
    /// The tracer for `settings`, with its exporter running on the current runtime;
    /// `None` when traces are off.
    pub(crate) fn start(settings: &TracesSettings, metrics: Arc<Metrics>) -> Option<Arc<Self>> {
        let endpoint = settings.endpoint.clone()?;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let client = crate::tls::webpki_client_config()
            .map_err(|e| e.to_string())
            .and_then(|tls| {
                reqwest::Client::builder()
                    .use_preconfigured_tls(tls)
                    .timeout(EXPORT_TIMEOUT)
                    .user_agent(concat!("otpgate/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.to_string())
            });
        let client = match client {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "traces off: no HTTP client for the collector");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let exporter = Exporter {
            endpoint,
            resource: resource(&settings.service_name),
            client,
            metrics: metrics.clone(),
        };
        runtime.spawn(exporter.run(rx));
        Some(Arc::new(Self {
            ratio: settings.sample_ratio,
            tx,
            metrics,
        }))
    }

    /// A trace for a request that arrived with `traceparent` (only a trusted peer's is
    /// passed here), or `None` when it is not sampled.
    pub(crate) fn begin(self: &Arc<Self>, traceparent: Option<&HeaderValue>) -> Option<Trace> {
        let parent = traceparent.and_then(|v| parse_traceparent(v.as_bytes()));
        let (trace_id, remote, sampled) = match parent {
            Some(p) => (p.trace_id, Some(p.span_id), p.sampled),
            None => (random_trace_id(), None, rand::random::<f64>() < self.ratio),
        };
        sampled.then(|| Trace {
            tracer: self.clone(),
            trace_id,
            root: random_span_id(),
            remote,
            start: SystemTime::now(),
            spans: Vec::with_capacity(8),
        })
    }
}

/// The spans of one sampled request, sent to the exporter by [`Trace::finish`].
pub(crate) struct Trace {
    tracer: Arc<Tracer>,
    trace_id: [u8; 16],
    root: SpanId,
    /// The trusted caller's span, the root's parent.
    remote: Option<SpanId>,
    start: SystemTime,
    spans: Vec<Span>,
}

impl Trace {
    /// The request's own span: the parent of its phases.
    pub(crate) fn root(&self) -> SpanId {
        self.root
    }

    /// A span id for a span to be recorded later (a call whose `traceparent` must name it
    /// before it starts).
    pub(crate) fn new_span_id(&self) -> SpanId {
        random_span_id()
    }

    /// The `traceparent` that names `span` as the caller.
    pub(crate) fn traceparent(&self, span: SpanId) -> HeaderValue {
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        push_hex(&mut text, &self.trace_id);
        text.push('-');
        push_hex(&mut text, &span);
        text.push_str("-01");
        // Hex digits and dashes only.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Record a finished span.
    pub(crate) fn record(&mut self, span: Child) {
        self.spans.push(Span {
            trace_id: self.trace_id,
            span,
        });
    }

    /// A phase of the request, from `start` to now, under the request's span.
    pub(crate) fn phase(&mut self, name: &'static str, start: SystemTime) -> SpanId {
        let id = random_span_id();
        self.record(Child {
            id,
            parent: Some(self.root),
            name,
            kind: Kind::Internal,
            start,
            end: SystemTime::now(),
            attrs: Vec::new(),
            error: false,
        });
        id
    }

    /// End the request's span (now) with `attrs`, and hand every span to the exporter.
    pub(crate) fn finish(mut self, attrs: Vec<(&'static str, Attr)>, error: bool) {
        self.record(Child {
            id: self.root,
            parent: self.remote,
            name: "otpgate.gated",
            kind: Kind::Server,
            start: self.start,
            end: SystemTime::now(),
            attrs,
            error,
        });
        let spans = std::mem::take(&mut self.spans);
        let n = spans.len() as u64;
        if self.tracer.tx.try_send(spans).is_err() {
            self.tracer.metrics.trace_spans_dropped(n);
        }
    }
}

/// A `traceparent` as W3C Trace Context defines it, version 00: exactly
/// `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all zero. Anything else is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: SpanId,
    sampled: bool,
}

fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut flags = [0u8; 1];
    unhex(&v[3..35], &mut trace_id)?;
    unhex(&v[36..52], &mut span_id)?;
    unhex(&v[53..55], &mut flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

/// Lowercase hex into `out` (exactly twice its length), or `None`.
fn unhex(text: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn random_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

fn random_span_id() -> SpanId {
    loop {
        let id: SpanId = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn attr_json((key, value): &(&'static str, Attr)) -> Value {
    let value = match value {
        Attr::Str(s) => json!({ "stringValue": s }),
        // OTLP/JSON carries 64-bit integers as strings.
        Attr::Int(n) => json!({ "intValue": n.to_string() }),
        Attr::Bool(b) => json!({ "boolValue": b }),
    };
    json!({ "key": key, "value": value })
}

fn span_json(Span { trace_id, span: s }: &Span) -> Value {
    let mut span = json!({
        "traceId": hex(trace_id),
        "spanId": hex(&s.id),
        "name": s.name,
        "kind": s.kind as u8,
        "startTimeUnixNano": nanos(s.start),
        "endTimeUnixNano": nanos(s.end),
        "attributes": s.attrs.iter().map(attr_json).collect::<Vec<_>>(),
        // STATUS_CODE_ERROR, or UNSET.
        "status": { "code": if s.error { 2 } else { 0 } },
    });
    if let (Some(parent), Some(map)) = (s.parent, span.as_object_mut()) {
        map.insert("parentSpanId".into(), Value::String(hex(&parent)));
    }
    span
}

fn resource(service_name: &str) -> Value {
    json!({
        "attributes": [
            attr_json(&("service.name", Attr::from(service_name))),
            attr_json(&("service.version", Attr::from(env!("CARGO_PKG_VERSION")))),
        ]
    })
}

/// An `ExportTraceServiceRequest` of `spans`, in OTLP's JSON encoding.
fn export_body(resource: &Value, spans: &[Span]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{
                "scope": { "name": "otpgate", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
            }],
        }]
    })
}

struct Exporter {
    endpoint: String,
    resource: Value,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Exporter {
    async fn run(self, mut rx: mpsc::Receiver<Vec<Span>>) {
        let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
        loop {
            let deadline = tokio::time::sleep(FLUSH_EVERY);
            tokio::pin!(deadline);
            let closed = loop {
                tokio::select! {
                    spans = rx.recv() => match spans {
                        Some(spans) => {
                            batch.extend(spans);
                            if batch.len() >= BATCH {
                                break false;
                            }
                        }
                        None => break true,
                    },
                    () = &mut deadline => break false,
                }
            };
            if !batch.is_empty() {
                self.post(std::mem::take(&mut batch)).await;
            }
            if closed {
                return;
            }
        }
    }

    async fn post(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        let body = export_body(&self.resource, &spans);
        let sent = self
            .client
            .post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => self.metrics.trace_spans_exported(n),
            Ok(r) => {
                tracing::debug!(status = %r.status(), spans = n, "trace export refused");
                self.metrics.trace_spans_dropped(n);
            }
            Err(error) => {
                tracing::debug!(%error, spans = n, "trace export failed");
                self.metrics.trace_spans_dropped(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_strictly() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse_traceparent(good).unwrap();
        assert!(p.sampled);
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.span_id), "00f067aa0ba902b7");
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!parse_traceparent(unsampled).unwrap().sampled);
        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..],
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            b"",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn config_is_checked() {
        let mut check = Checker::default();
        let off = TracesConfig::default().build(&mut check).unwrap();
        assert_eq!(off.endpoint, None);
        let bad = TracesConfig {
            otlp_endpoint: "otel-collector:4318".into(),
            sample_ratio: 1.5,
            service_name: " ".into(),
        };
        assert!(bad.build(&mut check).is_none());
        let keys: Vec<_> = check.problems().iter().map(|p| p.key.clone()).collect();
        assert_eq!(
            keys,
            [
                "traces.otlp_endpoint",
                "traces.sample_ratio",
                "traces.service_name"
            ]
        );
    }

    #[test]
    fn spans_are_otlp_json() {
        let s = Span {
            trace_id: [1; 16],
            span: Child {
                id: [2; 8],
                parent: Some([3; 8]),
                name: "judge",
                kind: Kind::Internal,
                start: UNIX_EPOCH + Duration::from_nanos(1_500),
                end: UNIX_EPOCH + Duration::from_nanos(2_500),
                attrs: vec![("otpgate.decision", "allow".into()), ("n", Attr::Int(3))],
                error: false,
            },
        };
        let body = export_body(&resource("otpgate"), &[s]);
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "01010101010101010101010101010101");
        assert_eq!(span["parentSpanId"], "0303030303030303");
        assert_eq!(span["startTimeUnixNano"], "1500");
        assert_eq!(span["kind"], 1);
        assert_eq!(span["attributes"][1]["value"]["intValue"], "3");
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "otpgate"
        );
    }
}
