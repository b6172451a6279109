//! The destination parser against a recorded table: `tests/it/fixtures/phones.tsv` holds, for
//! every example number in the libphonenumber metadata (each region, each number type),
//! the load bench's mobile numbers, and variants of both (`00` for `+`, separators, a
//! national prefix after the calling code, a digit short, a digit long), plus shared and
//! non-geographic calling codes, pseudo-random digits under every calling code and
//! garbage, what `parse_phone` makes of it: E.164 form, region, calling code and kind.
//!
//! A change to the parser or to the metadata shows up here as a list of the rows that
//! moved. To record a deliberate change, run with `OTPGATE_BLESS=1` and review the diff
//! of the fixture.
//!
//! The table was first recorded from the `phonenumber` 0.3 crate's own parser. When
//! otpgate moved to its own parser over the same metadata, 394 of its 9,356 rows changed,
//! each to what libphonenumber itself answers (checked against its Python port,
//! `phonenumbers` 9.0.33, which carries the same metadata release), in four ways shown in
//! [`where_phonenumber_0_3_departed_from_libphonenumber`]:
//!
//! * Number ranges are matched against the whole number (libphonenumber's `matches()`);
//!   phonenumber 0.3 accepted a range that matched only a prefix of the number, so
//!   numbers of a possible length got a type none of the ranges gives them (a 12-digit
//!   Hungarian `+36 80…` was toll free) or a region of a shared code.
//! * A national prefix after the calling code is dropped only when libphonenumber drops
//!   it: once, not when the number fitted the country's ranges and would no longer, and
//!   not when what is left is too short or of an impossible length. phonenumber 0.3 made
//!   none of these checks, and turned Russia's toll-free `+7 800 123 4567` into
//!   `+7001234567`.
//! * The national prefix is read with the rules of the calling code's main country.
//!   phonenumber 0.3 first guessed the region from the unstripped number, found none for
//!   a NANP number written with its trunk 1 (`+1 1 650 253 0000`), and kept the 1; it also
//!   rewrote `+1 868 1234` into `+18688681234` with Trinidad's rule.
//! * A national number of zeros only (`+44 00`) is a number, invalid; phonenumber 0.3
//!   could not store it and gave up.
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use otpgate::defense::destination::parse_phone;
use phonenumber::metadata::{Descriptor, Metadata, DATABASE};

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/phones.tsv")
}

/// Written by hand: the cases the destination policy must get right, named in its docs.
const HANDWRITTEN: &[&str] = &[
    // National prefix written after the calling code, with and without parentheses.
    "+44 (0)20 7946 0000",
    "+44 0 20 7946 0000",
    "+442079460000",
    "0044 (0)20 7946 0000",
    "0044 20 7946 0000",
    "+44 (0)7912 345-678",
    "0044 (0)7912 345-678",
    " +44 7912.345 678 ",
    "+44\u{a0}7912\u{a0}345678",
    "+44 (0) (0)20 7946 0000",
    "+44 00 20 7946 0000",
    // UK ranges of every kind the policy treats apart.
    "+447912345678",
    "+447400123456",
    "+44 909 879 0000",
    "+44 56 1234 5678",
    "+44 70 1234 5678",
    "+44 55 1234 5678",
    "+447700900123",
    "+44 800 123 4567",
    "+44 123",
    // Crown dependencies share +44.
    "+44 1481 256789",
    "+44 7781 123456",
    "+44 1534 456789",
    "+44 7797 712345",
    "+44 1624 756789",
    "+44 7624 123456",
    // A national number's leading zeros are kept where the country keeps them.
    "+39 02 1234 5678",
    "+39 06 6981 2345",
    "+39 06 698 12345",
    "+39 312 345 6789",
    "+39 0",
    "+39 00 1234 5678",
    "+225 07 0123 4567",
    "+225 27 2212 3456",
    "+225 01 2345 6789",
    // NANPA: the US, Canada, and the Caribbean, premium 900.
    "+1 650 253 0000",
    "+1 900 234 5678",
    "+1 800 234 5678",
    "+1 416 555 0123",
    "+1 242 359 1234",
    "+1 242 900 1234",
    "+1 876 210 1234",
    "+1 876 900 1234",
    "+1 868 1234",
    "+1 868 291 1234",
    "+1 809 234 5678",
    "+1 787 234 5678",
    "+1 658 295 1234",
    "+1 1 650 253 0000",
    "+1 234 567",
    // +7: Russia and Kazakhstan; Russian numbers that begin with the national prefix 8.
    "+7 912 345 6789",
    "+7 495 123 4567",
    "+7 800 123 4567",
    "+7 809 123 4567",
    "+7 8 912 345 6789",
    "+7 701 123 4567",
    "+7 727 123 4567",
    // Shared codes.
    "+262 262 16 1234",
    "+262 269 60 1234",
    "+262 639 01 2345",
    "+262 692 12 3456",
    "+590 590 27 1234",
    "+590 690 00 1234",
    "+590 590 87 1234",
    "+599 9 518 1234",
    "+599 715 1234",
    "+599 318 1234",
    "+47 22 12 34 56",
    "+47 406 12 345",
    "+47 79 12 34 56",
    "+61 2 1234 5678",
    "+61 4 1234 5678",
    "+61 8 9162 1234",
    "+61 8 9102 1234",
    "+61 1831 1234 5678",
    "+212 5 2212 3456",
    "+212 5 2888 1234",
    "+212 6 5012 3456",
    "+290 22158",
    "+290 8012",
    "+290 8000",
    "+358 18 12345",
    "+358 41 234 5678",
    "+358 9 1234 5678",
    // Non-geographic codes.
    "+800 1234 5678",
    "+808 1234 5678",
    "+870 773 111 111",
    "+881 6 1234 5678",
    "+882 13 1234 5678",
    "+883 140 000 0000",
    "+888 123 456 789 01",
    "+979 1 2345 6789",
    "+800 123456789",
    // Unknown or impossible calling codes.
    "+999 1234 5678",
    "+28 1234 5678",
    "+42 1234 5678",
    "+80 1234 5678",
    "+0 123 4567",
    "+000 1234",
    "+00447912345678",
    // Too short, too long.
    "+1",
    "+12",
    "+123",
    "+1234",
    "+44 0",
    "+44 00",
    "+44 000000",
    "+4479123456789012",
    "+44791234567890123",
    "+4479123456789012345",
    "+999999999999999",
    "+9999999999999999",
    // Not phone numbers here: no default region, no letters, no extensions, no junk.
    "",
    " ",
    "+",
    "00",
    "0",
    "hello",
    "07912 345678",
    "+44 7912 345678 ext. 12",
    "+44 7912 345678 #12",
    "+1-800-FLOWERS",
    "+44+7912345678",
    "++447912345678",
    "+ 44 7912 345678",
    "+\u{ff14}\u{ff14} 7912 345678",
    "\u{ff0b}447912345678",
    "+44_7912_345678",
    "+44/7912/345678",
    "tel:+44-7912-345678",
    "+44 7912 345678;ext=1",
    "+44 7912 345678                                                   ",
    "0000000000000000000000000000000000000000000000000000000000000000000",
];

