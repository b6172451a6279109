//! What the gateway does to native-auth traffic: ambiguous paths and parameters refused
//! before anything reaches Entra, OTP sends labelled with the channel learned from
//! introspect answers, V2 blocked by default, gated bodies forwarded byte for byte.

use crate::fixtures::entra::{raw, start, TENANT};
use otpgate::emulate::entra::DEMO_CLIENT_ID;

fn sends(metrics: &str, channel: &str) -> u64 {
    let needle = format!(
        "otpgate_otp_send_requests_total{{endpoint=\"sign_in_challenge\",channel=\"{channel}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn mfa_challenges_are_labelled_with_the_learned_channel() {
    let env = start("").await;
    let intro = env.introspect("both@contoso.com").await;
    let methods = intro.body["methods"].as_array().unwrap().clone();
    let id_of = |channel: &str| {
        methods
            .iter()
            .find(|m| m["challenge_channel"] == channel)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let email = env.mfa_challenge(&intro.token(), &id_of("email")).await;
    assert_eq!(email.status, 200, "{}", email.body);
    let m = env.metrics().await;
    assert_eq!((sends(&m, "email"), sends(&m, "sms")), (1, 0), "{m}");

    let sms = env.mfa_challenge(&email.token(), &id_of("sms")).await;
    assert_eq!(sms.status, 200, "{}", sms.body);
    let m = env.metrics().await;
    assert_eq!((sends(&m, "email"), sends(&m, "sms")), (1, 1), "{m}");
    let outbox = env.outbox();
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[0].channel, "email");
    assert_eq!(outbox[1].channel, "sms");

    // An id never seen in an introspect answer: the configured default, SMS.
    let unknown = env
        .mfa_challenge(&sms.token(), "00000000-dead-beef-0000-000000000000")
        .await;
    assert_eq!(unknown.status, 400, "the emulator does not know it either");
    let m = env.metrics().await;
    assert_eq!(sends(&m, "sms"), 2, "{m}");
}

#[tokio::test]
async fn unknown_method_ids_follow_the_configured_channel() {
    let env = start("[entra]\nunknown_method_channel = \"email\"\n").await;
    let intro = env.introspect("sms@contoso.com").await;
    let _ = env
        .mfa_challenge(&intro.token(), "11111111-2222-3333-4444-555555555555")
        .await;
    let m = env.metrics().await;
    assert_eq!((sends(&m, "email"), sends(&m, "sms")), (1, 0), "{m}");
}

fn post_raw(path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn ambiguous_paths_never_reach_entra() {
    // No velocity rules: four sends in a row from one IP are all let through.
    let env = start("[defense]\nvelocity = []\n").await;
    // A real flow's token, so a forwarded request could have sent a code.
    let intro = env.introspect("sms@contoso.com").await;
    let id = intro.body["methods"][0]["id"].as_str().unwrap().to_owned();
    let body = format!(
        "client_id={DEMO_CLIENT_ID}&continuation_token={}&challenge_type=oob%20redirect&id={id}",
        intro.token()
    );
    let variants = [
        format!("/{TENANT}/oauth2%2Fv2.0/challenge"),
        format!("/{TENANT}/oauth2%2fv2.0%2fchallenge"),
        format!("/{TENANT}/oauth2\\v2.0\\challenge"),
        format!("/{TENANT}/oauth2%5Cv2.0%5Cchallenge"),
        format!("/{TENANT}/oauth2/./v2.0/challenge"),
        format!("/{TENANT}/oauth2/v2.0/x/../challenge"),
        format!("/{TENANT}/oauth2/%2E/v2.0/challenge"),
        format!("/{TENANT}///oauth2/v2.0/challenge"),
        format!("/{TENANT}/oauth2//v2.0/challenge"),
        format!("/{TENANT}/oauth2/v2.0/challenge/"),
        format!("/{TENANT}/oauth2/v2.0/challenge;x=1"),
        format!("/{TENANT}/oauth2;a/v2.0/challenge"),
        format!("/{TENANT}/oauth2/v2.0/challenge%00"),
        format!("/{TENANT}/oauth2/v2.0/%C0%AFchallenge"),
        format!("/{TENANT}/oauth2/v2.0/challenge."),
        format!("/{TENANT}/oauth2/v2.0/challenge.json"),
        format!("//{TENANT}/oauth2/v2.0/challenge"),
        "/oauth2/v2.0/challenge".to_owned(),
        format!("/x/{TENANT}/oauth2/v2.0/challenge"),
        format!("/{TENANT}/%252e%252e/oauth2/v2.0/challenge"),
    ];
    for path in &variants {
        let answer = raw(env.gw.addr, &post_raw(path, &body, "")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("\"invalid_request\""), "{path}: {answer}");
    }
    assert!(
        env.outbox().is_empty(),
        "an ambiguous request reached Entra: {:?}",
        env.outbox()
    );

    // The canonical request — its case and unreserved-escape variants, and the doubled
    // slash MSAL iOS sends after an authority ending in `/` — are gated and forwarded.
    for path in [
        format!("/{TENANT}/oauth2/v2.0/challenge"),
        "/CONTOSO.onmicrosoft.com/OAuth2/V2.0/Challenge".to_owned(),
        format!("/{TENANT}/oauth2/v2.0/ch%61llenge"),
        format!("/{TENANT}//oauth2/v2.0/challenge"),
    ] {
        let before = env.outbox().len();
        let intro = env.introspect("sms@contoso.com").await;
        let body = format!(
            "client_id={DEMO_CLIENT_ID}&continuation_token={}&challenge_type=oob%20redirect&id={id}",
            intro.token()
        );
        let answer = raw(env.gw.addr, &post_raw(&path, &body, "")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert_eq!(env.outbox().len(), before + 1, "{path}");
    }
    let m = env.metrics().await;
    assert_eq!(
        sends(&m, "sms"),
        4,
        "each canonical variant was labelled: {m}"
    );
}

#[tokio::test]
async fn non_post_on_a_native_auth_endpoint_is_refused() {
    let env = start("").await;
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let req = format!(
            "{method} /{TENANT}/register/v1.0/challenge?challenge_target=%2B447400123456&challenge_channel=sms HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(env.gw.addr, req.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{method}: {answer}");
    }
    assert!(env.outbox().is_empty());
}

#[tokio::test]
async fn duplicate_parameters_and_foreign_bodies_are_refused() {
    let env = start("").await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    let ct = reg.token();
    let target = "challenge_target=%2B447400123456";
    let good = format!(
        "client_id={DEMO_CLIENT_ID}&continuation_token={ct}&challenge_type=oob&challenge_channel=sms&{target}"
    );
    let path = format!("/{TENANT}/register/v1.0/challenge");
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        // the target twice in the body
        (path.clone(), post_raw(&path, &format!("{good}&challenge_target=%2B1900555"), ""), "400"),
        // in the query and the body
        (
            format!("{path}?challenge_target=%2B1900555"),
            post_raw(&format!("{path}?challenge_target=%2B1900555"), &good, ""),
            "400",
        ),
        // a case variant of the name
        (path.clone(), post_raw(&path, &format!("{good}&Challenge_Target=%2B1900555"), ""), "400"),
        // JSON body
        (
            path.clone(),
            format!(
                "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
            .into_bytes(),
            "415",
        ),
        // compressed body
        (path.clone(), post_raw(&path, &good, "Content-Encoding: gzip\r\n"), "415"),
        // oversized body
        (path.clone(), post_raw(&path, &format!("{good}&pad={}", "a".repeat(20_000)), ""), "413"),
        // broken encoding
        (path.clone(), post_raw(&path, &format!("{good}&x=%zz"), ""), "400"),
    ];
    for (label, req, status) in &cases {
        let answer = raw(env.gw.addr, req).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{label}: want {status}, got {answer}"
        );
    }
    assert!(env.outbox().is_empty(), "{:?}", env.outbox());
    // The same request without the tricks goes through and sends one SMS.
    let answer = raw(env.gw.addr, &post_raw(&path, &good, "")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let outbox = env.outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].target, "+447400123456");
}

