//! Cluster updates coordinated through the cluster's own etcd (docs/fleet.md).
//!
//! This module is the part every side shares: the `[fleet]` settings, the etcd keys of one
//! cluster and the values stored under them. Values are JSON documents with a format number;
//! a value another writer left malformed is refused with an error that names its key, and
//! never crashes anything. [`etcd`] (cargo feature `fleet`) talks to etcd: the node's lease,
//! the update slots, the halt and the bad list, the cluster's status.

#[cfg(feature = "fleet")]
pub mod agent;
pub mod discover;
#[cfg(feature = "fleet")]
pub mod etcd;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The format number of every value this version writes (and the only one it reads).
pub const FORMAT: u32 = 1;

/// `[fleet]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// etcd client URLs, all `http://` or all `https://`; empty: found in `cells.service`.
    pub endpoints: Vec<String>,
    /// The key prefix Cells uses (its `etcd://host/prefix` registry), `""` for none.
    pub prefix: String,
    /// CA certificate, client certificate and key (PEM) for `https://` endpoints.
    pub ca: Option<PathBuf>,
    /// The client certificate.
    pub cert: Option<PathBuf>,
    /// The client key.
    pub key: Option<PathBuf>,
    /// The cluster's name: its keys are under `<prefix>/cells-updater/<cluster>/`.
    pub cluster: String,
    /// This node's name; `None`: the machine id.
    pub node: Option<String>,
    /// How many nodes may be between their swap and healthy at once.
    pub max_parallel: u32,
    /// The TTL of the node's lease (its slot and heartbeat go with it).
    pub lease_ttl: Duration,
    /// How long a job waits for a slot before it fails with nothing changed.
    pub slot_wait: Duration,
    /// After the first node is healthy, how long before another slot is granted.
    pub canary_soak: Duration,
    /// Longest one etcd request may take.
    pub timeout: Duration,
    /// How often the agent looks at the rollout target without a watch event (a fallback).
    pub poll: Duration,
    /// Where `endpoints` and `prefix` came from: `[fleet]`, or the Cells unit.
    pub source: String,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            endpoints: Vec::new(),
            prefix: String::new(),
            ca: None,
            cert: None,
            key: None,
            cluster: "default".into(),
            node: None,
            max_parallel: 1,
            lease_ttl: Duration::from_secs(60),
            slot_wait: Duration::from_secs(30 * 60),
            canary_soak: Duration::ZERO,
            timeout: Duration::from_secs(5),
            poll: Duration::from_secs(300),
            source: "[fleet] endpoints".into(),
        }
    }
}

impl FleetConfig {
    /// The TLS files systemd passed through `LoadCredential=` (`etcd-ca`, `etcd-cert`,
    /// `etcd-key` in `$CREDENTIALS_DIRECTORY`) take the place of `[fleet] ca`, `cert` and
    /// `key`: the unprivileged agent cannot read root's copies, systemd hands it these.
    pub fn with_credentials(mut self, dir: Option<&std::path::Path>) -> FleetConfig {
        let Some(dir) = dir else { return self };
        for (name, slot) in [
            ("etcd-ca", &mut self.ca),
            ("etcd-cert", &mut self.cert),
            ("etcd-key", &mut self.key),
        ] {
            let p = dir.join(name);
            if p.is_file() {
                *slot = Some(p);
            }
        }
        self
    }
}

