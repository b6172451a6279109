//! Security tokens: the `/oauth2/v2.0/token` success body. ID and access tokens are real
//! JWTs (HS256 with a per-process key) because MSAL decodes them to build its account;
//! nothing verifies the signature against published keys.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::request::Cx;
use super::state::User;
use super::wire::{Fault, Reply};

/// Access and ID token lifetime; the reference's example says 4141 s, any value is fine.
const TOKEN_LIFETIME_SECS: u64 = 3600;

/// The requested `scope` list, deduplicated in request order.
pub(crate) struct Scopes(Vec<String>);

impl Scopes {
    pub(crate) fn parse(raw: &str) -> Result<Self, Fault> {
        let mut scopes: Vec<String> = Vec::new();
        for word in raw.split_ascii_whitespace() {
            let printable = word
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if !printable {
                return Err(Fault::invalid_scope());
            }
            if !scopes.iter().any(|s| s == word) {
                scopes.push(word.to_owned());
            }
        }
        if scopes.is_empty() {
            return Err(Fault::invalid_scope());
        }
        Ok(Self(scopes))
    }

    fn has(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s == scope)
    }

    fn joined(&self) -> String {
        self.0.join(" ")
    }
}

/// The token response for `user`; refresh token only with `offline_access`, ID token only
/// with `openid` (reference §5.1).
pub(crate) fn issue(cx: &mut Cx<'_>, user: &User, scopes: &Scopes) -> Reply {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let tenant = cx.tenant;
    let mut claims = json!({
        "aud": cx.client_id,
        "iss": tenant.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + TOKEN_LIFETIME_SECS,
        "oid": user.object_id,
        "sub": pairwise_subject(&user.object_id, &cx.client_id),
        "tid": tenant.id,
        "preferred_username": user.username,
        "name": user.display_name,
        "ver": "2.0",
    });
    let mut access_claims = claims.clone();
    if let Value::Object(map) = &mut access_claims {
        map.insert("azp".to_owned(), json!(cx.client_id));
        let granted: Vec<&str> = scopes
            .0
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "offline_access")
            .collect();
        map.insert("scp".to_owned(), json!(granted.join(" ")));
        map.insert(
            "uti".to_owned(),
            json!(uuid::Uuid::new_v4().simple().to_string()),
        );
    }
    if let (Some(nonce), Value::Object(map)) = (cx.params.get("nonce"), &mut claims) {
        map.insert("nonce".to_owned(), json!(nonce));
    }

    let mut body = json!({
        "token_type": "Bearer",
        "scope": scopes.joined(),
        "expires_in": TOKEN_LIFETIME_SECS,
        "ext_expires_in": TOKEN_LIFETIME_SECS,
        "access_token": sign(&tenant.signing_key, &access_claims),
    });
    let Value::Object(map) = &mut body else {
        return Reply::Json(body);
    };
    if scopes.has("openid") {
        map.insert(
            "id_token".to_owned(),
            json!(sign(&tenant.signing_key, &claims)),
        );
    }
    if scopes.has("offline_access") {
        let refresh = cx
            .state
            .refresh
            .issue(&user.username, &cx.client_id, cx.now);
        map.insert("refresh_token".to_owned(), json!(refresh));
    }
    if cx.params.get("client_info") == Some("1") {
        let info = json!({ "uid": user.object_id, "utid": tenant.id });
        map.insert(
            "client_info".to_owned(),
            json!(URL_SAFE_NO_PAD.encode(info.to_string())),
        );
    }
    Reply::Json(body)
}

/// Entra's `sub` is per user and app, so two apps cannot correlate a user by it.
fn pairwise_subject(object_id: &str, client_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{object_id}/{client_id}")))
}

fn sign(key: &[u8], claims: &Value) -> String {
    let header = json!({ "typ": "JWT", "alg": "HS256", "kid": "otpgate-entra-emulator" });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => Vec::new(),
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_has_three_parts_and_a_valid_signature() {
        let key = [7u8; 32];
        let token = sign(&key, &json!({ "oid": "x" }));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(payload["oid"], "x");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).expect("b64"))
            .expect("signature verifies");
    }

    #[test]
    fn scopes_dedupe_and_reject_junk() {
        let scopes = Scopes::parse("openid  profile openid offline_access").expect("valid");
        assert_eq!(scopes.joined(), "openid profile offline_access");
        assert!(Scopes::parse("openid \"x").is_err());
    }
}
