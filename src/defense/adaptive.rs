//! Adaptive rules: conversion learned from Entra's own answers. People enter their codes;
//! pumping does not. Every code Entra sends is counted per rule and key (destination
//! calling code, number prefix, client network, `client_id`), and so is every code Entra
//! then accepts in the same flow. A key whose codes are not entered, far below the
//! tenant's own rate, is refused until its window forgets or its conversion recovers.
//! ADAPTIVE.md has the design.
//!
//! Counts live in the Store as bucketed counters ([`Store::tally`]), bounded however busy
//! a key is; a flow's send record lets its verification convert every send of the flow
//! (resends too), and replicas sharing a Redis share them.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::entra::learn::Channel;
use crate::problem::Problem;
use crate::store::{Counter, KeyHasher, Store};

/// The key value every send of a rule's channel is also counted under: the baseline.
const ALL: &str = "*";

/// What an adaptive rule counts conversion by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptiveKey {
    /// The destination's calling code: from the number on registration, from the masked
    /// label Entra shows for an MFA method (its visible digits when they do not name a
    /// code).
    Country,
    /// The first `prefix_digits` digits of the E.164 number (registration only).
    Prefix,
    /// The whole number (registration only; kept as a keyed hash): a number sent code
    /// after code that are rarely entered, whichever accounts and addresses ask.
    Phone,
    /// The client's network (`ipv4_prefix`, `ipv6_prefix`).
    IpNetwork,
    /// The application's `client_id`.
    ClientId,
    /// The account (the flow's username, as a keyed hash): codes requested for it again
    /// and again, never used.
    User,
}

/// What a rule does to new sends to a key it finds pumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptiveAction {
    Deny,
    StepUp,
}

impl AdaptiveAction {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::StepUp => "step_up",
        }
    }
}

/// One rule of `[[defense.adaptive]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveRule {
    /// Unique name (letters, digits, `-`, `_`, `.`): part of the store keys and of the
    /// reason label `adaptive:{name}:{action}`.
    pub name: String,
    /// `country`, `prefix`, `ip_network`, `client_id` or `user`.
    pub key: AdaptiveKey,
    /// The channel counted: `sms` or `email`; absent counts both.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// How far back sends and verifications count, such as `24h`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Unverified sends a key must have before the rule judges it: the allowance of a key
    /// that has never converted (a destination new to the tenant).
    pub min_unverified: u64,
    /// The conversion (verified / sent) under which a key is pumped, 0 to 1.
    #[serde(default = "default_below")]
    pub below: f64,
    /// And under this share of the channel's own conversion, 0 to 1 (when the channel
    /// has enough settled sends to tell): an outage that drops every key's conversion
    /// together blocks none of them.
    #[serde(default = "default_relative")]
    pub relative: f64,
    /// `deny` or `step_up` (the default): what a pumped key's new sends get.
    #[serde(default = "default_action")]
    pub action: AdaptiveAction,
    /// Deny, whatever `action` says, once the key has this many unverified sends: a
    /// step-up first (people pass it, their codes are entered and the key recovers), a
    /// deny when a bot pays for proofs and still enters no code.
    #[serde(default)]
    pub deny_after: Option<u64>,
    /// A key with this many verifications in the window is never denied by the rule, only
    /// given `action`: people pass a step-up, their codes are entered and the key
    /// recovers (a carrier outage in a home country must not refuse it for a day).
    #[serde(default = "default_trusted")]
    pub trusted: u64,
    /// Keys no code was ever verified for in the window (a destination new to the
    /// tenant) also share one allowance, judged together with `action` (never denied by
    /// the pool alone): a pumper spreading over many new countries spends the one
    /// allowance, not one each. Only sends that name their number (registrations) are
    /// pooled: an MFA send goes to a method Entra verified when it was added.
    #[serde(default)]
    pub pooled: bool,
    /// Report hits (reason `would:adaptive:…`) without enforcing them.
    #[serde(default)]
    pub monitor: bool,
    /// For `prefix`: how many leading digits of the E.164 number, country code included.
    #[serde(default)]
    pub prefix_digits: Option<usize>,
    /// For `ip_network`: the IPv4 network size counted together.
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u8,
    /// For `ip_network`: the IPv6 network size counted together.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_relative() -> f64 {
    0.5
}
fn default_below() -> f64 {
    0.4
}
fn default_action() -> AdaptiveAction {
    AdaptiveAction::StepUp
}
fn default_trusted() -> u64 {
    20
}
fn default_ipv4_prefix() -> u8 {
    24
}
fn default_ipv6_prefix() -> u8 {
    64
}

/// `[defense.conversion]`: how sends and verifications are matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversionConfig {
    /// A send not verified within this long counts as unconverted for good.
    #[serde(with = "humantime_serde")]
    pub verify_within: Duration,
    /// Sends younger than this are not judged yet: their codes may still be on the way or
    /// being typed.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Settled sends the channel needs before a rule's `relative` test applies.
    pub baseline_min: u64,
    /// How long a fresh deployment only reports adaptive hits (`would:adaptive:…`) before
    /// it enforces them, counted from the first send counted and kept in the store, so
    /// replicas sharing it warm up once. `0s` enforces from the start.
    #[serde(with = "humantime_serde")]
    pub warm_up: Duration,
}

impl Default for ConversionConfig {
    fn default() -> Self {
        Self {
            verify_within: Duration::from_secs(600),
            grace: Duration::from_secs(180),
            baseline_min: 20,
            warm_up: Duration::ZERO,
        }
    }
}

/// The rules used when none are configured, all on SMS and over 24 hours. A key is
/// judged only once it has sent codes nobody entered, at a conversion under `below` and
/// under `relative` times the tenant's own. Every code counts, a resend too.
///
/// * `sms-country`: a calling code, under 55% converted and 65% of the tenant's rate;
///   denied from 2 unverified sends (a bot pays for a proof of work with less than one
///   pumped SMS earns it), stepped up only once the country has 20 verified codes in the
///   day (people pass the step-up and bring it back). Pooled: registrations to countries
///   nobody verified a code for today share one allowance, codes in flight included, so a
///   pumper spreading over twenty new countries spends two codes, not forty.
/// * `sms-prefix`: a 7-digit range (`+44 7400 1…`, `+371 200…`), same thresholds; step-up
///   from 2, deny from 3: pumping walks the ranges it shares revenue on, also inside a
///   country with real users.
/// * `sms-network`: a /24 or /64, under 40% and half the tenant's rate; step-up from 4,
///   deny from 6: a hosting range that solves every proof. Carrier-grade NAT, whose users
///   enter their codes, stays far above; a home range shared with a residential proxy
///   gets room for a few unlucky codes.
/// * `sms-user`: an account, under 40% and half; step-up from 3 unverified sends: its MFA
///   codes requested again and again and never used (bombing its owner), capped over a
///   day.
pub(crate) fn default_rules() -> Vec<AdaptiveRule> {
    let day = Duration::from_secs(24 * 3600);
    let rule = |name: &str, key, (below, relative), (min_unverified, deny_after)| AdaptiveRule {
        name: name.to_owned(),
        key,
        channel: Some(Channel::Sms),
        window: day,
        min_unverified,
        below,
        relative,
        action: AdaptiveAction::StepUp,
        deny_after,
        trusted: default_trusted(),
        pooled: false,
        monitor: false,
        prefix_digits: None,
        ipv4_prefix: default_ipv4_prefix(),
        ipv6_prefix: default_ipv6_prefix(),
    };
    // Destinations: a pumper's conversion is what it chooses to enter; people's is near
    // the tenant's own.
    let destination = (0.55, 0.65);
    let client = (default_below(), default_relative());
    vec![
        AdaptiveRule {
            pooled: true,
            ..rule(
                "sms-country",
                AdaptiveKey::Country,
                destination,
                (2, Some(2)),
            )
        },
        AdaptiveRule {
            prefix_digits: Some(7),
            ..rule("sms-prefix", AdaptiveKey::Prefix, destination, (2, Some(3)))
        },
        rule("sms-network", AdaptiveKey::IpNetwork, client, (4, Some(6))),
        rule("sms-user", AdaptiveKey::User, client, (3, None)),
    ]
}

