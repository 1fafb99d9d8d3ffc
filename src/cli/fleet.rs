//! `cells-updater fleet …`: the cluster's side, talking to etcd directly with this node's
//! `[fleet]` credentials (root-readable), as etcdctl and locksmithctl do. The agent itself
//! (`fleet agent`) is in `cells_updater::fleet::agent`.

use super::bus::Failure;
use super::{FleetCommand, EXIT_FAILED};
use cells_updater::config::Config;
use cells_updater::contract::manager_prop;
use cells_updater::fleet::etcd::{Cluster, Status};
use cells_updater::fleet::{FleetConfig, TargetValue, FORMAT};
use cells_updater::package::Package;
use cells_updater::text::one_line;

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_FAILED,
        message: e.to_string(),
    }
}

/// This node's `[fleet]`, its endpoints found in cells.service when none are set.
pub async fn settings(cfg: &Config) -> Result<(FleetConfig, String), Failure> {
    let mut f = cfg.fleet.clone().ok_or_else(|| {
        failed("this node has no [fleet] section in its configuration (docs/fleet.md)")
    })?;
    cells_updater::fleet::discover::complete(
        &mut f,
        cells_updater::fleet::agent::discovered(cfg).await,
    )
    .map_err(failed)?;
    let node = cells_updater::fleet::agent::node_name(&f, &cfg.root).map_err(failed)?;
    Ok((f, node))
}

/// Runs one `fleet` command other than `agent`.
pub async fn run(cfg: Config, cmd: FleetCommand, bus: Option<&str>) -> Result<(), Failure> {
    let (f, node) = settings(&cfg).await?;
    let mut c = Cluster::connect(&f, &node).await.map_err(failed)?;
    let uid = nix::unistd::getuid().as_raw();
    let by = format!("uid {uid} on {node}");
    match cmd {
        FleetCommand::Agent => Ok(()),
        FleetCommand::Status { json } => {
            let st = c.status().await.map_err(failed)?;
            if json {
                println!("{}", status_json(&st, cells_updater::fleet::now()));
            } else {
                print!("{}", status_table(&st, cells_updater::fleet::now()));
            }
            Ok(())
        }
        FleetCommand::Halt { reason } => {
            let reason = reason.unwrap_or_else(|| format!("halted by {by}"));
            c.halt(&reason, &by).await.map_err(failed)?;
            println!(
                "The cluster {} is halted: no node starts an update.",
                f.cluster
            );
            Ok(())
        }
        FleetCommand::Resume => {
            c.resume().await.map_err(failed)?;
            println!("The cluster {} is no longer halted.", f.cluster);
            Ok(())
        }
        FleetCommand::ForgetBad { version } => {
            let v = cells_updater::version::CellsVersion::parse(&version).map_err(failed)?;
            if c.forget_bad(&v.to_string()).await.map_err(failed)? {
                println!("{v} is no longer marked bad for the cluster {}.", f.cluster);
            } else {
                println!("{v} was not marked bad for the cluster {}.", f.cluster);
            }
            Ok(())
        }
        FleetCommand::Rollout {
            version,
            max_parallel,
            canary_soak,
            now,
            package,
        } => {
            let v = cells_updater::version::CellsVersion::parse(&version).map_err(failed)?;
            let max_parallel = max_parallel.unwrap_or(f.max_parallel);
            if !(1..=64).contains(&max_parallel) {
                return Err(Failure {
                    code: super::EXIT_USAGE,
                    message: format!("--max-parallel {max_parallel} must be 1 to 64"),
                });
            }
            let soak = match canary_soak {
                Some(s) => cells_updater::config::parse_duration(&s).map_err(|e| Failure {
                    code: super::EXIT_USAGE,
                    message: format!("--canary-soak: {e}"),
                })?,
                None => f.canary_soak,
            };
            let package = match package {
                Some(p) => Package::parse(&p).ok_or_else(|| Failure {
                    code: super::EXIT_USAGE,
                    message: format!(
                        "--package {:?} must be PydioHome or PydioEnterprise",
                        one_line(&p, 40)
                    ),
                })?,
                None => local_package(bus).await?,
            };
            let t = TargetValue {
                format: FORMAT,
                version: v.to_string(),
                package,
                max_parallel,
                canary_soak: soak.as_secs(),
                now,
                by,
                at: cells_updater::fleet::now(),
            };
            c.set_target(&t).await.map_err(failed)?;
            println!(
                "Rollout of {} {} to the cluster {}: {} node(s) at a time{}{}.",
                t.package,
                t.version,
                f.cluster,
                t.max_parallel,
                if t.canary_soak > 0 {
                    format!(", the first one soaking {} s", t.canary_soak)
                } else {
                    String::new()
                },
                if now { ", outside the windows" } else { "" }
            );
            Ok(())
        }
    }
}

