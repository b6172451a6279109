//! Endpoint classification of native-auth request paths: which Entra endpoint a request is
//! for, or that it is not native auth, or that its path is ambiguous and must be refused.
//!
//! The classifier is the gate's front door: a request it calls [`Classification::NotNativeAuth`]
//! streams to Entra ungated. So the invariant is: a path classified `NotNativeAuth` never
//! becomes a native-auth endpoint path under any plausible server normalisation (full or
//! repeated percent-decoding, `\` → `/`, dot-segment removal, slash collapsing, `;` stripping,
//! ASCII or Unicode case folding, IIS trailing dot/space stripping, suffix-pattern matching).
//! [`invariant::check`] states it as code; the tests (and a fuzz target) run it over mutations
//! of every endpoint path.
//!
//! How a path is judged:
//! 1. Strict scan: percent-escapes of unreserved characters (`ALPHA DIGIT - . _ ~`) are
//!    decoded; every other escape is kept. A byte no server may be trusted to read the same way
//!    (control characters, non-ASCII, invalid escapes: NUL truncation, overlong UTF-8 and
//!    Windows best-fit mappings can turn such a byte into anything) makes the whole path
//!    ambiguous, wherever it is.
//! 2. A path with any other irregularity (encoded `/`, `\`, `;`, dot segments, empty segments,
//!    a trailing slash, a segment ending in `.`, any reserved character) is *unclean*. An
//!    unclean path is ambiguous if, after the most aggressive normalisation, any segment (or
//!    its stem before a dot) reads as a native-auth prefix word (`oauth2`, `signup`,
//!    `resetpassword`, `register`, `api`); otherwise it cannot reach native auth and is not
//!    native auth. Every endpoint path has one of these words as a whole segment, and
//!    normalisations only decode, split, drop or trim segments, never join them — so that
//!    test is sound. (So `/{t}/oauth2/v2.0/authorize/` is refused, `/static//a.png` is not.)
//! 3. A clean path is matched exactly: the first segment is the tenant (any alias), the rest
//!    must equal an endpoint suffix ASCII-case-insensitively. An endpoint suffix anywhere else
//!    (no tenant, extra leading or trailing segments, `challenge.json`) is ambiguous.

use std::borrow::Cow;
use std::sync::OnceLock;

use http::Method;

/// A native-auth endpoint (reference §3 and §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    SignInInitiate,
    SignInChallenge,
    SignInIntrospect,
    Token,
    SignUpStart,
    SignUpChallenge,
    SignUpContinue,
    ResetPasswordStart,
    ResetPasswordChallenge,
    ResetPasswordContinue,
    ResetPasswordSubmit,
    ResetPasswordPollCompletion,
    RegisterIntrospect,
    RegisterChallenge,
    RegisterContinue,
    /// V2 entry point (experimental at Microsoft).
    V2AuthorizeChallenge,
    /// Any path under `/{tenant}/api/`: the V2 HAL steps, whose hrefs the server chooses.
    V2Api,
}

impl EndpointKind {
    /// Every kind, in declaration order.
    pub(crate) const ALL: [EndpointKind; 17] = [
        Self::SignInInitiate,
        Self::SignInChallenge,
        Self::SignInIntrospect,
        Self::Token,
        Self::SignUpStart,
        Self::SignUpChallenge,
        Self::SignUpContinue,
        Self::ResetPasswordStart,
        Self::ResetPasswordChallenge,
        Self::ResetPasswordContinue,
        Self::ResetPasswordSubmit,
        Self::ResetPasswordPollCompletion,
        Self::RegisterIntrospect,
        Self::RegisterChallenge,
        Self::RegisterContinue,
        Self::V2AuthorizeChallenge,
        Self::V2Api,
    ];

