//! An Entra emulator with a gateway in front, for tests of what the gateway does to
//! native-auth traffic. The emulator's outbox proves what was (not) sent.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use otpgate::emulate::entra::{
    serve, EntraConfig, EntraEmulator, OutboxEntry, DEMO_CLIENT_ID, DEMO_PASSWORD,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::TestGateway;

pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const MFA_CAPS: &str = "mfa_required registration_required";

pub struct Env {
    pub gw: TestGateway,
    pub emulator: EntraEmulator,
    pub entra: SocketAddr,
    pub client: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn token(&self) -> String {
        self.body["continuation_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no continuation_token in {}", self.body))
            .to_owned()
    }
}

/// Emulator (demo users) + gateway configured by `toml` (its `[upstream]` is added).
pub async fn start(toml: &str) -> Env {
    start_with(EntraConfig::demo(), toml).await
}

pub async fn start_with(config: EntraConfig, toml: &str) -> Env {
    otpgate::tls::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entra = listener.local_addr().unwrap();
    let emulator = EntraEmulator::new(config);
    tokio::spawn(serve(listener, emulator.clone(), std::future::pending()));
    let gw = super::gateway(&format!("[upstream]\nurl = \"http://{entra}\"\n{toml}")).await;
    Env {
        gw,
        emulator,
        entra,
        client: super::client(),
    }
}

impl Env {
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.emulator.outbox()
    }

    /// POST a form to `/{TENANT}{path}` through the gateway, with `client_id` first.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_with(path, form, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut fields = vec![("client_id", DEMO_CLIENT_ID)];
        fields.extend_from_slice(form);
        let mut req = self
            .client
            .post(self.gw.url(&format!("/{TENANT}{path}")))
            .form(&fields);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }

    /// initiate → challenge → token with the password, advertising both MFA capabilities:
    /// the token answer (an `mfa_required` or `registration_required` interrupt).
    pub async fn password_steps(&self, username: &str) -> Answer {
        let a = self
            .post(
                "/oauth2/v2.0/initiate",
                &[
                    ("username", username),
                    ("challenge_type", "password redirect"),
                    ("capabilities", MFA_CAPS),
                ],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let a = self
            .post(
                "/oauth2/v2.0/challenge",
                &[
                    ("continuation_token", &a.token()),
                    ("challenge_type", "password redirect"),
                ],
            )
            .await;
        self.post(
            "/oauth2/v2.0/token",
            &[
                ("continuation_token", &a.token()),
                ("grant_type", "password"),
                ("password", DEMO_PASSWORD),
                ("scope", "openid"),
            ],
        )
        .await
    }

    /// The password steps, then introspect, for a password + MFA user.
    pub async fn introspect(&self, username: &str) -> Answer {
        let a = self.password_steps(username).await;
        assert_eq!(a.body["suberror"], "mfa_required", "{}", a.body);
        let a = self
            .post(
                "/oauth2/v2.0/introspect",
                &[("continuation_token", &a.token())],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a
    }

    /// The MFA challenge (sends the code) with method `id`.
    pub async fn mfa_challenge(&self, token: &str, id: &str) -> Answer {
        self.post(
            "/oauth2/v2.0/challenge",
            &[
                ("continuation_token", token),
                ("challenge_type", "oob redirect"),
                ("id", id),
            ],
        )
        .await
    }

    /// The password steps answering `registration_required` (for `newphone@`), then the
    /// register/introspect answer.
    pub async fn register_introspect(&self, username: &str) -> Answer {
        let a = self.password_steps(username).await;
        assert_eq!(a.body["suberror"], "registration_required", "{}", a.body);
        let a = self
            .post(
                "/register/v1.0/introspect",
                &[("continuation_token", &a.token())],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a
    }

    /// `/register/v1.0/challenge` of an SMS to `phone`.
    pub async fn register_sms(&self, token: &str, phone: &str) -> Answer {
        self.register_sms_with(token, phone, &[]).await
    }

    pub async fn register_sms_with(
        &self,
        token: &str,
        phone: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.post_with(
            "/register/v1.0/challenge",
            &[
                ("continuation_token", token),
                ("challenge_type", "oob"),
                ("challenge_channel", "sms"),
                ("challenge_target", phone),
            ],
            headers,
        )
        .await
    }

    /// Metrics text from the admin port.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.gw.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Send `request` bytes as-is and return the whole answer (the gateway closes or answers
/// within a few seconds).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // One answer is enough: stop once a complete JSON body has arrived.
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(usize::MAX);
                    if body.len() >= len {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