/// A cluster or node name: 1 to 64 of `[A-Za-z0-9._-]`, not `.` or `..` (it becomes part of
/// an etcd key).
pub fn name_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The etcd keys of one cluster, all under `<prefix>/cells-updater/<cluster>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The keys of `cluster` (a checked name) under `prefix` (`""` or `/…`).
    pub fn new(prefix: &str, cluster: &str) -> Keys {
        Keys {
            root: format!("{}/cells-updater/{cluster}/", prefix.trim_end_matches('/')),
        }
    }
    /// Every key of the cluster starts with this.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// Update slot `i`: the holder's [`SlotValue`], bound to its lease.
    pub fn slot(&self, i: u32) -> String {
        format!("{}slots/{i}", self.root)
    }
    /// Every slot.
    pub fn slots(&self) -> String {
        format!("{}slots/", self.root)
    }
    /// One node's [`NodeValue`], bound to its lease.
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.root)
    }
    /// Every node.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }
    /// The rollout's [`TargetValue`].
    pub fn target(&self) -> String {
        format!("{}target", self.root)
    }
    /// A release the cluster refuses ([`BadValue`]).
    pub fn bad(&self, version: &str) -> String {
        format!("{}bad/{version}", self.root)
    }
    /// Every bad release.
    pub fn bads(&self) -> String {
        format!("{}bad/", self.root)
    }
    /// The [`HaltValue`]; absent: not halted.
    pub fn halt(&self) -> String {
        format!("{}halt", self.root)
    }
    /// The marker that the verdict of `node`'s grant `token` was written (once per grant).
    pub fn verdict(&self, node: &str, token: i64) -> String {
        format!("{}verdicts/{node}/{token}", self.root)
    }
    /// The rollout's canary ([`CanaryValue`]): the first node healthy on the target.
    pub fn canary(&self) -> String {
        format!("{}canary", self.root)
    }
}

/// Who holds a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotValue {
    /// [`FORMAT`].
    pub format: u32,
    /// The holder.
    pub node: String,
    /// The release it installs.
    pub version: String,
    /// When it took the slot (unix seconds).
    pub since: i64,
}

/// A node's record (its heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeValue {
    /// [`FORMAT`].
    pub format: u32,
    /// The Cells version it runs.
    pub version: String,
    /// `idle`, `waiting-for-slot`, `updating`, `failed`.
    pub state: String,
    /// Its last error, `""` when none.
    pub last_error: String,
    /// When it last wrote this (unix seconds).
    pub heartbeat: i64,
}

/// The rollout's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetValue {
    /// [`FORMAT`].
    pub format: u32,
    /// The version every node should run.
    pub version: String,
    /// Its package (`PydioHome` or `PydioEnterprise`; any other text does not decode).
    pub package: crate::package::Package,
    /// Slots of this rollout.
    pub max_parallel: u32,
    /// After the first node is healthy on it, seconds before another slot is granted.
    #[serde(default)]
    pub canary_soak: u64,
    /// Install outside the nodes' `[policy] windows` (a hold still binds).
    #[serde(default)]
    pub now: bool,
    /// Who set it (`uid N on NODE`).
    pub by: String,
    /// When (unix seconds).
    pub at: i64,
}

/// The first node healthy on the rollout's target: the soak runs from `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryValue {
    /// [`FORMAT`].
    pub format: u32,
    /// The target version.
    pub version: String,
    /// The canary node.
    pub node: String,
    /// When it reported healthy (unix seconds).
    pub since: i64,
}

/// A release marked bad for the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadValue {
    /// [`FORMAT`].
    pub format: u32,
    /// Where it failed.
    pub node: String,
    /// Why, one line.
    pub reason: String,
    /// When (unix seconds).
    pub at: i64,
}

/// Why the cluster is halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaltValue {
    /// [`FORMAT`].
    pub format: u32,
    /// What happened, one line.
    pub reason: String,
    /// The node (or admin) that halted it.
    pub node: String,
    /// When (unix seconds).
    pub at: i64,
}

/// A value this version can read.
pub trait Value: Serialize + for<'de> Deserialize<'de> {
    /// Its format number.
    fn format(&self) -> u32;
}

macro_rules! values {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn format(&self) -> u32 {
                self.format
            }
        }
    )*};
}
values!(
    SlotValue,
    NodeValue,
    TargetValue,
    BadValue,
    HaltValue,
    CanaryValue
);

/// Most bytes a value may have: anything larger was not written by cells-updater.
pub const MAX_VALUE: usize = 4096;

