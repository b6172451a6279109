//! Velocity rules: how often one IP, network, phone, number range, country, method, user,
//! flow or client may make Entra send a code, counted in sliding windows in the shared
//! [`Store`].
//!
//! A counter moves only for codes Entra actually sends. [`VelocityRules::check`] reserves a
//! slot in every applicable window; when the request is then denied or challenged (by a
//! rule here or by anything else), or Entra answers that it sent nothing (an error, a
//! password prompt, a redirect), the caller hands the slots back with
//! [`VelocityRules::release`]. A client that is refused does not use up its own budget,
//! and neither does a user whose send Entra refused.
//!
//! Invariant: store keys are `vel:{rule}:{keyed hash of the value}` ([`KeyHasher`]); raw
//! phone numbers, IPs, method ids and flows never appear in a key or a log line.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::numbering::MAX_E164_DIGITS;
use crate::entra::learn::Channel;
use crate::problem::Problem;
use crate::store::{KeyHasher, Store, WindowSpec};

/// One rule of `[[defense.velocity]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityRule {
    /// Unique name (letters, digits, `-`, `_`, `.`): part of the store key and of the
    /// reason label `velocity:{name}`. Renaming a rule starts its counts afresh.
    pub name: String,
    /// What is counted: `ip`, `ip_network`, `phone`, `phone_prefix`, `country`, `method`,
    /// `user`, `flow`, `client_id` or `global`.
    pub key: VelocityKey,
    /// The channel counted: `sms` or `email`; absent counts both.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Length of the sliding window, such as `15m` or `1h`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Sends allowed inside the window; the next one is a hit.
    pub limit: u64,
    /// What a hit asks for: `deny`, `step_up` or `throttle` (wait `retry_after`).
    pub action: VelocityAction,
    /// Report hits (flagged `monitor`) without enforcing them.
    #[serde(default)]
    pub monitor: bool,
    /// For `phone_prefix`: how many leading digits of the E.164 number (country code
    /// included) form the range, e.g. 9 for `+44 7912 34…`. Required there, refused
    /// elsewhere.
    #[serde(default)]
    pub prefix_digits: Option<usize>,
    /// For `ip_network`: the IPv4 network size counted together.
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u8,
    /// For `ip_network`: the IPv6 network size counted together (a /64 is one
    /// subscriber's LAN).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Count only sends whose code is not entered: a send Entra then verifies (within
    /// `defense.conversion.verify_within`) gives its slot back. For keys many real users
    /// share, such as a carrier-grade NAT address: they enter their codes, pumping does
    /// not.
    #[serde(default)]
    pub unverified_only: bool,
}

fn default_ipv4_prefix() -> u8 {
    24
}

fn default_ipv6_prefix() -> u8 {
    64
}

/// What a rule counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VelocityKey {
    /// The client IP (IPv4-mapped IPv6 counts as IPv4).
    Ip,
    /// The client's network: `ipv4_prefix` / `ipv6_prefix`.
    IpNetwork,
    /// The destination phone (E.164); absent on MFA sends, which name only a method id.
    Phone,
    /// The first `prefix_digits` digits of the destination phone: a number range.
    PhonePrefix,
    /// The destination's region (`GB`): a per-country budget.
    Country,
    /// The MFA method id: the phone or mailbox behind it, when the number is not sent.
    Method,
    /// The account: the `username` of the flow's `initiate` (or sign-up / reset `start`),
    /// when otpgate saw it. Every code of the account's flows counts, whichever method or
    /// number it goes to.
    User,
    /// The sign-in, sign-up, reset or registration flow.
    Flow,
    /// The application (`client_id`).
    ClientId,
    /// Everything on the channel together.
    Global,
}

/// What a rule's hit asks for. Ordered by strictness: step-up can be satisfied now,
/// throttle only later, deny not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VelocityAction {
    StepUp,
    Throttle,
    Deny,
}

