//! Everything the emulator remembers between requests: the user directory, live
//! continuation tokens with the flow step each one stands for, issued refresh tokens and the
//! outbox of "sent" codes. Every collection is capped so a long benchmark cannot grow it
//! without bound.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::config::{Channel, EntraConfig, MfaMethodSpec, UserSpec};
use super::wire::{normalize_phone, Capabilities, ChallengeTypes, Endpoint, Fault};
use super::OutboxEntry;

/// Users created by sign-up beyond this evict the oldest created by sign-up.
const MAX_SIGNED_UP_USERS: usize = 200_000;
/// Continuation tokens beyond this evict the oldest.
const MAX_CONTINUATION_TOKENS: usize = 200_000;
/// How long an expired continuation token still answers `expired_token` rather than
/// "invalid", so clients see the documented error.
const EXPIRED_TOKEN_MEMORY: Duration = Duration::from_secs(600);
const MAX_REFRESH_TOKENS: usize = 100_000;
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const MAX_OUTBOX: usize = 10_000;

pub(crate) struct State {
    pub users: Directory,
    pub flows: Flows,
    pub refresh: RefreshTokens,
    pub outbox: Outbox,
}

impl State {
    pub(crate) fn new(config: &EntraConfig) -> Self {
        Self {
            users: Directory::new(config),
            flows: Flows::with_ttl(config.continuation_token_ttl),
            refresh: RefreshTokens::default(),
            outbox: Outbox::default(),
        }
    }
}

/// A registered strong-auth method with the opaque id introspect hands out.
#[derive(Clone)]
pub(crate) struct Method {
    pub id: String,
    pub channel: Channel,
    /// E.164 for SMS.
    pub target: String,
}

#[derive(Clone)]
pub(crate) struct User {
    pub username: String,
    pub object_id: String,
    pub display_name: String,
    pub password: Option<String>,
    pub mfa_required: bool,
    pub methods: Vec<Method>,
}

impl User {
    fn from_spec(spec: &UserSpec, tenant_id: &str) -> Self {
        let methods = spec
            .mfa_methods
            .iter()
            .map(|m| Method {
                id: uuid::Uuid::new_v4().to_string(),
                channel: m.channel,
                target: match m.channel {
                    Channel::Sms => normalize_phone(&m.target).unwrap_or_else(|| m.target.clone()),
                    Channel::Email => m.target.clone(),
                },
            })
            .collect();
        Self {
            username: spec.username.clone(),
            object_id: stable_object_id(tenant_id, &spec.username),
            display_name: spec
                .display_name
                .clone()
                .unwrap_or_else(|| local_part(&spec.username)),
            password: spec.password.clone(),
            mfa_required: spec.mfa_required,
            methods,
        }
    }

    pub(crate) fn needs_mfa(&self) -> bool {
        self.mfa_required || !self.methods.is_empty()
    }

    /// Adds a method unless the same channel and target are already registered.
    pub(crate) fn register(&mut self, method: &MfaMethodSpec) {
        let exists = self
            .methods
            .iter()
            .any(|m| m.channel == method.channel && m.target.eq_ignore_ascii_case(&method.target));
        if !exists {
            self.methods.push(Method {
                id: uuid::Uuid::new_v4().to_string(),
                channel: method.channel,
                target: method.target.clone(),
            });
        }
    }
}

