//! The in-process store: the embedded default, and the fallback when Redis is unreachable.
//!
//! Keys are spread over shards, each behind a short-held mutex (never across an `.await`).
//! Every entry expires, and the total is bounded: a shard that is full first drops what has
//! expired, then evicts, and counts each eviction.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use hashbrown::hash_table::{Entry as TableEntry, HashTable};

use super::{Counter, Store, StoreError, Window, WindowSpec};

const SHARDS: usize = 32;

/// A cheap-to-clone handle to one in-process store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Mutex<Shard>>,
    /// Keyed with random keys: where a key lands, shard and slot, cannot be computed
    /// outside the process, so nobody can crowd one shard to evict its keys.
    hasher: RandomState,
    /// Bucket numbers of counters count from here.
    epoch: Instant,
    per_shard_cap: usize,
    evictions: AtomicU64,
}

struct Shard {
    map: Map,
}

/// A key and its hash, computed once: the hash picks the shard (bits 32..) and the slot
/// in it (the table's own bits: the lowest and the top seven), so one SipHash per lookup.
struct Key<'a> {
    text: &'a str,
    hash: u64,
}

/// One shard's entries, found by a hash computed once per call ([`Key`]).
struct Map {
    table: HashTable<(Box<str>, Slot)>,
    hasher: RandomState,
}

impl Map {
    fn get(&self, key: &Key<'_>) -> Option<&Slot> {
        self.table
            .find(key.hash, |(k, _)| **k == *key.text)
            .map(|(_, slot)| slot)
    }

    fn get_mut(&mut self, key: &Key<'_>) -> Option<&mut Slot> {
        self.table
            .find_mut(key.hash, |(k, _)| **k == *key.text)
            .map(|(_, slot)| slot)
    }

    fn contains_key(&self, key: &Key<'_>) -> bool {
        self.get(key).is_some()
    }