impl VelocityAction {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::StepUp => "step_up",
            Self::Throttle => "throttle",
            Self::Deny => "deny",
        }
    }
}

/// The rules used when none are configured. Limits are per window, counted only for
/// requests that were forwarded:
///
/// * `sms-per-flow`: 3 SMS per flow per 15 min, deny. A person resends once or twice;
///   more in one flow is a script looping on the challenge.
/// * `sms-per-method`: 5 per MFA method per hour, deny. The MFA send names only a method
///   id, so this is the per-phone limit of sign-ins.
/// * `sms-per-phone`: 5 per destination number per hour, deny. Stops OTP bombing of one
///   victim and repeated pumping of one paid number.
/// * `sms-per-phone-prefix`: 20 per 9-digit range (`+44 7912 34…`) per hour, step up.
///   Pumping walks consecutive numbers of a range the fraudster shares revenue on.
/// * `sms-per-ip-burst`: 3 per IP per minute, throttle. No person asks that fast.
/// * `sms-per-ip`: 10 unverified codes per IP per hour, step up (not deny, and a code
///   entered gives its slot back: carrier-grade NAT puts many users behind one address).
/// * `sms-per-ip-network`: 30 unverified codes per /24 or /64 per hour, step up: catches
///   rotation inside a hosting range, while NATed mobile users enter their codes.
/// * `sms-per-country`: 500 per destination country per hour, step up. A budget per
///   country: pumping shows up as a sudden burst towards one country.
/// * `sms-per-user`: 10 SMS per account per hour, deny: a script that starts flow after
///   flow for one account (bombing its phone, or registering number after number on it)
///   is capped whatever each flow looks like.
/// * `email-per-flow`: 5 emails per flow per 15 min, deny.
/// * `email-per-user`: 10 emails per account per hour, deny: email bombing through
///   sign-in, sign-up or password reset, from any number of IPs.
/// * `email-per-ip`: 30 emails per IP per hour, step up (email bombing from one host).
pub(crate) fn default_rules() -> Vec<VelocityRule> {
    use Channel::{Email, Sms};
    use VelocityAction::{Deny, StepUp, Throttle};
    use VelocityKey::*;
    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    let rule = |name: &str, key, channel, window, limit, action| VelocityRule {
        name: name.to_owned(),
        key,
        channel: Some(channel),
        window,
        limit,
        action,
        monitor: false,
        prefix_digits: None,
        ipv4_prefix: default_ipv4_prefix(),
        ipv6_prefix: default_ipv6_prefix(),
        unverified_only: false,
    };
    vec![
        rule("sms-per-flow", Flow, Sms, 15 * MINUTE, 3, Deny),
        rule("sms-per-method", Method, Sms, HOUR, 5, Deny),
        rule("sms-per-phone", Phone, Sms, HOUR, 5, Deny),
        VelocityRule {
            prefix_digits: Some(9),
            ..rule("sms-per-phone-prefix", PhonePrefix, Sms, HOUR, 20, StepUp)
        },
        rule("sms-per-ip-burst", Ip, Sms, MINUTE, 3, Throttle),
        VelocityRule {
            unverified_only: true,
            ..rule("sms-per-ip", Ip, Sms, HOUR, 10, StepUp)
        },
        VelocityRule {
            unverified_only: true,
            ..rule("sms-per-ip-network", IpNetwork, Sms, HOUR, 30, StepUp)
        },
        rule("sms-per-country", Country, Sms, HOUR, 500, StepUp),
        rule("sms-per-user", User, Sms, HOUR, 10, Deny),
        rule("email-per-flow", Flow, Email, 15 * MINUTE, 5, Deny),
        rule("email-per-user", User, Email, HOUR, 10, Deny),
        rule("email-per-ip", Ip, Email, HOUR, 30, StepUp),
    ]
}

