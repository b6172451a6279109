//! A store that keeps answering when its primary (Redis) does not. A failed operation is
//! answered from local memory instead of failing, the store reports itself *degraded*,
//! and a background probe switches back once the primary answers again.
//!
//! # Counts while degraded
//!
//! While degraded every replica counts alone, in its own memory. A limit of 3 per hour
//! becomes 3 per hour *per replica*: with N replicas a client can get up to 3·N. Windows
//! start empty on the switch, so reservations already held in Redis are not seen either.
//! Values and nonces written while degraded are visible only to the replica that wrote
//! them.
//!
//! # Exact under a slow reply
//!
//! A reservation decides whether a code may go out, and its script may already have run
//! when its reply is late, so a reservation is not answered locally just because the
//! primary was slow. The primary bounds reservations by their own, longer budget
//! (`store.redis.reserve_timeout`, 1 s, against `store.redis.timeout`'s 50 ms for the
//! rest), and while the store is degraded by another operation's failure, reservations
//! still ask the primary. They are answered locally only after a reservation itself
//! failed (refused, errored, or unanswered within its budget), until the probe sees the
//! primary answer again. A Redis slower than `timeout` but within `reserve_timeout`
//! therefore never lets more codes out than a limit allows, on any number of replicas.
//! A reservation given up on may still run on the server later; it then holds a slot
//! nobody releases, so the window counts a send too many, never one too few.
//!
//! When the primary answers again, the shared counts are used again. What this replica did
//! locally is not copied to Redis, but it is not forgotten either: until the last local
//! entry expires, reservations and counts add the local entries to the shared ones (a
//! window used up during the outage stays used up), a nonce taken locally stays taken, and
//! a value Redis does not have is read from memory. Other replicas do not see those local
//! entries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Counter, MemoryStore, Store, StoreError, Window, WindowSpec};

/// The key the probe reads to learn whether the primary answers again. Reading it is
/// harmless: nothing writes it.
const PROBE_KEY: &str = "fallback:probe";

/// A cheap-to-clone handle over a primary store and its local fallback.
#[derive(Clone)]
pub struct FallbackStore {
    inner: Arc<Inner>,
}

struct Inner {
    primary: Arc<dyn Store>,
    local: MemoryStore,
    probe_every: Duration,
    degraded: watch::Sender<bool>,
    /// Set when a reservation itself failed on the primary: reservations are answered
    /// locally until the probe sees the primary again (module docs).
    reserving_locally: AtomicBool,
    /// When the last entry written to `local` expires. Until then local entries from an
    /// outage are added to the primary's answers.
    local_until: Mutex<Option<Instant>>,
    stats: FallbackStats,
}

/// Counters for the metrics layer, since start. Every operation counts once under
/// `primary_ok` or `local`; a primary failure counts under its cause as well.
#[derive(Debug, Default)]
pub struct FallbackStats {
    /// Operations answered by the primary.
    pub primary_ok: AtomicU64,
    /// Primary operations that timed out (then answered locally).
    pub primary_timeout: AtomicU64,
    /// Primary operations that failed otherwise (then answered locally).
    pub primary_unavailable: AtomicU64,
    /// Operations answered from local memory: after a primary failure, or while degraded.
    pub local: AtomicU64,
    /// Switches from the primary to local memory.
    pub fallbacks: AtomicU64,
    /// Switches back to the primary.
    pub recoveries: AtomicU64,
    /// Probes of the primary that failed while degraded.
    pub probe_failures: AtomicU64,
}

/// A copy of [`FallbackStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FallbackCounts {
    pub primary_ok: u64,
    pub primary_timeout: u64,
    pub primary_unavailable: u64,
    pub local: u64,
    pub fallbacks: u64,
    pub recoveries: u64,
    pub probe_failures: u64,
}

