//! The classifier's safety property as code, for tests and fuzz targets: a reference family of
//! server normalisations, and a check that none of them turns a path the classifier lets
//! through (or assigns to one endpoint) into a different native-auth endpoint.

use super::{classify, EndpointKind};
use std::collections::BTreeSet;

/// One normalisation step some HTTP server or framework performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Percent-decode once (non-UTF-8 read lossily).
    Decode,
    /// Percent-decode, reading overlong 2-byte UTF-8 (`%C0%AF`) as ASCII.
    DecodeOverlong,
    /// `+` as space (form decoding wrongly applied to the path).
    PlusAsSpace,
    /// `\` as `/`.
    Backslash,
    /// RFC 3986 remove_dot_segments.
    DotSegments,
    /// `//` as `/`.
    CollapseSlashes,
    /// Drop `;...` up to the next `/` (Tomcat, Spring).
    SemicolonPerSegment,
    /// Drop everything from the first `;`.
    SemicolonToEnd,
    /// Drop trailing dots and spaces of each segment (IIS).
    TrailingDotsSpaces,
    /// Drop one trailing `/`.
    TrailingSlash,
    /// Drop an extension of the last segment (suffix-pattern routing).
    Extension,
    /// Cut at the first NUL (C strings).
    NulTruncation,
    /// Windows best-fit: fullwidth forms and look-alike slashes to ASCII.
    BestFit,
}

const ALL_STEPS: [Step; 13] = [
    Step::Decode,
    Step::DecodeOverlong,
    Step::PlusAsSpace,
    Step::Backslash,
    Step::DotSegments,
    Step::CollapseSlashes,
    Step::SemicolonPerSegment,
    Step::SemicolonToEnd,
    Step::TrailingDotsSpaces,
    Step::TrailingSlash,
    Step::Extension,
    Step::NulTruncation,
    Step::BestFit,
];

/// Orders in which servers apply their steps; each prefix of each order is a normaliser.
const ORDERS: [&[Step]; 7] = [
    &[
        Step::Decode,
        Step::Backslash,
        Step::DotSegments,
        Step::CollapseSlashes,
        Step::SemicolonPerSegment,
        Step::TrailingDotsSpaces,
        Step::TrailingSlash,
        Step::Extension,
    ],
    &[
        Step::SemicolonPerSegment,
        Step::Decode,
        Step::DotSegments,
        Step::CollapseSlashes,
        Step::TrailingSlash,
    ],
    &[
        Step::DotSegments,
        Step::Decode,
        Step::Decode,
        Step::Backslash,
        Step::DotSegments,
        Step::CollapseSlashes,
    ],
    &[
        Step::DecodeOverlong,
        Step::BestFit,
        Step::Backslash,
        Step::TrailingDotsSpaces,
        Step::DotSegments,
        Step::CollapseSlashes,
        Step::TrailingSlash,
    ],
    &[
        Step::PlusAsSpace,
        Step::Decode,
        Step::NulTruncation,
        Step::TrailingDotsSpaces,
        Step::SemicolonToEnd,
        Step::CollapseSlashes,
        Step::DotSegments,
        Step::TrailingSlash,
    ],
    &[
        Step::CollapseSlashes,
        Step::SemicolonToEnd,
        Step::Decode,
        Step::Decode,
        Step::DotSegments,
        Step::Extension,
    ],
    &[
        Step::Decode,
        Step::BestFit,
        Step::NulTruncation,
        Step::Backslash,
        Step::SemicolonPerSegment,
        Step::DotSegments,
        Step::TrailingDotsSpaces,
        Step::CollapseSlashes,
        Step::TrailingSlash,
    ],
];