/// Every problem of `rules`, keyed `[i].field`.
fn validate(rules: &[AdaptiveRule]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |i: usize, field: &str, message: &str| {
        problems.push(Problem {
            key: format!("[{i}].{field}"),
            message: message.to_owned(),
        })
    };
    let mut names: Vec<&str> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(message) = super::name_problem(&rule.name, &mut names) {
            problem(i, "name", message);
        }
        if rule.window.is_zero() {
            problem(i, "window", "must be longer than zero");
        }
        if rule.min_unverified == 0 {
            problem(i, "min_unverified", "must be at least 1");
        }
        if rule.deny_after.is_some_and(|n| n < rule.min_unverified) {
            problem(i, "deny_after", "must be at least min_unverified");
        }
        if !(0.0..=1.0).contains(&rule.below) {
            problem(i, "below", "a conversion from 0 to 1");
        }
        if !(0.0..=1.0).contains(&rule.relative) {
            problem(i, "relative", "a share from 0 to 1");
        }
        match (rule.key, rule.prefix_digits) {
            (AdaptiveKey::Prefix, None) => {
                problem(i, "prefix_digits", "required for key = \"prefix\"")
            }
            (AdaptiveKey::Prefix, Some(n)) if !(2..=super::MAX_E164_DIGITS).contains(&n) => {
                problem(i, "prefix_digits", "must be 2 to 15")
            }
            (AdaptiveKey::Prefix, Some(_)) | (_, None) => {}
            (_, Some(_)) => problem(i, "prefix_digits", "only for key = \"prefix\""),
        }
        for (field, message) in super::network_problems(rule.ipv4_prefix, rule.ipv6_prefix) {
            problem(i, field, message);
        }
    }
    problems
}

/// What is known of one send, for its adaptive keys. `Debug` hides the number.
#[derive(Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub channel: Channel,
    pub client_ip: IpAddr,
    /// The destination in E.164, when the request names it (registration).
    pub e164: Option<&'a str>,
    /// Its calling code, when the number parsed.
    pub calling_code: Option<u16>,
    /// The masked label Entra showed for the MFA method, when learned.
    pub label: Option<&'a str>,
    pub client_id: Option<&'a str>,
    /// Keyed hash of the flow's username, when known.
    pub user: Option<&'a str>,
}

impl std::fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("channel", &self.channel)
            .field("client_ip", &self.client_ip)
            .field("e164", &self.e164.map(|_| "<redacted>"))
            .field("calling_code", &self.calling_code)
            .field("label", &self.label)
            .field("client_id", &self.client_id)
            .field("user", &self.user.map(|_| "<redacted>"))
            .finish()
    }
}

/// The keys one send is counted and judged under: for each rule that applies, the store
/// key of its value and of its baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    entries: Vec<Entry>,
    /// The ISO region of the destination, when the send names its number: the label of
    /// the verification metric.
    region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    rule: usize,
    /// The store key of the send's value, and of the rule's baseline.
    key: String,
    all: Arc<str>,
    /// The send counts in the rule's pool: the value had no verification when judged.
    pooled: bool,
    /// The send names its number (a registration): nobody has proven it yet. Only such
    /// sends are pooled; an MFA send goes to a method Entra verified when it was added.
    unproven: bool,
    /// The rule steps this send up: sent, it passed the step-up, and is also counted
    /// under the key's stepped-up sends.
    stepped: bool,
}

impl Keys {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Note the destination's ISO region, for the verification metric.
    pub(crate) fn set_region(&mut self, region: Option<&str>) {
        self.region = region.map(str::to_owned);
    }
}

/// A rule that found the send's key pumped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdaptiveHit {
    pub rule: String,
    /// The store key found pumped (the send's value under the rule, or the rule's pool),
    /// for the active-blocks gauge: only when the rule is enforced.
    pub key: Option<String>,
    pub action: AdaptiveAction,
    pub monitor: bool,
    /// Settled sends and verifications of the key in the window.
    pub settled: u64,
    pub verified: u64,
}

impl AdaptiveHit {
    /// Why: `adaptive:{rule}:{action}`.
    pub(crate) fn into_reason(self) -> crate::policy::Reason {
        crate::policy::Reason::Adaptive {
            rule: self.rule,
            action: self.action.as_str(),
        }
    }
}

/// The outcome of [`Adaptive::check`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AdaptiveOutcome {
    pub hits: Vec<AdaptiveHit>,
    /// Store calls that failed: their rules could not judge.
    pub errors: usize,
}

/// Validated adaptive rules and the conversion settings.
#[derive(Debug, Clone)]
pub struct Adaptive {
    rules: Vec<AdaptiveRule>,
    /// The start of each rule's keys, `conv:{rule}:`.
    prefixes: Vec<String>,
    /// The store key of each rule's pool.
    pools: Vec<String>,
    /// The store keys of each rule's baselines, SMS and email: one per channel and window,
    /// shared by the rules.
    baselines: Vec<[Arc<str>; 2]>,
    conversion: ConversionConfig,
    /// Set once this process saw the warm-up over.
    warm: Arc<AtomicBool>,
    /// Set once this process made sure the warm-up's start is in the store.
    marked: Arc<AtomicBool>,
}

impl Adaptive {
    /// Validate `rules`; every problem at once, keyed `[i].field`.
    pub(crate) fn new(
        rules: Vec<AdaptiveRule>,
        conversion: ConversionConfig,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = validate(&rules);
        if conversion.verify_within.is_zero() {
            problems.push(Problem {
                key: "conversion.verify_within".to_owned(),
                message: "must be longer than zero".to_owned(),
            });
        }
        if problems.is_empty() {
            Ok(Self {
                prefixes: rules.iter().map(|r| format!("conv:{}:", r.name)).collect(),
                pools: rules.iter().map(pool_key).collect(),
                baselines: rules
                    .iter()
                    .map(|r| [Channel::Sms, Channel::Email].map(|c| baseline_key(r, c)))
                    .collect(),
                rules,
                conversion,
                warm: Arc::default(),
                marked: Arc::default(),
            })
        } else {
            Err(problems)
        }
    }