/// Object ids derive from tenant and username so the configured users keep their `oid`
/// across restarts, which keeps demo accounts and MSAL caches stable.
fn stable_object_id(tenant_id: &str, username: &str) -> String {
    let digest = Sha256::digest(format!("{tenant_id}/{}", username.to_ascii_lowercase()));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn local_part(username: &str) -> String {
    username.split('@').next().unwrap_or(username).to_owned()
}

/// Users by lowercased username.
pub(crate) struct Directory {
    tenant_id: String,
    users: HashMap<String, User>,
    signed_up: VecDeque<String>,
}

impl Directory {
    fn new(config: &EntraConfig) -> Self {
        let users = config
            .users
            .iter()
            .map(|spec| {
                (
                    spec.username.to_ascii_lowercase(),
                    User::from_spec(spec, &config.tenant_id),
                )
            })
            .collect();
        Self {
            tenant_id: config.tenant_id.clone(),
            users,
            signed_up: VecDeque::new(),
        }
    }

    pub(crate) fn get(&self, username: &str) -> Option<&User> {
        self.users.get(&username.to_ascii_lowercase())
    }

    pub(crate) fn get_mut(&mut self, username: &str) -> Option<&mut User> {
        self.users.get_mut(&username.to_ascii_lowercase())
    }

    /// Creates a user from a completed sign-up.
    pub(crate) fn create(&mut self, draft: &SignUpDraft, mfa_required: bool) -> Result<(), Fault> {
        let key = draft.username.to_ascii_lowercase();
        if self.users.contains_key(&key) {
            return Err(Fault::user_already_exists());
        }
        while self.signed_up.len() >= MAX_SIGNED_UP_USERS {
            match self.signed_up.pop_front() {
                Some(old) => {
                    self.users.remove(&old);
                }
                None => return Err(Fault::directory_full()),
            }
        }
        let display_name = draft
            .attributes
            .get("displayName")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let spec = UserSpec {
            username: draft.username.clone(),
            password: draft.password.clone(),
            display_name,
            mfa_required,
            mfa_methods: Vec::new(),
        };
        self.users
            .insert(key.clone(), User::from_spec(&spec, &self.tenant_id));
        self.signed_up.push_back(key);
        Ok(())
    }
}

/// A sign-up in progress: what the client has supplied so far.
#[derive(Clone)]
pub(crate) struct SignUpDraft {
    pub username: String,
    pub password: Option<String>,
    /// The client advertised `password`: this becomes an email+password account. Without
    /// it the account is email-OTP only.
    pub wants_password: bool,
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// What a continuation token lets its holder do next. Each variant names the state the
/// flow is in; handlers accept only the variants their endpoint continues from.
#[derive(Clone)]
pub(crate) enum Step {
    SignInStarted {
        user: String,
    },
    PasswordRequested {
        user: String,
    },
    SignInCodeSent {
        user: String,
        code: String,
    },
    MfaRequired {
        user: String,
    },
    MfaMethodsListed {
        user: String,
    },
    MfaCodeSent {
        user: String,
        code: String,
    },
    RegistrationRequired {
        user: String,
    },
    RegistrationMethodsListed {
        user: String,
    },
    RegistrationCodeSent {
        user: String,
        method: MfaMethodSpec,
        code: String,
    },
    RegistrationPreverified {
        user: String,
        method: MfaMethodSpec,
    },
    /// `grant_type=continuation_token` may redeem this; `mfa_done` after a registration
    /// just verified a method (reference §5.1 token note).
    ReadyForTokens {
        user: String,
        mfa_done: bool,
    },
    SignUpStarted {
        draft: SignUpDraft,
    },
    SignUpCodeSent {
        draft: SignUpDraft,
        code: String,
    },
    SignUpCredentialRequired {
        draft: SignUpDraft,
    },
    SignUpPasswordRequested {
        draft: SignUpDraft,
    },
    SignUpAttributesRequired {
        draft: SignUpDraft,
    },
    ResetStarted {
        user: String,
    },
    ResetCodeSent {
        user: String,
        code: String,
    },
    ResetVerified {
        user: String,
    },
    ResetSubmitted {
        user: String,
        polls: u32,
    },
}

/// Facts about a flow that outlive any one step.
#[derive(Clone)]
pub(crate) struct FlowCtx {
    pub client_id: String,
    pub capabilities: Capabilities,
    pub challenge_types: ChallengeTypes,
    /// The address this flow proved the user owns with an email code; registering it as an
    /// MFA method is then `preverified` (reference §5.4).
    pub verified_email: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub flow: FlowCtx,
    pub step: Step,
    expires_at: Instant,
}

/// Live continuation tokens. A token is single-step: using it successfully replaces it
/// with a new one, so an old token fails everywhere, while a failed attempt (wrong code,
/// wrong password) leaves it usable for the retry.
pub(crate) struct Flows {
    ttl: Duration,
    entries: HashMap<String, Entry>,
    /// Tokens in issue order; with one TTL this is also expiry order.
    order: VecDeque<(Instant, String)>,
}

impl Default for Flows {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl Flows {
    pub(crate) fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            ..Self::default()
        }
    }

    /// The step behind `token`, if it is live and was issued to `client_id`.
    pub(crate) fn get(
        &self,
        token: &str,
        client_id: &str,
        now: Instant,
        endpoint: Endpoint,
    ) -> Result<Entry, Fault> {
        let entry = self
            .entries
            .get(token)
            .filter(|e| e.flow.client_id.eq_ignore_ascii_case(client_id))
            .ok_or_else(|| Fault::bad_token(endpoint))?;
        if now >= entry.expires_at {
            return Err(Fault::expired_token());
        }
        Ok(entry.clone())
    }

    /// Issues a token for a new flow.
    pub(crate) fn start(&mut self, flow: FlowCtx, step: Step, now: Instant) -> String {
        self.sweep(now);
        let token = new_continuation_token();
        let expires_at = now + self.ttl;
        self.order.push_back((expires_at, token.clone()));
        self.entries.insert(
            token.clone(),
            Entry {
                flow,
                step,
                expires_at,
            },
        );
        token
    }

    /// Retires `old` and issues its successor.
    pub(crate) fn advance(&mut self, old: &str, flow: FlowCtx, step: Step, now: Instant) -> String {
        self.entries.remove(old);
        self.start(flow, step, now)
    }

    /// Moves `token`'s flow to `step`, keeping the token (and its expiry) valid.
    pub(crate) fn update(&mut self, token: &str, step: Step) {
        if let Some(entry) = self.entries.get_mut(token) {
            entry.step = step;
        }
    }

    /// Retires `token` at the end of its flow.
    pub(crate) fn finish(&mut self, token: &str) {
        self.entries.remove(token);
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Forgets tokens long expired, and the oldest when over the cap.
    fn sweep(&mut self, now: Instant) {
        while let Some((expires_at, token)) = self.order.front() {
            let forgotten = *expires_at + EXPIRED_TOKEN_MEMORY <= now;
            if !forgotten && self.order.len() < MAX_CONTINUATION_TOKENS {
                break;
            }
            self.entries.remove(token);
            self.order.pop_front();
        }
    }
}

/// 64 random bytes, base64url: long, opaque and URL-safe like the real ones.
fn new_continuation_token() -> String {
    let mut bytes = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A refresh token's grant.
#[derive(Clone)]
pub(crate) struct RefreshGrant {
    pub user: String,
    pub client_id: String,
    expires_at: Instant,
}

#[derive(Default)]
pub(crate) struct RefreshTokens {
    grants: HashMap<String, RefreshGrant>,
    order: VecDeque<String>,
}

impl RefreshTokens {
    pub(crate) fn issue(&mut self, user: &str, client_id: &str, now: Instant) -> String {
        while self.order.len() >= MAX_REFRESH_TOKENS {
            if let Some(old) = self.order.pop_front() {
                self.grants.remove(&old);
            }
        }
        let mut bytes = [0u8; 48];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token = format!("1.{}", URL_SAFE_NO_PAD.encode(bytes));
        self.grants.insert(
            token.clone(),
            RefreshGrant {
                user: user.to_owned(),
                client_id: client_id.to_owned(),
                expires_at: now + REFRESH_TOKEN_LIFETIME,
            },
        );
        self.order.push_back(token.clone());
        token
    }

    /// The grant behind a live refresh token issued to `client_id`. Entra keeps a refresh
    /// token usable after redeeming it, so this does not consume it.
    pub(crate) fn get(&self, token: &str, client_id: &str, now: Instant) -> Option<RefreshGrant> {
        self.grants
            .get(token)
            .filter(|g| g.client_id.eq_ignore_ascii_case(client_id) && now < g.expires_at)
            .cloned()
    }
}

/// Codes "sent", newest last, capped; and how many were sent in all.
#[derive(Default)]
pub(crate) struct Outbox {
    entries: VecDeque<OutboxEntry>,
    total: u64,
}

impl Outbox {
    pub(crate) fn push(&mut self, entry: OutboxEntry) {
        if self.entries.len() >= MAX_OUTBOX {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
        self.total += 1;
    }

    /// Every code sent since start, also those the capped list no longer holds.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn list(&self) -> Vec<OutboxEntry> {
        self.entries.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowCtx {
        FlowCtx {
            client_id: "c".into(),
            capabilities: Capabilities::default(),
            challenge_types: ChallengeTypes::default(),
            verified_email: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_single_step_and_expire() {
        let mut flows = Flows::with_ttl(Duration::from_secs(60));
        let now = Instant::now();
        let first = flows.start(flow(), Step::SignInStarted { user: "u".into() }, now);
        assert!(first.len() >= 80);
        let second = flows.advance(&first, flow(), Step::MfaRequired { user: "u".into() }, now);
        let stale = flows
            .get(&first, "c", now, Endpoint::Token)
            .err()
            .map(|f| f.error());
        assert_eq!(stale, Some("invalid_grant"));
        assert!(flows.get(&second, "c", now, Endpoint::Token).is_ok());
        assert!(flows.get(&second, "other", now, Endpoint::Token).is_err());
        let later = now + Duration::from_secs(60);
        let expired = flows
            .get(&second, "c", later, Endpoint::Token)
            .err()
            .map(|f| f.error());
        assert_eq!(expired, Some("expired_token"));
    }

    #[test]
    fn object_ids_are_stable_guids() {
        let a = stable_object_id("t", "Sms@Contoso.com");
        assert_eq!(a, stable_object_id("t", "sms@contoso.com"));
        assert!(super::super::wire::is_guid(&a));
        assert_ne!(a, stable_object_id("t", "otp@contoso.com"));
    }

    #[test]
    fn outbox_is_capped() {
        let mut outbox = Outbox::default();
        for i in 0..MAX_OUTBOX + 5 {
            outbox.push(OutboxEntry {
                channel: "sms".into(),
                target: "+447400123456".into(),
                code: i.to_string(),
                endpoint: "/oauth2/v2.0/challenge".into(),
                at: String::new(),
            });
        }
        let list = outbox.list();
        assert_eq!(list.len(), MAX_OUTBOX);
        assert_eq!(outbox.total(), MAX_OUTBOX as u64 + 5);
        assert_eq!(list[0].code, "5");
    }
}
