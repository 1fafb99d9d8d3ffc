//! The cluster's etcd (cargo feature `fleet`): one node's session (its lease, kept alive),
//! the update slots (a semaphore of `max_parallel` lease-bound keys, each taken in one
//! transaction), the halt and the bad list, the rollout target and the cluster's status.
//!
//! Every request needs a leader (`with_require_leader`), so a cluster without quorum answers
//! `FleetUnavailable` ("no quorum") in milliseconds instead of at the deadline, and every
//! request is bounded by `[fleet] timeout`. What etcd holds is a claim: each value is parsed
//! strictly ([`super::parse`]) and a malformed one is refused with its key named.

use super::{
    encode, now, parse, BadValue, CanaryValue, FleetConfig, HaltValue, Keys, NodeValue, SlotValue,
    TargetValue, FORMAT,
};
use crate::error::{Error, Result};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

/// One node's connection to the cluster's etcd.
pub struct Cluster {
    client: Client,
    /// The endpoint `client` talks to.
    current: usize,
    keys: Keys,
    node: String,
    cfg: FleetConfig,
}

/// A lease this node holds, kept alive by a task until dropped or [`Lease::revoke`]d.
pub struct Lease {
    /// The lease id.
    pub id: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // No more keep-alives: the lease (and what is bound to it) ends after its TTL, as it
        // does when the node dies.
        self.keeper.abort();
    }
}

/// The answer to a slot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// This node holds slot `n` (just taken, or already its own), granted at etcd revision
    /// `grant` (the slot key's create revision: the grant's token, which a release must name).
    Held(u32, i64),
    /// Every slot is taken: by these nodes.
    Busy(Vec<String>),
}

impl Slot {
    /// The slot number, when held.
    pub fn number(&self) -> Option<u32> {
        match self {
            Slot::Held(n, _) => Some(*n),
            Slot::Busy(_) => None,
        }
    }
}

/// The slot number of a key's last segment, in its one spelling (`0`, `1`, …; never `00`
/// or `+1`).
pub fn slot_number(segment: &str) -> Option<u32> {
    let n = segment.parse::<u32>().ok()?;
    (n.to_string() == segment).then_some(n)
}

/// The cluster as `fleet status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The cluster's name.
    pub cluster: String,
    /// The rollout target, if any.
    pub target: Option<TargetValue>,
    /// The halt, if any.
    pub halt: Option<HaltValue>,
    /// The rollout's canary, if one is healthy on the target.
    pub canary: Option<CanaryValue>,
    /// Releases marked bad: (version, why).
    pub bad: Vec<(String, BadValue)>,
    /// Slots taken: (slot, holder).
    pub slots: Vec<(u32, SlotValue)>,
    /// Live nodes: (name, record).
    pub nodes: Vec<(String, NodeValue)>,
    /// Values that could not be read, with why: they are shown, never trusted.
    pub unreadable: Vec<String>,
    /// etcd's members (name and client URLs) and the leader's name.
    pub members: Vec<String>,
    /// The leader, `""` when there is none.
    pub leader: String,
}

/// The TLS options of `cfg`: a CA, and a client certificate with its key.
fn tls(cfg: &FleetConfig) -> Result<Option<TlsOptions>> {
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| Error::FleetUnavailable(format!("cannot read {}: {e}", p.display())))
    };
    let https = cfg.endpoints.iter().any(|e| e.starts_with("https://"));
    if !https {
        return Ok(None);
    }
    let mut t = TlsOptions::new();
    if let Some(ca) = &cfg.ca {
        t = t.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => t = t.identity(Identity::from_pem(read(c)?, read(k)?)),
        (None, None) => {}
        _ => {
            return Err(Error::FleetUnavailable(
                "[fleet] cert and key go together: set both, or neither".into(),
            ))
        }
    }
    Ok(Some(t))
}

/// An etcd error as the admin reads it: `no quorum` when etcd has no leader.
fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    let text = crate::text::one_line(&e.to_string(), 300);
    if text.contains("no leader") {
        Error::FleetUnavailable(format!(
            "{what}: etcd has no quorum (no leader): no node starts an update until it is back"
        ))
    } else {
        Error::FleetUnavailable(format!("{what}: etcd did not answer: {text}"))
    }
}

