//! The audit log: one JSON line per gated request, on every path (forwarded, denied,
//! challenged, refused, failed), written off the request path by a background task.
//!
//! Never in a line: a raw phone number, an OTP code, a password, a continuation token or a
//! provider token. Phones appear masked and as an HMAC-SHA256 under a configured key, so
//! analysts can correlate without the number; method ids appear as a hash.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use crate::problem::{Checker, Secret};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Off,
    Stdout,
    /// Standard error: apart from the logs, which go to standard output.
    Stderr,
    /// A file, rotated to `<path>.1` … `<path>.<keep>` when it passes `max_bytes`, and
    /// reopened on SIGUSR1 (for external rotation).
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: usize,
    },
}

/// One audit line. Field names are the documented schema (README "Audit log").
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct AuditEvent {
    /// Always `"audit"`: tells audit lines from log lines when both go to one stream.
    #[serde(rename = "type")]
    pub kind: AuditMarker,
    /// RFC 3339 UTC time the request arrived.
    pub time: String,
    pub request_id: String,
    /// `sms` / `email` route, empty when the request sends no code.
    pub route: &'static str,
    /// Endpoint kind, e.g. `register_challenge`, or `ambiguous`.
    pub endpoint: &'static str,
    /// `sms` / `email` when the request would send a code.
    pub channel: &'static str,
    pub client_ip: String,
    /// ISO region of the destination phone, when known.
    pub country: String,
    /// The destination as Entra or we would show it, e.g. `+44********56`.
    pub phone_masked: String,
    /// Hex HMAC-SHA256 of the E.164 number under `audit.hmac_key`.
    pub phone_hmac: String,
    /// Hex SHA-256 of the MFA method id.
    pub method_hash: String,
    pub flow: String,
    pub provider: &'static str,
    /// The provider's answer: `allow`, `step_up`, `deny`, or the error label.
    pub provider_verdict: &'static str,
    /// `allow`, `step_up`, `throttle`, `deny`, `would_*`, or empty (no decision needed).
    pub decision: &'static str,
    pub reasons: Vec<String>,
    pub status: u16,
    /// 0 when the request was not forwarded.
    pub upstream_status: u16,
    /// For a send that was forwarded: whether Entra's answer says it sent the code (`false`
    /// for an error, a password prompt or a redirect). `null` otherwise.
    pub code_sent: Option<bool>,
    /// Entra accepted a one-time code in this request's flow (what the adaptive rules
    /// learn from); the flow id links it to its send's line.
    pub code_verified: bool,
    pub latency_ms: f64,
    pub provider_ms: f64,
    /// A fault we answered ourselves (`bad_request`, `upstream_timeout`, …).
    pub fault: &'static str,
}

/// The value of every audit line's `type` field.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AuditMarker;

impl Serialize for AuditMarker {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("audit")
    }
}

/// The audit writer's handle. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    /// HMAC-SHA256 keyed once; cloned for each phone.
    mac: Hmac<Sha256>,
    dropped: prometheus_client::metrics::counter::Counter,
    /// Lines queued, and lines the writer has dealt with (written or failed): equal when
    /// nothing is waiting.
    queued: AtomicU64,
    handled: Arc<AtomicU64>,
}

/// Lines waiting for the writer; beyond this they are dropped and counted.
const QUEUE: usize = 16_384;