/// Example national numbers of every descriptor of `meta`, in a fixed order.
fn examples(meta: &Metadata) -> Vec<&str> {
    let d = meta.descriptors();
    let descriptors: [Option<&Descriptor>; 16] = [
        Some(d.general()),
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.emergency(),
        d.voicemail(),
        d.short_code(),
        d.standard_rate(),
        d.carrier(),
        d.no_international(),
    ];
    descriptors
        .into_iter()
        .flatten()
        .filter_map(Descriptor::example)
        .collect()
}

/// Deterministic digits (xorshift), so the corpus is the same on every run.
struct Digits(u64);

impl Digits {
    fn take(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                char::from(b'0' + (self.0 % 10) as u8)
            })
            .collect()
    }
}

/// Split `digits` into groups of `size` joined by `sep`.
fn grouped(digits: &str, size: usize, sep: &str) -> String {
    digits
        .as_bytes()
        .chunks(size)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Every input of the table, in a fixed order, without repeats.
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = HANDWRITTEN.iter().map(|s| (*s).to_owned()).collect();

    // The load bench's spray list, as clients might write it.
    for line in include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/load/mobiles.txt"
    ))
    .lines()
    {
        let mut fields = line.split_whitespace();
        let (Some(e164), Some(region)) = (fields.next(), fields.next()) else {
            continue;
        };
        if e164.starts_with('#') {
            continue;
        }
        let code = DATABASE.by_id(region).unwrap().country_code().to_string();
        let national = &e164[1 + code.len()..];
        out.push(e164.to_owned());
        out.push(format!("00{}", &e164[1..]));
        out.push(format!("+{code} {}", grouped(national, 3, " ")));
        out.push(format!("+{code}-{}", grouped(national, 4, "-")));
        out.push(format!("+{code} ({}) {}", &national[..2], &national[2..]));
        out.push(format!("+{code} (0){national}"));
    }

    // Every example number of every region and type, and variants of it.
    for code in 1..=999u16 {
        for meta in DATABASE.by_code(&code).unwrap_or_default() {
            for example in examples(meta) {
                out.push(format!("+{code}{example}"));
                if let Some(prefix) = meta.national_prefix() {
                    out.push(format!("+{code}{prefix}{example}"));
                }
                if meta.national_prefix() != Some("0") {
                    out.push(format!("+{code}0{example}"));
                }
                if example.len() > 1 {
                    out.push(format!("+{code}{}", &example[..example.len() - 1]));
                }
                out.push(format!("+{code}{example}1"));
            }
        }
    }

    // Pseudo-random digits under every calling code, and under the leading digits of
    // each region that shares one.
    let mut digits = Digits(0x9e37_79b9_7f4a_7c15);
    for code in 1..=999u16 {
        let Some(metas) = DATABASE.by_code(&code) else {
            if code % 37 == 0 {
                out.push(format!("+{code}{}", digits.take(8)));
            }
            continue;
        };
        for len in 1..=14 {
            out.push(format!("+{code}{}", digits.take(len)));
        }
        out.push(format!("+{code}0{}", digits.take(8)));
        out.push(format!("+{code}00{}", digits.take(8)));
        if metas.len() > 1 {
            for meta in metas {
                for example in examples(meta).into_iter().take(3) {
                    let head = &example[..example.len().min(3)];
                    for len in [4, 5, 7] {
                        out.push(format!("+{code}{head}{}", digits.take(len)));
                    }
                }
            }
        }
    }

    let mut seen = HashSet::new();
    out.retain(|input| seen.insert(input.clone()));
    out
}

