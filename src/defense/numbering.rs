//! Numbering plans: libphonenumber's metadata, as the `phonenumber` crate compiles it in,
//! with every pattern compiled once into a regex of our own. [`parse`] splits an
//! international number into calling code and national number, and [`classify`] tells
//! the national number's region and type, both the way libphonenumber does.
//!
//! phonenumber's own parser fetches each pattern from one global 100-entry regex cache
//! behind a mutex. Numbers from many countries need far more patterns than that, so
//! every call recompiled some (about 1.5 ms a number): a cost an attacker spraying
//! countries could choose. Here a region's patterns are compiled on its first number and
//! kept: memory is bounded by the metadata, and no lock is shared between regions.

use std::sync::OnceLock;

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::Type;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

/// Digits in the longest E.164 number (ITU-T E.164: 15, calling code included).
pub(crate) const MAX_E164_DIGITS: usize = 15;

/// A number's type. One variant per libphonenumber type, plus `invalid` for a number that
/// parses but fits no range of its country (or has no country).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberKind {
    FixedLine,
    Mobile,
    /// Regions (such as the NANP) where fixed and mobile ranges cannot be told apart.
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    PersonalNumber,
    Voip,
    Pager,
    Uan,
    Emergency,
    Voicemail,
    ShortCode,
    StandardRate,
    Carrier,
    NoInternational,
    Unknown,
    Invalid,
}

impl NumberKind {
    /// Every kind, for the tests.
    #[cfg(test)]
    pub(crate) const ALL: [NumberKind; 18] = [
        Self::FixedLine,
        Self::Mobile,
        Self::FixedLineOrMobile,
        Self::TollFree,
        Self::PremiumRate,
        Self::SharedCost,
        Self::PersonalNumber,
        Self::Voip,
        Self::Pager,
        Self::Uan,
        Self::Emergency,
        Self::Voicemail,
        Self::ShortCode,
        Self::StandardRate,
        Self::Carrier,
        Self::NoInternational,
        Self::Unknown,
        Self::Invalid,
    ];

    /// The config and label spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::FixedLine => "fixed_line",
            Self::Mobile => "mobile",
            Self::FixedLineOrMobile => "fixed_line_or_mobile",
            Self::TollFree => "toll_free",
            Self::PremiumRate => "premium_rate",
            Self::SharedCost => "shared_cost",
            Self::PersonalNumber => "personal_number",
            Self::Voip => "voip",
            Self::Pager => "pager",
            Self::Uan => "uan",
            Self::Emergency => "emergency",
            Self::Voicemail => "voicemail",
            Self::ShortCode => "short_code",
            Self::StandardRate => "standard_rate",
            Self::Carrier => "carrier",
            Self::NoInternational => "no_international",
            Self::Unknown => "unknown",
            Self::Invalid => "invalid",
        }
    }
}

impl From<Type> for NumberKind {
    fn from(kind: Type) -> Self {
        // Exhaustive on purpose: a new libphonenumber type must be placed by hand.
        match kind {
            Type::FixedLine => Self::FixedLine,
            Type::Mobile => Self::Mobile,
            Type::FixedLineOrMobile => Self::FixedLineOrMobile,
            Type::TollFree => Self::TollFree,
            Type::PremiumRate => Self::PremiumRate,
            Type::SharedCost => Self::SharedCost,
            Type::PersonalNumber => Self::PersonalNumber,
            Type::Voip => Self::Voip,
            Type::Pager => Self::Pager,
            Type::Uan => Self::Uan,
            Type::Emergency => Self::Emergency,
            Type::Voicemail => Self::Voicemail,
            Type::ShortCode => Self::ShortCode,
            Type::StandardRate => Self::StandardRate,
            Type::Carrier => Self::Carrier,
            Type::NoInternational => Self::NoInternational,
            Type::Unknown => Self::Unknown,
        }
    }
}

/// libphonenumber's `MIN_LENGTH_FOR_NSN`: a shorter national number is no number.
const MIN_NATIONAL_DIGITS: usize = 2;

/// libphonenumber's `MAX_LENGTH_FOR_NSN`.
const MAX_NATIONAL_DIGITS: usize = 17;

/// Calling codes have one to three digits (ITU-T E.164).
const MAX_CODE_DIGITS: usize = 3;