/// Every problem in `rules`, keyed `[i].field` relative to the rule list.
pub(crate) fn validate(rules: &[VelocityRule]) -> Vec<Problem> {
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
        if rule.limit == 0 {
            problem(i, "limit", "must be at least 1");
        }
        if rule.window.is_zero() {
            problem(i, "window", "must be longer than zero");
        }
        match (rule.key, rule.prefix_digits) {
            (VelocityKey::PhonePrefix, None) => {
                problem(i, "prefix_digits", "required for key = \"phone_prefix\"")
            }
            (VelocityKey::PhonePrefix, Some(n)) if n == 0 || n > MAX_E164_DIGITS => {
                problem(i, "prefix_digits", "must be 1 to 15")
            }
            (VelocityKey::PhonePrefix, Some(_)) | (_, None) => {}
            (_, Some(_)) => problem(i, "prefix_digits", "only for key = \"phone_prefix\""),
        }
        for (field, message) in super::network_problems(rule.ipv4_prefix, rule.ipv6_prefix) {
            problem(i, field, message);
        }
    }
    problems
}

/// What is known about one OTP send, for counting. `Debug` hides the phone number.
#[derive(Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub channel: Channel,
    pub client_ip: IpAddr,
    /// Destination in E.164, when the request names it (registration); never on MFA sends.
    pub phone_e164: Option<&'a str>,
    /// Destination region (`GB`), from the destination policy.
    pub country: Option<&'a str>,
    pub method_id: Option<&'a str>,
    /// Keyed hash of the flow's username, when known.
    pub user: Option<&'a str>,
    pub flow: &'a str,
    pub client_id: Option<&'a str>,
}

impl fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("channel", &self.channel)
            .field("client_ip", &self.client_ip)
            .field("phone_e164", &self.phone_e164.map(|_| "<redacted>"))
            .field("country", &self.country)
            .field("method_id", &self.method_id.map(|_| "<redacted>"))
            .field("user", &self.user.map(|_| "<redacted>"))
            .field("flow", &self.flow)
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// A rule whose window was already full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleHit {
    pub rule: String,
    pub action: VelocityAction,
    /// The rule only reports: the caller forwards anyway.
    pub monitor: bool,
    /// When the oldest counted send leaves the window.
    pub retry_after: Duration,
    /// Sends in the window.
    pub count: u64,
}

impl RuleHit {
    /// Why: `velocity:{rule}:{action}`.
    pub(crate) fn reason(&self) -> crate::policy::Reason {
        crate::policy::Reason::Velocity {
            rule: self.rule.clone(),
            action: self.action.as_str(),
        }
    }
}

/// The result of [`VelocityRules::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VelocityOutcome {
    /// Rules whose window was full, in rule order.
    pub hits: Vec<RuleHit>,
    /// Store keys where a slot was reserved for this request: give them back with
    /// [`VelocityRules::release`] unless the request is forwarded.
    pub reservations: Vec<String>,
    /// Of `reservations`, those of `unverified_only` rules: given back when the code is
    /// verified.
    pub refundable: Vec<String>,
    /// Rules that could not be counted because the store failed. They contribute no hit;
    /// the caller applies its fail mode when this is not zero.
    pub errors: usize,
}

/// Validated rules, compiled for counting: no config struct is read per request.
#[derive(Debug, Clone)]
pub struct VelocityRules {
    rules: Vec<Compiled>,
}

/// One rule as the request path uses it: its sizes resolved and its store-key prefix made
/// once, at load.
#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    key: VelocityKey,
    channel: Option<Channel>,
    window: Duration,
    limit: u64,
    action: VelocityAction,
    monitor: bool,
    /// `phone_prefix` only: leading digits of the range (validated present).
    prefix_digits: usize,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    /// `vel:{name}:`, the keyed hash of the value follows.
    key_prefix: String,
    unverified_only: bool,
}