    /// How long after its send a verification still counts.
    pub(crate) fn verify_within(&self) -> Duration {
        self.conversion.verify_within
    }

    /// The store keys `s` is counted under.
    pub(crate) fn keys(&self, hasher: &KeyHasher, s: &Subject<'_>) -> Keys {
        let mut entries = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.channel.is_some_and(|c| c != s.channel) {
                continue;
            }
            let Some(value) = value_of(rule, s) else {
                continue;
            };
            let part = store_part(rule, s, value, hasher);
            let mut key = String::with_capacity(self.prefixes[i].len() + part.len());
            key.push_str(&self.prefixes[i]);
            key.push_str(&part);
            entries.push(Entry {
                rule: i,
                key,
                all: self.baselines[i][usize::from(s.channel == Channel::Email)].clone(),
                pooled: false,
                unproven: s.e164.is_some(),
                stepped: false,
            });
        }
        Keys {
            entries,
            region: None,
        }
    }

    /// Judge every key of `keys`: a hit for each rule that finds its key (or, for a key
    /// never verified, the rule's pool) pumped. Marks the keys that belong to their pool.
    /// One store call, whatever the number of rules.
    pub(crate) async fn check(&self, store: &dyn Store, keys: &mut Keys) -> AdaptiveOutcome {
        if keys.entries.is_empty() {
            return AdaptiveOutcome::default();
        }
        let grace = self.conversion.grace;
        // Three counters for a key, its baseline and its pool: room for them all.
        let mut reads = Reads::with_capacity(9 * keys.entries.len());
        let slots: Vec<_> = keys
            .entries
            .iter()
            .map(|e| {
                let rule = &self.rules[e.rule];
                let own = reads.push(&e.key, SENT, rule.window, grace);
                let all = reads.push(&e.all, SENT, rule.window, grace);
                let pool = (rule.pooled && e.unproven)
                    .then(|| reads.push(&self.pools[e.rule], SENT, rule.window, grace));
                (own, all, pool)
            })
            .collect();
        let values = match store.tally(&[], reads.counters()).await {
            Ok(values) => values,
            Err(error) => {
                tracing::debug!(%error, "adaptive rules not judged");
                return AdaptiveOutcome {
                    hits: Vec::new(),
                    errors: keys.entries.len(),
                };
            }
        };
        // Each entry's finding: its hit when no more is needed, or a pumped key whose
        // sends that passed its step-up must be read before it is denied or stepped up.
        let mut found: Vec<Option<AdaptiveHit>> = Vec::with_capacity(keys.entries.len());
        let mut in_pool = vec![false; keys.entries.len()];
        let mut pending = Vec::new();
        let mut ups = Reads::default();
        for (i, (entry, (own, all, pool))) in keys.entries.iter().zip(slots).enumerate() {
            let rule = &self.rules[entry.rule];
            let mut own = reads.figures(&values, own);
            let all = reads.figures(&values, all);
            let baseline = (all.settled >= self.conversion.baseline_min)
                .then(|| all.verified as f64 / all.settled as f64);
            // A new key of a pooled rule (nobody entered any of its codes) has only its
            // allowance, codes in flight included: a burst to a new destination inside
            // the grace spends it. Not before the deployment knows its own traffic (the
            // baseline): at a fresh start every destination is new, and its first codes
            // are still being typed.
            if rule.pooled && own.entered == 0 && baseline.is_some() {
                own.settled = own.sent;
            }
            let hit = |figures: Figures, action, key: &str| AdaptiveHit {
                rule: rule.name.clone(),
                key: (!rule.monitor).then(|| key.to_owned()),
                action,
                monitor: rule.monitor,
                settled: figures.settled,
                verified: figures.verified,
            };
            if pumped(rule, own.settled, own.verified, baseline) {
                // Denied: a registration to a key with too many unverified sends (unless
                // it has a record of codes entered), or any send to a key whose sends that
                // passed its step-up went unverified too (a bot pays for proofs; people
                // who pass one enter their code). An MFA send goes to a method its owner
                // verified: only the second. Otherwise stepped up: people pass it, and
                // their codes bring the key back, which a denied key would never see.
                let stepped = hit(own, stepped_action(rule, entry.unproven), &entry.key);
                match rule.deny_after {
                    Some(n)
                        if entry.unproven
                            && own.settled - own.verified >= n
                            && own.verified < rule.trusted =>
                    {
                        found.push(Some(hit(own, AdaptiveAction::Deny, &entry.key)));
                    }
                    Some(n) => {
                        // Read only for a key found pumped: a second call, on the rare
                        // send.
                        let at = ups.push(&entry.key, UP, rule.window, grace);
                        pending.push((i, at, n, stepped));
                        found.push(None);
                    }
                    None => found.push(Some(stepped)),
                }
                continue;
            }
            found.push(None);
            // Only a key with no verification in the window is in the pool, and the pool
            // alone never denies.
            let Some(at) = pool.filter(|_| own.entered == 0) else {
                continue;
            };
            in_pool[i] = true;
            let pool = reads.figures(&values, at);
            if pumped(rule, pool.settled, pool.verified, baseline) {
                found[i] = Some(hit(pool, rule.action, &self.pools[entry.rule]));
            }
        }
        let mut errors = 0;
        if !pending.is_empty() {
            let up_values = match store.tally(&[], ups.counters()).await {
                Ok(values) => Some(values),
                Err(error) => {
                    tracing::debug!(%error, "adaptive: step-up outcomes not read");
                    errors = pending.len();
                    None
                }
            };
            for (i, at, deny_after, mut hit) in pending {
                let rule = &self.rules[keys.entries[i].rule];
                let up = up_values.as_deref().map(|v| ups.figures(v, at));
                if up.is_some_and(|up| pumped_after_step_up(rule, up, deny_after)) {
                    hit.action = AdaptiveAction::Deny;
                }
                found[i] = Some(hit);
            }
        }
        for ((entry, hit), pooled) in keys.entries.iter_mut().zip(&found).zip(in_pool) {
            let rule = &self.rules[entry.rule];
            entry.pooled = pooled;
            entry.stepped = hit
                .as_ref()
                .is_some_and(|h| h.action == AdaptiveAction::StepUp && !rule.monitor && !pooled);
        }
        let mut outcome = AdaptiveOutcome {
            hits: found.into_iter().flatten().collect(),
            errors,
        };
        // An operator lifted a key (admin API): its hits are dropped until the lift
        // expires. Asked only for keys found pumped.
        if outcome.hits.iter().any(|h| h.key.is_some()) {
            let mut kept = Vec::with_capacity(outcome.hits.len());
            for hit in std::mem::take(&mut outcome.hits) {
                let lifted = match &hit.key {
                    Some(key) => matches!(store.get(&lift_key(&hit.rule, key)).await, Ok(Some(_))),
                    None => false,
                };
                if !lifted {
                    kept.push(hit);
                }
            }
            outcome.hits = kept;
        }
        // Asked only when something would be refused: the warm-up costs no store call
        // on a send no rule finds pumped.
        if !outcome.hits.is_empty() && self.warming(store).await {
            for hit in &mut outcome.hits {
                hit.monitor = true;
            }
        }
        outcome
    }

    /// The window of the rule named `rule`, when there is one.
    pub(crate) fn window_of(&self, rule: &str) -> Option<Duration> {
        self.rules.iter().find(|r| r.name == rule).map(|r| r.window)
    }

    /// Settled sends and verifications of the store key `key` of rule `rule` in its
    /// window, as the rule judges them: for the admin API's listing.
    pub(crate) async fn figures_of(
        &self,
        store: &dyn Store,
        rule: &str,
        key: &str,
    ) -> Option<(u64, u64)> {
        let rule = self.rules.iter().find(|r| r.name == rule)?;
        let mut reads = Reads::default();
        let at = reads.push(key, SENT, rule.window, self.conversion.grace);
        let values = store.tally(&[], reads.counters()).await.ok()?;
        let f = reads.figures(&values, at);
        Some((f.settled, f.verified))
    }

    /// Whether the deployment is still in its warm-up, in which adaptive hits are only
    /// reported: from the first send any replica counted (remembered in the store) until
    /// `warm_up` later. Once over, this process asks no more.
    async fn warming(&self, store: &dyn Store) -> bool {
        let warm_up = self.conversion.warm_up;
        if warm_up.is_zero() || self.warm.load(Ordering::Relaxed) {
            return false;
        }
        // The store cannot say: judge as warm for this request, ask again next time.
        let Some(started) = self.started(store).await else {
            return false;
        };
        let warming = unix_now().saturating_sub(started) < warm_up.as_secs();
        if !warming {
            self.warm.store(true, Ordering::Relaxed);
        }
        warming
    }

    /// When the warm-up started (Unix seconds): the time kept in the store, or now, kept
    /// there, when none is.
    async fn started(&self, store: &dyn Store) -> Option<u64> {
        match store.get(EPOCH).await {
            Ok(Some(bytes)) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
            Ok(None) => {
                // Kept for good (ten years): a replica started later, or restarted, does
                // not start the warm-up again while the store remembers it.
                let now = unix_now();
                let keep = Duration::from_secs(3650 * 86400);
                store
                    .put(EPOCH, now.to_string().as_bytes(), keep)
                    .await
                    .ok()?;
                Some(now)
            }
            Err(_) => None,
        }
    }

    /// Count a send Entra made in `flow` under `keys`: every code sent is one send of each
    /// key, a resend too (it costs as much), and the flow's send record notes under which
    /// counters, so that its verification converts every send of the flow. One append to
    /// the record and one tally, together; nothing read.
    pub(crate) async fn record_send(&self, store: &dyn Store, flow: &str, keys: &Keys) {
        if keys.is_empty() {
            return;
        }
        // The warm-up starts with the first send counted: one store call per process.
        if !self.conversion.warm_up.is_zero() && !self.marked.swap(true, Ordering::Relaxed) {
            self.started(store).await;
        }
        let record = flow_key(flow);
        let mut text = String::with_capacity(96 * (keys.entries.len() + 1));
        if let Some(region) = &keys.region {
            let _ = writeln!(text, "region {region}");
        }
        let mut adds = Reads::with_capacity(8 * keys.entries.len());
        let grace = self.conversion.grace;
        for e in &keys.entries {
            let rule = &self.rules[e.rule];
            // A key's series side by side: its own, then those of sends that passed its
            // step-up.
            let bases = [
                Some((e.key.as_str(), SENT)),
                e.stepped.then_some((e.key.as_str(), UP)),
                Some((&*e.all, SENT)),
                e.pooled.then_some((self.pools[e.rule].as_str(), SENT)),
            ];
            for (base, first) in bases.into_iter().flatten() {
                // Once per send, however many rules share the counter (the baseline).
                if adds.push_sends(base, first, rule.window, grace) {
                    record_line(&mut text, e.rule, first, base);
                }
            }
        }
        // Appended, never read here: a send costs no lookup of its flow's record.
        // Room for the lines of as many sends as a verification converts.
        let max_len = text.len().saturating_mul(MAX_FLOW_SENDS as usize);
        let put = store.append(
            &record,
            text.as_bytes(),
            self.conversion.verify_within,
            max_len,
        );
        let counters = adds.counters();
        let (put, added) = futures_util::join!(put, store.tally(counters, &[]));
        match put.and_then(|put| added.map(|_| put)) {
            Ok(true) => {}
            // Past its bound, a flow's further sends still count, but its verification
            // converts only those recorded, as many as it would convert anyway.
            Ok(false) => tracing::debug!("adaptive: flow record full"),
            Err(error) => tracing::debug!(%error, "adaptive: send not fully counted"),
        }
    }

    /// Count a verification Entra accepted in `flow`, once, when the flow's sends are
    /// recent enough to have a record: every send of the flow is converted. The ISO
    /// region of the flow's registered number, when it had one.
    pub(crate) async fn record_verified(&self, store: &dyn Store, flow: &str) -> Option<String> {
        let record = flow_key(flow);
        let Ok(Some(text)) = store.get(&record).await else {
            return None;
        };
        // The record goes with the first verification: a second one in the flow counts
        // nothing more.
        match store
            .take_once(&format!("{record}:done"), self.conversion.verify_within)
            .await
        {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => {
                tracing::debug!(%error, "adaptive: verification not counted");
                return None;
            }
        }
        let held = FlowRecord::parse(&String::from_utf8_lossy(&text));
        let mut rounds: Vec<Reads> = Vec::new();
        for (i, first, base, sends) in &held.counts {
            let Some(rule) = self.rules.get(*i) else {
                continue;
            };
            // A counter adds one per call: the n-th round adds the n-th send of each.
            for n in 0..(*sends).min(MAX_FLOW_SENDS) as usize {
                if rounds.len() <= n {
                    rounds.push(Reads::default());
                }
                rounds[n].push_verified(base, *first, rule.window);
            }
        }
        let calls = rounds
            .iter()
            .map(|r| async move { store.tally(r.counters(), &[]).await });
        for result in futures_util::future::join_all(calls).await {
            if let Err(error) = result {
                tracing::debug!(%error, "adaptive: verification not fully counted");
            }
        }
        held.region
    }
}

