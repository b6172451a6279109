//! The Entra emulator over real sockets: every flow of the reference, its documented bodies
//! and errors, as a client sees them. The suite runs twice: straight against the emulator
//! (`emulator_entra`) and through the gateway (`entra_gateway`), which must change none
//! of it.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use otpgate::emulate::entra::{
    serve, EntraConfig, EntraEmulator, OutboxEntry, DEMO_CLIENT_ID, DEMO_PASSWORD, DEMO_TENANT_ID,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const DOMAIN: &str = "contoso.onmicrosoft.com";
const MFA_CAPS: &str = "mfa_required registration_required";

struct Harness {
    base: String,
    client: reqwest::Client,
    emulator: EntraEmulator,
    _stop: oneshot::Sender<()>,
}

async fn start(config: EntraConfig) -> Harness {
    start_with(config, crate::fixtures::http()).await
}

async fn start_with(config: EntraConfig, client: reqwest::ClientBuilder) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator_addr = listener.local_addr().unwrap();
    let emulator = EntraEmulator::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, emulator.clone(), async move {
        let _ = stopped.await;
    }));
    let base = if super::VIA_GATEWAY {
        let gw =
            crate::fixtures::gateway(&format!("[upstream]\nurl = \"http://{emulator_addr}\"\n"))
                .await;
        let base = format!("http://{}", gw.addr);
        // The gateway lives as long as the test's runtime.
        std::mem::forget(gw);
        base
    } else {
        format!("http://{emulator_addr}")
    };
    Harness {
        base,
        client: client.build().unwrap(),
        emulator,
        _stop: stop,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn token(&self) -> String {
        self.body["continuation_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no continuation_token in {}", self.body))
            .to_owned()
    }

    /// An Entra error with this `error` and first error code.
    fn assert_error(&self, status: StatusCode, error: &str, code: u64) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], error, "{}", self.body);
        assert_eq!(self.body["error_codes"][0], code, "{}", self.body);
        let description = self.body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}:")),
            "{description}"
        );
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(
                self.body[field].is_string(),
                "{field} missing in {}",
                self.body
            );
        }
    }
}

impl Harness {
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_at(&format!("/{DOMAIN}{path}"), form).await
    }

    async fn post_at(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let mut fields = vec![("client_id", DEMO_CLIENT_ID)];
        fields.extend_from_slice(form);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .form(&fields)
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    async fn outbox(&self) -> Vec<OutboxEntry> {
        let response = self
            .client
            .get(format!("{}/_emulator/outbox", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// initiate → challenge → token with the password, as MSAL does for email+password.
    async fn password_sign_in(&self, username: &str, password: &str, caps: &str) -> Answer {
        let started = self
            .post(
                "/oauth2/v2.0/initiate",
                &[
                    ("username", username),
                    ("challenge_type", "password redirect"),
                    ("capabilities", caps),
                ],
            )
            .await;
        assert_eq!(started.status, StatusCode::OK, "{}", started.body);
        let challenged = self
            .post(
                "/oauth2/v2.0/challenge",
                &[
                    ("continuation_token", &started.token()),
                    ("challenge_type", "password redirect"),
                ],
            )
            .await;
        assert_eq!(challenged.body["challenge_type"], "password");
        self.post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", &challenged.token()),
                ("grant_type", "password"),
                ("password", password),
                ("scope", "openid offline_access profile"),
                ("client_info", "1"),
            ],
        )
        .await
    }

    /// The MFA loop up to the introspect answer.
    async fn introspect_after_password(&self, username: &str) -> Answer {
        let interrupted = self
            .password_sign_in(username, DEMO_PASSWORD, MFA_CAPS)
            .await;
        interrupted.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 50_076);
        assert_eq!(interrupted.body["suberror"], "mfa_required");
        let introspected = self
            .post(
                "/oauth2/v2.0/introspect",
                &[("continuation_token", &interrupted.token())],
            )
            .await;
        assert_eq!(introspected.status, StatusCode::OK, "{}", introspected.body);
        introspected
    }

    async fn mfa_challenge(&self, token: &str, id: &str) -> Answer {
        self.post(
            "/oauth2/v2.0/challenge",
            &[
                ("continuation_token", token),
                ("challenge_type", "password redirect"),
                ("id", id),
            ],
        )
        .await
    }

    async fn redeem(&self, grant: &str, token: &str, oob: &str) -> Answer {
        self.post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", token),
                ("grant_type", grant),
                ("oob", oob),
                ("scope", "openid offline_access"),
                ("client_info", "1"),
            ],
        )
        .await
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        body,
        headers,
    }
}

fn claims(jwt: &Value) -> Value {
    let jwt = jwt.as_str().expect("a JWT string");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "JWT shape");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

fn only_entry(outbox: &[OutboxEntry]) -> &OutboxEntry {
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    &outbox[0]
}

#[tokio::test]
async fn password_sign_in_without_mfa_issues_real_looking_tokens() {
    let h = start(EntraConfig::demo()).await;
    let tokens = h
        .password_sign_in("Password@Contoso.com", DEMO_PASSWORD, "")
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    assert!(tokens.headers.contains_key("x-ms-request-id"));
    assert!(!tokens.headers.contains_key("access-control-allow-origin"));
    let body = &tokens.body;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "openid offline_access profile");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body["ext_expires_in"].as_u64().unwrap() > 0);
    assert!(body["refresh_token"].as_str().unwrap().len() > 20);

    let id = claims(&body["id_token"]);
    assert_eq!(id["aud"], DEMO_CLIENT_ID);
    assert_eq!(id["tid"], DEMO_TENANT_ID);
    assert_eq!(
        id["iss"],
        format!("https://{DEMO_TENANT_ID}.ciamlogin.com/{DEMO_TENANT_ID}/v2.0")
    );
    assert_eq!(id["preferred_username"], "password@contoso.com");
    assert_eq!(id["name"], "password");
    assert_eq!(id["ver"], "2.0");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(id["exp"].as_u64().unwrap() > now);
    assert!(id["iat"].as_u64().unwrap() <= now + 1);
    assert!(id["nbf"].is_u64());
    assert!(id["sub"].as_str().unwrap().len() >= 40);
    let access = claims(&body["access_token"]);
    assert_eq!(access["oid"], id["oid"]);
    assert_eq!(access["aud"], DEMO_CLIENT_ID);

    let info: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(body["client_info"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info["uid"], id["oid"]);
    assert_eq!(info["utid"], DEMO_TENANT_ID);
    assert!(
        h.outbox().await.is_empty(),
        "a password sign-in sends nothing"
    );
}

