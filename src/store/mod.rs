//! The state replicas must share: sliding-window counters, key/value entries with a TTL
//! (learned method channels, flow chains) and take-once nonces.
//!
//! Keys are built by the callers and never contain raw secrets: continuation tokens,
//! phone numbers and the like become part of a key only through a [`KeyHasher`]. Values
//! that name no one (a calling code, a range of a thousand numbers, an IPv4 /24) may
//! appear as they are, so that an operator reading the store sees what is counted.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;

pub mod fallback;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod settings;

pub use fallback::FallbackStore;
pub(crate) use keys::KeyHasher;
pub use memory::MemoryStore;
pub use redis::{RedisSettings, RedisStore, SentinelSettings};

/// A store operation that could not be completed. The caller treats it as an input to its
/// decision (the fallback store or the route's fail mode), never as a 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store timed out")]
    Timeout,
}

/// The answer to a sliding-window reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Whether a slot was reserved. `false` means the window already holds `limit` entries.
    pub reserved: bool,
    /// Entries in the window after this call (including the reservation, when made).
    pub count: u64,
    /// For a window that refused: when its oldest entry leaves, how long a throttled client
    /// should wait. Zero when a slot was reserved (the stores spend no lookup on it).
    pub retry_after: Duration,
}

/// One window of a [`Store::reserve_many`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec<'a> {
    pub key: &'a str,
    pub window: Duration,
    pub limit: u64,
}

/// One bucketed counter of a [`Store::tally`] call: series `series` of `key`, its
/// `window` split into `buckets` equal buckets. A read sums the buckets inside the window,
/// the oldest whole until it leaves, so a counter holds at most `buckets` numbers however
/// much it counts, and is exact to one bucket at the window's far edge. The series of one
/// key (at most [`MAX_SERIES`], each with its own window) are kept in one store entry (in
/// Redis, one hash each in one cluster slot), so that the counters of one key cost one
/// lookup; pass them next to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter<'a> {
    pub key: &'a str,
    pub series: u8,
    pub window: Duration,
    pub buckets: u32,
}

/// The series one key holds at most.
pub const MAX_SERIES: u8 = 8;

impl Counter<'_> {
    /// The width of one bucket (at least a millisecond).
    pub fn width(&self) -> Duration {
        (self.window / self.buckets.max(1)).max(Duration::from_millis(1))
    }
}