impl Compiled {
    /// `rule`, validated already.
    fn new(rule: &VelocityRule) -> Self {
        Self {
            name: rule.name.clone(),
            key: rule.key,
            channel: rule.channel,
            window: rule.window,
            limit: rule.limit,
            action: rule.action,
            monitor: rule.monitor,
            prefix_digits: rule.prefix_digits.unwrap_or(MAX_E164_DIGITS),
            ipv4_prefix: rule.ipv4_prefix,
            ipv6_prefix: rule.ipv6_prefix,
            key_prefix: format!("vel:{}:", rule.name),
            unverified_only: rule.unverified_only,
        }
    }

    /// What the rule counts for `subject`; `None` when the subject lacks it (the rule is
    /// skipped, with no effect).
    fn value(&self, subject: &Subject<'_>) -> Option<String> {
        let present = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(str::to_owned);
        match self.key {
            VelocityKey::Ip => Some(subject.client_ip.to_canonical().to_string()),
            VelocityKey::IpNetwork => {
                let ip = subject.client_ip.to_canonical();
                let prefix = match ip {
                    IpAddr::V4(_) => self.ipv4_prefix,
                    IpAddr::V6(_) => self.ipv6_prefix,
                };
                Some(IpNet::new(ip, prefix).ok()?.trunc().to_string())
            }
            VelocityKey::Phone => present(subject.phone_e164),
            VelocityKey::PhonePrefix => {
                let digits = subject.phone_e164?.strip_prefix('+')?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(format!(
                    "+{}",
                    &digits[..self.prefix_digits.min(digits.len())]
                ))
            }
            VelocityKey::Country => present(subject.country),
            VelocityKey::Method => {
                present(subject.method_id).map(|id| crate::entra::learn::canonical_method_id(&id))
            }
            VelocityKey::User => present(subject.user),
            VelocityKey::Flow => present(Some(subject.flow)),
            VelocityKey::ClientId => present(subject.client_id),
            VelocityKey::Global => Some(String::new()),
        }
    }

    /// The store key for `value`: hashed under the store's key, so keys hold no phone or
    /// IP, and the hash cannot be matched against hashes of every number.
    fn store_key(&self, keys: &KeyHasher, value: &str) -> String {
        let mut key = self.key_prefix.clone();
        key.push_str(&keys.hash(value));
        key
    }
}

impl VelocityRules {
    /// Validate `rules` and compile them; every problem is returned at once (see
    /// [`validate`]).
    pub(crate) fn new(rules: Vec<VelocityRule>) -> Result<Self, Vec<Problem>> {
        let problems = validate(&rules);
        if problems.is_empty() {
            Ok(Self {
                rules: rules.iter().map(Compiled::new).collect(),
            })
        } else {
            Err(problems)
        }
    }

    /// Reserve a slot for `request_id` in the window of every rule that applies to
    /// `subject` (its channel matches and its key has a value), all in one store call
    /// ([`Store::reserve_many`]: one round trip to Redis).
    ///
    /// A full window is a hit and takes no slot. When the store fails, every applicable
    /// rule is counted in `errors` and none gives a hit: whether that means allow, step-up
    /// or deny is the caller's fail mode, not this module's.
    pub(crate) async fn check(
        &self,
        store: &dyn Store,
        keys: &KeyHasher,
        subject: &Subject<'_>,
        request_id: &str,
    ) -> VelocityOutcome {
        let applicable: Vec<(&Compiled, String)> = self
            .rules
            .iter()
            .filter(|rule| rule.channel.is_none_or(|c| c == subject.channel))
            .filter_map(|rule| {
                let value = rule.value(subject)?;
                Some((rule, rule.store_key(keys, &value)))
            })
            .collect();
        let mut outcome = VelocityOutcome::default();
        if applicable.is_empty() {
            return outcome;
        }
        let specs: Vec<WindowSpec<'_>> = applicable
            .iter()
            .map(|(rule, key)| WindowSpec {
                key,
                window: rule.window,
                limit: rule.limit,
            })
            .collect();
        let windows = match store.reserve_many(request_id, &specs).await {
            Ok(windows) if windows.len() == specs.len() => windows,
            answer => {
                let error = answer.map_or_else(|e| e.to_string(), |_| "answers missing".into());
                tracing::debug!(%error, rules = specs.len(), "velocity rules not counted");
                outcome.errors = specs.len();
                return outcome;
            }
        };
        for ((rule, key), window) in applicable.into_iter().zip(windows) {
            if window.reserved {
                if rule.unverified_only {
                    outcome.refundable.push(key.clone());
                }
                outcome.reservations.push(key);
            } else {
                outcome.hits.push(RuleHit {
                    rule: rule.name.clone(),
                    action: rule.action,
                    monitor: rule.monitor,
                    retry_after: window.retry_after,
                    count: window.count,
                });
            }
        }
        outcome
    }

