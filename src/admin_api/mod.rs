//! The admin API, on the admin port under `/admin/v1/`, off by default: the safe and
//! block lists at runtime, and "why": the recent decisions for a phone number, a username
//! or a flow.
//!
//! Every request carries `Authorization: Bearer <token>`, one of `[admin.api] tokens`
//! (compared in constant time, as SHA-256 digests so a token's length does not show
//! either); without one, or with a wrong one, the answer is 401. JSON in, JSON out; an
//! error is `{"error": "<code>", "detail": "<text>"}`. No answer holds a raw number,
//! username or token: entries are keyed hashes (see [`crate::defense::lists`]).

pub(crate) mod settings;
pub(crate) mod why;

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::defense::adaptive;
use crate::defense::lists::{
    self, canonical, Change, EntryInfo, Kind, ListName, ListSet, KEEP, LOG_KEY, MAX_LOG_BYTES,
    MAX_NOTE_CHARS, VERSION_KEY,
};
use crate::gateway::Gateway;
use crate::store::{KeyHasher, Store};
use why::{recent, Subject};

/// An answer that ends a request early (boxed: a `Response` is large to return).
type Refusal = Box<Response<Full<Bytes>>>;

/// The longest request body read.
const MAX_BODY: usize = 16 * 1024;

/// An answer of the API.
fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = reply(status, &json!({ "error": code, "detail": detail.into() }));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"otpgate-admin\""),
        );
    }
    resp
}

/// Answer one request under `/admin/v1/`.
/// `store_down`: the shared store is unreachable (changes are refused).
pub(crate) async fn handle(
    req: Request<hyper::body::Incoming>,
    gateway: &Gateway,
    store_down: bool,
) -> Response<Full<Bytes>> {
    let api = &gateway.settings().admin_api;
    if !api.enabled {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin API is off ([admin.api] enabled = false)",
        );
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let Some(caller) = api.caller(authorization).map(str::to_owned) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <token>, one of [admin.api] tokens",
        );
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is over 16 KiB or could not be read",
            )
        }
    };
    let api = Api {
        store: gateway.store().as_ref(),
        keys: gateway.keys(),
        gateway,
        caller: &caller,
    };
    let segments: Vec<&str> = path
        .trim_start_matches("/admin/v1/")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["lists"]) => api.list(None).await,
        (&Method::GET, ["lists", list]) => match ListName::parse(list) {
            Some(list) => api.list(Some(list)).await,
            None => unknown_list(list),
        },
        (&Method::POST, ["lists", list]) | (&Method::DELETE, ["lists", list]) if store_down => {
            let _ = list;
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the shared store is unreachable: a change now would reach this replica only",
            )
        }
        (&Method::POST, ["lists", list]) => match ListName::parse(list) {
            Some(list) => api.add(list, &body).await,
            None => unknown_list(list),
        },
        (&Method::DELETE, ["lists", list]) => match ListName::parse(list) {
            Some(list) => api.remove(list, &body).await,
            None => unknown_list(list),
        },
        (&Method::GET, ["why"]) => api.why(&query).await,
        (&Method::GET, ["adaptive", "blocks"]) => api.blocks().await,
        (&Method::DELETE, ["adaptive", "blocks"]) if store_down => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the shared store is unreachable: a lift now would reach this replica only",
        ),
        (&Method::DELETE, ["adaptive", "blocks"]) => api.lift(&body).await,
        (_, ["lists"] | ["lists", _] | ["why"] | ["adaptive", "blocks"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not a verb of {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint (see README: Admin API)",
        ),
    }
}

fn unknown_list(list: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        "unknown_list",
        format!(
            "no list {:?}: safe or block",
            list.chars().take(32).collect::<String>()
        ),
    )
}

struct Api<'a> {
    store: &'a dyn Store,
    keys: &'a KeyHasher,
    gateway: &'a Gateway,
    caller: &'a str,
}

/// A change asked for: `kind` and `value` (or, to remove, `id`), a note and an expiry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    kind: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    note: Option<String>,
    /// `"24h"`, `"7d"`: the entry lifts itself that long from now.
    #[serde(default)]
    expires_in: Option<String>,
    /// RFC 3339 time at which the entry lifts itself.
    #[serde(default)]
    expires_at: Option<String>,
}

/// A runtime entry as answered: what is kept, plus where it comes from.
fn shown(entry: &EntryInfo, source: &str) -> Value {
    let mut v = serde_json::to_value(entry).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("source".into(), source.into());
        if entry.at > 0 {
            map.insert("added_at".into(), rfc3339(entry.at).into());
        }
        if let Some(e) = entry.expires {
            map.insert("expires_at".into(), rfc3339(e).into());
        }
    }
    v
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