impl FallbackStats {
    pub fn snapshot(&self) -> FallbackCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FallbackCounts {
            primary_ok: get(&self.primary_ok),
            primary_timeout: get(&self.primary_timeout),
            primary_unavailable: get(&self.primary_unavailable),
            local: get(&self.local),
            fallbacks: get(&self.fallbacks),
            recoveries: get(&self.recoveries),
            probe_failures: get(&self.probe_failures),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl FallbackStore {
    /// Serve from `primary`, falling back to `local`. While degraded the primary is probed
    /// every `probe_every`. The primary must bound its own operations (as `RedisStore`
    /// does): a call that hangs here hangs the request.
    pub fn new(primary: Arc<dyn Store>, local: MemoryStore, probe_every: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                primary,
                local,
                probe_every,
                degraded: watch::Sender::new(false),
                reserving_locally: AtomicBool::new(false),
                local_until: Mutex::new(None),
                stats: FallbackStats::default(),
            }),
        }
    }

    /// Whether operations are answered from local memory (per replica) right now.
    pub fn is_degraded(&self) -> bool {
        *self.inner.degraded.borrow()
    }

    /// Follows [`FallbackStore::is_degraded`]: for `/readyz` and alerts.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.degraded.subscribe()
    }

    pub fn stats(&self) -> &FallbackStats {
        &self.inner.stats
    }

    /// The primary's answer, or `None` after recording its failure and degrading.
    async fn primary<T>(
        &self,
        answer: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        match answer.await {
            Ok(value) => {
                bump(&self.inner.stats.primary_ok);
                Some(value)
            }
            Err(err) => {
                match err {
                    StoreError::Timeout => bump(&self.inner.stats.primary_timeout),
                    StoreError::Unavailable(_) => bump(&self.inner.stats.primary_unavailable),
                }
                self.degrade(&err);
                None
            }
        }
    }

    /// Whether reservations are answered from local memory (module docs): only after a
    /// reservation failed on the primary, not for another operation's failure.
    fn reserves_locally(&self) -> bool {
        self.inner.reserving_locally.load(Ordering::Relaxed)
    }

    /// The primary's answer to a reservation, or `None` after recording its failure:
    /// reservations are answered locally from then on, until the primary answers again.
    async fn reservation<T>(
        &self,
        answer: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        let answer = self.primary(answer).await;
        if answer.is_none() {
            self.inner.reserving_locally.store(true, Ordering::Relaxed);
        }
        answer
    }

    fn degrade(&self, err: &StoreError) {
        // Only the caller that flips the flag starts a probe: one probe per outage.
        if self
            .inner
            .degraded
            .send_if_modified(|d| !std::mem::replace(d, true))
        {
            bump(&self.inner.stats.fallbacks);
            tracing::warn!(error = %err, "store degraded: answering from local memory");
            tokio::spawn(probe(Arc::downgrade(&self.inner)));
        }
    }

    /// Count an answer from memory, and remember that memory holds entries until `until`.
    fn local(&self, lives: Option<Duration>) -> &MemoryStore {
        bump(&self.inner.stats.local);
        if let Some(lives) = lives {
            let until = Instant::now() + lives;
            let mut local_until = self.inner.local_until.lock();
            if local_until.is_none_or(|u| u < until) {
                *local_until = Some(until);
            }
        }
        &self.inner.local
    }

    /// Whether memory may still hold live entries written while degraded.
    fn local_may_hold_entries(&self) -> bool {
        self.inner
            .local_until
            .lock()
            .is_some_and(|u| u > Instant::now())
    }
}

/// Try the primary every `probe_every` until it answers; stop early if the store is gone.
/// A fixed interval, not a backoff: a probe costs one bounded operation, and it bounds how
/// long a replica keeps counting alone after Redis is back.
async fn probe(inner: Weak<Inner>) {
    loop {
        let Some(every) = inner.upgrade().map(|i| i.probe_every) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.primary.get(PROBE_KEY).await {
            Ok(_) => {
                inner.reserving_locally.store(false, Ordering::Relaxed);
                inner.degraded.send_replace(false);
                bump(&inner.stats.recoveries);
                tracing::info!("store recovered: answering from the primary again");
                return;
            }
            Err(err) => {
                bump(&inner.stats.probe_failures);
                tracing::debug!(error = %err, "store probe failed");
            }
        }
    }
}