#[tokio::test]
async fn scopes_decide_which_tokens_come_back() {
    let h = start(EntraConfig::demo()).await;
    let started = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "password@contoso.com"),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    let challenged = h
        .post(
            "/oauth2/v2.0/challenge",
            &[("continuation_token", &started.token())],
        )
        .await;
    let tokens = h
        .post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", &challenged.token()),
                ("grant_type", "password"),
                ("password", DEMO_PASSWORD),
                ("scope", "User.Read"),
                ("nonce", "n-123"),
            ],
        )
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    assert!(tokens.body.get("id_token").is_none());
    assert!(tokens.body.get("refresh_token").is_none());
    assert!(tokens.body.get("client_info").is_none());
    assert_eq!(claims(&tokens.body["access_token"])["scp"], "User.Read");
}

#[tokio::test]
async fn email_otp_sign_in_sends_one_email_and_redeems_it() {
    let h = start(EntraConfig::demo()).await;
    let started = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    let sent = h
        .post(
            "/oauth2/v2.0/challenge",
            &[
                ("continuation_token", &started.token()),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK);
    assert_eq!(sent.body["challenge_type"], "oob");
    assert_eq!(sent.body["binding_method"], "prompt");
    assert_eq!(sent.body["challenge_channel"], "email");
    assert_eq!(sent.body["code_length"], 8);
    let label = sent.body["challenge_target_label"].as_str().unwrap();
    assert!(
        label.contains('*') && !label.contains("otp@contoso.com"),
        "{label}"
    );

    let outbox = h.outbox().await;
    let mail = only_entry(&outbox);
    assert_eq!(mail.channel, "email");
    assert_eq!(mail.target, "otp@contoso.com");
    assert_eq!(mail.endpoint, "/oauth2/v2.0/challenge");
    assert_eq!(mail.code.len(), 8);
    assert!(mail.code.bytes().all(|b| b.is_ascii_digit()));
    // RFC 3339 UTC, e.g. 2026-05-01T10:15:00.123Z.
    assert_eq!(mail.at.as_bytes()[10], b'T', "{}", mail.at);
    assert!(mail.at.ends_with('Z'), "{}", mail.at);

    let tokens = h.redeem("oob", &sent.token(), &mail.code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    assert_eq!(
        claims(&tokens.body["id_token"])["preferred_username"],
        "otp@contoso.com"
    );
}

#[tokio::test]
async fn sms_mfa_sends_to_the_users_phone_and_resend_replaces_the_code() {
    let h = start(EntraConfig::demo()).await;
    let introspected = h.introspect_after_password("sms@contoso.com").await;
    let methods = introspected.body["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 1);
    let method = &methods[0];
    assert_eq!(method["challenge_type"], "oob");
    assert_eq!(method["challenge_channel"], "sms");
    let hint = method["login_hint"].as_str().unwrap();
    assert!(
        hint.starts_with('+') && hint.contains('*') && !hint.contains("7400123456"),
        "{hint}"
    );
    let id = method["id"].as_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "opaque GUID id, got {id}"
    );
    assert!(h.outbox().await.is_empty(), "introspect sends nothing");

    let first = h.mfa_challenge(&introspected.token(), id).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["challenge_type"], "oob");
    assert_eq!(first.body["challenge_channel"], "sms");
    assert_eq!(first.body["challenge_target_label"], hint);
    let outbox = h.outbox().await;
    let sms = only_entry(&outbox);
    assert_eq!(
        (sms.channel.as_str(), sms.target.as_str()),
        ("sms", "+447400123456")
    );
    assert_eq!(sms.endpoint, "/oauth2/v2.0/challenge");
    let first_code = sms.code.clone();

    let resent = h.mfa_challenge(&first.token(), id).await;
    assert_eq!(resent.status, StatusCode::OK, "{}", resent.body);
    let outbox = h.outbox().await;
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[1].target, "+447400123456");
    let second_code = outbox[1].code.clone();

    // The token of the first challenge is spent, and its code no longer counts.
    let stale_token = h.redeem("mfa_oob", &first.token(), &second_code).await;
    stale_token.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 55_200);
    if first_code != second_code {
        let stale_code = h.redeem("mfa_oob", &resent.token(), &first_code).await;
        stale_code.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 50_181);
        assert_eq!(stale_code.body["suberror"], "invalid_oob_value");
    }

    let tokens = h.redeem("mfa_oob", &resent.token(), &second_code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let id_claims = claims(&tokens.body["id_token"]);
    assert_eq!(id_claims["preferred_username"], "sms@contoso.com");
    assert_eq!(id_claims["tid"], DEMO_TENANT_ID);
    assert_eq!(id_claims["aud"], DEMO_CLIENT_ID);
}

