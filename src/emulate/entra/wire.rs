//! The emulator's wire vocabulary: endpoints, request parameters, the replies and the
//! catalogue of Entra errors it answers with, and the small text rules (GUIDs, phones,
//! masking) those need.

use std::borrow::Cow;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::entra::error::{json_response, ErrorBody};

/// The V1 endpoints (reference §3), by the path after the tenant segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Initiate,
    Challenge,
    Introspect,
    Token,
    SignUpStart,
    SignUpChallenge,
    SignUpContinue,
    ResetStart,
    ResetChallenge,
    ResetContinue,
    ResetSubmit,
    ResetPoll,
    RegisterIntrospect,
    RegisterChallenge,
    RegisterContinue,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 15] = [
        Endpoint::Initiate,
        Endpoint::Challenge,
        Endpoint::Introspect,
        Endpoint::Token,
        Endpoint::SignUpStart,
        Endpoint::SignUpChallenge,
        Endpoint::SignUpContinue,
        Endpoint::ResetStart,
        Endpoint::ResetChallenge,
        Endpoint::ResetContinue,
        Endpoint::ResetSubmit,
        Endpoint::ResetPoll,
        Endpoint::RegisterIntrospect,
        Endpoint::RegisterChallenge,
        Endpoint::RegisterContinue,
    ];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Initiate => "/oauth2/v2.0/initiate",
            Endpoint::Challenge => "/oauth2/v2.0/challenge",
            Endpoint::Introspect => "/oauth2/v2.0/introspect",
            Endpoint::Token => "/oauth2/v2.0/token",
            Endpoint::SignUpStart => "/signup/v1.0/start",
            Endpoint::SignUpChallenge => "/signup/v1.0/challenge",
            Endpoint::SignUpContinue => "/signup/v1.0/continue",
            Endpoint::ResetStart => "/resetpassword/v1.0/start",
            Endpoint::ResetChallenge => "/resetpassword/v1.0/challenge",
            Endpoint::ResetContinue => "/resetpassword/v1.0/continue",
            Endpoint::ResetSubmit => "/resetpassword/v1.0/submit",
            Endpoint::ResetPoll => "/resetpassword/v1.0/poll_completion",
            Endpoint::RegisterIntrospect => "/register/v1.0/introspect",
            Endpoint::RegisterChallenge => "/register/v1.0/challenge",
            Endpoint::RegisterContinue => "/register/v1.0/continue",
        }
    }

    /// Paths match case-insensitively, as on the real service (IIS-style routing), so that
    /// case variants reach the same handler and a gateway must canonicalize them too.
    pub(crate) fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.path().eq_ignore_ascii_case(path))
    }

    /// The reference documents a bad continuation token as `invalid_grant` on these three
    /// endpoints and as `invalid_request` on all the others.
    fn bad_token_error(self) -> &'static str {
        match self {
            Endpoint::Challenge | Endpoint::Token | Endpoint::SignUpChallenge => "invalid_grant",
            _ => "invalid_request",
        }
    }
}

/// Request parameters from the form body and the query string (reference §2, §11: both
/// occur). The body wins when a name appears in both; within one source the first wins.
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub(crate) fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        if let Some(query) = query {
            pairs.extend(form_urlencoded::parse(query.as_bytes()).into_owned());
        }
        Self { pairs }
    }

    /// A parameter's value, trimmed; empty counts as absent.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, name: &'static str) -> Result<&str, Fault> {
        self.get(name).ok_or_else(|| Fault::missing(name))
    }

    /// The `username` of a flow's first call (initiate, sign-up start, reset start).
    /// Absent is the generic missing parameter (AADSTS900144); present but empty (after
    /// trimming) or not an email address is AADSTS90100, "username parameter is empty or
    /// not valid". The emulated tenant has no username aliases, so every account name is
    /// an email address.
    pub(crate) fn username(&self) -> Result<&str, Fault> {
        if !self.pairs.iter().any(|(k, _)| k == "username") {
            return Err(Fault::missing("username"));
        }
        self.get("username")
            .filter(|name| is_email(name))
            .ok_or_else(Fault::invalid_username)
    }

    /// A password exactly as sent: spaces at either end are part of it.
    pub(crate) fn secret(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required_secret(&self, name: &'static str) -> Result<&str, Fault> {
        self.secret(name).ok_or_else(|| Fault::missing(name))
    }
}

