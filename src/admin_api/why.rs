//! "Why": the decisions on judged sends, kept in the Store per subject (the number a
//! registration named, the flow's user, the flow) for a day, in hourly buckets, as
//! their audit lines (no raw value).

use std::time::Duration;

use serde_json::Value;

use crate::defense::lists;
use crate::store::Store;

/// Whose decisions are kept.
pub(crate) enum Subject {
    /// Keyed hash of the E.164 number a registration named.
    Phone(String),
    /// Keyed hash of the flow's username.
    User(String),
    /// The gateway's flow id (a random number, no hash needed).
    Flow(String),
}

impl Subject {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Phone(_) => "phone",
            Self::User(_) => "username",
            Self::Flow(_) => "flow",
        }
    }

    pub(super) fn id(&self) -> &str {
        match self {
            Self::Phone(h) | Self::User(h) | Self::Flow(h) => h,
        }
    }

    fn key(&self, hour: u64) -> String {
        let tag = match self {
            Self::Phone(_) => 'p',
            Self::User(_) => 'u',
            Self::Flow(_) => 'f',
        };
        format!("why:{tag}:{}:{hour}", self.id())
    }
}

/// How long decisions are kept, in hourly buckets.
const WHY_HOURS: u64 = 24;
/// The bound of one subject's bucket: a few dozen decisions an hour; past it, more are
/// not kept (a subject sending that much is in the audit log and the metrics anyway).
const WHY_BUCKET_BYTES: usize = 24 * 1024;
/// Most decisions one answer lists, newest first.
const WHY_MAX: usize = 100;

/// Keep one decision line (JSON, no raw value) for each of `subjects`: an append per
/// subject to its hourly bucket. Off the request path.
pub(crate) async fn keep_decision(store: &dyn Store, subjects: &[Subject], line: &[u8]) {
    let hour = lists::unix_now() / 3600;
    let ttl = Duration::from_secs((WHY_HOURS + 1) * 3600);
    let mut text = Vec::with_capacity(line.len() + 1);
    text.extend_from_slice(line);
    text.push(b'\n');
    let text = &text;
    let appends = subjects.iter().map(|s| async move {
        store
            .append(&s.key(hour), text, ttl, WHY_BUCKET_BYTES)
            .await
    });
    for kept in futures_util::future::join_all(appends).await {
        if let Err(e) = kept {
            tracing::debug!(error = %e, "why: decision not kept");
        }
    }
}

/// The decisions kept for `subject` over the last day, newest first.
pub(super) async fn recent(
    store: &dyn Store,
    subject: &Subject,
) -> Result<Vec<Value>, crate::store::StoreError> {
    let hour = lists::unix_now() / 3600;
    let mut out = Vec::new();
    for h in (hour.saturating_sub(WHY_HOURS)..=hour).rev() {
        if let Some(bytes) = store.get(&subject.key(h)).await? {
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().rev() {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    out.push(v);
                }
                if out.len() >= WHY_MAX {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}