#[tokio::test]
async fn email_mfa_sends_an_email_code() {
    let h = start(EntraConfig::demo()).await;
    let introspected = h.introspect_after_password("email-mfa@contoso.com").await;
    let method = &introspected.body["methods"][0];
    assert_eq!(method["challenge_channel"], "email");
    let sent = h
        .mfa_challenge(&introspected.token(), method["id"].as_str().unwrap())
        .await;
    assert_eq!(sent.body["challenge_channel"], "email");
    let outbox = h.outbox().await;
    let mail = only_entry(&outbox);
    assert_eq!(
        (mail.channel.as_str(), mail.target.as_str()),
        ("email", "email-mfa@contoso.com")
    );
    let tokens = h.redeem("mfa_oob", &sent.token(), &mail.code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
}

#[tokio::test]
async fn a_user_with_two_methods_gets_both_listed_with_distinct_ids() {
    let h = start(EntraConfig::demo()).await;
    let introspected = h.introspect_after_password("both@contoso.com").await;
    let methods = introspected.body["methods"].as_array().unwrap();
    let channels: Vec<&str> = methods
        .iter()
        .map(|m| m["challenge_channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["email", "sms"]);
    assert_ne!(methods[0]["id"], methods[1]["id"]);

    let sent = h
        .mfa_challenge(&introspected.token(), methods[1]["id"].as_str().unwrap())
        .await;
    assert_eq!(sent.body["challenge_channel"], "sms");
    assert_eq!(only_entry(&h.outbox().await).target, "+447400123457");

    let unknown = h
        .mfa_challenge(&sent.token(), "00000000-0000-0000-0000-000000000000")
        .await;
    unknown.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 901_001);
}

#[tokio::test]
async fn jit_registration_texts_the_chosen_phone_and_the_next_sign_in_uses_it() {
    let h = start(EntraConfig::demo()).await;
    let interrupted = h
        .password_sign_in("newphone@contoso.com", DEMO_PASSWORD, MFA_CAPS)
        .await;
    interrupted.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 50_079);
    assert_eq!(interrupted.body["suberror"], "registration_required");

    // The reference writes the register calls as query strings; they work that way too.
    let listed = h
        .post_query(
            "/register/v1.0/introspect",
            &[("continuation_token", &interrupted.token())],
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let ids: Vec<&str> = listed.body["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["email", "sms"]);
    assert_eq!(
        listed.body["methods"][0]["login_hint"],
        "newphone@contoso.com"
    );

    let bad = h
        .post(
            "/register/v1.0/challenge",
            &[
                ("continuation_token", &listed.token()),
                ("challenge_type", "oob"),
                ("challenge_channel", "sms"),
                ("challenge_target", "call me maybe"),
            ],
        )
        .await;
    if super::VIA_GATEWAY {
        // The gateway's destination policy denies an unparseable number before Entra sees it.
        bad.assert_error(StatusCode::BAD_REQUEST, "access_denied", 500_571);
        assert_eq!(bad.body["suberror"], "provider_blocked_by_rep");
    } else {
        bad.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 901_001);
    }

    let sent = h
        .post(
            "/register/v1.0/challenge",
            &[
                ("continuation_token", &listed.token()),
                ("challenge_type", "oob"),
                ("challenge_channel", "sms"),
                ("challenge_target", "+44 7400 123999"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert_eq!(sent.body["challenge_type"], "oob");
    assert_eq!(sent.body["binding_method"], "prompt");
    assert_eq!(sent.body["challenge_channel"], "sms");
    // Masked like the MFA labels, in the field the SDKs read and in the label field.
    assert_eq!(sent.body["challenge_target"], "+44********99");
    assert_eq!(sent.body["challenge_target_label"], "+44********99");
    assert_eq!(sent.body["code_length"], 8);
    let outbox = h.outbox().await;
    let sms = only_entry(&outbox);
    assert_eq!(
        (sms.channel.as_str(), sms.target.as_str()),
        ("sms", "+447400123999")
    );
    assert_eq!(sms.endpoint, "/register/v1.0/challenge");

    let wrong = h
        .post(
            "/register/v1.0/continue",
            &[
                ("continuation_token", &sent.token()),
                ("grant_type", "oob"),
                ("oob", "x"),
            ],
        )
        .await;
    assert_eq!(wrong.body["suberror"], "invalid_oob_value");
    let registered = h
        .post(
            "/register/v1.0/continue",
            &[
                ("continuation_token", &sent.token()),
                ("grant_type", "oob"),
                ("oob", &sms.code),
            ],
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
    let tokens = h
        .redeem("continuation_token", &registered.token(), "")
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);

    h.clear_outbox_over_http().await;
    let introspected = h.introspect_after_password("newphone@contoso.com").await;
    let method = &introspected.body["methods"][0];
    assert_eq!(method["challenge_channel"], "sms");
    h.mfa_challenge(&introspected.token(), method["id"].as_str().unwrap())
        .await;
    assert_eq!(only_entry(&h.outbox().await).target, "+447400123999");
}

impl Harness {
    /// Parameters in the query string, an empty body.
    async fn post_query(&self, path: &str, params: &[(&str, &str)]) -> Answer {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("client_id", DEMO_CLIENT_ID);
        for (name, value) in params {
            query.append_pair(name, value);
        }
        let url = format!("{}/{DOMAIN}{path}?{}", self.base, query.finish());
        answer(self.client.post(url).send().await.unwrap()).await
    }

    async fn clear_outbox_over_http(&self) {
        let response = self
            .client
            .delete(format!("{}/_emulator/outbox", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.headers().contains_key("x-ms-request-id"));
    }
}

#[tokio::test]
async fn outbox_lists_and_clears_over_http() {
    let h = start(EntraConfig::demo()).await;
    let started = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    h.post(
        "/oauth2/v2.0/challenge",
        &[("continuation_token", &started.token())],
    )
    .await;
    assert_eq!(h.outbox().await.len(), 1);
    assert_eq!(h.emulator.outbox().len(), 1);
    h.clear_outbox_over_http().await;
    assert!(h.outbox().await.is_empty());
    assert!(h.emulator.outbox().is_empty());
    let put = h
        .client
        .put(format!("{}/_emulator/outbox", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
}

fn signup_config() -> EntraConfig {
    let mut config = EntraConfig::demo();
    config.signup.required_attributes = vec!["displayName".into()];
    config
}

#[tokio::test]
async fn sign_up_with_password_and_attributes_then_sign_in() {
    let h = start(signup_config()).await;
    let user = "new.person@contoso.com";
    let started = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", user),
                ("challenge_type", "oob password redirect"),
            ],
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let sent = h
        .post(
            "/signup/v1.0/challenge",
            &[
                ("continuation_token", &started.token()),
                ("challenge_type", "oob password redirect"),
            ],
        )
        .await;
    assert_eq!(sent.body["challenge_type"], "oob");
    assert_eq!(sent.body["challenge_channel"], "email");
    assert_eq!(sent.body["interval"], 300);
    assert_eq!(sent.body["code_length"], 8);
    let outbox = h.outbox().await;
    let mail = only_entry(&outbox);
    assert_eq!(
        (mail.target.as_str(), mail.endpoint.as_str()),
        (user, "/signup/v1.0/challenge")
    );

    let verified = h
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", &sent.token()),
                ("grant_type", "oob"),
                ("oob", &mail.code),
            ],
        )
        .await;
    verified.assert_error(StatusCode::BAD_REQUEST, "credential_required", 55_103);
    let asked = h
        .post(
            "/signup/v1.0/challenge",
            &[
                ("continuation_token", &verified.token()),
                ("challenge_type", "oob password redirect"),
            ],
        )
        .await;
    assert_eq!(asked.body["challenge_type"], "password");

    let weak = h
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", &asked.token()),
                ("grant_type", "password"),
                ("password", "weakweak"),
            ],
        )
        .await;
    weak.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 399_246);
    assert_eq!(weak.body["suberror"], "password_too_weak");

    let with_password = h
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", &asked.token()),
                ("grant_type", "password"),
                ("password", "N3w-Secret"),
            ],
        )
        .await;
    with_password.assert_error(StatusCode::BAD_REQUEST, "attributes_required", 55_106);
    assert_eq!(
        with_password.body["required_attributes"][0]["name"],
        "displayName"
    );
    assert_eq!(
        with_password.body["required_attributes"][0]["required"],
        true
    );

    let created = h
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", &with_password.token()),
                ("grant_type", "attributes"),
                ("attributes", r#"{"displayName":"New Person"}"#),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let tokens = h
        .post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", &created.token()),
                ("grant_type", "continuation_token"),
                ("username", user),
                ("scope", "openid"),
            ],
        )
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    assert_eq!(claims(&tokens.body["id_token"])["name"], "New Person");

    let signed_in = h.password_sign_in(user, "N3w-Secret", "").await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let again = h
        .post(
            "/signup/v1.0/start",
            &[("username", user), ("challenge_type", "oob redirect")],
        )
        .await;
    again.assert_error(StatusCode::BAD_REQUEST, "user_already_exists", 1_003_037);
}

