//! The Redis store: the state every replica shares, exact under concurrency.
//!
//! Each [`Store`] method is one round trip and atomic on the server: sliding windows are
//! Lua scripts over a sorted set, values and marks are single `SET` commands. A batch of
//! windows ([`Store::reserve_many`], [`Store::release_many`]) is one script call too,
//! whatever its size. Window timestamps come from the Redis server's clock (`TIME`), so
//! replicas whose clocks disagree still count the same window. Every key carries
//! [`RedisSettings::key_prefix`].
//!
//! # Counters without a script
//! A bucketed counter ([`Store::tally`]) needs no check-and-set, so it is plain commands in
//! one pipeline: each series of a key is a hash of its own (named by
//! `RedisStore::series_key`), its fields bucket numbers, its values counts. An add is
//! `HINCRBY` on the current bucket and `PEXPIRE` for the window and one bucket more; a read
//! is `HGETALL`, summed here over the window's buckets. When an add opens a bucket (its
//! count comes back 1), a second pipeline drops the buckets that have left the window, so a
//! hash holds at most its window's buckets. Bucket numbers follow each replica's clock: with
//! clocks in step (NTP), replicas add to and read the same buckets, and a skew of `s` moves
//! a count across a bucket's edge for `s` at most. (Lua would cost several times the
//! commands: Redis spent about 80 µs a call in the script this replaced.)
//!
//! Every operation is bounded by [`RedisSettings::timeout`], a reservation by the longer
//! [`RedisSettings::reserve_timeout`] (its late reply still decides); a slow server is
//! reported as [`StoreError::Timeout`], everything else that goes wrong as
//! [`StoreError::Unavailable`]. The connection is a [`ConnectionManager`] that reconnects
//! in the background after a connection error, so the store heals by itself when Redis
//! comes back.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisError, Script, TlsMode,
    Value,
};

use super::{Counter, Store, StoreError, Window, WindowSpec};

/// Where the Redis store connects and how long it waits.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS (verified against the
    /// webpki roots, or [`RedisSettings::ca_file`] when set).
    pub url: String,
    /// ACL user for `AUTH`; overrides one given in the URL.
    pub username: Option<String>,
    /// Password for `AUTH`; overrides one given in the URL.
    pub password: Option<String>,
    /// Prepended to every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Upper bound on one operation, connection wait included. The store sits on the
    /// request path, so this is a latency budget, not a patience setting.
    pub timeout: Duration,
    /// Upper bound on a reservation (`reserve`, `reserve_many`): longer than `timeout`,
    /// because a reservation's reply decides a send and the script may already have run
    /// when the reply is late.
    pub reserve_timeout: Duration,
    /// Upper bound on establishing a connection (TCP, TLS, `AUTH`).
    pub connect_timeout: Duration,
    /// PEM CA certificates to trust for `rediss://` instead of the webpki roots: a private
    /// CA or a self-hosted Redis.
    pub ca_file: Option<PathBuf>,
    /// Find the master through Sentinel, and follow it when it moves; `url`'s address is
    /// then not used.
    pub sentinel: Option<SentinelSettings>,
    /// `url` is one node of a Redis Cluster (cluster mode enabled): the others are found
    /// from it, each command goes to its key's slot.
    pub cluster: bool,
}

/// Where Sentinel is, and what it calls the master.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SentinelSettings {
    /// The name the Sentinels monitor the master under.
    pub master_name: String,
    /// `host:port` of each Sentinel.
    pub nodes: Vec<String>,
    /// TLS to the Sentinels and to the master (trusting `ca_file` when set).
    pub tls: bool,
    /// The Sentinels' own ACL user and password, when they have them.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("nodes", &self.nodes)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            username: None,
            password: None,
            key_prefix: "otpgate:".to_owned(),
            timeout: Duration::from_millis(50),
            reserve_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            ca_file: None,
            sentinel: None,
            cluster: false,
        }
    }
}

