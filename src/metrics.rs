//! Prometheus metrics: one struct, passed by `Arc`, rendered as text on the admin port.
//! Labels are low-cardinality by construction: fixed enums and labels, never user input.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `kind` of requests nothing gates.
pub(crate) const PASS_THROUGH: &str = "pass_through";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Endpoint kind label (`pass_through` for everything not native-auth).
    pub kind: &'static str,
    pub class: &'static str,
}

/// `1xx` … `5xx`.
pub(crate) fn status_class(status: http::StatusCode) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: http::StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendLabels {
    pub endpoint: &'static str,
    pub channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerificationLabels {
    pub endpoint: &'static str,
    /// ISO region of the number the flow registered, or `unknown`.
    pub country: String,
}

/// A country label: regions are two ASCII letters from libphonenumber metadata, a bounded
/// set; anything else is `unknown`.
fn region_label(country: Option<&str>) -> String {
    country
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        .unwrap_or("unknown")
        .to_owned()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardedLabels {
    pub channel: &'static str,
    /// ISO region of the destination phone, or `unknown` (MFA sends carry no number).
    pub country: String,
    /// `ok` when Entra answered 2xx (a code went out), else `upstream_error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub route: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub route: &'static str,
    /// The reason's first two `:`-separated parts (`velocity:sms-per-flow`,
    /// `destination:type`), so the set stays bounded by the config.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderNameLabels {
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// What the store reports at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoreReport {
    pub counts: crate::store::fallback::FallbackCounts,
    /// Serving from the local fallback instead of the shared store.
    pub degraded: bool,
    /// Keys the memory store evicted to stay within its bound.
    pub evictions: u64,
}

type StoreSource = Arc<dyn Fn() -> StoreReport + Send + Sync>;

/// Reads the store's counters on each scrape.
#[derive(Clone, Default)]
struct StoreCollector {
    source: Arc<std::sync::OnceLock<StoreSource>>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl prometheus_client::collector::Collector for StoreCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(source) = self.source.get() else {
            return Ok(());
        };
        let r = source();
        let counters: [(&str, &str, u64); 7] = [
            (
                "store_shared_ok",
                "Store operations answered by the shared store (Redis)",
                r.counts.primary_ok,
            ),
            (
                "store_shared_timeouts",
                "Shared-store operations that timed out (answered locally)",
                r.counts.primary_timeout,
            ),
            (
                "store_shared_errors",
                "Shared-store operations that failed otherwise (answered locally)",
                r.counts.primary_unavailable,
            ),
            (
                "store_local_ops",
                "Store operations answered by local memory while the shared store failed",
                r.counts.local,
            ),
            (
                "store_fallbacks",
                "Switches from the shared store to local memory",
                r.counts.fallbacks,
            ),
            (
                "store_recoveries",
                "Switches back to the shared store",
                r.counts.recoveries,
            ),
            (
                "store_evictions",
                "Keys the memory store evicted to stay within store.max_entries",
                r.evictions,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let g = ConstGauge::new(i64::from(r.degraded));
        g.encode(encoder.encode_descriptor(
            "store_degraded",
            "1 while serving from the local fallback instead of the shared store",
            None,
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

/// How long a key a rule acted on stays counted among the active adaptive blocks after
/// the last send it refused or stepped up.
pub(crate) const ACTIVE_FOR: Duration = Duration::from_secs(15 * 60);

/// Keys remembered per rule and action, at most: past it the gauge stops growing (and says
/// so only by its flat top) rather than the memory.
const ACTIVE_CAP: usize = 100_000;

/// The keys enforced adaptive rules acted on lately, by rule and action: the
/// `adaptive_active_keys` gauge, counted on each scrape. A key is kept as a 64-bit hash
/// (under this process's random key) with when it was last acted on.
#[derive(Clone, Default)]
struct ActiveCollector {
    keys: Arc<parking_lot::Mutex<ActiveKeys>>,
}

#[derive(Default)]
struct ActiveKeys {
    hasher: std::hash::RandomState,
    by_rule:
        std::collections::HashMap<(String, &'static str), std::collections::HashMap<u64, Noted>>,
}

/// When a key was last acted on, and when it was last told to the store's listing.
#[derive(Clone, Copy)]
struct Noted {
    last: tokio::time::Instant,
    told: tokio::time::Instant,
}

/// How often one replica tells the admin API's listing (in the store) of a key it keeps
/// acting on.
const RENOTE_AFTER: Duration = Duration::from_secs(5 * 60);

impl ActiveKeys {
    /// Note `key` acted on; whether it is news: not noted in the last [`RENOTE_AFTER`].
    fn note(
        &mut self,
        rule: &str,
        action: &'static str,
        key: &str,
        now: tokio::time::Instant,
    ) -> bool {
        use std::hash::BuildHasher;
        let id = self.hasher.hash_one(key);
        let keys = self.by_rule.entry((rule.to_owned(), action)).or_default();
        if keys.len() >= ACTIVE_CAP && !keys.contains_key(&id) {
            keys.retain(|_, n| now.saturating_duration_since(n.last) < ACTIVE_FOR);
            if keys.len() >= ACTIVE_CAP {
                return false;
            }
        }
        match keys.get_mut(&id) {
            Some(n) if now.saturating_duration_since(n.told) < RENOTE_AFTER => {
                n.last = now;
                false
            }
            Some(n) => {
                *n = Noted {
                    last: now,
                    told: now,
                };
                true
            }
            None => {
                keys.insert(
                    id,
                    Noted {
                        last: now,
                        told: now,
                    },
                );
                true
            }
        }
    }

    /// The keys still active per rule and action; the others forgotten.
    fn count(&mut self, now: tokio::time::Instant) -> Vec<(String, &'static str, usize)> {
        let mut out = Vec::with_capacity(self.by_rule.len());
        for ((rule, action), keys) in &mut self.by_rule {
            keys.retain(|_, n| now.saturating_duration_since(n.last) < ACTIVE_FOR);
            out.push((rule.clone(), *action, keys.len()));
        }
        out.sort();
        out
    }
}

impl std::fmt::Debug for ActiveCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActiveCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActiveLabels {
    rule: String,
    action: &'static str,
}

impl prometheus_client::collector::Collector for ActiveCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let counts = self.keys.lock().count(tokio::time::Instant::now());
        let mut family = encoder.encode_descriptor(
            "adaptive_active_keys",
            "Keys (destinations, ranges, networks, apps, accounts) an enforced adaptive rule refused or stepped up a send to within the last 15 minutes, on this replica",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (rule, action, n) in counts {
            let labels = ActiveLabels { rule, action };
            let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            g.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A request in flight; see [`Metrics::in_flight_guard`].
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight_dec();
    }
}

/// Every metric otpgate exposes.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// `requests` of kind `pass_through`, by status class: resolved once, because a label
    /// lookup (a lock and a SipHash of the labels) on every pass-through request showed.
    pass_through: [Counter; 5],
    pub upstream_latency: Histogram,
    pub upstream_errors: Family<OutcomeLabels, Counter>,
    pub open_connections: Gauge,
    pub in_flight: Gauge,
    pub overload_rejections: Counter,
    pub audit_dropped: Counter,
    pub trace_spans_exported: Counter,
    pub trace_spans_dropped: Counter,
    pub otp_sends_seen: Family<SendLabels, Counter>,
    pub otp_verifications: Family<VerificationLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub otp_sends_forwarded: Family<ForwardedLabels, Counter>,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub decision_reasons: Family<ReasonLabels, Counter>,
    pub provider_calls: Family<ProviderLabels, Counter>,
    pub provider_latency: Family<ProviderNameLabels, Histogram>,
    /// Mirrors `in_flight` for cheap reads (readiness, tests).
    in_flight_now: AtomicI64,
    store: StoreCollector,
    active: ActiveCollector,
}

/// The commit otpgate was built from: `OTPGATE_COMMIT` at build time (the container build
/// passes it as a build argument), else `unknown`.
pub const COMMIT: &str = match option_env!("OTPGATE_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("otpgate");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: COMMIT,
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version and commit of the running build, in its labels",
            build_info,
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint kind and status class",
            requests.clone(),
        );
        let upstream_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response head",
            upstream_latency.clone(),
        );
        let upstream_errors = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that failed, by outcome (unreachable, timeout)",
            upstream_errors.clone(),
        );
        // Known label values start at zero, so dashboards and alerts see them from the start.
        for outcome in ["unreachable", "timeout"] {
            upstream_errors
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(0);
        }
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests currently being handled",
            in_flight.clone(),
        );
        let overload_rejections = Counter::default();
        registry.register(
            "overload_rejections",
            "Requests refused with 503 because max_in_flight was reached",
            overload_rejections.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit lines dropped: the writer fell behind, or the sink refused the write",
            audit_dropped.clone(),
        );
        let trace_spans_exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted ([traces])",
            trace_spans_exported.clone(),
        );
        let trace_spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Spans dropped: the export queue was full, or the collector refused or failed the post",
            trace_spans_dropped.clone(),
        );
        let otp_sends_seen = Family::<SendLabels, Counter>::default();
        registry.register(
            "otp_send_requests",
            "Requests that would make Entra send a code, by endpoint and channel",
            otp_sends_seen.clone(),
        );
        let otp_verifications = Family::<VerificationLabels, Counter>::default();
        registry.register(
            "otp_verifications",
            "Codes Entra accepted (what the adaptive rules learn from), by endpoint and the \
             destination country of the registered number (unknown for MFA and email)",
            otp_verifications.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions on OTP sends, by route and outcome (allow, step_up, throttle, deny, would_*)",
            decisions.clone(),
        );
        let otp_sends_forwarded = Family::<ForwardedLabels, Counter>::default();
        registry.register(
            "otp_sends_forwarded",
            "OTP sends forwarded to Entra, by channel, destination country and Entra's answer",
            otp_sends_forwarded.clone(),
        );
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome (ok, rejected)",
            config_reloads.clone(),
        );
        // Known label values start at zero, so dashboards and alerts see them from the start.
        for outcome in ["ok", "rejected"] {
            config_reloads
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(0);
        }
        let decision_reasons = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "decision_reasons",
            "Reasons contributing to decisions, by route",
            decision_reasons.clone(),
        );
        let provider_calls = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Risk provider calls by provider and outcome (ok, timeout, unavailable, bad_response, rate_limited, circuit_open)",
            provider_calls.clone(),
        );
        let provider_latency = Family::<ProviderNameLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 14))) as fn() -> Histogram,
        );
        registry.register(
            "provider_duration_seconds",
            "Risk provider call latency, including budget cut-offs",
            provider_latency.clone(),
        );
        let store = StoreCollector::default();
        registry.register_collector(Box::new(store.clone()));
        let active = ActiveCollector::default();
        registry.register_collector(Box::new(active.clone()));
        let pass_through = STATUS_CLASSES.map(|class| {
            requests
                .get_or_create(&RequestLabels {
                    kind: PASS_THROUGH,
                    class,
                })
                .clone()
        });
        Arc::new(Self {
            store,
            active,
            registry,
            requests,
            pass_through,
            upstream_latency,
            upstream_errors,
            open_connections,
            in_flight,
            overload_rejections,
            audit_dropped,
            trace_spans_exported,
            trace_spans_dropped,
            otp_sends_seen,
            otp_verifications,
            decisions,
            otp_sends_forwarded,
            config_reloads,
            decision_reasons,
            provider_calls,
            provider_latency,
            in_flight_now: AtomicI64::new(0),
        })
    }

    pub(crate) fn request_done(&self, kind: &'static str, status: http::StatusCode) {
        if kind == PASS_THROUGH {
            self.pass_through[class_index(status)].inc();
            return;
        }
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                class: status_class(status),
            })
            .inc();
    }

    pub(crate) fn upstream_done(&self, elapsed: Duration) {
        self.upstream_latency.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn trace_spans_exported(&self, n: u64) {
        self.trace_spans_exported.inc_by(n);
    }

    pub(crate) fn trace_spans_dropped(&self, n: u64) {
        self.trace_spans_dropped.inc_by(n);
    }

    pub(crate) fn upstream_failed(&self, outcome: &'static str) {
        self.upstream_errors
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A code Entra accepted; `country` is the ISO region of the number the flow
    /// registered, when it named one.
    pub(crate) fn verification(
        &self,
        endpoint: &crate::entra::classify::EndpointKind,
        country: Option<&str>,
    ) {
        self.otp_verifications
            .get_or_create(&VerificationLabels {
                endpoint: endpoint.as_str(),
                country: region_label(country),
            })
            .inc();
    }

    pub(crate) fn otp_send_seen(&self, endpoint: &'static str, channel: &'static str) {
        self.otp_sends_seen
            .get_or_create(&SendLabels { endpoint, channel })
            .inc();
    }

    pub fn decision(&self, route: &'static str, decision: &crate::policy::Decision) {
        self.decisions
            .get_or_create(&DecisionLabels {
                route,
                outcome: decision.label(),
            })
            .inc();
        for reason in &decision.reasons {
            self.decision_reasons
                .get_or_create(&ReasonLabels {
                    route,
                    reason: reason.class().into_owned(),
                })
                .inc();
        }
    }

    /// A send forwarded to Entra; `result` is `ok` (Entra sent the code), `no_code` (it
    /// answered 2xx without one: a password prompt, a redirect) or `upstream_error`.
    pub(crate) fn otp_send_forwarded(
        &self,
        channel: &'static str,
        country: Option<&str>,
        result: &'static str,
    ) {
        let country = region_label(country);
        self.otp_sends_forwarded
            .get_or_create(&ForwardedLabels {
                channel,
                country,
                result,
            })
            .inc();
    }

    pub(crate) fn config_reload(&self, outcome: &'static str) {
        self.config_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn provider_call(
        &self,
        provider: &'static str,
        outcome: &'static str,
        latency: Duration,
    ) {
        self.provider_calls
            .get_or_create(&ProviderLabels { provider, outcome })
            .inc();
        self.provider_latency
            .get_or_create(&ProviderNameLabels { provider })
            .observe(latency.as_secs_f64());
    }

    /// An enforced adaptive rule refused or stepped up a send to `key` (a store key: it
    /// names no one, and only its hash is kept).
    /// Note an enforced adaptive hit; whether this replica had not noted the key in the
    /// last five minutes (then the admin API's listing is told).
    pub(crate) fn adaptive_acted(&self, rule: &str, action: &'static str, key: &str) -> bool {
        self.active
            .keys
            .lock()
            .note(rule, action, key, tokio::time::Instant::now())
    }

    /// Where the store metrics come from; set once at start.
    pub(crate) fn set_store_source(
        &self,
        source: impl Fn() -> StoreReport + Send + Sync + 'static,
    ) {
        let _ = self.store.source.set(Arc::new(source));
    }

    pub(crate) fn in_flight_inc(&self) {
        self.in_flight.inc();
        self.in_flight_now.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight_dec(&self) {
        self.in_flight.dec();
        self.in_flight_now.fetch_sub(1, Ordering::Relaxed);
    }

    /// Count a request in flight until the guard is dropped, however the request ends:
    /// the server drops a request's future when its client resets the stream or goes away.
    pub(crate) fn in_flight_guard(&self) -> InFlight<'_> {
        self.in_flight_inc();
        InFlight(self)
    }

    pub fn in_flight_now(&self) -> i64 {
        self.in_flight_now.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_the_version_and_commit() {
        let text = Metrics::new().render();
        let line = format!(
            "otpgate_build_info{{version=\"{}\",commit=\"{COMMIT}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&line), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn active_keys_count_distinct_keys_until_they_rest_for_the_cool_down() {
        let m = Metrics::new();
        // News the first time, and again only once RENOTE_AFTER has passed.
        assert!(m.adaptive_acted("sms-country", "deny", "conv:sms-country:+371"));
        assert!(!m.adaptive_acted("sms-country", "deny", "conv:sms-country:+371"));
        assert!(m.adaptive_acted("sms-country", "deny", "conv:sms-country:+882"));
        assert!(m.adaptive_acted("sms-prefix", "step_up", "conv:sms-prefix:+4474001"));
        let text = m.render();
        assert!(
            text.contains("otpgate_adaptive_active_keys{rule=\"sms-country\",action=\"deny\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("otpgate_adaptive_active_keys{rule=\"sms-prefix\",action=\"step_up\"} 1"),
            "{text}"
        );
        // One key acted on again keeps its place; the others rest and leave.
        tokio::time::advance(ACTIVE_FOR / 2).await;
        assert!(m.adaptive_acted("sms-country", "deny", "conv:sms-country:+882"));
        tokio::time::advance(ACTIVE_FOR / 2).await;
        let text = m.render();
        assert!(
            text.contains("otpgate_adaptive_active_keys{rule=\"sms-country\",action=\"deny\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("otpgate_adaptive_active_keys{rule=\"sms-prefix\",action=\"step_up\"} 0"),
            "{text}"
        );
    }
}