#[tokio::test]
async fn sign_up_with_mfa_policy_registers_the_verified_email_preverified() {
    let mut config = EntraConfig::demo();
    config.signup.mfa_required = true;
    let h = start(config).await;
    let user = "fresh@contoso.com";
    // The older docs' singular `capability` spelling is honoured.
    let started = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", user),
                ("challenge_type", "oob password redirect"),
                ("password", "Str0ng-Enough"),
                ("capability", "registration_required"),
            ],
        )
        .await;
    let sent = h
        .post(
            "/signup/v1.0/challenge",
            &[("continuation_token", &started.token())],
        )
        .await;
    let code = only_entry(&h.outbox().await).code.clone();
    let created = h
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", &sent.token()),
                ("grant_type", "oob"),
                ("oob", &code),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let interrupted = h.redeem("continuation_token", &created.token(), "").await;
    assert_eq!(
        interrupted.body["suberror"], "registration_required",
        "{}",
        interrupted.body
    );

    let listed = h
        .post(
            "/register/v1.0/introspect",
            &[("continuation_token", &interrupted.token())],
        )
        .await;
    let preverified = h
        .post(
            "/register/v1.0/challenge",
            &[
                ("continuation_token", &listed.token()),
                ("challenge_type", "oob"),
                ("challenge_channel", "email"),
                ("challenge_target", "Fresh@contoso.com"),
            ],
        )
        .await;
    assert_eq!(preverified.status, StatusCode::OK, "{}", preverified.body);
    assert_eq!(preverified.body["challenge_type"], "preverified");
    assert_eq!(h.outbox().await.len(), 1, "preverified sends no code");
    let registered = h
        .post(
            "/register/v1.0/continue",
            &[
                ("continuation_token", &preverified.token()),
                ("grant_type", "continuation_token"),
            ],
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.body);
    let tokens = h
        .redeem("continuation_token", &registered.token(), "")
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
}

#[tokio::test]
async fn sign_up_rejects_what_the_reference_rejects() {
    let h = start(EntraConfig::demo()).await;
    let short = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "x@contoso.com"),
                ("challenge_type", "oob password redirect"),
                ("password", "Ab1!"),
            ],
        )
        .await;
    short.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 399_246);
    assert_eq!(short.body["suberror"], "password_too_short");
    let not_email = h
        .post(
            "/signup/v1.0/start",
            &[("username", "nobody"), ("challenge_type", "oob redirect")],
        )
        .await;
    not_email.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 90_100);
    assert_invalid_username(&not_email);
    let bad_attributes = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "x@contoso.com"),
                ("challenge_type", "oob redirect"),
                ("attributes", "[1]"),
            ],
        )
        .await;
    bad_attributes.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 901_001);
    let password_only = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "x@contoso.com"),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    assert_eq!(
        password_only.body,
        serde_json::json!({
            "challenge_type": "redirect",
            "redirect_reason": "The client does not support the oob challenge type sign-up requires",
        })
    );
}