// The password, in the field or in the URL, must never reach a log line.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("reserve_timeout", &self.reserve_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// The URL with any userinfo (`user:password@`) replaced.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The connection: to one server (or the master Sentinel names), or to a cluster, which
/// routes each command to the master of its key's slot and follows redirects and
/// resharding itself.
#[derive(Clone)]
enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A cheap-to-clone handle to one Redis deployment.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection; `None` while Sentinel has not named a master yet, or no cluster
    /// node has answered yet.
    conn: parking_lot::RwLock<Option<Conn>>,
    /// With Sentinel: how to find the master again when it moves. With a cluster: how to
    /// connect when no node answered at start.
    follow: Option<Follow>,
    /// Cluster mode: a script's keys must share a slot, so calls are split by slot.
    cluster: bool,
    prefix: String,
    timeout: Duration,
    reserve_timeout: Duration,
    // `Script` sends EVALSHA and loads the body only when the server does not know it
    // (first use, or after a restart).
    reserve: Script,
    release: Script,
    count: Script,
    append: Script,
}

/// Reserve a slot for one id in each of several sliding-window logs, in one call.
///
/// KEYS: the windows, sorted sets of reservation ids scored by server time in µs.
/// ARGV: id, then window (µs) and limit for each key in turn. Returns
/// `{reserved 0|1, count, retry_after µs}` for each key in turn; `retry_after` (when the
/// oldest entry leaves) is worked out only for a window that refused, the one a client is
/// told to wait for. A single reservation is this script with one key.
///
/// Each window is reserved on its own, at one server time (`TIME`) for all. An entry
/// leaves the window when `t + window <= now`, as in the memory store. A key expires with
/// its newest entry: a reservation adds the newest and sets the key's life to the window,
/// a refusal adds nothing and leaves it. Idle windows cost nothing. A key holding another
/// kind of value (its trim fails) is replaced, as in the memory store. Four commands a
/// window reserved, three a window refused. Numbers are passed to `redis.call` directly
/// (Redis formats them with 17 digits); `tostring` would round µs timestamps to 14. An id
/// already in a window is refreshed rather than counted twice: callers use a fresh id per
/// reservation. `replicate_commands` lets Redis before 5.0 accept writes after the
/// non-deterministic `TIME`; later versions do so anyway.
const RESERVE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local id = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  local trimmed = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if type(trimmed) == 'table' and trimmed.err then redis.call('DEL', key) end
  local count = redis.call('ZCARD', key)
  local reserved = 0
  local retry = 0
  if count < limit then
    count = count + redis.call('ZADD', key, now, id)
    redis.call('PEXPIRE', key, math.ceil(window / 1000))
    reserved = 1
  else
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] then retry = tonumber(oldest[2]) + window - now end
  end
  out[#out + 1] = reserved
  out[#out + 1] = count
  out[#out + 1] = retry
end
return out
";

/// Remove one id from each of several sliding-window logs, in one call.
///
/// KEYS: the windows. ARGV: id. A key holding another kind of value is left alone, as
/// `release` does.
const RELEASE: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key).ok == 'zset' then redis.call('ZREM', key, ARGV[1]) end
end
return 0
";

/// Count the entries of a sliding window without changing it.
///
/// KEYS[1]: the window. ARGV: window (µs). Read-only: entries that left the window are
/// skipped here and trimmed by the next reservation.
const COUNT: &str = r"
local key = KEYS[1]
if redis.call('TYPE', key).ok ~= 'zset' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZCOUNT', key, string.format('(%.0f', now - tonumber(ARGV[1])), '+inf')
";

/// Append to a string within a bound, in one call. KEYS[1]: the string (a key of another
/// kind is replaced). ARGV: the bytes, the TTL (ms) and the longest the string may grow.
/// Returns 1 when appended, 0 when that would pass the bound.
const APPEND: &str = r"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'string' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
if redis.call('STRLEN', KEYS[1]) + #ARGV[1] > tonumber(ARGV[3]) then return 0 end
redis.call('APPEND', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// How long the kernel lets written data go unacknowledged before it drops the
/// connection. Without it a peer that vanished without a reset (a partition) would keep a
/// dead connection open, and the manager only reconnects after a connection error.
#[cfg(target_os = "linux")]
const DEAD_PEER_AFTER: Duration = Duration::from_secs(3);

/// Following the master through Sentinel. An operation that fails as a moved master would
/// (refused, dropped, timed out, or `READONLY`: the old master demoted to a replica) asks
/// the Sentinels for the master again, one question at a time and at most every
/// [`ASK_SENTINEL_EVERY`]; a new address gets a new connection.
struct Follow {
    source: Source,
    /// Held while connecting to a cluster: concurrent first operations share one attempt.
    connecting: tokio::sync::Mutex<()>,
    settings: RedisSettings,
    /// The master's address the connection goes to, `host:port`.
    master: parking_lot::Mutex<Option<String>>,
    /// When the Sentinels were last asked.
    asked: parking_lot::Mutex<Option<std::time::Instant>>,
}

enum Source {
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

const ASK_SENTINEL_EVERY: Duration = Duration::from_millis(200);

fn cluster_client(settings: &RedisSettings) -> Result<ClusterClient, StoreError> {
    let info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(format!("redis url: {e}")))?;
    let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    let mut b = ClusterClientBuilder::new(vec![info.clone()])
        .connection_timeout(settings.connect_timeout)
        // Our own budgets bound every call (`RedisStore::run_within`); redirects and
        // retries happen inside them.
        .response_timeout(settings.reserve_timeout.max(settings.timeout))
        .tcp_settings(tcp_settings());
    let user = settings
        .username
        .clone()
        .or_else(|| info.redis_settings().username().map(str::to_owned));
    let password = settings
        .password
        .clone()
        .or_else(|| info.redis_settings().password().map(str::to_owned));
    if let Some(user) = user {
        b = b.username(user);
    }
    if let Some(password) = password {
        b = b.password(password);
    }
    if tls {
        b = b.tls(TlsMode::Secure);
        if let Some(root) = ca(settings)? {
            b = b.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root),
            });
        }
    }
    b.build().map_err(unavailable)
}

/// A Sentinel node's address: `host:port`, a bracketed IPv6 host too.
fn sentinel_addr(node: &str, tls: bool) -> Result<ConnectionAddr, StoreError> {
    let bad = || StoreError::Unavailable(format!("sentinel node {node:?}: expected host:port"));
    let (host, port) = node.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok(if tls {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    })
}

fn sentinel_client(
    settings: &RedisSettings,
    s: &SentinelSettings,
) -> Result<SentinelClient, StoreError> {
    let nodes = s
        .nodes
        .iter()
        .map(|n| sentinel_addr(n, s.tls))
        .collect::<Result<Vec<_>, _>>()?;
    let tcp = tcp_settings();
    let mut b = SentinelClientBuilder::new(nodes, &s.master_name, SentinelServerType::Master)
        .map_err(unavailable)?
        .set_client_to_redis_tcp_settings(tcp.clone())
        .set_client_to_sentinel_tcp_settings(tcp);
    if let Some(user) = &settings.username {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(password) = &settings.password {
        b = b.set_client_to_redis_password(password);
    }
    if let Some(user) = &s.username {
        b = b.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &s.password {
        b = b.set_client_to_sentinel_password(password);
    }
    if s.tls {
        b = b
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(root) = ca(settings)? {
            b = b
                .set_client_to_redis_certificates(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root.clone()),
                })
                .set_client_to_sentinel_certificates(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                });
        }
    }
    b.build().map_err(unavailable)
}

