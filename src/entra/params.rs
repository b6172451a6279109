//! Parameters of gated native-auth requests (form body and query string).
//!
//! The query string and the form body form one parameter set (reference §2: the `/register`
//! examples use the query, SDKs the body, Entra accepts both). Parsing is strict where a
//! lenient parser would let the gateway and Entra read different values:
//! * a name that appears twice, anywhere, in any ASCII case, is refused: which copy wins
//!   differs between servers;
//! * names are ASCII: .NET's case-insensitive comparison folds `ı` to `I`, so a non-ASCII name
//!   could be another spelling of one we look up;
//! * malformed escapes, invalid UTF-8, raw control or non-ASCII bytes, NUL and a raw `;`
//!   (some parsers split on it) are refused instead of being replaced or guessed at;
//! * a name with brackets (`id[]`, `id[0]`, `id%5B%5D`) or a dotted prefix before a
//!   native-auth parameter (`request.id`) is refused: model binders (ASP.NET, PHP, Rails)
//!   read those as the parameter itself;
//! * a cookie named like a native-auth parameter is refused: ASP.NET's `Request[name]`
//!   falls back from the query and the form to the cookies, so an `id` cookie could carry
//!   an MFA method id that otpgate never saw.
//!
//! Legitimate clients (MSAL's `URLSearchParams`, the mobile SDKs) never produce any of these.

use std::fmt;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;

/// Most bytes of query plus body we parse. Native-auth requests are a few hundred bytes; the
/// largest values (`attributes`, `claims`) are small JSON objects.
pub(crate) const MAX_INPUT_BYTES: usize = 64 * 1024;

/// Most parameters in one request. MSAL sends at most about ten.
pub(crate) const MAX_PARAMS: usize = 64;

/// The parameters of the native-auth API (reference §5), as MSAL and the docs spell them.
/// A cookie with one of these names, or a bracketed or prefixed spelling of one, is refused.
pub(crate) const NATIVE_AUTH_PARAMS: &[&str] = &[
    "attributes",
    "capabilities",
    "challenge_channel",
    "challenge_target",
    "challenge_type",
    "claims",
    "client_id",
    "client_info",
    "continuation_token",
    "grant_type",
    "id",
    "new_password",
    "oob",
    "password",
    "refresh_token",
    "scope",
    "username",
];

fn is_native_auth_param(name: &str) -> bool {
    NATIVE_AUTH_PARAMS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// Why a gated request's parameters were refused. Each maps to a 400 (`TooLarge` to 413,
/// the media-type faults to 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("duplicate parameter {0:?}")]
    Duplicate(String),
    #[error("parameter name {0:?} is an array, index or prefixed spelling")]
    IndexedName(String),
    #[error("cookie {0:?} has the name of a request parameter")]
    ParameterCookie(String),
    #[error("malformed parameter encoding")]
    BadEncoding,
    #[error("too many parameters")]
    TooLarge,
    #[error("unsupported content type")]
    UnsupportedContentType,
    #[error("charset {0:?} is not utf-8")]
    UnsupportedCharset(String),
    #[error("content encoding not supported")]
    ContentEncoding,
}

/// The decoded parameters of one request, query first, in the order sent. Names are unique
/// ASCII-case-insensitively.
///
/// `Debug` shows names only: values include passwords, one-time codes and continuation tokens.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The value of `name`, compared ASCII-case-insensitively.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(name, value)` pairs in the order sent.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// `application/x-www-form-urlencoded` serialization. [`parse`] of it yields `self`
    /// again as long as it fits [`MAX_INPUT_BYTES`]: encoding can triple a value (`!` is
    /// `%21`), so parameters parsed from a large input may serialize past the cap. (The
    /// gateway forwards the bytes it received, never this serialization.)
    pub(crate) fn to_form_string(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.pairs.iter())
            .finish()
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.pairs.iter().map(|(n, _)| n))
            .finish()
    }
}

