//! `[admin.api]`: whether the admin API is on, and the bearer tokens that may call it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::{Checker, Secret};

/// `[admin.api]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminApiConfig {
    /// Serve `/admin/v1/` on the admin port. Off: the admin port is `/livez`, `/readyz`
    /// and `/metrics` only.
    pub enabled: bool,
    /// Who may call it: `{ name = "oncall", token_file = "/run/secrets/admin-token" }`
    /// (or `token = "..."`). The name is what audit lines say made a change.
    pub tokens: Vec<AdminTokenConfig>,
}

/// One bearer token of the admin API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminTokenConfig {
    pub name: String,
    /// The token (secret; or `token_file`). At least 24 characters.
    pub token: Secret,
    pub token_file: Option<PathBuf>,
}

/// The admin API's settings, validated.
#[derive(Clone, Default)]
pub struct AdminApi {
    pub enabled: bool,
    /// Each token's name and the SHA-256 of the token.
    tokens: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AdminApi")
            .field("enabled", &self.enabled)
            .field("tokens", &names)
            .finish()
    }
}

/// Shortest token accepted: guessing must be hopeless.
const MIN_TOKEN_CHARS: usize = 24;

impl AdminApiConfig {
    pub(crate) fn build(&self, check: &mut Checker) -> Option<AdminApi> {
        let mut tokens = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let mut ok = true;
        for (i, t) in self.tokens.iter().enumerate() {
            let key = |field: &str| format!("admin.api.tokens[{i}].{field}");
            if let Some(message) = crate::defense::name_problem(&t.name, &mut names) {
                check.problem(&key("name"), message.replace("rule", "token"));
                ok = false;
            }
            let secret = match (&t.token_file, t.token.is_empty()) {
                (Some(_), false) => {
                    check.problem(
                        &key("token_file"),
                        "set either token or token_file, not both",
                    );
                    ok = false;
                    continue;
                }
                (Some(path), true) => match std::fs::read_to_string(path) {
                    Ok(text) => text.trim_end_matches(['\r', '\n']).to_owned(),
                    Err(e) => {
                        check.problem(
                            &key("token_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        ok = false;
                        continue;
                    }
                },
                (None, _) => t.token.expose().to_owned(),
            };
            if secret.chars().count() < MIN_TOKEN_CHARS || secret.chars().any(char::is_whitespace) {
                check.problem(
                    &key("token"),
                    "at least 24 characters and no spaces, e.g. the output of `openssl rand -hex 32`",
                );
                ok = false;
                continue;
            }
            tokens.push((t.name.clone(), Sha256::digest(secret.as_bytes()).into()));
        }
        if self.enabled && self.tokens.is_empty() {
            check.problem(
                "admin.api.tokens",
                "the admin API is enabled but no token may call it: add one",
            );
            ok = false;
        }
        ok.then_some(AdminApi {
            enabled: self.enabled,
            tokens,
        })
    }
}

impl AdminApi {
    /// The name of the token `authorization` carries, when it is one of ours. Every
    /// configured token is compared, in constant time.
    pub(crate) fn caller(&self, authorization: Option<&[u8]>) -> Option<&str> {
        let given = authorization?;
        let token = given
            .strip_prefix(b"Bearer ")
            .or_else(|| given.strip_prefix(b"bearer "))?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for (name, want) in &self.tokens {
            if bool::from(want.ct_eq(&digest)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(tokens: &[(&str, &str)]) -> AdminApi {
        let config = AdminApiConfig {
            enabled: true,
            tokens: tokens
                .iter()
                .map(|(n, t)| AdminTokenConfig {
                    name: (*n).into(),
                    token: Secret::new(*t),
                    token_file: None,
                })
                .collect(),
        };
        let mut check = Checker::default();
        let api = config.build(&mut check);
        assert!(check.problems().is_empty(), "{:?}", check.problems());
        api.unwrap()
    }

    #[test]
    fn only_a_configured_token_names_its_caller() {
        let api = api(&[
            ("oncall", "0123456789abcdef0123456789abcdef"),
            ("support", "fedcba9876543210fedcba9876543210"),
        ]);
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        assert_eq!(
            api.caller(Some(&bearer("fedcba9876543210fedcba9876543210"))),
            Some("support")
        );
        assert_eq!(
            api.caller(Some(&bearer("0123456789abcdef0123456789abcdef"))),
            Some("oncall")
        );
        assert_eq!(
            api.caller(Some(&bearer("0123456789abcdef0123456789abcde"))),
            None
        );
        assert_eq!(api.caller(Some(b"0123456789abcdef0123456789abcdef")), None);
        assert_eq!(api.caller(Some(b"Bearer ")), None);
        assert_eq!(api.caller(None), None);
    }

    #[test]
    fn bad_token_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = AdminApiConfig {
            enabled: true,
            tokens: vec![
                AdminTokenConfig {
                    name: "short".into(),
                    token: Secret::new("abc"),
                    token_file: None,
                },
                AdminTokenConfig {
                    name: "both".into(),
                    token: Secret::new("0123456789abcdef0123456789abcdef"),
                    token_file: Some(dir.path().join("t")),
                },
                AdminTokenConfig {
                    name: "gone".into(),
                    token: Secret::default(),
                    token_file: Some(dir.path().join("missing")),
                },
                AdminTokenConfig {
                    name: "short".into(),
                    token: Secret::new("0123456789abcdef0123456789abcdef"),
                    token_file: None,
                },
            ],
        };
        let mut check = Checker::default();
        assert!(config.build(&mut check).is_none());
        let keys: Vec<&str> = check.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "admin.api.tokens[0].token",
                "admin.api.tokens[1].token_file",
                "admin.api.tokens[2].token_file",
                "admin.api.tokens[3].name",
            ]
        );
        let none = AdminApiConfig {
            enabled: true,
            tokens: Vec::new(),
        };
        let mut check = Checker::default();
        assert!(none.build(&mut check).is_none());
        assert_eq!(check.problems()[0].key, "admin.api.tokens");
    }
}