/// The PEM of `ca_file`, when set.
fn ca(settings: &RedisSettings) -> Result<Option<Vec<u8>>, StoreError> {
    settings
        .ca_file
        .as_ref()
        .map(|path| {
            std::fs::read(path).map_err(|e| {
                StoreError::Unavailable(format!("redis ca file {}: {e}", path.display()))
            })
        })
        .transpose()
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % 16384
}

/// The indexes of `keys` grouped by cluster slot, in order of first appearance.
fn group_by_slot<'k>(keys: impl Iterator<Item = &'k [u8]>) -> Vec<Vec<usize>> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, key) in keys.enumerate() {
        let slot = slot(key);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Whether `e` is what a master that moved looks like from here.
fn moved(e: &RedisError) -> bool {
    e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
}

impl Follow {
    /// Ask the Sentinels for the master; a new address gets a new connection. `Err` when
    /// no Sentinel named one in time.
    async fn find_master(&self, inner: &Inner) -> Result<(), StoreError> {
        let timeout = self.settings.connect_timeout;
        let sentinel = match &self.source {
            Source::Sentinel(sentinel) => sentinel,
            Source::Cluster(client) => {
                // Once connected, the cluster connection follows the cluster itself.
                let _one_attempt = self.connecting.lock().await;
                if inner.conn.read().is_some() {
                    return Ok(());
                }
                let conn = tokio::time::timeout(timeout, client.get_async_connection())
                    .await
                    .map_err(|_| StoreError::Timeout)?
                    .map_err(unavailable)?;
                *inner.conn.write() = Some(Conn::Cluster(conn));
                return Ok(());
            }
        };
        let client = {
            let mut sentinel = sentinel.lock().await;
            tokio::time::timeout(timeout, sentinel.async_get_client())
                .await
                .map_err(|_| StoreError::Timeout)?
                .map_err(unavailable)?
        };
        let addr = client.get_connection_info().addr().to_string();
        if self.master.lock().as_deref() == Some(addr.as_str()) && inner.conn.read().is_some() {
            return Ok(());
        }
        let manager =
            ConnectionManager::new_lazy_with_config(client, manager_config(&self.settings))
                .map_err(unavailable)?;
        let before = self.master.lock().replace(addr.clone());
        *inner.conn.write() = Some(Conn::One(manager));
        tracing::warn!(master = %addr, before = ?before, "redis master from sentinel");
        Ok(())
    }
}

/// Ask the Sentinels again, in the background, unless they were asked a moment ago.
fn find_master_soon(inner: &Arc<Inner>) {
    let Some(follow) = &inner.follow else {
        return;
    };
    {
        let mut asked = follow.asked.lock();
        let now = std::time::Instant::now();
        if asked.is_some_and(|t| now.duration_since(t) < ASK_SENTINEL_EVERY) {
            return;
        }
        *asked = Some(now);
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let inner = inner.clone();
    runtime.spawn(async move {
        if let Some(follow) = &inner.follow {
            if let Err(error) = follow.find_master(&inner).await {
                tracing::warn!(%error, "no redis master from sentinel");
            }
        }
    });
}

impl RedisStore {
    /// Connect and check the server answers (and accepts the password) before returning,
    /// so a wrong URL or password fails at startup rather than on the first request.
    /// With Sentinel, the master it names; with a cluster, its nodes.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        if settings.sentinel.is_some() || settings.cluster {
            let store = Self::connect_lazy(settings)?;
            if let Some(follow) = &store.inner.follow {
                follow.find_master(&store.inner).await?;
            }
            store
                .run(
                    |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
                )
                .await?;
            return Ok(store);
        }
        let client = client(settings)?;
        // A one-off connection gives a clear error: the manager would retry an
        // authentication failure until the deadline and report a timeout instead.
        let check = async {
            let config =
                AsyncConnectionConfig::new().set_connection_timeout(Some(settings.connect_timeout));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await
        };
        tokio::time::timeout(settings.connect_timeout, check)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(unavailable)?;
        let conn = tokio::time::timeout(
            settings.connect_timeout,
            ConnectionManager::new_with_config(client, manager_config(settings)),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(unavailable)?;
        Ok(Self::with_manager(Some(Conn::One(conn)), None, settings))
    }

    /// A store that connects on its first operation: for starting while Redis is down,
    /// behind a [`FallbackStore`](super::FallbackStore). Fails only on a malformed URL or
    /// an unreadable CA file.
    /// With Sentinel, the master is asked for at once, in the background.
    pub fn connect_lazy(settings: &RedisSettings) -> Result<Self, StoreError> {
        if let Some(s) = &settings.sentinel {
            let follow = Follow {
                source: Source::Sentinel(tokio::sync::Mutex::new(sentinel_client(settings, s)?)),
                connecting: tokio::sync::Mutex::new(()),
                settings: settings.clone(),
                master: parking_lot::Mutex::new(None),
                asked: parking_lot::Mutex::new(None),
            };
            let store = Self::with_manager(None, Some(follow), settings);
            find_master_soon(&store.inner);
            return Ok(store);
        }
        if settings.cluster {
            let follow = Follow {
                source: Source::Cluster(cluster_client(settings)?),
                connecting: tokio::sync::Mutex::new(()),
                settings: settings.clone(),
                master: parking_lot::Mutex::new(None),
                asked: parking_lot::Mutex::new(None),
            };
            let store = Self::with_manager(None, Some(follow), settings);
            find_master_soon(&store.inner);
            return Ok(store);
        }
        let conn =
            ConnectionManager::new_lazy_with_config(client(settings)?, manager_config(settings))
                .map_err(unavailable)?;
        Ok(Self::with_manager(Some(Conn::One(conn)), None, settings))
    }

    fn with_manager(conn: Option<Conn>, follow: Option<Follow>, settings: &RedisSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: parking_lot::RwLock::new(conn),
                follow,
                cluster: settings.cluster,
                prefix: settings.key_prefix.clone(),
                timeout: settings.timeout,
                reserve_timeout: settings.reserve_timeout.max(settings.timeout),
                reserve: Script::new(RESERVE),
                release: Script::new(RELEASE),
                count: Script::new(COUNT),
                append: Script::new(APPEND),
            }),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.inner.prefix, key)
    }

    /// The indexes of `keys` grouped by cluster slot, in order of first appearance; one
    /// group of all of them when not a cluster.
    fn by_slot<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Vec<Vec<usize>> {
        if !self.inner.cluster {
            let all: Vec<usize> = keys.enumerate().map(|(i, _)| i).collect();
            return if all.is_empty() {
                Vec::new()
            } else {
                vec![all]
            };
        }
        let keys: Vec<String> = keys.map(|key| self.key(key)).collect();
        group_by_slot(keys.iter().map(String::as_bytes))
    }

    /// One reservation script call over `windows` (keys of one slot in a cluster).
    async fn reserve_call(
        &self,
        id: &str,
        windows: &[WindowSpec<'_>],
    ) -> Result<Vec<Window>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.inner.reserve.arg(id);
        for spec in windows {
            invocation
                .key(self.key(spec.key))
                .arg(micros(spec.window))
                .arg(spec.limit);
        }
        // Waited for past `timeout`: a late reply still decides (module docs of the
        // fallback store, "Exact under a slow reply").
        let reply: Vec<i64> = self
            .run_within(self.inner.reserve_timeout, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if reply.len() != 3 * windows.len() {
            return Err(StoreError::Unavailable(format!(
                "reservation reply of {} numbers for {} windows",
                reply.len(),
                windows.len()
            )));
        }
        let positive = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(reply
            .chunks_exact(3)
            .map(|w| Window {
                reserved: w[0] == 1,
                count: positive(w[1]),
                retry_after: Duration::from_micros(positive(w[2])),
            })
            .collect())
    }

    /// One release script call over `keys` (of one slot in a cluster).
    async fn release_call(&self, keys: &[&str], id: &str) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.inner.release.arg(id);
        for key in keys {
            invocation.key(self.key(key));
        }
        self.run(|mut conn| async move { invocation.invoke_async::<()>(&mut conn).await })
            .await
    }

    /// The hash holding one counter series ("Counters without a script" in the module
    /// docs): the key as the hash tag, so every series of a key shares a cluster slot, then
    /// the series, its bucket width (µs) and its bucket count. A series given another window
    /// is another hash, so it starts again, and the old one expires.
    fn series_key(&self, counter: &Counter<'_>) -> String {
        format!(
            "{{{}{}}}|{}:{}:{}",
            self.inner.prefix,
            counter.key,
            counter.series,
            micros(counter.width()),
            counter.buckets.max(1)
        )
    }

    /// One tally pipeline (counters of one slot in a cluster) at `now` (µs since 1970):
    /// `HINCRBY` and `PEXPIRE` for each counter added to, `HGETALL` for each read, one
    /// round trip. A bucket an add just created prompts a second, rare one that drops the
    /// buckets which can still be there but have left the window.
    async fn tally_call(
        &self,
        now: u64,
        add: &[Counter<'_>],
        read: &[Counter<'_>],
    ) -> Result<Vec<u64>, StoreError> {
        if add.is_empty() && read.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = add.iter().chain(read).map(|c| self.series_key(c)).collect();
        let mut pipe = redis::pipe();
        for (counter, key) in add.iter().zip(&keys) {
            let span = Span::of(counter, now);
            pipe.cmd("HINCRBY").arg(key).arg(span.current).arg(1);
            pipe.cmd("PEXPIRE").arg(key).arg(span.ttl_ms).ignore();
        }
        for key in &keys[add.len()..] {
            pipe.cmd("HGETALL").arg(key);
        }
        pipe.ignore_errors();
        let keys = &keys;
        let replies: Vec<Value> = self
            .run(|mut conn| async move {
                let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
                if !replies.iter().any(is_wrong_type_reply) {
                    return Ok(replies);
                }
                // A key of another kind is replaced, as in the memory store.
                replace_other_kinds(&mut conn, keys, "hash").await?;
                pipe.query_async(&mut conn).await
            })
            .await?;
        if let Some(Value::ServerError(e)) =
            replies.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(StoreError::Unavailable(format!("tally: {}", e.code())));
        }
        if replies.len() != add.len() + read.len() {
            return Err(StoreError::Unavailable(format!(
                "tally reply of {} values for {} counters",
                replies.len(),
                add.len() + read.len()
            )));
        }
        let (added, sums) = replies.split_at(add.len());
        let fresh: Vec<usize> = added
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Value::Int(1)))
            .map(|(i, _)| i)
            .collect();
        let out = read
            .iter()
            .zip(sums)
            .map(|(counter, value)| Span::of(counter, now).sum(value))
            .collect();
        if !fresh.is_empty() {
            let mut sweep = redis::pipe();
            for &i in &fresh {
                let cmd = sweep.cmd("HDEL").arg(&keys[i]);
                for bucket in Span::of(&add[i], now).left() {
                    cmd.arg(bucket);
                }
                cmd.ignore();
            }
            // The count is taken already; a sweep that fails leaves a few stale buckets for
            // the next new bucket's sweep, and the key's expiry.
            if let Err(error) = self
                .run(|mut conn| async move { sweep.query_async::<()>(&mut conn).await })
                .await
            {
                tracing::debug!(%error, "stale counter buckets not dropped");
            }
        }
        Ok(out)
    }

    /// Run one operation on a clone of the connection (cheap: the manager is shared),
    /// within the operation budget.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_within(self.inner.timeout, op).await
    }

    /// [`RedisStore::run`] within `budget`.
    async fn run_within<T, F, Fut>(&self, budget: Duration, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let started = tokio::time::Instant::now();
        let conn = self.inner.conn.read().clone();
        let conn = match (conn, &self.inner.follow) {
            (Some(conn), _) => conn,
            // Not connected yet (at start, Sentinel has named no master or no cluster node
            // has answered): connect now, within this operation's budget.
            (None, Some(follow)) => {
                match tokio::time::timeout(budget, follow.find_master(&self.inner)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(StoreError::Timeout),
                }
                self.inner.conn.read().clone().ok_or_else(|| {
                    StoreError::Unavailable("no redis master named by sentinel".into())
                })?
            }
            (None, None) => return Err(StoreError::Unavailable("no connection".into())),
        };
        let budget = budget.saturating_sub(started.elapsed());
        match tokio::time::timeout(budget, op(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if moved(&e) {
                    find_master_soon(&self.inner);
                }
                Err(unavailable(e))
            }
            Err(_) => {
                find_master_soon(&self.inner);
                Err(StoreError::Timeout)
            }
        }
    }
}