/// The sends of one flow a verification converts, at most: more than any per-flow
/// velocity rule lets through.
const MAX_FLOW_SENDS: u64 = 16;

/// A flow's send record, appended to by each send: a line `{rule} {series} {key}` for each
/// counter key it added to (the rule for its window, the key's first series counted: its
/// own or those of sends that passed its step-up), and `region {XX}` when the send named
/// a number. A verification converts each key as many times as the record names it.
#[derive(Debug, Default, PartialEq)]
struct FlowRecord {
    /// Rule, first series, key, sends.
    counts: Vec<(usize, u8, String, u64)>,
    region: Option<String>,
}

impl FlowRecord {
    fn parse(text: &str) -> Self {
        let mut record = Self::default();
        for line in text.lines() {
            if let Some(region) = line.strip_prefix("region ") {
                record.region.get_or_insert_with(|| region.to_owned());
                continue;
            }
            let mut parts = line.split(' ');
            let (Some(rule), Some(first), Some(base), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(rule), Ok(first)) = (rule.parse(), first.parse::<u8>()) else {
                continue;
            };
            if [SENT, UP].contains(&first) {
                record.add(rule, first, base);
            }
        }
        record
    }

    fn add(&mut self, rule: usize, first: u8, base: &str) {
        match self
            .counts
            .iter_mut()
            .find(|(_, f, b, _)| *f == first && b == base)
        {
            Some((_, _, _, sends)) => *sends = sends.saturating_add(1),
            None => self.counts.push((rule, first, base.to_owned(), 1)),
        }
    }
}