/// Runs `$body` (an async block's body returning `$t`) again on the next etcd endpoint when
/// the one in use fails at the transport (a member down, a leader change, a timeout), at most
/// once per endpoint: a cluster with one member down still answers.
macro_rules! failover {
    ($self:ident, $t:ty, $body:block) => {{
        let mut left = $self.cfg.endpoints.len();
        loop {
            let r: $t = async $body.await;
            match r {
                Err(ref e) if left > 1 && transport(e) => {
                    left -= 1;
                    $self.switch().await;
                }
                other => break other,
            }
        }
    }};
}

/// An error another member might not give: the connection, a leader change, a timeout.
fn transport(e: &Error) -> bool {
    let m = e.message();
    !m.contains("no quorum")
        && [
            "tcp connect error",
            "transport error",
            "Connection refused",
            "leader changed",
            "did not answer within",
            "broken pipe",
            "connection reset",
            "h2 protocol error",
        ]
        .iter()
        .any(|w| m.contains(w))
}

/// A client for endpoint `i` of `cfg` alone.
async fn connect_one(cfg: &FleetConfig, i: usize) -> Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_timeout(cfg.timeout)
        .with_connect_timeout(cfg.timeout)
        .with_require_leader(true);
    if let Some(t) = tls(cfg)? {
        opts = opts.with_tls(t);
    }
    let ep = cfg.endpoints.get(i).cloned().unwrap_or_default();
    bounded(
        cfg.timeout,
        "connecting to etcd",
        Client::connect([ep], Some(opts)),
    )
    .await
}