    /// A stable snake_case label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SignInInitiate => "sign_in_initiate",
            Self::SignInChallenge => "sign_in_challenge",
            Self::SignInIntrospect => "sign_in_introspect",
            Self::Token => "token",
            Self::SignUpStart => "sign_up_start",
            Self::SignUpChallenge => "sign_up_challenge",
            Self::SignUpContinue => "sign_up_continue",
            Self::ResetPasswordStart => "reset_password_start",
            Self::ResetPasswordChallenge => "reset_password_challenge",
            Self::ResetPasswordContinue => "reset_password_continue",
            Self::ResetPasswordSubmit => "reset_password_submit",
            Self::ResetPasswordPollCompletion => "reset_password_poll_completion",
            Self::RegisterIntrospect => "register_introspect",
            Self::RegisterChallenge => "register_challenge",
            Self::RegisterContinue => "register_continue",
            Self::V2AuthorizeChallenge => "v2_authorize_challenge",
            Self::V2Api => "v2_api",
        }
    }

    /// The path after the tenant segment, in Entra's spelling. For [`EndpointKind::V2Api`] it
    /// is the prefix `/api`.
    pub fn path(&self) -> &'static str {
        match self {
            Self::SignInInitiate => "/oauth2/v2.0/initiate",
            Self::SignInChallenge => "/oauth2/v2.0/challenge",
            Self::SignInIntrospect => "/oauth2/v2.0/introspect",
            Self::Token => "/oauth2/v2.0/token",
            Self::SignUpStart => "/signup/v1.0/start",
            Self::SignUpChallenge => "/signup/v1.0/challenge",
            Self::SignUpContinue => "/signup/v1.0/continue",
            Self::ResetPasswordStart => "/resetpassword/v1.0/start",
            Self::ResetPasswordChallenge => "/resetpassword/v1.0/challenge",
            Self::ResetPasswordContinue => "/resetpassword/v1.0/continue",
            Self::ResetPasswordSubmit => "/resetpassword/v1.0/submit",
            Self::ResetPasswordPollCompletion => "/resetpassword/v1.0/poll_completion",
            Self::RegisterIntrospect => "/register/v1.0/introspect",
            Self::RegisterChallenge => "/register/v1.0/challenge",
            Self::RegisterContinue => "/register/v1.0/continue",
            Self::V2AuthorizeChallenge => "/oauth2/v2.0/authorize-challenge",
            Self::V2Api => "/api",
        }
    }

    /// Whether a request to this endpoint can make Entra send a one-time passcode (a first
    /// send or a resend), reference §3, §6 and §8.
    ///
    /// `V2AuthorizeChallenge` only returns step links and, at completion, a code; the V2 sends
    /// happen under `/api/`, and which href sends is the server's choice, so every `V2Api`
    /// request counts.
    #[cfg(test)]
    pub(crate) fn may_send_otp(&self) -> bool {
        matches!(
            self,
            Self::SignInChallenge
                | Self::SignUpChallenge
                | Self::ResetPasswordChallenge
                | Self::RegisterChallenge
                | Self::V2Api
        )
    }

    pub(crate) fn is_v2(&self) -> bool {
        matches!(self, Self::V2AuthorizeChallenge | Self::V2Api)
    }

    /// V1 endpoints and the V2 entry point are POST-only; V2 steps also use PUT.
    fn post_only(&self) -> bool {
        !matches!(self, Self::V2Api)
    }

    /// The path segments after the tenant, for the fixed-path kinds.
    fn suffix(&self) -> Option<[&'static str; 3]> {
        fixed_suffixes()
            .iter()
            .find(|(kind, _)| kind == self)
            .map(|&(_, suffix)| suffix)
    }

    fn split_path(&self) -> Option<[&'static str; 3]> {
        let mut parts = self.path().trim_start_matches('/').split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c), None) => Some([a, b, c]),
            _ => None,
        }
    }
}

/// Every fixed-path kind with its path segments after the tenant, in declaration order, split
/// once per process. A path that is not native auth is compared with every suffix at every
/// depth, so the classifier walks this table instead of looking each kind's suffix up.
fn fixed_suffixes() -> &'static [(EndpointKind, [&'static str; 3])] {
    static SUFFIXES: OnceLock<Vec<(EndpointKind, [&'static str; 3])>> = OnceLock::new();
    SUFFIXES.get_or_init(|| {
        EndpointKind::ALL
            .into_iter()
            .filter_map(|kind| kind.split_path().map(|suffix| (kind, suffix)))
            .collect()
    })
}

/// Why a path on (or near) a native-auth prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AmbiguousReason {
    /// Control characters, non-ASCII, invalid or endlessly nested percent-escapes.
    BadEncoding,
    /// `%2F`.
    EncodedSlash,
    /// `\` or `%5C`.
    Backslash,
    /// `;` or `%3B`.
    PathParameter,
    /// `.` or `..` (also as `%2E`).
    DotSegment,
    /// `//` before the last segment.
    EmptySegment,
    TrailingSlash,
    /// A segment ending in `.`: IIS drops trailing dots.
    TrailingDot,
    /// Any character outside the unreserved set, raw or encoded, other than those above.
    ReservedCharacter,
    /// An endpoint suffix not right after the tenant segment, or `/api/` without a tenant.
    UnexpectedDepth,
    /// An endpoint with an extension (`challenge.json`): suffix-pattern routers drop it.
    Extension,
    /// A request target that does not start with `/` (and is not `*`).
    RelativePath,
}

impl AmbiguousReason {
    /// A stable snake_case label for logs and metrics.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::BadEncoding => "bad_encoding",
            Self::EncodedSlash => "encoded_slash",
            Self::Backslash => "backslash",
            Self::PathParameter => "path_parameter",
            Self::DotSegment => "dot_segment",
            Self::EmptySegment => "empty_segment",
            Self::TrailingSlash => "trailing_slash",
            Self::TrailingDot => "trailing_dot",
            Self::ReservedCharacter => "reserved_character",
            Self::UnexpectedDepth => "unexpected_depth",
            Self::Extension => "extension",
            Self::RelativePath => "relative_path",
        }
    }
}

/// What the gateway does with a request, judged by its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// Not native auth: stream through ungated.
    NotNativeAuth,
    /// A native-auth endpoint. `tenant` is the first path segment as sent, with escapes of
    /// unreserved characters decoded (it contains only unreserved characters).
    Endpoint { kind: EndpointKind, tenant: String },
    /// Answer 400 `invalid_request`; never forward.
    Ambiguous(AmbiguousReason),
    /// A non-POST request to a POST endpoint: answer 400; never forward ungated.
    MethodNotAllowed(EndpointKind),
}

/// Words of which every native-auth endpoint path has one as a whole segment.
const PREFIX_WORDS: [&str; 5] = ["oauth2", "signup", "resetpassword", "register", "api"];

/// Nesting depth of percent-encoding we still unwrap (`%25252F` is three levels). Deeper is
/// refused: no client of this API encodes even twice.
const MAX_DECODE_ROUNDS: usize = 4;

/// Classify a request by method and raw request-target path (percent-encoded, no query).
pub fn classify(method: &Method, path: &str) -> Classification {
    if path.is_empty() || path == "*" || path == "/" {
        return Classification::NotNativeAuth;
    }
    if !path.starts_with('/') {
        return Classification::Ambiguous(AmbiguousReason::RelativePath);
    }
    let scan = match scan(path) {
        Ok(scan) => scan,
        Err(reason) => return Classification::Ambiguous(reason),
    };
    if let Some(flaw) = scan.flaw {
        return match reads_as_native_auth(path) {
            Err(reason) => Classification::Ambiguous(reason),
            Ok(true) => Classification::Ambiguous(flaw),
            Ok(false) => Classification::NotNativeAuth,
        };
    }
    classify_clean(method, scan.segments)
}