impl Api<'_> {
    /// The runtime entries as the store holds them now.
    async fn runtime(&self) -> Result<ListSet, Response<Full<Bytes>>> {
        match self.store.get(LOG_KEY).await {
            Ok(Some(text)) => Ok(ListSet::from_log(&String::from_utf8_lossy(&text))),
            Ok(None) => Ok(ListSet::default()),
            Err(e) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store did not answer: {e}"),
            )),
        }
    }

    fn config(&self) -> ListSet {
        ListSet::from_config(&self.gateway.settings().lists, self.keys)
    }

    async fn list(&self, only: Option<ListName>) -> Response<Full<Bytes>> {
        let runtime = match self.runtime().await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let now = lists::unix_now();
        let config = self.config();
        let entries: Vec<Value> = config
            .live(now)
            .into_iter()
            .map(|e| shown(e, "config"))
            .chain(runtime.live(now).into_iter().map(|e| shown(e, "runtime")))
            .filter(|e| only.is_none_or(|l| e["list"] == l.as_str()))
            .collect();
        reply(StatusCode::OK, &json!({ "entries": entries }))
    }

    /// The canonical value's hash and shape, from `value` or `id`.
    fn target(&self, kind: Kind, req: &ChangeRequest) -> Result<(String, Option<String>), Refusal> {
        let refused = |resp| Err(Box::new(resp));
        match (&req.value, &req.id) {
            (Some(value), None) => match canonical(kind, value) {
                Ok(c) => Ok((self.keys.hash(&c.text), c.shape)),
                Err(why) => refused(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_value",
                    format!("{}: {why}", kind.as_str()),
                )),
            },
            (None, Some(id)) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok((id.to_ascii_lowercase(), None))
            }
            (None, Some(_)) => refused(error(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                "an id is the 64 hex digits a listing shows",
            )),
            _ => refused(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give either value or id",
            )),
        }
    }

    fn parse_change(&self, body: &[u8]) -> Result<(ChangeRequest, Kind), Refusal> {
        let req: ChangeRequest = serde_json::from_slice(body).map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                // Where, not what: serde's own message can quote a value.
                format!(
                    "the body is not a change ({:?} error at line {} column {}); expected \
                     {{\"kind\": ..., \"value\": ...}}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            ))
        })?;
        let kind = Kind::parse(&req.kind).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "unknown_kind",
                "kind is number, prefix, user, network or client_id",
            ))
        })?;
        Ok((req, kind))
    }

    async fn add(&self, list: ListName, body: &[u8]) -> Response<Full<Bytes>> {
        let (req, kind) = match self.parse_change(body) {
            Ok(r) => r,
            Err(resp) => return *resp,
        };
        if req.id.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "an entry is added by its value",
            );
        }
        let (id, shape) = match self.target(kind, &req) {
            Ok(t) => t,
            Err(resp) => return *resp,
        };
        let note = req.note.unwrap_or_default();
        if note.chars().count() > MAX_NOTE_CHARS || note.chars().any(char::is_control) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_note",
                "a note is one line of at most 200 characters",
            );
        }
        let now = lists::unix_now();
        let expires = match (req.expires_in, req.expires_at) {
            (Some(_), Some(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_expiry",
                    "give expires_in or expires_at, not both",
                )
            }
            (Some(d), None) => match humantime::parse_duration(&d) {
                Ok(d) if !d.is_zero() => Some(now + d.as_secs().max(1)),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_expiry",
                        "expires_in is a duration such as 30m, 24h or 7d",
                    )
                }
            },
            (None, Some(t)) => match humantime::parse_rfc3339_weak(&t) {
                Ok(t) => match t.duration_since(std::time::UNIX_EPOCH) {
                    Ok(d) if d.as_secs() > now => Some(d.as_secs()),
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_expiry",
                            "expires_at is in the past",
                        )
                    }
                },
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_expiry",
                        "expires_at is an RFC 3339 time such as 2026-12-31T00:00:00Z",
                    )
                }
            },
            (None, None) => None,
        };
        let entry = EntryInfo {
            list,
            kind,
            id,
            shape,
            by: self.caller.to_owned(),
            at: now,
            expires,
            note,
        };
        let runtime = match self.runtime().await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let replaced = runtime
            .get(list, kind, &entry.id)
            .is_some_and(|e| e.expires.is_none_or(|x| x > now));
        if let Err(resp) = self.write(Change::Add(entry.clone())).await {
            return resp;
        }
        self.audit("add", &entry);
        let status = if replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        reply(
            status,
            &json!({ "entry": shown(&entry, "runtime"), "replaced": replaced }),
        )
    }

    async fn remove(&self, list: ListName, body: &[u8]) -> Response<Full<Bytes>> {
        let (req, kind) = match self.parse_change(body) {
            Ok(r) => r,
            Err(resp) => return *resp,
        };
        if req.note.is_some() || req.expires_in.is_some() || req.expires_at.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a removal names the entry only (value or id)",
            );
        }
        let (id, _) = match self.target(kind, &req) {
            Ok(t) => t,
            Err(resp) => return *resp,
        };
        let runtime = match self.runtime().await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let now = lists::unix_now();
        let Some(entry) = runtime
            .get(list, kind, &id)
            .filter(|e| e.expires.is_none_or(|x| x > now))
            .cloned()
        else {
            if self.config().get(list, kind, &id).is_some() {
                return error(
                    StatusCode::CONFLICT,
                    "config_entry",
                    "this entry comes from the config file: remove it there and reload",
                );
            }
            return error(
                StatusCode::NOT_FOUND,
                "no_entry",
                format!(
                    "no runtime {} entry of this {}",
                    list.as_str(),
                    kind.as_str()
                ),
            );
        };
        let change = Change::Remove {
            list,
            kind,
            id: entry.id.clone(),
        };
        if let Err(resp) = self.write(change).await {
            return resp;
        }
        self.audit("remove", &entry);
        reply(
            StatusCode::OK,
            &json!({ "removed": shown(&entry, "runtime") }),
        )
    }

    /// Append `change` to the log (compacting it when full), then move the version so
    /// every replica re-reads the log at its next request.
    async fn write(&self, change: Change) -> Result<(), Response<Full<Bytes>>> {
        let unavailable = |e: crate::store::StoreError| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store did not answer; nothing changed: {e}"),
            )
        };
        let line = change.line();
        let appended = self
            .store
            .append(LOG_KEY, line.as_bytes(), KEEP, MAX_LOG_BYTES)
            .await
            .map_err(unavailable)?;
        if !appended {
            // Full: rewritten with the live entries only, then the change.
            let runtime = self.runtime().await?;
            let text = runtime.compacted(lists::unix_now()) + &line;
            if text.len() > MAX_LOG_BYTES {
                return Err(error(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "lists_full",
                    "the runtime lists are full: remove entries, or move them to the config",
                ));
            }
            self.store
                .put(LOG_KEY, text.as_bytes(), KEEP)
                .await
                .map_err(unavailable)?;
        }
        let version = uuid::Uuid::new_v4().to_string();
        self.store
            .put(VERSION_KEY, version.as_bytes(), KEEP)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// An audit line for a change: who (the token's name), what, when; the entry's hash,
    /// never its value.
    fn audit(&self, verb: &str, entry: &EntryInfo) {
        let line = AdminChange {
            kind: crate::audit::AuditMarker,
            event: "admin_change",
            time: rfc3339(lists::unix_now()),
            by: self.caller,
            verb,
            list: entry.list.as_str(),
            entry_kind: entry.kind.as_str(),
            id: &entry.id,
            expires_at: entry.expires.map(rfc3339),
            note: &entry.note,
        };
        self.gateway.audit().record_any(&line);
        tracing::info!(
            by = self.caller,
            verb,
            list = entry.list.as_str(),
            kind = entry.kind.as_str(),
            id = %&entry.id[..entry.id.len().min(16)],
            "admin: list changed"
        );
    }

    async fn why(&self, query: &str) -> Response<Full<Bytes>> {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let [(name, value)] = params.as_slice() else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "ask for one of phone, username or flow",
            );
        };
        let subject = match name.as_str() {
            "phone" => {
                // A `+` left unencoded in a query reads as a space.
                let written = value.trim();
                let written = if written.starts_with('+') {
                    written.to_owned()
                } else {
                    format!("+{written}")
                };
                match canonical(Kind::Number, &written) {
                    Ok(c) => Subject::Phone(self.keys.hash(&c.text)),
                    Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_value", why),
                }
            }
            "username" => match canonical(Kind::User, value) {
                Ok(c) => Subject::User(self.keys.hash(&c.text)),
                Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_value", why),
            },
            "flow" if crate::entra::learn::FlowId::parse(value.as_bytes()).is_some() => {
                Subject::Flow(value.clone())
            }
            "flow" => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_value",
                    "a flow id is the value of an audit line's flow field",
                )
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "ask for one of phone, username or flow",
                )
            }
        };
        match recent(self.store, &subject).await {
            Ok(decisions) => reply(
                StatusCode::OK,
                &json!({
                    "subject": { "kind": subject.kind(), "id": subject.id() },
                    "decisions": decisions,
                }),
            ),
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store did not answer: {e}"),
            ),
        }
    }
}