#[tokio::test]
async fn password_reset_polls_in_progress_then_succeeded() {
    let h = start(EntraConfig::demo()).await;
    let user = "sms@contoso.com";
    let started = h
        .post(
            "/resetpassword/v1.0/start",
            &[
                ("username", user),
                ("challenge_type", "oob redirect"),
                ("capabilities", MFA_CAPS),
            ],
        )
        .await;
    let sent = h
        .post(
            "/resetpassword/v1.0/challenge",
            &[
                ("continuation_token", &started.token()),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    assert_eq!(sent.body["challenge_channel"], "email");
    let outbox = h.outbox().await;
    let mail = only_entry(&outbox);
    // An SMS-MFA user's reset code goes to the account email (reference §5.3).
    assert_eq!(
        (mail.channel.as_str(), mail.target.as_str()),
        ("email", user)
    );
    assert_eq!(mail.endpoint, "/resetpassword/v1.0/challenge");

    let verified = h
        .post(
            "/resetpassword/v1.0/continue",
            &[
                ("continuation_token", &sent.token()),
                ("grant_type", "oob"),
                ("oob", &mail.code),
            ],
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert_eq!(verified.body["expires_in"], 600);
    let reused = h
        .post(
            "/resetpassword/v1.0/submit",
            &[
                ("continuation_token", &verified.token()),
                ("new_password", DEMO_PASSWORD),
            ],
        )
        .await;
    assert_eq!(reused.body["suberror"], "password_recently_used");
    let submitted = h
        .post(
            "/resetpassword/v1.0/submit",
            &[
                ("continuation_token", &verified.token()),
                ("new_password", "Fr3sh-Start"),
            ],
        )
        .await;
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.body);
    assert_eq!(submitted.body["poll_interval"], 2);
    let first = h
        .post(
            "/resetpassword/v1.0/poll_completion",
            &[("continuation_token", &submitted.token())],
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // `in_progress` carries no token (msal-browser's and iOS's fixtures): every SDK polls
    // again with the token `submit` gave it, which must still be good.
    assert_eq!(
        first.body,
        serde_json::json!({ "status": "in_progress" }),
        "in_progress carries only the status"
    );
    let done = h
        .post(
            "/resetpassword/v1.0/poll_completion",
            &[("continuation_token", &submitted.token())],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["status"], "succeeded");
    assert_ne!(
        done.token(),
        submitted.token(),
        "succeeded gives a fresh token"
    );
    // Success retires the submit token.
    let again = h
        .post(
            "/resetpassword/v1.0/poll_completion",
            &[("continuation_token", &submitted.token())],
        )
        .await;
    again.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 55_200);
    // Signing in after the reset still asks an MFA user for the second factor.
    let interrupted = h.redeem("continuation_token", &done.token(), "").await;
    assert_eq!(
        interrupted.body["suberror"], "mfa_required",
        "{}",
        interrupted.body
    );

    let old = h.password_sign_in(user, DEMO_PASSWORD, MFA_CAPS).await;
    old.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 50_126);
    let new = h.password_sign_in(user, "Fr3sh-Start", MFA_CAPS).await;
    assert_eq!(new.body["suberror"], "mfa_required");

    let unknown = h
        .post(
            "/resetpassword/v1.0/start",
            &[
                ("username", "ghost@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    unknown.assert_error(StatusCode::BAD_REQUEST, "user_not_found", 50_034);
}

#[tokio::test]
async fn both_tenant_forms_reach_the_tenant_and_others_are_404() {
    let h = start(EntraConfig::demo()).await;
    for tenant in [
        DOMAIN.to_owned(),
        DEMO_TENANT_ID.to_uppercase(),
        "CONTOSO.onmicrosoft.com".to_owned(),
    ] {
        let started = h
            .post_at(
                &format!("/{tenant}/oauth2/v2.0/initiate"),
                &[
                    ("username", "otp@contoso.com"),
                    ("challenge_type", "oob redirect"),
                ],
            )
            .await;
        assert_eq!(started.status, StatusCode::OK, "{tenant}: {}", started.body);
        // A token from one form works on the other: it is one tenant.
        let sent = h
            .post_at(
                &format!("/{DEMO_TENANT_ID}/oauth2/v2.0/challenge"),
                &[("continuation_token", &started.token())],
            )
            .await;
        assert_eq!(sent.body["challenge_channel"], "email", "{tenant}");
    }
    let other = h
        .post_at(
            "/fabrikam.onmicrosoft.com/oauth2/v2.0/initiate",
            &[("username", "otp@contoso.com")],
        )
        .await;
    other.assert_error(StatusCode::NOT_FOUND, "invalid_tenant", 90_002);
    let path = h.post("/oauth2/v2.0/nonsense", &[]).await;
    path.assert_error(StatusCode::NOT_FOUND, "invalid_request", 90_011);
    let encoded_slash = h.post("/oauth2%2Fv2.0%2Finitiate", &[]).await;
    // Entra matches no route; the gateway refuses the ambiguous path before it gets there.
    let refused = if super::VIA_GATEWAY {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::NOT_FOUND
    };
    assert_eq!(encoded_slash.status, refused);
    let case_variant = h
        .post(
            "/OAuth2/V2.0/Initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    assert_eq!(
        case_variant.status,
        StatusCode::OK,
        "paths match case-insensitively like Entra"
    );
}

#[tokio::test]
async fn openid_metadata_names_the_issuer_the_tokens_carry() {
    let h = start(EntraConfig::demo()).await;
    let response = h
        .client
        .get(format!(
            "{}/{DEMO_TENANT_ID}/v2.0/.well-known/openid-configuration",
            h.base
        ))
        .send()
        .await
        .unwrap();
    let metadata = answer(response).await;
    assert_eq!(metadata.status, StatusCode::OK);
    assert_eq!(
        metadata.body["issuer"],
        format!("https://{DEMO_TENANT_ID}.ciamlogin.com/{DEMO_TENANT_ID}/v2.0")
    );
    assert!(metadata.body["token_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/oauth2/v2.0/token"));
}

#[tokio::test]
async fn parameters_in_the_query_string_count() {
    let h = start(EntraConfig::demo()).await;
    let url = format!(
        "{}/{DOMAIN}/oauth2/v2.0/initiate?client_id={DEMO_CLIENT_ID}&username=otp%40contoso.com&challenge_type=oob+redirect",
        h.base
    );
    let response = h.client.post(url).send().await.unwrap();
    let started = answer(response).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert!(started.token().len() >= 80);
}

#[tokio::test]
async fn request_errors_have_the_documented_codes() {
    let h = start(EntraConfig::demo()).await;
    let no_redirect = h
        .post(
            "/oauth2/v2.0/initiate",
            &[("username", "otp@contoso.com"), ("challenge_type", "oob")],
        )
        .await;
    no_redirect.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 901_007);
    let unknown_user = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "ghost@contoso.com"),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    unknown_user.assert_error(StatusCode::BAD_REQUEST, "user_not_found", 50_034);
    let missing = h
        .post(
            "/oauth2/v2.0/initiate",
            &[("challenge_type", "password redirect")],
        )
        .await;
    missing.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 900_144);
    assert!(missing.body["error_description"]
        .as_str()
        .unwrap()
        .contains("'username'"));
    let response = h
        .client
        .post(format!("{}/{DOMAIN}/oauth2/v2.0/initiate", h.base))
        .form(&[("client_id", "not-a-guid"), ("username", "otp@contoso.com")])
        .send()
        .await
        .unwrap();
    answer(response)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request", 700_038);
    let unsupported = h
        .post(
            "/oauth2/v2.0/token",
            &[("grant_type", "client_credentials"), ("scope", "openid")],
        )
        .await;
    unsupported.assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", 70_003);
    let get = h
        .client
        .get(format!("{}/{DOMAIN}/oauth2/v2.0/initiate", h.base))
        .send()
        .await
        .unwrap();
    if super::VIA_GATEWAY {
        // The gateway refuses a non-POST native-auth request itself, never forwarding it.
        answer(get)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request", 900_144);
    } else {
        assert_eq!(get.headers()["allow"], "POST");
        answer(get)
            .await
            .assert_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", 900_561);
    }
    let huge = "a".repeat(70 * 1024);
    let too_large = h
        .post("/oauth2/v2.0/initiate", &[("username", &huge)])
        .await;
    // The gateway's body cap (16 KiB) is below the emulator's and answers first.
    let code = if super::VIA_GATEWAY { 900_144 } else { 90_023 };
    too_large.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", code);
}

#[tokio::test]
async fn correlation_id_echoes_client_request_id() {
    let h = start(EntraConfig::demo()).await;
    let response = h
        .client
        .post(format!("{}/{DOMAIN}/oauth2/v2.0/initiate", h.base))
        .header("client-request-id", "11111111-2222-3333-4444-555555555555")
        .form(&[("client_id", DEMO_CLIENT_ID)])
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-ms-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let error = answer(response).await;
    assert_eq!(
        error.body["correlation_id"],
        "11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(error.body["trace_id"], request_id.as_str());
}

#[tokio::test]
async fn unknown_client_ids_are_unauthorized_when_a_list_is_configured() {
    let mut config = EntraConfig::demo();
    config.client_ids = vec![DEMO_CLIENT_ID.to_owned()];
    let h = start(config).await;
    let response = h
        .client
        .post(format!("{}/{DOMAIN}/oauth2/v2.0/initiate", h.base))
        .form(&[
            ("client_id", "00000000-0000-4000-8000-000000000999"),
            ("username", "otp@contoso.com"),
            ("challenge_type", "oob redirect"),
        ])
        .send()
        .await
        .unwrap();
    answer(response)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unauthorized_client", 700_016);
    let known = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    assert_eq!(known.status, StatusCode::OK);
}

#[tokio::test]
async fn continuation_tokens_are_single_step_and_bound_to_their_endpoint() {
    let h = start(EntraConfig::demo()).await;
    let started = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "password@contoso.com"),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    let wrong_endpoint = h
        .post(
            "/oauth2/v2.0/introspect",
            &[("continuation_token", &started.token())],
        )
        .await;
    wrong_endpoint.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 901_007);
    let wrong_flow = h
        .post(
            "/resetpassword/v1.0/submit",
            &[
                ("continuation_token", &started.token()),
                ("new_password", "Fr3sh-Start"),
            ],
        )
        .await;
    wrong_flow.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 901_007);

    let challenged = h
        .post(
            "/oauth2/v2.0/challenge",
            &[("continuation_token", &started.token())],
        )
        .await;
    let spent = h
        .post(
            "/oauth2/v2.0/challenge",
            &[("continuation_token", &started.token())],
        )
        .await;
    spent.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 55_200);
    let garbage = h
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", "garbage"),
                ("grant_type", "oob"),
                ("oob", "1"),
            ],
        )
        .await;
    garbage.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 55_200);

    let password = |value: &'static str| {
        let token = challenged.token();
        let h = &h;
        async move {
            h.post(
                "/oauth2/v2.0/token",
                &[
                    ("continuation_token", &token),
                    ("grant_type", "password"),
                    ("password", value),
                    ("scope", "openid"),
                ],
            )
            .await
        }
    };
    let wrong = password("Wr0ng-pass").await;
    wrong.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 50_126);
    assert!(wrong.body.get("continuation_token").is_none());
    // A wrong password leaves the token usable for the retry.
    let right = password(DEMO_PASSWORD).await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
    let replay = password(DEMO_PASSWORD).await;
    replay.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 55_200);
}

