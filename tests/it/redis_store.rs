//! The Redis store and the fallback store against a real `redis-server` (one per test, on
//! a free loopback port): the memory store's behaviour with real TTLs measured by Redis,
//! one exact limit across replicas, and serving through a Redis outage.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::fixtures::eventually;
use crate::fixtures::redis::{RedisCluster, RedisSentinel, RedisServer};
use otpgate::store::{
    Counter, FallbackStore, MemoryStore, RedisSettings, RedisStore, SentinelSettings, Store,
    StoreError, Window, WindowSpec, MAX_SERIES,
};

const HOUR: Duration = Duration::from_secs(3600);
/// Short enough to watch expire, long enough to tell apart from scheduling noise.
const SHORT: Duration = Duration::from_millis(200);
/// Redis keeps wall-clock time and the test a monotonic clock; allow for their rounding.
const SLACK: Duration = Duration::from_millis(3);
const PROBE: Duration = Duration::from_millis(50);

/// The per-operation budget in these tests: above the 50 ms default, so a loaded CI
/// machine does not turn a slow answer into a fallback the test did not ask for.
const BUDGET: Duration = Duration::from_millis(250);

fn settings(server: &RedisServer) -> RedisSettings {
    RedisSettings {
        url: server.url(),
        timeout: BUDGET,
        ..RedisSettings::default()
    }
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&settings(server)).await.unwrap()
}

/// A gateway replica: Redis first, its own memory when Redis fails.
async fn replica(server: &RedisServer) -> FallbackStore {
    let primary = Arc::new(store(server).await);
    FallbackStore::new(primary, MemoryStore::new(10_000), PROBE)
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn window_holds_at_the_limit_and_reopens_when_the_oldest_leaves() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let start = Instant::now();
    for i in 0..3 {
        let w = store.reserve("k", &i.to_string(), SHORT, 3).await.unwrap();
        assert!(w.reserved, "hit {i} within the limit");
        assert_eq!(w.count, i + 1);
    }
    let denied_at = Instant::now();
    let w = store.reserve("k", "x", SHORT, 3).await.unwrap();
    assert!(!w.reserved, "the fourth hit is over the limit");
    assert_eq!(w.count, 3);
    assert!(
        w.retry_after <= SHORT && w.retry_after > SHORT / 2,
        "retry after {:?}",
        w.retry_after
    );

    eventually(10 * SHORT, "the window reopens", || async {
        store.reserve("k", "z", SHORT, 3).await.unwrap().reserved
    })
    .await;
    assert!(
        start.elapsed() + SLACK >= SHORT,
        "reopened after {:?}, before the window passed",
        start.elapsed()
    );
    assert!(
        denied_at.elapsed() + SLACK >= w.retry_after,
        "reopened after {:?}, before the promised retry-after {:?}",
        denied_at.elapsed(),
        w.retry_after
    );
}

#[tokio::test]
async fn released_slot_is_free_again() {
    let server = RedisServer::start();
    let store = store(&server).await;
    assert!(store.reserve("k", "a", HOUR, 1).await.unwrap().reserved);
    assert!(!store.reserve("k", "b", HOUR, 1).await.unwrap().reserved);
    store.release("k", "a").await.unwrap();
    store.release("k", "never-taken").await.unwrap();
    store.release("no-such-window", "a").await.unwrap();
    assert!(store.reserve("k", "c", HOUR, 1).await.unwrap().reserved);
    assert_eq!(store.count("k", HOUR).await.unwrap(), 1);
}

#[tokio::test]
async fn values_expire() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let start = Instant::now();
    store.put("v", b"sms", SHORT).await.unwrap();
    assert_eq!(store.get("v").await.unwrap().as_deref(), Some(&b"sms"[..]));
    store.put("v", b"email", SHORT).await.unwrap();
    assert_eq!(
        store.get("v").await.unwrap().as_deref(),
        Some(&b"email"[..]),
        "a put replaces"
    );
    eventually(10 * SHORT, "the value expires", || async {
        store.get("v").await.unwrap().is_none()
    })
    .await;
    assert!(
        start.elapsed() + SLACK >= SHORT,
        "gone after {:?}",
        start.elapsed()
    );
    assert_eq!(store.get("never-put").await.unwrap(), None);
}

#[tokio::test]
async fn take_once_is_single_use_until_expiry() {
    let server = RedisServer::start();
    let store = store(&server).await;
    let start = Instant::now();
    assert!(store.take_once("n", SHORT).await.unwrap());
    assert!(
        !store.take_once("n", SHORT).await.unwrap(),
        "a replayed nonce"
    );
    eventually(10 * SHORT, "the mark expires", || async {
        store.take_once("n", SHORT).await.unwrap()
    })
    .await;
    assert!(
        start.elapsed() + SLACK >= SHORT,
        "usable again after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn keys_carry_the_prefix_and_windows_expire_with_their_newest_entry() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&RedisSettings {
        key_prefix: "tenant-a:".into(),
        ..settings(&server)
    })
    .await
    .unwrap();
    let b = RedisStore::connect(&RedisSettings {
        key_prefix: "tenant-b:".into(),
        ..settings(&server)
    })
    .await
    .unwrap();
    assert!(a.reserve("phone", "1", HOUR, 1).await.unwrap().reserved);
    assert!(
        b.reserve("phone", "1", HOUR, 1).await.unwrap().reserved,
        "another prefix is another deployment"
    );
    a.put("flow", b"x", HOUR).await.unwrap();
    assert_eq!(b.get("flow").await.unwrap(), None);

    let mut conn = raw(&server).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg("tenant-a:phone")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= HOUR.as_millis() as i64,
        "an idle window must not live forever: PTTL {pttl}"
    );
    let value: Vec<u8> = redis::cmd("GET")
        .arg("tenant-a:flow")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, b"x");
}