/// The `challenge_type` list a client advertises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChallengeTypes {
    pub oob: bool,
    pub password: bool,
}

impl ChallengeTypes {
    /// Parses the space-separated list; it must name `redirect` (reference §2).
    pub(crate) fn parse(raw: &str) -> Result<Self, Fault> {
        let mut types = ChallengeTypes::default();
        let mut redirect = false;
        for word in raw.split_ascii_whitespace() {
            match word {
                "oob" => types.oob = true,
                "password" => types.password = true,
                "redirect" => redirect = true,
                _ => return Err(Fault::unknown_challenge_type()),
            }
        }
        if redirect {
            Ok(types)
        } else {
            Err(Fault::no_redirect())
        }
    }

    /// The list on a later step: optional, and when present it replaces the flow's.
    pub(crate) fn optional(params: &Params, flow_types: ChallengeTypes) -> Result<Self, Fault> {
        match params.get("challenge_type") {
            Some(raw) => ChallengeTypes::parse(raw),
            None => Ok(flow_types),
        }
    }
}

/// The `capabilities` a client advertises on the first call of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    pub mfa_required: bool,
    pub registration_required: bool,
}

impl Capabilities {
    /// Reads `capabilities`, or `capability` as older sign-up docs spell it (reference §11).
    /// Unknown flags are ignored: they describe the client, not the request.
    pub(crate) fn from_params(params: &Params) -> Self {
        let raw = params
            .get("capabilities")
            .or_else(|| params.get("capability"))
            .unwrap_or("");
        let mut caps = Capabilities::default();
        for word in raw.split_ascii_whitespace() {
            match word {
                "mfa_required" => caps.mfa_required = true,
                "registration_required" => caps.registration_required = true,
                _ => {}
            }
        }
        caps
    }
}

/// Why a redirect answer sends the client to the browser: the `redirect_reason` every
/// redirect carries. All three SDKs read it and show it: msal-browser's
/// `BaseApiClient.handleApiResponse` throws `RedirectError(correlationId,
/// responseData.redirect_reason)`, iOS decodes `redirectReason` on every response model
/// and maps it to `.redirect(reason:)`, Android reads `@SerializedName("redirect_reason")`
/// in `INativeAuthApiResponse`. The texts are short, stable and in Entra's style (the
/// reference quotes "Client is missing registration_required capability"), so tests and
/// gateways may match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RedirectReason {
    /// The `challenge_type` list lacks the user's first factor (`password` for an
    /// email+password user, `oob` for an email-OTP user): initiate and challenge.
    UserChallengeTypeUnsupported,
    /// Sign-up proves the address with an email code, and the list lacks `oob`.
    SignUpNeedsOob,
    /// Sign-up asked for a password (`credential_required`), and the list lacks `password`.
    SignUpNeedsPassword,
    /// Password reset sends an email code, and the list lacks `oob`.
    ResetNeedsOob,
    /// An email-OTP user has no password to reset.
    ResetWithoutPassword,
    /// The user needs a second factor and the flow did not advertise `mfa_required`.
    MissingMfaCapability,
    /// The user must register a method and the flow did not advertise
    /// `registration_required`.
    MissingRegistrationCapability,
}

impl RedirectReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RedirectReason::UserChallengeTypeUnsupported => {
                "The client does not support the challenge type the user signs in with"
            }
            RedirectReason::SignUpNeedsOob => {
                "The client does not support the oob challenge type sign-up requires"
            }
            RedirectReason::SignUpNeedsPassword => {
                "The client does not support the password challenge type sign-up requires"
            }
            RedirectReason::ResetNeedsOob => {
                "The client does not support the oob challenge type password reset requires"
            }
            RedirectReason::ResetWithoutPassword => "The user does not sign in with a password",
            RedirectReason::MissingMfaCapability => "Client is missing mfa_required capability",
            RedirectReason::MissingRegistrationCapability => {
                "Client is missing registration_required capability"
            }
        }
    }
}

/// A successful answer (HTTP 200).
pub(crate) enum Reply {
    Json(Value),
    /// `{"challenge_type":"redirect","redirect_reason":"…"}`: the client must fall back to
    /// the browser.
    Redirect {
        reason: RedirectReason,
    },
}