/// Check that a gated request's body is a UTF-8 form, before parsing it.
///
/// Accepted: exactly one `Content-Type` of `application/x-www-form-urlencoded` in any case,
/// with optional parameters; a `charset` must be a name of UTF-8 (any of the WHATWG
/// Encoding Standard's labels: `utf-8`, `utf8`, `unicode-1-1-utf-8` …; quoted or not, any
/// case), since Entra would decode another charset differently from us. No `Content-Type` is accepted
/// only with an empty body. Any `Content-Encoding`, even `identity`, is refused: no SDK
/// sends one, and a body we would have to decode is a body Entra might read differently.
pub(crate) fn check_content_type(headers: &HeaderMap, body: &[u8]) -> Result<(), ParamError> {
    if headers.contains_key(CONTENT_ENCODING) {
        return Err(ParamError::ContentEncoding);
    }
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(CONTENT_TYPE) || !body.is_empty() {
            Err(ParamError::UnsupportedContentType)
        } else {
            Ok(())
        };
    };
    let value = value
        .to_str()
        .map_err(|_| ParamError::UnsupportedContentType)?;
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(ParamError::UnsupportedContentType);
    }
    let mut charset_seen = false;
    for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let (key, raw) = part
            .split_once('=')
            .ok_or(ParamError::UnsupportedContentType)?;
        if !key.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let raw = raw.trim();
        let charset = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        if charset_seen {
            return Err(ParamError::UnsupportedContentType);
        }
        if !is_utf8_label(charset.trim()) {
            return Err(ParamError::UnsupportedCharset(
                charset.chars().take(40).collect(),
            ));
        }
        charset_seen = true;
    }
    Ok(())
}

/// The WHATWG Encoding Standard's labels for UTF-8 (what browsers accept as its name).
fn is_utf8_label(label: &str) -> bool {
    [
        "utf-8",
        "utf8",
        "unicode-1-1-utf-8",
        "unicode11utf8",
        "unicode20utf8",
        "x-unicode20utf8",
    ]
    .iter()
    .any(|l| l.eq_ignore_ascii_case(label))
}

/// Refuse a `Cookie` header that carries a native-auth parameter by name (see the module
/// docs). Names are compared after percent-decoding and trimming, as lenient cookie
/// parsers read them.
pub(crate) fn check_cookies(headers: &HeaderMap) -> Result<(), ParamError> {
    for value in headers.get_all(http::header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            let name: Vec<u8> = percent_encoding::percent_decode(name).collect();
            let name = String::from_utf8_lossy(&name);
            let name = name.trim();
            if is_native_auth_param(name) || is_indexed_spelling(name) {
                return Err(ParamError::ParameterCookie(name.chars().take(40).collect()));
            }
        }
    }
    Ok(())
}

/// Whether `name` is an array or index spelling (`id[]`, `a[b]`) or a prefixed spelling of
/// a native-auth parameter (`request.id`): what model binders read as another parameter.
fn is_indexed_spelling(name: &str) -> bool {
    name.contains(['[', ']'])
        || name
            .rsplit_once('.')
            .is_some_and(|(_, last)| is_native_auth_param(last))
}

/// [`check_content_type`] and [`check_cookies`], then [`parse`].
pub(crate) fn parse_request(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Params, ParamError> {
    check_content_type(headers, body)?;
    check_cookies(headers)?;
    parse(query, body)
}

/// Parse the query string and form body as one parameter set.
pub fn parse(query: Option<&str>, body: &[u8]) -> Result<Params, ParamError> {
    let query = query.unwrap_or_default().as_bytes();
    if query.len().saturating_add(body.len()) > MAX_INPUT_BYTES {
        return Err(ParamError::TooLarge);
    }
    let mut params = Params::default();
    let mut seen = std::collections::HashSet::new();
    for piece in query
        .split(|&b| b == b'&')
        .chain(body.split(|&b| b == b'&'))
    {
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &[][..]),
        };
        let name = decode(name)?;
        let value = decode(value)?;
        if name.is_empty() {
            // A bare `=` carries nothing; `=value` has a value without a name.
            if value.is_empty() {
                continue;
            }
            return Err(ParamError::BadEncoding);
        }
        // Names are visible ASCII: no space a server might trim, nothing a server might fold.
        if !name.bytes().all(|b| b.is_ascii_graphic()) || value.contains('\0') {
            return Err(ParamError::BadEncoding);
        }
        if is_indexed_spelling(&name) {
            return Err(ParamError::IndexedName(name));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(ParamError::Duplicate(name));
        }
        if params.pairs.len() == MAX_PARAMS {
            return Err(ParamError::TooLarge);
        }
        params.pairs.push((name, value));
    }
    Ok(params)
}