/// The one irregular spelling of an endpoint path a real SDK sends, put right: MSAL for
/// iOS joins its authority and the endpoint by string concatenation
/// (`MSALNativeAuthRequestable.makeEndpointUrl`: `components.path += "/oauth2/v2.0/initiate"`),
/// so an authority configured with a trailing slash (`https://contoso.ciamlogin.com/contoso.onmicrosoft.com/`)
/// sends `/{tenant}//oauth2/v2.0/initiate`. MSAL Android joins by path segments and drops
/// empty ones (`UrlUtil.appendPathToURL`), and msal-browser strips one slash before
/// resolving with `new URL` (`UrlUtils.buildUrl`), so neither sends it.
///
/// Returns the path with that one doubled slash collapsed when the result is a native-auth
/// endpoint (`/{tenant}/oauth2/v2.0/initiate`); `None` for every other path, which is then
/// classified as it is (a doubled slash anywhere else stays ambiguous).
pub(crate) fn collapse_sdk_slash(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let (tenant, after) = rest.split_once("//")?;
    if tenant.is_empty() || tenant.contains('/') || after.starts_with('/') {
        return None;
    }
    let collapsed = format!("/{tenant}/{after}");
    match classify(&Method::POST, &collapsed) {
        Classification::Endpoint { .. } => Some(collapsed),
        _ => None,
    }
}

/// The path with escapes of unreserved characters decoded, when it is *clean*: every segment
/// non-empty, no dot segments, no trailing dots, only unreserved characters. Every plausible
/// server normalisation leaves a clean path unchanged up to case (and a last segment's
/// extension, which the classifier matches loosely), so the classifier's exact match on it is
/// what Entra sees. `None` for anything else (`"/"` is clean).
pub fn canonical_path(path: &str) -> Option<String> {
    if path == "/" {
        return Some(path.to_owned());
    }
    if !path.starts_with('/') {
        return None;
    }
    match scan(path) {
        Ok(Scan {
            segments,
            flaw: None,
        }) => Some(format!("/{}", segments.join("/"))),
        _ => None,
    }
}

struct Scan<'a> {
    /// Segments after the leading `/`, unreserved escapes decoded, other escapes kept. A
    /// segment without escapes borrows from the path.
    segments: Vec<Cow<'a, str>>,
    /// The highest-priority irregularity found, if any.
    flaw: Option<AmbiguousReason>,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode unreserved escapes of an absolute path and note every irregularity. `Err` for bytes
/// whose meaning depends on the server (see the module doc).
fn scan(path: &str) -> Result<Scan<'_>, AmbiguousReason> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let mut flaw: Option<AmbiguousReason> = None;
    let mut note = |reason: AmbiguousReason| {
        flaw = Some(flaw.map_or(reason, |f| f.min(reason)));
    };
    let last = raw.bytes().filter(|&b| b == b'/').count();
    let mut segments = Vec::with_capacity(last + 1);
    for (i, raw_segment) in raw.split('/').enumerate() {
        let segment = scan_segment(raw_segment, &mut note)?;
        if segment.is_empty() {
            note(if i == last {
                AmbiguousReason::TrailingSlash
            } else {
                AmbiguousReason::EmptySegment
            });
        } else if segment == "." || segment == ".." {
            note(AmbiguousReason::DotSegment);
        } else if segment.ends_with('.') {
            note(AmbiguousReason::TrailingDot);
        }
        segments.push(segment);
    }
    Ok(Scan { segments, flaw })
}

/// One segment of [`scan`]: borrowed as it is until the first escape, owned from there on.
fn scan_segment<'a>(
    raw: &'a str,
    note: &mut impl FnMut(AmbiguousReason),
) -> Result<Cow<'a, str>, AmbiguousReason> {
    let bytes = raw.as_bytes();
    let mut decoded: Option<String> = None;
    let mut j = 0;
    while j < bytes.len() {
        let b = bytes[j];
        if b == b'%' {
            let value = match (bytes.get(j + 1), bytes.get(j + 2)) {
                (Some(&h), Some(&l)) => match (hex_value(h), hex_value(l)) {
                    (Some(h), Some(l)) => h * 16 + l,
                    _ => return Err(AmbiguousReason::BadEncoding),
                },
                _ => return Err(AmbiguousReason::BadEncoding),
            };
            let out = decoded.get_or_insert_with(|| {
                let mut out = String::with_capacity(bytes.len());
                out.push_str(&raw[..j]);
                out
            });
            if is_unreserved(value) {
                out.push(char::from(value));
            } else {
                match value {
                    b'/' => note(AmbiguousReason::EncodedSlash),
                    b'\\' => note(AmbiguousReason::Backslash),
                    b';' => note(AmbiguousReason::PathParameter),
                    0x00..=0x1f | 0x7f..=0xff => return Err(AmbiguousReason::BadEncoding),
                    _ => note(AmbiguousReason::ReservedCharacter),
                }
                out.push('%');
                out.push_str(&format!("{value:02X}"));
            }
            j += 3;
            continue;
        }
        match b {
            _ if is_unreserved(b) => {}
            b'\\' => note(AmbiguousReason::Backslash),
            b';' => note(AmbiguousReason::PathParameter),
            0x00..=0x20 | 0x7f..=0xff => return Err(AmbiguousReason::BadEncoding),
            _ => note(AmbiguousReason::ReservedCharacter),
        }
        if let Some(out) = decoded.as_mut() {
            out.push(char::from(b));
        }
        j += 1;
    }
    Ok(decoded.map_or(Cow::Borrowed(raw), Cow::Owned))
}

