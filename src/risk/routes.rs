//! `[routes]` and `[providers]`: which risk provider judges the sends of each channel,
//! within what budget and with what fail mode, as configured and as built.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::Checker;

/// `[routes]`: how OTP sends are judged, per channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Sends by SMS: MFA challenges to SMS methods, phone registration.
    pub sms: RouteConfig,
    /// Sends by email: sign-up, password reset, email MFA, email-OTP sign-in.
    pub email: RouteConfig,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            sms: RouteConfig::default(),
            email: RouteConfig {
                provider: ProviderChoice::None,
                ..RouteConfig::default()
            },
        }
    }
}

/// One route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Risk provider asked before a send: `none`, `mock`, `human` or `prove` (configured
    /// under `[providers.*]`).
    pub provider: ProviderChoice,
    /// What a provider failure (timeout, error, 5xx, 429, malformed answer, open circuit)
    /// means: `open` (send), `closed` (deny), `step_up` (built-in proof of work).
    pub fail_mode: super::FailMode,
    /// Longest the provider may take before the fail mode applies.
    #[serde(with = "crate::problem::duration")]
    pub budget: Duration,
    /// Monitor mode for this route only.
    pub monitor: bool,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            provider: ProviderChoice::None,
            fail_mode: super::FailMode::StepUp,
            budget: Duration::from_millis(300),
            monitor: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderChoice {
    None,
    Mock,
    Human,
    Prove,
}

/// `[providers]`: adapter settings; only the ones a route names are built.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// HUMAN Security (Risk API, `_px3` / mobile token v3).
    pub human: super::HumanConfig,
    /// Prove (Unify possession + reputation).
    pub prove: super::ProveConfig,
    /// Verdicts from rules, for demos and tests.
    pub mock: super::MockConfig,
    /// Circuit breaker shared by the settings of every provider.
    pub circuit: CircuitConfig,
}

impl fmt::Debug for ProvidersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProvidersConfig { .. }")
    }
}

/// `[providers.circuit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit (the fail mode then applies at once).
    pub failure_threshold: u32,
    /// How long an open circuit stays open before one probe call is let through.
    #[serde(with = "crate::problem::duration")]
    pub open_for: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub sms: Route,
    pub email: Route,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub provider: ProviderChoice,
    pub fail_mode: super::FailMode,
    pub budget: Duration,
    pub monitor: bool,
}

impl RoutesConfig {
    /// Both routes, with the problems of the providers they name (only those are built).
    pub(crate) fn build(
        &self,
        providers: &ProvidersConfig,
        check: &mut Checker,
    ) -> Option<RouteSettings> {
        let mut ok = true;
        if providers.circuit.failure_threshold == 0 {
            check.problem("providers.circuit.failure_threshold", "must be at least 1");
            ok = false;
        }
        let mut named = Vec::new();
        for (name, route) in [("sms", &self.sms), ("email", &self.email)] {
            if route.budget.is_zero() {
                check.problem(&format!("routes.{name}.budget"), "must be longer than zero");
                ok = false;
            }
            if !named.contains(&route.provider) {
                named.push(route.provider);
            }
        }
        for provider in named {
            let (section, problems) = match provider {
                ProviderChoice::Human => ("providers.human", providers.human.validate()),
                ProviderChoice::Prove => ("providers.prove", providers.prove.validate()),
                ProviderChoice::Mock => ("providers.mock", providers.mock.validate()),
                ProviderChoice::None => ("", Vec::new()),
            };
            for p in problems {
                ok = false;
                let (k, m) = p.split_once(": ").unwrap_or(("", &p));
                check.problem(&format!("{section}.{k}"), m.to_owned());
            }
        }
        let route = |r: &RouteConfig| Route {
            provider: r.provider,
            fail_mode: r.fail_mode,
            budget: r.budget,
            monitor: r.monitor,
        };
        ok.then(|| RouteSettings {
            sms: route(&self.sms),
            email: route(&self.email),
        })
    }
}