    /// Put `slot` under `key`, replacing what was there.
    fn insert(&mut self, key: &Key<'_>, slot: Slot) -> &mut Slot {
        let hasher = &self.hasher;
        match self.table.entry(
            key.hash,
            |(k, _)| **k == *key.text,
            |(k, _)| hasher.hash_one(&**k),
        ) {
            TableEntry::Occupied(e) => {
                let entry = e.into_mut();
                entry.1 = slot;
                &mut entry.1
            }
            TableEntry::Vacant(e) => &mut e.insert((key.text.into(), slot)).into_mut().1,
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn clear(&mut self) {
        self.table.clear();
    }

    fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        self.table.retain(|(_, slot)| keep(slot));
    }

    /// Drop one entry, any; false when there was none.
    fn evict_one(&mut self) -> bool {
        self.table.extract_if(|_| true).next().is_some()
    }
}

enum Slot {
    /// Reservation times and ids, oldest first; expires with its newest entry.
    Window {
        hits: VecDeque<(Instant, HitId)>,
        window: Duration,
    },
    Value {
        bytes: Vec<u8>,
        expires: Instant,
    },
    Mark {
        expires: Instant,
    },
    /// The bucketed counters of one key, one per series; expires with the longest-lived.
    Counter {
        series: Vec<Series>,
        expires: Instant,
    },
}

/// One series of a counter key: (bucket number, count), oldest first, at most its bucket
/// count.
struct Series {
    id: u8,
    width: Duration,
    buckets: VecDeque<(u64, u64)>,
}

impl Slot {
    fn expired(&self, now: Instant) -> bool {
        match self {
            Slot::Window { hits, window } => hits.back().is_none_or(|(t, _)| *t + *window <= now),
            Slot::Value { expires, .. }
            | Slot::Mark { expires }
            | Slot::Counter { expires, .. } => *expires <= now,
        }
    }
}

impl MemoryStore {
    /// A store holding at most about `max_entries` keys.
    pub fn new(max_entries: usize) -> Self {
        let per_shard_cap = (max_entries / SHARDS).max(1);
        let hasher = RandomState::new();
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS)
                    .map(|_| {
                        Mutex::new(Shard {
                            map: Map {
                                table: HashTable::new(),
                                hasher: hasher.clone(),
                            },
                        })
                    })
                    .collect(),
                hasher,
                epoch: Instant::now(),
                per_shard_cap,
                evictions: AtomicU64::new(0),
            }),
        }
    }

    /// Forget everything: counters, learned flows, proofs (the demo's reset).
    pub fn clear(&self) {
        for shard in &self.inner.shards {
            shard.lock().map.clear();
        }
    }

    /// Entries evicted to stay within the bound since start.
    pub(crate) fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Keys currently held, expired or not.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key<'a>(&self, text: &'a str) -> Key<'a> {
        Key {
            text,
            hash: self.inner.hasher.hash_one(text),
        }
    }

    fn shard(&self, key: &Key<'_>) -> &Mutex<Shard> {
        &self.inner.shards[((key.hash >> 32) as usize) % SHARDS]
    }

    /// Make room for one more key in `shard`.
    fn make_room(&self, shard: &mut Shard, now: Instant) {
        if shard.map.len() < self.inner.per_shard_cap {
            return;
        }
        shard.map.retain(|slot| !slot.expired(now));
        while shard.map.len() >= self.inner.per_shard_cap && shard.map.evict_one() {
            self.inner.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

/// A reservation's id as a window keeps it: the UUIDs the gateway makes as their 128 bits,
/// inline (a window holds one per forwarded send, so this saves an allocation and about
/// 40 bytes each); any other id as its text.
#[derive(PartialEq, Eq)]
enum HitId {
    Uuid(u128),
    Other(Box<str>),
}

impl HitId {
    fn new(id: &str) -> Self {
        // Only the canonical form, so that one id has one representation.
        let mut canonical = uuid::Uuid::encode_buffer();
        match uuid::Uuid::try_parse(id) {
            Ok(u) if u.hyphenated().encode_lower(&mut canonical) == id => Self::Uuid(u.as_u128()),
            _ => Self::Other(id.into()),
        }
    }
}

fn trim(hits: &mut VecDeque<(Instant, HitId)>, window: Duration, now: Instant) {
    while hits.front().is_some_and(|(t, _)| *t + window <= now) {
        hits.pop_front();
    }
}

/// Reserve one hit of `id` in `slot` (made a window if it held a value) at `now`.
fn reserve_in(
    slot: &mut Slot,
    id: &str,
    window: Duration,
    limit: u64,
    now: Instant,
) -> Result<Window, StoreError> {
    if !matches!(slot, Slot::Window { .. }) {
        *slot = Slot::Window {
            hits: VecDeque::new(),
            window,
        };
    }
    let Slot::Window { hits, window: w } = slot else {
        return Err(StoreError::Unavailable("window slot".into()));
    };
    *w = window;
    trim(hits, window, now);
    let reserved = (hits.len() as u64) < limit;
    if reserved {
        hits.push_back((now, HitId::new(id)));
    }
    let retry_after = match hits.front() {
        Some((t, _)) if !reserved => (*t + window).saturating_duration_since(now),
        _ => Duration::ZERO,
    };
    Ok(Window {
        reserved,
        count: hits.len() as u64,
        retry_after,
    })
}

impl MemoryStore {
    /// One reservation at `now`, under the key's shard lock. A key already there is
    /// found with one lookup and no allocation; only a new key is copied in.
    fn reserve_at(
        &self,
        key: &str,
        id: &str,
        window: Duration,
        limit: u64,
        now: Instant,
    ) -> Result<Window, StoreError> {
        let key = self.key(key);
        let mut guard = self.shard(&key).lock();
        let shard = &mut *guard;
        if let Some(slot) = shard.map.get_mut(&key) {
            return reserve_in(slot, id, window, limit, now);
        }
        self.make_room(shard, now);
        let slot = shard.map.insert(
            &key,
            Slot::Window {
                hits: VecDeque::new(),
                window,
            },
        );
        reserve_in(slot, id, window, limit, now)
    }

    /// The bucket `now` falls in for `counter`, and the oldest bucket its window still
    /// counts.
    /// `since` is `now`'s distance from the store's epoch in microseconds ([`Self::since`]).
    fn buckets_at(counter: &Counter<'_>, since: u64) -> (u64, u64) {
        let width = u64::try_from(counter.width().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let current = since / width;
        let oldest = (current + 1).saturating_sub(u64::from(counter.buckets.max(1)));
        (current, oldest)
    }

    /// Microseconds from the store's epoch to `now`, which bucket numbers count from.
    fn since(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.inner.epoch).as_micros())
            .unwrap_or(u64::MAX)
    }

    /// Add one to each of `group`, counters of one key, under one lock and one lookup.
    fn add_at(&self, group: &[Counter<'_>], now: Instant, since: u64) {
        let Some(first) = group.first() else {
            return;
        };
        let key = self.key(first.key);
        let mut guard = self.shard(&key).lock();
        let shard = &mut *guard;
        if !matches!(shard.map.get(&key), Some(Slot::Counter { .. })) {
            if !shard.map.contains_key(&key) {
                self.make_room(shard, now);
            }
            shard.map.insert(
                &key,
                Slot::Counter {
                    series: Vec::with_capacity(group.len()),
                    expires: now,
                },
            );
        }
        let Some(Slot::Counter { series, expires }) = shard.map.get_mut(&key) else {
            return;
        };
        for counter in group {
            let (current, oldest) = Self::buckets_at(counter, since);
            let width = counter.width();
            *expires = (*expires).max(now + counter.window + width);
            let at = match series.iter().position(|s| s.id == counter.series) {
                Some(at) => at,
                None => {
                    series.push(Series {
                        id: counter.series,
                        width,
                        buckets: VecDeque::new(),
                    });
                    series.len() - 1
                }
            };
            let s = &mut series[at];
            // A series of another bucket width (its window was reconfigured) starts again.
            if s.width != width {
                s.width = width;
                s.buckets.clear();
            }
            while s.buckets.front().is_some_and(|(b, _)| *b < oldest) {
                s.buckets.pop_front();
            }
            match s.buckets.back_mut() {
                Some((b, n)) if *b == current => *n += 1,
                _ => s.buckets.push_back((current, 1)),
            }
        }
    }

    /// The sums of `group`, counters of one key, under one lock and one lookup.
    fn read_at(&self, group: &[Counter<'_>], now: Instant, since: u64, out: &mut Vec<u64>) {
        let Some(first) = group.first() else {
            return;
        };
        let key = self.key(first.key);
        let shard = self.shard(&key).lock();
        let series = match shard.map.get(&key) {
            Some(Slot::Counter { series, expires }) if *expires > now => series.as_slice(),
            _ => &[],
        };
        for counter in group {
            let (_, oldest) = Self::buckets_at(counter, since);
            let sum = series
                .iter()
                .find(|s| s.id == counter.series && s.width == counter.width())
                .map_or(0, |s| {
                    s.buckets
                        .iter()
                        .filter(|(b, _)| *b >= oldest)
                        .map(|(_, n)| n)
                        .sum()
                });
            out.push(sum);
        }
    }

    fn release_now(&self, key: &str, id: &str) {
        let key = self.key(key);
        let mut shard = self.shard(&key).lock();
        if let Some(Slot::Window { hits, .. }) = shard.map.get_mut(&key) {
            let id = HitId::new(id);
            if let Some(pos) = hits.iter().position(|(_, h)| *h == id) {
                hits.remove(pos);
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn reserve(
        &self,
        key: &str,
        id: &str,
        window: Duration,
        limit: u64,
    ) -> Result<Window, StoreError> {
        self.reserve_at(key, id, window, limit, Instant::now())
    }

    async fn release(&self, key: &str, id: &str) -> Result<(), StoreError> {
        self.release_now(key, id);
        Ok(())
    }

    /// Every window at the same instant, as the Redis store does with one server `TIME`.
    async fn reserve_many(
        &self,
        id: &str,
        windows: &[WindowSpec<'_>],
    ) -> Result<Vec<Window>, StoreError> {
        let now = Instant::now();
        windows
            .iter()
            .map(|w| self.reserve_at(w.key, id, w.window, w.limit, now))
            .collect()
    }

    async fn release_many(&self, keys: &[&str], id: &str) -> Result<(), StoreError> {
        for key in keys {
            self.release_now(key, id);
        }
        Ok(())
    }

    async fn count(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let now = Instant::now();
        let key = self.key(key);
        let mut shard = self.shard(&key).lock();
        Ok(match shard.map.get_mut(&key) {
            Some(Slot::Window { hits, .. }) => {
                trim(hits, window, now);
                hits.len() as u64
            }
            _ => 0,
        })
    }

    async fn tally(
        &self,
        add: &[Counter<'_>],
        read: &[Counter<'_>],
    ) -> Result<Vec<u64>, StoreError> {
        super::check_series(add, read)?;
        let now = Instant::now();
        let since = self.since(now);
        for group in add.chunk_by(|a, b| a.key == b.key) {
            self.add_at(group, now, since);
        }
        let mut out = Vec::with_capacity(read.len());
        for group in read.chunk_by(|a, b| a.key == b.key) {
            self.read_at(group, now, since, &mut out);
        }
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        let key = self.key(key);
        let shard = self.shard(&key).lock();
        Ok(match shard.map.get(&key) {
            Some(Slot::Value { bytes, expires }) if *expires > now => Some(bytes.clone()),
            _ => None,
        })
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let key = self.key(key);
        let mut shard = self.shard(&key).lock();
        if !shard.map.contains_key(&key) {
            self.make_room(&mut shard, now);
        }
        shard.map.insert(
            &key,
            Slot::Value {
                bytes: value.to_vec(),
                expires: now + ttl,
            },
        );
        Ok(())
    }

    async fn append(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        max_len: usize,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let key = self.key(key);
        let mut guard = self.shard(&key).lock();
        let shard = &mut *guard;
        if let Some(Slot::Value { bytes, expires }) = shard.map.get_mut(&key) {
            if *expires > now {
                if bytes.len() + value.len() > max_len {
                    return Ok(false);
                }
                bytes.extend_from_slice(value);
                *expires = now + ttl;
                return Ok(true);
            }
        }
        if value.len() > max_len {
            return Ok(false);
        }
        if !shard.map.contains_key(&key) {
            self.make_room(shard, now);
        }
        shard.map.insert(
            &key,
            Slot::Value {
                bytes: value.to_vec(),
                expires: now + ttl,
            },
        );
        Ok(true)
    }

    async fn take_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let key = self.key(key);
        let mut shard = self.shard(&key).lock();
        match shard.map.get(&key) {
            Some(slot) if !slot.expired(now) => Ok(false),
            Some(_) => {
                shard.map.insert(&key, Slot::Mark { expires: now + ttl });
                Ok(true)
            }
            None => {
                self.make_room(&mut shard, now);
                shard.map.insert(&key, Slot::Mark { expires: now + ttl });
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_SERIES;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn window_holds_at_the_limit_and_resets_after_it() {
        let store = MemoryStore::new(1000);
        for i in 0..3 {
            let w = store.reserve("k", &i.to_string(), HOUR, 3).await.unwrap();
            assert!(w.reserved, "hit {i} within the limit");
        }
        let w = store.reserve("k", "x", HOUR, 3).await.unwrap();
        assert!(!w.reserved);
        assert_eq!(w.count, 3);
        assert_eq!(w.retry_after, HOUR);

        tokio::time::advance(HOUR - Duration::from_millis(1)).await;
        assert!(!store.reserve("k", "y", HOUR, 3).await.unwrap().reserved);
        tokio::time::advance(Duration::from_millis(1)).await;
        let w = store.reserve("k", "z", HOUR, 3).await.unwrap();
        assert!(w.reserved, "the window has moved past the first hits");
        assert_eq!(w.count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_sums_its_buckets_inside_the_window_and_holds_no_more() {
        let store = MemoryStore::new(1000);
        let c = Counter {
            key: "c",
            series: 0,
            window: HOUR,
            buckets: 4,
        };
        let other = Counter { key: "d", ..c };
        assert_eq!(
            store.tally(&[], &[c]).await.unwrap(),
            vec![0],
            "never added"
        );
        assert_eq!(store.tally(&[c], &[c, other]).await.unwrap(), vec![1, 0]);
        store.tally(&[c, other], &[]).await.unwrap();
        // One bucket is 15 minutes. Three more buckets, one add in each.
        for _ in 0..3 {
            tokio::time::advance(HOUR / 4).await;
            store.tally(&[c], &[]).await.unwrap();
        }
        assert_eq!(store.tally(&[], &[c, other]).await.unwrap(), vec![5, 1]);
        // The first bucket (three adds) leaves the window whole.
        tokio::time::advance(HOUR / 4).await;
        assert_eq!(store.tally(&[], &[c, other]).await.unwrap(), vec![3, 0]);
        store.tally(&[c], &[]).await.unwrap();
        let c_key = store.key("c");
        match store.shard(&c_key).lock().map.get(&c_key) {
            Some(Slot::Counter { series, .. }) => assert_eq!(series[0].buckets.len(), 4),
            _ => panic!("not a counter"),
        }
        // Another width is another counter: it starts again.
        let wider = Counter {
            window: 2 * HOUR,
            ..c
        };
        assert_eq!(
            store.tally(&[wider], &[wider, c]).await.unwrap(),
            vec![1, 0]
        );
        tokio::time::advance(3 * HOUR).await;
        assert_eq!(store.tally(&[], &[wider]).await.unwrap(), vec![0]);
        assert!(
            store
                .shard(&c_key)
                .lock()
                .map
                .get(&c_key)
                .unwrap()
                .expired(Instant::now()),
            "an idle counter expires"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_append_grows_a_value_up_to_its_bound_and_keeps_it_for_its_ttl() {
        let store = MemoryStore::new(1000);
        assert!(store.append("r", b"ab", HOUR, 4).await.unwrap());
        assert!(store.append("r", b"cd", HOUR, 4).await.unwrap());
        assert!(
            !store.append("r", b"e", HOUR, 4).await.unwrap(),
            "past the bound"
        );
        assert_eq!(store.get("r").await.unwrap().as_deref(), Some(&b"abcd"[..]));
        tokio::time::advance(HOUR).await;
        assert_eq!(store.get("r").await.unwrap(), None);
        assert!(
            store.append("r", b"x", HOUR, 4).await.unwrap(),
            "expired: anew"
        );
        assert_eq!(store.get("r").await.unwrap().as_deref(), Some(&b"x"[..]));
        store.take_once("m", HOUR).await.unwrap();
        assert!(
            store.append("m", b"y", HOUR, 4).await.unwrap(),
            "a mark is replaced"
        );
        assert_eq!(store.get("m").await.unwrap().as_deref(), Some(&b"y"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn the_series_of_one_key_share_its_entry_each_with_its_own_window() {
        let store = MemoryStore::new(1000);
        let day = Counter {
            key: "k",
            series: 0,
            window: 24 * HOUR,
            buckets: 24,
        };
        let recent = Counter {
            series: 1,
            window: HOUR / 6,
            buckets: 6,
            ..day
        };
        let other = Counter { series: 2, ..day };
        store.tally(&[day, recent], &[]).await.unwrap();
        store.tally(&[day, recent, other], &[]).await.unwrap();
        assert_eq!(store.len(), 1, "one entry for the key's three series");
        assert_eq!(
            store.tally(&[], &[day, recent, other]).await.unwrap(),
            vec![2, 2, 1]
        );
        // The short series empties; the key and its long series live on.
        tokio::time::advance(HOUR).await;
        assert_eq!(
            store.tally(&[], &[day, recent, other]).await.unwrap(),
            vec![2, 0, 1]
        );
        assert!(
            store
                .tally(
                    &[Counter {
                        series: MAX_SERIES,
                        ..day
                    }],
                    &[]
                )
                .await
                .is_err(),
            "a series past the bound is refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn released_slot_is_free_again() {
        let store = MemoryStore::new(1000);
        assert!(store.reserve("k", "a", HOUR, 1).await.unwrap().reserved);
        assert!(!store.reserve("k", "b", HOUR, 1).await.unwrap().reserved);
        store.release("k", "a").await.unwrap();
        assert!(store.reserve("k", "c", HOUR, 1).await.unwrap().reserved);
        assert_eq!(store.count("k", HOUR).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn release_takes_back_exactly_the_hit_of_its_id() {
        let store = MemoryStore::new(1000);
        let a = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
        let b = "1b4e28ba-2fa1-41d2-883f-0016d3cca428";
        // The same UUID in capitals or without hyphens is another id.
        let upper = "1B4E28BA-2FA1-41D2-883F-0016D3CCA427";
        let simple = "1b4e28ba2fa141d2883f0016d3cca427";
        for id in [a, b, upper, simple, "not-a-uuid"] {
            assert!(store.reserve("k", id, HOUR, 10).await.unwrap().reserved);
        }
        assert_eq!(store.count("k", HOUR).await.unwrap(), 5);
        store.release("k", "unknown").await.unwrap();
        store
            .release("k", "1b4e28ba-2fa1-41d2-883f-0016d3cca429")
            .await
            .unwrap();
        assert_eq!(store.count("k", HOUR).await.unwrap(), 5, "no hit of theirs");
        store.release("k", upper).await.unwrap();
        store.release("k", a).await.unwrap();
        store.release("k", a).await.unwrap();
        assert_eq!(store.count("k", HOUR).await.unwrap(), 3, "one hit each");
        store.release("k", simple).await.unwrap();
        store.release("k", "not-a-uuid").await.unwrap();
        store.release("k", b).await.unwrap();
        assert_eq!(store.count("k", HOUR).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_reserves_each_window_on_its_own_at_one_instant() {
        let store = MemoryStore::new(1000);
        let windows = [
            WindowSpec {
                key: "phone",
                window: HOUR,
                limit: 1,
            },
            WindowSpec {
                key: "ip",
                window: Duration::from_secs(60),
                limit: 2,
            },
        ];
        let first = store.reserve_many("a", &windows).await.unwrap();
        assert!(first.iter().all(|w| w.reserved && w.count == 1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = store.reserve_many("b", &windows).await.unwrap();
        assert_eq!(
            second,
            [
                Window {
                    reserved: false,
                    count: 1,
                    retry_after: HOUR - Duration::from_secs(1),
                },
                Window {
                    reserved: true,
                    count: 2,
                    retry_after: Duration::ZERO,
                },
            ]
        );
        store.release_many(&["phone", "ip"], "a").await.unwrap();
        assert_eq!(store.count("phone", HOUR).await.unwrap(), 0);
        assert_eq!(store.count("ip", HOUR).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn values_expire() {
        let store = MemoryStore::new(1000);
        store
            .put("v", b"sms", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(store.get("v").await.unwrap().as_deref(), Some(&b"sms"[..]));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(store.get("v").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn take_once_is_single_use_until_expiry() {
        let store = MemoryStore::new(1000);
        assert!(store.take_once("n", Duration::from_secs(5)).await.unwrap());
        assert!(!store.take_once("n", Duration::from_secs(5)).await.unwrap());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(store.take_once("n", Duration::from_secs(5)).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded() {
        let store = MemoryStore::new(SHARDS * 4);
        for i in 0..10_000 {
            store.put(&format!("k{i}"), b"x", HOUR).await.unwrap();
        }
        assert!(store.len() <= SHARDS * 4);
        assert!(store.evictions() >= 10_000 - (SHARDS * 4) as u64);
    }
}
