//! `[entra]`: how native-auth requests are handled, as configured and as built.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::Checker;

/// `[entra]`: native-auth handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntraConfig {
    /// V2 (experimental) native-auth endpoints: `block` or `pass`.
    pub v2: V2Mode,
    /// Largest form body accepted on a gated endpoint, in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Channel assumed for an MFA method id that was never seen in an introspect answer.
    pub unknown_method_channel: UnknownChannel,
    /// How long learned flows and method channels are kept.
    #[serde(with = "crate::problem::duration")]
    pub flow_ttl: Duration,
    /// How a denied OTP send is answered: `access_denied` (400, suberror
    /// `provider_blocked_by_rep`) or `redirect` (200 `{"challenge_type":"redirect"}`).
    pub deny_style: DenyStyle,
}

impl Default for EntraConfig {
    fn default() -> Self {
        Self {
            v2: V2Mode::Block,
            max_body_bytes: 16 * 1024,
            unknown_method_channel: UnknownChannel::Sms,
            flow_ttl: Duration::from_secs(15 * 60),
            deny_style: DenyStyle::AccessDenied,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum V2Mode {
    Block,
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownChannel {
    Sms,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyStyle {
    AccessDenied,
    Redirect,
}

#[derive(Debug, Clone)]
pub struct EntraSettings {
    pub v2: V2Mode,
    pub max_body_bytes: usize,
    pub unknown_method_channel: UnknownChannel,
    pub flow_ttl: Duration,
    pub deny_style: DenyStyle,
}

impl EntraConfig {
    /// Native-auth handling as configured, or `None` with the problem recorded.
    pub fn build(&self, check: &mut Checker) -> Option<EntraSettings> {
        if self.max_body_bytes == 0 || self.max_body_bytes > 1024 * 1024 {
            check.problem("entra.max_body_bytes", "must be between 1 and 1048576");
            return None;
        }
        Some(EntraSettings {
            v2: self.v2,
            max_body_bytes: self.max_body_bytes,
            unknown_method_channel: self.unknown_method_channel,
            flow_ttl: self.flow_ttl,
            deny_style: self.deny_style,
        })
    }
}
