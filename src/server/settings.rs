//! `[server]`, `[tls]` and `[admin]`: the listeners, as configured and as built.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::problem::{Checker, Dropped};

/// `[server]`: the public listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gateway listens on.
    pub listen: String,
    /// Host names (without port) the gateway answers for; empty = any. Others get 400.
    pub hosts: Vec<String>,
    /// Peers (CIDRs) whose `X-Forwarded-For` is trusted, e.g. a load balancer.
    pub trusted_proxies: Vec<String>,
    /// Azure Front Door profile ids (GUIDs) whose `X-Azure-FDID` is accepted; empty = off.
    /// When set, a request without exactly one header naming one of them gets 403: it did
    /// not come through your Front Door.
    pub front_door_ids: Vec<String>,
    /// Time a client has to send its request headers (also bounds the TLS handshake, a new
    /// connection's first request and a gated request's body).
    #[serde(with = "crate::problem::duration")]
    pub header_read_timeout: Duration,
    /// Time without an open request before a connection is closed; an open request that
    /// moves no byte for this long is asked to finish, and cut off after as long again.
    #[serde(with = "crate::problem::duration")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most client connections open at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// Most requests in flight at once; excess gets a fast 503.
    pub max_in_flight: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "crate::problem::duration")]
    pub shutdown_grace: Duration,
    /// Threads that run requests: 0 = `TOKIO_WORKER_THREADS` when set, else one per CPU
    /// the process may use. With 1, one thread runs everything (no work-stealing queues).
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            front_door_ids: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_in_flight: 4096,
            shutdown_grace: Duration::from_secs(30),
            worker_threads: 0,
        }
    }
}

/// `[tls]`: TLS on the public listener; off when both files are empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// `[admin]`: liveness, readiness and metrics, on their own port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener; keep it off the public network.
    pub listen: String,
    /// `[admin.api]`: the runtime admin API (lists, why), off by default.
    pub api: crate::admin_api::settings::AdminApiConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
            api: crate::admin_api::settings::AdminApiConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Lowercased host names; empty = any.
    pub hosts: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    /// The Front Door profile ids accepted in `X-Azure-FDID`; empty = not checked.
    pub front_door_ids: Vec<uuid::Uuid>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    /// As configured: 0 = automatic, see [`ServerSettings::workers`].
    pub worker_threads: usize,
}

/// Most request threads `server.worker_threads` may ask for.
pub(crate) const MAX_WORKER_THREADS: usize = 1024;

impl ServerSettings {
    /// How many threads run requests: `server.worker_threads`, else a valid
    /// `TOKIO_WORKER_THREADS`, else the CPUs this process may use (its cgroup quota
    /// included).
    pub(crate) fn workers(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
    }
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ServerConfig {
    /// The public listener's settings, or `None` with the problems recorded.
    pub fn build(&self, dropped: &Dropped, check: &mut Checker) -> Option<ServerSettings> {
        let listen = check.addr("server.listen", &self.listen);
        let mut trusted_proxies = Vec::new();
        for (i, cidr) in self.trusted_proxies.iter().enumerate() {
            let key = dropped.element_key("server.trusted_proxies", i);
            if let Some(net) = check.parse(&key, cidr, parse_cidr) {
                trusted_proxies.push(net);
            }
        }
        let mut front_door_ids = Vec::new();
        for (i, id) in self.front_door_ids.iter().enumerate() {
            let key = dropped.element_key("server.front_door_ids", i);
            if let Some(id) = check.parse(&key, id, parse_front_door_id) {
                front_door_ids.push(id);
            }
        }
        let limits = [
            (
                self.max_header_bytes >= 1024,
                "server.max_header_bytes",
                "must be at least 1024".to_owned(),
            ),
            (
                self.max_connections > 0,
                "server.max_connections",
                "must be at least 1".to_owned(),
            ),
            (
                self.max_in_flight > 0,
                "server.max_in_flight",
                "must be at least 1".to_owned(),
            ),
            (
                self.worker_threads <= MAX_WORKER_THREADS,
                "server.worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0 = one per CPU)"),
            ),
        ];
        let mut within = true;
        for (good, key, message) in limits {
            if !good {
                check.problem(key, message);
                within = false;
            }
        }
        let listen = listen?;
        within.then(|| ServerSettings {
            listen,
            hosts: self.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            trusted_proxies,
            front_door_ids,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            shutdown_grace: self.shutdown_grace,
            worker_threads: self.worker_threads,
        })
    }
}

impl TlsConfig {
    /// TLS on the public listener: `Some(None)` when off, `None` with the problems recorded
    /// when a file is missing or unreadable or the two do not belong together.
    pub(crate) fn build(&self, check: &mut Checker) -> Option<Option<TlsSettings>> {
        if let Some(cert) = &self.cert_file {
            check.readable_file("tls.cert_file", cert);
        }
        if let Some(key) = &self.key_file {
            check.readable_file("tls.key_file", key);
        }
        match (&self.cert_file, &self.key_file) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => {
                // What `run` loads: a chain and a key that belong together.
                if cert.exists() && key.exists() {
                    if let Err(e) = crate::tls::load_certified_key(cert, key) {
                        check.problem("tls", e.to_string());
                        return None;
                    }
                }
                Some(Some(TlsSettings {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                }))
            }
            (Some(_), None) => {
                check.problem("tls.key_file", "required when tls.cert_file is set");
                None
            }
            (None, Some(_)) => {
                check.problem("tls.cert_file", "required when tls.key_file is set");
                None
            }
        }
    }
}

impl AdminConfig {
    /// The admin listener's address, which must not be the public one.
    pub(crate) fn build(
        &self,
        listen: Option<SocketAddr>,
        check: &mut Checker,
    ) -> Option<SocketAddr> {
        let admin = check.addr("admin.listen", &self.listen)?;
        if listen.is_some_and(|l| l == admin && admin.port() != 0) {
            check.problem("admin.listen", "must differ from server.listen");
            return None;
        }
        Some(admin)
    }
}

/// A CIDR, or a bare address meaning a single host.
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| "not a CIDR such as 10.0.0.0/8 or an IP address".to_owned())
}

/// A Front Door profile id as Azure shows it and sends it in `X-Azure-FDID`: a GUID in its
/// hyphenated form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), either case. Braced, URN and
/// unhyphenated spellings are refused, in config and in the header alike: one spelling,
/// one comparison.
pub(crate) fn parse_front_door_id(text: &str) -> Result<uuid::Uuid, String> {
    let hyphens = [8, 13, 18, 23];
    let shaped = text.len() == 36
        && text
            .bytes()
            .enumerate()
            .all(|(i, b)| match hyphens.contains(&i) {
                true => b == b'-',
                false => b.is_ascii_hexdigit(),
            });
    if !shaped {
        return Err(
            "must be a Front Door id: a GUID like 00000000-0000-0000-0000-000000000000".into(),
        );
    }
    uuid::Uuid::parse_str(text).map_err(|e| e.to_string())
}
