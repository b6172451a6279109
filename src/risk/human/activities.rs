//! Async activities (`page_requested`, `block`) sent to HUMAN's collector in batches, off
//! the request path (reference A12). The queue is bounded: when it is full, activities are
//! dropped and counted, never waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Counters of the activity pipeline since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ActivityStats {
    /// Activities the collector accepted.
    pub sent: u64,
    /// Activities dropped because the queue was full.
    pub dropped: u64,
    /// Activities lost because the collector call failed.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// Where the adapter puts activities. Disabled sinks accept and discard.
#[derive(Debug, Clone)]
pub(crate) struct ActivitySink {
    tx: Option<mpsc::Sender<Value>>,
    counters: Arc<Counters>,
}

/// How to reach the collector.
pub(crate) struct Collector {
    pub client: reqwest::Client,
    /// `<collector>/api/v1/collector/s2s`
    pub url: String,
    pub auth_token: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
}

impl ActivitySink {
    pub(super) fn disabled() -> Self {
        Self {
            tx: None,
            counters: Arc::default(),
        }
    }

    /// Starts the sender task on the current runtime. It ends once every sink clone is
    /// dropped and the queue is flushed.
    pub(super) fn spawn(
        collector: Collector,
        capacity: usize,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::<Counters>::default();
        runtime.spawn(run(collector, rx, counters.clone()));
        Self {
            tx: Some(tx),
            counters,
        }
    }

    pub(super) fn push(&self, activity: Value) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(activity).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn stats(&self) -> ActivityStats {
        ActivityStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }
}

async fn run(collector: Collector, mut rx: mpsc::Receiver<Value>, counters: Arc<Counters>) {
    let batch_size = collector.batch_size.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = Instant::now() + collector.flush_interval;
        let mut closed = false;
        while batch.len() < batch_size {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(a) => batch.push(a),
                    None => { closed = true; break }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        send(&collector, &batch, &counters).await;
        if closed {
            break;
        }
    }
}

async fn send(collector: &Collector, batch: &[Value], counters: &Counters) {
    let n = batch.len() as u64;
    let result = collector
        .client
        .post(&collector.url)
        .bearer_auth(&collector.auth_token)
        .json(batch)
        .send()
        .await;
    match result {
        Ok(rsp) if rsp.status().is_success() => {
            counters.sent.fetch_add(n, Ordering::Relaxed);
        }
        Ok(rsp) => {
            counters.failed.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(
                status = rsp.status().as_u16(),
                "human collector refused activities"
            );
        }
        Err(e) => {
            counters.failed.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(timeout = e.is_timeout(), "human collector unreachable");
        }
    }
}