/// Whether any segment of the most aggressive normalisation of `path` reads as a native-auth
/// prefix word. Percent-escapes are decoded until nothing changes, `\` splits like `/`, `;`
/// cuts a segment, and a segment is compared by its lowercased letters and digits only (so
/// trailing dots, spaces or `+` cannot hide a word). `Err` when decoding does not settle or
/// yields bytes that are not printable ASCII.
fn reads_as_native_auth(path: &str) -> Result<bool, AmbiguousReason> {
    let mut current = path.as_bytes().to_vec();
    let mut settled = false;
    for _ in 0..=MAX_DECODE_ROUNDS {
        let next: Vec<u8> = percent_encoding::percent_decode(&current).collect();
        if next == current {
            settled = true;
            break;
        }
        current = next;
    }
    if !settled || current.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Err(AmbiguousReason::BadEncoding);
    }
    Ok(current
        .split(|&b| b == b'/' || b == b'\\')
        .map(|segment| segment.split(|&b| b == b';').next().unwrap_or_default())
        .any(|segment| {
            // The whole segment, and every stem a suffix-pattern router could cut at a dot.
            let dots = segment
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'.')
                .map(|(i, _)| &segment[..i]);
            dots.chain([segment]).any(|stem| {
                let skeleton: Vec<u8> = stem
                    .iter()
                    .filter(|b| b.is_ascii_alphanumeric())
                    .map(u8::to_ascii_lowercase)
                    .collect();
                PREFIX_WORDS.iter().any(|w| w.as_bytes() == skeleton)
            })
        }))
}

/// `segment` is `word`, or `word` with an extension (`challenge.json`).
fn matches_loosely(segment: &str, word: &str) -> bool {
    segment.eq_ignore_ascii_case(word)
        || (segment.len() > word.len() + 1
            && segment.as_bytes()[word.len()] == b'.'
            && segment.as_bytes()[..word.len()].eq_ignore_ascii_case(word.as_bytes()))
}

fn classify_clean(method: &Method, mut segments: Vec<Cow<'_, str>>) -> Classification {
    if segments.len() >= 2 {
        let rest = &segments[1..];
        let exact = fixed_suffixes().iter().find(|(_, suffix)| {
            rest.len() == suffix.len()
                && rest
                    .iter()
                    .zip(suffix)
                    .all(|(s, w)| s.eq_ignore_ascii_case(w))
        });
        let kind = exact.map(|&(kind, _)| kind).or_else(|| {
            rest[0]
                .eq_ignore_ascii_case("api")
                .then_some(EndpointKind::V2Api)
        });
        if let Some(kind) = kind {
            if kind.post_only() && method != Method::POST {
                return Classification::MethodNotAllowed(kind);
            }
            segments.truncate(1);
            let tenant = segments.pop().map(Cow::into_owned).unwrap_or_default();
            return Classification::Endpoint { kind, tenant };
        }
    }
    // An endpoint suffix anywhere else may still reach the endpoint on a server that ignores
    // leading or trailing segments or extensions.
    for start in 0..segments.len() {
        // Every suffix starts with a prefix word, and most segments are none.
        if !PREFIX_WORDS
            .iter()
            .any(|w| matches_loosely(&segments[start], w))
        {
            continue;
        }
        for (_, suffix) in fixed_suffixes() {
            let window = &segments[start..];
            if window.len() >= suffix.len()
                && window
                    .iter()
                    .zip(suffix)
                    .all(|(s, w)| matches_loosely(s, w))
            {
                let reason = if start == 1 && window.len() == suffix.len() {
                    AmbiguousReason::Extension
                } else {
                    AmbiguousReason::UnexpectedDepth
                };
                return Classification::Ambiguous(reason);
            }
        }
    }
    if segments.len() >= 2 && matches_loosely(&segments[1], "api") {
        return Classification::Ambiguous(AmbiguousReason::Extension);
    }
    // `/api/...` without a tenant: V2 hrefs of that shape appear in SDK test fixtures.
    if segments.len() >= 2 && matches_loosely(&segments[0], "api") {
        return Classification::Ambiguous(AmbiguousReason::UnexpectedDepth);
    }
    Classification::NotNativeAuth
}

/// The classifier's safety property as code, for tests and fuzz targets.
pub mod invariant;

#[cfg(test)]
mod tests {
    use super::invariant::check;
    use super::*;
    use AmbiguousReason as R;
    use EndpointKind as K;

    const NAME: &str = "contoso.onmicrosoft.com";
    const GUID: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

    fn post(path: &str) -> Classification {
        classify(&Method::POST, path)
    }

    fn endpoint(kind: K, tenant: &str) -> Classification {
        Classification::Endpoint {
            kind,
            tenant: tenant.to_owned(),
        }
    }

    #[test]
    fn every_fixed_suffix_starts_with_a_prefix_word() {
        // classify_clean skips depths whose segment is no prefix word.
        assert_eq!(fixed_suffixes().len(), K::ALL.len() - 1);
        for (kind, suffix) in fixed_suffixes() {
            assert!(PREFIX_WORDS.contains(&suffix[0]), "{kind:?}");
        }
    }