/// Compiled size cap of one pattern, or of a region's set of number ranges. The largest
/// needs a fraction of this; the `every_pattern_compiles` test keeps it so.
///
/// Patterns are compiled without Unicode: the numbers are ASCII digits, and with `\d`
/// meaning every script's digits the compiled plans of all regions took about 150 MiB
/// instead of about 15.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Load the metadata and build the plan table now rather than on the first number. No
/// pattern is compiled yet.
pub(crate) fn load() {
    Plans::get();
}

/// A number split off its `+`: calling code and national significant number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub code: u16,
    /// The national significant number, leading zeros kept (Italy's `02…`).
    pub national: String,
}

/// Parse `digits`, what follows the `+` of an international number, as libphonenumber
/// parses a number written with `+` and no default region: the calling code is the
/// shortest prefix of one to three digits that is a code in use, and a national prefix
/// written after it (`+44 (0)20…`) is dropped where the country's rules say so.
pub(crate) fn parse(digits: &str) -> Option<Parsed> {
    // libphonenumber wants three digits after the `+` before it looks for a code, and a
    // calling code never starts with 0.
    if digits.len() <= MIN_NATIONAL_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return None;
    }
    let plans = Plans::get();
    let (code, national) = (1..=MAX_CODE_DIGITS).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        let rest = digits.get(len..)?;
        (!plans.for_code(code).is_empty()).then_some((code, rest))
    })?;
    if national.len() < MIN_NATIONAL_DIGITS {
        return None;
    }
    // The national prefix is read with the rules of the code's main country, whichever
    // region the number turns out to be in.
    let main = plans.for_code(code).first()?.compiled();
    let national = match main.strip_national_prefix(national) {
        Some(stripped) if main.keeps_stripped(stripped.len()) => stripped,
        _ => national.to_owned(),
    };
    (MIN_NATIONAL_DIGITS..=MAX_NATIONAL_DIGITS)
        .contains(&national.len())
        .then_some(Parsed { code, national })
}

/// The region and kind of the national significant number `national` under `code`:
/// libphonenumber's `getRegionCodeForNumber` and `getNumberType`. A number that fits no
/// range of its country is `unknown` when some number of the country has its length,
/// `invalid` otherwise; a number of a shared code that no region claims has no region.
pub(crate) fn classify(code: u16, national: &str) -> (Option<String>, NumberKind) {
    let plans = Plans::get().for_code(code);
    let (source, kind) = match plans {
        [] => return (None, NumberKind::Invalid),
        [only] => (Some(only), only.compiled().number_type(national)),
        // A shared code: the first region whose leading digits the number has, or (for
        // regions without) whose ranges it fits.
        _ => plans
            .iter()
            .find_map(|plan| {
                let kind = match &plan.leading_digits {
                    Some(leading) if !leading.is_match(national.as_bytes()) => return None,
                    Some(_) => plan.compiled().number_type(national),
                    None => match plan.compiled().number_type(national) {
                        NumberKind::Unknown => return None,
                        kind => kind,
                    },
                };
                Some((Some(plan), kind))
            })
            .unwrap_or((None, NumberKind::Unknown)),
    };
    let region = source
        .map(|plan| plan.meta.id())
        .filter(|id| id.len() == 2)
        .map(str::to_owned);
    if kind != NumberKind::Unknown {
        return (region, kind);
    }
    // The code's main country is listed first.
    let possible = source
        .or(plans.first())
        .is_some_and(|plan| plan.compiled().lengths.possible(national.len()));
    let kind = if possible {
        NumberKind::Unknown
    } else {
        NumberKind::Invalid
    };
    (region, kind)
}

/// Whether `code` is a country calling code some numbering plan uses.
pub(crate) fn is_calling_code(code: u16) -> bool {
    !Plans::get().for_code(code).is_empty()
}

/// Every numbering plan of the metadata, by calling code.
struct Plans {
    /// Indexed by calling code: the plans sharing it, the main country first.
    by_code: Vec<Vec<Plan>>,
}

impl Plans {
    fn get() -> &'static Plans {
        static PLANS: OnceLock<Plans> = OnceLock::new();
        PLANS.get_or_init(Plans::build)
    }

    fn build() -> Plans {
        let database: &'static phonenumber::metadata::Database = &DATABASE;
        let by_code = (0..=999u16)
            .map(|code| {
                database
                    .by_code(&code)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Plan::new)
                    .collect()
            })
            .collect();
        Plans { by_code }
    }

    fn for_code(&self, code: u16) -> &[Plan] {
        self.by_code
            .get(usize::from(code))
            .map_or(&[], Vec::as_slice)
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &Plan> {
        self.by_code.iter().flatten()
    }
}

