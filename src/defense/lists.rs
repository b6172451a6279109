//! Safe and block lists: numbers, prefixes, users, IP networks and app ids an operator
//! lets through the velocity and adaptive rules (safe) or always refuses (block).
//!
//! Entries come from config (`[defense.lists.safe]`, `[defense.lists.block]`, hot
//! reloaded) and at runtime, through the admin API. Runtime entries live in the Store as
//! an append-only change log (`lists:log`) and a version (`lists:version`) every change
//! moves: each gated request reads the version (one small `get`) and, when it moved,
//! re-reads the log, so a change made through one replica applies on every other before
//! its next request. Values are canonicalized first (numbers to E.164 with the
//! destination policy's parser, users as the flow learning writes them, networks
//! truncated, app ids in lower case) and kept only as keyed hashes (`store.key_secret`):
//! neither the store nor an admin answer holds a raw number or username.
//!
//! A safe entry is no bypass of the classifier: a request that is ambiguous, malformed,
//! or names a number that does not parse is refused before the lists are asked, and
//! the destination policy and the risk provider still apply.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
use crate::store::{KeyHasher, Store};

/// Where the change log lives.
pub(crate) const LOG_KEY: &str = "lists:log";
/// Moved by every change; replicas re-read the log when it differs from what they hold.
pub(crate) const VERSION_KEY: &str = "lists:version";
/// The change log's bound: about 4,000 changes; past it the log is compacted (expired and
/// removed entries dropped).
pub(crate) const MAX_LOG_BYTES: usize = 1024 * 1024;
/// Kept for good (ten years): entries end by their own expiry or by removal.
pub(crate) const KEEP: Duration = Duration::from_secs(3650 * 86400);
/// Longest note an operator may attach to an entry.
pub(crate) const MAX_NOTE_CHARS: usize = 200;
/// Longest app id accepted.
const MAX_CLIENT_ID_CHARS: usize = 256;
/// Longest username accepted (Entra's sign-in names are far shorter).
const MAX_USER_CHARS: usize = 320;

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ListName {
    Safe,
    Block,
}

impl ListName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Block => "block",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "safe" => Some(Self::Safe),
            "block" => Some(Self::Block),
            _ => None,
        }
    }
}

/// What an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// One E.164 number (the number a registration names).
    Number,
    /// Every number starting with these digits (`+4470`).
    Prefix,
    /// The `username` of the flow's `initiate`: every send of that account, MFA included.
    User,
    /// An IP network (or one address) the client connects from.
    Network,
    /// An application (`client_id`).
    ClientId,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Number,
        Kind::Prefix,
        Kind::User,
        Kind::Network,
        Kind::ClientId,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Prefix => "prefix",
            Self::User => "user",
            Self::Network => "network",
            Self::ClientId => "client_id",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One list as config writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListEntries {
    /// E.164 numbers, `+` and digits (spaces, dots, dashes and brackets are dropped).
    pub numbers: Vec<String>,
    /// Number prefixes, `+` and 1 to 14 digits.
    pub prefixes: Vec<String>,
    /// Usernames, as the app sends them to `initiate` (compared trimmed, in lower case).
    pub users: Vec<String>,
    /// CIDRs or single addresses.
    pub networks: Vec<String>,
    /// Application (client) ids.
    pub client_ids: Vec<String>,
}

impl ListEntries {
    fn by_kind(&self) -> [(Kind, &'static str, &[String]); 5] {
        [
            (Kind::Number, "numbers", &self.numbers),
            (Kind::Prefix, "prefixes", &self.prefixes),
            (Kind::User, "users", &self.users),
            (Kind::Network, "networks", &self.networks),
            (Kind::ClientId, "client_ids", &self.client_ids),
        ]
    }
}

/// `[defense.lists]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListsConfig {
    /// Never refused by a velocity or adaptive rule.
    pub safe: ListEntries,
    /// Always refused.
    pub block: ListEntries,
}