impl Cluster {
    /// Connects `node` to the etcd of `cfg` and proves the connection with a first request
    /// (`connect` alone is lazy: a bad CA or a missing client certificate shows only then).
    /// The client talks to one member at a time, the first that answers; requests move to
    /// the next member when it fails (etcd-client's own balancing keeps sending a share of
    /// the requests to a member that is down).
    pub async fn connect(cfg: &FleetConfig, node: &str) -> Result<Cluster> {
        if cfg.endpoints.is_empty() {
            return Err(Error::FleetUnavailable(
                "[fleet] endpoints is empty and cells.service names no etcd registry".into(),
            ));
        }
        tls(cfg)?;
        let keys = Keys::new(&cfg.prefix, &cfg.cluster);
        let mut last = None;
        for i in 0..cfg.endpoints.len() {
            let first = async {
                let mut client = connect_one(cfg, i).await?;
                bounded(
                    cfg.timeout,
                    "reading the cluster's keys",
                    client.get(keys.halt(), None),
                )
                .await?;
                Ok::<_, Error>(client)
            };
            match first.await {
                Ok(client) => {
                    return Ok(Cluster {
                        client,
                        current: i,
                        keys,
                        node: node.to_string(),
                        cfg: cfg.clone(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| Error::FleetUnavailable("no etcd endpoint".into()));
        // Said as "no quorum" when a live member says it has no leader.
        let mut client = None;
        for i in 0..cfg.endpoints.len() {
            if let Ok(c) = connect_one(cfg, i).await {
                client = Some(c);
                break;
            }
        }
        let Some(client) = client else { return Err(e) };
        let probe = Cluster {
            client,
            current: 0,
            keys,
            node: node.to_string(),
            cfg: cfg.clone(),
        };
        probe.explain(Err(e)).await
    }

    /// Moves to the next member that accepts a connection (requests are retried there).
    async fn switch(&mut self) {
        let n = self.cfg.endpoints.len();
        for step in 1..=n {
            let i = (self.current + step) % n;
            if let Ok(c) = connect_one(&self.cfg, i).await {
                self.client = c;
                self.current = i;
                return;
            }
        }
    }

    /// The cluster's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Grants this node a lease of `[fleet] lease_ttl` and keeps it alive (every third of
    /// the TTL) until the [`Lease`] is dropped.
    pub async fn lease(&mut self) -> Result<Lease> {
        failover!(self, Result<Lease>, {
            let ttl = self.cfg.lease_ttl.as_secs().max(2) as i64;
            let t = self.cfg.timeout;
            let id = bounded(t, "granting a lease", self.client.lease_grant(ttl, None))
                .await?
                .id();
            let (mut keeper, mut stream) = bounded(
                t,
                "keeping the lease alive",
                self.client.lease_keep_alive(id),
            )
            .await?;
            let every = (self.cfg.lease_ttl / 3).max(Duration::from_millis(500));
            let mut client = self.client.clone();
            let (cfg, mut at) = (self.cfg.clone(), self.current);
            let task = tokio::spawn(async move {
                let mut failing = false;
                loop {
                    let pause = if failing {
                        every.min(Duration::from_secs(1))
                    } else {
                        every
                    };
                    tokio::time::sleep(pause).await;
                    let once = async {
                        keeper.keep_alive().await.ok()?;
                        stream.message().await.ok()?
                    };
                    match tokio::time::timeout(t, once).await {
                        Ok(Some(r)) if r.ttl() > 0 => failing = false,
                        // The stream broke (a member restarted, a leader change, the network):
                        // it never reconnects by itself, so open a new one on the same lease. A
                        // lease that is gone shows at the next confirm; the holder asks again.
                        _ => {
                            // A second failure in a row: the member may be down, try the next.
                            if failing && cfg.endpoints.len() > 1 {
                                at = (at + 1) % cfg.endpoints.len();
                                if let Ok(c) = connect_one(&cfg, at).await {
                                    client = c;
                                }
                            }
                            failing = true;
                            if let Ok(Ok((k, s))) =
                                tokio::time::timeout(t, client.lease_keep_alive(id)).await
                            {
                                keeper = k;
                                stream = s;
                            }
                        }
                    }
                }
            });
            Ok(Lease { id, keeper: task })
        })
    }

    /// Revokes `lease` at once (what is bound to it goes now, not after the TTL).
    pub async fn revoke(&mut self, lease: Lease) -> Result<()> {
        let id = lease.id;
        drop(lease);
        bounded(
            self.cfg.timeout,
            "revoking the lease",
            self.client.lease_revoke(id),
        )
        .await
        .map(|_| ())
    }

    /// Reads and parses `key`.
    async fn read<T: super::Value>(&mut self, key: &str) -> Result<Option<(T, i64)>> {
        let resp = bounded(self.cfg.timeout, "reading etcd", self.client.get(key, None)).await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => Ok(Some((parse::<T>(key, kv.value())?, kv.lease()))),
        }
    }

    /// Refuses when the cluster is halted or `version` is marked bad for it.
    pub async fn admit(&mut self, version: &str) -> Result<()> {
        failover!(self, Result<()>, {
            if let Some((h, _)) = self.read::<HaltValue>(&self.keys.halt()).await? {
                return Err(Error::FleetHalted(format!(
                    "the cluster {} is halted ({}, by {}); `cells-updater fleet resume` lifts it",
                    self.cfg.cluster, h.reason, h.node
                )));
            }
            if let Some((b, _)) = self.read::<BadValue>(&self.keys.bad(version)).await? {
                return Err(Error::NoSuchVersion(format!(
                    "{version} is marked bad for the cluster {} ({} on {}); `cells-updater fleet \
                         forget-bad {version}` clears the mark",
                    self.cfg.cluster, b.reason, b.node
                )));
            }
            Ok(())
        })
    }

    /// Takes one of `max_parallel` slots for installing `version`, bound to `lease`, in one
    /// transaction that also requires no halt and no bad mark on `version`. A slot this node
    /// already holds is its own again (a node that asks twice is never refused itself).
    pub async fn take_slot(
        &mut self,
        lease: &Lease,
        version: &str,
        max_parallel: u32,
    ) -> Result<Slot> {
        failover!(self, Result<Slot>, {
            let r = self.take_slot_once(lease, version, max_parallel).await;
            self.explain(r).await
        })
    }

    async fn take_slot_once(
        &mut self,
        lease: &Lease,
        version: &str,
        max_parallel: u32,
    ) -> Result<Slot> {
        self.admit(version).await?;
        let mut max_parallel = max_parallel;
        // The rollout's own width and canary apply to the release it targets.
        if let Some((t, _)) = self.read::<TargetValue>(&self.keys.target()).await? {
            if t.version == version {
                // Up to this node's own [fleet] max_parallel: a writer of the target
                // cannot widen a rollout past what each node's admin allows.
                max_parallel = t.max_parallel.clamp(1, max_parallel.max(1));
                if t.canary_soak > 0 {
                    match self.read::<CanaryValue>(&self.keys.canary()).await? {
                        Some((c, _)) if c.version == version => {
                            let soak = i64::try_from(t.canary_soak).unwrap_or(i64::MAX);
                            let left = c.since.saturating_add(soak).saturating_sub(now());
                            if left > 0 && c.node != self.node {
                                return Ok(Slot::Busy(vec![format!(
                                    "the canary {} is soaking on {version}, {left} s left",
                                    c.node
                                )]));
                            }
                        }
                        // No node is healthy on the target yet: one canary at a time.
                        _ => max_parallel = 1,
                    }
                }
            }
        }
        let resp = bounded(
            self.cfg.timeout,
            "reading the slots",
            self.client
                .get(self.keys.slots(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut holders = Vec::new();
        let mut taken = std::collections::BTreeSet::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let Some(n) = key.strip_prefix(&self.keys.slots()).and_then(slot_number) else {
                continue;
            };
            taken.insert(n);
            match parse::<SlotValue>(&key, kv.value()) {
                // Only the cluster's own slots count as a grant: one an etcd writer made up
                // beyond max_parallel does not.
                Ok(s) if s.node == self.node && kv.lease() == lease.id && n < max_parallel => {
                    return Ok(Slot::Held(n, kv.create_revision()))
                }
                Ok(s) if s.node == self.node && n < max_parallel => {
                    // Ours under an older lease (a restart): moved to this lease only once
                    // that lease is dead; a live one is another process using this name.
                    if !self.lease_alive(kv.lease()).await?
                        && self.rebind(n, &s, kv.mod_revision(), lease).await?
                    {
                        return Ok(Slot::Held(n, kv.create_revision()));
                    }
                    holders.push(format!("{} (another session of this node's name)", s.node));
                }
                Ok(s) => holders.push(s.node),
                Err(_) => holders.push(format!("an unreadable value in slot {n}")),
            }
        }
        let value = SlotValue {
            format: FORMAT,
            node: self.node.clone(),
            version: version.to_string(),
            since: now(),
        };
        for n in (0..max_parallel).filter(|n| !taken.contains(n)) {
            let txn = Txn::new()
                .when([
                    Compare::create_revision(self.keys.slot(n), CompareOp::Equal, 0),
                    Compare::create_revision(self.keys.halt(), CompareOp::Equal, 0),
                    Compare::create_revision(self.keys.bad(version), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put(
                    self.keys.slot(n),
                    encode(&value),
                    Some(PutOptions::new().with_lease(lease.id)),
                )]);
            let r = bounded(self.cfg.timeout, "taking a slot", self.client.txn(txn)).await?;
            if r.succeeded() {
                // The key was created by this transaction: at its revision.
                let grant = r
                    .header()
                    .map(|h| h.revision())
                    .filter(|g| *g > 0)
                    .ok_or_else(|| {
                        Error::FleetUnavailable(
                            "etcd's answer to a slot grant has no revision".into(),
                        )
                    })?;
                return Ok(Slot::Held(n, grant));
            }
            // Someone was faster, or the cluster was halted meanwhile: say which.
            self.admit(version).await?;
        }
        Ok(Slot::Busy(holders))
    }

    /// Whether lease `id` still has time left (0: not bound to a lease).
    async fn lease_alive(&mut self, id: i64) -> Result<bool> {
        if id == 0 {
            return Ok(false);
        }
        let r = bounded(
            self.cfg.timeout,
            "reading a lease",
            self.client.lease_time_to_live(id, None),
        )
        .await;
        match r {
            Ok(t) => Ok(t.ttl() > 0),
            Err(e) if e.message().contains("lease not found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rebind(&mut self, n: u32, s: &SlotValue, rev: i64, lease: &Lease) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.keys.slot(n),
                CompareOp::Equal,
                rev,
            )])
            .and_then([TxnOp::put(
                self.keys.slot(n),
                encode(s),
                Some(PutOptions::new().with_lease(lease.id)),
            )]);
        let r = bounded(self.cfg.timeout, "keeping a slot", self.client.txn(txn)).await?;
        Ok(r.succeeded())
    }

    /// Right before a swap: the slot is still this node's, under `lease`, and the lease has
    /// at least half its TTL left. A lease that ran out under a paused or cut-off holder (and
    /// another node may have its slot now) fails here: the node asks again and does not swap.
    pub async fn confirm_slot(&mut self, lease: &Lease, n: u32, grant: i64) -> Result<()> {
        failover!(self, Result<()>, {
            let key = self.keys.slot(n);
            let lost = |why: String| Error::FleetUnavailable(format!("slot {n} is lost: {why}"));
            let r = bounded(
                self.cfg.timeout,
                "reading a slot",
                self.client.get(key.clone(), None),
            )
            .await?;
            let version = match r.kvs().first() {
                None => return Err(lost("it is free (the lease ran out)".into())),
                Some(kv) => {
                    let s = parse::<SlotValue>(&key, kv.value())?;
                    if s.node != self.node || kv.lease() != lease.id {
                        return Err(lost(format!("{} holds it now", s.node)));
                    }
                    if kv.create_revision() != grant {
                        return Err(lost("it was given back and granted again since".into()));
                    }
                    s.version
                }
            };
            // A halt or a bad mark written since the grant stops the swap too.
            self.admit(&version).await?;
            let ttl = bounded(
                self.cfg.timeout,
                "reading the lease",
                self.client.lease_time_to_live(lease.id, None),
            )
            .await?
            .ttl();
            let half = (self.cfg.lease_ttl.as_secs() / 2) as i64;
            if ttl < half {
                return Err(lost(format!(
                    "the lease has {ttl} s left, less than half its TTL"
                )));
            }
            Ok(())
        })
    }

    /// Gives slot `n` back, only if it is still this node's: the delete compares the
    /// revision read, so a slot another node took meanwhile is never freed.
    pub async fn release_slot(&mut self, n: u32) -> Result<()> {
        failover!(self, Result<()>, {
            let key = self.keys.slot(n);
            let r = bounded(
                self.cfg.timeout,
                "reading a slot",
                self.client.get(key.clone(), None),
            )
            .await?;
            if let Some(kv) = r.kvs().first() {
                if parse::<SlotValue>(&key, kv.value()).is_ok_and(|s| s.node == self.node) {
                    self.delete_if(&key, kv.mod_revision(), "freeing a slot")
                        .await?;
                }
            }
            Ok(())
        })
    }

    /// Gives back the grant `grant` of slot `n` (its token from [`Slot::Held`]): the delete
    /// compares the key's create revision, so a later grant of the same slot (to this node's
    /// next job, or to another node) is never freed by a late report. `false` when that grant
    /// was already gone.
    pub async fn release_grant(&mut self, n: u32, grant: i64) -> Result<bool> {
        failover!(self, Result<bool>, {
            let key = self.keys.slot(n);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    grant,
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            let r = bounded(self.cfg.timeout, "freeing a slot", self.client.txn(txn)).await?;
            Ok(r.succeeded())
        })
    }

    /// Gives back every slot this node holds under `lease` (a job that never learned of its
    /// grant); the number freed.
    pub async fn release_mine(&mut self, lease: &Lease) -> Result<usize> {
        failover!(self, Result<usize>, {
            let r = bounded(
                self.cfg.timeout,
                "reading the slots",
                self.client
                    .get(self.keys.slots(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
            let mine: Vec<(String, i64)> = r
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = String::from_utf8_lossy(kv.key()).to_string();
                    let s = parse::<SlotValue>(&key, kv.value()).ok()?;
                    // Only this session's: a live session elsewhere under this node's name
                    // (a cloned machine id) keeps its own.
                    (s.node == self.node && kv.lease() == lease.id)
                        .then_some((key, kv.mod_revision()))
                })
                .collect();
            let mut freed = 0;
            for (key, rev) in mine {
                if self.delete_if(&key, rev, "freeing a slot").await? {
                    freed += 1;
                }
            }
            Ok(freed)
        })
    }

    /// Deletes `key` if its mod revision is still `rev`.
    async fn delete_if(&mut self, key: &str, rev: i64, what: &str) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key, None)]);
        let r = bounded(self.cfg.timeout, what, self.client.txn(txn)).await?;
        Ok(r.succeeded())
    }

    /// This node is healthy on the rollout's target `version`: it becomes the canary when
    /// none is (the soak runs from now). Other versions, or a canary already set: nothing.
    pub async fn record_healthy(&mut self, version: &str) -> Result<()> {
        failover!(self, Result<()>, {
            let Some((t, _)) = self.read::<TargetValue>(&self.keys.target()).await? else {
                return Ok(());
            };
            if t.version != version || t.canary_soak == 0 {
                return Ok(());
            }
            let c = CanaryValue {
                format: FORMAT,
                version: version.to_string(),
                node: self.node.clone(),
                since: now(),
            };
            // Set once per target: a canary of an older target is replaced.
            let current = bounded(
                self.cfg.timeout,
                "reading the canary",
                self.client.get(self.keys.canary(), None),
            )
            .await?;
            let cmp = match current.kvs().first() {
                Some(kv) => {
                    let key = self.keys.canary();
                    if parse::<CanaryValue>(&key, kv.value()).is_ok_and(|c| c.version == version) {
                        return Ok(());
                    }
                    Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision())
                }
                None => Compare::create_revision(self.keys.canary(), CompareOp::Equal, 0),
            };
            let txn =
                Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::put(self.keys.canary(), encode(&c), None)]);
            bounded(
                self.cfg.timeout,
                "recording the canary",
                self.client.txn(txn),
            )
            .await
            .map(|_| ())
        })
    }