/// One region's plan, or one non-geographic code's (`+800`, `+881`, …).
struct Plan {
    meta: &'static Metadata,
    /// For regions that share a calling code: the national numbers that belong here
    /// (a prefix match). Compiled with the table, as every number of a shared code may
    /// need them all.
    leading_digits: Option<Pattern>,
    compiled: OnceLock<Compiled>,
}

impl Plan {
    fn new(meta: &'static Metadata) -> Plan {
        Plan {
            meta,
            leading_digits: meta.leading_digits().map(|p| Pattern::new(p.as_str())),
            compiled: OnceLock::new(),
        }
    }

    fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| Compiled::new(self.meta))
    }
}

/// A region's patterns, compiled on first use.
struct Compiled {
    /// The national prefix (and carrier code) that may precede a national number:
    /// `nationalPrefixForParsing`, else the national prefix itself. A prefix match.
    national_prefix: Option<Pattern>,
    /// How a matched national prefix rewrites the number (`$1`, `868$1`).
    transform: Option<&'static str>,
    lengths: Lengths,
    /// The general range (index [`GENERAL`]) and the range of each type.
    ranges: Ranges,
    /// The types tried before fixed line and mobile, in libphonenumber's order, and
    /// their ranges.
    special: Vec<(NumberKind, usize)>,
    fixed_line: Option<usize>,
    mobile: Option<usize>,
    /// Fixed-line and mobile ranges cannot be told apart (the NANP).
    same_fixed_and_mobile: bool,
}

/// Index of the general range, which every number of the region fits.
const GENERAL: usize = 0;

impl Compiled {
    fn new(meta: &'static Metadata) -> Compiled {
        let d = meta.descriptors();
        let national_prefix = match (meta.national_prefix_for_parsing(), meta.national_prefix()) {
            (Some(pattern), _) => Some(Pattern::new(pattern.as_str())),
            (None, Some(prefix)) if !prefix.is_empty() => {
                Some(Pattern::new(&regex::escape(prefix)))
            }
            (None, _) => None,
        };
        let lengths = Lengths::pooled(meta);
        let mut ranges = RangesBuilder::default();
        // phonenumber leaves the general range's lengths empty: libphonenumber's are
        // those of all types pooled.
        ranges.push(d.general(), Some(&lengths.possible));
        let special = [
            (NumberKind::PremiumRate, d.premium_rate()),
            (NumberKind::TollFree, d.toll_free()),
            (NumberKind::SharedCost, d.shared_cost()),
            (NumberKind::Voip, d.voip()),
            (NumberKind::PersonalNumber, d.personal_number()),
            (NumberKind::Pager, d.pager()),
            (NumberKind::Uan, d.uan()),
            (NumberKind::Voicemail, d.voicemail()),
        ]
        .into_iter()
        .filter_map(|(kind, desc)| Some((kind, ranges.push(desc?, None))))
        .collect();
        let fixed_line = d.fixed_line().map(|desc| ranges.push(desc, None));
        let mobile = d.mobile().map(|desc| ranges.push(desc, None));
        Compiled {
            national_prefix,
            transform: meta.national_prefix_transform_rule(),
            lengths,
            ranges: ranges.build(),
            special,
            fixed_line,
            mobile,
            same_fixed_and_mobile: d.fixed_line().map(|f| f.national_number().as_str())
                == d.mobile().map(|m| m.national_number().as_str()),
        }
    }

    /// libphonenumber's `maybeStripNationalPrefixAndCarrierCode`: `national` without the
    /// national prefix it starts with, or rewritten by the transform rule; `None` when
    /// there is no prefix, or when dropping it would turn a number that fits the
    /// general range into one that does not (the prefix digit was part of the number,
    /// as in Russia's 8-800).
    fn strip_national_prefix(&self, national: &str) -> Option<String> {
        let captures = self
            .national_prefix
            .as_ref()?
            .regex()?
            .captures(national.as_bytes())?;
        let end = captures.get(0)?.end();
        let viable = self.ranges.fits(national, GENERAL);
        let last_group_matched = captures.get(captures.len() - 1).is_some();
        let stripped = match self.transform {
            Some(rule) if !rule.is_empty() && last_group_matched => {
                let mut out = Vec::with_capacity(MAX_NATIONAL_DIGITS);
                captures.expand(rule.as_bytes(), &mut out);
                out.extend_from_slice(national.as_bytes().get(end..)?);
                String::from_utf8(out).ok()?
            }
            _ => national.get(end..)?.to_owned(),
        };
        (!viable || self.ranges.fits(&stripped, GENERAL)).then_some(stripped)
    }