#[tokio::test]
async fn expired_continuation_tokens_answer_expired_token() {
    let mut config = EntraConfig::demo();
    config.continuation_token_ttl = Duration::ZERO;
    let h = start(config).await;
    let started = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    let expired = h
        .post(
            "/oauth2/v2.0/challenge",
            &[("continuation_token", &started.token())],
        )
        .await;
    expired.assert_error(StatusCode::BAD_REQUEST, "expired_token", 552_003);
    assert!(h.outbox().await.is_empty(), "an expired flow sends nothing");
}

#[tokio::test(start_paused = true)]
async fn tokens_live_exactly_their_ttl_in_paused_time() {
    let emulator = EntraEmulator::new(EntraConfig::demo());
    let call = |path: &'static str, form: Vec<(&'static str, String)>| {
        let emulator = emulator.clone();
        async move {
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.append_pair("client_id", DEMO_CLIENT_ID);
            for (k, v) in &form {
                body.append_pair(k, v);
            }
            let request = http::Request::post(format!("/{DOMAIN}{path}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(body.finish())))
                .unwrap();
            let response = emulator.handle(request).await;
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let start_flow = || {
        call(
            "/oauth2/v2.0/initiate",
            vec![
                ("username", "otp@contoso.com".into()),
                ("challenge_type", "oob redirect".into()),
            ],
        )
    };
    let (_, fresh) = start_flow().await;
    tokio::time::advance(Duration::from_secs(599)).await;
    let (status, body) = call(
        "/oauth2/v2.0/challenge",
        vec![(
            "continuation_token",
            fresh["continuation_token"].as_str().unwrap().into(),
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (_, stale) = start_flow().await;
    tokio::time::advance(Duration::from_secs(600)).await;
    let (status, body) = call(
        "/oauth2/v2.0/challenge",
        vec![(
            "continuation_token",
            stale["continuation_token"].as_str().unwrap().into(),
        )],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "expired_token");
}

#[tokio::test]
async fn missing_capabilities_redirect_instead_of_mfa() {
    let h = start(EntraConfig::demo()).await;
    let sms = h
        .password_sign_in("sms@contoso.com", DEMO_PASSWORD, "")
        .await;
    assert_eq!(sms.status, StatusCode::OK);
    assert_eq!(
        sms.body,
        serde_json::json!({
            "challenge_type": "redirect",
            "redirect_reason": "Client is missing mfa_required capability",
        })
    );
    let jit = h
        .password_sign_in("newphone@contoso.com", DEMO_PASSWORD, "mfa_required")
        .await;
    assert_eq!(
        jit.body["redirect_reason"],
        "Client is missing registration_required capability"
    );
    // A client that cannot do the user's first factor is sent to the browser too.
    let otp_user = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    assert_eq!(
        otp_user.body,
        serde_json::json!({
            "challenge_type": "redirect",
            "redirect_reason": "The client does not support the challenge type the user signs in with",
        })
    );
}

#[tokio::test]
async fn refresh_tokens_it_issued_buy_new_tokens() {
    let h = start(EntraConfig::demo()).await;
    let tokens = h
        .password_sign_in("password@contoso.com", DEMO_PASSWORD, "")
        .await;
    let refresh_token = tokens.body["refresh_token"].as_str().unwrap();
    let refreshed = h
        .post(
            "/oauth2/v2.0/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("scope", "openid offline_access"),
                ("client_info", "1"),
            ],
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_ne!(refreshed.body["access_token"], tokens.body["access_token"]);
    assert_eq!(
        claims(&refreshed.body["id_token"])["oid"],
        claims(&tokens.body["id_token"])["oid"]
    );
    assert!(refreshed.body["refresh_token"].is_string());

    let forged = h
        .post(
            "/oauth2/v2.0/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "1.forged"),
                ("scope", "openid"),
            ],
        )
        .await;
    forged.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 9_002_313);
    let response = h
        .client
        .post(format!("{}/{DOMAIN}/oauth2/v2.0/token", h.base))
        .form(&[
            ("client_id", "00000000-0000-4000-8000-000000000777"),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    answer(response)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 9_002_313);
}

#[tokio::test]
async fn wrong_email_code_is_invalid_oob_value_and_retry_works() {
    let h = start(EntraConfig::demo()).await;
    let started = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    let sent = h
        .post(
            "/oauth2/v2.0/challenge",
            &[("continuation_token", &started.token())],
        )
        .await;
    let code = only_entry(&h.outbox().await).code.clone();
    let wrong = h.redeem("oob", &sent.token(), "00000000x").await;
    wrong.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", 50_181);
    assert_eq!(wrong.body["suberror"], "invalid_oob_value");
    let right = h.redeem("oob", &sent.token(), &code).await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.body);
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let h = start_with(
        EntraConfig::demo(),
        crate::fixtures::http().http2_prior_knowledge(),
    )
    .await;
    let response = h
        .client
        .post(format!("{}/{DOMAIN}/oauth2/v2.0/initiate", h.base))
        .form(&[
            ("client_id", DEMO_CLIENT_ID),
            ("username", "otp@contoso.com"),
            ("challenge_type", "oob redirect"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn serve_returns_once_shutdown_resolves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        EntraEmulator::new(EntraConfig::demo()),
        async move {
            let _ = stopped.await;
        },
    ));
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))));
}

#[tokio::test]
async fn users_file_in_toml_or_json_defines_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("users.toml");
    std::fs::write(
        &toml_path,
        r#"
tenant_name = "fabrikam"
tenant_id = "11111111-2222-4333-8444-555555555555"
client_ids = ["00000000-0000-4000-8000-000000000001"]
continuation_token_ttl = "2m"
code_length = 6

[[users]]
username = "pat@fabrikam.com"
password = "Passw0rd!"
mfa_methods = [{ channel = "sms", target = "+1 206 555 0100" }]
"#,
    )
    .unwrap();
    let config = EntraConfig::from_users_file(&toml_path).unwrap();
    assert_eq!(config.code_length, 6);
    assert_eq!(config.continuation_token_ttl, Duration::from_secs(120));
    let h = start(config).await;
    let started = h
        .post_at(
            "/fabrikam.onmicrosoft.com/oauth2/v2.0/initiate",
            &[
                ("username", "pat@fabrikam.com"),
                ("challenge_type", "password redirect"),
                ("capabilities", MFA_CAPS),
            ],
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);

    let json_path = dir.path().join("users.json");
    std::fs::write(
        &json_path,
        r#"{"users":[{"username":"jo@contoso.com","mfa_required":true}],"code_length":4}"#,
    )
    .unwrap();
    let config = EntraConfig::from_users_file(&json_path).unwrap();
    assert_eq!(config.tenant_name, "contoso");
    assert!(config.users[0].password.is_none());

    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "code_length = 99\n[[users]]\nusername = \"nope\"\n",
    )
    .unwrap();
    let message = EntraConfig::from_users_file(&broken)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("code_length") && message.contains("nope"),
        "{message}"
    );
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "tenant_nmae = \"x\"\n").unwrap();
    assert!(EntraConfig::from_users_file(&typo).is_err());
}