/// `a` and `b` counted together: a slot frees when the older of their oldest entries
/// leaves (`retry_after` is zero for an empty window).
fn union(a: Window, b: Window) -> Window {
    let retry_after = match (a.count, b.count) {
        (0, _) => b.retry_after,
        (_, 0) => a.retry_after,
        _ => a.retry_after.min(b.retry_after),
    };
    Window {
        reserved: a.reserved || b.reserved,
        count: a.count + b.count,
        retry_after,
    }
}

#[async_trait]
impl Store for FallbackStore {
    async fn reserve(
        &self,
        key: &str,
        id: &str,
        window: Duration,
        limit: u64,
    ) -> Result<Window, StoreError> {
        if !self.reserves_locally() {
            // A limit of 0 never reserves: this reads the local window without taking a
            // slot.
            let held = if self.local_may_hold_entries() {
                Some(self.inner.local.reserve(key, id, window, 0).await?)
            } else {
                None
            };
            let room = limit.saturating_sub(held.map_or(0, |w| w.count));
            let shared = self.inner.primary.reserve(key, id, window, room);
            if let Some(shared) = self.reservation(shared).await {
                return Ok(match held {
                    Some(held) => union(shared, held),
                    None => shared,
                });
            }
        }
        self.local(Some(window))
            .reserve(key, id, window, limit)
            .await
    }

    async fn release(&self, key: &str, id: &str) -> Result<(), StoreError> {
        // The slot may have been taken on either side of an outage; releasing an id a side
        // does not hold is a no-op. Reservations go to the primary until one fails there,
        // degraded or not, and so do their releases.
        let local = self.reserves_locally();
        if local || self.is_degraded() || self.local_may_hold_entries() {
            self.inner.local.release(key, id).await?;
        }
        if local {
            bump(&self.inner.stats.local);
        } else {
            // A failure here has nothing to fall back to: the slot expires with its window.
            let _ = self.primary(self.inner.primary.release(key, id)).await;
        }
        Ok(())
    }

