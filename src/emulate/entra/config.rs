//! The emulated tenant as data: its two path names, the apps it accepts, its users and its
//! sign-up policy. Loaded from a users file (format in the parent module's docs) or built in
//! ([`EntraConfig::demo`]).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::wire::{is_email, is_guid, normalize_phone};
use super::EmulatorError;

/// Tenant id of the built-in demo tenant `contoso`.
pub const DEMO_TENANT_ID: &str = "b6a1c2d3-0e4f-4a5b-8c6d-7e8f9a0b1c2d";
/// A client id to configure in demo apps. The demo tenant accepts any well-formed GUID.
pub const DEMO_CLIENT_ID: &str = "00000000-0000-4000-8000-000000000001";
/// Password of every demo user that has one.
pub const DEMO_PASSWORD: &str = "Passw0rd!";

/// One emulated External ID tenant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EntraConfig {
    /// Primary domain prefix: `contoso` serves `/contoso.onmicrosoft.com/...`.
    pub tenant_name: String,
    /// Tenant id GUID, the other accepted tenant path segment and the `tid` claim.
    pub tenant_id: String,
    /// Accepted `client_id` values; empty accepts any well-formed GUID.
    pub client_ids: Vec<String>,
    /// Users that exist before any sign-up.
    pub users: Vec<UserSpec>,
    /// Lifetime of every continuation token (`"10m"`, `"90s"` in files).
    #[serde(with = "humantime_serde")]
    pub continuation_token_ttl: Duration,
    /// Digits in every one-time code; reported as `code_length`.
    pub code_length: usize,
    /// What sign-up asks of new users.
    pub signup: SignUpPolicy,
}

/// Tenant-wide sign-up rules (the user flow's settings in the real admin center).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SignUpPolicy {
    /// Attribute names a sign-up must supply, e.g. `displayName`; a sign-up without them is
    /// answered `attributes_required`.
    pub required_attributes: Vec<String>,
    /// Whether users created by sign-up need a strong-auth method: their first sign-in then
    /// gets `registration_required` (and registering the email verified at sign-up is
    /// `preverified`).
    pub mfa_required: bool,
}

/// A user account.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Sign-in name, an email address; matched case-insensitively.
    pub username: String,
    /// Password of an email+password user; absent makes an email-OTP user.
    #[serde(default)]
    pub password: Option<String>,
    /// The `name` claim; defaults to the username's local part.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Demand a second factor even with no method registered, which sends the user through
    /// registration (`registration_required`). A user with methods always gets MFA.
    #[serde(default)]
    pub mfa_required: bool,
    /// Registered strong-auth methods, in the order `/oauth2/v2.0/introspect` lists them.
    #[serde(default)]
    pub mfa_methods: Vec<MfaMethodSpec>,
}

/// A strong-authentication method: where MFA codes go.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MfaMethodSpec {
    pub channel: Channel,
    /// E.164 phone number for `sms`, an address for `email`.
    pub target: String,
}

/// How a one-time code travels.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

// Passwords stay out of debug output, which is what ends up in logs.
impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSpec")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("display_name", &self.display_name)
            .field("mfa_required", &self.mfa_required)
            .field("mfa_methods", &self.mfa_methods)
            .finish()
    }
}

impl Default for EntraConfig {
    /// The demo tenant with no users.
    fn default() -> Self {
        Self {
            tenant_name: "contoso".to_owned(),
            tenant_id: DEMO_TENANT_ID.to_owned(),
            client_ids: Vec::new(),
            users: Vec::new(),
            continuation_token_ttl: Duration::from_secs(600),
            code_length: 8,
            signup: SignUpPolicy::default(),
        }
    }
}

impl EntraConfig {
    /// Tenant `contoso` / [`DEMO_TENANT_ID`], any GUID as client id, and one user per flow
    /// the gateway cares about (all passwords [`DEMO_PASSWORD`]):
    ///
    /// | user | first factor | MFA |
    /// |---|---|---|
    /// | `password@contoso.com` | password | none |
    /// | `sms@contoso.com` | password | SMS to `+447400123456` |
    /// | `email-mfa@contoso.com` | password | email to itself |
    /// | `both@contoso.com` | password | email to itself, SMS to `+447400123457` |
    /// | `newphone@contoso.com` | password | required, nothing registered (JIT registration) |
    /// | `otp@contoso.com` | email OTP | none |
    pub fn demo() -> Self {
        let password_user = |username: &str, methods: Vec<MfaMethodSpec>| UserSpec {
            username: username.to_owned(),
            password: Some(DEMO_PASSWORD.to_owned()),
            display_name: None,
            mfa_required: false,
            mfa_methods: methods,
        };
        let sms = |target: &str| MfaMethodSpec {
            channel: Channel::Sms,
            target: target.to_owned(),
        };
        let email = |target: &str| MfaMethodSpec {
            channel: Channel::Email,
            target: target.to_owned(),
        };
        let users = vec![
            password_user("password@contoso.com", vec![]),
            password_user("sms@contoso.com", vec![sms("+447400123456")]),
            password_user(
                "email-mfa@contoso.com",
                vec![email("email-mfa@contoso.com")],
            ),
            password_user(
                "both@contoso.com",
                vec![email("both@contoso.com"), sms("+447400123457")],
            ),
            UserSpec {
                mfa_required: true,
                ..password_user("newphone@contoso.com", vec![])
            },
            UserSpec {
                password: None,
                ..password_user("otp@contoso.com", vec![])
            },
        ];
        Self {
            users,
            ..Self::default()
        }
    }