/// Where the warm-up's start is kept.
const EPOCH: &str = "conv:epoch";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Buckets of a rule's window: an hour each in a day. A key's counts are exact to one
/// bucket at the window's far edge and take at most this many numbers in the store.
const BUCKETS: u32 = 24;
/// Buckets of the grace.
const GRACE_BUCKETS: u32 = 6;

/// What the counters of one key say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Figures {
    /// Sends older than the grace.
    settled: u64,
    /// Verifications, at most `settled`: a code verified while its send is in the grace
    /// counts once the send does.
    verified: u64,
    /// Verifications, however recent their sends.
    entered: u64,
    /// Sends, however recent.
    sent: u64,
}

/// The series of a key's counters, one store entry (see [`Counter`]): its sends in the
/// window, its sends within the grace, its verifications; and the same three for its sends
/// that passed its step-up.
const SENT: u8 = 0;
const RECENT: u8 = 1;
const VERIFIED: u8 = 2;
const UP: u8 = 3;

/// The counters of a tally, built one key at a time; the series of one key side by side,
/// so that the store finds the key once.
#[derive(Default)]
struct Reads<'a> {
    counters: Vec<Counter<'a>>,
}

impl<'a> Reads<'a> {
    fn with_capacity(counters: usize) -> Self {
        Self {
            counters: Vec::with_capacity(counters),
        }
    }

    fn add(&mut self, key: &'a str, series: u8, window: Duration, buckets: u32) -> usize {
        if let Some(i) = self
            .counters
            .iter()
            .position(|c| c.series == series && c.key == key)
        {
            return i;
        }
        self.counters.push(Counter {
            key,
            series,
            window,
            buckets,
        });
        self.counters.len() - 1
    }

    /// The three counters of `key` from series `first` (sends, sends in grace,
    /// verifications); the index of the first.
    fn push(&mut self, key: &'a str, first: u8, window: Duration, grace: Duration) -> usize {
        let at = self.add(key, first + SENT, window, BUCKETS);
        self.add(key, first + RECENT, grace, GRACE_BUCKETS);
        self.add(key, first + VERIFIED, window, BUCKETS);
        at
    }

    /// The counters a send adds to; false when they were already pushed.
    fn push_sends(&mut self, key: &'a str, first: u8, window: Duration, grace: Duration) -> bool {
        let before = self.counters.len();
        self.add(key, first + SENT, window, BUCKETS);
        self.add(key, first + RECENT, grace, GRACE_BUCKETS);
        self.counters.len() > before
    }

    /// The counter a verification adds to.
    fn push_verified(&mut self, key: &'a str, first: u8, window: Duration) {
        self.add(key, first + VERIFIED, window, BUCKETS);
    }

    fn counters(&self) -> &[Counter<'a>] {
        &self.counters
    }

    /// The figures of the key [`Reads::push`] placed at `at`.
    fn figures(&self, values: &[u64], at: usize) -> Figures {
        let value = |i: usize| values.get(i).copied().unwrap_or(0);
        let settled = value(at).saturating_sub(value(at + 1));
        let entered = value(at + 2);
        Figures {
            settled,
            verified: entered.min(settled),
            entered,
            sent: value(at),
        }
    }
}

/// One line of a flow's send record, `{rule} {first series} {store key}`: what
/// [`FlowRecord::parse`] reads. Written without the formatting machinery: every forwarded
/// send writes a few.
fn record_line(text: &mut String, rule: usize, first: u8, base: &str) {
    push_number(text, rule);
    text.push(' ');
    push_number(text, usize::from(first));
    text.push(' ');
    text.push_str(base);
    text.push('\n');
}

fn push_number(text: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        text.push(char::from(d));
    }
}

/// What a pumped key's send gets when nothing denies it: the rule's action for a
/// registration, a step-up for an MFA send.
fn stepped_action(rule: &AdaptiveRule, unproven: bool) -> AdaptiveAction {
    if unproven {
        rule.action
    } else {
        AdaptiveAction::StepUp
    }
}

/// Whether the sends that passed a key's step-up, `up`, show a bot paying for proofs:
/// `deny_after` of them unverified, and converted under the rule's `below`.
fn pumped_after_step_up(rule: &AdaptiveRule, up: Figures, deny_after: u64) -> bool {
    let unverified = up.settled.saturating_sub(up.verified);
    unverified >= deny_after.max(1) && (up.verified as f64) < rule.below * up.settled as f64
}

fn baseline_key(rule: &AdaptiveRule, channel: Channel) -> Arc<str> {
    format!("conv:{ALL}:{}:{}", channel.as_str(), rule.window.as_secs()).into()
}

/// Where an operator's lift of `key` (a store key of rule `rule`) is kept.
pub(crate) fn lift_key(rule: &str, key: &str) -> String {
    format!("conv:lift:{rule}:{key}")
}

/// Where enforced hits are noted for the admin API's listing, per hour.
pub(crate) fn active_key(hour: u64) -> String {
    format!("conv:active:{hour}")
}

fn pool_key(rule: &AdaptiveRule) -> String {
    format!("conv:{}:~pool", rule.name)
}

/// A flow id is a random number the gateway drew, not anything of the user's: it needs no
/// hash.
fn flow_key(flow: &str) -> String {
    format!("conv:flow:{flow}")
}