    #[test]
    fn every_endpoint_under_both_tenant_forms_and_a_custom_domain() {
        for tenant in [NAME, GUID, "login.contoso.com"] {
            for kind in K::ALL {
                let path = format!("/{tenant}{}", kind.path());
                assert_eq!(post(&path), endpoint(kind, tenant), "{path}");
            }
        }
    }

    #[test]
    fn labels_and_paths_are_distinct() {
        let labels: std::collections::HashSet<_> = K::ALL.iter().map(K::as_str).collect();
        let paths: std::collections::HashSet<_> = K::ALL.iter().map(K::path).collect();
        assert_eq!(labels.len(), K::ALL.len());
        assert_eq!(paths.len(), K::ALL.len());
    }

    #[test]
    fn otp_senders_and_v2() {
        let senders: Vec<_> = K::ALL.into_iter().filter(K::may_send_otp).collect();
        assert_eq!(
            senders,
            [
                K::SignInChallenge,
                K::SignUpChallenge,
                K::ResetPasswordChallenge,
                K::RegisterChallenge,
                K::V2Api
            ]
        );
        let v2: Vec<_> = K::ALL.into_iter().filter(K::is_v2).collect();
        assert_eq!(v2, [K::V2AuthorizeChallenge, K::V2Api]);
    }

    #[test]
    fn case_and_unreserved_escapes_are_canonicalized() {
        let table = [
            (
                "/CONTOSO.onmicrosoft.com/OAuth2/V2.0/Challenge",
                K::SignInChallenge,
                "CONTOSO.onmicrosoft.com",
            ),
            ("/contoso.onmicrosoft.com/OAUTH2/V2.0/TOKEN", K::Token, NAME),
            (
                "/%63ontoso.onmicrosoft.com/oauth2/v2.0/ch%61llenge",
                K::SignInChallenge,
                NAME,
            ),
            (
                "/contoso%2Eonmicrosoft%2ecom/oauth2/v2%2E0/challenge",
                K::SignInChallenge,
                NAME,
            ),
            (
                "/contoso.onmicrosoft.com/%72%65%67%69%73%74%65%72/v1.0/challenge",
                K::RegisterChallenge,
                NAME,
            ),
            (
                "/contoso.onmicrosoft.com/resetpassword/v1.0/poll%5Fcompletion",
                K::ResetPasswordPollCompletion,
                NAME,
            ),
            (
                "/contoso.onmicrosoft.com/oauth2/v2.0/authorize%2Dchallenge",
                K::V2AuthorizeChallenge,
                NAME,
            ),
            (
                "/%7Econtoso/oauth2/v2.0/initiate",
                K::SignInInitiate,
                "~contoso",
            ),
            (
                "/contoso.onmicrosoft.com/API/v0.1/signin/start",
                K::V2Api,
                NAME,
            ),
            ("/contoso.onmicrosoft.com/api", K::V2Api, NAME),
            ("/contoso.onmicrosoft.com/%61pi/v0.1/x", K::V2Api, NAME),
        ];
        for (path, kind, tenant) in table {
            assert_eq!(post(path), endpoint(kind, tenant), "{path}");
        }
    }

    #[test]
    fn an_endpoint_after_any_first_segment_is_that_endpoint() {
        // Tenant aliases Entra might accept must not bypass the gate.
        for tenant in [
            "x",
            "common",
            "organizations",
            "oauth2",
            "api",
            "-",
            "a.b.c.d",
        ] {
            let path = format!("/{tenant}/oauth2/v2.0/challenge");
            assert_eq!(post(&path), endpoint(K::SignInChallenge, tenant), "{path}");
        }
    }