impl Audit {
    /// Start the writer. `hmac_key` keys the phone hash; an empty key still hashes (with a
    /// random per-process key, so hashes do not correlate across restarts).
    /// Lines that cannot be queued, or that the sink refused, are dropped and counted in
    /// `dropped` (a metric).
    pub(crate) fn start(
        sink: AuditSink,
        hmac_key: &[u8],
        reopen: Option<mpsc::Receiver<()>>,
        dropped: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        let key = if hmac_key.is_empty() {
            rand::random::<[u8; 32]>().to_vec()
        } else {
            hmac_key.to_vec()
        };
        let handled = Arc::new(AtomicU64::new(0));
        let tx = match sink {
            AuditSink::Off => None,
            sink => {
                let (tx, rx) = mpsc::channel(QUEUE);
                let counts = Counts {
                    dropped: dropped.clone(),
                    handled: handled.clone(),
                };
                tokio::spawn(writer(sink, rx, reopen, counts));
                Some(tx)
            }
        };
        Self {
            inner: Arc::new(Inner {
                tx,
                mac: crate::store::keys::keyed_mac(&key),
                dropped,
                queued: AtomicU64::new(0),
                handled,
            }),
        }
    }

    /// Queue one line; never blocks the request.
    pub(crate) fn record(&self, event: &AuditEvent) {
        self.record_any(event);
    }

