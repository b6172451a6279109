//! Flow learning from upstream responses: which continuation tokens belong to one sign-in
//! (so resends and later steps share a flow id), and which channel an MFA method id sends to.
//!
//! The MFA challenge `/oauth2/v2.0/challenge` carries only an opaque method `id`; its channel
//! is known only from the `/oauth2/v2.0/introspect` response that listed it (reference §6.3).
//! Each response returns a new continuation token, so the flow is followed forward by mapping
//! every returned token to the flow of the request that produced it.
//!
//! Invariant: raw continuation tokens are never stored or logged. Keys hold keyed hashes
//! ([`KeyHasher`]) of tokens and method ids; [`Learned`]'s `Debug` redacts the token. Learning never fails a
//! request: store errors are logged and the caller sees "unknown".

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::classify::EndpointKind;
use crate::store::{KeyHasher, Store};

/// Largest response body we parse; the caller caps what it buffers, this refuses the rest.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Most methods kept from one introspect response; Entra lists a user's few methods.
pub(crate) const MAX_METHODS: usize = 16;

/// Longest label, error or suberror kept, in characters: they reach logs and the store.
pub(crate) const MAX_TEXT_CHARS: usize = 128;

/// The channel a one-time passcode goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Email => "email",
        }
    }

    /// Entra's spelling (`sms`, `email`), tolerating case and surrounding spaces.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("sms") {
            Some(Self::Sms)
        } else if text.eq_ignore_ascii_case("email") {
            Some(Self::Email)
        } else {
            None
        }
    }
}

/// One entry of an introspect response's `methods`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedMethod {
    /// The method id exactly as Entra sent it (clients echo it byte for byte).
    pub id: String,
    /// `None` when the channel is missing or not one we know.
    pub channel: Option<Channel>,
    /// The masked `login_hint`, e.g. `+1********6`.
    pub label: Option<String>,
}

/// What one upstream response teaches. Every field is optional: a response we cannot read
/// teaches nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// The response's new continuation token, exactly as sent. Secret: never log it.
    pub continuation_token: Option<String>,
    /// Methods of an introspect response (sign-in or register); empty otherwise.
    pub methods: Vec<LearnedMethod>,
    /// What the answer asks for next (`oob`, `password`, `redirect`, `preverified` …).
    pub challenge_type: Option<String>,
    pub challenge_channel: Option<Channel>,
    pub challenge_target_label: Option<String>,
    pub error: Option<String>,
    pub suberror: Option<String>,
}

impl Learned {
    /// Whether Entra's answer to a code-sending request says it sent no code: any answer
    /// but a 2xx, or a 2xx that asks for a password instead, falls back to the browser, or
    /// found the target already verified. An answer otpgate could not read counts as sent
    /// when it is a 2xx: only Entra's word that nothing went out gives a slot back.
    pub(crate) fn no_code_sent(status: u16, learned: Option<&Learned>) -> bool {
        if !(200..300).contains(&status) {
            return true;
        }
        learned
            .and_then(|l| l.challenge_type.as_deref())
            .is_some_and(|t| {
                ["password", "redirect", "preverified"]
                    .iter()
                    .any(|no_code| t.eq_ignore_ascii_case(no_code))
            })
    }
}

impl fmt::Debug for Learned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Learned")
            .field(
                "continuation_token",
                &self.continuation_token.as_ref().map(|_| "<redacted>"),
            )
            .field("methods", &self.methods)
            .field("challenge_type", &self.challenge_type)
            .field("challenge_channel", &self.challenge_channel)
            .field("challenge_target_label", &self.challenge_target_label)
            .field("error", &self.error)
            .field("suberror", &self.suberror)
            .finish()
    }
}

