//! Destination policy: may an SMS go to this phone number? Decided from the number alone,
//! with libphonenumber metadata: its country (region or calling code), its number type
//! (premium rate, shared cost, VoIP, …) and operator prefix deny-lists.
//!
//! Invariant: a raw phone number never reaches a log line. [`Phone`]'s `Debug` masks it and
//! reason labels name only the country, the type or the configured prefix.

use std::collections::BTreeMap;
use std::fmt;

use phonenumber::metadata::DATABASE;
use serde::{Deserialize, Serialize};

use super::numbering::{self, NumberKind, MAX_E164_DIGITS};
use crate::policy::{DestinationRule, Reason};
use crate::problem::Problem;

/// Longest target we look at; anything longer is unparseable without being scanned.
const MAX_TARGET_CHARS: usize = 64;

/// `[defense.destination]`: where SMS codes may be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationConfig {
    /// Action for a destination whose country has no entry in `countries`.
    pub default: CountryAction,
    /// Per-country actions. Keys are ISO 3166 regions (`GB`) or calling codes (`+44` or
    /// `44`, covering every region that shares the code: `+44` is GB, GG, IM and JE). A
    /// region entry beats the entry of its calling code, so `"+1" = "deny"` with
    /// `US = "allow"` allows only the US among the NANP countries.
    pub countries: BTreeMap<String, CountryAction>,
    /// Per-number-type actions, by libphonenumber type. Entries given here replace the
    /// default for that type only; types not listed keep their default (see
    /// [`default_number_types`]). Write `allow` to lift a default.
    pub number_types: BTreeMap<NumberKind, CountryAction>,
    /// E.164 prefixes always denied, such as `+881` or `+4470`. Setting this list replaces
    /// the defaults (see [`default_deny_prefixes`]): repeat the ones to keep. Prefixes
    /// appear in reason labels (logs, metrics): list ranges, not subscribers' numbers.
    pub deny_prefixes: Vec<String>,
    /// Monitor mode: compute and report the verdict, but always allow.
    pub monitor: bool,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        Self {
            default: CountryAction::Allow,
            countries: BTreeMap::new(),
            number_types: default_number_types(),
            deny_prefixes: default_deny_prefixes(),
            monitor: false,
        }
    }
}

/// The number-type actions used unless configured otherwise:
///
/// * `premium_rate`, `shared_cost`: deny. The receiving side earns part of the charge:
///   the classic revenue-share (IRSF) target, and no person reads a code there.
/// * `personal_number`: deny. "Follow-me" ranges such as UK 070 are re-routed at a
///   premium and are a long-standing revenue-share vehicle.
/// * `pager`, `uan`, `voicemail`: deny. These cannot hold a user's one-time code.
/// * `emergency`, `short_code`, `standard_rate`, `carrier`, `no_international`: deny.
///   They come from short-number metadata, which `phonenumber` does not compile in, so a
///   full number is never classified as one; denied in case a later release does.
/// * `unknown`, `invalid`: deny. A number that fits no known range of its country is
///   either a typo or a range the metadata does not know yet; neither should cost money.
/// * `voip`: step up. VoIP numbers are cheap to acquire in bulk but have real users.
/// * `mobile`, `fixed_line`, `fixed_line_or_mobile`, `toll_free`: allow (fixed lines get
///   SMS as text-to-speech in some countries; country rules still apply).
pub(crate) fn default_number_types() -> BTreeMap<NumberKind, CountryAction> {
    use CountryAction::{Deny, StepUp};
    use NumberKind::*;
    BTreeMap::from([
        (PremiumRate, Deny),
        (SharedCost, Deny),
        (PersonalNumber, Deny),
        (Pager, Deny),
        (Uan, Deny),
        (Voicemail, Deny),
        (Emergency, Deny),
        (ShortCode, Deny),
        (StandardRate, Deny),
        (Carrier, Deny),
        (NoInternational, Deny),
        (Unknown, Deny),
        (Invalid, Deny),
        (Voip, StepUp),
    ])
}