/// How long after its last noted hit a key is listed as an active block: the gauge's
/// fifteen minutes, plus the five a replica waits before it notes a key again.
const ACTIVE_LISTED_FOR: u64 = 20 * 60;
/// Most keys one listing shows.
const MAX_BLOCKS: usize = 200;

/// A lift asked for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftRequest {
    rule: String,
    key: String,
}

impl Api<'_> {
    /// The keys enforced adaptive rules acted on in the last twenty minutes, with their
    /// figures (settled sends and verifications in the rule's window) and any lift.
    async fn blocks(&self) -> Response<Full<Bytes>> {
        let now = lists::unix_now();
        let hour = now / 3600;
        let mut seen: std::collections::BTreeMap<(String, String), (String, u64)> =
            std::collections::BTreeMap::new();
        for h in [hour.saturating_sub(1), hour] {
            let text = match self.store.get(&adaptive::active_key(h)).await {
                Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                Ok(None) => continue,
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        format!("the store did not answer: {e}"),
                    )
                }
            };
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let (Some(rule), Some(key), Some(action), Some(at)) = (
                    v["rule"].as_str(),
                    v["key"].as_str(),
                    v["action"].as_str(),
                    v["at"].as_u64(),
                ) else {
                    continue;
                };
                if now.saturating_sub(at) > ACTIVE_LISTED_FOR {
                    continue;
                }
                let slot = seen
                    .entry((rule.to_owned(), key.to_owned()))
                    .or_insert((action.to_owned(), at));
                if at >= slot.1 {
                    *slot = (action.to_owned(), at);
                }
            }
        }
        let adaptive = &self.gateway.settings().adaptive;
        let mut blocks = Vec::new();
        for ((rule, key), (action, at)) in seen.into_iter().take(MAX_BLOCKS) {
            let figures = adaptive.figures_of(self.store, &rule, &key).await;
            let lifted = self
                .store
                .get(&adaptive::lift_key(&rule, &key))
                .await
                .ok()
                .flatten()
                .map(|by| String::from_utf8_lossy(&by).into_owned());
            blocks.push(json!({
                "rule": rule,
                "key": key,
                "action": action,
                "last_acted_at": rfc3339(at),
                "settled": figures.map(|f| f.0),
                "verified": figures.map(|f| f.1),
                "lifted_by": lifted,
            }));
        }
        reply(StatusCode::OK, &json!({ "blocks": blocks }))
    }

    /// Lift a key for its rule's window: the rule no longer acts on it until the lift
    /// expires (by then its unverified sends have left the window, or it is pumped again
    /// and acted on again).
    async fn lift(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(req) = serde_json::from_slice::<LiftRequest>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "expected {\"rule\": ..., \"key\": ...} as a listing shows them",
            );
        };
        let adaptive = &self.gateway.settings().adaptive;
        let Some(window) = adaptive.window_of(&req.rule) else {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_rule",
                "no adaptive rule of that name in the config",
            );
        };
        if !req.key.starts_with(&format!("conv:{}:", req.rule))
            || req.key.len() > 300
            || !req.key.bytes().all(|b| b.is_ascii_graphic())
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_key",
                "a key is one a listing of /admin/v1/adaptive/blocks shows for that rule",
            );
        }
        let marker = adaptive::lift_key(&req.rule, &req.key);
        if let Err(e) = self
            .store
            .put(&marker, self.caller.as_bytes(), window)
            .await
        {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store did not answer; nothing changed: {e}"),
            );
        }
        let until = lists::unix_now() + window.as_secs();
        self.gateway.audit().record_any(&json!({
            "type": "audit",
            "event": "admin_change",
            "time": rfc3339(lists::unix_now()),
            "by": self.caller,
            "verb": "lift",
            "list": "adaptive",
            "rule": req.rule,
            "key": req.key,
            "expires_at": rfc3339(until),
        }));
        tracing::info!(by = self.caller, rule = %req.rule, "admin: adaptive key lifted");
        reply(
            StatusCode::OK,
            &json!({ "lifted": { "rule": req.rule, "key": req.key, "until": rfc3339(until) } }),
        )
    }
}

/// The audit line of a runtime list change.
#[derive(Serialize)]
struct AdminChange<'a> {
    #[serde(rename = "type")]
    kind: crate::audit::AuditMarker,
    event: &'static str,
    time: String,
    by: &'a str,
    verb: &'a str,
    list: &'static str,
    #[serde(rename = "entry_kind")]
    entry_kind: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    note: &'a str,
}