impl ListsConfig {
    /// Every value that does not canonicalize, keyed `safe.numbers[0]`.
    pub(crate) fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (list, entries) in [(ListName::Safe, &self.safe), (ListName::Block, &self.block)] {
            for (kind, field, values) in entries.by_kind() {
                for (i, value) in values.iter().enumerate() {
                    if let Err(message) = canonical(kind, value) {
                        problems.push(Problem {
                            key: format!("{}.{field}[{i}]", list.as_str()),
                            message: message.to_owned(),
                        });
                    }
                }
            }
        }
        problems
    }
}

/// A value in the form it is hashed: what a request's own value is brought to before it
/// is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Canonical {
    pub text: String,
    /// How much of a request's value an entry of this shape covers: a prefix's digits
    /// (`d4`), a network's family and length (`v4/16`); `None` for whole values.
    pub shape: Option<String>,
}

/// `raw` as entries of `kind` are kept, or why it cannot be one.
pub(crate) fn canonical(kind: Kind, raw: &str) -> Result<Canonical, &'static str> {
    let whole = |text: String| Canonical { text, shape: None };
    match kind {
        Kind::Number => {
            let written = digits_of(raw).ok_or("not an E.164 number such as +447700900123")?;
            let phone = crate::defense::destination::parse_phone(&written)
                .ok_or("not an E.164 number such as +447700900123")?;
            Ok(whole(phone.e164))
        }
        Kind::Prefix => {
            let written = digits_of(raw).ok_or("not a number prefix such as +4470")?;
            let digits = written.len() - 1;
            if !(1..crate::defense::MAX_E164_DIGITS).contains(&digits) {
                return Err("a prefix has 1 to 14 digits after the +");
            }
            Ok(Canonical {
                shape: Some(format!("d{digits}")),
                text: written,
            })
        }
        Kind::User => {
            let user = canonical_user(raw);
            if user.is_empty() || user.chars().count() > MAX_USER_CHARS {
                return Err("a username of 1 to 320 characters");
            }
            Ok(whole(user))
        }
        Kind::Network => {
            let raw = raw.trim();
            let net = match raw.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => IpNet::from(
                    raw.parse::<IpAddr>()
                        .map_err(|_| "not a CIDR such as 203.0.113.0/24 or an IP address")?,
                ),
            };
            Ok(Canonical {
                shape: Some(network_shape(&net)),
                text: net.to_string(),
            })
        }
        Kind::ClientId => {
            let id = canonical_client_id(raw);
            if id.is_empty()
                || id.len() > MAX_CLIENT_ID_CHARS
                || !id.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err("an application (client) id of 1 to 256 visible characters");
            }
            Ok(whole(id))
        }
    }
}

/// `+` and digits, from a number written with spaces, dots, dashes or brackets.
fn digits_of(raw: &str) -> Option<String> {
    let rest = raw.trim().strip_prefix('+')?;
    let mut out = String::with_capacity(rest.len() + 1);
    out.push('+');
    for c in rest.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '.' | '-' | '(' | ')' => {}
            _ => return None,
        }
    }
    (out.len() > 1).then_some(out)
}