    /// libphonenumber's `testNumberLength` as its parser uses it: a stripped number is
    /// kept when its length is possible, or longer than any (`TOO_LONG`); not when it is
    /// too short, of an impossible length in between, or only dialable locally.
    fn keeps_stripped(&self, len: usize) -> bool {
        !self.lengths.local_only(len)
            && (self.lengths.possible(len) || self.lengths.max().is_some_and(|max| len > max))
    }

    /// libphonenumber's `getNumberTypeHelper`: the first type whose range `national`
    /// fits, in its order; `Unknown` when none does.
    fn number_type(&self, national: &str) -> NumberKind {
        let fitting = self.ranges.fitting(national);
        let fits = |range: Option<usize>| range.is_some_and(|i| fitting & (1 << i) != 0);
        if !fits(Some(GENERAL)) {
            return NumberKind::Unknown;
        }
        if let Some((kind, _)) = self.special.iter().find(|(_, i)| fits(Some(*i))) {
            return *kind;
        }
        if fits(self.fixed_line) {
            return if self.same_fixed_and_mobile || fits(self.mobile) {
                NumberKind::FixedLineOrMobile
            } else {
                NumberKind::FixedLine
            };
        }
        if !self.same_fixed_and_mobile && fits(self.mobile) {
            NumberKind::Mobile
        } else {
            NumberKind::Unknown
        }
    }
}

/// A region's number ranges: each a pattern the whole national number must match and
/// the lengths it allows, the patterns compiled into one regex set so that a number is
/// matched against all of them in one pass, and one compiled object per region is kept.
struct Ranges {
    set: Result<RegexSet, regex::Error>,
    /// Per range, in set order: the lengths it allows (empty: any).
    lengths: Vec<Vec<usize>>,
}

impl Ranges {
    /// A bit per range that `national` fits: libphonenumber's `isNumberMatchingDesc`, a
    /// length the range allows and the whole number matching its pattern. Nothing fits
    /// a number the general range does not.
    fn fitting(&self, national: &str) -> u32 {
        let Ok(set) = &self.set else {
            return 0;
        };
        let len = national.len();
        let allowed = self
            .lengths
            .iter()
            .enumerate()
            .filter(|(_, lengths)| lengths.is_empty() || lengths.contains(&len))
            .fold(0u32, |bits, (i, _)| bits | 1 << i);
        if allowed & (1 << GENERAL) == 0 {
            return 0;
        }
        set.matches(national.as_bytes())
            .iter()
            .fold(0u32, |bits, i| bits | 1 << i)
            & allowed
    }

    fn fits(&self, national: &str, range: usize) -> bool {
        self.fitting(national) & (1 << range) != 0
    }
}

#[derive(Default)]
struct RangesBuilder {
    patterns: Vec<String>,
    lengths: Vec<Vec<usize>>,
}

impl RangesBuilder {
    /// Add `desc`'s range; `lengths` replaces its own. Returns the range's index.
    fn push(&mut self, desc: &Descriptor, lengths: Option<&[usize]>) -> usize {
        self.patterns
            .push(format!("^(?:{})$", desc.national_number().as_str()));
        self.lengths.push(lengths.map_or_else(
            || {
                desc.possible_length()
                    .iter()
                    .map(|&l| usize::from(l))
                    .collect()
            },
            <[usize]>::to_vec,
        ));
        self.patterns.len() - 1
    }

    fn build(self) -> Ranges {
        let set = RegexSetBuilder::new(&self.patterns)
            .ignore_whitespace(true)
            .unicode(false)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build();
        Ranges {
            set,
            lengths: self.lengths,
        }
    }
}

/// The lengths of a region's numbers, pooled over its number types, as libphonenumber
/// computes them for its general descriptor (phonenumber leaves that one empty).
struct Lengths {
    /// Ascending.
    possible: Vec<usize>,
    /// Lengths only dialable within an area (none of them in `possible`).
    local_only: Vec<usize>,
}