/// Shared state. Implementations are cheap to clone handles and safe to call concurrently;
/// every method is atomic with respect to the others on the same key.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reserve one slot in the sliding window `key` if it holds fewer than `limit` entries
    /// inside `window`. The slot is named `id` so a reservation for a request that is not
    /// forwarded after all can be released.
    async fn reserve(
        &self,
        key: &str,
        id: &str,
        window: Duration,
        limit: u64,
    ) -> Result<Window, StoreError>;

    /// Give back a slot taken by [`Store::reserve`]. Releasing a slot that expired or was
    /// never taken is not an error.
    async fn release(&self, key: &str, id: &str) -> Result<(), StoreError>;

    /// [`Store::reserve`] in every window of `windows` for the same `id`: one round trip
    /// for a remote store. Each window reserves (or is full) on its own, exactly as a
    /// single reservation would; the answers come in the order of `windows`. Keys should
    /// be distinct.
    ///
    /// The answer is whole: an error means no window was answered, and the caller holds
    /// no slot to release. Slots a failed call may have taken anyway (a timeout after the
    /// server applied it) expire with their window, as after a failed [`Store::reserve`].
    ///
    /// The default reserves the windows concurrently, one call each, and on a failure
    /// gives back the slots the other calls took.
    async fn reserve_many(
        &self,
        id: &str,
        windows: &[WindowSpec<'_>],
    ) -> Result<Vec<Window>, StoreError> {
        let answers = join_all(
            windows
                .iter()
                .map(|w| self.reserve(w.key, id, w.window, w.limit)),
        )
        .await;
        let mut answered = Vec::with_capacity(windows.len());
        let mut taken = Vec::new();
        let mut failure = None;
        for (spec, answer) in windows.iter().zip(answers) {
            match answer {
                Ok(window) => {
                    if window.reserved {
                        taken.push(spec.key);
                    }
                    answered.push(window);
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        let Some(error) = failure else {
            return Ok(answered);
        };
        // Best effort: a slot that cannot be given back expires with its window.
        let _ = self.release_many(&taken, id).await;
        Err(error)
    }

    /// [`Store::release`] of `id` in every window of `keys`: one round trip for a remote
    /// store. An error means some slots may still be held; they expire with their window.
    ///
    /// The default releases concurrently, one call each.
    async fn release_many(&self, keys: &[&str], id: &str) -> Result<(), StoreError> {
        join_all(keys.iter().map(|key| self.release(key, id)))
            .await
            .into_iter()
            .collect()
    }

    /// Add one to each counter of `add` (in its current bucket), then read each of `read`:
    /// their sums, in the order of `read`. One round trip for a remote store, at one
    /// instant for all; a counter read before it was ever added to is 0. Counters of `add`
    /// should be distinct. A series past [`MAX_SERIES`] is refused.
    async fn tally(
        &self,
        add: &[Counter<'_>],
        read: &[Counter<'_>],
    ) -> Result<Vec<u64>, StoreError>;

    /// Entries currently in the window `key`, without reserving.
    async fn count(&self, key: &str, window: Duration) -> Result<u64, StoreError>;

    /// The value stored at `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Store `value` at `key` for `ttl`, replacing any earlier value.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Mark `key` as used for `ttl`. Returns `true` the first time, `false` for every later
    /// call while the mark lives: single-use nonces.
    async fn take_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Add `value` to the end of the value at `key` (an empty one when none is there) and
    /// keep it for `ttl` from now, unless that would make it longer than `max_len`: then
    /// nothing changes and the answer is `false`. A record that only grows costs no read.
    ///
    /// The default reads and rewrites, which is not atomic: a concurrent append may be
    /// lost. The stores here append in one step.
    async fn append(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        max_len: usize,
    ) -> Result<bool, StoreError> {
        append_by_rewrite(self, key, value, ttl, max_len).await
    }
}

/// [`Store::append`] as a read and a rewrite through `store`'s own `get` and `put`.
pub(crate) async fn append_by_rewrite<S: Store + ?Sized>(
    store: &S,
    key: &str,
    value: &[u8],
    ttl: Duration,
    max_len: usize,
) -> Result<bool, StoreError> {
    let mut held = store.get(key).await?.unwrap_or_default();
    if held.len() + value.len() > max_len {
        return Ok(false);
    }
    held.extend_from_slice(value);
    store.put(key, &held, ttl).await?;
    Ok(true)
}

/// Refuse a tally with a series past [`MAX_SERIES`].
pub(crate) fn check_series(add: &[Counter<'_>], read: &[Counter<'_>]) -> Result<(), StoreError> {
    match add.iter().chain(read).find(|c| c.series >= MAX_SERIES) {
        Some(c) => Err(StoreError::Unavailable(format!(
            "counter series {} past the {MAX_SERIES} a key holds",
            c.series
        ))),
        None => Ok(()),
    }
}

/// A store that is down: every operation fails. For tests of what callers do then.
#[cfg(test)]
pub(crate) struct DownStore;

#[cfg(test)]
#[async_trait]
impl Store for DownStore {
    async fn reserve(&self, _: &str, _: &str, _: Duration, _: u64) -> Result<Window, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn release(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Err(StoreError::Timeout)
    }
    async fn count(&self, _: &str, _: Duration) -> Result<u64, StoreError> {
        Err(StoreError::Timeout)
    }
    async fn tally(&self, _: &[Counter<'_>], _: &[Counter<'_>]) -> Result<Vec<u64>, StoreError> {
        Err(StoreError::Timeout)
    }
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn put(&self, _: &str, _: &[u8], _: Duration) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn take_once(&self, _: &str, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
    }
}