/// A username as the flow learning keys it (trimmed, lower case).
fn canonical_user(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// An app id as compared: Entra's are GUIDs, equal in any ASCII case, so `ABC…` cannot
/// slip past an entry for `abc…`.
fn canonical_client_id(raw: &str) -> String {
    raw.trim().to_ascii_lowercase()
}

fn network_shape(net: &IpNet) -> String {
    match net {
        IpNet::V4(n) => format!("v4/{}", n.prefix_len()),
        IpNet::V6(n) => format!("v6/{}", n.prefix_len()),
    }
}

/// What is kept of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryInfo {
    pub list: ListName,
    pub kind: Kind,
    /// Keyed hash of the canonical value: the entry's id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// `config`, or the name of the admin token that added it.
    pub by: String,
    /// Unix seconds; 0 for config entries.
    #[serde(default)]
    pub at: u64,
    /// Unix seconds after which the entry no longer applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl EntryInfo {
    fn live(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// One line of the change log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Change {
    Add(EntryInfo),
    Remove {
        list: ListName,
        kind: Kind,
        id: String,
    },
}

impl Change {
    pub(crate) fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// A set of entries, matched in memory.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListSet {
    entries: HashMap<(ListName, Kind, String), EntryInfo>,
    /// What the entries hold, so a request is hashed only as far as some entry needs.
    index: Index,
}

/// The kinds and shapes a set's entries hold.
#[derive(Debug, Default, Clone)]
struct Index {
    /// Kinds held, as bits.
    kinds: u8,
    /// Prefix lengths held (digits after the `+`).
    prefix_digits: BTreeSet<usize>,
    /// Network lengths held, per family.
    v4_lens: BTreeSet<u8>,
    v6_lens: BTreeSet<u8>,
}

impl Index {
    fn of<'a>(entries: impl Iterator<Item = &'a EntryInfo>) -> Self {
        let mut index = Self::default();
        for info in entries {
            index.kinds |= info.kind.bit();
            let Some(shape) = &info.shape else {
                continue;
            };
            if let Some(d) = shape.strip_prefix('d').and_then(|d| d.parse().ok()) {
                index.prefix_digits.insert(d);
            } else if let Some(l) = shape.strip_prefix("v4/").and_then(|l| l.parse().ok()) {
                index.v4_lens.insert(l);
            } else if let Some(l) = shape.strip_prefix("v6/").and_then(|l| l.parse().ok()) {
                index.v6_lens.insert(l);
            }
        }
        index
    }
}

impl ListSet {
    fn of(entries: HashMap<(ListName, Kind, String), EntryInfo>) -> Self {
        let index = Index::of(entries.values());
        Self { entries, index }
    }

    /// The config lists, hashed with `hasher`. Values were validated with the config.
    pub(crate) fn from_config(config: &ListsConfig, hasher: &KeyHasher) -> Self {
        let mut entries = HashMap::new();
        for (list, held) in [
            (ListName::Safe, &config.safe),
            (ListName::Block, &config.block),
        ] {
            for (kind, _, values) in held.by_kind() {
                for c in values.iter().filter_map(|v| canonical(kind, v).ok()) {
                    let id = hasher.hash(&c.text);
                    let info = EntryInfo {
                        list,
                        kind,
                        id: id.clone(),
                        shape: c.shape,
                        by: "config".into(),
                        at: 0,
                        expires: None,
                        note: String::new(),
                    };
                    entries.insert((list, kind, id), info);
                }
            }
        }
        Self::of(entries)
    }

    /// Replay a change log; lines that do not read are skipped.
    pub(crate) fn from_log(text: &str) -> Self {
        let mut entries = HashMap::new();
        for line in text.lines() {
            match serde_json::from_str::<Change>(line) {
                Ok(Change::Add(info)) => {
                    entries.insert((info.list, info.kind, info.id.clone()), info);
                }
                Ok(Change::Remove { list, kind, id }) => {
                    entries.remove(&(list, kind, id));
                }
                Err(_) => tracing::debug!("lists: unreadable log line skipped"),
            }
        }
        Self::of(entries)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry `id` of `kind` in `list`, live or not.
    pub(crate) fn get(&self, list: ListName, kind: Kind, id: &str) -> Option<&EntryInfo> {
        self.entries.get(&(list, kind, id.to_owned()))
    }

    /// Entries live at `now`, in a stable order.
    pub(crate) fn live(&self, now: u64) -> Vec<&EntryInfo> {
        let mut out: Vec<&EntryInfo> = self.entries.values().filter(|e| e.live(now)).collect();
        out.sort_by(|a, b| (a.list, a.kind, a.at, &a.id).cmp(&(b.list, b.kind, b.at, &b.id)));
        out
    }

    /// The change log that holds just the entries live at `now`: the log compacted.
    pub(crate) fn compacted(&self, now: u64) -> String {
        self.live(now)
            .into_iter()
            .map(|e| Change::Add(e.clone()).line())
            .collect()
    }

    fn find(&self, probe: &Hashed, now: u64) -> Matched {
        let mut found = Matched::default();
        for (kind, id) in &probe.ids {
            for list in [ListName::Block, ListName::Safe] {
                let hit = self
                    .entries
                    .get(&(list, *kind, id.clone()))
                    .is_some_and(|e| e.live(now));
                let slot = match list {
                    ListName::Block => &mut found.block,
                    ListName::Safe => &mut found.safe,
                };
                if hit && slot.is_none() {
                    *slot = Some(*kind);
                }
            }
        }
        found
    }
}

/// What a send is matched on.
pub(crate) struct Probe<'a> {
    /// The number a registration names, parsed.
    pub e164: Option<&'a str>,
    /// Keyed hash of the flow's username (as [`crate::entra::learn`] keeps it).
    pub user: Option<&'a str>,
    pub client_ip: IpAddr,
    pub client_id: Option<&'a str>,
}