#[tokio::test]
async fn parameters_in_the_query_are_gated_like_the_body() {
    let env = start("").await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    let path = format!(
        "/{TENANT}/register/v1.0/challenge?client_id={DEMO_CLIENT_ID}&continuation_token={}&challenge_type=oob&challenge_channel=sms&challenge_target=%2B447400123456",
        reg.token()
    );
    let answer = raw(env.gw.addr, &post_raw(&path, "", "")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let m = env.metrics().await;
    assert!(
        m.contains(
            "otpgate_otp_send_requests_total{endpoint=\"register_challenge\",channel=\"sms\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn v2_is_blocked_by_default_and_passes_when_configured() {
    let env = start("").await;
    for path in [
        format!("/{TENANT}/oauth2/v2.0/authorize-challenge"),
        format!("/{TENANT}/api/v0.1/signin/start"),
    ] {
        let answer = raw(env.gw.addr, &post_raw(&path, "client_id=x", "")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    let env = start("[entra]\nv2 = \"pass\"\n").await;
    let answer = raw(
        env.gw.addr,
        &post_raw(
            &format!("/{TENANT}/api/v0.1/signin/start"),
            "client_id=x",
            "",
        ),
    )
    .await;
    // Forwarded: the emulator (V1 only) answers 404 itself.
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn gated_bodies_are_forwarded_byte_for_byte() {
    let up = crate::fixtures::upstream(crate::fixtures::Upstream::Echo).await;
    let gw = crate::fixtures::gateway(&format!("[upstream]\nurl = \"http://{up}\"\n")).await;
    // Unusual but valid: escapes in other case, `+` for space, an empty pair.
    let body = "client_id=abc&username=a%40b.C&&challenge_type=password+redirect%20&x=%e2%82%ac";
    let resp = crate::fixtures::client()
        .post(gw.url(&format!("/{TENANT}/oauth2/v2.0/initiate")))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), body);
}

/// A client that gives up while its send is being judged does not cancel it: the send
/// runs to the end, Entra sends the code, and the audit log has its line.
#[tokio::test]
async fn a_client_leaving_mid_send_leaves_the_send_and_its_audit_line_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let env = start(&format!(
        "[routes.sms]\nprovider = \"mock\"\nbudget = \"5s\"\n\
         [providers.mock]\ndefault_action = \"allow\"\nlatency = \"400ms\"\n\
         [audit]\noutput = \"file\"\npath = \"{}\"\nhmac_key = \"audit-key\"\n",
        path.display()
    ))
    .await;
    let token = env
        .register_introspect("newphone@contoso.com")
        .await
        .token();
    let gave_up = env
        .client
        .post(env.gw.url(&format!("/{TENANT}/register/v1.0/challenge")))
        .form(&[
            ("client_id", DEMO_CLIENT_ID),
            ("continuation_token", token.as_str()),
            ("challenge_type", "oob"),
            ("challenge_channel", "sms"),
            ("challenge_target", "+447400123456"),
        ])
        .timeout(std::time::Duration::from_millis(100))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client should give up before the provider answers: {gave_up:?}"
    );
    assert!(
        env.outbox().is_empty(),
        "nothing sent while the provider thinks"
    );

    let text = crate::fixtures::until_written(
        &path,
        std::time::Duration::from_secs(10),
        "an audit line for the abandoned send",
        |text| text.contains("\"endpoint\":\"register_challenge\""),
    )
    .await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let send = lines
        .iter()
        .find(|l| l["endpoint"] == "register_challenge")
        .unwrap_or_else(|| panic!("no audit line for the abandoned send: {lines:?}"));
    assert_eq!(send["decision"], "allow");
    assert_eq!(send["upstream_status"], 200);
    assert_eq!(
        env.outbox().len(),
        1,
        "Entra sent the code the audit line records"
    );
    let metrics = env.metrics().await;
    assert!(
        metrics.contains("otpgate_in_flight_requests 0"),
        "in-flight back to zero:\n{metrics}"
    );
}

#[tokio::test]
async fn audit_has_one_line_per_gated_request_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let env = start(&format!(
        "[audit]\noutput = \"file\"\npath = \"{}\"\nhmac_key = \"audit-key\"\n",
        path.display()
    ))
    .await;
    let reg = env.register_introspect("newphone@contoso.com").await;
    let token = reg.token();
    let sent = env.register_sms(&token, "+447400123456").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let code = env.outbox()[0].code.clone();
    // Pass-through traffic is not audited.
    let _ = env
        .client
        .get(
            env.gw
                .url("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"),
        )
        .send()
        .await
        .unwrap();
    // initiate, challenge, token, register/introspect, register/challenge: five gated.
    let text = crate::fixtures::until_written(
        &path,
        std::time::Duration::from_secs(5),
        "five audit lines",
        |text| text.lines().count() >= 5,
    )
    .await;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    let last = &lines[4];
    assert_eq!(last["endpoint"], "register_challenge");
    assert_eq!(last["channel"], "sms");
    assert_eq!(last["upstream_status"], 200);
    assert!(last["flow"].as_str().unwrap().len() >= 8);
    assert_eq!(
        lines[0]["flow"], last["flow"],
        "one flow from initiate to the registration challenge"
    );
    for secret in ["7400123456", token.as_str(), code.as_str(), "Passw0rd!"] {
        assert!(
            !text.contains(secret),
            "audit log leaks {secret:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn spa_proxy_mode_answers_preflights_and_maps_the_prefix() {
    let env = start(
        "[cors]\nallowed_origins = [\"https://app.example\"]\nallow_headers = [\"x-otpgate-proof\"]\n\
         path_prefix = \"/api/auth\"\ntenant = \"contoso.onmicrosoft.com\"\n",
    )
    .await;
    let url = env.gw.url("/api/auth/oauth2/v2.0/initiate");
    let pre = env
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-client-sku,x-otpgate-proof",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("x-otpgate-proof"));

    let form = [
        ("client_id", DEMO_CLIENT_ID),
        ("username", "otp@contoso.com"),
        ("challenge_type", "oob redirect"),
    ];
    let resp = env
        .client
        .post(&url)
        .header("origin", "https://app.example")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "mapped onto the tenant");
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-ms-request-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["continuation_token"].is_string(), "{body}");

    // Another origin: the preflight is refused and nothing carries CORS headers.
    let pre = env
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 403);
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    let resp = env
        .client
        .post(&url)
        .header("origin", "https://evil.example")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

/// otpgate's own step-up asks the client for the proof header; a browser may always send
/// it, whether or not `cors.allow_headers` names it.
#[tokio::test]
async fn spa_preflight_always_allows_the_step_up_proof_header() {
    for (stepup, header) in [
        ("", "x-otpgate-proof"),
        ("[stepup]\nheader = \"x-my-proof\"\n", "x-my-proof"),
    ] {
        let env = start(&format!(
            "{stepup}[cors]\nallowed_origins = [\"https://app.example\"]\nallow_headers = [\"x-fraud-token\"]\n"
        ))
        .await;
        let pre = env
            .client
            .request(
                reqwest::Method::OPTIONS,
                env.gw.url("/contoso.onmicrosoft.com/oauth2/v2.0/challenge"),
            )
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                format!("x-fraud-token,{header}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(pre.status(), 204);
        let allowed = pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(allowed.contains("x-fraud-token"), "{allowed}");
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
}
