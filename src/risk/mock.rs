//! A provider whose verdicts come from configuration rules, so demos, staging and tests can
//! produce every outcome (allow, step-up, deny, each error, latency) without a vendor.
//!
//! Rules are tried in order; the first whose conditions all hold decides. A rule without
//! conditions matches everything. No rule matching gives `default_action`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::defense::destination::parse_phone;

use super::{
    BuildError, ProviderChallenge, RiskAction, RiskError, RiskProvider, RiskRequest, RiskVerdict,
};

/// Configuration of the mock provider.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Rules tried in order; the first match decides.
    pub rules: Vec<MockRule>,
    /// The action when no rule matches.
    pub default_action: Option<RiskAction>,
    /// Latency added to every answer, before a rule's own.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
}

/// One rule: conditions (all must hold) and an outcome.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockRule {
    /// A name, reported as the reason `mock:<name>`.
    pub name: Option<String>,
    /// Matches when the destination phone (E.164) starts with this, e.g. `+4470`.
    pub phone_prefix: Option<String>,
    /// Matches when the destination phone's country calling code is this, e.g. `44`
    /// (parsed with libphonenumber metadata, so `+1242…` has calling code 1).
    pub calling_code: Option<u16>,
    /// Matches when the client IP is inside this network, e.g. `203.0.113.0/24`.
    pub client_ip: Option<IpNet>,
    /// Matches when the request has this header (and, if given, this exact value).
    pub header: Option<HeaderMatch>,
    /// The verdict's action.
    pub action: Option<RiskAction>,
    /// The verdict's score, 0 (clean) to 1.
    pub score: Option<f64>,
    /// Extra reasons on the verdict.
    pub reasons: Vec<String>,
    /// Latency of this answer, on top of the global one.
    #[serde(with = "humantime_serde")]
    pub latency: Option<Duration>,
    /// Answer with this error instead of a verdict.
    pub error: Option<MockError>,
    /// `Retry-After` of a `rate_limited` error.
    #[serde(with = "humantime_serde")]
    pub retry_after: Option<Duration>,
    /// A provider challenge to attach to the verdict.
    pub challenge: Option<MockChallenge>,
}

/// A header condition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    pub name: String,
    /// Exact value; absent: any value.
    #[serde(default)]
    pub value: Option<String>,
}

/// The error a rule injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MockError {
    /// [`RiskError::Timeout`] at once. For a real timeout, set a `latency` above the budget.
    Timeout,
    Unavailable,
    BadResponse,
    RateLimited,
}

/// A challenge response a rule attaches.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockChallenge {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body text.
    pub body: String,
}

impl Default for MockChallenge {
    fn default() -> Self {
        Self {
            status: 403,
            content_type: "application/json".to_owned(),
            body: r#"{"challenge":"mock"}"#.to_owned(),
        }
    }
}

impl MockConfig {
    /// Every problem with the configuration, empty when it is usable.
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Some(h) = &rule.header {
                if HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                    p.push(format!("{at}.header.name: invalid header name"));
                }
            }
            if let Some(prefix) = &rule.phone_prefix {
                let digits = prefix.strip_prefix('+').unwrap_or("");
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    p.push(format!("{at}.phone_prefix: '+' followed by digits"));
                }
            }
            if rule.score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
                p.push(format!("{at}.score: 0 to 1"));
            }
            if let Some(c) = &rule.challenge {
                if StatusCode::from_u16(c.status).is_err() {
                    p.push(format!("{at}.challenge.status: not an HTTP status"));
                }
            }
        }
        p
    }
}

struct Rule {
    spec: MockRule,
    header: Option<(HeaderName, Option<String>)>,
}

impl Rule {
    fn matches(&self, req: &RiskRequest) -> bool {
        let s = &self.spec;
        let phone = req.phone.as_deref();
        if let Some(prefix) = &s.phone_prefix {
            if !phone.is_some_and(|p| p.starts_with(prefix.as_str())) {
                return false;
            }
        }
        if let Some(code) = s.calling_code {
            if calling_code(phone) != Some(code) {
                return false;
            }
        }
        if let Some(net) = &s.client_ip {
            if !net.contains(&req.client_ip) {
                return false;
            }
        }
        if let Some((name, value)) = &self.header {
            let found = req.headers.get_all(name).iter().any(|v| match value {
                None => true,
                Some(want) => v.as_bytes() == want.as_bytes(),
            });
            if !found {
                return false;
            }
        }
        true
    }
}

fn calling_code(phone: Option<&str>) -> Option<u16> {
    parse_phone(phone?).map(|p| p.calling_code)
}