#[tokio::test]
async fn a_key_holding_another_kind_reads_as_empty() {
    let server = RedisServer::start();
    let store = store(&server).await;
    store.put("k", b"value", HOUR).await.unwrap();
    assert_eq!(store.count("k", HOUR).await.unwrap(), 0);
    store.release("k", "a").await.unwrap();
    assert!(store.reserve("k", "a", HOUR, 1).await.unwrap().reserved);
    assert_eq!(store.get("k").await.unwrap(), None);
}

fn spec(key: &str, window: Duration, limit: u64) -> WindowSpec<'_> {
    WindowSpec { key, window, limit }
}

/// Reserved and count: what a batch must answer exactly as single reservations do.
fn held(windows: &[Window]) -> Vec<(bool, u64)> {
    windows.iter().map(|w| (w.reserved, w.count)).collect()
}

/// The same windows, reserved in one script call under one prefix and one by one under
/// another, answer the same at every step: filling up to each limit, past it, after a
/// release, and once a window's entries have left it.
#[tokio::test]
async fn a_batch_answers_like_single_reservations() {
    let server = RedisServer::start();
    let prefixed = |prefix: &str| RedisSettings {
        key_prefix: prefix.into(),
        ..settings(&server)
    };
    let batch = RedisStore::connect(&prefixed("batch:")).await.unwrap();
    let single = RedisStore::connect(&prefixed("single:")).await.unwrap();
    let one_by_one = |id: String, windows: Vec<WindowSpec<'static>>| {
        let single = &single;
        async move {
            let mut answers = Vec::new();
            for w in &windows {
                answers.push(single.reserve(w.key, &id, w.window, w.limit).await.unwrap());
            }
            answers
        }
    };
    let windows = [
        spec("phone", HOUR, 2),
        spec("ip", HOUR, 3),
        spec("flow", HOUR, 1),
    ];

    let mut steps = Vec::new();
    for i in 0..4 {
        let id = format!("r{i}");
        let together = batch.reserve_many(&id, &windows).await.unwrap();
        let apart = one_by_one(id, windows.to_vec()).await;
        assert_eq!(held(&together), held(&apart), "reservation {i}");
        for (w, spec) in together.iter().zip(&windows) {
            let told = if w.reserved {
                w.retry_after == Duration::ZERO
            } else {
                w.retry_after > Duration::ZERO && w.retry_after <= spec.window
            };
            assert!(
                told,
                "{} retry after {:?}, reserved {}",
                spec.key, w.retry_after, w.reserved
            );
        }
        steps.push(held(&together));
    }
    assert_eq!(
        steps,
        [
            vec![(true, 1), (true, 1), (true, 1)],
            vec![(true, 2), (true, 2), (false, 1)],
            vec![(false, 2), (true, 3), (false, 1)],
            vec![(false, 2), (false, 3), (false, 1)],
        ]
    );

    // r0 is given back everywhere in one call; releasing what was never taken is harmless.
    let keys: Vec<&str> = windows.iter().map(|w| w.key).collect();
    batch.release_many(&keys, "r0").await.unwrap();
    batch.release_many(&["no-such-window"], "r0").await.unwrap();
    for key in &keys {
        single.release(key, "r0").await.unwrap();
    }
    let together = batch.reserve_many("r4", &windows).await.unwrap();
    let apart = one_by_one("r4".into(), windows.to_vec()).await;
    assert_eq!(held(&together), held(&apart));
    assert_eq!(held(&together), [(true, 2), (true, 3), (true, 1)]);

    // A short window empties while the others keep their entries.
    let with_short = [spec("phone", HOUR, 2), spec("burst", SHORT, 1)];
    batch.reserve_many("r5", &with_short).await.unwrap();
    one_by_one("r5".into(), with_short.to_vec()).await;
    eventually(10 * SHORT, "the short windows empty", || async {
        batch.count("burst", SHORT).await.unwrap() == 0
            && single.count("burst", SHORT).await.unwrap() == 0
    })
    .await;
    let together = batch.reserve_many("r6", &with_short).await.unwrap();
    let apart = one_by_one("r6".into(), with_short.to_vec()).await;
    assert_eq!(held(&together), held(&apart));
    assert_eq!(held(&together), [(false, 2), (true, 1)]);

    // Every window expires with its newest entry.
    let mut conn = raw(&server).await;
    for key in ["phone", "ip", "flow"] {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("batch:{key}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > 0 && pttl <= HOUR.as_millis() as i64, "{key}: {pttl}");
    }
    assert_eq!(batch.reserve_many("r7", &[]).await.unwrap(), []);
}