/// Read what a native-auth response of `kind` teaches. Tolerant: unknown and missing fields,
/// keys with stray spaces or another case (the reference's examples have
/// `"challenge_target_label "`), V2's camelCase `continuationToken`. A body over
/// [`MAX_RESPONSE_BYTES`], not a JSON object, or with a status other than 2xx/4xx (the only
/// ones carrying flow state) teaches nothing.
pub fn parse_response(kind: EndpointKind, status: u16, body: &[u8]) -> Learned {
    if body.len() > MAX_RESPONSE_BYTES || !matches!(status, 200..=299 | 400..=499) {
        return Learned::default();
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return Learned::default();
    };
    let methods = match kind {
        EndpointKind::SignInIntrospect | EndpointKind::RegisterIntrospect => {
            field(&object, "methods")
                .and_then(Value::as_array)
                .map(|methods| {
                    methods
                        .iter()
                        .filter_map(Value::as_object)
                        .filter_map(method)
                        .take(MAX_METHODS)
                        .collect()
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    Learned {
        continuation_token: field(&object, "continuation_token")
            .or_else(|| field(&object, "continuationToken"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        methods,
        challenge_type: text(&object, "challenge_type"),
        challenge_channel: text(&object, "challenge_channel").and_then(|c| Channel::parse(&c)),
        challenge_target_label: text(&object, "challenge_target_label"),
        error: text(&object, "error"),
        suberror: text(&object, "suberror"),
    }
}

fn method(object: &Map<String, Value>) -> Option<LearnedMethod> {
    let id = field(object, "id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())?;
    Some(LearnedMethod {
        id: id.to_owned(),
        channel: text(object, "challenge_channel").and_then(|c| Channel::parse(&c)),
        label: text(object, "login_hint"),
    })
}

/// The value of `name`, or of a key equal to it after trimming, in any ASCII case.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// A trimmed, non-empty, length-capped string field. Trimmed again after the cap, which can
/// cut just after a space; the first character is not one, so the result stays non-empty.
fn text(object: &Map<String, Value>, name: &str) -> Option<String> {
    let value = field(object, name)?.as_str()?.trim();
    (!value.is_empty()).then(|| {
        let end = value
            .char_indices()
            .nth(MAX_TEXT_CHARS)
            .map_or(value.len(), |(at, _)| at);
        value[..end].trim_end().to_owned()
    })
}

/// A flow: one sign-in, sign-up, reset or registration, followed across its continuation
/// tokens. A short random hex string, safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowId(String);

impl FlowId {
    const HEX_LEN: usize = 16;

    fn random() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }

    /// A flow id read back from the store, if it has the shape we write.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == Self::HEX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
        .then(|| Self(String::from_utf8_lossy(bytes).into_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What otpgate knows of a flow, kept with every continuation token of it so that one
/// store lookup finds all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub id: FlowId,
    /// Keyed hash of the username the flow's `initiate` (or sign-up / reset `start`) named,
    /// trimmed and lowercased: the account the flow's codes go to. `None` when otpgate did
    /// not see that request.
    pub user: Option<String>,
    /// Entra asked this flow for a second factor (`mfa_required`): a challenge without an
    /// `id` may now send to the user's default MFA method.
    pub mfa_required: bool,
    /// The flow's `initiate` named its challenge types and left out `oob`: the client
    /// cannot take an email code (Entra would redirect rather than send one).
    pub password_only: bool,
}

impl Flow {
    fn new(id: FlowId) -> Self {
        Self {
            id,
            user: None,
            mfa_required: false,
            password_only: false,
        }
    }

    /// `{id}`, then ` u={hash}`, ` m` and ` p` when known: short, and the plain
    /// 16-character id that earlier versions wrote still reads as a flow with nothing else
    /// known.
    pub(crate) fn encode(&self) -> String {
        let mut out = self.id.as_str().to_owned();
        if let Some(user) = &self.user {
            out.push_str(" u=");
            out.push_str(user);
        }
        if self.mfa_required {
            out.push_str(" m");
        }
        if self.password_only {
            out.push_str(" p");
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let mut flow = Self::new(FlowId::parse(parts.next()?.as_bytes())?);
        for part in parts {
            match part {
                "m" => flow.mfa_required = true,
                "p" => flow.password_only = true,
                _ => {
                    let hash = part.strip_prefix("u=")?;
                    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return None;
                    }
                    flow.user = Some(hash.to_owned());
                }
            }
        }
        Some(flow)
    }
}

/// A username as Entra compares it: case-insensitively, without surrounding spaces.
fn canonical_username(username: &str) -> String {
    username.trim().to_lowercase()
}

/// A method id as Entra compares it: ids are GUIDs, equal in any ASCII case.
pub(crate) fn canonical_method_id(id: &str) -> String {
    id.trim().to_ascii_lowercase()
}

/// What an MFA method id sends to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MethodInfo {
    pub channel: Channel,
    /// The masked destination from `login_hint`, when Entra gave one.
    pub label: Option<String>,
}

/// Learned flows and method channels, in the shared [`Store`] so every replica sees them.
#[derive(Clone)]
pub struct FlowBook {
    store: Arc<dyn Store>,
    keys: KeyHasher,
    /// How long a continuation token and its flow's methods are remembered.
    ttl: Duration,
    /// How long the flow-independent method id → channel fallback is remembered. Method ids
    /// are stable per user, so this can outlive a flow.
    method_ttl: Duration,
}

impl FlowBook {
    /// Longer than Entra keeps a continuation token alive (reference §10: ≤ 10 minutes).
    pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
    pub(crate) const DEFAULT_METHOD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

    pub(crate) fn new(store: Arc<dyn Store>, keys: KeyHasher) -> Self {
        Self {
            store,
            keys,
            ttl: Self::DEFAULT_TTL,
            method_ttl: Self::DEFAULT_METHOD_TTL,
        }
    }

    pub(crate) fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn flow_key(&self, token: &str) -> String {
        format!("flow:{}", self.keys.hash(token))
    }

    fn flow_method_key(&self, flow: &FlowId, method_id: &str) -> String {
        let id = canonical_method_id(method_id);
        format!("flowmethod:{}:{}", flow.as_str(), self.keys.hash(&id))
    }

    fn method_key(&self, method_id: &str) -> String {
        format!("method:{}", self.keys.hash(&canonical_method_id(method_id)))
    }

    /// The flow the request's continuation token belongs to, or a new flow when the token is
    /// absent or unknown. An unknown token is bound to the new flow, so requests replaying
    /// the same token (resends that skip reading the response) still share one flow.
    pub(crate) async fn flow_for_request(&self, continuation_token: Option<&str>) -> Flow {
        let Some(token) = continuation_token.filter(|t| !t.is_empty()) else {
            return Flow::new(FlowId::random());
        };
        let key = self.flow_key(token);
        match self.store.get(&key).await {
            Ok(Some(bytes)) => {
                if let Some(flow) = Flow::decode(&bytes) {
                    return flow;
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "flow lookup failed; starting a new flow");
                return Flow::new(FlowId::random());
            }
        }
        let flow = Flow::new(FlowId::random());
        self.put(&key, flow.encode().as_bytes(), self.ttl).await;
        flow
    }

    /// Record the account a flow's request names (`username` of `initiate`, sign-up or
    /// reset `start`), keyed-hashed: it is what the flow's codes go to.
    pub(crate) fn set_user(&self, flow: &mut Flow, username: &str) {
        let username = canonical_username(username);
        if !username.is_empty() {
            flow.user = Some(self.keys.hash(&username));
        }
    }

    /// Remember what a response to a request of `flow` taught: its new continuation token
    /// continues `flow` (with an `mfa_required` interrupt noted); a sign-in introspect's
    /// methods tell what each method id sends to.
    ///
    /// Register-introspect methods are not recorded: their ids are the fixed words `email`
    /// and `sms`, never sent as an MFA challenge `id`, and their `login_hint` is an
    /// unmasked address.
    ///
    /// The writes go out side by side: one round trip to a remote store.
    pub(crate) async fn learn(&self, flow: &Flow, kind: EndpointKind, learned: &Learned) {
        // (key, value, ttl) of every write.
        let mut writes: Vec<(String, Vec<u8>, Duration)> = Vec::new();
        if let Some(token) = &learned.continuation_token {
            let mfa_required = learned
                .suberror
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("mfa_required"));
            let next = Flow {
                mfa_required: flow.mfa_required || mfa_required,
                ..flow.clone()
            };
            writes.push((self.flow_key(token), next.encode().into_bytes(), self.ttl));
        }
        if kind == EndpointKind::SignInIntrospect {
            for method in &learned.methods {
                let Some(channel) = method.channel else {
                    continue;
                };
                let info = MethodInfo {
                    channel,
                    label: method.label.clone(),
                };
                let Ok(value) = serde_json::to_vec(&info) else {
                    continue;
                };
                let flow_method = self.flow_method_key(&flow.id, &method.id);
                writes.push((flow_method, value.clone(), self.ttl));
                writes.push((self.method_key(&method.id), value, self.method_ttl));
            }
        }
        join_all(writes.iter().map(|(k, v, ttl)| self.put(k, v, *ttl))).await;
    }

    /// Remember the channel an MFA challenge (`/oauth2/v2.0/challenge` with `id`) was sent
    /// on, from its response: a resend of that id is then known even when the introspect that
    /// listed it was not seen (another replica's memory, or a client that skipped it).
    pub(crate) async fn learn_challenge(&self, flow: &FlowId, method_id: &str, learned: &Learned) {
        let Some(channel) = learned.challenge_channel else {
            return;
        };
        if method_id.is_empty() {
            return;
        }
        let info = MethodInfo {
            channel,
            label: learned.challenge_target_label.clone(),
        };
        if let Ok(value) = serde_json::to_vec(&info) {
            let (in_flow, anywhere) = (
                self.flow_method_key(flow, method_id),
                self.method_key(method_id),
            );
            futures_util::join!(
                self.put(&in_flow, &value, self.ttl),
                self.put(&anywhere, &value, self.method_ttl)
            );
        }
    }

    /// What `method_id` sends to, as learned in `flow`, else as learned in any flow; `None`
    /// when never learned (the caller applies its unknown-method policy).
    pub(crate) async fn method_channel(
        &self,
        flow: &FlowId,
        method_id: &str,
    ) -> Option<MethodInfo> {
        // Both asked in one round trip; the flow's own answer wins.
        let (in_flow, anywhere) = (
            self.flow_method_key(flow, method_id),
            self.method_key(method_id),
        );
        let (in_flow, anywhere) =
            futures_util::join!(self.get_method(&in_flow), self.get_method(&anywhere));
        in_flow.or(anywhere)
    }

    async fn get_method(&self, key: &str) -> Option<MethodInfo> {
        match self.store.get(key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "method lookup failed");
                None
            }
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) {
        if let Err(error) = self.store.put(key, value, ttl).await {
            tracing::warn!(%error, "learning skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Counter, MemoryStore, StoreError, Window};
    use async_trait::async_trait;
    use parking_lot::Mutex;
    use EndpointKind as K;

    const EMAIL_ID: &str = "0a0a0a0a-1111-bbbb-2222-3c3c3c3c3c3c";
    const SMS_ID: &str = "1b1b1b1b-2222-cccc-3333-4d4d4d4d4d4d";

    /// Reference §5.1, verbatim.
    const INTROSPECT: &str = r#"{"continuation_token":"T-introspect","methods":[
      {"id":"0a0a0a0a-1111-bbbb-2222-3c3c3c3c3c3c","challenge_type":"oob","challenge_channel":"email","login_hint":"c***r@co**o**o.com"},
      {"id":"1b1b1b1b-2222-cccc-3333-4d4d4d4d4d4d","challenge_type":"oob","challenge_channel":"sms","login_hint":"+1********6"}]}"#;

    fn introspect_with_token(token: &str) -> Vec<u8> {
        INTROSPECT.replace("T-introspect", token).into_bytes()
    }

    fn with_token(token: &str) -> Vec<u8> {
        format!(r#"{{"continuation_token":"{token}"}}"#).into_bytes()
    }

    #[test]
    fn introspect_response_lists_methods_with_channels() {
        let learned = parse_response(K::SignInIntrospect, 200, INTROSPECT.as_bytes());
        assert_eq!(learned.continuation_token.as_deref(), Some("T-introspect"));
        assert_eq!(
            learned.methods,
            [
                LearnedMethod {
                    id: EMAIL_ID.to_owned(),
                    channel: Some(Channel::Email),
                    label: Some("c***r@co**o**o.com".to_owned()),
                },
                LearnedMethod {
                    id: SMS_ID.to_owned(),
                    channel: Some(Channel::Sms),
                    label: Some("+1********6".to_owned()),
                },
            ]
        );
    }

    #[test]
    fn response_table() {
        // Reference §5.1 challenge response, with the doc's trailing-space typos.
        let challenge =
            br#"{"continuation_token":"T2","challenge_type":"oob","binding_method":"prompt ",
            "challenge_channel":"sms","challenge_target_label ":"+1********6","code_length":6}"#;
        let learned = parse_response(K::SignInChallenge, 200, challenge);
        assert_eq!(learned.continuation_token.as_deref(), Some("T2"));
        assert_eq!(learned.challenge_channel, Some(Channel::Sms));
        assert_eq!(
            learned.challenge_target_label.as_deref(),
            Some("+1********6")
        );
        assert!(learned.methods.is_empty());

        let mfa_required = br#"{"error":"invalid_grant","error_description":"AADSTS50076: x",
            "error_codes":[50076],"suberror":"mfa_required","continuation_token":"T3","extra":{"a":[1]}}"#;
        let learned = parse_response(K::Token, 400, mfa_required);
        assert_eq!(learned.error.as_deref(), Some("invalid_grant"));
        assert_eq!(learned.suberror.as_deref(), Some("mfa_required"));
        assert_eq!(learned.continuation_token.as_deref(), Some("T3"));

        let v2 = br#"{"continuationToken":"V2T","state":"continue"}"#;
        assert_eq!(
            parse_response(K::V2Api, 200, v2)
                .continuation_token
                .as_deref(),
            Some("V2T")
        );
        let odd_keys = br#"{" Challenge_Channel ":" EMAIL ","ERROR":"access_denied"}"#;
        let learned = parse_response(K::RegisterChallenge, 400, odd_keys);
        assert_eq!(learned.challenge_channel, Some(Channel::Email));
        assert_eq!(learned.error.as_deref(), Some("access_denied"));

        // Methods with missing ids, odd channels, wrong types.
        let messy = br#"{"methods":[{"challenge_channel":"sms"},{"id":"a","challenge_channel":"voice"},
            {"id":"b","challenge_channel":7,"login_hint":null},"x",{"id":"c","challenge_channel":"SMS "}]}"#;
        let methods = parse_response(K::SignInIntrospect, 200, messy).methods;
        assert_eq!(methods.len(), 3);
        assert_eq!((methods[0].id.as_str(), methods[0].channel), ("a", None));
        assert_eq!(
            (methods[1].id.as_str(), methods[1].label.as_deref()),
            ("b", None)
        );
        assert_eq!(methods[2].channel, Some(Channel::Sms));

        // Methods only count on introspect endpoints.
        assert!(
            parse_response(K::SignInChallenge, 200, INTROSPECT.as_bytes())
                .methods
                .is_empty()
        );
        assert_eq!(
            parse_response(K::RegisterIntrospect, 200, INTROSPECT.as_bytes())
                .methods
                .len(),
            2
        );
    }

    #[test]
    fn unreadable_responses_teach_nothing() {
        let too_big = {
            let mut body = with_token("T");
            body.pop();
            body.extend(format!(r#","pad":"{}"}}"#, "x".repeat(MAX_RESPONSE_BYTES)).bytes());
            body
        };
        assert!(serde_json::from_slice::<Value>(&too_big).is_ok());
        let cases: &[(u16, &[u8])] = &[
            (200, b""),
            (200, b"<html>502 Bad Gateway</html>"),
            (200, b"[1,2]"),
            (200, b"\"continuation_token\""),
            (200, b"{\"continuation_token\":"),
            (200, b"{\"continuation_token\":42,\"error\":[\"x\"]}"),
            (200, b"{\"continuation_token\":\"\"}"),
            (500, br#"{"continuation_token":"T","error":"server_error"}"#),
            (302, br#"{"continuation_token":"T"}"#),
            (200, &too_big),
        ];
        for (status, body) in cases {
            assert_eq!(
                parse_response(K::SignInChallenge, *status, body),
                Learned::default(),
                "{status} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }

    #[test]
    fn long_labels_are_capped_and_debug_redacts_the_token() {
        let body = format!(
            r#"{{"continuation_token":"secret-token","challenge_target_label":"{}"}}"#,
            "*".repeat(1000)
        );
        let learned = parse_response(K::SignInChallenge, 200, body.as_bytes());
        assert_eq!(
            learned.challenge_target_label.map(|l| l.chars().count()),
            Some(MAX_TEXT_CHARS)
        );
        let learned = parse_response(K::SignInChallenge, 200, body.as_bytes());
        let shown = format!("{learned:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    /// Found by fuzzing: the cap fell just after a tab, and the kept label ended in it.
    #[test]
    fn a_capped_text_is_trimmed_again() {
        let kept = format!("+1{}", "*".repeat(MAX_TEXT_CHARS - 3));
        for cut in ["\t", " ", "\u{a0}"] {
            let label = format!("{kept}{cut}{}", "x".repeat(10));
            let body = serde_json::json!({ "challenge_target_label": label, "error": label });
            let learned = parse_response(K::SignInChallenge, 400, body.to_string().as_bytes());
            assert_eq!(
                learned.challenge_target_label.as_deref(),
                Some(kept.as_str())
            );
            assert_eq!(learned.error.as_deref(), Some(kept.as_str()));
        }
    }

    fn book() -> FlowBook {
        FlowBook::new(Arc::new(MemoryStore::default()), KeyHasher::random())
    }

    /// One request/response step of a flow: the flow the request maps to, then learning.
    async fn step(
        book: &FlowBook,
        kind: K,
        token: Option<&str>,
        status: u16,
        body: &[u8],
    ) -> FlowId {
        let flow = book.flow_for_request(token).await;
        book.learn(&flow, kind, &parse_response(kind, status, body))
            .await;
        flow.id
    }

    #[tokio::test]
    async fn introspected_method_ids_map_to_their_channels() {
        let book = book();
        let flow = step(
            &book,
            K::SignInIntrospect,
            Some("T3"),
            200,
            INTROSPECT.as_bytes(),
        )
        .await;
        let email = book.method_channel(&flow, EMAIL_ID).await.expect("learned");
        assert_eq!(email.channel, Channel::Email);
        assert_eq!(email.label.as_deref(), Some("c***r@co**o**o.com"));
        let sms = book.method_channel(&flow, SMS_ID).await.expect("learned");
        assert_eq!(sms.channel, Channel::Sms);
        assert_eq!(sms.label.as_deref(), Some("+1********6"));
        assert_eq!(book.method_channel(&flow, "2c2c2c2c-unknown").await, None);
        // The id is stable per user: another flow that skipped introspect still finds it.
        let other = book.flow_for_request(None).await.id;
        assert_eq!(
            book.method_channel(&other, SMS_ID).await.map(|m| m.channel),
            Some(Channel::Sms)
        );
    }

    #[tokio::test]
    async fn a_flow_learns_its_own_channel_first() {
        let book = book();
        let a = step(
            &book,
            K::SignInIntrospect,
            Some("A"),
            200,
            INTROSPECT.as_bytes(),
        )
        .await;
        // A later introspect elsewhere claims the id is email (the global entry now says so).
        let flipped = INTROSPECT
            .replace("\"sms\"", "\"tmp\"")
            .replace("\"email\"", "\"sms\"")
            .replace("\"tmp\"", "\"email\"");
        let b = step(
            &book,
            K::SignInIntrospect,
            Some("B"),
            200,
            flipped.as_bytes(),
        )
        .await;
        assert_ne!(a, b);
        assert_eq!(
            book.method_channel(&a, SMS_ID).await.map(|m| m.channel),
            Some(Channel::Sms)
        );
        assert_eq!(
            book.method_channel(&b, SMS_ID).await.map(|m| m.channel),
            Some(Channel::Email)
        );
    }

    #[tokio::test]
    async fn a_challenge_response_teaches_the_channel_of_its_id() {
        let book = book();
        let state = book.flow_for_request(Some("T4")).await;
        let flow = state.id.clone();
        assert_eq!(book.method_channel(&flow, SMS_ID).await, None);
        let body = br#"{"continuation_token":"T5","challenge_type":"oob","challenge_channel":"sms",
            "challenge_target_label":"+1********6"}"#;
        let learned = parse_response(K::SignInChallenge, 200, body);
        book.learn(&state, K::SignInChallenge, &learned).await;
        book.learn_challenge(&flow, SMS_ID, &learned).await;
        let info = book.method_channel(&flow, SMS_ID).await.expect("learned");
        assert_eq!(info.channel, Channel::Sms);
        assert_eq!(info.label.as_deref(), Some("+1********6"));
        // A password challenge names no channel and teaches nothing about the id.
        let password = parse_response(K::SignInChallenge, 200, br#"{"challenge_type":"password"}"#);
        book.learn_challenge(&flow, EMAIL_ID, &password).await;
        assert_eq!(book.method_channel(&flow, EMAIL_ID).await, None);
    }

    #[tokio::test]
    async fn register_introspect_methods_are_not_recorded() {
        let book = book();
        let body = br#"{"continuation_token":"R2","methods":[{"id":"email","challenge_type":"oob",
            "challenge_channel":"email","login_hint":"caseyjensen@contoso.com"},
            {"id":"sms","challenge_type":"oob","challenge_channel":"sms"}]}"#;
        let flow = step(&book, K::RegisterIntrospect, Some("R1"), 200, body).await;
        assert_eq!(book.method_channel(&flow, "email").await, None);
        assert_eq!(book.method_channel(&flow, "sms").await, None);
        assert_eq!(book.flow_for_request(Some("R2")).await.id, flow);
    }

    #[tokio::test]
    async fn one_sign_in_keeps_one_flow_across_its_token_chain() {
        let book = book();
        let initiate = step(&book, K::SignInInitiate, None, 200, &with_token("T1")).await;
        let password = br#"{"continuation_token":"T2","challenge_type":"password"}"#;
        let challenge = step(&book, K::SignInChallenge, Some("T1"), 200, password).await;
        let mfa_required =
            br#"{"error":"invalid_grant","suberror":"mfa_required","continuation_token":"T3"}"#;
        let token = step(&book, K::Token, Some("T2"), 400, mfa_required).await;
        let introspect = step(
            &book,
            K::SignInIntrospect,
            Some("T3"),
            200,
            &introspect_with_token("T4"),
        )
        .await;
        let sms =
            br#"{"continuation_token":"T5","challenge_type":"oob","challenge_channel":"sms"}"#;
        let mfa = step(&book, K::SignInChallenge, Some("T4"), 200, sms).await;
        let resend_body =
            br#"{"continuation_token":"T6","challenge_type":"oob","challenge_channel":"sms"}"#;
        let resend = step(&book, K::SignInChallenge, Some("T5"), 200, resend_body).await;
        let redeem = book.flow_for_request(Some("T6")).await.id;
        for flow in [&challenge, &token, &introspect, &mfa, &resend, &redeem] {
            assert_eq!(flow, &initiate);
        }
        assert_eq!(
            book.method_channel(&resend, SMS_ID)
                .await
                .map(|m| m.channel),
            Some(Channel::Sms)
        );
        // A second sign-in is another flow.
        let other = step(&book, K::SignInInitiate, None, 200, &with_token("U1")).await;
        assert_ne!(other, initiate);
        assert_eq!(book.flow_for_request(Some("U1")).await.id, other);
    }

    #[tokio::test]
    async fn a_flow_carries_its_account_and_its_mfa_interrupt_along_its_tokens() {
        let book = book();
        let mut start = book.flow_for_request(None).await;
        book.set_user(&mut start, "  Sms@Contoso.com ");
        let user = start.user.clone().expect("set");
        assert_eq!(user.len(), 64);
        assert!(!user.contains("contoso"));
        book.learn(
            &start,
            K::SignInInitiate,
            &parse_response(K::SignInInitiate, 200, &with_token("T1")),
        )
        .await;
        let challenge = book.flow_for_request(Some("T1")).await;
        assert_eq!(challenge.id, start.id);
        assert_eq!(challenge.user.as_deref(), Some(user.as_str()));
        assert!(!challenge.mfa_required);
        let mfa_required =
            br#"{"error":"invalid_grant","suberror":"mfa_required","continuation_token":"T2"}"#;
        book.learn(
            &challenge,
            K::Token,
            &parse_response(K::Token, 400, mfa_required),
        )
        .await;
        let after = book.flow_for_request(Some("T2")).await;
        assert!(after.mfa_required);
        assert_eq!(after.user.as_deref(), Some(user.as_str()));
        // Later answers keep the interrupt noted.
        book.learn(
            &after,
            K::SignInIntrospect,
            &parse_response(K::SignInIntrospect, 200, &introspect_with_token("T3")),
        )
        .await;
        assert!(book.flow_for_request(Some("T3")).await.mfa_required);
        // The same account in another case is the same hash; a blank one sets nothing.
        let mut other = book.flow_for_request(None).await;
        book.set_user(&mut other, "SMS@CONTOSO.COM");
        assert_eq!(other.user, Some(user));
        let mut blank = book.flow_for_request(None).await;
        book.set_user(&mut blank, "  ");
        assert_eq!(blank.user, None);
    }

    #[test]
    fn stored_flows_read_back_and_old_or_odd_values_are_judged() {
        let id = FlowId("0123456789abcdef".into());
        let full = Flow {
            id: id.clone(),
            user: Some("ab".repeat(32)),
            mfa_required: true,
            password_only: true,
        };
        assert_eq!(Flow::decode(full.encode().as_bytes()), Some(full));
        // What earlier versions stored: the id alone.
        assert_eq!(Flow::decode(b"0123456789abcdef"), Some(Flow::new(id)));
        for bad in [
            &b""[..],
            b"0123456789abcde",
            b"0123456789abcdef x",
            b"0123456789abcdef u=",
            b"0123456789abcdef u=zz",
            b"0123456789ABCDEF",
        ] {
            assert_eq!(
                Flow::decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn only_entras_word_that_nothing_went_out_gives_a_slot_back() {
        let answer = |status, body: &[u8]| {
            let learned = parse_response(K::RegisterChallenge, status, body);
            Learned::no_code_sent(status, Some(&learned))
        };
        assert!(!answer(
            200,
            br#"{"challenge_type":"oob","continuation_token":"T"}"#
        ));
        assert!(!answer(200, b"<html>not json</html>"));
        assert!(!answer(200, br#"{"challenge_type":"something new"}"#));
        assert!(!Learned::no_code_sent(200, None));
        assert!(answer(
            200,
            br#"{"challenge_type":"password","continuation_token":"T"}"#
        ));
        assert!(answer(200, br#"{"challenge_type":"Redirect"}"#));
        assert!(answer(200, br#"{"challenge_type":"preverified"}"#));
        assert!(answer(
            400,
            br#"{"error":"invalid_grant","error_codes":[55200]}"#
        ));
        assert!(answer(429, b""));
        assert!(answer(500, br#"{"challenge_type":"oob"}"#));
    }

    #[tokio::test]
    async fn an_unknown_token_replayed_stays_in_one_flow() {
        let book = book();
        let first = book.flow_for_request(Some("never-seen")).await.id;
        let again = book.flow_for_request(Some("never-seen")).await.id;
        assert_eq!(first, again);
        assert_ne!(
            book.flow_for_request(None).await.id,
            book.flow_for_request(None).await.id
        );
        assert_ne!(book.flow_for_request(Some("")).await.id, first);
    }

    #[tokio::test]
    async fn flow_ids_are_short_hex() {
        let flow = book().flow_for_request(None).await.id;
        assert_eq!(flow.as_str().len(), 16);
        assert!(flow.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(flow.to_string(), flow.as_str());
    }

    #[tokio::test(start_paused = true)]
    async fn flows_and_methods_expire() {
        let book = book();
        let flow = step(
            &book,
            K::SignInIntrospect,
            Some("T3"),
            200,
            &introspect_with_token("T4"),
        )
        .await;
        tokio::time::advance(FlowBook::DEFAULT_TTL - Duration::from_secs(1)).await;
        assert_eq!(book.flow_for_request(Some("T4")).await.id, flow);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_ne!(book.flow_for_request(Some("T4")).await.id, flow);
        // The flow's own entry is gone; the id-wide fallback lives on until its own TTL.
        let fresh = book.flow_for_request(None).await.id;
        assert_eq!(
            book.method_channel(&fresh, SMS_ID).await.map(|m| m.channel),
            Some(Channel::Sms)
        );
        tokio::time::advance(FlowBook::DEFAULT_METHOD_TTL).await;
        assert_eq!(book.method_channel(&flow, SMS_ID).await, None);
    }

    /// A store that records every key and value written, for checking what reaches it.
    #[derive(Default)]
    struct Recording {
        inner: MemoryStore,
        writes: Mutex<Vec<(String, Vec<u8>)>>,
        reads: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Store for Recording {
        async fn reserve(
            &self,
            key: &str,
            id: &str,
            window: Duration,
            limit: u64,
        ) -> Result<Window, StoreError> {
            self.inner.reserve(key, id, window, limit).await
        }
        async fn release(&self, key: &str, id: &str) -> Result<(), StoreError> {
            self.inner.release(key, id).await
        }
        async fn count(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
            self.inner.count(key, window).await
        }
        async fn tally(
            &self,
            add: &[Counter<'_>],
            read: &[Counter<'_>],
        ) -> Result<Vec<u64>, StoreError> {
            self.inner.tally(add, read).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.reads.lock().push(key.to_owned());
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
            self.writes.lock().push((key.to_owned(), value.to_vec()));
            self.inner.put(key, value, ttl).await
        }
        async fn take_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
            self.inner.take_once(key, ttl).await
        }
    }

    #[tokio::test]
    async fn raw_tokens_and_method_ids_never_reach_the_store() {
        let store = Arc::new(Recording::default());
        let hasher = KeyHasher::keyed(b"learn test key");
        let book = FlowBook::new(store.clone(), hasher.clone());
        let token_in = "request-token-Zq9";
        let token_out = "response-token-Xw7";
        let flow = step(
            &book,
            K::SignInIntrospect,
            Some(token_in),
            200,
            &introspect_with_token(token_out),
        )
        .await;
        book.method_channel(&flow, SMS_ID).await;
        book.method_channel(&flow, "unknown-method-id").await;
        let writes = store.writes.lock().clone();
        let reads = store.reads.lock().clone();
        assert!(writes.len() >= 5, "{writes:?}");
        let keys = writes
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(reads.iter().map(String::as_str));
        for key in keys {
            for secret in [token_in, token_out, SMS_ID, EMAIL_ID, "unknown-method-id"] {
                assert!(!key.contains(secret), "{key}");
            }
        }
        for (_, value) in &writes {
            let value = String::from_utf8_lossy(value);
            for secret in [token_in, token_out, SMS_ID, EMAIL_ID] {
                assert!(!value.contains(secret), "{value}");
            }
        }
        assert!(writes
            .iter()
            .any(|(k, _)| *k == format!("flow:{}", hasher.hash(token_out))));
        // Nor their plain SHA-256, which anyone could match against a guess.
        let sha = |value: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(value));
        for (key, _) in &writes {
            for secret in [token_in, token_out, SMS_ID, EMAIL_ID] {
                assert!(!key.contains(&sha(secret)), "{key}");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_store_degrades_to_unknown() {
        let book = FlowBook::new(Arc::new(crate::store::DownStore), KeyHasher::random());
        let flow = step(
            &book,
            K::SignInIntrospect,
            Some("T3"),
            200,
            INTROSPECT.as_bytes(),
        )
        .await;
        assert_eq!(flow.as_str().len(), 16);
        assert_eq!(book.method_channel(&flow, SMS_ID).await, None);
    }

    #[tokio::test]
    async fn a_corrupt_stored_value_is_ignored() {
        let store = Arc::new(MemoryStore::default());
        let book = FlowBook::new(store.clone(), KeyHasher::random());
        store
            .put(
                &book.flow_key("T"),
                b"not a flow id!!!",
                Duration::from_secs(60),
            )
            .await
            .expect("put");
        store
            .put(
                &book.method_key(SMS_ID),
                b"{\"channel\":\"pigeon\"}",
                Duration::from_secs(60),
            )
            .await
            .expect("put");
        let flow = book.flow_for_request(Some("T")).await.id;
        assert_ne!(flow.as_str(), "not a flow id!!!");
        assert_eq!(book.flow_for_request(Some("T")).await.id, flow);
        assert_eq!(book.method_channel(&flow, SMS_ID).await, None);
    }
}
