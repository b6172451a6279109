//! `otpgate admin ...`: the admin API from a terminal. The token comes from
//! `--token-file` or `OTPGATE_ADMIN_TOKEN`, never from the command line (where `ps` and
//! shell history would keep it); a value given as `-` is read from standard input, so a
//! number or username need not be in the history either.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};

/// What to ask the admin API.
#[derive(Debug, Clone)]
pub enum AdminVerb {
    /// `GET /admin/v1/lists[/{list}]`.
    Lists { list: Option<String> },
    /// `POST /admin/v1/lists/{list}`.
    Add {
        list: String,
        kind: String,
        value: String,
        note: Option<String>,
        expires_in: Option<String>,
        expires_at: Option<String>,
    },
    /// `DELETE /admin/v1/lists/{list}`, by value or by id.
    Remove {
        list: String,
        kind: String,
        value: Option<String>,
        id: Option<String>,
    },
    /// `GET /admin/v1/why?{phone|username|flow}=...`.
    Why { subject: String, value: String },
    /// `GET /admin/v1/adaptive/blocks`.
    Blocks,
    /// `DELETE /admin/v1/adaptive/blocks`.
    Lift { rule: String, key: String },
}

/// Where the admin API is, and the token's file.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `http://127.0.0.1:9090`: the admin listener.
    pub url: String,
    pub token_file: Option<PathBuf>,
}

fn token(target: &AdminTarget) -> Result<String, String> {
    match &target.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        None => std::env::var("OTPGATE_ADMIN_TOKEN")
            .map_err(|_| "no token: give --token-file FILE or set OTPGATE_ADMIN_TOKEN".to_owned()),
    }
}

/// `-`: the value from standard input (its first line).
fn value(v: String) -> Result<String, String> {
    if v != "-" {
        return Ok(v);
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Ask, print the answer (pretty JSON) on stdout, or its error on stderr; exit 0 for a
/// 2xx answer, 1 for an error answer, 2 when the API could not be asked.
pub fn admin(target: &AdminTarget, verb: AdminVerb) -> ExitCode {
    match ask(target, verb) {
        Ok((status, body)) => {
            let text = serde_json::to_string_pretty(&body).unwrap_or_default();
            if (200..300).contains(&status) {
                println!("{text}");
                ExitCode::SUCCESS
            } else {
                eprintln!("otpgate admin: {status}: {text}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("otpgate admin: {e}");
            ExitCode::from(2)
        }
    }
}

fn ask(target: &AdminTarget, verb: AdminVerb) -> Result<(u16, Value), String> {
    let token = token(target)?;
    let base = format!("{}/admin/v1", target.url.trim_end_matches('/'));
    let (method, url, body) = match verb {
        AdminVerb::Lists { list } => (
            reqwest::Method::GET,
            match list {
                Some(l) => format!("{base}/lists/{l}"),
                None => format!("{base}/lists"),
            },
            None,
        ),
        AdminVerb::Add {
            list,
            kind,
            value: v,
            note,
            expires_in,
            expires_at,
        } => {
            let mut body = json!({ "kind": kind, "value": value(v)? });
            for (key, given) in [
                ("note", note),
                ("expires_in", expires_in),
                ("expires_at", expires_at),
            ] {
                if let Some(given) = given {
                    body[key] = given.into();
                }
            }
            (
                reqwest::Method::POST,
                format!("{base}/lists/{list}"),
                Some(body),
            )
        }
        AdminVerb::Remove {
            list,
            kind,
            value: v,
            id,
        } => {
            let body = match (v, id) {
                (Some(v), None) => json!({ "kind": kind, "value": value(v)? }),
                (None, Some(id)) => json!({ "kind": kind, "id": id }),
                _ => return Err("give the entry's value or --id, not both".into()),
            };
            (
                reqwest::Method::DELETE,
                format!("{base}/lists/{list}"),
                Some(body),
            )
        }
        AdminVerb::Blocks => (
            reqwest::Method::GET,
            format!("{base}/adaptive/blocks"),
            None,
        ),
        AdminVerb::Lift { rule, key } => (
            reqwest::Method::DELETE,
            format!("{base}/adaptive/blocks"),
            Some(json!({ "rule": rule, "key": key })),
        ),
        AdminVerb::Why { subject, value: v } => {
            let v = value(v)?;
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair(&subject, &v)
                .finish();
            (reqwest::Method::GET, format!("{base}/why?{query}"), None)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async move {
        let tls = crate::tls::webpki_client_config().map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.request(method, &url).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach {base}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| json!({ "error": "not_json", "detail": String::from_utf8_lossy(&bytes) }),
        );
        Ok((status, body))
    })
}