    /// The rollout target, if any (a malformed one is an error naming its key).
    pub async fn target(&mut self) -> Result<Option<TargetValue>> {
        failover!(self, Result<Option<TargetValue>>, {
            Ok(self
                .read::<TargetValue>(&self.keys.target())
                .await?
                .map(|t| t.0))
        })
    }

    /// A stream that yields whenever a key of the cluster changes (the agent re-reads then);
    /// it ends when etcd is lost, and the agent opens another.
    pub async fn watch(&mut self) -> Result<(etcd_client::Watcher, etcd_client::WatchStream)> {
        failover!(
            self,
            Result<(etcd_client::Watcher, etcd_client::WatchStream)>,
            {
                bounded(
                    self.cfg.timeout,
                    "watching the cluster",
                    self.client
                        .watch(self.keys.root(), Some(WatchOptions::new().with_prefix())),
                )
                .await
            }
        )
    }

    /// `version` failed its health check here: `bad/<version>` and `halt` are written in
    /// one transaction, then the grant `(slot, token)` is given back. With a grant, the
    /// verdict is written once per grant (a marker `verdicts/<node>/<token>` in the same
    /// transaction): a report sent again, after an admin's resume and forget-bad, does not
    /// halt the cluster again.
    pub async fn report_bad(
        &mut self,
        version: &str,
        reason: &str,
        grant: Option<(u32, i64)>,
    ) -> Result<()> {
        failover!(self, Result<()>, {
            let reason = crate::text::one_line(reason, 300);
            let bad = BadValue {
                format: FORMAT,
                node: self.node.clone(),
                reason: reason.clone(),
                at: now(),
            };
            let halt = HaltValue {
                format: FORMAT,
                reason: format!("{version} failed on {}: {reason}", self.node),
                node: self.node.clone(),
                at: now(),
            };
            let mut ops = vec![
                TxnOp::put(self.keys.bad(version), encode(&bad), None),
                TxnOp::put(self.keys.halt(), encode(&halt), None),
            ];
            let txn = match grant {
                Some((_, token)) if token != 0 => {
                    let marker = self.keys.verdict(&self.node, token);
                    ops.push(TxnOp::put(marker.as_str(), encode(&bad), None));
                    Txn::new()
                        .when([Compare::create_revision(
                            marker.as_str(),
                            CompareOp::Equal,
                            0,
                        )])
                        .and_then(ops)
                }
                _ => Txn::new().and_then(ops),
            };
            bounded(
                self.cfg.timeout,
                "marking the release bad",
                self.client.txn(txn),
            )
            .await?;
            if let Some((n, token)) = grant {
                if token != 0 {
                    self.release_grant(n, token).await?;
                }
            }
            Ok(())
        })
    }

