//! An emulator of the Entra External ID native-authentication API (V1) for one tenant, used
//! by tests, benches and the demo in place of real Entra. It follows
//! `reference/entra-native-auth.md`: the same paths, parameters, bodies, error codes and
//! status codes, and an outbox instead of real SMS and email.
//!
//! # Surface
//! * `POST /{tenant}/oauth2/v2.0/{initiate,challenge,introspect,token}`,
//!   `/{tenant}/signup/v1.0/{start,challenge,continue}`,
//!   `/{tenant}/resetpassword/v1.0/{start,challenge,continue,submit,poll_completion}`,
//!   `/{tenant}/register/v1.0/{introspect,challenge,continue}`. `{tenant}` is
//!   `{tenant_name}.onmicrosoft.com` or the tenant id, any case. Parameters come from the
//!   form body and the query string. Any other method is 405, an unknown tenant or path 404,
//!   a body over 64 KiB 413, all with Entra's error body.
//! * `GET /{tenant}/v2.0/.well-known/openid-configuration`: OIDC metadata for MSAL.
//! * `GET /_emulator/outbox`: every code "sent", oldest first, as JSON [`OutboxEntry`]s
//!   (the last 10,000); `DELETE /_emulator/outbox` empties it (204).
//!
//! Every response carries `x-ms-request-id`; none carries CORS headers, like Entra.
//!
//! # Behaviour worth knowing
//! * Continuation tokens are single-step: a successful call retires the token it was given
//!   and returns a new one; a failed attempt (wrong code or password) keeps it for the
//!   retry. Repeating a challenge with the latest token resends a new code and the old code
//!   stops working. Tokens expire after `continuation_token_ttl` ([`tokio::time`], so
//!   paused-time tests work).
//! * MFA is asked for (`mfa_required`, `registration_required`) only when the flow's first
//!   call advertised that capability; otherwise the token endpoint answers a redirect.
//! * Every redirect (`200 {"challenge_type":"redirect"}`, from initiate, challenge, token,
//!   sign-up and reset) carries a `redirect_reason`, one short fixed text per cause
//!   (`wire::RedirectReason`, e.g. "Client is missing registration_required capability",
//!   the reference's example). All three SDKs read it: msal-browser's
//!   `BaseApiClient.handleApiResponse` makes it the `RedirectError` message, iOS decodes
//!   `redirectReason` on every response model (its mock-server tests assert it is not nil),
//!   Android's `INativeAuthApiResponse` reads `redirect_reason`.
//! * A `username` that is present but empty, or not an email address (the tenant has no
//!   username aliases), on `/signup/v1.0/start`, `/oauth2/v2.0/initiate` and
//!   `/resetpassword/v1.0/start` is `400 invalid_request` with `error_codes` `[90100]` and
//!   "AADSTS90100: username parameter is empty or not valid.": iOS
//!   `MSALNativeAuthSignUpResponseValidator` keys on `invalid_request`, `error_codes[0] ==
//!   90100` and that exact substring; Android `SignUpStartApiResponse` on HTTP 400 and the
//!   first code; msal-browser's `isInvalidUsername()` (sign-in, sign-up and reset) on 90100
//!   and the substring. An absent `username` stays AADSTS900144, an unknown one
//!   `user_not_found`, an existing one on sign-up `user_already_exists`.
//! * `/register/v1.0/challenge` names the target in `challenge_target`, the field iOS
//!   (`MSALNativeAuthJITChallengeResponse`), Android (`JITChallengeApiResponse`) and
//!   msal-browser (`RegisterChallengeResponse`) read, and in `challenge_target_label` too.
//!   A phone is masked in both like the MFA labels (`+44********99`; iOS's mock server
//!   answers `+3538331***`); an email address is echoed as given in `challenge_target` (the
//!   SDK fixtures echo it) and masked in the label.
//! * `/resetpassword/v1.0/poll_completion` answers `{"status":"in_progress"}` once, with no
//!   `continuation_token` (msal-browser's and iOS's fixtures have none), then `succeeded`
//!   with a fresh token. All SDKs poll with the token `submit` gave, which stays valid until
//!   the success retires it.
//! * Registering a phone stores it on the user; the next sign-in gets SMS MFA over it.
//!
//! # Users file
//! TOML (or JSON if the name ends in `.json`); every field is optional and defaults to the
//! demo tenant without users:
//!
//! ```toml
//! tenant_name = "contoso"                               # /contoso.onmicrosoft.com/...
//! tenant_id = "b6a1c2d3-0e4f-4a5b-8c6d-7e8f9a0b1c2d"    # /b6a1c2d3-.../...
//! client_ids = ["00000000-0000-4000-8000-000000000001"] # empty: any GUID
//! continuation_token_ttl = "10m"
//! code_length = 8
//!
//! [signup]
//! required_attributes = ["displayName"]   # else attributes_required
//! mfa_required = false                    # new users must register a method
//!
//! [[users]]
//! username = "sms@contoso.com"
//! password = "Passw0rd!"                   # omit for an email-OTP user
//! display_name = "Sam"                     # the name claim; default: local part
//! mfa_methods = [{ channel = "sms", target = "+447400123456" }]
//!
//! [[users]]
//! username = "newphone@contoso.com"
//! password = "Passw0rd!"
//! mfa_required = true                      # no methods: JIT registration
//! ```
//!
//! The built-in set is [`EntraConfig::demo`].