/// What the SDKs need to report an invalid username: HTTP 400, `invalid_request` (iOS),
/// 90100 first in `error_codes` (iOS, Android) and the exact text, case-sensitive (iOS,
/// msal-browser).
fn assert_invalid_username(answer: &Answer) {
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 90_100);
    let description = answer.body["error_description"].as_str().unwrap();
    assert!(
        description.contains("username parameter is empty or not valid"),
        "{description}"
    );
}

#[tokio::test]
async fn empty_or_invalid_usernames_are_aadsts90100_on_every_start() {
    let h = start(EntraConfig::demo()).await;
    for path in [
        "/signup/v1.0/start",
        "/oauth2/v2.0/initiate",
        "/resetpassword/v1.0/start",
    ] {
        for username in ["", "   ", "nobody", "a b@contoso.com", "x@contoso"] {
            let answer = h
                .post(
                    path,
                    &[("username", username), ("challenge_type", "oob redirect")],
                )
                .await;
            assert_invalid_username(&answer);
            assert_eq!(
                answer.body["error_codes"],
                serde_json::json!([90_100]),
                "{path} {username:?}"
            );
        }
        // Absent is the generic missing parameter, as before.
        let absent = h.post(path, &[("challenge_type", "oob redirect")]).await;
        absent.assert_error(StatusCode::BAD_REQUEST, "invalid_request", 900_144);
    }
    // A well-formed name the tenant does not know stays what the reference says.
    for path in ["/oauth2/v2.0/initiate", "/resetpassword/v1.0/start"] {
        let unknown = h
            .post(
                path,
                &[
                    ("username", "ghost@contoso.com"),
                    ("challenge_type", "oob redirect"),
                ],
            )
            .await;
        unknown.assert_error(StatusCode::BAD_REQUEST, "user_not_found", 50_034);
    }
    let taken = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    taken.assert_error(StatusCode::BAD_REQUEST, "user_already_exists", 1_003_037);
}

