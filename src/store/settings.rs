//! `[store]`: where shared state lives, as configured and as built.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problem::{Checker, Secret};

/// `[store]`: where shared state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` (this process only) or `redis` (shared by replicas; memory as fallback).
    pub backend: StoreBackend,
    /// Most keys the memory store holds before it evicts.
    pub max_entries: usize,
    /// Key of the HMAC-SHA256 that turns phone numbers, IPs, continuation tokens and
    /// method ids into store keys (secret; or `key_secret_file`), so reading Redis does not
    /// reveal them. Every replica needs the same one. Empty: a random key per process with
    /// the memory backend; with Redis, plain SHA-256 (a warning: phone numbers can be
    /// recovered from it by trying them all).
    pub key_secret: Secret,
    pub redis: RedisConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            max_entries: 1_000_000,
            key_secret: Secret::default(),
            redis: RedisConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Memory,
    Redis,
}

/// `[store.redis]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:6379/0`, or `rediss://` for TLS. A username and password may also be
    /// given in the URL (`redis://user:password@host`); `username` and `password` below
    /// win over them.
    pub url: String,
    /// ACL user for `AUTH username password` (Redis 6+, managed Redis ACL users); empty:
    /// the URL's, or the `default` user.
    pub username: String,
    /// AUTH password (secret; or `password_file`).
    pub password: Secret,
    /// PEM CA certificates trusted for `rediss://` instead of the public roots (a private
    /// CA, a self-run Redis with TLS).
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key otpgate writes.
    pub key_prefix: String,
    /// Longest one store operation may take before the fallback answers.
    #[serde(with = "crate::problem::duration")]
    pub timeout: Duration,
    /// Longest a velocity reservation waits for Redis before this replica counts alone.
    /// A reply later than `timeout` but within this still decides: the reservation may
    /// have been made, so a slow reply never lets more codes out than a limit allows.
    /// Never shorter than `timeout`: a smaller value is raised to it.
    #[serde(with = "crate::problem::duration")]
    pub reserve_timeout: Duration,
    /// Find the master through Redis Sentinel and follow its failovers.
    pub sentinel: SentinelConfig,
    /// `url` is a node of a Redis Cluster (cluster mode enabled, e.g. Azure Managed Redis
    /// in OSS cluster mode, ElastiCache with cluster mode on): the other nodes are found
    /// from it and each command goes to the master of its key's slot.
    pub cluster: bool,
}

/// `[store.redis.sentinel]`: off while `master_name` is empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The name the Sentinels monitor the master under (`sentinel monitor <name> …`).
    /// Set, `store.redis.url`'s host and port are not used: the Sentinels name the master.
    pub master_name: String,
    /// `host:port` of each Sentinel (usually three or more).
    pub nodes: Vec<String>,
    /// TLS to the Sentinels and to the master (`store.redis.ca_file` trusted when set).
    pub tls: bool,
    /// The Sentinels' own ACL user, when they have one (`store.redis.username` and
    /// `password` are the master's).
    pub username: String,
    /// The Sentinels' password (secret; or `password_file`).
    pub password: Secret,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            username: String::new(),
            password: Secret::default(),
            ca_file: None,
            key_prefix: "otpgate:".into(),
            timeout: Duration::from_millis(50),
            reserve_timeout: Duration::from_secs(1),
            sentinel: SentinelConfig::default(),
            cluster: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    pub max_entries: usize,
    pub key_secret: Secret,
    pub redis_url: String,
    pub redis_username: String,
    pub redis_password: Secret,
    pub redis_ca_file: Option<PathBuf>,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
    pub redis_reserve_timeout: Duration,
    pub redis_sentinel: Option<super::SentinelSettings>,
    pub redis_cluster: bool,
}

impl StoreSettings {
    /// The hasher for sensitive parts of store keys (see [`StoreConfig::key_secret`]).
    /// Without a key, replicas sharing Redis can only agree on plain SHA-256; a process
    /// alone picks a random key.
    pub(crate) fn key_hasher(&self) -> super::KeyHasher {
        use super::KeyHasher;
        match (self.key_secret.is_empty(), self.backend) {
            (false, _) => KeyHasher::keyed(self.key_secret.expose().as_bytes()),
            (true, StoreBackend::Redis) => KeyHasher::unkeyed(),
            (true, StoreBackend::Memory) => KeyHasher::random(),
        }
    }
}

impl StoreConfig {
    /// The store's settings, or `None` with the problems recorded.
    pub(crate) fn build(&self, check: &mut Checker) -> Option<StoreSettings> {
        let r = &self.redis;
        if self.backend == StoreBackend::Redis
            && !(r.url.starts_with("redis://") || r.url.starts_with("rediss://"))
        {
            check.problem("store.redis.url", "must start with redis:// or rediss://");
        }
        if let Some(ca) = &r.ca_file {
            check.readable_file("store.redis.ca_file", ca);
        }
        if r.timeout.is_zero() {
            check.problem("store.redis.timeout", "must be longer than zero");
        }
        let sentinel = &r.sentinel;
        if !sentinel.master_name.is_empty() {
            if sentinel.nodes.is_empty() {
                check.problem(
                    "store.redis.sentinel.nodes",
                    "required with master_name: host:port of each Sentinel",
                );
            }
            for node in &sentinel.nodes {
                let port = node.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
                if !matches!(port, Some((h, Ok(_))) if !h.is_empty()) {
                    check.problem(
                        "store.redis.sentinel.nodes",
                        format!("{node:?}: expected host:port"),
                    );
                }
            }
            if r.cluster {
                check.problem(
                    "store.redis.cluster",
                    "a cluster has no Sentinel: set cluster or sentinel.master_name, not both",
                );
            }
        } else if !sentinel.nodes.is_empty() {
            check.problem(
                "store.redis.sentinel.master_name",
                "required with nodes: the name the Sentinels monitor the master under",
            );
        }
        if self.max_entries < 1000 {
            check.problem("store.max_entries", "must be at least 1000");
            return None;
        }
        Some(StoreSettings {
            backend: self.backend,
            max_entries: self.max_entries,
            key_secret: self.key_secret.clone(),
            redis_url: r.url.clone(),
            redis_username: r.username.clone(),
            redis_password: r.password.clone(),
            redis_ca_file: r.ca_file.clone(),
            redis_key_prefix: r.key_prefix.clone(),
            redis_timeout: r.timeout,
            redis_reserve_timeout: r.reserve_timeout.max(r.timeout),
            redis_cluster: r.cluster,
            redis_sentinel: (!sentinel.master_name.is_empty()).then(|| super::SentinelSettings {
                master_name: sentinel.master_name.clone(),
                nodes: sentinel.nodes.clone(),
                tls: sentinel.tls,
                username: (!sentinel.username.is_empty()).then(|| sentinel.username.clone()),
                password: (!sentinel.password.is_empty())
                    .then(|| sentinel.password.expose().to_owned()),
            }),
        })
    }
}