fn client(settings: &RedisSettings) -> Result<Client, StoreError> {
    let mut info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(format!("redis url: {e}")))?;
    if let Some(username) = &settings.username {
        let redis = info.redis_settings().clone().set_username(username);
        info = info.set_redis_settings(redis);
    }
    if let Some(password) = &settings.password {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    let info = info.set_tcp_settings(tcp_settings());
    match ca(settings)? {
        None => Client::open(info).map_err(unavailable),
        Some(root_cert) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )
        .map_err(unavailable),
    }
}

fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    #[cfg(target_os = "linux")]
    let tcp = tcp.set_user_timeout(DEAD_PEER_AFTER);
    tcp
}

fn manager_config(settings: &RedisSettings) -> ConnectionManagerConfig {
    // One connection attempt per reconnect, no retry loop inside the manager: while Redis
    // is down an operation fails at once (refused) instead of waiting out a backoff, and
    // the next operation (or the fallback store's probe) starts the next attempt.
    // Concurrent operations share one attempt. Responses are bounded by our own timeout.
    ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(None)
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A key that holds another kind of value reads as empty, as in the memory store.
fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

/// A pipeline's reply saying its key holds another kind of value.
fn is_wrong_type_reply(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.code() == "WRONGTYPE")
}

/// Redis expiries are whole milliseconds and must be positive: round up, so an entry
/// never expires before its TTL.
fn millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// One counter's buckets at a moment: which is current, how long its hash lives.
struct Span {
    /// The current bucket: µs since 1970 over the bucket width.
    current: u64,
    /// Buckets in the window.
    buckets: u64,
    /// The hash's life after an add: the window and one bucket more, so it outlives every
    /// bucket it holds (each leaves the window `buckets` widths after it began).
    ttl_ms: u64,
}