    /// Queue a line of another shape (an admin change): any value with a `type` field.
    pub(crate) fn record_any<T: Serialize>(&self, event: &T) {
        let Some(tx) = &self.inner.tx else {
            return;
        };
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        if tx.try_send(line).is_err() {
            self.inner.dropped.inc();
        } else {
            self.inner.queued.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Wait until every queued line is written (or failed), for at most `within`: at
    /// shutdown, so the last requests' lines are not lost. Returns whether the queue
    /// emptied in time.
    pub(crate) async fn flush(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let handled = self.inner.handled.load(Ordering::Relaxed);
            if handled >= self.inner.queued.load(Ordering::Relaxed) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Hex HMAC-SHA256 of an E.164 number.
    pub(crate) fn phone_hmac(&self, e164: &str) -> String {
        let mut mac = self.inner.mac.clone();
        mac.update(e164.as_bytes());
        crate::store::keys::hex_lower(&mac.finalize().into_bytes())
    }
}

/// `[audit]`: one JSON line per gated request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `stdout` (with the logs; every audit line has `"type":"audit"`), `stderr` (apart from
    /// the logs, which go to stdout), `file` or `off`.
    pub output: AuditOutput,
    /// The file, when `output = "file"`; reopened on SIGUSR1.
    pub path: Option<PathBuf>,
    /// Rotate the file when it passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`).
    pub keep: usize,
    /// Key of the HMAC-SHA256 over phone numbers (secret; or `hmac_key_file`). Set it, and
    /// keep it across restarts and replicas, so hashes correlate.
    pub hmac_key: Secret,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            output: AuditOutput::Stdout,
            path: None,
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
            hmac_key: Secret::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutput {
    Stdout,
    Stderr,
    File,
    Off,
}

impl AuditConfig {
    /// Where audit lines go; `None` with the problem recorded when a file is asked for
    /// without a path.
    pub(crate) fn build(&self, check: &mut Checker) -> Option<AuditSink> {
        Some(match (self.output, &self.path) {
            (AuditOutput::Off, _) => AuditSink::Off,
            (AuditOutput::Stdout, _) => AuditSink::Stdout,
            (AuditOutput::Stderr, _) => AuditSink::Stderr,
            (AuditOutput::File, Some(path)) => AuditSink::File {
                path: path.clone(),
                max_bytes: self.max_bytes.max(4096),
                keep: self.keep,
            },
            (AuditOutput::File, None) => {
                check.problem("audit.path", "required when audit.output = \"file\"");
                return None;
            }
        })
    }
}

/// Hex SHA-256 of a value that must not appear raw (method ids).
pub(crate) fn hash_hex(value: &str) -> String {
    crate::store::keys::hex_lower(&Sha256::digest(value.as_bytes()))
}

enum Out {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    File(std::fs::File, u64),
    Broken,
}

fn open(path: &PathBuf) -> Out {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            Out::File(f, len)
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the audit log");
            Out::Broken
        }
    }
}

fn rotate(path: &PathBuf, keep: usize) {
    for i in (1..keep).rev() {
        let from = PathBuf::from(format!("{}.{i}", path.display()));
        let to = PathBuf::from(format!("{}.{}", path.display(), i + 1));
        let _ = std::fs::rename(from, to);
    }
    if keep > 0 {
        let _ = std::fs::rename(path, PathBuf::from(format!("{}.1", path.display())));
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// What the writer reports back.
struct Counts {
    /// Lines the sink refused (a full disk, a closed pipe) count as dropped.
    dropped: prometheus_client::metrics::counter::Counter,
    handled: Arc<AtomicU64>,
}

async fn writer(
    sink: AuditSink,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut reopen: Option<mpsc::Receiver<()>>,
    counts: Counts,
) {
    let mut out = match &sink {
        AuditSink::File { path, .. } => open(path),
        AuditSink::Stderr => Out::Stderr(std::io::stderr()),
        _ => Out::Stdout(std::io::stdout()),
    };
    loop {
        let line = tokio::select! {
            line = rx.recv() => match line {
                Some(l) => l,
                None => return,
            },
            Some(()) = async {
                match reopen.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let AuditSink::File { path, .. } = &sink {
                    out = open(path);
                }
                continue;
            }
        };
        // Small writes to a local file or stdout; a blocking-pool hop per line would cost
        // more than it saves.
        let ok = match &mut out {
            Out::Stdout(s) => s.write_all(&line).and_then(|_| s.flush()).is_ok(),
            Out::Stderr(s) => s.write_all(&line).and_then(|_| s.flush()).is_ok(),
            Out::File(f, len) => {
                let ok = f.write_all(&line).is_ok();
                *len += line.len() as u64;
                ok
            }
            Out::Broken => false,
        };
        if !ok {
            counts.dropped.inc();
        }
        counts.handled.fetch_add(1, Ordering::Relaxed);
        if let (
            Out::File(_, len),
            AuditSink::File {
                path,
                max_bytes,
                keep,
            },
        ) = (&out, &sink)
        {
            if *len >= *max_bytes {
                rotate(path, *keep);
                out = open(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_go_to_the_file_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::start(
            AuditSink::File {
                path: path.clone(),
                max_bytes: 2_000,
                keep: 2,
            },
            b"k",
            None,
            Default::default(),
        );
        for i in 0..40 {
            audit.record(&AuditEvent {
                request_id: format!("r{i}"),
                decision: "allow",
                ..AuditEvent::default()
            });
        }
        assert!(
            audit.flush(Duration::from_secs(5)).await,
            "40 lines written"
        );
        let rotated = std::fs::read_to_string(format!("{}.1", path.display())).unwrap();
        assert!(rotated
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        assert!(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < 2_000 + 600);
        assert!(!std::path::Path::new(&format!("{}.3", path.display())).exists());
    }

    #[tokio::test]
    async fn lines_the_sink_refuses_are_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = prometheus_client::metrics::counter::Counter::default();
        let audit = Audit::start(
            AuditSink::File {
                path: dir.path().join("missing").join("audit.log"),
                max_bytes: 2_000,
                keep: 2,
            },
            b"k",
            None,
            dropped.clone(),
        );
        for i in 0..3 {
            audit.record(&AuditEvent {
                request_id: format!("r{i}"),
                ..AuditEvent::default()
            });
        }
        assert!(audit.flush(Duration::from_secs(5)).await);
        assert_eq!(dropped.get(), 3);
    }

    #[test]
    fn phone_hmac_is_keyed() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let a = Audit::start(AuditSink::Off, b"key-a", None, Default::default());
            let b = Audit::start(AuditSink::Off, b"key-b", None, Default::default());
            let h = a.phone_hmac("+447400123456");
            assert_eq!(h.len(), 64);
            assert!(!h.contains("7400123456"));
            assert_eq!(h, a.phone_hmac("+447400123456"));
            assert_ne!(h, b.phone_hmac("+447400123456"));
        });
    }
}