    /// Reads a users file: TOML, or JSON when the name ends in `.json`. Fields left out take
    /// the demo tenant's values (with no users).
    pub fn from_users_file(path: &Path) -> Result<Self, EmulatorError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| EmulatorError::UsersFileUnreadable {
                path: path.to_owned(),
                source,
            })?;
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        let parsed = if is_json {
            serde_json::from_str::<Self>(&text).map_err(|e| e.to_string())
        } else {
            config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                .build()
                .and_then(|c| c.try_deserialize::<Self>())
                .map_err(|e| e.to_string())
        };
        let config = parsed.map_err(|message| EmulatorError::UsersFileInvalid {
            path: path.to_owned(),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem with this configuration at once.
    pub(crate) fn validate(&self) -> Result<(), EmulatorError> {
        let mut problems = Vec::new();
        let name_ok = !self.tenant_name.is_empty()
            && self
                .tenant_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok {
            problems.push(format!(
                "tenant_name {:?} must be letters, digits and '-' (the part before .onmicrosoft.com)",
                self.tenant_name
            ));
        }
        if !is_guid(&self.tenant_id) {
            problems.push(format!("tenant_id {:?} is not a GUID", self.tenant_id));
        }
        for id in &self.client_ids {
            if !is_guid(id) {
                problems.push(format!("client id {id:?} is not a GUID"));
            }
        }
        if !(4..=10).contains(&self.code_length) {
            problems.push(format!(
                "code_length {} is outside 4..=10",
                self.code_length
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for user in &self.users {
            let name = &user.username;
            if !is_email(name) {
                problems.push(format!("username {name:?} is not an email address"));
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                problems.push(format!("username {name:?} appears more than once"));
            }
            for method in &user.mfa_methods {
                let ok = match method.channel {
                    Channel::Sms => normalize_phone(&method.target).is_some(),
                    Channel::Email => is_email(&method.target),
                };
                if !ok {
                    problems.push(format!(
                        "user {name:?}: {} target {:?} is not valid",
                        method.channel.as_str(),
                        method.target
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EmulatorError::InvalidConfig(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_valid() {
        EntraConfig::demo()
            .validate()
            .expect("demo config is valid");
    }

    #[test]
    fn validate_reports_every_problem() {
        let config = EntraConfig {
            tenant_name: "con toso".into(),
            tenant_id: "nope".into(),
            code_length: 2,
            users: vec![UserSpec {
                username: "a@b.com".into(),
                password: None,
                display_name: None,
                mfa_required: false,
                mfa_methods: vec![MfaMethodSpec {
                    channel: Channel::Sms,
                    target: "call me".into(),
                }],
            }],
            ..EntraConfig::demo()
        };
        let Err(EmulatorError::InvalidConfig(problems)) = config.validate() else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn the_documented_users_file_loads() {
        let docs = include_str!("mod.rs");
        let start = docs.find("//! ```toml\n").expect("a toml example") + "//! ```toml\n".len();
        let end = start + docs[start..].find("//! ```").expect("its end");
        let example: String = docs[start..end]
            .lines()
            .map(|line| {
                line.strip_prefix("//!")
                    .unwrap_or(line)
                    .trim_start_matches(' ')
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("users.toml");
        std::fs::write(&path, example).expect("write");
        let config = EntraConfig::from_users_file(&path).expect("documented example is valid");
        assert_eq!(config.users.len(), 2);
        assert_eq!(config.signup.required_attributes, ["displayName"]);
        assert!(config.users[1].mfa_required);
    }

    #[test]
    fn debug_output_hides_passwords() {
        let text = format!("{:?}", EntraConfig::demo());
        assert!(!text.contains(DEMO_PASSWORD));
    }
}