/// Form-decode one name or value: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn decode(raw: &[u8]) -> Result<String, ParamError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |at: usize| raw.get(at).and_then(|&b| char::from(b).to_digit(16));
                let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(ParamError::BadEncoding);
                };
                // Two hex digits make at most 0xff.
                out.push(u8::try_from(high * 16 + low).map_err(|_| ParamError::BadEncoding)?);
                i += 2;
            }
            b';' | 0x00..=0x1f | 0x7f..=0xff => return Err(ParamError::BadEncoding),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ParamError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Name/value pairs, for tables: expected parameters, or headers.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn pairs(params: &Params) -> Vec<(&str, &str)> {
        params.iter().collect()
    }

    #[test]
    fn query_and_body_form_one_set_in_order() {
        let params = parse(
            Some("client_id=abc&continuation_token=t1"),
            b"challenge_type=oob+redirect&challenge_target=%2B1%20555%200100&id=x",
        )
        .expect("parses");
        assert_eq!(
            pairs(&params),
            [
                ("client_id", "abc"),
                ("continuation_token", "t1"),
                ("challenge_type", "oob redirect"),
                ("challenge_target", "+1 555 0100"),
                ("id", "x"),
            ]
        );
        assert_eq!(params.len(), 5);
        assert_eq!(params.get("CHALLENGE_TARGET"), Some("+1 555 0100"));
        assert_eq!(params.get("Id"), Some("x"));
        assert_eq!(params.get("missing"), None);
    }

    #[test]
    fn decoding_table() {
        let ok: &[(&[u8], Pairs)] = &[
            (b"", &[]),
            (b"a=1&&b=2", &[("a", "1"), ("b", "2")]),
            (b"&a=1&", &[("a", "1")]),
            (b"=", &[]),
            (b"a", &[("a", "")]),
            (b"a=", &[("a", "")]),
            (b"a=b=c", &[("a", "b=c")]),
            (b"a=%2B+%2b", &[("a", "+ +")]),
            (b"a=%26b%3Dc", &[("a", "&b=c")]),
            (b"a=%3B", &[("a", ";")]),
            (b"a=caf%C3%A9", &[("a", "caf\u{e9}")]),
            (b"a=x y", &[("a", "x y")]),
            (
                b"attributes=%7B%22city%22%3A%22Oslo%22%7D",
                &[("attributes", "{\"city\":\"Oslo\"}")],
            ),
        ];
        for (body, expected) in ok {
            let params = parse(None, body).expect("parses");
            assert_eq!(
                pairs(&params),
                *expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let bad: &[&[u8]] = &[
            b"a=%",
            b"a=1%",
            b"a=%2",
            b"a=%zz",
            b"a=%g0",
            b"a=%FF",
            b"a=%C0%AF",
            b"a=%ED%A0%80",
            b"a=%00",
            b"a=\xff",
            b"a=caf\xc3\xa9",
            b"a=1\n",
            b"a=1;id=2",
            b"=value",
            b"id+=1",
            b"id%20=1",
            b"na%00me=1",
            b"%C4%B1d=1",
            b"%0Aid=1",
        ];
        for body in bad {
            assert_eq!(
                parse(None, body),
                Err(ParamError::BadEncoding),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse(Some("a=%zz"), b""), Err(ParamError::BadEncoding));
    }

    #[test]
    fn a_name_sent_twice_is_refused_wherever_it_is() {
        let table: &[(Option<&str>, &[u8], &str)] = &[
            (None, b"id=1&id=2", "id"),
            (None, b"id=1&ID=2", "ID"),
            (None, b"id=1&id=1", "id"),
            (None, b"id&id=2", "id"),
            (Some("id=1&Id=2"), b"", "Id"),
            (Some("id=1"), b"id=2", "id"),
            (
                Some("challenge_channel=email"),
                b"CHALLENGE_CHANNEL=sms",
                "CHALLENGE_CHANNEL",
            ),
            (None, b"%69d=1&id=2", "id"),
            (None, b"i%64=1&I%44=2", "ID"),
        ];
        for (query, body, name) in table {
            assert_eq!(
                parse(*query, body),
                Err(ParamError::Duplicate((*name).to_owned())),
                "{query:?} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn size_limits() {
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=1&")).collect();
        assert_eq!(parse(None, many.as_bytes()), Err(ParamError::TooLarge));
        let enough: String = (0..MAX_PARAMS).map(|i| format!("p{i}=1&")).collect();
        assert_eq!(
            parse(None, enough.as_bytes()).map(|p| p.len()),
            Ok(MAX_PARAMS)
        );
        let big = vec![b'a'; MAX_INPUT_BYTES];
        assert_eq!(parse(Some("x=1"), &big), Err(ParamError::TooLarge));
        assert!(parse(None, &big).is_ok());
    }

    #[test]
    fn debug_hides_values() {
        let params = parse(None, b"password=hunter2&oob=12345678").expect("parses");
        let shown = format!("{params:?}");
        assert!(shown.contains("password"));
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("12345678"));
    }

    #[test]
    fn serialization_round_trips() {
        let inputs: &[&[u8]] = &[
            b"a=1&b=2",
            b"challenge_type=oob+password+redirect&x=%26%3D%25%2B",
            b"u=caf%C3%A9+%F0%9F%98%80&empty&e=",
            b"n*-._=v*-._~",
            b"attributes=%7B%22a%22%3A%5B1%2C2%5D%7D",
        ];
        for input in inputs {
            let first = parse(None, input).expect("parses");
            let again = parse(None, first.to_form_string().as_bytes()).expect("reparses");
            assert_eq!(first, again);
            assert_eq!(first.to_form_string(), again.to_form_string());
        }
        // Every printable ASCII character and a few non-ASCII ones, in names and values.
        let mut chars: Vec<char> = (0x20u8..0x7f).map(char::from).collect();
        chars.extend(['\u{e9}', '\u{212a}', '\u{1f600}', '\t', '\n']);
        for c in chars {
            let value = format!("x{c}y");
            let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            let params = parse(None, format!("v={encoded}").as_bytes()).expect("parses");
            assert_eq!(params.get("v"), Some(value.as_str()));
            assert_eq!(parse(None, params.to_form_string().as_bytes()), Ok(params));
        }
    }

    #[test]
    fn serialization_can_outgrow_the_input_cap() {
        let value = "!".repeat(MAX_INPUT_BYTES / 2);
        let params = parse(None, format!("v={value}").as_bytes()).expect("parses");
        let form = params.to_form_string();
        assert!(form.len() > MAX_INPUT_BYTES, "{}", form.len());
        assert_eq!(parse(None, form.as_bytes()), Err(ParamError::TooLarge));
    }

    #[test]
    fn random_inputs_parse_stably_or_not_at_all() {
        const ALPHABET: &[&[u8]] = &[
            b"a",
            b"B",
            b"id",
            b"=",
            b"&",
            b"+",
            b"%",
            b"%2",
            b"%41",
            b"%61",
            b"%3D",
            b"%26",
            b"%25",
            b"%C3%A9",
            b"%FF",
            b"%00",
            b";",
            b" ",
            b"\xc3\xa9",
            b"~",
            b"*",
            b"\n",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..state % 12 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                input.extend_from_slice(ALPHABET[(state % ALPHABET.len() as u64) as usize]);
            }
            let Ok(first) = parse(None, &input) else {
                continue;
            };
            parsed += 1;
            let form = first.to_form_string();
            assert_eq!(parse(None, form.as_bytes()).as_ref(), Ok(&first), "{form}");
            assert_eq!(parse(Some(&form), b"").as_ref(), Ok(&first), "{form}");
        }
        assert!(parsed > 1_000, "only {parsed} inputs parsed");
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn content_type_table() {
        let form = b"a=1".as_slice();
        let ok: &[(Pairs, &[u8])] = &[
            (
                &[("content-type", "application/x-www-form-urlencoded")],
                form,
            ),
            (
                &[("content-type", "Application/X-WWW-Form-URLEncoded")],
                form,
            ),
            (
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded;charset=UTF-8",
                )],
                form,
            ),
            (
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded ; charset=\"utf-8\"",
                )],
                form,
            ),
            (
                &[("content-type", "application/x-www-form-urlencoded;")],
                form,
            ),
            (
                &[("content-type", "application/x-www-form-urlencoded; foo=bar")],
                form,
            ),
            (
                &[("content-type", "application/x-www-form-urlencoded")],
                b"",
            ),
            (&[], b""),
        ];
        for (hs, body) in ok {
            assert_eq!(check_content_type(&headers(hs), body), Ok(()), "{hs:?}");
        }
        let unsupported: &[(Pairs, &[u8])] = &[
            (&[], form),
            (&[("content-type", "application/json")], form),
            (&[("content-type", "multipart/form-data; boundary=x")], form),
            (&[("content-type", "text/plain")], b""),
            (&[("content-type", "")], b""),
            (
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8; charset=utf-8",
                )],
                form,
            ),
            (
                &[("content-type", "application/x-www-form-urlencoded; charset")],
                form,
            ),
            (
                &[("content-type", "application/x-www-form-urlencodedx")],
                form,
            ),
            (
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                form,
            ),
        ];
        for (hs, body) in unsupported {
            assert_eq!(
                check_content_type(&headers(hs), body),
                Err(ParamError::UnsupportedContentType),
                "{hs:?}"
            );
        }
        for encoding in ["gzip", "identity", "br", ""] {
            let hs = headers(&[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-encoding", encoding),
            ]);
            assert_eq!(
                check_content_type(&hs, form),
                Err(ParamError::ContentEncoding)
            );
        }
    }

    #[test]
    fn every_spelling_of_utf8_is_accepted_and_other_charsets_are_named() {
        let form = b"a=1".as_slice();
        for value in [
            "application/x-www-form-urlencoded;charset=utf8",
            "application/x-www-form-urlencoded;charset=UTF8",
            "application/x-www-form-urlencoded;charset=UTF-8",
            "application/x-www-form-urlencoded; charset=utf-8",
            "application/x-www-form-urlencoded ;charset = utf-8 ",
            "application/x-www-form-urlencoded;\tcharset=\"UTF8\"",
            "application/x-www-form-urlencoded; charset=\" utf-8 \"",
            "application/x-www-form-urlencoded; charset=unicode-1-1-utf-8",
            "application/x-www-form-urlencoded; charset=x-unicode20utf8",
        ] {
            let hs = headers(&[("content-type", value)]);
            assert_eq!(check_content_type(&hs, form), Ok(()), "{value}");
        }
        for (charset, named) in [
            ("iso-8859-1", "iso-8859-1"),
            ("utf-16", "utf-16"),
            ("UTF-7", "UTF-7"),
            ("utf-8x", "utf-8x"),
            ("\"\"", ""),
        ] {
            let hs = headers(&[(
                "content-type",
                &format!("application/x-www-form-urlencoded; charset={charset}"),
            )]);
            assert_eq!(
                check_content_type(&hs, form),
                Err(ParamError::UnsupportedCharset(named.to_owned())),
                "{charset}"
            );
        }
    }

    #[test]
    fn array_index_and_prefixed_spellings_of_a_name_are_refused() {
        for body in [
            "id[]=1",
            "id[0]=1",
            "ID[]=1",
            "id%5B%5D=1",
            "id%5b0%5d=1",
            "challenge_target[]=%2B4474",
            "a[id]=1",
            "x]=1",
            "request.id=1",
            "model.Challenge_Target=%2B4474",
            "a.b.continuation_token=t",
        ] {
            assert!(
                matches!(
                    parse(None, body.as_bytes()),
                    Err(ParamError::IndexedName(_))
                ),
                "{body}"
            );
            assert!(
                matches!(parse(Some(body), b""), Err(ParamError::IndexedName(_))),
                "{body} in the query"
            );
        }
        // Dots elsewhere are names like any other.
        assert!(parse(None, b"x.y=1&id.extra=2&n*-._=v").is_ok());
    }

    #[test]
    fn a_cookie_named_like_a_parameter_is_refused() {
        let refused = [
            "id=abc",
            "ID=abc",
            "session=1; id=abc",
            "session=1;id",
            " challenge_target =%2B447400123456",
            "%69d=abc",
            "continuation_token=t",
            "id[]=x",
            "req.id=x",
        ];
        for cookie in refused {
            let hs = headers(&[("cookie", cookie)]);
            assert!(
                matches!(check_cookies(&hs), Err(ParamError::ParameterCookie(_))),
                "{cookie}"
            );
            let form = headers(&[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", cookie),
            ]);
            assert!(parse_request(&form, None, b"a=1").is_err(), "{cookie}");
        }
        // Entra's and HUMAN's own cookies pass.
        let hs = headers(&[
            ("cookie", "fpc=AkR1; esctx=x; x-ms-gateway-slice=estsfd"),
            (
                "cookie",
                "_px3=abc; _pxvid=1; stsservicecookie=estsfd; idx=1; identity=1",
            ),
        ]);
        assert_eq!(check_cookies(&hs), Ok(()));
    }

    #[test]
    fn parse_request_checks_headers_then_parameters() {
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(
            parse_request(&form, Some("client_id=c"), b"id=1")
                .map(|p| p.get("id").map(str::to_owned)),
            Ok(Some("1".to_owned()))
        );
        assert_eq!(
            parse_request(&HeaderMap::new(), None, b"id=1"),
            Err(ParamError::UnsupportedContentType)
        );
        assert_eq!(
            parse_request(&form, Some("id=1"), b"id=2"),
            Err(ParamError::Duplicate("id".to_owned()))
        );
    }

    #[test]
    fn error_messages_are_lowercase() {
        for e in [
            ParamError::Duplicate("id".to_owned()),
            ParamError::IndexedName("id[]".to_owned()),
            ParamError::ParameterCookie("id".to_owned()),
            ParamError::UnsupportedCharset("latin1".to_owned()),
            ParamError::BadEncoding,
            ParamError::TooLarge,
            ParamError::UnsupportedContentType,
            ParamError::ContentEncoding,
        ] {
            let message = e.to_string();
            assert!(
                message.starts_with(|c: char| c.is_ascii_lowercase()),
                "{message}"
            );
            assert!(!message.ends_with('.'));
        }
    }
}