    /// Give back the slots `outcome` reserved for `request_id`, when the request is not
    /// forwarded after all, in one store call. Returns how many may not have been released
    /// (the store failed: all of them); those expire with their window.
    pub(crate) async fn release(
        &self,
        store: &dyn Store,
        outcome: &VelocityOutcome,
        request_id: &str,
    ) -> usize {
        if outcome.reservations.is_empty() {
            return 0;
        }
        let keys: Vec<&str> = outcome.reservations.iter().map(String::as_str).collect();
        match store.release_many(&keys, request_id).await {
            Ok(()) => 0,
            Err(error) => {
                tracing::debug!(%error, slots = keys.len(), "velocity slots not released");
                keys.len()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn rule(name: &str, key: VelocityKey, window: Duration, limit: u64) -> VelocityRule {
        VelocityRule {
            name: name.into(),
            key,
            channel: Some(Channel::Sms),
            window,
            limit,
            action: VelocityAction::Deny,
            monitor: false,
            prefix_digits: None,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            unverified_only: false,
        }
    }

    fn rules(rules: Vec<VelocityRule>) -> VelocityRules {
        VelocityRules::new(rules).unwrap()
    }

    fn sms<'a>(ip: &str, phone: Option<&'a str>) -> Subject<'a> {
        Subject {
            channel: Channel::Sms,
            client_ip: ip.parse().unwrap(),
            phone_e164: phone,
            country: Some("GB"),
            method_id: None,
            user: None,
            flow: "0123456789abcdef",
            client_id: Some("app"),
        }
    }

    fn keys() -> KeyHasher {
        KeyHasher::keyed(b"velocity test key")
    }

    /// The documented store key: `vel:{rule}:{keyed hash of the value}`.
    fn store_key(keys: &KeyHasher, rule: &str, value: &str) -> String {
        format!("vel:{rule}:{}", keys.hash(value))
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_holds_at_the_boundary_and_resets_after_the_window() {
        let store = MemoryStore::new(1000);
        let rules = rules(vec![rule("per-flow", VelocityKey::Flow, 15 * MINUTE, 3)]);
        let subject = sms("203.0.113.7", None);
        for i in 0..3 {
            let outcome = rules
                .check(&store, &keys(), &subject, &format!("r{i}"))
                .await;
            assert!(outcome.hits.is_empty(), "send {i} is within the limit");
            assert_eq!(outcome.reservations.len(), 1);
        }
        let full = rules.check(&store, &keys(), &subject, "r3").await;
        assert_eq!(
            full.hits,
            [RuleHit {
                rule: "per-flow".into(),
                action: VelocityAction::Deny,
                monitor: false,
                retry_after: 15 * MINUTE,
                count: 3,
            }]
        );
        assert!(full.reservations.is_empty(), "a hit takes no slot");
        assert_eq!(full.hits[0].reason().to_string(), "velocity:per-flow:deny");

        tokio::time::advance(15 * MINUTE - Duration::from_millis(1)).await;
        let still = rules.check(&store, &keys(), &subject, "r4").await;
        assert_eq!(still.hits[0].retry_after, Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(rules
            .check(&store, &keys(), &subject, "r5")
            .await
            .hits
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn keys_hold_keyed_hashes_never_the_phone_the_ip_or_their_sha256() {
        let store = MemoryStore::new(1000);
        let rules = rules(vec![
            rule("per-phone", VelocityKey::Phone, HOUR, 5),
            rule("per-ip", VelocityKey::Ip, HOUR, 5),
        ]);
        let phone = "+447912345678";
        let outcome = rules
            .check(&store, &keys(), &sms("203.0.113.7", Some(phone)), "r1")
            .await;
        let expected = [
            format!("vel:per-phone:{}", keys().hash(phone)),
            format!("vel:per-ip:{}", keys().hash("203.0.113.7")),
        ];
        assert_eq!(outcome.reservations, expected);
        let sha = |value: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(value));
        for key in &outcome.reservations {
            assert!(!key.contains("7912345678") && !key.contains("203.0.113"));
            assert!(!key.contains(&sha(phone)) && !key.contains(&sha("203.0.113.7")));
            assert_eq!(store.count(key, HOUR).await.unwrap(), 1);
        }
        // Another key counts apart: replicas must share theirs.
        let other = KeyHasher::keyed(b"another key");
        let apart = rules
            .check(&store, &other, &sms("203.0.113.7", Some(phone)), "r2")
            .await;
        assert!(apart.reservations.iter().all(|k| !expected.contains(k)));
        let debug = format!("{:?}", sms("203.0.113.7", Some(phone)));
        assert!(!debug.contains("7912345678"), "{debug}");
    }

    #[tokio::test(start_paused = true)]
    async fn release_gives_the_slot_back() {
        let store = MemoryStore::new(1000);
        let rules = rules(vec![rule("per-phone", VelocityKey::Phone, HOUR, 1)]);
        let subject = sms("203.0.113.7", Some("+447912345678"));
        let first = rules.check(&store, &keys(), &subject, "r1").await;
        assert!(first.hits.is_empty());
        assert_eq!(
            rules
                .check(&store, &keys(), &subject, "r2")
                .await
                .hits
                .len(),
            1
        );
        // r1 was denied by something else after all: its send never happened.
        assert_eq!(rules.release(&store, &first, "r1").await, 0);
        let third = rules.check(&store, &keys(), &subject, "r3").await;
        assert!(third.hits.is_empty());
        assert_eq!(third.reservations.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn networks_group_ipv4_by_24_and_ipv6_by_64() {
        let store = MemoryStore::new(1000);
        let rules = rules(vec![rule("per-net", VelocityKey::IpNetwork, HOUR, 2)]);
        let table: &[(&str, bool)] = &[
            ("203.0.113.7", false),
            ("203.0.113.200", false),
            // Third from the same /24, even written as IPv4-mapped IPv6.
            ("::ffff:203.0.113.9", true),
            ("203.0.114.1", false),
            ("2001:db8:1:2::1", false),
            ("2001:db8:1:2:ffff:ffff:ffff:9", false),
            ("2001:db8:1:2:abcd::1", true),
            ("2001:db8:1:3::1", false),
        ];
        for (i, (ip, hit)) in table.iter().enumerate() {
            let outcome = rules
                .check(&store, &keys(), &sms(ip, None), &i.to_string())
                .await;
            assert_eq!(!outcome.hits.is_empty(), *hit, "{ip}");
        }
        let v4 = rules.rules[0].value(&sms("203.0.113.7", None));
        assert_eq!(v4.as_deref(), Some("203.0.113.0/24"));
        let wide = VelocityRule {
            ipv4_prefix: 16,
            ipv6_prefix: 48,
            ..rule("wide", VelocityKey::IpNetwork, HOUR, 1)
        };
        let v6 = Compiled::new(&wide).value(&sms("2001:db8:1:2::1", None));
        assert_eq!(v6.as_deref(), Some("2001:db8:1::/48"));
        let v4 = Compiled::new(&wide).value(&sms("203.0.113.7", None));
        assert_eq!(v4.as_deref(), Some("203.0.0.0/16"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_phone_prefix_counts_a_number_range() {
        let store = MemoryStore::new(1000);
        let rules = rules(vec![VelocityRule {
            prefix_digits: Some(9),
            ..rule("per-range", VelocityKey::PhonePrefix, HOUR, 2)
        }]);
        let table: &[(&str, bool)] = &[
            ("+447912345678", false),
            ("+447912345699", false),
            ("+447912345000", true),
            ("+447912346000", false),
        ];
        for (i, (phone, hit)) in table.iter().enumerate() {
            let outcome = rules
                .check(
                    &store,
                    &keys(),
                    &sms("203.0.113.7", Some(phone)),
                    &i.to_string(),
                )
                .await;
            assert_eq!(!outcome.hits.is_empty(), *hit, "{phone}");
        }
        let value = rules.rules[0].value(&sms("203.0.113.7", Some("+447912345678")));
        assert_eq!(value.as_deref(), Some("+447912345"));
        // Shorter than the prefix: the whole number is the range.
        let short = rules.rules[0].value(&sms("203.0.113.7", Some("+4479")));
        assert_eq!(short.as_deref(), Some("+4479"));
    }

    #[tokio::test(start_paused = true)]
    async fn rules_without_their_key_or_channel_are_skipped() {
        let store = MemoryStore::new(1000);
        let email_only = VelocityRule {
            channel: Some(Channel::Email),
            ..rule("email-flow", VelocityKey::Flow, HOUR, 1)
        };
        let both = VelocityRule {
            channel: None,
            ..rule("any-global", VelocityKey::Global, HOUR, 10)
        };
        let rules = rules(vec![
            rule("per-phone", VelocityKey::Phone, HOUR, 1),
            rule("per-method", VelocityKey::Method, HOUR, 1),
            email_only,
            both,
        ]);
        // An MFA send: no phone, a method id.
        let mfa = Subject {
            method_id: Some("m-1"),
            ..sms("203.0.113.7", None)
        };
        for i in 0..3 {
            let outcome = rules.check(&store, &keys(), &mfa, &format!("r{i}")).await;
            let expected_hits = if i == 0 { 0 } else { 1 };
            assert_eq!(outcome.hits.len(), expected_hits);
            assert!(outcome.hits.iter().all(|h| h.rule == "per-method"));
            assert_eq!(outcome.errors, 0);
        }
        let global = store_key(&keys(), "any-global", "");
        assert_eq!(store.count(&global, HOUR).await.unwrap(), 3);
        let email = Subject {
            channel: Channel::Email,
            ..mfa
        };
        let outcome = rules.check(&store, &keys(), &email, "e1").await;
        assert_eq!(outcome.reservations.len(), 2, "email-flow and any-global");
    }

    #[tokio::test(start_paused = true)]
    async fn one_account_is_counted_across_flows_and_a_method_id_in_any_case() {
        let store = MemoryStore::new(1000);
        let rules = rules(vec![
            rule("per-user", VelocityKey::User, HOUR, 2),
            rule("per-method", VelocityKey::Method, HOUR, 3),
        ]);
        let flows = ["1111111111111111", "2222222222222222", "3333333333333333"];
        let ids = ["AbC-1", "abc-1", " ABC-1"];
        for (i, (flow, id)) in flows.iter().zip(ids).enumerate() {
            let subject = Subject {
                flow,
                user: Some("user-hash"),
                method_id: Some(id),
                ..sms(&format!("203.0.113.{i}"), None)
            };
            let outcome = rules
                .check(&store, &keys(), &subject, &format!("r{i}"))
                .await;
            let hits: Vec<&str> = outcome.hits.iter().map(|h| h.rule.as_str()).collect();
            let want: &[&str] = if i < 2 { &[] } else { &["per-user"] };
            assert_eq!(hits, want, "send {i}");
        }
        // The method window counted all three spellings as one id.
        let method = store_key(&keys(), "per-method", "abc-1");
        assert_eq!(store.count(&method, HOUR).await.unwrap(), 3);
        // Without a known user the rule does not apply.
        let anonymous = sms("203.0.113.9", None);
        assert!(rules
            .check(&store, &keys(), &anonymous, "r9")
            .await
            .hits
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn monitor_rules_report_hits_flagged_and_are_never_strictest() {
        let store = MemoryStore::new(1000);
        let rules = rules(vec![
            VelocityRule {
                monitor: true,
                ..rule("watch", VelocityKey::Ip, HOUR, 1)
            },
            VelocityRule {
                action: VelocityAction::StepUp,
                ..rule("soft", VelocityKey::Flow, HOUR, 1)
            },
            VelocityRule {
                action: VelocityAction::Throttle,
                ..rule("burst", VelocityKey::ClientId, MINUTE, 1)
            },
        ]);
        let subject = sms("203.0.113.7", None);
        rules.check(&store, &keys(), &subject, "r1").await;
        let outcome = rules.check(&store, &keys(), &subject, "r2").await;
        let flags: Vec<(&str, bool)> = outcome
            .hits
            .iter()
            .map(|h| (h.rule.as_str(), h.monitor))
            .collect();
        assert_eq!(flags, [("watch", true), ("soft", false), ("burst", false)]);
    }

    #[tokio::test]
    async fn a_store_failure_gives_no_hit_and_is_counted() {
        let rules = VelocityRules::new(default_rules()).unwrap();
        let subject = sms("203.0.113.7", Some("+447912345678"));
        let outcome = rules
            .check(&crate::store::DownStore, &keys(), &subject, "r1")
            .await;
        assert!(outcome.hits.is_empty());
        assert!(outcome.reservations.is_empty());
        // Every SMS rule with a value: flow, phone, prefix, IP burst, IP, network, country.
        assert_eq!(outcome.errors, 7);
        let reserved = VelocityOutcome {
            reservations: vec!["vel:x:y".into()],
            ..VelocityOutcome::default()
        };
        assert_eq!(
            rules
                .release(&crate::store::DownStore, &reserved, "r1")
                .await,
            1
        );
    }

    #[test]
    fn validation_reports_every_problem() {
        let rules = vec![
            rule("dup", VelocityKey::Ip, HOUR, 0),
            rule("dup", VelocityKey::PhonePrefix, Duration::ZERO, 1),
            VelocityRule {
                prefix_digits: Some(16),
                ..rule("range", VelocityKey::PhonePrefix, HOUR, 1)
            },
            VelocityRule {
                prefix_digits: Some(4),
                ipv4_prefix: 33,
                ipv6_prefix: 0,
                ..rule("bad name!", VelocityKey::Ip, HOUR, 1)
            },
        ];
        let problems = VelocityRules::new(rules).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "[0].limit",
                "[1].name",
                "[1].window",
                "[1].prefix_digits",
                "[2].prefix_digits",
                "[3].name",
                "[3].prefix_digits",
                "[3].ipv4_prefix",
                "[3].ipv6_prefix",
            ]
        );
    }

    #[test]
    fn defaults_are_valid_and_rules_read_from_config() {
        assert!(validate(&default_rules()).is_empty());
        let rule: VelocityRule = serde_json::from_value(serde_json::json!({
            "name": "sms-per-range",
            "key": "phone_prefix",
            "channel": "sms",
            "window": "1h 30m",
            "limit": 5,
            "action": "throttle",
            "prefix_digits": 8,
        }))
        .unwrap();
        assert_eq!(rule.window, Duration::from_secs(5400));
        assert_eq!((rule.ipv4_prefix, rule.ipv6_prefix), (24, 64));
        assert_eq!(rule.channel, Some(Channel::Sms));
        assert!(!rule.monitor);
        let typo = serde_json::from_value::<VelocityRule>(serde_json::json!({
            "name": "x", "key": "ip", "window": "1h", "limit": 5, "action": "deny",
            "monitr": true,
        }));
        assert!(typo.is_err());
    }
}
