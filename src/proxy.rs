//! Forwarding to the one configured upstream: header hygiene both ways and the client IP.
//! The client and its connection pool are in [`crate::upstream`].
//!
//! Only the upstream in the config is ever contacted: the request's path and query are kept,
//! its scheme and authority are replaced, and `Host` becomes the upstream host.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub mod body;

pub use crate::upstream::{ForwardError, Upstream};
pub use body::{full, Body};
pub(crate) use body::{streamed, BoxError};

/// Declares a list of header names (lowercase) and a function that tells whether a name
/// is on it, from one list: the list is what the docs and tests read, the function is the
/// `match` the compiler turns into a few length and byte compares.
macro_rules! header_list {
    ($(#[$doc:meta])* $list:ident, $is:ident, [$($name:literal),+ $(,)?]) => {
        $(#[$doc])*
        pub const $list: &[&str] = &[$($name),+];

        fn $is(name: &str) -> bool {
            matches!(name, $($name)|+)
        }
    };
}

header_list!(
    /// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones linkerd strips).
    HOP_BY_HOP,
    is_hop_by_hop_name,
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
);

header_list!(
    /// Headers through which a client, a CDN or a proxy claims the client's address, scheme
    /// or host. Entra takes the user's IP for Conditional Access and throttling, so none of
    /// them reaches it from a client: otpgate removes every one from every request and sets
    /// `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` itself.
    CLIENT_ADDRESS_HEADERS,
    is_client_address,
    [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-original-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "cf-connecting-ipv6",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-azure-clientip",
        "x-azure-socketip",
        "x-appengine-user-ip",
        "x-envoy-external-address",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "x-proxyuser-ip",
    ]
);

header_list!(
    /// Headers some servers and middleboxes read as the request's real URL or method
    /// (IIS URL Rewrite, ASP.NET, Symfony, Express `method-override`). Honoured behind
    /// otpgate they would let a request that otpgate classified as a harmless
    /// `POST /favicon.ico` reach Entra as a code-sending one, so they are removed from
    /// every request.
    OVERRIDE_HEADERS,
    is_override,
    [
        "x-original-url",
        "x-rewrite-url",
        "x-override-url",
        "x-original-uri",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
    ]
);

/// Framing and content headers: kept as sent, but their underscore spellings
/// (`Content_Length`) are removed, since a server that reads `_` as `-` would frame or
/// decode the body differently from otpgate.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
    "host",
];

/// Whether a request header must not reach the upstream: hop-by-hop, an address claim, a
/// URL or method override, or an underscore spelling (`X_Forwarded_For`, `Transfer_Encoding`)
/// of any of those or of a framing header, which servers that fold `_` into `-` (CGI, PHP,
/// some WAFs) would read as the real one.
fn is_unwanted_request_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    if is_hop_by_hop_name(name) || is_client_address(name) || is_override(name) {
        return true;
    }
    if !name.contains('_') {
        return false;
    }
    let dashed = name.replace('_', "-");
    is_hop_by_hop_name(&dashed)
        || is_client_address(&dashed)
        || is_override(&dashed)
        || FRAMING.contains(&dashed.as_str())
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str())
}

/// Remove hop-by-hop headers and every header the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, is_hop_by_hop);
}

/// Remove every header `unwanted` picks, and every header the `Connection` header names
/// (`Connection` itself must be among those `unwanted` picks).
///
/// Most messages carry none of them, so the names present are looked at first: removing by
/// name hashes it, and removing all 17 names was a tenth of a pass-through request's
/// instructions. Names the `Connection` header lists are matched against the names present
/// rather than parsed: most answers say `Connection: keep-alive`, and parsing that name
/// allocates.
fn strip(headers: &mut HeaderMap, unwanted: fn(&HeaderName) -> bool) {
    if !headers.keys().any(unwanted) {
        return;
    }
    let listed: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            unwanted(name)
                || listed
                    .iter()
                    .any(|token| token.eq_ignore_ascii_case(name.as_str()))
        })
        .cloned()
        .collect();
    for name in &doomed {
        headers.remove(name);
    }
}

/// Whether `ip` is one of the `trusted` proxies (`server.trusted_proxies`).
pub fn is_trusted(ip: &IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// The client's address: the socket peer, unless the peer is a trusted proxy; then the
/// rightmost `X-Forwarded-For` hop that is not itself trusted.
///
/// An unparseable hop ends the walk at the last trusted hop, so garbage from a client
/// behind a trusted proxy cannot select an address.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted(ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    // Right to left, across repeated headers too.
    let hops = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
        .map(str::trim);
    let mut current = peer;
    for hop in hops {
        match parse_hop(hop) {
            Some(ip) => {
                current = ip;
                if !is_trusted(&ip) {
                    return ip;
                }
            }
            None => return current,
        }
    }
    current
}

/// An `X-Forwarded-For` element: an address, possibly with a port or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
}

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: std::net::SocketAddr,
    pub tls: bool,
}