/// Apply one step.
pub fn apply(step: Step, path: &str) -> String {
    match step {
        Step::Decode => percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned(),
        Step::DecodeOverlong => decode_overlong(path),
        Step::PlusAsSpace => path.replace('+', " "),
        Step::Backslash => path.replace('\\', "/"),
        Step::DotSegments => remove_dot_segments(path),
        Step::CollapseSlashes => {
            let mut out = String::with_capacity(path.len());
            for c in path.chars() {
                if !(c == '/' && out.ends_with('/')) {
                    out.push(c);
                }
            }
            out
        }
        Step::SemicolonPerSegment => path
            .split('/')
            .map(|s| s.split(';').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("/"),
        Step::SemicolonToEnd => path.split(';').next().unwrap_or_default().to_owned(),
        Step::TrailingDotsSpaces => path
            .split('/')
            .map(|s| s.trim_end_matches(['.', ' ']))
            .collect::<Vec<_>>()
            .join("/"),
        Step::TrailingSlash => match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => path.to_owned(),
        },
        Step::Extension => match path.rsplit_once('/') {
            Some((head, last)) => match last.rsplit_once('.') {
                Some((stem, _)) if !stem.is_empty() => format!("{head}/{stem}"),
                _ => path.to_owned(),
            },
            None => path.to_owned(),
        },
        Step::NulTruncation => path.split('\0').next().unwrap_or_default().to_owned(),
        Step::BestFit => path
            .chars()
            .map(|c| match c {
                '\u{ff01}'..='\u{ff5e}' => char::from_u32(u32::from(c) - 0xfee0).unwrap_or(c),
                '\u{2215}' | '\u{2044}' | '\u{29f8}' => '/',
                '\u{29f5}' | '\u{29f9}' => '\\',
                _ => c,
            })
            .collect(),
    }
}

fn decode_overlong(path: &str) -> String {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (lead @ (0xc0 | 0xc1), Some(&cont)) if cont & 0xc0 == 0x80 => {
                out.push(((lead & 0x01) << 6) | (cont & 0x3f));
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            match output.rfind('/') {
                Some(at) => output.truncate(at),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// The reference normalisations of `path`: every prefix of every server order, every
/// single step, and every order with one step left out.
pub(crate) fn normalisations(path: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(path.to_owned());
    for step in ALL_STEPS {
        out.insert(apply(step, path));
    }
    for order in ORDERS {
        let mut current = path.to_owned();
        for &step in order {
            current = apply(step, &current);
            out.insert(current.clone());
        }
        for skip in 0..order.len() {
            let mut current = path.to_owned();
            for (i, &step) in order.iter().enumerate() {
                if i != skip {
                    current = apply(step, &current);
                }
            }
            out.insert(current);
        }
    }
    out
}

/// Case-insensitive under both ASCII and Unicode simple mappings (`K` KELVIN SIGN lowers
/// to `k`, `ı` uppers to `I`): what a .NET `OrdinalIgnoreCase` router might accept.
fn same_word(segment: &str, word: &str) -> bool {
    segment.eq_ignore_ascii_case(word)
        || segment.to_lowercase() == word
        || segment.to_uppercase() == word.to_uppercase()
}

/// The endpoint a *normalised* path names, if any (`/{tenant}/{suffix}` or
/// `/{tenant}/api/...`).
pub(crate) fn endpoint_of(normalised: &str) -> Option<EndpointKind> {
    let rest = normalised.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() < 2 || segments[0].is_empty() {
        return None;
    }
    let rest = &segments[1..];
    EndpointKind::ALL
        .into_iter()
        .find(|kind| {
            kind.suffix().is_some_and(|suffix| {
                rest.len() == suffix.len() && rest.iter().zip(suffix).all(|(s, w)| same_word(s, w))
            })
        })
        .or_else(|| same_word(rest[0], "api").then_some(EndpointKind::V2Api))
}

/// `Err` with an explanation when the classifier lets `path` through as not native auth,
/// or names an endpoint, while some normalisation of it names a different endpoint.
pub fn check(path: &str) -> Result<(), String> {
    let classification = classify(&http::Method::POST, path);
    if matches!(
        classification,
        super::Classification::Ambiguous(_) | super::Classification::MethodNotAllowed(_)
    ) {
        return Ok(());
    }
    for normalised in normalisations(path) {
        let Some(kind) = endpoint_of(&normalised) else {
            continue;
        };
        match &classification {
            super::Classification::NotNativeAuth => {
                return Err(format!(
                    "{path:?} passes as not native auth but normalises to {normalised:?} ({})",
                    kind.as_str()
                ));
            }
            super::Classification::Endpoint { kind: seen, .. } if *seen != kind => {
                return Err(format!(
                    "{path:?} is classified {} but normalises to {normalised:?} ({})",
                    seen.as_str(),
                    kind.as_str()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