/// How `value` appears in a key of `rule`: as it is when it names no person and is safe
/// in a key (a calling code; a number range of at least a thousand numbers; an IPv4 /24 or
/// IPv6 /48 network; an app's id; the user's key, itself a keyed hash), so that an
/// operator reading the store sees what is blocked and the gated path spends no hash on
/// it; keyed-hashed otherwise (a phone number, a range so short it names a few people, a
/// network cut finer).
fn store_part(rule: &AdaptiveRule, s: &Subject<'_>, value: String, hasher: &KeyHasher) -> String {
    let plain = match rule.key {
        AdaptiveKey::Country | AdaptiveKey::ClientId | AdaptiveKey::User => true,
        // `value` is `+` and the range's digits; the number has `len - 1` digits.
        AdaptiveKey::Prefix => s
            .e164
            .is_some_and(|n| n.len().saturating_sub(value.len()) >= RANGE_DIGITS),
        // Cut as far as IP anonymization cuts (an IPv4 /24, an IPv6 /48): hundreds of
        // hosts, no one's address. A longer prefix (an IPv6 /64 is one household) is
        // hashed.
        AdaptiveKey::IpNetwork => match s.client_ip {
            IpAddr::V4(_) => rule.ipv4_prefix <= 24,
            IpAddr::V6(_) => rule.ipv6_prefix <= 48,
        },
        AdaptiveKey::Phone => false,
    };
    let safe = value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-_.:/".contains(&b));
    if plain && safe {
        value
    } else {
        hasher.hash(&value)
    }
}

/// The digits a range kept as it is leaves open: a thousand numbers at least.
const RANGE_DIGITS: usize = 3;

/// Whether a key with `settled` sends, `verified` of them, is pumped by `rule`'s measure;
/// `baseline` is the channel's conversion when it has enough sends to tell.
fn pumped(rule: &AdaptiveRule, settled: u64, verified: u64, baseline: Option<f64>) -> bool {
    if settled.saturating_sub(verified) < rule.min_unverified {
        return false;
    }
    let conversion = verified as f64 / settled as f64;
    conversion < rule.below && baseline.is_none_or(|b| conversion < rule.relative * b)
}

/// The value `rule` counts `s` under, `None` when the send has none.
fn value_of(rule: &AdaptiveRule, s: &Subject<'_>) -> Option<String> {
    match rule.key {
        AdaptiveKey::Country => match (s.calling_code, s.label) {
            (Some(code), _) => Some(format!("+{code}")),
            (None, Some(label)) => label_code(label),
            (None, None) => None,
        },
        AdaptiveKey::Prefix => {
            let digits = rule.prefix_digits?;
            let e164 = s.e164?;
            // `+` and the digits.
            e164.get(..=digits).map(str::to_owned)
        }
        AdaptiveKey::Phone => s.e164.map(str::to_owned),
        AdaptiveKey::IpNetwork => {
            let prefix = match s.client_ip {
                IpAddr::V4(_) => rule.ipv4_prefix,
                IpAddr::V6(_) => rule.ipv6_prefix,
            };
            Some(IpNet::new(s.client_ip, prefix).ok()?.trunc().to_string())
        }
        AdaptiveKey::ClientId => s.client_id.filter(|c| !c.is_empty()).map(str::to_owned),
        AdaptiveKey::User => s.user.map(str::to_owned),
    }
}