impl Span {
    fn of(counter: &Counter<'_>, now: u64) -> Self {
        let width = micros(counter.width()).max(1);
        let buckets = u64::from(counter.buckets.max(1));
        Self {
            current: now / width,
            buckets,
            ttl_ms: millis(counter.width().saturating_mul(counter.buckets.max(1) + 1)),
        }
    }

    /// Whether `bucket` is inside the window: one of the newest `buckets`.
    fn holds(&self, bucket: u64) -> bool {
        bucket <= self.current && bucket + self.buckets > self.current
    }

    /// The buckets that may still be in a hash but have left the window. The hash lives
    /// `buckets + 1` widths after its last add, so that add was at most that long ago, and
    /// every bucket older than these was dropped when a bucket after it began.
    fn left(&self) -> std::ops::RangeInclusive<u64> {
        let newest_gone = self.current.saturating_sub(self.buckets);
        newest_gone.saturating_sub(self.buckets + 1)..=newest_gone
    }

    /// The sum of an `HGETALL` reply's buckets inside the window. Fields that are not
    /// bucket numbers count nothing.
    fn sum(&self, reply: &Value) -> u64 {
        let fields: &[Value] = match reply {
            Value::Array(items) => items,
            Value::Map(pairs) => {
                return pairs
                    .iter()
                    .map(|(field, count)| self.count(field, count))
                    .sum()
            }
            _ => return 0,
        };
        fields
            .chunks_exact(2)
            .map(|pair| self.count(&pair[0], &pair[1]))
            .sum()
    }