impl Lengths {
    fn pooled(meta: &Metadata) -> Lengths {
        let d = meta.descriptors();
        let types = [
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ];
        let mut possible: Vec<usize> = Vec::new();
        let mut local_only: Vec<usize> = Vec::new();
        for desc in types.into_iter().flatten() {
            possible.extend(desc.possible_length().iter().map(|&l| usize::from(l)));
            local_only.extend(desc.possible_local_length().iter().map(|&l| usize::from(l)));
        }
        possible.sort_unstable();
        possible.dedup();
        local_only.retain(|l| !possible.contains(l));
        local_only.sort_unstable();
        local_only.dedup();
        Lengths {
            possible,
            local_only,
        }
    }

    fn possible(&self, len: usize) -> bool {
        self.possible.contains(&len)
    }

    fn local_only(&self, len: usize) -> bool {
        self.local_only.contains(&len)
    }

    fn max(&self) -> Option<usize> {
        self.possible.last().copied()
    }
}

/// A leading-digits or national-prefix pattern, compiled to match at the start of a
/// national number (libphonenumber's `lookingAt`). A pattern that does not compile
/// matches nothing; `every_pattern_compiles` makes sure none is in that state.
struct Pattern(Result<Regex, regex::Error>);

impl Pattern {
    fn new(source: &str) -> Pattern {
        Pattern(
            RegexBuilder::new(&format!("^(?:{source})"))
                .ignore_whitespace(true)
                .unicode(false)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build(),
        )
    }

    fn regex(&self) -> Option<&Regex> {
        self.0.as_ref().ok()
    }

    fn is_match(&self, digits: &[u8]) -> bool {
        self.regex().is_some_and(|re| re.is_match(digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        let mut ranges = 0;
        for plan in Plans::get().iter() {
            let c = plan.compiled();
            let name = format!("{} (+{})", plan.meta.id(), plan.meta.country_code());
            for pattern in plan.leading_digits.iter().chain(&c.national_prefix) {
                assert!(pattern.0.is_ok(), "{name}: {:?}", pattern.0);
            }
            assert!(c.ranges.set.is_ok(), "{name}: {:?}", c.ranges.set);
            assert!(c.ranges.lengths.len() <= 32, "{name}");
            ranges += c.ranges.lengths.len();
        }
        assert!(ranges > 1000, "{ranges}");
    }

    #[test]
    fn transform_rules_read_the_same_as_in_java() {
        // `Captures::expand` reads `$12` as group 12 and `$1a` as a group named `1a`;
        // libphonenumber's rules are digits then one `$n` at the end, where the two
        // syntaxes agree.
        for plan in Plans::get().iter() {
            if let Some(rule) = plan.meta.national_prefix_transform_rule() {
                let (head, group) = rule.split_once('$').unwrap();
                assert!(head.bytes().all(|b| b.is_ascii_digit()), "{rule}");
                assert!(group.len() == 1 && group.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }

    #[test]
    fn parse_table() {
        let table: &[(&str, Option<(u16, &str)>)] = &[
            ("442079460000", Some((44, "2079460000"))),
            // A national prefix after the calling code is dropped…
            ("4402079460000", Some((44, "2079460000"))),
            // …once, and only while what is left is still a possible number.
            ("44002079460000", Some((44, "02079460000"))),
            ("4401", Some((44, "01"))),
            // Russia's national prefix is 8, and so is the first digit of its toll-free
            // and premium ranges: the number stays whole.
            ("78001234567", Some((7, "8001234567"))),
            ("789123456789", Some((7, "9123456789"))),
            // Countries whose numbers keep a leading zero have no national prefix.
            ("390212345678", Some((39, "0212345678"))),
            ("2250701234567", Some((225, "0701234567"))),
            // NANP: the trunk 1 after the code.
            ("116502530000", Some((1, "6502530000"))),
            // The shortest prefix that is a code in use.
            ("80012345678", Some((800, "12345678"))),
            ("999123456789", None),
            ("0447912345678", None),
            ("44", None),
            ("441", None),
            ("44x7912345678", None),
            ("", None),
        ];
        for (digits, expected) in table {
            let parsed = parse(digits).map(|p| (p.code, p.national));
            let expected = expected.map(|(c, n)| (c, n.to_owned()));
            assert_eq!(parsed, expected, "{digits}");
        }
    }
}