#[tokio::test]
async fn a_batch_replaces_a_key_holding_another_kind() {
    let server = RedisServer::start();
    let store = store(&server).await;
    store.put("taken", b"value", HOUR).await.unwrap();
    store.put("kept", b"value", HOUR).await.unwrap();
    let answers = store
        .reserve_many("a", &[spec("fresh", HOUR, 1), spec("taken", HOUR, 1)])
        .await
        .unwrap();
    assert_eq!(held(&answers), [(true, 1), (true, 1)]);
    assert_eq!(store.get("taken").await.unwrap(), None);
    assert_eq!(store.count("taken", HOUR).await.unwrap(), 1);
    // Releasing leaves a value alone, as a single release does.
    store.release_many(&["kept", "taken"], "a").await.unwrap();
    assert_eq!(
        store.get("kept").await.unwrap().as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(store.count("taken", HOUR).await.unwrap(), 0);
}

/// Two replicas, 40 concurrent requests for a limit of 3: Redis grants exactly 3. Two
/// replicas counting in their own memory grant 3 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_exact_limit_under_concurrency() {
    let server = RedisServer::start();
    let replicas: [Arc<dyn Store>; 2] = [
        Arc::new(store(&server).await),
        Arc::new(store(&server).await),
    ];
    let granted = race(&replicas).await;
    assert_eq!(granted, 3, "Redis grants exactly the limit across replicas");
    for replica in &replicas {
        assert_eq!(replica.count("phone", HOUR).await.unwrap(), 3);
    }

    let alone: [Arc<dyn Store>; 2] = [
        Arc::new(MemoryStore::new(1000)),
        Arc::new(MemoryStore::new(1000)),
    ];
    let granted_alone = race(&alone).await;
    eprintln!("limit 3, 40 concurrent requests over 2 replicas: Redis granted {granted}, two memory stores granted {granted_alone}");
}

/// The same through batches: each window keeps its own exact limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_exact_limits_when_reserving_in_batches() {
    const REQUESTS: usize = 40;
    let server = RedisServer::start();
    let replicas: [Arc<dyn Store>; 2] = [
        Arc::new(replica(&server).await),
        Arc::new(replica(&server).await),
    ];
    let barrier = Arc::new(Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let store = replicas[i % 2].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let windows = [spec("phone", HOUR, 3), spec("ip", HOUR, 25)];
                let answers = store
                    .reserve_many(&format!("req-{i}"), &windows)
                    .await
                    .unwrap();
                (answers[0].reserved, answers[1].reserved)
            })
        })
        .collect();
    let (mut phone, mut ip) = (0, 0);
    for task in tasks {
        let (p, i) = task.await.unwrap();
        phone += usize::from(p);
        ip += usize::from(i);
    }
    assert_eq!((phone, ip), (3, 25));
    assert_eq!(replicas[0].count("phone", HOUR).await.unwrap(), 3);
    assert_eq!(replicas[1].count("ip", HOUR).await.unwrap(), 25);
}

/// Bucketed counters: sums inside the window, exact across replicas adding at once, at
/// most one field per bucket, forgotten when idle, started again at another width or over
/// a key of another kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_are_exact_across_replicas_and_stay_bounded() {
    const ADDS: usize = 60;
    let server = RedisServer::start();
    let replicas: [Arc<dyn Store>; 2] = [
        Arc::new(replica(&server).await),
        Arc::new(replica(&server).await),
    ];
    let day = |key| Counter {
        key,
        series: 0,
        window: 24 * HOUR,
        buckets: 24,
    };
    let barrier = Arc::new(Barrier::new(ADDS));
    let tasks: Vec<_> = (0..ADDS)
        .map(|i| {
            let store = replicas[i % 2].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.tally(&[day("sends"), day("all")], &[]).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let read = replicas[1]
        .tally(&[day("all")], &[day("sends"), day("all"), day("never")])
        .await
        .unwrap();
    assert_eq!(read, vec![ADDS as u64, ADDS as u64 + 1, 0]);

    // 100 ms buckets, four to a window: a count leaves whole when its bucket does.
    let store = store(&server).await;
    let short = Counter {
        key: "short",
        series: 0,
        window: Duration::from_millis(400),
        buckets: 4,
    };
    for _ in 0..12 {
        store.tally(&[short], &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut conn = raw(&server).await;
    // A series is a hash of its own, named by its key (the hash tag), series, bucket width
    // (µs) and bucket count.
    let short_hash = "{otpgate:short}|0:100000:4";
    let fields: u64 = redis::cmd("HLEN")
        .arg(short_hash)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=4).contains(&fields),
        "at most the window's buckets: {fields}"
    );
    let held = store.tally(&[], &[short]).await.unwrap()[0];
    assert!(
        (4..=8).contains(&held),
        "about 400 ms of adds every 60 ms: {held}"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(short_hash)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 500,
        "an idle counter expires: PTTL {pttl}"
    );
    tokio::time::sleep(Duration::from_millis(520)).await;
    assert_eq!(store.tally(&[], &[short]).await.unwrap(), vec![0]);

    let wider = Counter {
        window: 48 * HOUR,
        ..day("sends")
    };
    assert_eq!(
        store.tally(&[wider], &[wider, day("sends")]).await.unwrap(),
        vec![1, ADDS as u64],
        "another width is another counter: it starts again, the old one lives out its expiry"
    );
    // The series of one key: a hash each, in one cluster slot, each with its own window;
    // the short one empties without taking the key's long series with it.
    let long = day("several");
    let brief = Counter { series: 1, ..short };
    let third = Counter { series: 2, ..long };
    store.tally(&[long, brief], &[]).await.unwrap();
    assert_eq!(
        store.tally(&[third], &[long, brief, third]).await.unwrap(),
        vec![1, 1, 1]
    );
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*otpgate:several*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "{otpgate:several}|0:3600000000:24",
            "{otpgate:several}|2:3600000000:24"
        ],
        "a hash per series, the key as their hash tag"
    );
    tokio::time::sleep(Duration::from_millis(520)).await;
    assert_eq!(
        store.tally(&[], &[long, brief, third]).await.unwrap(),
        vec![1, 0, 1]
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg("{otpgate:several}|2:3600000000:24")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 20 * 3600 * 1000, "kept for the long series: {pttl}");
    assert!(
        store
            .tally(
                &[Counter {
                    series: MAX_SERIES,
                    ..long
                }],
                &[]
            )
            .await
            .is_err(),
        "a series past the bound is refused"
    );

    let _: () = redis::cmd("SET")
        .arg("{otpgate:value}|0:3600000000:24")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.tally(&[], &[day("value")]).await.unwrap(), vec![0]);
    assert_eq!(
        store.tally(&[day("value")], &[day("value")]).await.unwrap(),
        vec![1],
        "a key of another kind is replaced"
    );
}