/// The request's values, hashed, for the kinds and shapes some set holds.
struct Hashed {
    ids: Vec<(Kind, String)>,
}

impl Hashed {
    fn of(probe: &Probe<'_>, sets: &[&ListSet], hasher: &KeyHasher) -> Self {
        let kinds = sets.iter().fold(0, |k, s| k | s.index.kinds);
        let mut ids = Vec::new();
        let wants = |k: Kind| kinds & k.bit() != 0;
        if let (true, Some(e164)) = (wants(Kind::Number), probe.e164) {
            ids.push((Kind::Number, hasher.hash(e164)));
        }
        if let (true, Some(e164)) = (wants(Kind::Prefix), probe.e164) {
            let lens: BTreeSet<usize> = sets
                .iter()
                .flat_map(|s| &s.index.prefix_digits)
                .copied()
                .collect();
            for digits in lens {
                if let Some(prefix) = e164.get(..digits + 1).filter(|_| digits + 1 < e164.len()) {
                    ids.push((Kind::Prefix, hasher.hash(prefix)));
                }
            }
        }
        if let (true, Some(user)) = (wants(Kind::User), probe.user) {
            // Already the keyed hash the entries hold.
            ids.push((Kind::User, user.to_owned()));
        }
        if wants(Kind::Network) {
            let lens: BTreeSet<u8> = sets
                .iter()
                .flat_map(|s| match probe.client_ip {
                    IpAddr::V4(_) => &s.index.v4_lens,
                    IpAddr::V6(_) => &s.index.v6_lens,
                })
                .copied()
                .collect();
            for len in lens {
                if let Ok(net) = IpNet::new(probe.client_ip, len) {
                    ids.push((Kind::Network, hasher.hash(&net.trunc().to_string())));
                }
            }
        }
        if let (true, Some(id)) = (wants(Kind::ClientId), probe.client_id) {
            ids.push((Kind::ClientId, hasher.hash(&canonical_client_id(id))));
        }
        Self { ids }
    }
}

/// Which entries a send matched: the first kind found per list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Matched {
    pub block: Option<Kind>,
    pub safe: Option<Kind>,
}

impl Matched {
    fn or(self, other: Matched) -> Matched {
        Matched {
            block: self.block.or(other.block),
            safe: self.safe.or(other.safe),
        }
    }
}

/// The lists a judge applies: the config's, and the runtime ones as last read from the
/// store.
pub(crate) struct Lists {
    config: ListSet,
    runtime: RwLock<Runtime>,
}

#[derive(Default)]
struct Runtime {
    /// The version the set was read at; `None` before the first read.
    version: Option<Vec<u8>>,
    set: Arc<ListSet>,
}

impl Lists {
    pub(crate) fn new(config: &ListsConfig, hasher: &KeyHasher) -> Self {
        Self {
            config: ListSet::from_config(config, hasher),
            runtime: RwLock::new(Runtime::default()),
        }
    }