/// The package this node's daemon runs (the default of `--package`).
async fn local_package(bus: Option<&str>) -> Result<Package, Failure> {
    let conn = super::bus::connect(bus).await?;
    let p = zbus::Proxy::new(
        &conn,
        cells_updater::contract::BUS_NAME,
        cells_updater::contract::MANAGER_PATH,
        cells_updater::contract::MANAGER_INTERFACE,
    )
    .await?;
    let name: String = p.get_property(manager_prop::PACKAGE_NAME).await?;
    match Package::parse(&name) {
        Some(p) => Ok(p),
        None => Err(failed(
            "this node's daemon does not say which package it runs: pass --package",
        )),
    }
}

fn age(now: i64, at: i64) -> String {
    let s = now.saturating_sub(at).max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// `fleet status` as a table; every value from etcd shown as one inert line.
pub fn status_table(st: &Status, now: i64) -> String {
    let l = |s: &str| one_line(s, 120);
    let mut out = format!(
        "Cluster:  {}\netcd:     {} member(s) ({}), leader {}\n",
        l(&st.cluster),
        st.members.len(),
        st.members.join(", "),
        if st.leader.is_empty() {
            "none: no quorum".to_string()
        } else {
            st.leader.clone()
        }
    );
    out += &match &st.target {
        Some(t) => format!(
            "Target:   {} {}, {} at a time{}{}, set by {} {}\n",
            t.package,
            l(&t.version),
            t.max_parallel,
            if t.canary_soak > 0 {
                format!(", canary soak {} s", t.canary_soak)
            } else {
                String::new()
            },
            if t.now { ", outside windows" } else { "" },
            l(&t.by),
            age(now, t.at)
        ),
        None => "Target:   none\n".into(),
    };
    if let Some(c) = &st.canary {
        out += &format!(
            "Canary:   {} healthy on {} since {}\n",
            l(&c.node),
            l(&c.version),
            age(now, c.since)
        );
    }
    out += &match &st.halt {
        Some(h) => format!(
            "Halted:   {} (by {}, {}); `cells-updater fleet resume` lifts it\n",
            l(&h.reason),
            l(&h.node),
            age(now, h.at)
        ),
        None => "Halted:   no\n".into(),
    };
    if st.bad.is_empty() {
        out += "Bad:      none\n";
    }
    for (v, b) in &st.bad {
        out += &format!(
            "Bad:      {} (on {}: {}, {})\n",
            l(v),
            l(&b.node),
            l(&b.reason),
            age(now, b.at)
        );
    }
    out += &format!(
        "\n{:<24} {:<12} {:<18} {:<5} {:<12} LAST ERROR\n",
        "NODE", "VERSION", "STATE", "SLOT", "HEARTBEAT"
    );
    for (name, n) in &st.nodes {
        let slot = st
            .slots
            .iter()
            .find(|(_, s)| s.node == *name)
            .map_or("-".to_string(), |(i, _)| i.to_string());
        out += &format!(
            "{:<24} {:<12} {:<18} {:<5} {:<12} {}\n",
            l(name),
            if n.version.is_empty() {
                "?"
            } else {
                &n.version
            },
            l(&n.state),
            slot,
            age(now, n.heartbeat),
            l(&n.last_error)
        );
    }
    for (i, s) in &st.slots {
        if !st.nodes.iter().any(|(n, _)| *n == s.node) {
            out += &format!(
                "slot {i} held by {} (no heartbeat) for {}\n",
                l(&s.node),
                l(&s.version)
            );
        }
    }
    for u in &st.unreadable {
        out += &format!("Unreadable: {}\n", l(u));
    }
    out
}

/// `fleet status --json`.
pub fn status_json(st: &Status, now: i64) -> String {
    let nodes: Vec<serde_json::Value> = st
        .nodes
        .iter()
        .map(|(name, n)| {
            serde_json::json!({
                "node": name,
                "version": n.version,
                "state": n.state,
                "slot": st.slots.iter().find(|(_, s)| s.node == *name).map(|(i, _)| *i),
                "heartbeat_age_s": now.saturating_sub(n.heartbeat).max(0),
                "last_error": n.last_error,
            })
        })
        .collect();
    let v = serde_json::json!({
        "cluster": st.cluster,
        "members": st.members,
        "leader": st.leader,
        "quorum": !st.leader.is_empty(),
        "target": st.target,
        "canary": st.canary,
        "halt": st.halt,
        "bad": st.bad.iter().map(|(v, b)| serde_json::json!({
            "version": v, "node": b.node, "reason": b.reason, "at": b.at
        })).collect::<Vec<_>>(),
        "slots": st.slots.iter().map(|(i, s)| serde_json::json!({
            "slot": i, "node": s.node, "version": s.version, "since": s.since
        })).collect::<Vec<_>>(),
        "nodes": nodes,
        "unreadable": st.unreadable,
    });
    cells_updater::text::json(&v)
}

/// `doctor`'s fleet checks, for a node with `[fleet]`: where the endpoints came from and
/// whether etcd answers (members, leader), the agent on the bus, this node's heartbeat, and
/// the other nodes' clocks against this one (a heartbeat further than the lease TTL from now).
pub async fn doctor(cfg: &Config, bus: Option<&str>) -> Vec<cells_updater::doctor::Finding> {
    use cells_updater::doctor::{Finding, Level};
    let f = |level, message: String, fix: &str| Finding {
        check: "fleet",
        level,
        message,
        fix: fix.to_string(),
    };
    let mut out = Vec::new();
    let (fl, node) = match settings(cfg).await {
        Ok(s) => s,
        Err(e) => {
            out.push(f(
                Level::Fail,
                e.message,
                "set [fleet] endpoints (docs/fleet.md)",
            ));
            return out;
        }
    };
    out.push(f(
        Level::Ok,
        format!(
            "node {node} of cluster {}, etcd {} (from {})",
            fl.cluster,
            fl.endpoints.join(", "),
            fl.source
        ),
        "",
    ));
    let agent = match super::bus::connect(bus).await {
        Ok(conn) => match zbus::fdo::DBusProxy::new(&conn).await {
            Ok(p) => p
                .name_has_owner(
                    zbus::names::BusName::try_from(cells_updater::contract::AGENT_NAME)
                        .expect("a valid bus name"),
                )
                .await
                .unwrap_or(false),
            Err(_) => false,
        },
        Err(_) => false,
    };
    out.push(if agent {
        f(Level::Ok, "the fleet agent is on the bus".into(), "")
    } else {
        f(
            Level::Fail,
            "the fleet agent is not on the bus: no update starts on this node".into(),
            "systemctl enable --now cells-updater-fleet.service",
        )
    });
    let st = match Cluster::connect(&fl, &node).await {
        Ok(mut c) => c.status().await,
        Err(e) => Err(e),
    };
    let st = match st {
        Ok(st) => st,
        Err(e) => {
            out.push(f(
                Level::Fail,
                one_line(&e.message(), 300),
                "check the endpoints, the certificates and etcd's health (etcdctl endpoint health)",
            ));
            return out;
        }
    };
    out.push(f(
        Level::Ok,
        format!(
            "etcd answers: {} member(s), leader {}",
            st.members.len(),
            st.leader
        ),
        "",
    ));
    let now = cells_updater::fleet::now();
    match st.nodes.iter().find(|(n, _)| *n == node) {
        Some((_, v)) => out.push(f(
            Level::Ok,
            format!("this node's heartbeat is {}", age(now, v.heartbeat)),
            "",
        )),
        None => out.push(f(
            Level::Warn,
            format!("no heartbeat of {node} in etcd"),
            "systemctl status cells-updater-fleet.service",
        )),
    }
    let ttl = fl.lease_ttl.as_secs() as i64;
    for (n, v) in &st.nodes {
        if v.heartbeat.saturating_sub(now).saturating_abs() > ttl {
            out.push(f(
                Level::Warn,
                format!(
                    "the clock of {} is {} s off this one's (more than the lease TTL)",
                    one_line(n, 64),
                    v.heartbeat.saturating_sub(now)
                ),
                "run NTP (systemd-timesyncd or chrony) on every node",
            ));
        }
    }
    if let Some(h) = &st.halt {
        out.push(f(
            Level::Warn,
            format!("the cluster is halted: {}", one_line(&h.reason, 200)),
            "cells-updater fleet resume, after fixing the cause",
        ));
    }
    out
}