/// A record that only grows: appended in one step up to its bound, kept for its TTL, a key
/// of another kind replaced.
#[tokio::test]
async fn appends_grow_a_value_up_to_its_bound() {
    let server = RedisServer::start();
    let store = store(&server).await;
    assert!(store.append("rec", b"ab", HOUR, 4).await.unwrap());
    assert!(store.append("rec", b"cd", HOUR, 4).await.unwrap());
    assert!(
        !store.append("rec", b"e", HOUR, 4).await.unwrap(),
        "past the bound"
    );
    assert_eq!(
        store.get("rec").await.unwrap().as_deref(),
        Some(&b"abcd"[..])
    );
    assert!(store
        .append("brief", b"x", Duration::from_millis(200), 4)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.get("brief").await.unwrap(), None, "kept for its TTL");
    let counter = Counter {
        key: "counted",
        series: 0,
        window: HOUR,
        buckets: 4,
    };
    store.tally(&[counter], &[]).await.unwrap();
    assert!(store.append("counted", b"y", HOUR, 4).await.unwrap());
    assert_eq!(
        store.get("counted").await.unwrap().as_deref(),
        Some(&b"y"[..])
    );
}

async fn race(replicas: &[Arc<dyn Store>; 2]) -> usize {
    const REQUESTS: usize = 40;
    let barrier = Arc::new(Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let store = replicas[i % 2].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .reserve("phone", &format!("req-{i}"), HOUR, 3)
                    .await
                    .unwrap()
                    .reserved
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    granted
}

/// Exact under a slow reply: two replicas at the default budgets (50 ms per operation, 1 s
/// per reservation), 40 concurrent reservations for a limit of 3, with Redis frozen for
/// 120 ms just before each burst (`CLIENT PAUSE 120 ALL`, or `DEBUG SLEEP 0.12`, every
/// other repetition): exactly 3 granted, 100 times in 100. Before reservations had their
/// own budget, the pause sent both replicas to their empty local windows: 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_reply_never_grants_more_than_the_limit() {
    const REQUESTS: usize = 40;
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let defaults = RedisSettings {
        url: server.url(),
        ..RedisSettings::default()
    };
    assert_eq!(defaults.timeout, Duration::from_millis(50), "the default");
    let replica = || async {
        let primary = Arc::new(RedisStore::connect(&defaults).await.unwrap());
        Arc::new(FallbackStore::new(primary, MemoryStore::new(10_000), PROBE))
    };
    let replicas = [replica().await, replica().await];
    let mut over = Vec::new();
    for rep in 0..100 {
        let key = format!("phone-{rep}");
        let barrier = Arc::new(Barrier::new(REQUESTS + 1));
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let store = replicas[i % 2].clone();
                let (barrier, key) = (barrier.clone(), key.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .reserve(&key, &format!("req-{i}"), HOUR, 3)
                        .await
                        .unwrap()
                        .reserved
                })
            })
            .collect();
        // Frozen first, then the burst: every reservation meets the frozen server.
        if rep % 2 == 0 {
            server.pause_clients(120);
        } else {
            let mut sleeper = raw(&server).await;
            tokio::spawn(async move {
                let _: Result<(), _> = redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg("0.12")
                    .query_async(&mut sleeper)
                    .await;
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        barrier.wait().await;
        let mut granted = 0;
        for task in tasks {
            granted += usize::from(task.await.unwrap());
        }
        if granted != 3 {
            over.push((rep, granted));
        }
    }
    let timeouts: u64 = replicas
        .iter()
        .map(|r| r.stats().snapshot().primary_timeout)
        .sum();
    assert!(
        over.is_empty(),
        "repetitions that granted another number than 3: {over:?}"
    );
    assert_eq!(
        timeouts, 0,
        "every late reservation was waited for, none given up"
    );
}

#[tokio::test]
async fn a_hung_server_costs_one_timeout_not_a_stuck_request() {
    let server = RedisServer::start();
    let store = store(&server).await;
    store.put("v", b"1", HOUR).await.unwrap();

    server.pause();
    let start = Instant::now();
    let err = store.get("v").await.unwrap_err();
    assert!(matches!(err, StoreError::Timeout), "{err:?}");
    assert!(start.elapsed() < 2 * BUDGET, "{:?}", start.elapsed());

    server.resume();
    eventually(
        Duration::from_secs(5),
        "the server answers again",
        || async {
            store
                .get("v")
                .await
                .is_ok_and(|v| v.as_deref() == Some(&b"1"[..]))
        },
    )
    .await;
}

#[tokio::test]
async fn a_restarted_server_is_found_again_without_help() {
    let mut server = RedisServer::start();
    let store = store(&server).await;
    assert!(store.reserve("k", "a", HOUR, 3).await.unwrap().reserved);

    server.stop();
    let start = Instant::now();
    let err = store.reserve("k", "b", HOUR, 3).await.unwrap_err();
    assert!(start.elapsed() < 2 * BUDGET, "{:?}", start.elapsed());
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    server.restart();
    // The restarted server is empty and has no scripts loaded: they are loaded again.
    eventually(Duration::from_secs(5), "the store reconnects", || async {
        store.reserve("k", "c", HOUR, 3).await.is_ok()
    })
    .await;
    assert_eq!(store.count("k", HOUR).await.unwrap(), 1);
}

#[tokio::test]
async fn fallback_keeps_answering_through_an_outage_and_shares_counts_again() {
    let mut server = RedisServer::start();
    let a = replica(&server).await;
    let b = replica(&server).await;
    let mut a_degraded = a.subscribe();

    assert!(a.reserve("phone", "1", HOUR, 3).await.unwrap().reserved);
    assert_eq!(
        b.count("phone", HOUR).await.unwrap(),
        1,
        "shared through Redis"
    );
    assert!(!a.is_degraded());

    server.stop();
    // Every operation answers, from memory, without an error.
    let w = a.reserve("phone", "2", HOUR, 3).await.unwrap();
    assert!(w.reserved);
    assert_eq!(w.count, 1, "the local window starts empty");
    assert!(a.is_degraded());
    assert!(*a_degraded.borrow_and_update());
    a.put("flow", b"sms", HOUR).await.unwrap();
    assert_eq!(a.get("flow").await.unwrap().as_deref(), Some(&b"sms"[..]));
    assert!(a.take_once("nonce", HOUR).await.unwrap());
    assert!(
        !a.take_once("nonce", HOUR).await.unwrap(),
        "still single use"
    );
    a.release("phone", "2").await.unwrap();
    assert_eq!(a.count("phone", HOUR).await.unwrap(), 0);

    // While degraded each replica counts alone: the limit holds per replica.
    let mut granted = 0;
    for (i, replica) in [&a, &b].into_iter().cycle().take(10).enumerate() {
        let w = replica
            .reserve("other", &i.to_string(), HOUR, 3)
            .await
            .unwrap();
        granted += usize::from(w.reserved);
    }
    assert_eq!(granted, 6, "3 per replica while Redis is down");
    assert!(b.is_degraded());
    let stats = a.stats().snapshot();
    assert_eq!(stats.fallbacks, 1);
    assert!(stats.local >= 8, "{stats:?}");

    server.restart();
    for replica in [&a, &b] {
        let mut degraded = replica.subscribe();
        tokio::time::timeout(Duration::from_secs(10), degraded.wait_for(|d| !d))
            .await
            .expect("switched back to Redis")
            .unwrap();
    }
    assert_eq!(a.stats().snapshot().recoveries, 1);

    // Shared again: two replicas, one limit.
    assert!(a.reserve("fresh", "1", HOUR, 3).await.unwrap().reserved);
    assert!(a.reserve("fresh", "2", HOUR, 3).await.unwrap().reserved);
    let w = b.reserve("fresh", "3", HOUR, 3).await.unwrap();
    assert!(w.reserved);
    assert_eq!(w.count, 3);
    assert!(!a.reserve("fresh", "4", HOUR, 3).await.unwrap().reserved);
    assert_eq!(b.count("fresh", HOUR).await.unwrap(), 3);

    // What a replica used during the outage still counts for that replica.
    assert!(!a.reserve("other", "late", HOUR, 3).await.unwrap().reserved);
    assert!(!a.take_once("nonce", HOUR).await.unwrap());
    assert_eq!(a.get("flow").await.unwrap().as_deref(), Some(&b"sms"[..]));
    assert_eq!(b.get("flow").await.unwrap(), None, "never reached Redis");
}

#[tokio::test]
async fn fallback_starts_degraded_when_redis_is_down_at_startup() {
    let mut server = RedisServer::start();
    server.stop();
    let primary = RedisStore::connect_lazy(&settings(&server)).unwrap();
    let store = FallbackStore::new(Arc::new(primary), MemoryStore::new(1000), PROBE);

    assert!(store.reserve("k", "a", HOUR, 1).await.unwrap().reserved);
    assert!(!store.reserve("k", "b", HOUR, 1).await.unwrap().reserved);
    assert!(store.is_degraded());

    server.restart();
    tokio::time::timeout(Duration::from_secs(10), store.subscribe().wait_for(|d| !d))
        .await
        .expect("switched to Redis once it started")
        .unwrap();
    store.put("v", b"1", HOUR).await.unwrap();
    assert_eq!(
        store.get("v").await.unwrap().as_deref(),
        Some(&b"1"[..]),
        "read back from Redis"
    );
    assert!(store.stats().snapshot().primary_ok >= 2);
}

#[tokio::test]
async fn fallback_answers_within_the_budget_when_redis_hangs() {
    let server = RedisServer::start();
    let store = replica(&server).await;
    server.pause();
    let start = Instant::now();
    for i in 0..5 {
        assert!(
            store
                .reserve("k", &i.to_string(), HOUR, 10)
                .await
                .unwrap()
                .reserved
        );
    }
    // A reservation waits for its own, longer budget (the reply would decide).
    let reserve_budget = settings(&server).reserve_timeout;
    assert!(
        start.elapsed() < reserve_budget + BUDGET,
        "only the first operation waits for its timeout: {:?}",
        start.elapsed()
    );
    assert!(store.is_degraded());
    assert_eq!(store.stats().snapshot().primary_timeout, 1);

    server.resume();
    tokio::time::timeout(Duration::from_secs(10), store.subscribe().wait_for(|d| !d))
        .await
        .expect("switched back once Redis answered")
        .unwrap();
}

#[tokio::test]
async fn password_protected_server() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);

    let with_setting = RedisStore::connect(&RedisSettings {
        password: Some("s3cret-pw".into()),
        ..settings(&server)
    })
    .await
    .unwrap();
    with_setting.put("v", b"1", HOUR).await.unwrap();

    let with_url = RedisStore::connect(&RedisSettings {
        url: format!("redis://:s3cret-pw@127.0.0.1:{}", server.port()),
        ..settings(&server)
    })
    .await
    .unwrap();
    assert_eq!(with_url.get("v").await.unwrap().as_deref(), Some(&b"1"[..]));

    for password in [None, Some("wrong".to_owned())] {
        let result = RedisStore::connect(&RedisSettings {
            password: password.clone(),
            ..settings(&server)
        })
        .await;
        let Err(StoreError::Unavailable(message)) = result else {
            panic!("password {password:?} accepted");
        };
        assert!(
            message.to_lowercase().contains("auth") || message.contains("WRONGPASS"),
            "the error says what is wrong: {message}"
        );
        assert!(!message.contains("s3cret-pw"), "{message}");
    }
}