    /// [`FallbackStore::reserve`] for every window at once: one primary call, one
    /// operation in the stats. A primary failure answers the whole batch locally.
    async fn reserve_many(
        &self,
        id: &str,
        windows: &[WindowSpec<'_>],
    ) -> Result<Vec<Window>, StoreError> {
        if !self.reserves_locally() {
            let held = if self.local_may_hold_entries() {
                let peek: Vec<WindowSpec<'_>> = windows
                    .iter()
                    .map(|w| WindowSpec { limit: 0, ..*w })
                    .collect();
                Some(self.inner.local.reserve_many(id, &peek).await?)
            } else {
                None
            };
            let room: Vec<WindowSpec<'_>> = windows
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let used = held.as_ref().and_then(|h| h.get(i)).map_or(0, |h| h.count);
                    WindowSpec {
                        limit: w.limit.saturating_sub(used),
                        ..*w
                    }
                })
                .collect();
            let shared = self.inner.primary.reserve_many(id, &room);
            if let Some(shared) = self.reservation(shared).await {
                return Ok(match held {
                    Some(held) => shared
                        .into_iter()
                        .zip(held)
                        .map(|(s, h)| union(s, h))
                        .collect(),
                    None => shared,
                });
            }
        }
        let longest = windows.iter().map(|w| w.window).max();
        self.local(longest).reserve_many(id, windows).await
    }

    async fn release_many(&self, keys: &[&str], id: &str) -> Result<(), StoreError> {
        let local = self.reserves_locally();
        if local || self.is_degraded() || self.local_may_hold_entries() {
            self.inner.local.release_many(keys, id).await?;
        }
        if local {
            bump(&self.inner.stats.local);
        } else {
            let _ = self
                .primary(self.inner.primary.release_many(keys, id))
                .await;
        }
        Ok(())
    }

    async fn count(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        if !self.is_degraded() {
            if let Some(shared) = self.primary(self.inner.primary.count(key, window)).await {
                let held = if self.local_may_hold_entries() {
                    self.inner.local.count(key, window).await?
                } else {
                    0
                };
                return Ok(shared + held);
            }
        }
        self.local(None).count(key, window).await
    }

    /// Added to the primary; while memory may hold counts an outage made, reads add them.
    async fn tally(
        &self,
        add: &[Counter<'_>],
        read: &[Counter<'_>],
    ) -> Result<Vec<u64>, StoreError> {
        if !self.is_degraded() {
            if let Some(shared) = self.primary(self.inner.primary.tally(add, read)).await {
                if !self.local_may_hold_entries() {
                    return Ok(shared);
                }
                let held = self.inner.local.tally(&[], read).await?;
                return Ok(shared.into_iter().zip(held).map(|(s, h)| s + h).collect());
            }
        }
        let longest = add.iter().map(|c| c.window + c.width()).max();
        self.local(longest).tally(add, read).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.is_degraded() {
            match self.primary(self.inner.primary.get(key)).await {
                Some(Some(value)) => return Ok(Some(value)),
                Some(None) if !self.local_may_hold_entries() => return Ok(None),
                // Absent from the primary: it may have been written here during an outage.
                Some(None) => return self.inner.local.get(key).await,
                None => {}
            }
        }
        self.local(None).get(key).await
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        if !self.is_degraded() {
            if self.local_may_hold_entries() {
                // Replace what an outage left here, so a later read cannot find it once
                // the primary's copy expires first.
                self.inner.local.put(key, value, ttl).await?;
            }
            if self
                .primary(self.inner.primary.put(key, value, ttl))
                .await
                .is_some()
            {
                return Ok(());
            }
        }
        self.local(Some(ttl)).put(key, value, ttl).await
    }

    /// Appended on the primary. While memory may hold what an outage wrote, read as
    /// [`Store::get`] answers (the primary's copy first, else memory's) and rewritten as
    /// [`Store::put`] writes, so a record begun during the outage goes on growing.
    async fn append(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        max_len: usize,
    ) -> Result<bool, StoreError> {
        if !self.is_degraded() && !self.local_may_hold_entries() {
            if let Some(appended) = self
                .primary(self.inner.primary.append(key, value, ttl, max_len))
                .await
            {
                return Ok(appended);
            }
        }
        super::append_by_rewrite(self, key, value, ttl, max_len).await
    }

    async fn take_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        if !self.is_degraded() {
            if let Some(first) = self.primary(self.inner.primary.take_once(key, ttl)).await {
                // A nonce spent here during an outage stays spent.
                if first && self.local_may_hold_entries() {
                    return self.inner.local.take_once(key, ttl).await;
                }
                return Ok(first);
            }
        }
        self.local(Some(ttl)).take_once(key, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A primary that fails while `down` is set; its `get` alone also while `gets_down`
    /// is.
    struct Flaky {
        store: MemoryStore,
        down: watch::Receiver<bool>,
        gets_down: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreError> {
            if *self.down.borrow() {
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Store for Flaky {
        async fn reserve(
            &self,
            key: &str,
            id: &str,
            window: Duration,
            limit: u64,
        ) -> Result<Window, StoreError> {
            self.check()?;
            self.store.reserve(key, id, window, limit).await
        }
        async fn release(&self, key: &str, id: &str) -> Result<(), StoreError> {
            self.check()?;
            self.store.release(key, id).await
        }
        async fn tally(
            &self,
            add: &[Counter<'_>],
            read: &[Counter<'_>],
        ) -> Result<Vec<u64>, StoreError> {
            self.check()?;
            self.store.tally(add, read).await
        }
        async fn count(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
            self.check()?;
            self.store.count(key, window).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.check()?;
            if self.gets_down.load(Ordering::Relaxed) {
                return Err(StoreError::Timeout);
            }
            self.store.get(key).await
        }
        async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
            self.check()?;
            self.store.put(key, value, ttl).await
        }
        async fn take_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
            self.check()?;
            self.store.take_once(key, ttl).await
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const PROBE: Duration = Duration::from_secs(1);

    fn flaky() -> (FallbackStore, MemoryStore, watch::Sender<bool>) {
        let (store, shared, down, _) = flaky_gets();
        (store, shared, down)
    }

    fn flaky_gets() -> (
        FallbackStore,
        MemoryStore,
        watch::Sender<bool>,
        Arc<AtomicBool>,
    ) {
        let (down, rx) = watch::channel(false);
        let shared = MemoryStore::new(1000);
        let gets_down = Arc::new(AtomicBool::new(false));
        let primary = Flaky {
            store: shared.clone(),
            down: rx,
            gets_down: gets_down.clone(),
        };
        let store = FallbackStore::new(Arc::new(primary), MemoryStore::new(1000), PROBE);
        (store, shared, down, gets_down)
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_stay_shared_while_only_other_operations_fail() {
        let (store, shared, down, gets_down) = flaky_gets();
        gets_down.store(true, Ordering::Relaxed);
        assert_eq!(store.get("flow").await.unwrap(), None);
        assert!(store.is_degraded(), "a failed read degrades the store");
        for id in ["a", "b", "c"] {
            assert!(store.reserve("k", id, HOUR, 3).await.unwrap().reserved);
        }
        assert!(
            !store.reserve("k", "d", HOUR, 3).await.unwrap().reserved,
            "the shared window decides, not an empty local one"
        );
        assert_eq!(shared.count("k", HOUR).await.unwrap(), 3);
        let batch = store.reserve_many("e", &[spec("k", 3)]).await.unwrap();
        assert!(!batch[0].reserved);
        store.release("k", "a").await.unwrap();
        assert_eq!(
            shared.count("k", HOUR).await.unwrap(),
            2,
            "released where it was reserved"
        );

        // A reservation that fails itself moves reservations to memory, until the
        // primary answers again.
        down.send_replace(true);
        assert!(store.reserve("k2", "f", HOUR, 1).await.unwrap().reserved);
        down.send_replace(false);
        let local = store.reserve("k2", "g", HOUR, 1).await.unwrap();
        assert!(!local.reserved, "answered by the local window that holds f");
        assert_eq!(shared.count("k2", HOUR).await.unwrap(), 0);
        gets_down.store(false, Ordering::Relaxed);
        recovered(&store).await;
        assert!(store.reserve("k3", "h", HOUR, 1).await.unwrap().reserved);
        assert_eq!(shared.count("k3", HOUR).await.unwrap(), 1, "shared again");
    }

    async fn recovered(store: &FallbackStore) {
        let mut rx = store.subscribe();
        tokio::time::timeout(10 * PROBE, rx.wait_for(|d| !d))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn outage_is_answered_locally_and_heals_after_a_probe() {
        let (store, shared, down) = flaky();
        assert!(store.reserve("k", "a", HOUR, 3).await.unwrap().reserved);
        assert_eq!(shared.count("k", HOUR).await.unwrap(), 1);

        down.send_replace(true);
        let w = store.reserve("k", "b", HOUR, 3).await.unwrap();
        assert!(w.reserved);
        assert_eq!(w.count, 1, "the local window starts empty");
        assert!(store.is_degraded());
        assert_eq!(shared.count("k", HOUR).await.unwrap(), 1);

        let probed = async {
            while store.stats().probe_failures.load(Ordering::Relaxed) < 2 {
                tokio::time::sleep(PROBE / 10).await;
            }
        };
        tokio::time::timeout(10 * PROBE, probed).await.unwrap();
        assert!(store.is_degraded(), "still down: still degraded");
        down.send_replace(false);
        recovered(&store).await;

        let c = store.stats().snapshot();
        assert_eq!((c.fallbacks, c.recoveries), (1, 1));
        assert!(c.probe_failures >= 2, "{c:?}");
        assert_eq!(c.primary_unavailable, 1, "one failure, then no more tries");
    }

    #[tokio::test(start_paused = true)]
    async fn what_an_outage_used_stays_used_after_recovery() {
        let (store, shared, down) = flaky();
        down.send_replace(true);
        for id in ["a", "b"] {
            assert!(store.reserve("k", id, HOUR, 3).await.unwrap().reserved);
        }
        assert!(store.take_once("nonce", HOUR).await.unwrap());
        store.put("flow", b"sms", HOUR).await.unwrap();
        down.send_replace(false);
        recovered(&store).await;

        let w = store.reserve("k", "c", HOUR, 3).await.unwrap();
        assert!(w.reserved);
        assert_eq!(w.count, 3);
        assert!(!store.reserve("k", "d", HOUR, 3).await.unwrap().reserved);
        assert_eq!(
            shared.count("k", HOUR).await.unwrap(),
            1,
            "only c is shared"
        );
        assert_eq!(store.count("k", HOUR).await.unwrap(), 3);
        assert!(!store.take_once("nonce", HOUR).await.unwrap());
        assert_eq!(
            store.get("flow").await.unwrap().as_deref(),
            Some(&b"sms"[..])
        );

        store.release("k", "a").await.unwrap();
        assert!(store.reserve("k", "e", HOUR, 3).await.unwrap().reserved);

        // Once the outage's entries have expired, the shared store alone decides.
        tokio::time::advance(HOUR).await;
        assert_eq!(store.count("k", HOUR).await.unwrap(), 0);
        assert!(store.take_once("nonce", HOUR).await.unwrap());
    }

    fn spec(key: &str, limit: u64) -> WindowSpec<'_> {
        WindowSpec {
            key,
            window: HOUR,
            limit,
        }
    }

    fn held(windows: &[Window]) -> Vec<(bool, u64)> {
        windows.iter().map(|w| (w.reserved, w.count)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_falls_back_as_one_operation_and_counts_like_single_reservations() {
        let (store, shared, down) = flaky();
        let windows = [spec("phone", 3), spec("flow", 1)];
        let w = store.reserve_many("a", &windows).await.unwrap();
        assert_eq!(held(&w), [(true, 1), (true, 1)]);
        assert_eq!(shared.count("flow", HOUR).await.unwrap(), 1);

        down.send_replace(true);
        let w = store.reserve_many("b", &windows).await.unwrap();
        assert_eq!(
            held(&w),
            [(true, 1), (true, 1)],
            "local windows start empty"
        );
        assert!(store.is_degraded());
        let w = store.reserve_many("c", &windows).await.unwrap();
        assert_eq!(held(&w), [(true, 2), (false, 1)]);
        store.release_many(&["phone", "flow"], "c").await.unwrap();
        let c = store.stats().snapshot();
        assert_eq!((c.primary_ok, c.primary_unavailable, c.local), (1, 1, 3));

        down.send_replace(false);
        recovered(&store).await;
        // Shared and local entries add up, window by window, as for single reservations.
        let w = store.reserve_many("d", &windows).await.unwrap();
        assert_eq!(held(&w), [(true, 3), (false, 2)]);
        assert_eq!(shared.count("phone", HOUR).await.unwrap(), 2);
        assert_eq!(shared.count("flow", HOUR).await.unwrap(), 1);
        store.release_many(&["phone", "flow"], "b").await.unwrap();
        store.release_many(&["phone"], "a").await.unwrap();
        let w = store.reserve_many("e", &windows).await.unwrap();
        assert_eq!(held(&w), [(true, 2), (false, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_append_goes_to_the_primary_and_a_record_begun_in_an_outage_grows_on() {
        let (store, shared, down) = flaky();
        assert!(store.append("up", b"a", HOUR, 8).await.unwrap());
        assert_eq!(shared.get("up").await.unwrap().as_deref(), Some(&b"a"[..]));

        down.send_replace(true);
        assert!(store.append("out", b"b", HOUR, 8).await.unwrap());
        assert_eq!(shared.get("out").await.unwrap(), None, "kept in memory");

        down.send_replace(false);
        recovered(&store).await;
        assert!(store.append("out", b"c", HOUR, 8).await.unwrap());
        assert_eq!(
            shared.get("out").await.unwrap().as_deref(),
            Some(&b"bc"[..]),
            "the outage's record carried over to the primary"
        );
        assert!(
            !store.append("out", b"1234567", HOUR, 8).await.unwrap(),
            "bound"
        );
    }
}