#[tokio::test]
async fn every_redirect_carries_a_redirect_reason() {
    fn assert_redirect(answer: &Answer, reason: &str, what: &str) {
        assert_eq!(answer.status, StatusCode::OK, "{what}: {}", answer.body);
        assert_eq!(
            answer.body,
            serde_json::json!({ "challenge_type": "redirect", "redirect_reason": reason }),
            "{what}"
        );
    }
    const FIRST_FACTOR: &str =
        "The client does not support the challenge type the user signs in with";
    let h = start(EntraConfig::demo()).await;

    // Sign-in: initiate, challenge and token.
    let initiate = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "password@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    assert_redirect(&initiate, FIRST_FACTOR, "initiate");
    let started = h
        .post(
            "/oauth2/v2.0/initiate",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob password redirect"),
            ],
        )
        .await;
    let challenge = h
        .post(
            "/oauth2/v2.0/challenge",
            &[
                ("continuation_token", &started.token()),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    assert_redirect(&challenge, FIRST_FACTOR, "challenge");
    let token = h
        .password_sign_in("sms@contoso.com", DEMO_PASSWORD, "")
        .await;
    assert_redirect(&token, "Client is missing mfa_required capability", "token");

    // Sign-up: start, and challenge for the code and for the password.
    let sign_up_start = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "new1@contoso.com"),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    let needs_oob = "The client does not support the oob challenge type sign-up requires";
    assert_redirect(&sign_up_start, needs_oob, "signup/start");
    let started = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "new2@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    let sign_up_challenge = h
        .post(
            "/signup/v1.0/challenge",
            &[
                ("continuation_token", &started.token()),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    assert_redirect(&sign_up_challenge, needs_oob, "signup/challenge (oob)");
    h.clear_outbox_over_http().await;
    let started = h
        .post(
            "/signup/v1.0/start",
            &[
                ("username", "new3@contoso.com"),
                ("challenge_type", "oob password redirect"),
            ],
        )
        .await;
    let sent = h
        .post(
            "/signup/v1.0/challenge",
            &[("continuation_token", &started.token())],
        )
        .await;
    let code = only_entry(&h.outbox().await).code.clone();
    let verified = h
        .post(
            "/signup/v1.0/continue",
            &[
                ("continuation_token", &sent.token()),
                ("grant_type", "oob"),
                ("oob", &code),
            ],
        )
        .await;
    verified.assert_error(StatusCode::BAD_REQUEST, "credential_required", 55_103);
    let password_challenge = h
        .post(
            "/signup/v1.0/challenge",
            &[
                ("continuation_token", &verified.token()),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    assert_redirect(
        &password_challenge,
        "The client does not support the password challenge type sign-up requires",
        "signup/challenge (password)",
    );

    // Password reset: start (no password to reset; no oob) and challenge.
    let otp_user = h
        .post(
            "/resetpassword/v1.0/start",
            &[
                ("username", "otp@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    assert_redirect(
        &otp_user,
        "The user does not sign in with a password",
        "resetpassword/start (email-OTP user)",
    );
    let needs_oob = "The client does not support the oob challenge type password reset requires";
    let no_oob = h
        .post(
            "/resetpassword/v1.0/start",
            &[
                ("username", "password@contoso.com"),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    assert_redirect(&no_oob, needs_oob, "resetpassword/start (no oob)");
    let started = h
        .post(
            "/resetpassword/v1.0/start",
            &[
                ("username", "password@contoso.com"),
                ("challenge_type", "oob redirect"),
            ],
        )
        .await;
    let reset_challenge = h
        .post(
            "/resetpassword/v1.0/challenge",
            &[
                ("continuation_token", &started.token()),
                ("challenge_type", "password redirect"),
            ],
        )
        .await;
    assert_redirect(&reset_challenge, needs_oob, "resetpassword/challenge");
}

#[tokio::test]
async fn register_challenge_names_the_target_in_both_fields() {
    use otpgate::entra::classify::EndpointKind;
    use otpgate::entra::learn::parse_response;

    let h = start(EntraConfig::demo()).await;
    let interrupted = h
        .password_sign_in("newphone@contoso.com", DEMO_PASSWORD, MFA_CAPS)
        .await;
    let listed = h
        .post(
            "/register/v1.0/introspect",
            &[("continuation_token", &interrupted.token())],
        )
        .await;
    let sms = h
        .post(
            "/register/v1.0/challenge",
            &[
                ("continuation_token", &listed.token()),
                ("challenge_type", "oob"),
                ("challenge_channel", "sms"),
                ("challenge_target", "+44 7400 123999"),
            ],
        )
        .await;
    assert_eq!(sms.status, StatusCode::OK, "{}", sms.body);
    assert_eq!(sms.body["challenge_target"], "+44********99");
    assert_eq!(sms.body["challenge_target_label"], "+44********99");
    // The gateway's response reader picks up the masked label.
    let learned = parse_response(
        EndpointKind::RegisterChallenge,
        200,
        sms.body.to_string().as_bytes(),
    );
    assert_eq!(
        learned.challenge_target_label.as_deref(),
        Some("+44********99")
    );
    assert!(learned.continuation_token.is_some());

    // Changing to an email address: echoed as given, masked in the label.
    let email = h
        .post(
            "/register/v1.0/challenge",
            &[
                ("continuation_token", &sms.token()),
                ("challenge_type", "oob"),
                ("challenge_channel", "email"),
                ("challenge_target", "Casey.Jensen@contoso.com"),
            ],
        )
        .await;
    assert_eq!(email.status, StatusCode::OK, "{}", email.body);
    assert_eq!(email.body["challenge_channel"], "email");
    assert_eq!(email.body["challenge_target"], "Casey.Jensen@contoso.com");
    assert_eq!(email.body["challenge_target_label"], "C***n@co**o.com");
    let outbox = h.outbox().await;
    assert_eq!(outbox.len(), 2, "{outbox:?}");
    assert_eq!(outbox[0].target, "+447400123999");
    assert_eq!(outbox[1].target, "Casey.Jensen@contoso.com");
}