    #[test]
    fn non_post_methods_on_endpoints_are_refused() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            for kind in K::ALL.into_iter().filter(|k| *k != K::V2Api) {
                let path = format!("/{NAME}{}", kind.path());
                assert_eq!(
                    classify(&method, &path),
                    Classification::MethodNotAllowed(kind),
                    "{method} {path}"
                );
            }
        }
        let custom = Method::from_bytes(b"POSTX").expect("method");
        assert_eq!(
            classify(&custom, &format!("/{NAME}/oauth2/v2.0/challenge")),
            Classification::MethodNotAllowed(K::SignInChallenge)
        );
    }

    #[test]
    fn v2_api_accepts_any_method() {
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            assert_eq!(
                classify(&method, &format!("/{GUID}/api/v0.1/auth/resetpassword")),
                endpoint(K::V2Api, GUID)
            );
        }
    }

    #[test]
    fn clearly_not_native_auth() {
        let table = [
            "",
            "*",
            "/",
            "/favicon.ico",
            "/static/js/main.1234.js",
            "/contoso.onmicrosoft.com",
            "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration",
            "/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
            "/contoso.onmicrosoft.com/oauth2/v2.0/logout",
            "/contoso.onmicrosoft.com/oauth2/authorize",
            "/contoso.onmicrosoft.com/oauth2/token",
            "/contoso.onmicrosoft.com/discovery/v2.0/keys",
            "/contoso.onmicrosoft.com/oauth2/v2.0/challengex",
            "/contoso.onmicrosoft.com/oauth2/v1.0/challenge",
            "/contoso.onmicrosoft.com/B2C_1_signin/api/SelfAsserted/confirmed",
            "/contoso.onmicrosoft.com/apis/v1",
            "/api",
            // Irregular, but no segment can ever read as a native-auth prefix word.
            "/static//img.png",
            "/static/img.png/",
            "/static/./img.png",
            "/files/100%25.txt",
            "/files/a%20b.txt",
            "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration/",
            "/x;jsessionid=1/y",
        ];
        for path in table {
            assert_eq!(post(path), Classification::NotNativeAuth, "{path:?}");
        }
    }

    #[test]
    fn irregular_paths_near_native_auth_are_ambiguous() {
        let t = NAME;
        let table: Vec<(String, R)> = vec![
            // Encoded slash, raw or nested.
            (format!("/{t}/oauth2%2Fv2.0/challenge"), R::EncodedSlash),
            (format!("/{t}/oauth2%2fv2.0%2fchallenge"), R::EncodedSlash),
            (format!("/{t}%2Foauth2/v2.0/challenge"), R::EncodedSlash),
            (
                format!("/{t}/oauth2/v2.0/authorize%2F..%2Fchallenge"),
                R::EncodedSlash,
            ),
            (
                format!("/{t}/oauth2/v2.0%252Fchallenge"),
                R::ReservedCharacter,
            ),
            // Backslash.
            (format!("/{t}/oauth2\\v2.0\\challenge"), R::Backslash),
            (format!("/{t}/oauth2%5Cv2.0/challenge"), R::Backslash),
            (format!("/{t}/oauth2/v2.0/challenge\\"), R::Backslash),
            // Dot segments, raw and encoded.
            (format!("/{t}/oauth2/v2.0/./challenge"), R::DotSegment),
            (format!("/{t}/oauth2/v2.0/x/../challenge"), R::DotSegment),
            (
                format!("/{t}/oauth2/v2.0/authorize/../challenge"),
                R::DotSegment,
            ),
            (format!("/{t}/oauth2/v2.0/%2E/challenge"), R::DotSegment),
            (
                format!("/{t}/oauth2/v2.0/x/%2e%2E/challenge"),
                R::DotSegment,
            ),
            (format!("/{t}/oauth2/v2.0/x/.%2e/challenge"), R::DotSegment),
            (format!("/./{t}/oauth2/v2.0/challenge"), R::DotSegment),
            (format!("/x/../{t}/oauth2/v2.0/challenge"), R::DotSegment),
            (format!("/{t}/static/../oauth2/v2.0/token"), R::DotSegment),
            // Empty segments and trailing slashes.
            (format!("//{t}/oauth2/v2.0/challenge"), R::EmptySegment),
            (format!("/{t}//oauth2/v2.0/challenge"), R::EmptySegment),
            (format!("/{t}/oauth2/v2.0//challenge"), R::EmptySegment),
            (format!("/{t}/oauth2/v2.0/challenge//"), R::EmptySegment),
            (format!("/{t}/oauth2/v2.0/challenge/"), R::TrailingSlash),
            (format!("/{t}/register/v1.0/challenge/"), R::TrailingSlash),
            (format!("/{t}/oauth2/v2.0/authorize/"), R::TrailingSlash),
            (format!("/{t}/oauth2/"), R::TrailingSlash),
            (format!("/{t}/api/"), R::TrailingSlash),
            // Path parameters, anywhere.
            (format!("/{t}/oauth2/v2.0/challenge;x"), R::PathParameter),
            (format!("/{t}/oauth2/v2.0/challenge;"), R::PathParameter),
            (format!("/{t}/oauth2;a=b/v2.0/challenge"), R::PathParameter),
            (format!("/{t};x/oauth2/v2.0/challenge"), R::PathParameter),
            (format!("/{t}/oauth2/v2.0/challenge%3Bx"), R::PathParameter),
            (
                format!("/{t}/oauth2/v2.0/..;/v2.0/challenge"),
                R::PathParameter,
            ),
            // Trailing dots and spaces (IIS drops them), other reserved characters.
            (format!("/{t}/oauth2/v2.0/challenge."), R::TrailingDot),
            (format!("/{t}/oauth2./v2.0/challenge"), R::TrailingDot),
            (format!("/{t}/oauth2/v2.0/challenge..."), R::TrailingDot),
            (
                format!("/{t}/oauth2/v2.0/challenge%20"),
                R::ReservedCharacter,
            ),
            (format!("/{t}/oauth2/v2.0/challenge+"), R::ReservedCharacter),
            (format!("/{t}/oauth2/v2.0/challenge!"), R::ReservedCharacter),
            (
                format!("/{t}/oauth2/v2.0/ch%25%36%31llenge"),
                R::ReservedCharacter,
            ),
            (
                format!("/{t}@x/oauth2/v2.0/challenge"),
                R::ReservedCharacter,
            ),
            // Bytes a server may read as anything: refused wherever they are.
            (format!("/{t}/oauth2/v2.0/challenge%00"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/challenge%00.png"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/challenge%0A"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/challenge%"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/challenge%2"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/ch%zzallenge"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/%u0063hallenge"), R::BadEncoding),
            (format!("/{t}/oauth2%C0%AFv2.0/challenge"), R::BadEncoding),
            (
                format!("/{t}/oauth2/v2.0/chall%EF%BD%85nge"),
                R::BadEncoding,
            ),
            (format!("/{t}/oauth2/v2.0/to%E2%84%AAen"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/challenge%FF"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/challenge\u{e9}"), R::BadEncoding),
            (format!("/{t}/oauth2/v2.0/chal lenge"), R::BadEncoding),
            (
                format!("/{t}/oauth2/v2.0/ch%2525252561llenge"),
                R::BadEncoding,
            ),
            (
                format!("/{t}/oauth2%25C0%25AFv2.0/challenge"),
                R::BadEncoding,
            ),
            ("/favicon%00.ico".to_owned(), R::BadEncoding),
            // An endpoint suffix at another depth.
            ("/oauth2/v2.0/challenge".to_owned(), R::UnexpectedDepth),
            ("/x/y/oauth2/v2.0/challenge".to_owned(), R::UnexpectedDepth),
            (
                format!("/x/{t}/register/v1.0/challenge"),
                R::UnexpectedDepth,
            ),
            (format!("/{t}/oauth2/v2.0/challenge/x"), R::UnexpectedDepth),
            (
                format!("/{t}/oauth2/v2.0/token/oauth2/v2.0/challenge"),
                R::UnexpectedDepth,
            ),
            ("/api/v0.1/signin/start".to_owned(), R::UnexpectedDepth),
            (format!("/{t}/oauth2/v2.0/challenge.json"), R::Extension),
            (format!("/{t}/oauth2/v2.0/Token.aspx"), R::Extension),
            (format!("/{t}/api.json"), R::Extension),
            (format!("/{t}/API.x/v0.1/signin/start"), R::Extension),
            ("/api.json/v0.1/signin/start".to_owned(), R::UnexpectedDepth),
            // Not an absolute path.
            ("contoso/oauth2/v2.0/challenge".to_owned(), R::RelativePath),
        ];
        for (path, reason) in table {
            assert_eq!(post(&path), Classification::Ambiguous(reason), "{path:?}");
            // The method never makes an ambiguous path acceptable.
            assert_eq!(
                classify(&Method::GET, &path),
                Classification::Ambiguous(reason),
                "GET {path:?}"
            );
        }
    }

    #[test]
    fn reason_labels() {
        assert_eq!(R::EncodedSlash.as_str(), "encoded_slash");
        assert_eq!(R::DotSegment.as_str(), "dot_segment");
        assert_eq!(R::EmptySegment.as_str(), "empty_segment");
        assert_eq!(R::TrailingSlash.as_str(), "trailing_slash");
        assert_eq!(R::PathParameter.as_str(), "path_parameter");
        assert_eq!(R::BadEncoding.as_str(), "bad_encoding");
        assert_eq!(R::UnexpectedDepth.as_str(), "unexpected_depth");
    }

    #[test]
    fn only_the_ios_doubled_slash_after_the_tenant_is_put_right() {
        for kind in EndpointKind::ALL {
            if kind == K::V2Api {
                continue;
            }
            for tenant in [
                "contoso.onmicrosoft.com",
                "aaaabbbb-0000-cccc-1111-dddd2222eeee",
            ] {
                let path = format!("/{tenant}/{}", kind.path().trim_start_matches('/'));
                let doubled = format!("/{tenant}/{}", kind.path());
                assert_eq!(collapse_sdk_slash(&doubled).as_deref(), Some(path.as_str()));
                assert_eq!(collapse_sdk_slash(&path), None, "{path}");
            }
        }
        for path in [
            "//contoso.onmicrosoft.com/oauth2/v2.0/initiate",
            "/contoso.onmicrosoft.com///oauth2/v2.0/initiate",
            "/contoso.onmicrosoft.com//oauth2//v2.0/initiate",
            "/contoso.onmicrosoft.com//oauth2/v2.0/initiate/",
            "/a/contoso.onmicrosoft.com//oauth2/v2.0/initiate",
            "/contoso.onmicrosoft.com//oauth2/v2.0/authorize",
            "/contoso.onmicrosoft.com//static/a.png",
            "/contoso.onmicrosoft.com//oauth2/v2.0/%2e%2e/challenge",
            "/contoso%2Fx//oauth2/v2.0/initiate",
        ] {
            assert_eq!(collapse_sdk_slash(path), None, "{path}");
        }
        // What is put right is then an ordinary endpoint.
        let fixed = collapse_sdk_slash("/Contoso.onmicrosoft.com//OAuth2/v2.0/Challenge");
        assert_eq!(
            classify(&Method::POST, fixed.as_deref().unwrap()),
            endpoint(K::SignInChallenge, "Contoso.onmicrosoft.com")
        );
    }

    #[test]
    fn canonical_path_decodes_unreserved_and_refuses_irregular_paths() {
        assert_eq!(canonical_path("/"), Some("/".to_owned()));
        assert_eq!(
            canonical_path("/%63ontoso/OAuth2/v2%2E0/ch%61llenge").as_deref(),
            Some("/contoso/OAuth2/v2.0/challenge")
        );
        for path in [
            "", "x", "//a", "/a/", "/a/./b", "/a%2Fb", "/a;b", "/a%20b", "/a%00", "/a%", "/a./b",
        ] {
            assert_eq!(canonical_path(path), None, "{path:?}");
        }
    }

    /// Every normalisation leaves a clean path unchanged up to case, which is what makes the
    /// exact match on it safe.
    #[test]
    fn clean_paths_are_fixed_points_of_every_normalisation() {
        for kind in K::ALL {
            for tenant in [NAME, GUID] {
                let path = format!("/{tenant}{}", kind.path().to_uppercase());
                let canonical = canonical_path(&path).expect("clean");
                for normalised in invariant::normalisations(&path) {
                    if kind == K::V2Api {
                        continue;
                    }
                    // Extension stripping only touches a last segment that has a dot, which
                    // no endpoint does.
                    assert!(normalised.eq_ignore_ascii_case(&canonical), "{normalised}");
                }
            }
        }
    }

    /// Deterministic xorshift, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Replacements for a `/`, each a classic way to hide or forge a separator.
    const SLASHES: &[&str] = &[
        "//",
        "\\",
        "%2F",
        "%2f",
        "%5C",
        "%5c",
        "/./",
        "/%2E/",
        "/%2e/",
        "/x/../",
        "/x/%2E%2E/",
        "/x/.%2e/",
        "/;x/",
        "%252F",
        "/..;/",
        "%C0%AF",
        "%E2%88%95",
        "%EF%BC%8F",
        "/%00/",
        "/./.",
        "/.../",
        "/ /",
        "/%20/",
        "/+/",
        "/x/..\\",
    ];

    /// Things to append to a segment.
    const TAILS: &[&str] = &[
        ";", ";x", ";x=y", ".", "..", "%2E", "%20", " ", "+", "%09", "%00", ".json", "%3B", "/",
        "/.", "/..", "//", "%2F", "%5C", "\\", "%23", "#", "?", "%3F", "~", "%7E", ".%20", "%00x",
    ];

    /// Rewrite one character of `path`.
    fn mutate(path: &str, rng: &mut Rng) -> String {
        let boundaries: Vec<usize> = path.char_indices().map(|(i, _)| i).collect();
        let at = boundaries
            .get(rng.below(boundaries.len().max(1)))
            .copied()
            .unwrap_or(path.len());
        let (head, tail) = path.split_at(at);
        let Some(c) = tail.chars().next() else {
            return format!("{path}{}", rng.pick(TAILS));
        };
        let rest = &tail[c.len_utf8()..];
        match rng.below(10) {
            0 => format!("{head}%{:02X}{rest}", u32::from(c) & 0xff),
            1 => format!("{head}%{:02x}{rest}", u32::from(c) & 0xff),
            2 => format!("{head}%25{:02X}{rest}", u32::from(c) & 0xff),
            3 => {
                let flipped: String = if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase().to_string()
                } else {
                    c.to_ascii_lowercase().to_string()
                };
                format!("{head}{flipped}{rest}")
            }
            4 if c == '/' => format!("{head}{}{rest}", rng.pick(SLASHES)),
            4 | 5 => format!("{head}{}{tail}", rng.pick(TAILS)),
            6 => {
                let prefix = rng.pick(&["", "/x", "/x/..", "/.", "/%2e", "/", "/oauth2", "/api"]);
                format!("{prefix}{path}")
            }
            7 => {
                // Drop the tenant segment.
                let without: String = path
                    .trim_start_matches('/')
                    .split_once('/')
                    .map(|(_, r)| format!("/{r}"))
                    .unwrap_or_default();
                if without.is_empty() {
                    path.to_owned()
                } else {
                    without
                }
            }
            8 => {
                let odd = rng.pick(&[
                    "%C0%AE",
                    "%E2%84%AA",
                    "%C4%B1",
                    "%EF%BD%85",
                    "%u002f",
                    "%",
                    "%G1",
                    "\u{212a}",
                ]);
                format!("{head}{odd}{rest}")
            }
            _ => format!("{path}{}", rng.pick(TAILS)),
        }
    }

    fn seeds() -> Vec<String> {
        let mut seeds = Vec::new();
        for kind in K::ALL {
            for tenant in [NAME, GUID] {
                seeds.push(format!("/{tenant}{}", kind.path()));
            }
        }
        seeds.push(format!("/{NAME}/api/v0.1/signin/start"));
        seeds.push(format!("/{NAME}/oauth2/v2.0/authorize"));
        seeds.push(format!("/{NAME}/v2.0/.well-known/openid-configuration"));
        seeds
    }

    #[test]
    fn no_single_character_rewrite_of_an_endpoint_slips_through() {
        // Every position, every replacement: exhaustive for one rewrite.
        for seed in seeds() {
            let mut variants = Vec::new();
            for (at, c) in seed.char_indices() {
                let (head, tail) = seed.split_at(at);
                let rest = &tail[c.len_utf8()..];
                variants.push(format!("{head}%{:02X}{rest}", u32::from(c)));
                variants.push(format!("{head}%25{:02X}{rest}", u32::from(c)));
                variants.push(format!("{head}{}{rest}", c.to_ascii_uppercase()));
                if c == '/' {
                    for s in SLASHES {
                        variants.push(format!("{head}{s}{rest}"));
                    }
                }
                for t in TAILS {
                    variants.push(format!("{head}{t}{tail}"));
                }
            }
            for variant in variants {
                if let Err(violation) = check(&variant) {
                    panic!("{violation}");
                }
            }
        }
    }

    const ROUNDS: usize = 400;

    #[test]
    fn no_random_rewrite_chain_of_an_endpoint_slips_through() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut ambiguous = 0usize;
        let mut total = 0usize;
        for seed in seeds() {
            for _ in 0..ROUNDS {
                let mut path = seed.clone();
                for _ in 0..1 + rng.below(3) {
                    path = mutate(&path, &mut rng);
                }
                if let Err(violation) = check(&path) {
                    panic!("{violation}");
                }
                total += 1;
                if matches!(post(&path), Classification::Ambiguous(_)) {
                    ambiguous += 1;
                }
            }
        }
        // The mutations must mostly produce irregular paths, or the loop proves little.
        assert!(ambiguous * 2 > total, "{ambiguous} of {total} ambiguous");
    }

    #[test]
    fn the_invariant_check_catches_a_bypass() {
        // A classifier that trusted full decoding would let this through; the check sees it.
        let normalised = invariant::normalisations(&format!("/{NAME}/oauth2%2Fv2.0%2Fchallenge"));
        assert!(normalised
            .iter()
            .any(|n| invariant::endpoint_of(n) == Some(K::SignInChallenge)));
        assert_eq!(
            invariant::endpoint_of(&format!("/{NAME}/oauth2/v2.0/to\u{212a}en")),
            Some(K::Token)
        );
        assert_eq!(invariant::endpoint_of("/oauth2/v2.0/token"), None);
    }
}
