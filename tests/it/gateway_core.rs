//! The gateway core over real sockets: pass-through, header hygiene, client IP, upstream
//! faults, TLS, HTTP/2, open-proxy refusal, admin endpoints.

use std::time::{Duration, Instant};

use crate::fixtures::{gateway, upstream, Upstream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn echo_headers(resp: &reqwest::Response) -> serde_json::Value {
    serde_json::from_str(resp.headers()["x-echo-headers"].to_str().unwrap()).unwrap()
}

fn upstream_toml(addr: std::net::SocketAddr) -> String {
    format!("[upstream]\nurl = \"http://{addr}\"\n")
}

#[tokio::test]
async fn passes_method_path_query_headers_and_body_unchanged() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    let body = b"client_id=abc&username=a%40b.c&x=%2F%00".to_vec();
    let resp = crate::fixtures::client()
        .put(gw.url("/contoso.onmicrosoft.com/v2.0/some/path?a=1&b=%2F&a=2"))
        .header("x-custom", "value one")
        .header("x-custom", "value two")
        .header("content-type", "text/weird")
        .header("authorization", "Bearer t")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-method"], "PUT");
    assert_eq!(
        resp.headers()["x-echo-uri"],
        "/contoso.onmicrosoft.com/v2.0/some/path?a=1&b=%2F&a=2"
    );
    let seen = echo_headers(&resp);
    assert_eq!(
        seen["x-custom"],
        serde_json::json!(["value one", "value two"])
    );
    assert_eq!(seen["content-type"], serde_json::json!(["text/weird"]));
    assert_eq!(seen["authorization"], serde_json::json!(["Bearer t"]));
    assert_eq!(
        seen["host"],
        serde_json::json!([up.to_string()]),
        "Host becomes the upstream"
    );
    assert_eq!(
        seen["x-forwarded-host"],
        serde_json::json!([gw.addr.to_string()])
    );
    assert_eq!(seen["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(resp.bytes().await.unwrap(), Bytes::from(body));
}

#[tokio::test]
async fn streams_a_multi_megabyte_body_both_ways() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    // 8 MiB in 64 KiB chunks, with a recognisable pattern so reordering would show.
    let chunks: Vec<Bytes> = (0..128u32)
        .map(|i| Bytes::from(vec![(i % 251) as u8; 64 * 1024]))
        .collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let resp = crate::fixtures::client()
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::with_capacity(expected.len());
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "body bytes differ");
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    let resp = crate::fixtures::client()
        .get(gw.url("/x"))
        .header("connection", "x-client-hop")
        .header("x-client-hop", "secret")
        .header("proxy-authorization", "Basic Zm9v")
        .header("te", "trailers")
        .send()
        .await
        .unwrap();
    let seen = echo_headers(&resp);
    assert!(seen.get("x-client-hop").is_none(), "{seen}");
    assert!(seen.get("proxy-authorization").is_none(), "{seen}");
    assert!(seen.get("te").is_none(), "{seen}");
    assert!(resp.headers().get("x-upstream-hop").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
}

#[tokio::test]
async fn x_forwarded_for_direct_trusted_and_spoofing_clients() {
    let up = upstream(Upstream::Echo).await;
    // Direct client that tries to spoof: replaced by the socket peer.
    let gw = gateway(&upstream_toml(up)).await;
    let resp = crate::fixtures::client()
        .get(gw.url("/x"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let seen = echo_headers(&resp);
    assert_eq!(seen["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert!(seen.get("forwarded").is_none());

    // Through a trusted proxy (loopback here): the rightmost untrusted hop.
    let gw = gateway(&format!(
        "{}[server]\ntrusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n",
        upstream_toml(up)
    ))
    .await;
    let resp = crate::fixtures::client()
        .get(gw.url("/x"))
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")
        .send()
        .await
        .unwrap();
    let seen = echo_headers(&resp);
    assert_eq!(seen["x-forwarded-for"], serde_json::json!(["203.0.113.9"]));

    // A trusted proxy that sends nothing: the proxy itself.
    let resp = crate::fixtures::client()
        .get(gw.url("/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        echo_headers(&resp)["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"])
    );
}

/// Every header that claims the client's address or the request's real URL or method, in
/// its own spelling and with underscores, plus underscore spellings of framing headers:
/// none reaches the upstream, over HTTP/1.1 or HTTP/2, on any path.
#[tokio::test]
async fn address_claims_url_and_method_overrides_never_reach_the_upstream() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    let h1 = crate::fixtures::client();
    let h2 = crate::fixtures::h2_client();
    let claims = otpgate::proxy::CLIENT_ADDRESS_HEADERS
        .iter()
        .chain(otpgate::proxy::OVERRIDE_HEADERS);
    let mut names: Vec<String> = Vec::new();
    for name in claims {
        names.push((*name).to_owned());
        names.push(name.replace('-', "_"));
    }
    names.extend(["content_length", "transfer_encoding"].map(str::to_owned));
    for (version, client) in [("HTTP/1.1", &h1), ("HTTP/2", &h2)] {
        for path in [
            "/favicon.ico",
            "/contoso.onmicrosoft.com/oauth2/v2.0/initiate",
        ] {
            let mut req = client
                .post(gw.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("client_id=c&username=a");
            for name in &names {
                let value = match name.as_str() {
                    n if n.contains("url") || n.contains("uri") => {
                        "/contoso.onmicrosoft.com/register/v1.0/challenge"
                    }
                    n if n.contains("method") => "POST",
                    "content_length" => "0",
                    "transfer_encoding" => "chunked",
                    _ => "6.6.6.6",
                };
                req = req.header(name.as_str(), value);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{version} {path}");
            let seen = echo_headers(&resp);
            // otpgate's own three, with what it knows.
            let ours = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];
            for name in names.iter().filter(|n| !ours.contains(&n.as_str())) {
                assert!(
                    seen.get(name).is_none(),
                    "{version} {path}: {name} arrived: {seen}"
                );
            }
            assert_eq!(seen["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
            assert_eq!(seen["x-forwarded-proto"], serde_json::json!(["http"]));
            assert_eq!(
                seen["x-forwarded-host"],
                serde_json::json!([gw.addr.to_string()])
            );
            assert_eq!(seen["content-length"], serde_json::json!(["22"]));
        }
    }
}

/// MSAL iOS sends `/{tenant}//oauth2/...` after an authority ending in `/`: otpgate gates it
/// as the endpoint and forwards the canonical path, so Entra reads what was judged.
#[tokio::test]
async fn the_ios_doubled_slash_is_forwarded_canonical() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    let resp = crate::fixtures::client()
        .post(gw.url("/contoso.onmicrosoft.com//oauth2/v2.0/initiate?dc=ESTS-PUB"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=c&username=a%40b.c&challenge_type=password+redirect")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-echo-uri"],
        "/contoso.onmicrosoft.com/oauth2/v2.0/initiate?dc=ESTS-PUB"
    );
    // Anywhere else a doubled slash stays refused.
    let resp = crate::fixtures::client()
        .post(gw.url("/contoso.onmicrosoft.com/oauth2//v2.0/initiate"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

async fn assert_entra_error(resp: reqwest::Response, status: u16, error: &str) {
    assert_eq!(resp.status(), status);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"], error, "{json}");
    for field in [
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
    ] {
        assert!(json.get(field).is_some(), "missing {field} in {json}");
    }
}

#[tokio::test]
async fn upstream_down_is_a_502_json() {
    let dead = crate::fixtures::dead_addr().await;
    let gw = gateway(&upstream_toml(dead)).await;
    let resp = crate::fixtures::client()
        .get(gw.url("/x"))
        .send()
        .await
        .unwrap();
    assert_entra_error(resp, 502, "server_error").await;
}

#[tokio::test]
async fn slow_upstream_is_a_504_json_within_the_timeout() {
    let up = upstream(Upstream::Slow(Duration::from_secs(5))).await;
    let gw = gateway(&format!(
        "{}response_timeout = \"300ms\"\n",
        upstream_toml(up)
    ))
    .await;
    let started = Instant::now();
    let resp = crate::fixtures::client()
        .get(gw.url("/x"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_entra_error(resp, 504, "server_error").await;
    // A correctness bound on the timeout, not a speed target: well under the upstream's 5 s.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn absolute_form_for_another_host_and_connect_are_refused() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    let answer = raw_exchange(
        gw.addr,
        b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example.org\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("x-echo-uri"), "{answer}");
    let answer = raw_exchange(
        gw.addr,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(!answer.contains("x-echo"), "{answer}");
}

#[tokio::test]
async fn unknown_hosts_are_refused_when_hosts_is_set() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&format!(
        "{}[server]\nhosts = [\"login.example.com\"]\n",
        upstream_toml(up)
    ))
    .await;
    let answer = raw_exchange(gw.addr, b"GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_exchange(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: login.example.com\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Behind Azure Front Door (`server.front_door_ids`): only requests carrying exactly one
/// `X-Azure-FDID` that names a configured profile pass, and the header does not reach the
/// upstream. A request sent around Front Door (none, another profile's id, two, another
/// spelling of the GUID) gets 403.
#[tokio::test]
async fn only_requests_through_the_configured_front_door_pass() {
    const OURS: &str = "6f1c2c55-3b7e-4d0c-9a55-0c8d3e2f1a47";
    const SPARE: &str = "0b9e4f0e-22a1-4c8f-8d8e-5f3c1a7b9d21";
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&format!(
        "{}[server]\nfront_door_ids = [\"{OURS}\", \"{SPARE}\"]\n",
        upstream_toml(up)
    ))
    .await;
    let get = |headers: &str| {
        format!("GET /x HTTP/1.1\r\nHost: login.example.com\r\nConnection: close\r\n{headers}\r\n")
    };
    for (headers, why) in [
        (String::new(), "no header"),
        (
            "X-Azure-FDID: 11111111-2222-3333-4444-555555555555\r\n".into(),
            "another profile",
        ),
        (
            format!("X-Azure-FDID: {OURS}\r\nX-Azure-FDID: {OURS}\r\n"),
            "two headers",
        ),
        (format!("X-Azure-FDID: {{{OURS}}}\r\n"), "braced"),
        (
            format!("X-Azure-FDID: {}\r\n", OURS.replace('-', "")),
            "unhyphenated",
        ),
        (format!("X-Azure-FDID: {OURS},{SPARE}\r\n"), "a list"),
    ] {
        let answer = answer_to(gw.addr, get(&headers).as_bytes()).await;
        let (status, body) = entra_refusal(&answer);
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{why}: {answer}");
        assert_eq!(body["error"], "invalid_request", "{why}: {answer}");
        assert!(
            !answer.contains("x-echo"),
            "{why}: reached the upstream: {answer}"
        );
    }
    for id in [OURS.to_owned(), SPARE.to_uppercase()] {
        let answer =
            raw_exchange(gw.addr, get(&format!("X-Azure-FDID: {id}\r\n")).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{id}: {answer}");
        let echoed = answer
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("x-echo-headers:"))
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            !echoed.to_ascii_lowercase().contains("x-azure-fdid"),
            "the id reached the upstream: {echoed}"
        );
    }
}

/// The whole answer on a connection the gateway closes after answering.
async fn answer_to(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer's status line and its body parsed as an Entra error.
fn entra_refusal(answer: &str) -> (&str, serde_json::Value) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let status = head.lines().next().unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer:?}"));
    (status, json)
}

#[tokio::test]
async fn http_layer_refusals_have_entras_error_shape() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&format!(
        "{}[server]\nmax_header_bytes = 8192\n",
        upstream_toml(up)
    ))
    .await;
    let big = "a".repeat(20_000);
    let cases = [
        (
            format!("GET /x HTTP/1.1\r\nHost: a\r\nx-big: {big}\r\n\r\n"),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        ("GARBAGE\r\n\r\n".to_owned(), "HTTP/1.1 400 Bad Request"),
        (
            "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
        ),
        // After a good request on the same connection.
        (
            "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/9.9\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
        ),
    ];
    for (request, want) in cases {
        let answer = answer_to(gw.addr, request.as_bytes()).await;
        assert!(!answer.contains("x-echo-headers: {\"x-big"), "{answer}");
        let last = answer.rfind("HTTP/1.1 ").unwrap_or(0);
        let (status, json) = entra_refusal(&answer[last..]);
        assert_eq!(status, want, "{request:?}");
        assert_eq!(json["error"], "invalid_request", "{answer}");
        assert_eq!(json["error_codes"], serde_json::json!([900144]));
        for field in [
            "error_description",
            "timestamp",
            "trace_id",
            "correlation_id",
        ] {
            assert!(json[field].is_string(), "{field}: {answer}");
        }
    }

    // HTTP/2: a header list over the limit gets the same answer from the gateway.
    let h2 = crate::fixtures::h2_client();
    let resp = h2
        .get(gw.url("/x"))
        .header("x-big", "a".repeat(9000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["error"], "invalid_request");
    let resp = h2
        .get(gw.url("/x"))
        .header("x-fine", "a".repeat(7000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn http2_client_passes_through() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    let client = crate::fixtures::h2_client();
    let resp = client
        .post(gw.url("/h2/path?q=1"))
        .body("over h2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-uri"], "/h2/path?q=1");
    assert_eq!(resp.text().await.unwrap(), "over h2");
}

#[tokio::test]
async fn tls_listener_speaks_http1_and_http2() {
    let up = upstream(Upstream::Echo).await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let gw = gateway(&format!(
        "{}[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        upstream_toml(up),
        cert_path.display(),
        key_path.display()
    ))
    .await;
    let url = format!("https://localhost:{}/tls", gw.addr.port());
    for h2 in [false, true] {
        let alpn: &[&str] = if h2 {
            &["h2", "http/1.1"]
        } else {
            &["http/1.1"]
        };
        let resp = crate::fixtures::https_trusting(&cert.cert.pem(), alpn)
            .resolve("localhost", gw.addr)
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let want = if h2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), want, "ALPN picks the protocol");
        assert_eq!(
            echo_headers(&resp)["x-forwarded-proto"],
            serde_json::json!(["https"])
        );
    }
}

#[tokio::test]
async fn admin_endpoints_answer() {
    let up = upstream(Upstream::Echo).await;
    let gw = gateway(&upstream_toml(up)).await;
    let c = crate::fixtures::client();
    let _ = c.get(gw.url("/x")).send().await.unwrap();
    let admin = |p: &str| format!("http://{}{}", gw.admin, p);
    assert_eq!(c.get(admin("/livez")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(admin("/readyz")).send().await.unwrap().status(), 200);
    let metrics = c
        .get(admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("otpgate_requests_total{kind=\"pass_through\",class=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("otpgate_upstream_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("otpgate_open_connections"), "{metrics}");
}

#[tokio::test]
async fn excess_in_flight_requests_get_a_fast_503() {
    let up = upstream(Upstream::Slow(Duration::from_millis(800))).await;
    let gw = gateway(&format!(
        "{}[server]\nmax_in_flight = 1\n",
        upstream_toml(up)
    ))
    .await;
    let slow = tokio::spawn({
        let url = gw.url("/slow");
        async move {
            crate::fixtures::client()
                .get(url)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    crate::fixtures::eventually(
        Duration::from_secs(5),
        "the first request in flight",
        || std::future::ready(gw.metrics().in_flight_now() >= 1),
    )
    .await;
    let resp = crate::fixtures::client()
        .get(gw.url("/second"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    assert_entra_error(resp, 503, "temporarily_unavailable").await;
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new() {
    let up = upstream(Upstream::Slow(Duration::from_millis(700))).await;
    let mut gw = gateway(&upstream_toml(up)).await;
    let slow = tokio::spawn({
        let url = gw.url("/slow");
        async move {
            let r = crate::fixtures::client().get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    });
    crate::fixtures::eventually(Duration::from_secs(5), "the slow request in flight", || {
        std::future::ready(gw.metrics().in_flight_now() >= 1)
    })
    .await;
    gw.shutdown();
    // New connections are refused once the listener is closed.
    crate::fixtures::until_refused(gw.addr, Duration::from_secs(2)).await;
    let (status, _) = slow.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completed");
    tokio::time::timeout(Duration::from_secs(5), gw.task())
        .await
        .expect("server returned after draining")
        .unwrap();
}