/// The prefixes denied unless configured otherwise: the ITU non-geographic "international
/// networks" and satellite codes that revenue-share fraud favours, and that no consumer
/// sign-in needs.
///
/// * `+870`: Inmarsat SNAC (satellite).
/// * `+881`: Global Mobile Satellite System (Iridium, Globalstar, …).
/// * `+882`, `+883`: International Networks (shared codes of carriers, M2M operators).
pub(crate) fn default_deny_prefixes() -> Vec<String> {
    ["+870", "+881", "+882", "+883"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// What the configuration asks for a country or a number type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountryAction {
    Allow,
    Deny,
    StepUp,
    /// Would deny: reported on the verdict as `would`, but the request is allowed.
    Monitor,
}

impl CountryAction {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::StepUp => "step_up",
            Self::Monitor => "monitor",
        }
    }
}

/// What the policy decides. Ordered by strictness, so the strictest of several is `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationAction {
    Allow,
    StepUp,
    Deny,
}

impl DestinationAction {
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::StepUp => "step_up",
            Self::Deny => "deny",
        }
    }
}

/// A parsed destination number. `Debug` masks all but the calling code and the last two
/// digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone {
    /// Canonical E.164 form, `+` and digits. Never log it; hash it for keys.
    pub e164: String,
    /// ISO 3166 region (`GB`), when the number belongs to one; `None` for non-geographic
    /// codes (`+800`, `+881`, …) and for invalid numbers no region claims.
    pub region: Option<String>,
    pub calling_code: u16,
    pub kind: NumberKind,
}

impl Phone {
    /// `+44•••••••23`: enough to tell numbers apart in a log, not enough to dial.
    pub(crate) fn masked(&self) -> String {
        let code_len = self.calling_code.to_string().len() + 1;
        let digits = self.e164.len().saturating_sub(code_len);
        let tail = digits.min(2);
        let (head, rest) = self.e164.split_at(code_len.min(self.e164.len()));
        let shown = &rest[rest.len() - tail..];
        format!("{head}{}{shown}", "•".repeat(digits - tail))
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phone")
            .field("e164", &self.masked())
            .field("region", &self.region)
            .field("calling_code", &self.calling_code)
            .field("kind", &self.kind)
            .finish()
    }
}

/// The policy's answer for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationVerdict {
    /// What to do.
    pub action: DestinationAction,
    /// What the policy would do if monitor entries and monitor mode were enforcing. Equal
    /// to `action` unless something is only monitored.
    pub would: DestinationAction,
    /// Stable labels, one per rule that asked for more than `allow`, such as
    /// `destination:country:GB:deny`, `destination:type:premium_rate:deny`,
    /// `destination:prefix:+881`, `destination:unparseable`.
    pub reasons: Vec<Reason>,
    /// The parsed number; `None` when the target is unparseable.
    pub phone: Option<Phone>,
}

impl DestinationVerdict {
    /// Whether a monitored rule (or monitor mode) let through what it would have denied.
    #[cfg(test)]
    pub(crate) fn would_deny(&self) -> bool {
        self.would == DestinationAction::Deny && self.action != DestinationAction::Deny
    }
}

/// A country key of the config, resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum CountryKey {
    Region(String),
    Code(u16),
}

/// The destination policy, built once from its config and shared.
#[derive(Debug, Clone)]
pub struct DestinationPolicy {
    default: CountryAction,
    regions: BTreeMap<String, CountryAction>,
    codes: BTreeMap<u16, CountryAction>,
    number_types: BTreeMap<NumberKind, CountryAction>,
    deny_prefixes: Vec<String>,
    monitor: bool,
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        Self {
            default: CountryAction::Allow,
            regions: BTreeMap::new(),
            codes: BTreeMap::new(),
            number_types: default_number_types(),
            deny_prefixes: default_deny_prefixes(),
            monitor: false,
        }
    }
}