/// The mock provider.
pub struct MockProvider {
    rules: Vec<Rule>,
    default_action: RiskAction,
    latency: Duration,
}

impl MockProvider {
    pub fn new(cfg: &MockConfig) -> Result<Self, BuildError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(BuildError::Invalid(problems));
        }
        let rules = cfg
            .rules
            .iter()
            .map(|spec| Rule {
                header: spec.header.as_ref().and_then(|h| {
                    let name =
                        HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()).ok()?;
                    Some((name, h.value.clone()))
                }),
                spec: spec.clone(),
            })
            .collect();
        Ok(Self {
            rules,
            default_action: cfg.default_action.unwrap_or(RiskAction::Allow),
            latency: cfg.latency,
        })
    }
}

#[async_trait]
impl RiskProvider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    /// The headers the rules match on: without them a `header` rule never sees its header
    /// through the gateway, which hands providers only the base set.
    fn wanted_headers(&self) -> Vec<HeaderName> {
        let mut names: Vec<HeaderName> = Vec::new();
        for (name, _) in self.rules.iter().filter_map(|r| r.header.as_ref()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    async fn evaluate(&self, req: &RiskRequest) -> Result<RiskVerdict, RiskError> {
        let rule = self.rules.iter().find(|r| r.matches(req));
        let latency = self.latency + rule.and_then(|r| r.spec.latency).unwrap_or_default();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let Some(rule) = rule else {
            return Ok(RiskVerdict::new(self.default_action).with_reason("mock:default"));
        };
        let s = &rule.spec;
        if let Some(error) = s.error {
            return Err(match error {
                MockError::Timeout => RiskError::Timeout,
                MockError::Unavailable => RiskError::Unavailable("mock".to_owned()),
                MockError::BadResponse => RiskError::BadResponse("mock".to_owned()),
                MockError::RateLimited => RiskError::RateLimited {
                    retry_after: s.retry_after,
                },
            });
        }
        let mut verdict = RiskVerdict::new(s.action.unwrap_or(RiskAction::Allow));
        verdict.score = s.score;
        verdict
            .reasons
            .push(format!("mock:{}", s.name.as_deref().unwrap_or("rule")));
        verdict.reasons.extend(s.reasons.iter().cloned());
        verdict.challenge = s.challenge.as_ref().map(|c| ProviderChallenge {
            status: StatusCode::from_u16(c.status).unwrap_or(StatusCode::FORBIDDEN),
            content_type: c.content_type.clone(),
            body: Bytes::from(c.body.clone()),
            headers: HeaderMap::new(),
        });
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::risk::Channel;

    fn provider(toml_rules: &str) -> MockProvider {
        let cfg: MockConfig = serde_json::from_str(toml_rules).unwrap();
        MockProvider::new(&cfg).unwrap()
    }

    fn req(phone: Option<&str>, ip: &str) -> RiskRequest {
        let mut r = RiskRequest::new("t", Channel::Sms, ip.parse().unwrap());
        r.phone = phone.map(str::to_owned);
        r
    }

    #[test]
    fn calling_code_uses_phone_metadata_not_string_prefixes() {
        assert_eq!(calling_code(Some("+12425551234")), Some(1));
        assert_eq!(calling_code(Some("+351912345678")), Some(351));
        assert_eq!(calling_code(Some("+447400123456")), Some(44));
        assert_eq!(calling_code(Some("not a phone")), None);
        assert_eq!(calling_code(None), None);
    }

    #[tokio::test]
    async fn header_rule_and_default() {
        let p = provider(
            r#"{"rules":[{"name":"hdr","header":{"name":"X-Risk","value":"deny"},"action":"deny"}],
                "default_action":"step_up"}"#,
        );
        let mut r = req(None, "10.0.0.1");
        assert_eq!(p.evaluate(&r).await.unwrap().action, RiskAction::StepUp);
        r.headers.insert("x-risk", "deny".parse().unwrap());
        let v = p.evaluate(&r).await.unwrap();
        assert_eq!(v.action, RiskAction::Deny);
        assert_eq!(v.reasons, vec!["mock:hdr"]);
        assert_eq!(p.wanted_headers(), vec![HeaderName::from_static("x-risk")]);
    }

    #[test]
    fn invalid_rules_are_reported() {
        let cfg = MockConfig {
            rules: vec![MockRule {
                phone_prefix: Some("44".into()),
                score: Some(2.0),
                header: Some(HeaderMatch {
                    name: "bad header".into(),
                    value: None,
                }),
                ..MockRule::default()
            }],
            ..MockConfig::default()
        };
        assert_eq!(cfg.validate().len(), 3);
    }
}
