//! `learn_response`: what the gateway learns from an upstream native-auth answer, and what
//! it writes to the shared store.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;

use super::{ensure, header_line};
use crate::entra::classify::EndpointKind;
use crate::entra::learn::{
    parse_response, FlowBook, FlowId, Learned, MethodInfo, MAX_METHODS, MAX_RESPONSE_BYTES,
    MAX_TEXT_CHARS,
};
use crate::store::{Counter, KeyHasher, Store, StoreError, Window};

/// The method id the check sends an MFA challenge for, besides the learned ones.
const CHALLENGED_ID: &str = "fuzz-challenged-method-id";

/// The input is a response body, optionally preceded by a line naming the endpoint and the
/// status: `sign_in_introspect 200\n{…}` (default: sign-in introspect, 200).
///
/// * Parsing is bounded: at most [`MAX_METHODS`] methods, texts trimmed, non-empty and at
///   most [`MAX_TEXT_CHARS`] characters; methods only from introspect answers.
/// * A body that is too large, not a JSON object, or comes with a status other than 2xx and
///   4xx teaches nothing. A learned continuation token is a string of the body, verbatim.
/// * `Debug` of what was learned does not depend on the token's value.
/// * Learning writes only `flow:`/`flowmethod:`/`method:` keys made of hashes (never a raw
///   token or method id), values are a flow id or exactly a learned channel and label, and
///   there are at most `2 + 2 × methods` writes (+2 for a challenge answer).
/// * What was learned is found again: the new token continues the flow; each method id
///   (last entry wins) and the challenged id map to their channels.
pub fn learn_response(data: &[u8]) {
    let (header, body) = header_line(data, |line| endpoint_and_status(line).is_some());
    let (kind, status) = header
        .and_then(endpoint_and_status)
        .unwrap_or((EndpointKind::SignInIntrospect, 200));
    let learned = parse_response(kind, status, body);

    check_bounds(kind, &learned);
    let readable = body.len() <= MAX_RESPONSE_BYTES
        && matches!(status, 200..=299 | 400..=499)
        && matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_)));
    ensure!(
        readable || learned == Learned::default(),
        "an unreadable answer (status {status}, {} bytes) taught {learned:?}",
        body.len()
    );
    if let Some(token) = &learned.continuation_token {
        let document = serde_json::from_slice::<Value>(body).unwrap_or_default();
        ensure!(
            has_string(&document, token),
            "the learned continuation token is not a string of the answer"
        );
        let mut other = learned.clone();
        other.continuation_token = Some(format!("{token}-other"));
        ensure!(
            format!("{learned:?}") == format!("{other:?}"),
            "Debug of a learned answer depends on its continuation token"
        );
    }

    check_store(kind, &learned);
}

/// `kind status`, with the kind's snake_case label.
fn endpoint_and_status(line: &[u8]) -> Option<(EndpointKind, u16)> {
    let line = std::str::from_utf8(line).ok()?;
    let (label, status) = line.split_once(' ')?;
    let kind = EndpointKind::ALL
        .into_iter()
        .find(|k| k.as_str() == label)?;
    Some((kind, status.parse().ok()?))
}

fn check_bounds(kind: EndpointKind, learned: &Learned) {
    ensure!(
        learned.methods.len() <= MAX_METHODS,
        "{} methods kept",
        learned.methods.len()
    );
    ensure!(
        learned.methods.is_empty()
            || matches!(
                kind,
                EndpointKind::SignInIntrospect | EndpointKind::RegisterIntrospect
            ),
        "methods learned from a {} answer",
        kind.as_str()
    );
    let texts = [
        &learned.challenge_target_label,
        &learned.error,
        &learned.suberror,
    ]
    .into_iter()
    .chain(learned.methods.iter().map(|m| &m.label))
    .flatten();
    for text in texts {
        ensure!(
            !text.is_empty() && text.trim() == text && text.chars().count() <= MAX_TEXT_CHARS,
            "kept text {text:?} is empty, untrimmed or over {MAX_TEXT_CHARS} characters"
        );
    }
    for method in &learned.methods {
        ensure!(!method.id.is_empty(), "kept a method without an id");
    }
    ensure!(
        learned
            .continuation_token
            .as_ref()
            .is_none_or(|t| !t.is_empty()),
        "kept an empty continuation token"
    );
}