impl DestinationPolicy {
    /// Check `config` and build the policy. Every problem is returned at once; keys are
    /// relative to the section (`countries.XX`, `deny_prefixes[2]`).
    ///
    /// Also loads the numbering metadata and plan table, so that the first request does
    /// not wait for them; each region's patterns are still compiled on its first number.
    pub fn from_config(config: &DestinationConfig) -> Result<Self, Vec<Problem>> {
        numbering::load();
        let mut problems = Vec::new();
        let mut problem = |key: String, message: &str| {
            problems.push(Problem {
                key,
                message: message.to_owned(),
            })
        };

        let mut regions = BTreeMap::new();
        let mut codes = BTreeMap::new();
        for (raw, action) in &config.countries {
            let key = format!("countries.{raw}");
            match parse_country_key(raw) {
                Ok(CountryKey::Region(region)) => {
                    if regions.insert(region, *action).is_some() {
                        problem(key, "the same region is listed twice");
                    }
                }
                Ok(CountryKey::Code(code)) => {
                    if codes.insert(code, *action).is_some() {
                        problem(key, "the same calling code is listed twice");
                    }
                }
                Err(message) => problem(key, message),
            }
        }

        let mut deny_prefixes: Vec<String> = Vec::new();
        for (i, prefix) in config.deny_prefixes.iter().enumerate() {
            let key = format!("deny_prefixes[{i}]");
            let digits = prefix.strip_prefix('+').unwrap_or("");
            if digits.is_empty()
                || digits.len() > MAX_E164_DIGITS
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                problem(
                    key,
                    "not an E.164 prefix such as +881 (a + and 1 to 15 digits)",
                );
            } else if deny_prefixes.contains(prefix) {
                problem(key, "listed twice");
            } else {
                deny_prefixes.push(prefix.clone());
            }
        }

        let mut number_types = default_number_types();
        number_types.extend(config.number_types.iter().map(|(k, v)| (*k, *v)));

        if problems.is_empty() {
            Ok(Self {
                default: config.default,
                regions,
                codes,
                number_types,
                deny_prefixes,
                monitor: config.monitor,
            })
        } else {
            Err(problems)
        }
    }

    /// The verdict for an SMS to `target`, as the client wrote it.
    pub fn check(&self, target: &str) -> DestinationVerdict {
        let mut rules = Rules::default();
        let phone = parse_phone(target);
        match &phone {
            None => rules.add(DestinationAction::Deny, false, Reason::Unparseable),
            Some(phone) => {
                self.judge(phone, &mut rules, false);
                // Parsing dropped a national prefix written after the calling code
                // (`+44 (0)20…`). Entra may read the digits as typed instead, so that
                // reading must pass too.
                if let Some(literal) = as_typed(target, phone) {
                    self.judge(&literal, &mut rules, true);
                }
            }
        }
        let action = if self.monitor {
            DestinationAction::Allow
        } else {
            rules.action
        };
        DestinationVerdict {
            action,
            would: rules.would,
            reasons: rules.reasons,
            phone,
        }
    }

    /// Apply the prefix, country and number-type rules to `phone`, the number as parsed
    /// or (`as_typed`) its digits as the client typed them.
    fn judge(&self, phone: &Phone, rules: &mut Rules, as_typed: bool) {
        for prefix in &self.deny_prefixes {
            if phone.e164.starts_with(prefix.as_str()) {
                rules.add(
                    DestinationAction::Deny,
                    false,
                    Reason::Destination {
                        as_typed,
                        rule: DestinationRule::Prefix(prefix.clone()),
                    },
                );
            }
        }
        let (country, key) = self.country_action(phone);
        rules.configured(country, as_typed, |action| DestinationRule::Country {
            key,
            action,
        });
        let kind = self
            .number_types
            .get(&phone.kind)
            .copied()
            .unwrap_or(CountryAction::Allow);
        rules.configured(kind, as_typed, |action| DestinationRule::Type {
            kind: phone.kind.as_str(),
            action,
        });
    }

    /// The action for `phone`'s country, and the label naming what matched: the region
    /// entry, else the calling-code entry, else the default.
    fn country_action(&self, phone: &Phone) -> (CountryAction, String) {
        if let Some(region) = &phone.region {
            if let Some(action) = self.regions.get(region) {
                return (*action, region.clone());
            }
        }
        let code_label = format!("+{}", phone.calling_code);
        if let Some(action) = self.codes.get(&phone.calling_code) {
            return (*action, code_label);
        }
        (self.default, phone.region.clone().unwrap_or(code_label))
    }
}