/// Reads the value stored under `key`: JSON of the expected shape, format [`FORMAT`], at most
/// [`MAX_VALUE`] bytes, its text one inert line each. Anything else is refused with an error
/// naming the key (and never quoting more than a few bytes of it).
pub fn parse<T: Value>(key: &str, bytes: &[u8]) -> Result<T> {
    let refuse = |why: String| {
        Error::FleetUnavailable(format!(
            "the etcd key {} holds a value cells-updater cannot read ({why}); another writer \
             left it: fix or delete it (etcdctl del {0})",
            crate::text::one_line(key, 200)
        ))
    };
    if bytes.len() > MAX_VALUE {
        return Err(refuse(format!(
            "{} bytes, more than {MAX_VALUE}",
            bytes.len()
        )));
    }
    let v: T = serde_json::from_slice(bytes)
        .map_err(|e| refuse(crate::text::one_line(&e.to_string(), 120)))?;
    if v.format() != FORMAT {
        return Err(refuse(format!(
            "format {}, this version reads format {FORMAT}",
            v.format()
        )));
    }
    // Text fields reach terminals and journals: refuse active characters outright.
    fn active(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => crate::text::has_active(s),
            serde_json::Value::Array(a) => a.iter().any(active),
            serde_json::Value::Object(o) => o.values().any(active),
            _ => false,
        }
    }
    if active(&serde_json::to_value(&v).unwrap_or_default()) {
        return Err(refuse("control or bidi characters in its text".into()));
    }
    Ok(v)
}

/// The JSON of `v`, as stored.
pub fn encode<T: Value>(v: &T) -> Vec<u8> {
    // Invariant: these plain structs always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Now, unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_systemd_replace_the_configured_tls_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("etcd-ca"), "x").unwrap();
        std::fs::write(d.path().join("etcd-key"), "x").unwrap();
        let cfg = FleetConfig {
            ca: Some("/etc/cells-updater/fleet/ca.pem".into()),
            cert: Some("/etc/cells-updater/fleet/client.pem".into()),
            ..FleetConfig::default()
        };
        let got = cfg.clone().with_credentials(Some(d.path()));
        assert_eq!(got.ca, Some(d.path().join("etcd-ca")));
        assert_eq!(
            got.cert, cfg.cert,
            "no etcd-cert credential: the configured file"
        );
        assert_eq!(got.key, Some(d.path().join("etcd-key")));
        assert_eq!(cfg.clone().with_credentials(None), cfg);
    }

    #[test]
    fn keys_live_under_the_prefix_and_cluster() {
        let k = Keys::new("/cells/", "prod");
        assert_eq!(k.slot(0), "/cells/cells-updater/prod/slots/0");
        assert_eq!(k.bad("4.4.5"), "/cells/cells-updater/prod/bad/4.4.5");
        assert_eq!(Keys::new("", "c").halt(), "/cells-updater/c/halt");
        assert!(name_ok("node-1.example_a"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(!name_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn malformed_values_are_refused_with_their_key() {
        let good = HaltValue {
            format: FORMAT,
            reason: "4.4.6 failed its health check on n1".into(),
            node: "n1".into(),
            at: 1,
        };
        assert_eq!(parse::<HaltValue>("k", &encode(&good)).unwrap(), good);
        let rows: &[(&[u8], &str)] = &[
            (b"garbage", "cannot read"),
            (b"{}", "missing field"),
            (
                br#"{"format":2,"reason":"r","node":"n","at":1}"#,
                "format 2",
            ),
            (
                br#"{"format":1,"reason":"r","node":"n","at":1,"extra":true}"#,
                "unknown field",
            ),
            (
                b"{\"format\":1,\"reason\":\"\\u001b[2J\",\"node\":\"n\",\"at\":1}",
                "control or bidi",
            ),
            (&[b' '; MAX_VALUE + 1], "more than 4096"),
        ];
        for (bytes, says) in rows {
            let e = parse::<HaltValue>("/cells-updater/c/halt", bytes).unwrap_err();
            assert_eq!(e.name(), "FleetUnavailable");
            assert!(e.message().contains("/cells-updater/c/halt"), "{e}");
            assert!(e.message().contains(says), "{says}: {e}");
        }
        // A target names one of the two editions, as the contract spells them, or nothing
        // is read of it.
        let target = |package: &str| {
            format!(
                r#"{{"format":1,"version":"4.4.5","package":"{package}","max_parallel":1,"canary_soak":0,"now":true,"by":"x","at":1}}"#
            )
        };
        let t = parse::<TargetValue>("k", target("PydioEnterprise").as_bytes()).unwrap();
        assert_eq!(t.package, crate::package::Package::Enterprise);
        for bad in ["PydioPwned", "pydiohome", ""] {
            let e = parse::<TargetValue>("/c/target", target(bad).as_bytes()).unwrap_err();
            assert_eq!(e.name(), "FleetUnavailable", "{bad}");
            assert!(
                e.message().contains("is not PydioHome or PydioEnterprise"),
                "{bad}: {e}"
            );
        }
    }
}