#[tokio::test]
async fn tls_server_with_a_private_ca() {
    let server = RedisServer::start_tls();
    let store = RedisStore::connect(&RedisSettings {
        ca_file: Some(server.ca_file()),
        ..settings(&server)
    })
    .await
    .unwrap();
    assert!(store.reserve("k", "a", HOUR, 1).await.unwrap().reserved);
    assert!(!store.reserve("k", "b", HOUR, 1).await.unwrap().reserved);

    let Err(untrusted) = RedisStore::connect(&settings(&server)).await else {
        panic!("a certificate outside the webpki roots is accepted");
    };
    assert!(
        untrusted.to_string().contains("certificate"),
        "the error says why: {untrusted}"
    );
}

/// An ACL user limited to otpgate's keys, as managed Redis services and hardened self-run
/// ones give each client; `default` switched off.
#[tokio::test]
async fn an_acl_user_from_the_configuration() {
    let server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "otpgate",
        "on",
        ">acl-pw",
        "~otpgate:*",
        "+@read",
        "+@write",
        "+@scripting",
        "+ping",
        "+time",
    ]);
    let settings = |server: &RedisServer| RedisSettings {
        key_prefix: "otpgate:".into(),
        ..settings(server)
    };
    let store = RedisStore::connect(&RedisSettings {
        username: Some("otpgate".into()),
        password: Some("acl-pw".into()),
        ..settings(&server)
    })
    .await
    .unwrap();
    assert!(store.reserve("k", "a", HOUR, 1).await.unwrap().reserved);
    let with_url = RedisStore::connect(&RedisSettings {
        url: format!("redis://otpgate:acl-pw@127.0.0.1:{}", server.port()),
        ..settings(&server)
    })
    .await
    .unwrap();
    assert!(!with_url.reserve("k", "b", HOUR, 1).await.unwrap().reserved);
    for user in [None, Some("default".to_owned()), Some("nobody".to_owned())] {
        let refused = RedisStore::connect(&RedisSettings {
            username: user.clone(),
            password: Some("acl-pw".into()),
            ..settings(&server)
        })
        .await;
        assert!(refused.is_err(), "user {user:?} accepted");
    }

    // The same through the configuration keys: the gateway's store is Redis, not the
    // fallback.
    let toml_for = |user: &str| {
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[store]\nbackend = \"redis\"\nkey_secret = \"k\"\n\
             [store.redis]\nurl = \"{}\"\nusername = \"{user}\"\npassword = \"acl-pw\"\n",
            server.url()
        )
    };
    let toml = toml_for("otpgate");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let (_, settings) = otpgate::config::load_with_env(Some(&path), Vec::new()).unwrap();
    let gw = otpgate::server::Server::bind(settings).await.unwrap();
    // Bind makes one store operation, so the store's state is known by now.
    let metrics = gw.metrics().render();
    assert!(
        metrics.contains("otpgate_store_degraded 0"),
        "the gateway fell back to memory: {metrics}"
    );
    // A wrong user is the fallback, and says so.
    let wrong = toml_for("nobody");
    std::fs::write(&path, wrong).unwrap();
    let (_, settings) = otpgate::config::load_with_env(Some(&path), Vec::new()).unwrap();
    let gw = otpgate::server::Server::bind(settings).await.unwrap();
    assert!(gw.metrics().render().contains("otpgate_store_degraded 1"));
}