/// Accumulates what each matching rule asks for: deny beats step-up beats allow.
struct Rules {
    action: DestinationAction,
    would: DestinationAction,
    reasons: Vec<Reason>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            action: DestinationAction::Allow,
            would: DestinationAction::Allow,
            reasons: Vec::new(),
        }
    }
}

impl Rules {
    fn add(&mut self, action: DestinationAction, monitor_only: bool, reason: Reason) {
        if !monitor_only {
            self.action = self.action.max(action);
        }
        self.would = self.would.max(action);
        self.reasons.push(reason);
    }

    /// A configured entry; its rule is only built when the entry asks for more than allow.
    fn configured(
        &mut self,
        action: CountryAction,
        as_typed: bool,
        rule: impl FnOnce(&'static str) -> DestinationRule,
    ) {
        let (effective, monitor_only) = match action {
            CountryAction::Allow => return,
            CountryAction::Deny => (DestinationAction::Deny, false),
            CountryAction::StepUp => (DestinationAction::StepUp, false),
            CountryAction::Monitor => (DestinationAction::Deny, true),
        };
        let rule = rule(action.as_str());
        self.add(
            effective,
            monitor_only,
            Reason::Destination { as_typed, rule },
        );
    }
}

/// `GB`, `gb` → a region known to the metadata; `+44`, `44` → a calling code in use.
fn parse_country_key(raw: &str) -> Result<CountryKey, &'static str> {
    let key = raw.trim();
    let digits = key.strip_prefix('+').unwrap_or(key);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match digits.parse::<u16>() {
            Ok(code) if DATABASE.region(&code).is_some() => Ok(CountryKey::Code(code)),
            _ => Err("not a calling code in use, such as +44"),
        };
    }
    let region = key.to_ascii_uppercase();
    if region.len() == 2
        && region.bytes().all(|b| b.is_ascii_uppercase())
        && DATABASE.by_id(region.as_str()).is_some()
    {
        Ok(CountryKey::Region(region))
    } else {
        Err("not an ISO 3166 region (GB) or a calling code (+44)")
    }
}

/// `+44 7700 900-123`, `0044 (0)7700.900123` → `+447700900123`; `None` for anything that
/// is not a `+` (or `00`) followed by 1 to 15 digits once the usual separators are gone.
/// There is no default region: a national number (`07700 900123`) is ambiguous.
fn normalize(target: &str) -> Option<String> {
    if target.len() > MAX_TARGET_CHARS {
        return None;
    }
    let mut out = String::with_capacity(MAX_E164_DIGITS + 1);
    for (i, c) in target.trim().chars().enumerate() {
        match c {
            '+' if i == 0 => out.push('+'),
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
            _ => return None,
        }
    }
    if let Some(rest) = out.strip_prefix("00") {
        out = format!("+{rest}");
    }
    let digits = out.strip_prefix('+')?;
    // One digit of slack for a national prefix written after the calling code
    // (`+44 (0)20 …`), which the parser drops; the parsed number is checked again.
    (!digits.is_empty() && digits.len() <= MAX_E164_DIGITS + 1).then_some(out)
}