mod config;
mod register;
mod request;
mod reset;
mod signin;
mod signup;
mod state;
mod tokens;
mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use parking_lot::Mutex;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use config::{
    Channel, EntraConfig, MfaMethodSpec, SignUpPolicy, UserSpec, DEMO_CLIENT_ID, DEMO_PASSWORD,
    DEMO_TENANT_ID,
};

use crate::entra::error::json_response;
use request::Tenant;
use state::State;
use wire::{Endpoint, Fault, Params};

/// Request bodies beyond this are refused with 413; real ones are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot read users file {path}: {source}")]
    UsersFileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users file {path} is malformed: {message}")]
    UsersFileInvalid { path: PathBuf, message: String },
    #[error("invalid emulator config: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),
}

/// One code the emulator "sent".
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// `sms` or `email`.
    pub channel: String,
    /// E.164 phone number or email address.
    pub target: String,
    pub code: String,
    /// The endpoint that sent it, e.g. `/oauth2/v2.0/challenge`.
    pub endpoint: String,
    /// RFC 3339 UTC.
    pub at: String,
}

/// Runs one V1 endpoint under the state lock.
fn dispatch(
    tenant: &request::Tenant,
    state: &mut state::State,
    params: &wire::Params,
    endpoint: wire::Endpoint,
    now: tokio::time::Instant,
) -> Result<wire::Reply, wire::Fault> {
    use wire::Endpoint;
    let mut cx = request::Cx::new(tenant, state, params, endpoint, now)?;
    let cx = &mut cx;
    match endpoint {
        Endpoint::Initiate => signin::initiate(cx),
        Endpoint::Challenge => signin::challenge(cx),
        Endpoint::Introspect => signin::introspect(cx),
        Endpoint::Token => signin::token(cx),
        Endpoint::SignUpStart => signup::start(cx),
        Endpoint::SignUpChallenge => signup::challenge(cx),
        Endpoint::SignUpContinue => signup::continue_(cx),
        Endpoint::ResetStart => reset::start(cx),
        Endpoint::ResetChallenge => reset::challenge(cx),
        Endpoint::ResetContinue => reset::continue_(cx),
        Endpoint::ResetSubmit => reset::submit(cx),
        Endpoint::ResetPoll => reset::poll_completion(cx),
        Endpoint::RegisterIntrospect => register::introspect(cx),
        Endpoint::RegisterChallenge => register::challenge(cx),
        Endpoint::RegisterContinue => register::continue_(cx),
    }
}

/// The emulated tenant; cheap to clone, all clones share state.
#[derive(Clone)]
pub struct EntraEmulator {
    inner: Arc<Inner>,
}

struct Inner {
    tenant: Tenant,
    state: Mutex<State>,
    /// What [`EntraEmulator::reset`] goes back to.
    config: EntraConfig,
}