    fn count(&self, field: &Value, count: &Value) -> u64 {
        let number = |v: &Value| match v {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse::<u64>().ok(),
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        };
        match (number(field), number(count)) {
            (Some(bucket), Some(n)) if self.holds(bucket) => n,
            _ => 0,
        }
    }
}

/// Delete those of `keys` that hold a kind of value other than `kind` (a `TYPE` name).
async fn replace_other_kinds(
    conn: &mut Conn,
    keys: &[String],
    kind: &str,
) -> Result<(), RedisError> {
    let mut types = redis::pipe();
    for key in keys {
        types.cmd("TYPE").arg(key);
    }
    let kinds: Vec<String> = types.query_async(conn).await?;
    let mut delete = redis::cmd("DEL");
    let mut any = false;
    for (key, held) in keys.iter().zip(kinds) {
        if held != kind && held != "none" {
            delete.arg(key);
            any = true;
        }
    }
    if any {
        delete.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// Now, in µs since 1970: the counters' buckets follow each replica's clock.
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, micros)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Store for RedisStore {
    async fn reserve(
        &self,
        key: &str,
        id: &str,
        window: Duration,
        limit: u64,
    ) -> Result<Window, StoreError> {
        let spec = WindowSpec { key, window, limit };
        self.reserve_many(id, &[spec])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Unavailable("empty reservation reply".into()))
    }

    async fn reserve_many(
        &self,
        id: &str,
        windows: &[WindowSpec<'_>],
    ) -> Result<Vec<Window>, StoreError> {
        if !self.inner.cluster {
            return self.reserve_call(id, windows).await;
        }
        let groups = self.by_slot(windows.iter().map(|w| w.key));
        if groups.len() < 2 {
            return self.reserve_call(id, windows).await;
        }
        // A cluster: one call per slot, side by side. Each window is reserved on its own
        // anyway, so splitting changes no answer.
        let calls = groups.iter().map(|group| {
            let part: Vec<WindowSpec<'_>> = group.iter().map(|&i| windows[i]).collect();
            async move { self.reserve_call(id, &part).await }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut out = vec![None; windows.len()];
        for (group, answer) in groups.iter().zip(answers) {
            for (&i, window) in group.iter().zip(answer?) {
                out[i] = Some(window);
            }
        }
        out.into_iter()
            .map(|w| w.ok_or_else(|| StoreError::Unavailable("reservation reply short".into())))
            .collect()
    }

    async fn release_many(&self, keys: &[&str], id: &str) -> Result<(), StoreError> {
        if !self.inner.cluster {
            return self.release_call(keys, id).await;
        }
        let groups = self.by_slot(keys.iter().copied());
        if groups.len() < 2 {
            return self.release_call(keys, id).await;
        }
        let calls = groups.iter().map(|group| {
            let part: Vec<&str> = group.iter().map(|&i| keys[i]).collect();
            async move { self.release_call(&part, id).await }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }

    async fn release(&self, key: &str, id: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run(|mut conn| async move {
            match redis::cmd("ZREM")
                .arg(&key)
                .arg(id)
                .query_async::<()>(&mut conn)
                .await
            {
                Err(e) if is_wrong_type(&e) => Ok(()),
                other => other,
            }
        })
        .await
    }

    async fn count(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let key = self.key(key);
        self.run(|mut conn| async move {
            self.inner
                .count
                .key(&key)
                .arg(micros(window))
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    async fn tally(
        &self,
        add: &[Counter<'_>],
        read: &[Counter<'_>],
    ) -> Result<Vec<u64>, StoreError> {
        super::check_series(add, read)?;
        let now = unix_micros();
        if !self.inner.cluster {
            return self.tally_call(now, add, read).await;
        }
        let keys: Vec<String> = add.iter().chain(read).map(|c| self.series_key(c)).collect();
        let groups = group_by_slot(keys.iter().map(String::as_bytes));
        if groups.len() < 2 {
            return self.tally_call(now, add, read).await;
        }
        // A cluster: one pipeline per slot (a key's series share one), side by side.
        let calls = groups.iter().map(|group| {
            let adds: Vec<Counter<'_>> = group
                .iter()
                .filter(|&&i| i < add.len())
                .map(|&i| add[i])
                .collect();
            let reads: Vec<Counter<'_>> = group
                .iter()
                .filter(|&&i| i >= add.len())
                .map(|&i| read[i - add.len()])
                .collect();
            async move { self.tally_call(now, &adds, &reads).await }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut out = vec![0; read.len()];
        for (group, answer) in groups.iter().zip(answers) {
            let reads = group.iter().filter(|&&i| i >= add.len());
            for (&i, sum) in reads.zip(answer?) {
                out[i - add.len()] = sum;
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(key);
        self.run(|mut conn| async move {
            match redis::cmd("GET").arg(&key).query_async(&mut conn).await {
                Err(e) if is_wrong_type(&e) => Ok(None),
                other => other,
            }
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run(|mut conn| async move {
            if ttl.is_zero() {
                // Stored already expired: nothing to read back.
                redis::cmd("DEL").arg(&key).query_async(&mut conn).await
            } else {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut conn)
                    .await
            }
        })
        .await
    }

    async fn append(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        max_len: usize,
    ) -> Result<bool, StoreError> {
        let key = self.key(key);
        let appended: i64 = self
            .run(|mut conn| async move {
                self.inner
                    .append
                    .key(&key)
                    .arg(value)
                    .arg(millis(ttl).max(1))
                    .arg(max_len)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(appended == 1)
    }

    async fn take_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.key(key);
        let set: Value = self
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(!matches!(set, Value::Nil))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // `CLUSTER KEYSLOT` of each.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3, "the CRC16 check value");
        assert_eq!(slot(b"{foo}.bar"), slot(b"foo"), "the hash tag decides");
        assert_eq!(slot(b"x{foo}y{bar}"), slot(b"foo"), "the first tag");
        assert_eq!(
            slot(b"{}foo"),
            crc16_xmodem(b"{}foo") % 16384,
            "an empty tag is no tag"
        );
    }

    #[test]
    fn expiries_round_up_to_a_positive_millisecond() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1001)), 2);
        assert_eq!(millis(Duration::from_secs(3600)), 3_600_000);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let settings = RedisSettings {
            url: "rediss://user:hunter2@cache.example:6380/0".into(),
            password: Some("hunter3".into()),
            ..RedisSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(shown.contains("cache.example:6380"), "{shown}");
    }
}