/// Parse `target` into a [`Phone`]; `None` when it is not a phone number at all. A number
/// that parses but fits no range of its country has kind `unknown` (possible length) or
/// `invalid` (impossible length).
///
/// Parsing and matching follow libphonenumber, on the metadata the `phonenumber` crate
/// compiles in (the `numbering` module): each region's patterns are compiled once, on
/// its first number, and no lock is taken.
pub fn parse_phone(target: &str) -> Option<Phone> {
    let normalized = normalize(target)?;
    let number = numbering::parse(normalized.strip_prefix('+')?)?;
    let e164 = format!("+{}{}", number.code, number.national);
    if e164.len() - 1 > MAX_E164_DIGITS {
        return None;
    }
    // The E.164 form must read back as itself. The parser drops a national prefix written
    // after the calling code (`+44 (0)20 …`); a number that starts with the prefix again
    // after that (`+880 0 0…`) could lose one more digit each time it is read, so one
    // target would have several E.164 forms (and velocity keys). Refused as unparseable.
    if e164 != normalized && numbering::parse(e164.strip_prefix('+')?).as_ref() != Some(&number) {
        return None;
    }
    let (region, kind) = numbering::classify(number.code, &number.national);
    Some(Phone {
        e164,
        region,
        calling_code: number.code,
        kind,
    })
}