/// The calling code a masked label such as `+1********6` or `+44*******56` shows: the
/// shortest run of its leading digits that is a code in use (codes are prefix-free), else
/// those digits as shown (`+37…` names a zone, not a country), marked as such.
fn label_code(label: &str) -> Option<String> {
    let rest = label.trim().strip_prefix('+')?;
    let digits: String = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .take(3)
        .collect();
    if digits.is_empty() {
        return None;
    }
    for n in 1..=digits.len() {
        if let Ok(code) = digits[..n].parse::<u16>() {
            if super::numbering::is_calling_code(code) {
                return Some(format!("+{code}"));
            }
        }
    }
    Some(format!("label+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::net::Ipv4Addr;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn adaptive(rules: Vec<AdaptiveRule>) -> Adaptive {
        Adaptive::new(rules, ConversionConfig::default()).unwrap()
    }

    fn country_rule() -> AdaptiveRule {
        AdaptiveRule {
            min_unverified: 3,
            action: AdaptiveAction::Deny,
            deny_after: None,
            pooled: false,
            ..default_rules().remove(0)
        }
    }

    /// An MFA send: the destination only as the masked label Entra shows.
    fn mfa(label: &'static str, last_octet: u8) -> Subject<'static> {
        Subject {
            e164: None,
            calling_code: None,
            label: Some(label),
            ..sms("+10000000000", 1, last_octet)
        }
    }

    /// Judge a send; when `passes` (the client solves any step-up), count it as sent unless
    /// it was denied. The action the rules took, if any.
    async fn judged(
        a: &Adaptive,
        store: &MemoryStore,
        flow: &str,
        s: &Subject<'_>,
        passes: bool,
    ) -> Option<AdaptiveAction> {
        let hasher = KeyHasher::unkeyed();
        let mut keys = a.keys(&hasher, s);
        let hits = a.check(store, &mut keys).await.hits;
        let action = if hits.iter().any(|h| h.action == AdaptiveAction::Deny) {
            Some(AdaptiveAction::Deny)
        } else {
            hits.first().map(|h| h.action)
        };
        if action.is_none() || (passes && action == Some(AdaptiveAction::StepUp)) {
            a.record_send(store, flow, &keys).await;
        }
        action
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_destination_spends_its_allowance_with_codes_in_flight() {
        // The shipped country rule: pooled, denied from 2 unverified registrations.
        let a = adaptive(vec![default_rules().remove(0)]);
        let store = MemoryStore::new(10_000);
        // A fresh deployment: every destination is new, its first codes in flight are
        // not held against it.
        let home = sms("+447400123456", 44, 9);
        for i in 0..3 {
            let flow = format!("first{i}");
            assert_eq!(judged(&a, &store, &flow, &home, false).await, None, "{i}");
            a.record_verified(&store, &flow).await;
        }
        let fresh = sms("+33612345678", 33, 9);
        for i in 0..3 {
            let flow = format!("fr{i}");
            assert_eq!(judged(&a, &store, &flow, &fresh, false).await, None, "{i}");
        }
        // Their codes are entered a little later.
        for i in 0..3 {
            a.record_verified(&store, &format!("fr{i}")).await;
        }
        for i in 0..20 {
            let flow = format!("h{i}");
            assert_eq!(judged(&a, &store, &flow, &home, false).await, None, "{i}");
            a.record_verified(&store, &flow).await;
        }
        tokio::time::advance(4 * MINUTE).await;
        // Now it knows its traffic.
        let s = sms("+37120012345", 371, 9);
        for i in 0..2 {
            assert_eq!(judged(&a, &store, &format!("f{i}"), &s, false).await, None);
        }
        // No grace for a destination nobody entered a code for: the burst is spent.
        assert_eq!(
            judged(&a, &store, "f2", &s, false).await,
            Some(AdaptiveAction::Deny)
        );
        // Another new country shares the pool, spent once its codes are past the grace
        // (the fresh start's three entered codes are in it too): stepped up, not denied.
        for i in 0..2 {
            let third = sms("+37060012345", 370, 9);
            assert_eq!(
                judged(&a, &store, &format!("t{i}"), &third, false).await,
                None
            );
        }
        tokio::time::advance(4 * MINUTE).await;
        let other = sms("+99890123456", 998, 9);
        assert_eq!(
            judged(&a, &store, "g0", &other, false).await,
            Some(AdaptiveAction::StepUp)
        );
        // An MFA send to a country never seen is not pooled (its method was verified).
        assert_eq!(
            judged(&a, &store, "m0", &mfa("+998*******56", 9), false).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn mfa_sends_to_a_pumped_key_are_stepped_up_and_denied_only_when_passed_codes_go_unused()
    {
        let rule = AdaptiveRule {
            pooled: false,
            ..default_rules().remove(0)
        };
        let a = adaptive(vec![rule]);
        let store = MemoryStore::new(10_000);
        let label = mfa("+371******45", 9);
        for i in 0..3 {
            assert_eq!(
                judged(&a, &store, &format!("f{i}"), &label, true).await,
                None
            );
        }
        tokio::time::advance(4 * MINUTE).await;
        // Pumped. A registration to it is denied; an MFA send to a verified method is
        // stepped up, which people pass.
        let reg = sms("+37120012345", 371, 9);
        assert_eq!(
            judged(&a, &store, "r0", &reg, false).await,
            Some(AdaptiveAction::Deny)
        );
        // Two people pass the step-up and enter their codes: the key stays a step-up.
        for flow in ["p0", "p1"] {
            assert_eq!(
                judged(&a, &store, flow, &label, true).await,
                Some(AdaptiveAction::StepUp)
            );
            a.record_verified(&store, flow).await;
        }
        tokio::time::advance(4 * MINUTE).await;
        assert_eq!(
            judged(&a, &store, "p2", &label, false).await,
            Some(AdaptiveAction::StepUp)
        );
        // A bot passes three step-ups and enters none of the codes: denied.
        for flow in ["b0", "b1", "b2"] {
            assert_eq!(
                judged(&a, &store, flow, &label, true).await,
                Some(AdaptiveAction::StepUp)
            );
        }
        tokio::time::advance(4 * MINUTE).await;
        assert_eq!(
            judged(&a, &store, "b3", &label, true).await,
            Some(AdaptiveAction::Deny)
        );
    }

    fn sms(e164: &'static str, code: u16, last_octet: u8) -> Subject<'static> {
        Subject {
            channel: Channel::Sms,
            client_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, last_octet)),
            e164: Some(e164),
            calling_code: Some(code),
            label: None,
            client_id: Some("app"),
            user: None,
        }
    }

    /// Sends and verifications of `key` over a day, as the rules count them.
    async fn day_counts(store: &MemoryStore, key: &str) -> (u64, u64) {
        let day = Duration::from_secs(86400);
        let counters: Vec<Counter<'_>> = [SENT, VERIFIED]
            .into_iter()
            .map(|series| Counter {
                key,
                series,
                window: day,
                buckets: BUCKETS,
            })
            .collect();
        let c = store.tally(&[], &counters).await.unwrap();
        (c[0], c[1])
    }

    async fn send(a: &Adaptive, store: &MemoryStore, flow: &str, s: &Subject<'_>) -> bool {
        let hasher = KeyHasher::unkeyed();
        let keys = a.keys(&hasher, s);
        let mut keys = keys;
        let refused = a
            .check(store, &mut keys)
            .await
            .hits
            .iter()
            .any(|h| !h.monitor);
        if !refused {
            a.record_send(store, flow, &keys).await;
        }
        refused
    }

    #[test]
    fn labels_name_a_calling_code_when_their_digits_do() {
        assert_eq!(label_code("+1********6").as_deref(), Some("+1"));
        assert_eq!(label_code("+44*******56").as_deref(), Some("+44"));
        assert_eq!(label_code("+37*******56").as_deref(), Some("label+37"));
        assert_eq!(label_code("+371****56").as_deref(), Some("+371"));
        assert_eq!(label_code("+********"), None);
        assert_eq!(label_code("c***r@contoso.com"), None);
    }

    #[test]
    fn prefixes_and_networks_are_cut_as_configured() {
        let rules = default_rules();
        let s = sms("+37120012345", 371, 9);
        assert_eq!(value_of(&rules[0], &s).as_deref(), Some("+371"));
        assert_eq!(value_of(&rules[1], &s).as_deref(), Some("+3712001"));
        assert_eq!(value_of(&rules[2], &s).as_deref(), Some("198.51.100.0/24"));
    }

    #[test]
    fn keys_name_what_identifies_nobody_and_hash_the_rest() {
        let a = adaptive(default_rules());
        let hasher = KeyHasher::keyed(b"k");
        let names = |s: &Subject<'_>| -> Vec<String> {
            a.keys(&hasher, s)
                .entries
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        let mut s = sms("+37120012345", 371, 9);
        s.user = Some("ab12");
        let keys = names(&s);
        assert!(
            keys.contains(&"conv:sms-country:+371".to_owned()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"conv:sms-prefix:+3712001".to_owned()),
            "{keys:?}"
        );
        assert!(keys.contains(&"conv:sms-user:ab12".to_owned()), "{keys:?}");
        assert!(
            keys.contains(&"conv:sms-network:198.51.100.0/24".to_owned()),
            "{keys:?}"
        );
        // An IPv6 /64 is one household: hashed.
        let mut home = sms("+37120012345", 371, 9);
        home.client_ip = "2001:db8:1:2::7".parse().unwrap();
        let network = names(&home)
            .into_iter()
            .find(|k| k.starts_with("conv:sms-network:"));
        assert_eq!(
            network,
            Some(format!(
                "conv:sms-network:{}",
                hasher.hash("2001:db8:1:2::/64")
            )),
        );
        // A range that leaves fewer than a thousand numbers open names a few people.
        let short = sms("+371200123", 371, 9);
        let keys = names(&short);
        assert!(
            !keys.iter().any(|k| k.contains("+3712001")),
            "a short number's range is hashed: {keys:?}"
        );
        // A value that could break the key is hashed whatever the rule.
        let mut odd = sms("+37120012345", 371, 9);
        odd.user = Some("a b\nc");
        assert!(names(&odd).iter().all(|k| !k.contains(' ')));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_whose_codes_are_never_entered_is_refused_after_its_allowance() {
        let a = adaptive(vec![country_rule()]);
        let store = MemoryStore::new(10_000);
        let s = sms("+37120012345", 371, 9);
        for i in 0..3 {
            assert!(!send(&a, &store, &format!("f{i}"), &s).await, "send {i}");
        }
        // Not judged while the codes may still be typed.
        assert!(!send(&a, &store, "f3", &s).await);
        tokio::time::advance(4 * MINUTE).await;
        assert!(send(&a, &store, "f4", &s).await, "pumped after the grace");
        // Another country is not touched.
        assert!(!send(&a, &store, "g0", &sms("+447400123456", 44, 9)).await);
        // The window forgets: the block lifts by itself.
        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        assert!(!send(&a, &store, "f5", &s).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_deployment_only_reports_until_its_warm_up_is_over() {
        let conversion = ConversionConfig {
            warm_up: Duration::from_secs(3600),
            ..ConversionConfig::default()
        };
        let a = Adaptive::new(vec![country_rule()], conversion).unwrap();
        let store = MemoryStore::new(10_000);
        let hasher = KeyHasher::unkeyed();
        let s = sms("+37120012345", 371, 9);
        for i in 0..3 {
            assert!(!send(&a, &store, &format!("f{i}"), &s).await);
        }
        tokio::time::advance(4 * MINUTE).await;
        let mut keys = a.keys(&hasher, &s);
        let hits = a.check(&store, &mut keys).await.hits;
        assert!(
            hits.len() == 1 && hits[0].monitor,
            "reported only: {hits:?}"
        );
        // The first counted send started the warm-up; move its start an hour back.
        let started: u64 = String::from_utf8(store.get(EPOCH).await.unwrap().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let earlier = (started - 3601).to_string();
        store
            .put(EPOCH, earlier.as_bytes(), 2 * HOUR)
            .await
            .unwrap();
        let hits = a.check(&store, &mut keys).await.hits;
        assert!(hits.len() == 1 && !hits[0].monitor, "enforced: {hits:?}");
        assert!(a.warm.load(Ordering::Relaxed), "and never asked again");
    }

    #[tokio::test(start_paused = true)]
    async fn verified_sends_keep_a_key_open_and_a_verification_converts_its_resends() {
        let a = adaptive(vec![country_rule()]);
        let store = MemoryStore::new(10_000);
        let hasher = KeyHasher::unkeyed();
        let s = sms("+447400123456", 44, 9);
        for i in 0..40 {
            let flow = format!("f{i}");
            assert!(!send(&a, &store, &flow, &s).await, "send {i}");
            // A resend in the same flow is a second send, converted by the same code.
            assert!(!send(&a, &store, &flow, &s).await);
            // Four in five users enter their code.
            if i % 5 != 0 {
                a.record_verified(&store, &flow).await;
                a.record_verified(&store, &flow).await;
            }
            tokio::time::advance(MINUTE).await;
        }
        let keys = a.keys(&hasher, &s);
        assert_eq!(day_counts(&store, &keys.entries[0].key).await, (80, 64));
    }

    #[tokio::test(start_paused = true)]
    async fn a_verification_after_verify_within_does_not_count() {
        let a = adaptive(vec![country_rule()]);
        let store = MemoryStore::new(10_000);
        let hasher = KeyHasher::unkeyed();
        let s = sms("+447400123456", 44, 9);
        assert!(!send(&a, &store, "late", &s).await);
        tokio::time::advance(11 * MINUTE).await;
        a.record_verified(&store, "late").await;
        let keys = a.keys(&hasher, &s);
        assert_eq!(day_counts(&store, &keys.entries[0].key).await, (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pumped_key_is_stepped_up_then_denied() {
        let rule = AdaptiveRule {
            min_unverified: 2,
            deny_after: Some(4),
            action: AdaptiveAction::StepUp,
            ..country_rule()
        };
        let a = adaptive(vec![rule]);
        let store = MemoryStore::new(10_000);
        let s = sms("+37120012345", 371, 9);
        let mut seen = Vec::new();
        for i in 0..6 {
            let got = judged(&a, &store, &format!("f{i}"), &s, false).await;
            // A step-up that is passed sends the code: count it, as the gateway does.
            if got == Some(AdaptiveAction::StepUp) {
                let hasher = KeyHasher::unkeyed();
                let keys = a.keys(&hasher, &s);
                a.record_send(&store, &format!("f{i}"), &keys).await;
            }
            seen.push(got);
            tokio::time::advance(4 * MINUTE).await;
        }
        use AdaptiveAction::{Deny, StepUp};
        assert_eq!(
            seen,
            [
                None,
                None,
                Some(StepUp),
                Some(StepUp),
                Some(Deny),
                Some(Deny)
            ]
        );
        // Lifted by an operator: no hit while the lift lasts, and its figures still read.
        let key = a.keys(&KeyHasher::unkeyed(), &s).entries[0].key.clone();
        let name = &a.rules[0].name;
        let (settled, verified) = a.figures_of(&store, name, &key).await.unwrap();
        assert!(settled >= 4 && verified == 0, "{settled} {verified}");
        store
            .put(&lift_key(name, &key), b"oncall", a.window_of(name).unwrap())
            .await
            .unwrap();
        assert_eq!(judged(&a, &store, "f-lifted", &s, false).await, None);
        tokio::time::advance(a.window_of(name).unwrap()).await;
        assert_eq!(a.figures_of(&store, name, &key).await, Some((0, 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn pooled_keys_share_one_allowance_until_they_convert() {
        let rule = AdaptiveRule {
            min_unverified: 2,
            pooled: true,
            ..country_rule()
        };
        let a = adaptive(vec![rule]);
        let store = MemoryStore::new(10_000);
        // A country whose codes are entered is out of the pool.
        let home = sms("+447400123456", 44, 4);
        assert_eq!(judged(&a, &store, "h", &home, false).await, None);
        a.record_verified(&store, "h").await;
        // Two new countries, one unverified send each: the pool has spent its allowance.
        let lv = sms("+37120012345", 371, 1);
        let lt = sms("+37060012345", 370, 2);
        assert_eq!(judged(&a, &store, "a", &lv, false).await, None);
        assert_eq!(judged(&a, &store, "b", &lt, false).await, None);
        tokio::time::advance(4 * MINUTE).await;
        let ee = sms("+37250012345", 372, 3);
        assert!(
            judged(&a, &store, "c", &ee, false).await.is_some(),
            "a third new country"
        );
        assert_eq!(
            judged(&a, &store, "h2", &home, false).await,
            None,
            "the home country"
        );
    }

    #[test]
    fn an_outage_that_drops_the_whole_channel_blocks_no_key() {
        let rule = country_rule();
        // The home country at 10% during an outage, the channel at 12%: not pumped.
        assert!(!pumped(&rule, 100, 10, Some(0.12)));
        // A pumped destination at 0% against a healthy channel.
        assert!(pumped(&rule, 5, 0, Some(0.85)));
        // A code-entering pumper at 30% against 85%, under a stricter rule.
        let strict = AdaptiveRule {
            below: 0.5,
            ..country_rule()
        };
        assert!(pumped(&strict, 20, 6, Some(0.85)));
        // Not enough unverified sends yet.
        assert!(!pumped(&rule, 2, 0, None));
    }

    #[test]
    fn bad_rules_are_named() {
        let mut bad = default_rules();
        bad[0].below = 1.5;
        bad[1].prefix_digits = None;
        bad[2].name = bad[0].name.clone();
        bad[2].min_unverified = 0;
        let problems = Adaptive::new(bad, ConversionConfig::default()).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "[0].below",
                "[1].prefix_digits",
                "[2].name",
                "[2].min_unverified"
            ]
        );
    }
}