impl Reply {
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let body = match self {
            Reply::Json(value) => value,
            Reply::Redirect { reason } => {
                json!({ "challenge_type": "redirect", "redirect_reason": reason.as_str() })
            }
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        json_response(
            StatusCode::OK,
            Bytes::from(body.to_string()),
            Some(&request_id),
        )
    }
}

/// An Entra error answer. Constructors below are the whole catalogue, so every code the
/// emulator can say is in one place. Codes marked *chosen* are not given by the reference;
/// the rest are.
pub(crate) struct Fault {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: Cow<'static, str>,
    suberror: Option<&'static str>,
    continuation_token: Option<String>,
    required_attributes: Option<Value>,
}

// Continuation tokens stay out of debug output.
impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fault")
            .field("status", &self.status)
            .field("error", &self.error)
            .field("code", &self.code)
            .field("suberror", &self.suberror)
            .finish_non_exhaustive()
    }
}

impl Fault {
    fn new(error: &'static str, code: u32, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            code,
            message: message.into(),
            suberror: None,
            continuation_token: None,
            required_attributes: None,
        }
    }

    fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn suberror(mut self, suberror: &'static str) -> Self {
        self.suberror = Some(suberror);
        self
    }

    fn token(mut self, token: String) -> Self {
        self.continuation_token = Some(token);
        self
    }

    pub(crate) fn error(&self) -> &'static str {
        self.error
    }

    pub(crate) fn http_status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn suberror_name(&self) -> Option<&'static str> {
        self.suberror
    }

    /// A required parameter is absent. AADSTS900144 is Entra's code for this (chosen).
    pub(crate) fn missing(name: &str) -> Self {
        Self::new(
            "invalid_request",
            900_144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// `client_id` is not a GUID (chosen: AADSTS700038).
    pub(crate) fn malformed_client_id() -> Self {
        Self::new(
            "invalid_request",
            700_038,
            "client_id is not a valid application identifier.",
        )
    }

    /// A well-formed `client_id` the tenant does not know (chosen: AADSTS700016).
    pub(crate) fn unauthorized_client(tenant: &str) -> Self {
        Self::new(
            "unauthorized_client",
            700_016,
            format!("The application was not found in the directory '{tenant}'."),
        )
    }

    pub(crate) fn no_redirect() -> Self {
        Self::new(
            "invalid_request",
            901_007,
            "The challenge_type list parameter does not include the 'redirect' type.",
        )
    }

    /// A `challenge_type` word that is not `oob`, `password` or `redirect` (chosen:
    /// AADSTS901001, the reference's "invalid input").
    pub(crate) fn unknown_challenge_type() -> Self {
        Self::new(
            "invalid_request",
            901_001,
            "The challenge_type parameter includes an unsupported challenge type.",
        )
    }

    /// Chosen: AADSTS50034, Entra's "user account does not exist".
    pub(crate) fn user_not_found() -> Self {
        Self::new(
            "user_not_found",
            50_034,
            "The user account does not exist in the directory.",
        )
    }

    pub(crate) fn wrong_password() -> Self {
        Self::new(
            "invalid_grant",
            50_126,
            "Error validating credentials due to invalid username or password.",
        )
    }

    pub(crate) fn bad_token(endpoint: Endpoint) -> Self {
        Self::new(
            endpoint.bad_token_error(),
            55_200,
            "The continuation_token is invalid.",
        )
    }

    /// A live token from another step or flow type.
    pub(crate) fn token_for_other_endpoint() -> Self {
        Self::new(
            "invalid_request",
            901_007,
            "The continuation_token provided is not valid for this endpoint.",
        )
    }

    pub(crate) fn expired_token() -> Self {
        Self::new(
            "expired_token",
            552_003,
            "The continuation_token is expired.",
        )
    }

    /// Wrong one-time code; AADSTS50181 is what an earlier version of the API reference shows.
    pub(crate) fn wrong_code() -> Self {
        Self::new("invalid_grant", 50_181, "Unable to validate the otp.")
            .suberror("invalid_oob_value")
    }

    /// Chosen: AADSTS50076, Entra's "you must use multi-factor authentication".
    pub(crate) fn mfa_required(token: String) -> Self {
        Self::new(
            "invalid_grant",
            50_076,
            "Multi-factor authentication is required. Call /oauth2/v2.0/introspect for the user's methods.",
        )
        .suberror("mfa_required")
        .token(token)
    }

    /// Chosen: AADSTS50079, Entra's "you must enroll in multi-factor authentication".
    pub(crate) fn registration_required(token: String) -> Self {
        Self::new(
            "invalid_grant",
            50_079,
            "The user must register a strong authentication method.",
        )
        .suberror("registration_required")
        .token(token)
    }

    pub(crate) fn user_already_exists() -> Self {
        Self::new(
            "user_already_exists",
            1_003_037,
            "It looks like you may already have an account.",
        )
    }

    /// Password rules; the reference gives AADSTS399246 for `password_too_weak` and it is
    /// reused for the other password suberrors (chosen).
    pub(crate) fn password_rejected(suberror: &'static str) -> Self {
        let message = match suberror {
            "password_too_short" => "New password is fewer than 8 characters.",
            "password_too_long" => "New password is longer than 256 characters.",
            "password_recently_used" => {
                "The new password must not be the same as one recently used."
            }
            "password_banned" => "New password contains a word, phrase, or pattern that is banned.",
            _ => "New password is too weak.",
        };
        Self::new("invalid_grant", 399_246, message).suberror(suberror)
    }

    pub(crate) fn credential_required(token: String) -> Self {
        Self::new("credential_required", 55_103, "Credential required.").token(token)
    }

    pub(crate) fn attributes_required(token: String, names: &[String]) -> Self {
        let list: Vec<Value> = names
            .iter()
            .map(|name| json!({ "name": name, "type": "string", "required": true }))
            .collect();
        let mut fault =
            Self::new("attributes_required", 55_106, "User attributes required.").token(token);
        fault.required_attributes = Some(Value::Array(list));
        fault
    }

    /// `attributes` is not a JSON object (chosen: AADSTS901001).
    pub(crate) fn malformed_attributes() -> Self {
        Self::new(
            "invalid_request",
            901_001,
            "The attributes parameter must be a JSON object.",
        )
    }

    /// An unknown `grant_type` on `/oauth2/v2.0/token` (chosen: AADSTS70003).
    pub(crate) fn unsupported_grant_type() -> Self {
        Self::new(
            "unsupported_grant_type",
            70_003,
            "The app requested an unsupported grant type.",
        )
    }

    /// A `grant_type` the `continue` endpoints do not take; the reference calls this
    /// `invalid_grant` there (code chosen: AADSTS70003).
    pub(crate) fn grant_not_supported_here() -> Self {
        Self::new(
            "invalid_grant",
            70_003,
            "The grant type included in the request isn't valid or supported.",
        )
    }

    /// Chosen: AADSTS70011, Entra's invalid-scope code.
    pub(crate) fn invalid_scope() -> Self {
        Self::new(
            "invalid_scope",
            70_011,
            "The provided value for the input parameter 'scope' is not valid.",
        )
    }

    /// An unknown or foreign refresh token; AADSTS9002313 is what Entra answers for a
    /// malformed grant (chosen).
    pub(crate) fn bad_refresh_token() -> Self {
        Self::new(
            "invalid_grant",
            9_002_313,
            "Invalid request. Request is malformed or invalid.",
        )
    }

    /// An MFA `id` that is not one of the user's methods (chosen: AADSTS901001).
    pub(crate) fn unknown_method() -> Self {
        Self::new(
            "invalid_request",
            901_001,
            "The id parameter does not identify a strong authentication method of the user.",
        )
    }

    /// A `challenge_target` that is not a phone number or email address (AADSTS901001, the
    /// reference's code for a bad challenge target).
    pub(crate) fn bad_challenge_target() -> Self {
        Self::new(
            "invalid_request",
            901_001,
            "The challenge_target parameter is not a valid phone number or email address.",
        )
    }

    /// A `challenge_channel` other than `sms` or `email`, or `challenge_type` without `oob`
    /// on registration (chosen: AADSTS901001).
    pub(crate) fn bad_registration_choice() -> Self {
        Self::new(
            "invalid_request",
            901_001,
            "The challenge_type or challenge_channel parameter is not supported.",
        )
    }

    /// An empty username, or one that is not an email address: Entra's AADSTS90100 with
    /// its text. The SDKs key on it to report an invalid username: iOS
    /// `MSALNativeAuthSignUpResponseValidator` wants `error == "invalid_request"`,
    /// `error_codes[0] == 90100` and the case-sensitive substring "username parameter is
    /// empty or not valid"; Android `SignUpStartApiResponse` wants HTTP 400, the same first
    /// code and the substring in any case; msal-browser `AuthFlowErrorBase.isUserInvalidError`
    /// wants 90100 anywhere in `error_codes` and the case-sensitive substring, on sign-in,
    /// sign-up and reset alike.
    pub(crate) fn invalid_username() -> Self {
        Self::new(
            "invalid_request",
            90_100,
            "username parameter is empty or not valid.",
        )
    }

    /// Unknown tenant segment (chosen: AADSTS90002, Entra's "tenant not found").
    pub(crate) fn unknown_tenant() -> Self {
        Self::new("invalid_tenant", 90_002, "Tenant not found.").status(StatusCode::NOT_FOUND)
    }

    /// Unknown endpoint path (chosen: AADSTS90011).
    pub(crate) fn unknown_endpoint() -> Self {
        Self::new(
            "invalid_request",
            90_011,
            "The requested endpoint does not exist.",
        )
        .status(StatusCode::NOT_FOUND)
    }

    /// Chosen: AADSTS900561, Entra's "endpoint only accepts POST requests".
    pub(crate) fn method_not_allowed(allowed: &str) -> Self {
        Self::new(
            "invalid_request",
            900_561,
            format!("The endpoint only accepts {allowed} requests."),
        )
        .status(StatusCode::METHOD_NOT_ALLOWED)
    }

    /// Chosen: AADSTS90023, a generic invalid-request code.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            "invalid_request",
            90_023,
            format!("The request body exceeds {limit} bytes."),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    }

    /// Chosen: AADSTS90023.
    pub(crate) fn unreadable_body() -> Self {
        Self::new(
            "invalid_request",
            90_023,
            "The request body could not be read.",
        )
    }

    /// The tenant's user store is full (chosen: AADSTS90033, "a transient error").
    pub(crate) fn directory_full() -> Self {
        Self::new(
            "temporarily_unavailable",
            90_033,
            "The server is temporarily unable to create users.",
        )
        .status(StatusCode::TOO_MANY_REQUESTS)
    }

    pub(crate) fn into_response(self, correlation_id: Option<&str>) -> Response<Full<Bytes>> {
        let mut body = ErrorBody::new(self.error, self.code, &self.message, correlation_id);
        if let Some(suberror) = self.suberror {
            body = body.with_suberror(suberror);
        }
        if let Some(token) = self.continuation_token {
            body = body.with_continuation_token(token);
        }
        let Some(attributes) = self.required_attributes else {
            return body.into_response(self.status);
        };
        // `required_attributes` is the one field ErrorBody does not carry.
        let mut value = serde_json::to_value(&body).unwrap_or_default();
        if let Value::Object(map) = &mut value {
            map.insert("required_attributes".to_owned(), attributes);
        }
        json_response(
            self.status,
            Bytes::from(value.to_string()),
            Some(&body.trace_id),
        )
    }
}