fn has_string(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s == wanted,
        Value::Array(items) => items.iter().any(|v| has_string(v, wanted)),
        Value::Object(map) => map.values().any(|v| has_string(v, wanted)),
        _ => false,
    }
}

fn check_store(kind: EndpointKind, learned: &Learned) {
    let store = Arc::new(Recording::default());
    let book = FlowBook::new(store.clone(), KeyHasher::keyed(b"fuzz-check-store-key"));
    let flow = now(book.flow_for_request(Some("fuzz-request-token")));
    now(book.learn(&flow, kind, learned));
    now(book.learn_challenge(&flow.id, CHALLENGED_ID, learned));

    let writes = store.writes.lock().clone();
    let with_channel = learned
        .methods
        .iter()
        .filter(|m| m.channel.is_some())
        .count();
    let most =
        2 + if kind == EndpointKind::SignInIntrospect {
            2 * with_channel
        } else {
            0
        } + if learned.challenge_channel.is_some() {
            2
        } else {
            0
        };
    ensure!(
        writes.len() <= most,
        "{} store writes, at most {most} expected",
        writes.len()
    );
    let labels: Vec<Option<&str>> = learned
        .methods
        .iter()
        .map(|m| m.label.as_deref())
        .chain([learned.challenge_target_label.as_deref()])
        .collect();
    for (key, value) in &writes {
        let shape = key_shape(key, &flow.id);
        ensure!(shape.is_some(), "store key {key:?} is not a hash key");
        if shape == Some(KeyShape::Flow) {
            let stored = crate::entra::learn::Flow::decode(value);
            ensure!(
                stored.as_ref().map(|f| &f.id) == Some(&flow.id) && value.len() <= 100,
                "a flow key holds {:?}, not the flow",
                String::from_utf8_lossy(value)
            );
            continue;
        }
        let info: Option<MethodInfo> = serde_json::from_slice(value).ok();
        let exact = info
            .as_ref()
            .and_then(|i| serde_json::to_vec(i).ok())
            .is_some_and(|again| &again == value);
        ensure!(
            exact,
            "a method key holds {:?}, not exactly a channel and label",
            String::from_utf8_lossy(value)
        );
        let label = info.as_ref().and_then(|i| i.label.as_deref());
        ensure!(
            labels.contains(&label),
            "a method key holds a label that was not learned"
        );
    }

    if let Some(token) = &learned.continuation_token {
        let next = now(book.flow_for_request(Some(token)));
        ensure!(
            next.id == flow.id,
            "the learned token does not continue the flow"
        );
    }
    if kind == EndpointKind::SignInIntrospect {
        // Method ids are compared as Entra does, in any case: the last spelling wins.
        let canonical = crate::entra::learn::canonical_method_id;
        let mut last: HashMap<String, &crate::entra::learn::LearnedMethod> = HashMap::new();
        for method in learned.methods.iter().filter(|m| m.channel.is_some()) {
            last.insert(canonical(&method.id), method);
        }
        for (id, method) in last {
            if id == canonical(CHALLENGED_ID) && learned.challenge_channel.is_some() {
                continue;
            }
            let found = now(book.method_channel(&flow.id, &id));
            ensure!(
                found
                    .as_ref()
                    .map(|i| (Some(i.channel), i.label.as_deref()))
                    == Some((method.channel, method.label.as_deref())),
                "method {id:?} learned as {method:?} is found as {found:?}"
            );
        }
    }
    if kind == EndpointKind::RegisterIntrospect {
        // Register methods are the words `email` and `sms` with unmasked hints: not kept.
        for method in &learned.methods {
            if canonical_eq(&method.id, CHALLENGED_ID) && learned.challenge_channel.is_some() {
                continue;
            }
            let found = now(book.method_channel(&flow.id, &method.id));
            ensure!(
                found.is_none(),
                "register method {:?} was recorded as {found:?}",
                method.id
            );
        }
    }
    if let Some(channel) = learned.challenge_channel {
        let found = now(book.method_channel(&flow.id, CHALLENGED_ID));
        ensure!(
            found.as_ref().map(|i| i.channel) == Some(channel),
            "a challenge answer on {channel:?} is found as {found:?}"
        );
    }
}