impl EntraEmulator {
    /// Builds the tenant. The config is used as given; [`EntraConfig::validate`] is for
    /// callers who want problems reported (the users file loader runs it).
    pub fn new(config: EntraConfig) -> Self {
        let mut signing_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut signing_key);
        let tenant = Tenant {
            domain: format!("{}.onmicrosoft.com", config.tenant_name),
            id: config.tenant_id.to_ascii_lowercase(),
            client_ids: config
                .client_ids
                .iter()
                .map(|id| id.to_ascii_lowercase())
                .collect(),
            code_length: config.code_length.clamp(1, 16),
            signup: config.signup.clone(),
            issuer: format!(
                "https://{id}.ciamlogin.com/{id}/v2.0",
                id = config.tenant_id.to_ascii_lowercase()
            ),
            signing_key,
        };
        Self {
            inner: Arc::new(Inner {
                tenant,
                state: Mutex::new(State::new(&config)),
                config,
            }),
        }
    }

    /// Every code sent and still remembered, oldest first.
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.inner.state.lock().outbox.list()
    }

    /// How many codes were sent since start: the outbox keeps only the newest 10,000.
    /// [`EntraEmulator::clear_outbox`] does not reset it.
    pub fn sent_total(&self) -> u64 {
        self.inner.state.lock().outbox.total()
    }

    pub(crate) fn clear_outbox(&self) {
        self.inner.state.lock().outbox.clear();
    }

    /// Back to the configured users with no flow, token or code: what the demo's reset
    /// does, so a walkthrough that registered a phone can be run again.
    pub fn reset(&self) {
        *self.inner.state.lock() = State::new(&self.inner.config);
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body + Send,
        B::Data: Send,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = req.into_parts();
        let correlation_id = parts
            .headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let fail = |fault: Fault| {
            let status = fault.http_status();
            tracing::debug!(
                path = parts.uri.path(),
                status = status.as_u16(),
                error = fault.error(),
                "emulated entra error"
            );
            fault.into_response(correlation_id.as_deref())
        };
        let endpoint = match self.route(parts.uri.path()) {
            Route::Outbox => return self.outbox_route(&parts.method),
            Route::Metadata if parts.method == Method::GET => return self.metadata(),
            Route::Metadata => return fail(Fault::method_not_allowed("GET")),
            Route::UnknownTenant => return fail(Fault::unknown_tenant()),
            Route::UnknownEndpoint => return fail(Fault::unknown_endpoint()),
            Route::Endpoint(endpoint) => endpoint,
        };
        if parts.method != Method::POST {
            let mut response = fail(Fault::method_not_allowed("POST"));
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return response;
        }
        let body = match read_body(body, &parts.headers).await {
            Ok(body) => body,
            Err(fault) => return fail(fault),
        };
        let params = Params::parse(parts.uri.query(), &body);
        let now = tokio::time::Instant::now();
        let result = {
            let mut state = self.inner.state.lock();
            dispatch(&self.inner.tenant, &mut state, &params, endpoint, now)
        };
        match result {
            Ok(reply) => {
                tracing::debug!(endpoint = endpoint.path(), "emulated entra success");
                reply.into_response()
            }
            Err(fault) => fail(fault),
        }
    }

    fn route(&self, path: &str) -> Route {
        // Segments are percent-decoded like a real server does, but an encoded slash stays
        // inside its segment and so never forms a known path.
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let Some((first, rest)) = segments.split_first() else {
            return Route::UnknownTenant;
        };
        if first == "_emulator" && rest.len() == 1 && rest[0] == "outbox" {
            return Route::Outbox;
        }
        if !self.inner.tenant.is_named(first) {
            return Route::UnknownTenant;
        }
        if rest.iter().any(|s| s.contains('/')) {
            return Route::UnknownEndpoint;
        }
        let rest = format!("/{}", rest.join("/"));
        if rest.eq_ignore_ascii_case("/v2.0/.well-known/openid-configuration") {
            return Route::Metadata;
        }
        Endpoint::from_path(&rest).map_or(Route::UnknownEndpoint, Route::Endpoint)
    }

    fn outbox_route(&self, method: &Method) -> Response<Full<Bytes>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        if method == Method::GET {
            let body = serde_json::to_vec(&self.outbox()).unwrap_or_default();
            return json_response(StatusCode::OK, Bytes::from(body), Some(&request_id));
        }
        if method == Method::DELETE {
            self.clear_outbox();
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            if let Ok(value) = header::HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-ms-request-id", value);
            }
            return response;
        }
        let mut response = Fault::method_not_allowed("GET and DELETE").into_response(None);
        response.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static("GET, DELETE"),
        );
        response
    }

    /// Enough OIDC metadata for MSAL to accept the authority without network discovery
    /// elsewhere; endpoints point at the canonical `ciamlogin.com` host.
    fn metadata(&self) -> Response<Full<Bytes>> {
        let tenant = &self.inner.tenant;
        let base = format!(
            "https://{}.ciamlogin.com/{}",
            tenant_label(&tenant.domain),
            tenant.id
        );
        let body = json!({
            "issuer": tenant.issuer,
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["HS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["none"],
            "claims_supported": ["aud", "exp", "iat", "iss", "name", "nbf", "nonce", "oid",
                "preferred_username", "sub", "tid", "ver"],
            "tenant_region_scope": "EU",
        });
        let request_id = uuid::Uuid::new_v4().to_string();
        json_response(
            StatusCode::OK,
            Bytes::from(body.to_string()),
            Some(&request_id),
        )
    }
}

fn tenant_label(domain: &str) -> &str {
    domain.strip_suffix(".onmicrosoft.com").unwrap_or(domain)
}

enum Route {
    Endpoint(Endpoint),
    Metadata,
    Outbox,
    UnknownTenant,
    UnknownEndpoint,
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`].
async fn read_body<B>(body: B, headers: &HeaderMap) -> Result<Bytes, Fault>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(Fault::body_too_large(MAX_BODY_BYTES));
    }
    let mut body = std::pin::pin!(body);
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::debug!(%error, "emulated entra could not read a request body");
            Fault::unreadable_body()
        })?;
        if let Ok(mut data) = frame.into_data() {
            if buffer.len() + data.remaining() > MAX_BODY_BYTES {
                return Err(Fault::body_too_large(MAX_BODY_BYTES));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                let len = chunk.len();
                buffer.put_slice(chunk);
                data.advance(len);
            }
        }
    }
    Ok(buffer.freeze())
}

/// Serve HTTP/1.1 and HTTP/2 (cleartext, by prior knowledge) until `shutdown`
/// resolves, then stop accepting and let open connections finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    emulator: EntraEmulator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::serve_with(
        listener,
        move |req| {
            let emulator = emulator.clone();
            async move { emulator.handle(req).await }
        },
        shutdown,
        "entra",
    )
    .await
}