    /// The runtime entries, re-read from the store when its version moved. A store that
    /// cannot answer keeps what was last read: an outage never lifts a block.
    pub(crate) async fn runtime(&self, store: &dyn Store) -> Arc<ListSet> {
        let version = match store.get(VERSION_KEY).await {
            Ok(Some(v)) => v,
            // Never written (no runtime entry yet), or unreadable: what is held stands.
            Ok(None) | Err(_) => return self.runtime.read().set.clone(),
        };
        {
            let held = self.runtime.read();
            if held.version.as_deref() == Some(version.as_slice()) {
                return held.set.clone();
            }
        }
        // Read after the version: the log holds at least every change made before it.
        let set = match store.get(LOG_KEY).await {
            Ok(Some(text)) => Arc::new(ListSet::from_log(&String::from_utf8_lossy(&text))),
            Ok(None) => Arc::new(ListSet::default()),
            Err(_) => return self.runtime.read().set.clone(),
        };
        let mut held = self.runtime.write();
        held.version = Some(version);
        held.set = set.clone();
        set
    }

    /// Which entries `probe` matches, config and runtime.
    pub(crate) async fn check(
        &self,
        store: &dyn Store,
        hasher: &KeyHasher,
        probe: &Probe<'_>,
    ) -> Matched {
        let runtime = self.runtime(store).await;
        if self.config.is_empty() && runtime.is_empty() {
            return Matched::default();
        }
        let now = unix_now();
        let hashed = Hashed::of(probe, &[&self.config, &runtime], hasher);
        self.config
            .find(&hashed, now)
            .or(runtime.find(&hashed, now))
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn hasher() -> KeyHasher {
        KeyHasher::keyed(b"test key")
    }

    fn probe<'a>(e164: Option<&'a str>, ip: &str) -> Probe<'a> {
        Probe {
            e164,
            user: None,
            client_ip: ip.parse().unwrap(),
            client_id: None,
        }
    }

    #[test]
    fn values_are_canonicalized_or_refused() {
        let number = canonical(Kind::Number, " +44 (0)7700-900.123 ").unwrap();
        assert_eq!(number.text, "+447700900123");
        assert!(canonical(Kind::Number, "07700900123").is_err());
        assert!(canonical(Kind::Number, "+44abc").is_err());
        assert_eq!(
            canonical(Kind::Prefix, "+44 70").unwrap(),
            Canonical {
                text: "+4470".into(),
                shape: Some("d4".into())
            }
        );
        assert!(canonical(Kind::Prefix, "+").is_err());
        assert!(canonical(Kind::Prefix, "+123456789012345").is_err());
        assert_eq!(
            canonical(Kind::User, " Ann@Example.COM ").unwrap().text,
            "ann@example.com"
        );
        assert!(canonical(Kind::User, "   ").is_err());
        let net = canonical(Kind::Network, "203.0.113.77/24").unwrap();
        assert_eq!(net.text, "203.0.113.0/24");
        assert_eq!(net.shape.as_deref(), Some("v4/24"));
        assert_eq!(
            canonical(Kind::Network, "2001:db8::1")
                .unwrap()
                .shape
                .as_deref(),
            Some("v6/128")
        );
        assert!(canonical(Kind::Network, "10.0.0.0/33").is_err());
        assert_eq!(
            canonical(Kind::ClientId, "ABCD-ef").unwrap().text,
            "abcd-ef"
        );
        assert!(canonical(Kind::ClientId, "a b").is_err());
    }

    #[test]
    fn bad_config_values_are_named() {
        let config = ListsConfig {
            safe: ListEntries {
                numbers: vec!["+447700900123".into(), "nope".into()],
                ..ListEntries::default()
            },
            block: ListEntries {
                networks: vec!["10.0.0.0/99".into()],
                ..ListEntries::default()
            },
        };
        let keys: Vec<String> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["safe.numbers[1]", "block.networks[0]"]);
    }

    #[tokio::test]
    async fn config_entries_match_each_kind_and_nothing_else() {
        let config = ListsConfig {
            safe: ListEntries {
                numbers: vec!["+447700900123".into()],
                networks: vec!["198.51.100.0/24".into()],
                ..ListEntries::default()
            },
            block: ListEntries {
                prefixes: vec!["+4479".into()],
                users: vec!["Stolen@Example.com".into()],
                client_ids: vec!["BAD-APP".into()],
                ..ListEntries::default()
            },
        };
        let h = hasher();
        let lists = Lists::new(&config, &h);
        let store = MemoryStore::new(1000);
        let m = |p: Probe<'static>| {
            let lists = &lists;
            let store = &store;
            let h = &h;
            async move { lists.check(store, h, &p).await }
        };
        assert_eq!(
            m(probe(Some("+447700900123"), "192.0.2.1")).await.safe,
            Some(Kind::Number)
        );
        assert_eq!(
            m(probe(Some("+447700900124"), "192.0.2.1")).await,
            Matched::default()
        );
        assert_eq!(
            m(probe(Some("+447911123456"), "192.0.2.1")).await.block,
            Some(Kind::Prefix)
        );
        // The prefix itself is no number under it.
        assert_eq!(m(probe(Some("+4479"), "192.0.2.1")).await.block, None);
        assert_eq!(
            m(probe(None, "198.51.100.200")).await.safe,
            Some(Kind::Network)
        );
        let user = h.hash("stolen@example.com");
        let by_user = Probe {
            user: Some(&user),
            ..probe(None, "192.0.2.1")
        };
        assert_eq!(
            lists.check(&store, &h, &by_user).await.block,
            Some(Kind::User)
        );
        let app = Probe {
            client_id: Some(" bad-app"),
            ..probe(None, "192.0.2.1")
        };
        assert_eq!(
            lists.check(&store, &h, &app).await.block,
            Some(Kind::ClientId)
        );
    }

    fn entry(list: ListName, kind: Kind, value: &str, expires: Option<u64>) -> EntryInfo {
        let c = canonical(kind, value).unwrap();
        EntryInfo {
            list,
            kind,
            id: hasher().hash(&c.text),
            shape: c.shape,
            by: "oncall".into(),
            at: unix_now(),
            expires,
            note: String::new(),
        }
    }

    async fn change(store: &MemoryStore, change: Change) {
        store
            .append(LOG_KEY, change.line().as_bytes(), KEEP, MAX_LOG_BYTES)
            .await
            .unwrap();
        let v = uuid::Uuid::new_v4().to_string();
        store.put(VERSION_KEY, v.as_bytes(), KEEP).await.unwrap();
    }

    #[tokio::test]
    async fn runtime_changes_apply_at_the_next_check_and_expiries_lift_them() {
        let h = hasher();
        let store = MemoryStore::new(1000);
        let lists = Lists::new(&ListsConfig::default(), &h);
        let p = probe(Some("+447700900123"), "192.0.2.1");
        assert_eq!(lists.check(&store, &h, &p).await, Matched::default());
        let blocked = entry(ListName::Block, Kind::Number, "+447700900123", None);
        change(&store, Change::Add(blocked.clone())).await;
        assert_eq!(lists.check(&store, &h, &p).await.block, Some(Kind::Number));
        change(
            &store,
            Change::Remove {
                list: ListName::Block,
                kind: Kind::Number,
                id: blocked.id.clone(),
            },
        )
        .await;
        assert_eq!(lists.check(&store, &h, &p).await, Matched::default());
        // An entry past its expiry no longer applies, and compaction drops it.
        let lapsed = entry(
            ListName::Block,
            Kind::Network,
            "192.0.2.0/24",
            Some(unix_now() - 1),
        );
        change(&store, Change::Add(lapsed)).await;
        assert_eq!(lists.check(&store, &h, &p).await, Matched::default());
        let set = lists.runtime(&store).await;
        assert_eq!(set.compacted(unix_now()), "");
    }

    #[tokio::test]
    async fn an_unreadable_store_keeps_what_was_read() {
        let h = hasher();
        let store = MemoryStore::new(1000);
        let lists = Lists::new(&ListsConfig::default(), &h);
        change(
            &store,
            Change::Add(entry(ListName::Block, Kind::Network, "192.0.2.0/24", None)),
        )
        .await;
        let p = probe(None, "192.0.2.9");
        assert_eq!(lists.check(&store, &h, &p).await.block, Some(Kind::Network));
        // The version gone (a store that forgot, or a fallback that never had it): the
        // block read before stands.
        let forgot = MemoryStore::new(1000);
        assert_eq!(
            lists.check(&forgot, &h, &p).await.block,
            Some(Kind::Network)
        );
    }
}