/// `redis-cli`-style query on a fresh connection to `url`: the reply as text lines.
async fn ask(url: &str, args: &[&str]) -> redis::Value {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// The port Sentinel names for the master `name`.
async fn master_port(sentinel: &RedisSentinel, name: &str) -> Option<u16> {
    let mut conn = redis::Client::open(sentinel.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .ok()?;
    let addr: Vec<String> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(name)
        .query_async(&mut conn)
        .await
        .ok()?;
    addr.get(1)?.parse().ok()
}

/// Sentinel: the store finds the master through a real `redis-sentinel`, and follows a
/// failover (`SENTINEL FAILOVER`) under a steady load of reservations: no operation fails
/// (the fallback answers the moments in between), reservations land on the new master
/// without help, and a window replicated before the failover keeps its limit after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_names_the_master_and_a_failover_is_followed_under_load() {
    const NAME: &str = "otpgate-test";
    let master = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
    let replica_url = replica.url();
    eventually(Duration::from_secs(10), "the replica in sync", || {
        let url = replica_url.clone();
        async move {
            let info = ask(&url, &["INFO", "replication"]).await;
            matches!(&info, redis::Value::VerbatimString { text, .. } if text.contains("master_link_status:up"))
                || matches!(&info, redis::Value::BulkString(b) if String::from_utf8_lossy(b).contains("master_link_status:up"))
        }
    })
    .await;
    let sentinel = RedisSentinel::start(master.port(), NAME);
    let sentinel_url = sentinel.url();
    eventually(
        Duration::from_secs(15),
        "sentinel knows the replica",
        || {
            let url = sentinel_url.clone();
            async move {
                let replicas = ask(&url, &["SENTINEL", "REPLICAS", NAME]).await;
                matches!(replicas, redis::Value::Array(ref r) if !r.is_empty())
            }
        },
    )
    .await;

    let settings = RedisSettings {
        // Not used with Sentinel: nothing listens here.
        url: "redis://127.0.0.1:1".into(),
        timeout: BUDGET,
        sentinel: Some(SentinelSettings {
            master_name: NAME.into(),
            nodes: vec![sentinel.node()],
            ..SentinelSettings::default()
        }),
        ..RedisSettings::default()
    };
    let primary = Arc::new(RedisStore::connect(&settings).await.unwrap());
    let store = Arc::new(FallbackStore::new(primary, MemoryStore::new(10_000), PROBE));

    // A hot window at its limit, replicated before the failover.
    for i in 0..3 {
        assert!(
            store
                .reserve("hot", &format!("h{i}"), HOUR, 3)
                .await
                .unwrap()
                .reserved
        );
    }
    let on_master = ask(&master.url(), &["ZCARD", "otpgate:hot"]).await;
    assert_eq!(
        on_master,
        redis::Value::Int(3),
        "reserved on the master Sentinel named"
    );
    ask(&master.url(), &["WAIT", "1", "2000"]).await;

    // A steady load through the failover.
    let load = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut done = 0u64;
            for i in 0..u64::MAX {
                let key = format!("load-{i}");
                store.reserve(&key, "x", HOUR, 10).await.unwrap();
                done += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = ask(&sentinel.url(), &["SENTINEL", "FAILOVER", NAME]).await;
    let new_port = replica.port();
    eventually(
        Duration::from_secs(20),
        "sentinel names the replica",
        || async { master_port(&sentinel, NAME).await == Some(new_port) },
    )
    .await;
    let replica_url = replica.url();
    eventually(
        Duration::from_secs(20),
        "a reservation lands on the new master",
        || {
            let (store, url) = (store.clone(), replica_url.clone());
            async move {
                let _ = store.reserve("after", "a", HOUR, 10).await.unwrap();
                ask(&url, &["ZCARD", "otpgate:after"]).await == redis::Value::Int(1)
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the store shared again",
        || async { !store.is_degraded() },
    )
    .await;
    assert!(
        !store.reserve("hot", "h3", HOUR, 3).await.unwrap().reserved,
        "the hot window kept its limit through the failover"
    );
    assert!(!load.is_finished(), "the load never failed");
    load.abort();
    let c = store.stats().snapshot();
    eprintln!("sentinel failover under load: {c:?}");
}

/// A real three-master Redis Cluster: a store on it keeps one exact limit across two
/// replicas, answers batches and counters whose keys live in different slots (split into
/// one call per slot) as it does on one server, and its keys really are spread over the
/// masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_keeps_exact_limits_and_answers_across_slots() {
    let cluster = RedisCluster::start();
    let settings = RedisSettings {
        url: cluster.url(),
        timeout: BUDGET,
        cluster: true,
        ..RedisSettings::default()
    };
    let replicas: [Arc<dyn Store>; 2] = [
        Arc::new(RedisStore::connect(&settings).await.unwrap()),
        Arc::new(RedisStore::connect(&settings).await.unwrap()),
    ];
    assert_eq!(
        race(&replicas).await,
        3,
        "exact across replicas on a cluster"
    );
    let store = &replicas[0];

    // A batch over keys of different slots: as single reservations.
    let keys: Vec<String> = (0..12).map(|i| format!("batch-{i}")).collect();
    let specs: Vec<WindowSpec<'_>> = keys.iter().map(|k| spec(k, HOUR, 1)).collect();
    let first = store.reserve_many("a", &specs).await.unwrap();
    assert!(
        first.iter().all(|w| w.reserved && w.count == 1),
        "{first:?}"
    );
    let second = store.reserve_many("b", &specs).await.unwrap();
    assert!(second.iter().all(|w| !w.reserved && w.count == 1));
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    store.release_many(&names, "a").await.unwrap();
    let third = store.reserve_many("c", &specs).await.unwrap();
    assert!(third.iter().all(|w| w.reserved), "released in every slot");

    // Counters over several slots, added and read in one tally.
    let counters: Vec<&'static str> = (0..6)
        .map(|i| &*String::leak(format!("conv:k{i}")))
        .collect();
    let c = |key: &'static str, series| Counter {
        key,
        series,
        window: HOUR,
        buckets: 24,
    };
    let adds: Vec<Counter<'_>> = counters.iter().map(|&k| c(k, 0)).collect();
    let reads: Vec<Counter<'_>> = counters
        .iter()
        .rev()
        .flat_map(|&k| [c(k, 0), c(k, 1)])
        .collect();
    store.tally(&adds, &[]).await.unwrap();
    let sums = store.tally(&adds[..2], &reads).await.unwrap();
    let want: Vec<u64> = (0..6)
        .rev()
        .flat_map(|i| [if i < 2 { 2 } else { 1 }, 0])
        .collect();
    assert_eq!(sums, want);

    // Values, appends and nonces on a cluster.
    store.put("v", b"1", HOUR).await.unwrap();
    assert_eq!(store.get("v").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert!(store.append("r", b"ab", HOUR, 4).await.unwrap());
    assert!(store.take_once("n", HOUR).await.unwrap());
    assert!(!store.take_once("n", HOUR).await.unwrap());

    let mut spread = 0;
    for node in &cluster.nodes {
        if ask(&node.url(), &["DBSIZE"]).await != redis::Value::Int(0) {
            spread += 1;
        }
    }
    assert_eq!(spread, 3, "keys on every master");
}

/// A master of a real cluster (three masters, a replica each) fails over
/// (`CLUSTER FAILOVER` on its replica) during a steady burst of reservations from two
/// replicas of otpgate to one key: no operation fails, the limit stays exact (a manual
/// failover hands the replica every write first), and the burst goes on against the new
/// master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_failing_over_mid_burst_keeps_the_limit_exact() {
    const LIMIT: u64 = 20;
    let cluster = RedisCluster::start_with_replicas(1);
    let settings = RedisSettings {
        url: cluster.url(),
        cluster: true,
        ..RedisSettings::default()
    };
    let replica = || async {
        let primary = Arc::new(RedisStore::connect(&settings).await.unwrap());
        Arc::new(FallbackStore::new(primary, MemoryStore::new(10_000), PROBE))
    };
    let stores = [replica().await, replica().await];
    let hot = "otpgate:hot";
    let slot: i64 = match ask(&cluster.url(), &["CLUSTER", "KEYSLOT", hot]).await {
        redis::Value::Int(n) => n,
        other => panic!("{other:?}"),
    };
    let promoted = cluster.replica_of_slot(u16::try_from(slot).unwrap());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bursts: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(r, store)| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut granted, mut tries) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let w = store
                        .reserve("hot", &format!("r{r}-{tries}"), HOUR, LIMIT)
                        .await
                        .unwrap();
                    granted += u64::from(w.reserved);
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (granted, tries)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failover = crate::fixtures::redis::redis_cli(promoted, &["CLUSTER", "FAILOVER"]);
    assert!(failover.contains("OK"), "{failover}");
    let promoted_url = format!("redis://127.0.0.1:{promoted}");
    eventually(Duration::from_secs(15), "the replica promoted", || {
        let url = promoted_url.clone();
        async move {
            matches!(ask(&url, &["ROLE"]).await, redis::Value::Array(ref r)
                if r.first() == Some(&redis::Value::BulkString(b"master".to_vec())))
        }
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "both stores shared again",
        || async { stores.iter().all(|s| !s.is_degraded()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut granted, mut tries) = (0, 0);
    for b in bursts {
        let (g, t) = b.await.unwrap();
        granted += g;
        tries += t;
    }
    let counts: Vec<_> = stores.iter().map(|s| s.stats().snapshot()).collect();
    eprintln!("cluster failover mid-burst: {granted} granted of {tries} tries; {counts:?}");
    assert!(tries > 2 * LIMIT, "the burst outlasted the limit: {tries}");
    assert_eq!(
        ask(&promoted_url, &["ZCARD", hot]).await,
        redis::Value::Int(i64::try_from(LIMIT).unwrap()),
        "the new master holds the window"
    );
    assert_eq!(granted, LIMIT, "exact through the failover: {counts:?}");
}