    /// Halts the cluster (an admin's `fleet halt`).
    pub async fn halt(&mut self, reason: &str, by: &str) -> Result<()> {
        failover!(self, Result<()>, {
            let v = HaltValue {
                format: FORMAT,
                reason: crate::text::one_line(reason, 300),
                node: crate::text::one_line(by, 100),
                at: now(),
            };
            self.put(self.keys.halt(), encode(&v)).await
        })
    }

    /// Lifts the halt.
    pub async fn resume(&mut self) -> Result<()> {
        failover!(self, Result<()>, {
            let key = self.keys.halt();
            bounded(
                self.cfg.timeout,
                "lifting the halt",
                self.client.delete(key, None),
            )
            .await
            .map(|_| ())
        })
    }

    /// Clears the cluster's bad mark on `version`; `false` when there was none.
    pub async fn forget_bad(&mut self, version: &str) -> Result<bool> {
        failover!(self, Result<bool>, {
            let key = self.keys.bad(version);
            let r = bounded(
                self.cfg.timeout,
                "clearing the mark",
                self.client.delete(key, None),
            )
            .await?;
            Ok(r.deleted() > 0)
        })
    }

    /// Sets the rollout target (refused while halted or for a release marked bad).
    pub async fn set_target(&mut self, t: &TargetValue) -> Result<()> {
        failover!(self, Result<()>, {
            self.admit(&t.version).await?;
            self.put(self.keys.target(), encode(t)).await
        })
    }