/// One fixture row: the input, then `-` (unparseable) or e164, region, code and kind.
fn row(input: &str) -> String {
    let mut line = format!("{input}\t");
    match parse_phone(input) {
        None => line.push('-'),
        Some(phone) => {
            write!(
                line,
                "{}\t{}\t{}\t{}",
                phone.e164,
                phone.region.as_deref().unwrap_or("-"),
                phone.calling_code,
                phone.kind.as_str()
            )
            .unwrap();
        }
    }
    line
}

#[test]
fn parse_phone_reproduces_the_recorded_table() {
    let inputs = corpus();
    assert!(
        inputs.iter().all(|i| !i.contains(['\t', '\n', '\r'])),
        "inputs must fit a TSV row"
    );
    if std::env::var_os("OTPGATE_BLESS").is_some() {
        let mut text = String::new();
        for input in &inputs {
            text.push_str(&row(input));
            text.push('\n');
        }
        std::fs::write(fixture_path(), text).unwrap();
        return;
    }

    let recorded = std::fs::read_to_string(fixture_path()).unwrap();
    let recorded: Vec<&str> = recorded.lines().collect();
    let recorded_inputs: Vec<&str> = recorded
        .iter()
        .map(|line| line.split('\t').next().unwrap())
        .collect();
    let first_change = recorded_inputs
        .iter()
        .zip(&inputs)
        .position(|(recorded, input)| recorded != input);
    assert!(
        first_change.is_none() && recorded_inputs.len() == inputs.len(),
        "the corpus changed (a new metadata release?) at row {first_change:?} ({} rows \
         recorded, {} now): re-record with OTPGATE_BLESS=1",
        recorded_inputs.len(),
        inputs.len()
    );

    let moved: Vec<String> = recorded
        .iter()
        .zip(&inputs)
        .filter_map(|(expected, input)| {
            let actual = row(input);
            (actual != *expected).then(|| format!("  was {expected:?}\n  now {actual:?}"))
        })
        .collect();
    assert!(
        moved.is_empty(),
        "{} of {} rows moved; the first ones:\n{}",
        moved.len(),
        inputs.len(),
        moved[..moved.len().min(40)].join("\n")
    );
}

/// One input of each way the table moved from phonenumber 0.3's parser to libphonenumber's
/// answers, with what phonenumber 0.3 had made of it.
#[test]
fn where_phonenumber_0_3_departed_from_libphonenumber() {
    // (input, phonenumber 0.3, now)
    let table = [
        // Whole-number range matches.
        (
            "+36801234561",
            "+36801234561 HU 36 toll_free",
            "+36801234561 HU 36 unknown",
        ),
        (
            "+4990012345671",
            "+4990012345671 DE 49 premium_rate",
            "+4990012345671 DE 49 unknown",
        ),
        (
            "+398991234561",
            "+398991234561 IT 39 premium_rate",
            "+398991234561 - 39 unknown",
        ),
        // National prefix checks.
        (
            "+7 800 123 4567",
            "+7001234567 - 7 invalid",
            "+78001234567 RU 7 toll_free",
        ),
        // libphonenumber gives `+4402079460000` (invalid); that form would lose one more
        // zero when read again, so the parser refuses the target instead.
        ("+44 00 20 7946 0000", "+442079460000 GB 44 fixed_line", "-"),
        (
            "+57 (0)3211234567",
            "+57211234567 CO 57 invalid",
            "+5703211234567 CO 57 unknown",
        ),
        // The main country's rules.
        (
            "+1 1 650 253 0000",
            "+116502530000 - 1 invalid",
            "+16502530000 US 1 fixed_line_or_mobile",
        ),
        (
            "+1 868 1234",
            "+18688681234 TT 1 unknown",
            "+18681234 TT 1 invalid",
        ),
        // Zeros only.
        ("+44 00", "-", "+4400 - 44 invalid"),
    ];
    for (input, _was, now) in table {
        let phone = parse_phone(input);
        let got = phone.map_or("-".to_owned(), |p| {
            format!(
                "{} {} {} {}",
                p.e164,
                p.region.as_deref().unwrap_or("-"),
                p.calling_code,
                p.kind.as_str()
            )
        });
        assert_eq!(got, now, "{input}");
    }
}
