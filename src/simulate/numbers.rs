//! Phone numbers for the simulation: numbers of a country's mobile, VoIP or premium-rate
//! ranges, each checked with libphonenumber's metadata through the `phonenumber` crate
//! (`parse`, `is_valid`, the number type), not with the gateway's own classifier, so the
//! simulator does not grade the gateway with the gateway's code.
//!
//! A number is made from the metadata's example number of that type: its first digits kept,
//! the rest drawn at random, and kept only if it parses, is valid, has the type asked for
//! and belongs to the region asked for (calling codes such as +1 and +7 are shared).
//! Under +1, where libphonenumber cannot tell mobile from fixed ranges, a mobile number is
//! one it types as `FixedLineOrMobile`.
//! Numbers of one region are made together: `phonenumber` caches compiled patterns in one
//! small global cache, which a region at a time keeps warm.

use phonenumber::metadata::DATABASE;
use phonenumber::Type;
use rand::rngs::StdRng;
use rand::Rng;

/// Which ranges a number is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    Mobile,
    Voip,
    PremiumRate,
}

impl Range {
    fn wanted(self) -> Type {
        match self {
            Range::Mobile => Type::Mobile,
            Range::Voip => Type::Voip,
            Range::PremiumRate => Type::PremiumRate,
        }
    }
}

/// A phone number as E.164 (`+447400123456`) with its region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Number {
    pub e164: String,
    pub region: &'static str,
}

/// Tries per number before a region is taken to have no such range.
const TRIES: usize = 400;

/// The country calling code of `region` and the example national number of `range`.
fn template(region: &str, range: Range) -> Option<(u16, String)> {
    let meta = DATABASE.by_id(region)?;
    let descriptor = match range {
        Range::Mobile => meta.descriptors().mobile(),
        Range::Voip => meta.descriptors().voip(),
        Range::PremiumRate => meta.descriptors().premium_rate(),
    }?;
    let example = descriptor.example()?;
    Some((meta.country_code(), example.to_owned()))
}

/// Whether `e164` is a valid number of `range` in `region`, by libphonenumber.
pub(crate) fn check(e164: &str, region: &str, range: Range) -> bool {
    let Ok(number) = phonenumber::parse(None, e164) else {
        return false;
    };
    let kind = number.number_type(&DATABASE);
    // Where mobile and fixed ranges overlap (+1), libphonenumber cannot tell them apart.
    let fits =
        kind == range.wanted() || (range == Range::Mobile && kind == Type::FixedLineOrMobile);
    number.is_valid()
        && fits
        && number
            .country()
            .id()
            .is_some_and(|id| id.as_ref() == region)
}

/// A random valid number of `range` in `region`; `None` when none was found.
pub(crate) fn draw(region: &'static str, range: Range, rng: &mut StdRng) -> Option<Number> {
    let (code, example) = template(region, range)?;
    let len = example.len();
    for attempt in 0..TRIES {
        // Mostly one kept digit (the widest spread over the ranges); more when the
        // region's ranges are narrow and random digits rarely land in one.
        let keep = match attempt {
            0..=99 => 1,
            100..=249 => 2,
            _ => 3.min(len.saturating_sub(2)),
        };
        let mut national: String = example.chars().take(keep).collect();
        while national.len() < len {
            national.push(char::from(b'0' + rng.gen_range(0..10u8)));
        }
        let e164 = format!("+{code}{national}");
        if check(&e164, region, range) {
            return Some(Number { e164, region });
        }
    }
    None
}

/// `count` distinct numbers of `range` in `region` (fewer if the ranges are small).
pub(crate) fn draw_many(
    region: &'static str,
    range: Range,
    count: usize,
    rng: &mut StdRng,
) -> Vec<Number> {
    let mut out: Vec<Number> = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::new();
    let mut misses = 0;
    while out.len() < count && misses < 50 {
        match draw(region, range, rng) {
            Some(n) if seen.insert(n.e164.clone()) => out.push(n),
            Some(_) => misses += 1,
            None => break,
        }
    }
    out
}

/// A block of consecutive numbers, as an IRSF pumper walks it: a valid number of `range`
/// with its last three digits counted up from 000, the valid ones kept (up to `count`).
pub(crate) fn block(
    region: &'static str,
    range: Range,
    count: usize,
    rng: &mut StdRng,
) -> Vec<Number> {
    let Some(seed) = draw(region, range, rng) else {
        return Vec::new();
    };
    let stem = &seed.e164[..seed.e164.len() - 3];
    (0..1000)
        .map(|n| format!("{stem}{n:03}"))
        .filter(|e164| check(e164, region, range))
        .take(count)
        .map(|e164| Number { e164, region })
        .collect()
}

/// `e164` with one digit of the national number left out: a typing slip.
pub(crate) fn slip(e164: &str, rng: &mut StdRng) -> String {
    let digits: Vec<char> = e164.chars().collect();
    if digits.len() < 6 {
        return e164.to_owned();
    }
    let drop = rng.gen_range(4..digits.len());
    digits
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != drop)
        .map(|(_, c)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn drawn_numbers_are_valid_numbers_of_their_range() {
        let mut rng = StdRng::seed_from_u64(7);
        for region in ["GB", "FR", "DE", "US", "LV", "UZ", "CU", "SO", "KZ"] {
            let numbers = draw_many(region, Range::Mobile, 20, &mut rng);
            assert_eq!(numbers.len(), 20, "{region}");
            for n in &numbers {
                assert!(check(&n.e164, region, Range::Mobile), "{}", n.e164);
            }
        }
        let premium = draw_many("GB", Range::PremiumRate, 5, &mut rng);
        assert_eq!(premium.len(), 5);
        assert!(premium.iter().all(|n| n.e164.starts_with("+449")));
        // A UK mobile is not a premium-rate number.
        assert!(!check("+447400123456", "GB", Range::PremiumRate));
    }

    #[test]
    fn a_block_is_consecutive() {
        let mut rng = StdRng::seed_from_u64(1);
        let b = block("LV", Range::Mobile, 50, &mut rng);
        assert!(b.len() >= 40, "{}", b.len());
        let stem = &b[0].e164[..b[0].e164.len() - 3];
        assert!(b.iter().all(|n| n.e164.starts_with(stem)));
    }
}