    /// Writes this node's record, bound to `lease`.
    pub async fn heartbeat(&mut self, lease: &Lease, v: &NodeValue) -> Result<()> {
        failover!(self, Result<()>, {
            let key = self.keys.node(&self.node);
            bounded(
                self.cfg.timeout,
                "writing the heartbeat",
                self.client
                    .put(key, encode(v), Some(PutOptions::new().with_lease(lease.id))),
            )
            .await
            .map(|_| ())
        })
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<()> {
        bounded(
            self.cfg.timeout,
            "writing etcd",
            self.client.put(key, value, None),
        )
        .await
        .map(|_| ())
    }

    /// The cluster's status: every value under its keys (unreadable ones listed, not
    /// trusted), etcd's members and leader.
    pub async fn status(&mut self) -> Result<Status> {
        failover!(self, Result<Status>, {
            let r = self.status_once().await;
            self.explain(r).await
        })
    }

    /// A failed request may have met a member that is down while a live one would say
    /// "no leader": each endpoint is asked alone (half a second each), so a lost quorum is
    /// named as such rather than as a timeout.
    async fn explain<T>(&self, r: Result<T>) -> Result<T> {
        let e = match r {
            Err(e @ Error::FleetUnavailable(_)) if !e.message().contains("no quorum") => e,
            other => return other,
        };
        if !e.message().contains("etcd did not answer") {
            return Err(e);
        }
        let limit = Duration::from_millis(500);
        for ep in &self.cfg.endpoints {
            let mut opts = ConnectOptions::new()
                .with_timeout(limit)
                .with_connect_timeout(limit)
                .with_require_leader(true);
            if let Ok(Some(t)) = tls(&self.cfg) {
                opts = opts.with_tls(t);
            }
            let Ok(Ok(mut one)) =
                tokio::time::timeout(limit, Client::connect([ep.as_str()], Some(opts))).await
            else {
                continue;
            };
            if let Ok(Err(err)) = tokio::time::timeout(limit, one.get(self.keys.halt(), None)).await
            {
                if err.to_string().contains("no leader") {
                    return Err(unavailable("asking etcd", err));
                }
            }
        }
        Err(e)
    }

    async fn status_once(&mut self) -> Result<Status> {
        let t = self.cfg.timeout;
        let root = self.keys.root().to_string();
        let resp = bounded(
            t,
            "reading the cluster",
            self.client.get(root, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut st = Status {
            cluster: self.cfg.cluster.clone(),
            ..Status::default()
        };
        let k = self.keys.clone();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let v = kv.value();
            let shown = |e: Error| st_line(&e);
            if key == k.target() {
                match parse::<TargetValue>(&key, v) {
                    Ok(x) => st.target = Some(x),
                    Err(e) => st.unreadable.push(shown(e)),
                }
            } else if key == k.halt() {
                match parse::<HaltValue>(&key, v) {
                    Ok(x) => st.halt = Some(x),
                    // An unreadable halt still halts.
                    Err(e) => {
                        st.halt = Some(HaltValue {
                            format: FORMAT,
                            reason: "the halt's value cannot be read".into(),
                            node: String::new(),
                            at: 0,
                        });
                        st.unreadable.push(shown(e));
                    }
                }
            } else if key == k.canary() {
                match parse::<CanaryValue>(&key, v) {
                    Ok(x) => st.canary = Some(x),
                    Err(e) => st.unreadable.push(shown(e)),
                }
            } else if let Some(ver) = key.strip_prefix(&k.bads()) {
                match parse::<BadValue>(&key, v) {
                    Ok(x) => st.bad.push((crate::text::one_line(ver, 80), x)),
                    Err(e) => st.unreadable.push(shown(e)),
                }
            } else if let Some(n) = key.strip_prefix(&k.slots()) {
                match (slot_number(n), parse::<SlotValue>(&key, v)) {
                    (Some(n), Ok(x)) => st.slots.push((n, x)),
                    (_, Err(e)) => st.unreadable.push(shown(e)),
                    (None, _) => st.unreadable.push(format!(
                        "{}: not a slot number",
                        crate::text::one_line(&key, 200)
                    )),
                }
            } else if let Some(name) = key.strip_prefix(&k.nodes()) {
                match parse::<NodeValue>(&key, v) {
                    Ok(x) if super::name_ok(name) => st.nodes.push((name.to_string(), x)),
                    Ok(_) => st.unreadable.push(format!(
                        "{}: not a node name",
                        crate::text::one_line(&key, 200)
                    )),
                    Err(e) => st.unreadable.push(shown(e)),
                }
            }
        }
        let members = bounded(t, "listing etcd's members", self.client.member_list()).await?;
        let status = bounded(t, "asking etcd's status", self.client.status()).await?;
        for m in members.members() {
            let name = crate::text::one_line(m.name(), 64);
            if m.id() == status.leader() {
                st.leader = name.clone();
            }
            st.members.push(name);
        }
        Ok(st)
    }
}

fn st_line(e: &Error) -> String {
    crate::text::one_line(&e.message(), 300)
}

/// `fut`, bounded by `limit`, its error an admin's sentence.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(_) => Err(Error::FleetUnavailable(format!(
            "{what}: etcd did not answer within {} s (unreachable, or without quorum)",
            limit.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::slot_number;

    #[test]
    fn a_slot_number_has_one_spelling() {
        assert_eq!(slot_number("0"), Some(0));
        assert_eq!(slot_number("12"), Some(12));
        for bad in ["00", "+1", "01", "", "-1", "1 ", "x"] {
            assert_eq!(slot_number(bad), None, "{bad:?}");
        }
    }
}