pub(crate) fn is_guid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

/// Loose address check: one `@`, something before it, a dot after it, no spaces.
pub(crate) fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && text.len() <= 254
}

/// E.164 from what a user types: `+`, then 8 to 15 digits once spaces, dashes, dots and
/// parentheses are dropped (reference §5.4: the format is unspecified, normalise).
pub(crate) fn normalize_phone(text: &str) -> Option<String> {
    let rest = text.trim().strip_prefix('+')?;
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    let valid = (8..=15).contains(&digits.len()) && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

/// `c***r@co**o.com`: enough for the user to recognise the address.
pub(crate) fn mask_email(address: &str) -> String {
    let Some((local, domain)) = address.split_once('@') else {
        return "***".to_owned();
    };
    let (label, tld) = domain.split_once('.').unwrap_or((domain, ""));
    let masked_local = match (local.chars().next(), local.chars().last()) {
        (Some(first), Some(last)) if local.chars().count() > 1 => format!("{first}***{last}"),
        _ => "***".to_owned(),
    };
    let label_chars: Vec<char> = label.chars().collect();
    let masked_label = if label_chars.len() > 3 {
        let head: String = label_chars[..2].iter().collect();
        format!("{head}**{}", label_chars[label_chars.len() - 1])
    } else {
        "**".to_owned()
    };
    if tld.is_empty() {
        format!("{masked_local}@{masked_label}")
    } else {
        format!("{masked_local}@{masked_label}.{tld}")
    }
}

/// `+44********56` for `+447400123456`: the shape of the reference's `+1********6`.
pub(crate) fn mask_phone(e164: &str) -> String {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return "+********".to_owned();
    }
    let head: String = digits[..2].iter().collect();
    let tail: String = digits[digits.len() - 2..].iter().collect();
    format!("+{head}{}{tail}", "*".repeat(digits.len() - 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize_to_e164() {
        let cases = [
            ("+447400123456", Some("+447400123456")),
            ("+44 7400 123456", Some("+447400123456")),
            ("+1 (206) 555-0100", Some("+12065550100")),
            ("+1 1234567890", Some("+11234567890")),
            ("447400123456", None),
            ("+44abc", None),
            ("+0123456789", None),
            ("+1234", None),
            ("+1234567890123456", None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_phone(input).as_deref(), expected, "{input}");
        }
    }

    #[test]
    fn masks_hide_the_middle() {
        assert_eq!(mask_email("caseyjensen@contoso.com"), "c***n@co**o.com");
        assert_eq!(mask_email("a@b.io"), "***@**.io");
        assert_eq!(mask_phone("+447400123456"), "+44********56");
    }

    #[test]
    fn challenge_types_need_redirect() {
        let ok = ChallengeTypes::parse("oob password redirect").expect("valid");
        assert!(ok.oob && ok.password);
        assert_eq!(
            ChallengeTypes::parse("password").err().map(|f| f.code),
            Some(901_007)
        );
        assert_eq!(
            ChallengeTypes::parse("otp redirect").err().map(|f| f.code),
            Some(901_001)
        );
    }

    #[test]
    fn body_parameters_win_over_query() {
        let params = Params::parse(Some("a=query&b=2"), b"a=body&c=+x+");
        assert_eq!(params.get("a"), Some("body"));
        assert_eq!(params.get("b"), Some("2"));
        assert_eq!(params.get("c"), Some("x"));
        assert_eq!(params.get("d"), None);
        let params = Params::parse(None, b"password=+pass+word+&empty=");
        assert_eq!(params.secret("password"), Some(" pass word "));
        assert_eq!(params.secret("empty"), None);
    }

    #[test]
    fn start_usernames_are_missing_invalid_or_emails() {
        let code = |body: &[u8]| Params::parse(None, body).username().err().map(|f| f.code);
        assert_eq!(code(b"challenge_type=oob"), Some(900_144));
        for body in [
            &b"username="[..],
            b"username=+++",
            b"username=nobody",
            b"username=a%40contoso",
        ] {
            assert_eq!(
                code(body),
                Some(90_100),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let params = Params::parse(None, b"username=+Sam%40Contoso.com+");
        assert_eq!(params.username().ok(), Some("Sam@Contoso.com"));
        let fault = Fault::invalid_username();
        assert_eq!(
            (fault.error, fault.status),
            ("invalid_request", StatusCode::BAD_REQUEST)
        );
        assert!(fault
            .message
            .contains("username parameter is empty or not valid"));
    }

    #[tokio::test]
    async fn every_redirect_reason_is_sent_and_distinct() {
        use http_body_util::BodyExt as _;
        let reasons = [
            RedirectReason::UserChallengeTypeUnsupported,
            RedirectReason::SignUpNeedsOob,
            RedirectReason::SignUpNeedsPassword,
            RedirectReason::ResetNeedsOob,
            RedirectReason::ResetWithoutPassword,
            RedirectReason::MissingMfaCapability,
            RedirectReason::MissingRegistrationCapability,
        ];
        let mut seen = std::collections::HashSet::new();
        for reason in reasons {
            let response = Reply::Redirect { reason }.into_response();
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(
                body,
                json!({ "challenge_type": "redirect", "redirect_reason": reason.as_str() })
            );
            assert!(seen.insert(reason.as_str()), "{reason:?} repeats a text");
        }
    }

    #[test]
    fn emails() {
        assert!(is_email("a@contoso.com"));
        assert!(!is_email("a@contoso"));
        assert!(!is_email("@contoso.com"));
        assert!(!is_email("a b@contoso.com"));
    }
}