/// `target` read digit for digit after its calling code, when that differs from the parsed
/// `phone` (a national prefix was dropped or rewritten) and could be a number: another
/// destination a less forgiving reader might send to. A reading that is no possible
/// number (too long, or an impossible length for its country) is no destination.
fn as_typed(target: &str, phone: &Phone) -> Option<Phone> {
    let typed = normalize(target)?;
    if typed == phone.e164 || typed.len() - 1 > MAX_E164_DIGITS {
        return None;
    }
    let code = phone.calling_code.to_string();
    let national = typed.strip_prefix('+')?.strip_prefix(code.as_str())?;
    let (region, kind) = numbering::classify(phone.calling_code, national);
    (kind != NumberKind::Invalid).then_some(Phone {
        e164: typed,
        region,
        calling_code: phone.calling_code,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::Type;
    use DestinationAction::{Allow, Deny, StepUp};

    fn policy(config: DestinationConfig) -> DestinationPolicy {
        DestinationPolicy::from_config(&config).unwrap()
    }

    fn with_countries(entries: &[(&str, CountryAction)]) -> DestinationConfig {
        DestinationConfig {
            countries: entries.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..DestinationConfig::default()
        }
    }

    fn labels(verdict: &DestinationVerdict) -> Vec<String> {
        verdict.reasons.iter().map(ToString::to_string).collect()
    }

    /// `action e164 region kind | reasons…`: one line per verdict, for tables.
    fn summary(verdict: &DestinationVerdict) -> String {
        let phone = verdict.phone.as_ref();
        let mut line = format!(
            "{} {} {} {}",
            verdict.action.as_str(),
            phone.map_or("-", |p| p.e164.as_str()),
            phone.and_then(|p| p.region.as_deref()).unwrap_or("-"),
            phone.map_or("-", |p| p.kind.as_str()),
        );
        for reason in &verdict.reasons {
            line.push_str(" | ");
            line.push_str(&reason.to_string());
        }
        line
    }

    #[test]
    fn default_policy_table() {
        let policy = DestinationPolicy::default();
        let table = [
            // An ordinary UK mobile.
            ("+447912345678", "allow +447912345678 GB mobile"),
            // Separators, 00 for +, and a national prefix written after the country code.
            ("0044 (0)7912 345-678", "allow +447912345678 GB mobile"),
            (" +44 7912.345 678 ", "allow +447912345678 GB mobile"),
            // UK 09 and US 900 premium rate: the IRSF target.
            (
                "+44 909 879 0000",
                "deny +449098790000 GB premium_rate | destination:type:premium_rate:deny",
            ),
            (
                "+1 900 234 5678",
                "deny +19002345678 US premium_rate | destination:type:premium_rate:deny",
            ),
            // UK 056 VoIP, 070 personal numbers, 055 corporate numbers (UAN).
            (
                "+44 56 1234 5678",
                "step_up +445612345678 GB voip | destination:type:voip:step_up",
            ),
            (
                "+44 70 1234 5678",
                "deny +447012345678 GB personal_number | destination:type:personal_number:deny",
            ),
            (
                "+44 55 1234 5678",
                "deny +445512345678 GB uan | destination:type:uan:deny",
            ),
            // Ofcom's drama range 07700 900xxx fits no UK range: unknown, denied.
            (
                "+447700900123",
                "deny +447700900123 - unknown | destination:type:unknown:deny",
            ),
            // Too short for any UK number.
            (
                "+44 123",
                "deny +44123 - invalid | destination:type:invalid:deny",
            ),
            // Satellite (GMSS, Inmarsat): denied by prefix whatever the type.
            (
                "+881 6 1234 5678",
                "deny +881612345678 - mobile | destination:prefix:+881",
            ),
            (
                "+870 773 111 111",
                "deny +870773111111 - mobile | destination:prefix:+870",
            ),
            // A national prefix after the calling code is dropped, and the digits as typed
            // are judged too when they could be a number: Egypt's `0` then `3…` reads as
            // a fixed line, but `+20 03…` as typed is a possible number of no known range.
            (
                "+20 0 3 222 2222",
                "deny +2032222222 EG fixed_line | destination:as_typed:type:unknown:deny",
            ),
            ("+20 3 222 2222", "allow +2032222222 EG fixed_line"),
            // Russia's national prefix 8 is also the first digit of its toll-free range.
            ("+7 800 123 4567", "allow +78001234567 RU toll_free"),
            ("+7 8 912 345 6789", "allow +79123456789 RU mobile"),
            // A national number's leading zeros are kept when typing it.
            ("+39 02 1234 5678", "allow +390212345678 IT fixed_line"),
            ("+225 07 0123 4567", "allow +2250701234567 CI mobile"),
            // Not phone numbers: no default region, no letters, no extensions, no junk.
            ("07912 345678", "deny - - - | destination:unparseable"),
            (
                "+44 7912 345678 ext. 12",
                "deny - - - | destination:unparseable",
            ),
            ("+1-800-FLOWERS", "deny - - - | destination:unparseable"),
            ("hello", "deny - - - | destination:unparseable"),
            ("", "deny - - - | destination:unparseable"),
            ("+", "deny - - - | destination:unparseable"),
            ("+44+7912345678", "deny - - - | destination:unparseable"),
            ("+999 1234 5678", "deny - - - | destination:unparseable"),
            (
                "+4479123456789012345",
                "deny - - - | destination:unparseable",
            ),
        ];
        for (target, expected) in table {
            let verdict = policy.check(target);
            assert_eq!(summary(&verdict), expected, "{target:?}");
            assert_eq!(verdict.would, verdict.action, "{target:?}");
        }
    }

    #[test]
    fn country_entries_by_region_and_calling_code() {
        use CountryAction as C;
        let policy = policy(with_countries(&[
            ("+1", C::Deny),
            ("US", C::Allow),
            ("ru", C::Deny),
            ("44", C::StepUp),
            ("IM", C::Allow),
        ]));
        let table: &[(&str, DestinationAction, &[&str])] = &[
            // The region entry beats its calling code's.
            ("+1 650 253 0000", Allow, &[]),
            // Bahamas shares +1 and has no entry of its own.
            ("+1 242 359 1234", Deny, &["destination:country:+1:deny"]),
            ("+7 912 345 6789", Deny, &["destination:country:RU:deny"]),
            (
                "+44 7912 345678",
                StepUp,
                &["destination:country:+44:step_up"],
            ),
            ("+44 7624 123456", Allow, &[]),
            // Deny beats step-up; every contributing rule is reported.
            (
                "+44 909 879 0000",
                Deny,
                &[
                    "destination:country:+44:step_up",
                    "destination:type:premium_rate:deny",
                ],
            ),
            ("+33 6 12 34 56 78", Allow, &[]),
        ];
        for (target, action, reasons) in table {
            let verdict = policy.check(target);
            assert_eq!(verdict.action, *action, "{target}");
            assert_eq!(labels(&verdict), *reasons, "{target}");
        }
    }

    #[test]
    fn default_action_applies_to_countries_without_entry() {
        let policy = policy(DestinationConfig {
            default: CountryAction::Deny,
            ..with_countries(&[("GB", CountryAction::Allow)])
        });
        assert_eq!(policy.check("+44 7912 345678").action, Allow);
        let fr = policy.check("+33 6 12 34 56 78");
        assert_eq!(fr.action, Deny);
        assert_eq!(labels(&fr), ["destination:country:FR:deny"]);
        // A non-geographic code is named by its calling code.
        let intl = policy.check("+800 1234 5678");
        assert_eq!(intl.action, Deny);
        assert_eq!(labels(&intl), ["destination:country:+800:deny"]);
    }

    #[test]
    fn monitor_entries_and_monitor_mode_report_but_allow() {
        let policy = policy(with_countries(&[("GB", CountryAction::Monitor)]));
        let verdict = policy.check("+44 7912 345678");
        assert_eq!(verdict.action, Allow);
        assert_eq!(verdict.would, Deny);
        assert!(verdict.would_deny());
        assert_eq!(labels(&verdict), ["destination:country:GB:monitor"]);
        // A monitored entry does not soften an enforcing one.
        let premium = policy.check("+44 909 879 0000");
        assert_eq!(premium.action, Deny);
        assert!(!premium.would_deny());

        let monitoring = policy_monitoring();
        for target in ["+44 909 879 0000", "+881 6 1234 5678", "garbage"] {
            let verdict = monitoring.check(target);
            assert_eq!(verdict.action, Allow, "{target}");
            assert_eq!(verdict.would, Deny, "{target}");
            assert!(verdict.would_deny());
        }
        let voip = monitoring.check("+44 56 1234 5678");
        assert_eq!((voip.action, voip.would), (Allow, StepUp));
    }

    fn policy_monitoring() -> DestinationPolicy {
        policy(DestinationConfig {
            monitor: true,
            ..DestinationConfig::default()
        })
    }

    #[test]
    fn configured_number_types_override_defaults_one_by_one() {
        let config: DestinationConfig = serde_json::from_value(serde_json::json!({
            "number_types": { "toll_free": "deny", "voip": "allow" },
            "deny_prefixes": ["+4479"],
        }))
        .unwrap();
        let policy = policy(config);
        assert_eq!(policy.check("+44 800 123 4567").action, Deny);
        assert_eq!(policy.check("+44 56 1234 5678").action, Allow);
        // Not listed: the default stays.
        assert_eq!(policy.check("+44 909 879 0000").action, Deny);
        // The prefix list replaces the defaults.
        assert_eq!(policy.check("+881 6 1234 5678").action, Allow);
        let own = policy.check("+44 7912 345678");
        assert_eq!(labels(&own), ["destination:prefix:+4479"]);
    }

    #[test]
    fn config_problems_are_all_reported_with_their_keys() {
        let config = DestinationConfig {
            deny_prefixes: vec![
                "+881".into(),
                "881".into(),
                "+88a".into(),
                "+".into(),
                "+881".into(),
            ],
            ..with_countries(&[
                ("XX", CountryAction::Deny),
                ("+999", CountryAction::Deny),
                ("+44", CountryAction::Deny),
                ("44", CountryAction::Deny),
                ("gb", CountryAction::Deny),
                ("GB", CountryAction::Allow),
                ("United Kingdom", CountryAction::Deny),
            ])
        };
        let problems = DestinationPolicy::from_config(&config).unwrap_err();
        let mut keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "countries.+999",
                "countries.44",
                "countries.United Kingdom",
                "countries.XX",
                "countries.gb",
                "deny_prefixes[1]",
                "deny_prefixes[2]",
                "deny_prefixes[3]",
                "deny_prefixes[4]",
            ]
        );
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        let err = serde_json::from_value::<DestinationConfig>(serde_json::json!({
            "countrys": { "GB": "deny" }
        }));
        assert!(err.is_err());
        let err = serde_json::from_value::<DestinationConfig>(serde_json::json!({
            "number_types": { "premium": "deny" }
        }));
        assert!(err.is_err());
    }

    #[test]
    fn every_libphonenumber_type_has_its_own_kind() {
        let types = [
            Type::FixedLine,
            Type::Mobile,
            Type::FixedLineOrMobile,
            Type::TollFree,
            Type::PremiumRate,
            Type::SharedCost,
            Type::PersonalNumber,
            Type::Voip,
            Type::Pager,
            Type::Uan,
            Type::Emergency,
            Type::Voicemail,
            Type::ShortCode,
            Type::StandardRate,
            Type::Carrier,
            Type::NoInternational,
            Type::Unknown,
        ];
        let kinds: Vec<NumberKind> = types.into_iter().map(NumberKind::from).collect();
        for (t, kind) in types.iter().zip(&kinds) {
            // The config spelling is libphonenumber's own (snake_case serde of `Type`).
            assert_eq!(serde_json::to_value(t).unwrap(), kind.as_str());
        }
        let mut all: Vec<NumberKind> = kinds.clone();
        all.push(NumberKind::Invalid);
        assert_eq!(all, NumberKind::ALL);
        for kind in NumberKind::ALL {
            let parsed: NumberKind = serde_json::from_value(kind.as_str().into()).unwrap();
            assert_eq!(parsed, kind);
            // Every kind has a deliberate default: listed, or allowed on purpose.
            let listed = default_number_types().contains_key(&kind);
            let allowed = matches!(
                kind,
                NumberKind::Mobile
                    | NumberKind::FixedLine
                    | NumberKind::FixedLineOrMobile
                    | NumberKind::TollFree
            );
            assert!(listed != allowed, "{kind:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_number() {
        let verdict = DestinationPolicy::default().check("+44 7912 345678");
        let text = format!("{verdict:?}");
        assert!(
            !text.contains("7912345678") && !text.contains("79123"),
            "{text}"
        );
        assert!(text.contains("+44") && text.contains("78"), "{text}");
        let phone = verdict.phone.unwrap();
        assert_eq!(phone.masked(), "+44••••••••78");
    }

    #[test]
    fn a_parsed_number_reads_back_as_itself() {
        // A national prefix after the calling code is dropped, and the result is stable.
        for (target, e164) in [
            ("0044 (0)7912 345-678", "+447912345678"),
            ("+44 0 20 7946 0000", "+442079460000"),
            ("+880 0 1712 345678", "+8801712345678"),
            ("+39 02 1234 5678", "+390212345678"),
        ] {
            let phone = parse_phone(target).unwrap();
            assert_eq!(phone.e164, e164);
            assert_eq!(parse_phone(&phone.e164).as_ref(), Some(&phone), "{target}");
        }
        // `+880 0000000005678` read as `+880 000000005678`, and that as `+880 00000005678`:
        // one target, several numbers (found by fuzzing). Refused.
        // A prefix written twice would be dropped once now and once more on the next read.
        for target in [
            "+8800000000005678",
            "+880 00 0000 5678",
            "+44 00 0 7912 345678",
            "+44 0 0 20 7946 0000",
            "+880 0 0 1712 345678",
        ] {
            assert_eq!(parse_phone(target), None, "{target}");
        }
    }

    #[test]
    fn parsing_arbitrary_digit_strings_never_panics() {
        // The parser slices digit strings and rewrites national prefixes: sweep every
        // calling code at several lengths, with and without a national prefix.
        for code in 1..=999u32 {
            for tail in [
                "0",
                "00",
                "00000",
                "1234567",
                "0123456789",
                "8800123456",
                "99999999999",
                "1234567890123",
            ] {
                let _ = parse_phone(&format!("+{code}{tail}"));
            }
        }
    }
}