fn canonical_eq(a: &str, b: &str) -> bool {
    crate::entra::learn::canonical_method_id(a) == crate::entra::learn::canonical_method_id(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyShape {
    Flow,
    Method,
}

/// `flow:<sha256>`, `flowmethod:<this flow>:<sha256>` or `method:<sha256>`.
fn key_shape(key: &str, flow: &FlowId) -> Option<KeyShape> {
    let hash = |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if let Some(h) = key.strip_prefix("flow:") {
        return hash(h).then_some(KeyShape::Flow);
    }
    if let Some(rest) = key.strip_prefix("flowmethod:") {
        let (f, h) = rest.split_once(':')?;
        return (f == flow.as_str() && hash(h)).then_some(KeyShape::Method);
    }
    key.strip_prefix("method:")
        .filter(|h| hash(h))
        .map(|_| KeyShape::Method)
}

/// Run a future that never waits: [`Recording`] answers at once.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => super::violated(format_args!("a store call waited")),
    }
}

/// A map that records every write; the flow book only gets and puts.
#[derive(Default)]
struct Recording {
    entries: Mutex<HashMap<String, Vec<u8>>>,
    writes: Mutex<Vec<(String, Vec<u8>)>>,
}

#[async_trait]
impl Store for Recording {
    async fn reserve(&self, _: &str, _: &str, _: Duration, _: u64) -> Result<Window, StoreError> {
        Err(StoreError::Unavailable("not a window store".into()))
    }
    async fn release(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not a window store".into()))
    }
    async fn count(&self, _: &str, _: Duration) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("not a window store".into()))
    }
    async fn tally(&self, _: &[Counter<'_>], _: &[Counter<'_>]) -> Result<Vec<u64>, StoreError> {
        Err(StoreError::Unavailable("not a counter store".into()))
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.lock().get(key).cloned())
    }
    async fn put(&self, key: &str, value: &[u8], _: Duration) -> Result<(), StoreError> {
        self.writes.lock().push((key.to_owned(), value.to_vec()));
        self.entries.lock().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn take_once(&self, _: &str, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("not a nonce store".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hash_keys_pass_the_key_check() {
        let flow = now(
            FlowBook::new(Arc::new(Recording::default()), KeyHasher::random())
                .flow_for_request(None),
        )
        .id;
        let id = flow.as_str();
        let hash = "a".repeat(64);
        assert_eq!(
            key_shape(&format!("flow:{hash}"), &flow),
            Some(KeyShape::Flow)
        );
        assert_eq!(
            key_shape(&format!("flowmethod:{id}:{hash}"), &flow),
            Some(KeyShape::Method)
        );
        assert_eq!(
            key_shape(&format!("method:{hash}"), &flow),
            Some(KeyShape::Method)
        );
        for raw in [
            "flow:T-introspect".to_owned(),
            format!("flowmethod:{}:{hash}", "0".repeat(16)),
            format!("method:{}", "A".repeat(64)),
            format!("method:{hash}0"),
            format!("other:{hash}"),
        ] {
            assert_eq!(key_shape(&raw, &flow), None, "{raw}");
        }
    }
}