/// Clean a client request for the upstream: strip hop-by-hop headers, every address claim,
/// URL and method override and underscore spelling of them the client sent (see
/// [`is_unwanted_request_header`]), then set our own `X-Forwarded-*` from what we know.
///
/// `original_host` is the host the client addressed (for `X-Forwarded-Host`).
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    client: IpAddr,
    tls: bool,
    original_host: Option<&str>,
) {
    strip(headers, is_unwanted_request_header);
    if let Some(v) = ip_value(client) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(v) = original_host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(&X_FORWARDED_HOST, v);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An address as a header value, without going through `Display` and a `String`: this runs
/// for every request.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            text[len] = b'0' + d;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&text[..len]).ok()
}

/// Clean an upstream response for the client.
pub(crate) fn prepare_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| crate::server::settings::parse_cidr(s).unwrap())
            .collect()
    }

    #[test]
    fn client_ip_table() {
        let lb = nets(&["10.0.0.0/8", "2001:db8::/32"]);
        let cases: &[(&str, &[&str], &[IpNet], &str)] = &[
            // direct client: the peer, whatever it claims
            ("198.51.100.7", &["1.2.3.4"], &lb, "198.51.100.7"),
            ("198.51.100.7", &[], &[], "198.51.100.7"),
            // trusted proxy: the rightmost untrusted hop
            ("10.0.0.1", &["203.0.113.9"], &lb, "203.0.113.9"),
            (
                "10.0.0.1",
                &["1.1.1.1, 203.0.113.9, 10.0.0.2"],
                &lb,
                "203.0.113.9",
            ),
            ("10.0.0.1", &["1.1.1.1", "203.0.113.9"], &lb, "203.0.113.9"),
            // trusted proxy without the header: the proxy itself
            ("10.0.0.1", &[], &lb, "10.0.0.1"),
            // every hop trusted: the leftmost
            ("10.0.0.1", &["10.0.0.3, 10.0.0.2"], &lb, "10.0.0.3"),
            // garbage stops the walk at the last trusted hop
            ("10.0.0.1", &["203.0.113.9, junk"], &lb, "10.0.0.1"),
            // ports and brackets
            ("10.0.0.1", &["203.0.113.9:443"], &lb, "203.0.113.9"),
            ("10.0.0.1", &["[2001:db9::1]:443"], &lb, "2001:db9::1"),
            ("10.0.0.1", &["[2001:db9::1]"], &lb, "2001:db9::1"),
            // v4-mapped v6 is canonicalised
            ("10.0.0.1", &["::ffff:203.0.113.9"], &lb, "203.0.113.9"),
        ];
        for (peer, headers, trusted, want) in cases {
            let got = client_ip(peer.parse().unwrap(), &xff(headers), trusted);
            assert_eq!(
                got,
                want.parse::<IpAddr>().unwrap(),
                "peer {peer} xff {headers:?}"
            );
        }
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.append(
            "connection",
            HeaderValue::from_static("Connection,x-other-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("x-other-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn ip_value_reads_as_display() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "100.20.3.45",
            "198.51.100.7",
            "2001:db8::1",
            "::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str());
        }
    }

    #[test]
    fn address_claims_overrides_and_underscore_spellings_never_reach_the_upstream() {
        let mut h = HeaderMap::new();
        for name in CLIENT_ADDRESS_HEADERS.iter().chain(OVERRIDE_HEADERS) {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("6.6.6.6"),
            );
            let underscored = name.replace('-', "_").to_ascii_uppercase();
            h.append(
                HeaderName::from_bytes(underscored.as_bytes()).unwrap(),
                HeaderValue::from_static("/register/v1.0/challenge"),
            );
        }
        for name in [
            "Content_Length",
            "Transfer_Encoding",
            "content_type",
            "HOST_",
            "Te_",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("5"),
            );
        }
        h.insert("content-length", HeaderValue::from_static("12"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("x_custom_thing", HeaderValue::from_static("kept"));
        h.insert("user-agent", HeaderValue::from_static("kept"));
        prepare_request(&mut h, "198.51.100.7".parse().unwrap(), false, None);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "content-type",
                "host_",
                "te_",
                "user-agent",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x_custom_thing",
            ]
        );
        assert_eq!(h["x-forwarded-for"], "198.51.100.7");
        assert_eq!(h["content-length"], "12");
    }

    #[test]
    fn the_lists_are_lowercase_and_distinct() {
        let all: Vec<&str> = HOP_BY_HOP
            .iter()
            .chain(CLIENT_ADDRESS_HEADERS)
            .chain(OVERRIDE_HEADERS)
            .copied()
            .collect();
        for name in &all {
            assert_eq!(name.to_ascii_lowercase(), *name);
            assert_eq!(all.iter().filter(|n| *n == name).count(), 1, "{name}");
        }
        for name in [
            "x-azure-clientip",
            "cf-connecting-ip",
            "x-original-url",
            "x-http-method",
        ] {
            assert!(all.contains(&name), "{name}");
        }
    }

    #[test]
    fn spoofed_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        prepare_request(
            &mut h,
            "198.51.100.7".parse().unwrap(),
            true,
            Some("login.example"),
        );
        assert_eq!(h["x-forwarded-for"], "198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "login.example");
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
    }
}
