//! The fleet where admins run it: three booted systemd nodes (systemd-nspawn, one overlay
//! each) in one network namespace with a real 3-member etcd, each node with `cells.service`
//! (user pydio, its capability) on its own `127.0.0.N:443`, cells-updater installed by
//! `dist/install.sh` and the packaged `cells-updater-fleet.service` enabled
//! (tests/support/cluster.rs). A watcher asks every node's Cells for its version every
//! 100 ms.
#![cfg(all(feature = "fleet", feature = "failpoints"))]

mod support;

use std::time::{Duration, Instant};
use support::cluster::*;

fn status_json(n: &ClusterNode) -> serde_json::Value {
    serde_json::from_str(&n.fleet_ok("status --json")).unwrap()
}

/// Waits (a few heartbeats) until `fleet status` shows every node idle on `version` and no
/// slot held.
fn wait_records(c: &Cluster, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status_json(&c.nodes[0]);
        let nodes = st["nodes"].as_array().unwrap();
        if nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["version"] == version && n["state"] == "idle")
            && st["slots"].as_array().unwrap().is_empty()
        {
            return;
        }
        assert!(Instant::now() < deadline, "fleet status: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every node ends on `version`, each was down at some point (it restarted), never more than
/// `most` at once, and each binary has its capability.
fn assert_rolled(c: &Cluster, w: &Watch, from: &str, version: &str, most: usize) {
    assert!(
        w.most_down <= most,
        "{} nodes refused at once (max_parallel {most}); {} samples",
        w.most_down,
        w.samples
    );
    for (i, n) in c.nodes.iter().enumerate() {
        assert_eq!(w.restarts[i], 1, "{} restarts seen", n.name);
        assert_eq!(
            w.versions[i],
            vec![from.to_string(), version.to_string()],
            "{} served",
            n.name
        );
        let caps = n.sb.sh("getcap /opt/pydio/bin/cells");
        assert!(
            caps.contains("cap_net_bind_service=ep"),
            "{}: {caps:?}",
            n.name
        );
        assert_eq!(c.release_sha(version), n.sha(), "{}", n.name);
    }
}

#[test]
fn over_tls_a_rollout_moves_one_node_at_a_time_and_a_broken_release_halts_the_cluster() {
    let c = Cluster::start(true);
    // The agents read their client certificates from systemd's credentials, not root's copies.
    for n in &c.nodes {
        let cred =
            n.sb.sh("ls /run/credentials/cells-updater-fleet.service/ && \
             stat -c %U /etc/cells-updater/fleet/client.key");
        assert!(
            cred.contains("etcd-cert") && cred.contains("etcd-key") && cred.contains("root"),
            "{}: {cred}",
            n.name
        );
    }

    // doctor on each node, as an admin runs it: etcd with root's credentials, the agent, the
    // heartbeat, the clocks.
    for n in &c.nodes {
        let fleet = support::doctor_lines(&n.sb.try_sh("cells-updater doctor --json").1, "fleet");
        for want in [
            "ok the fleet agent is on the bus",
            "ok etcd answers: 3 member(s), leader m",
            "ok this node's heartbeat is",
        ] {
            assert!(
                fleet.iter().any(|l| l.contains(want)),
                "{}: {want}: {fleet:?}",
                n.name
            );
        }
        assert!(
            fleet.iter().all(|l| l.starts_with("ok ")),
            "{}: {fleet:?}",
            n.name
        );
    }

    // Rolling, max_parallel 1.
    let w = Watcher::start(&c);
    let t = Instant::now();
    c.nodes[0].fleet_ok("rollout 4.4.5 --package PydioHome");
    c.wait_all_on("4.4.5", Duration::from_secs(120));
    let took = t.elapsed();
    let w = w.stop();
    eprintln!(
        "rollout of 3 over TLS in {:.1} s, at most {} refused at once ({} samples)",
        took.as_secs_f64(),
        w.most_down,
        w.samples
    );
    assert_rolled(&c, &w, "4.4.2", "4.4.5", 1);
    wait_records(&c, "4.4.5");

    // A broken release: the first node rolls back and marks it bad, the cluster halts, the
    // other two never install it.
    let good: Vec<String> = c.nodes.iter().map(|n| n.sha()).collect();
    let broken = c.release_sha("4.4.6");
    c.nodes[0].fleet_ok("rollout 4.4.6 --package PydioHome");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut installed = vec![false; 3];
    let halted_at = loop {
        for (i, n) in c.nodes.iter().enumerate() {
            installed[i] |= n.sha() == broken;
        }
        let st = status_json(&c.nodes[0]);
        if !st["halt"].is_null() {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "no halt: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Long enough for a wrongly released slot to be taken and a binary swapped.
    while halted_at.elapsed() < Duration::from_secs(8) {
        for (i, n) in c.nodes.iter().enumerate() {
            installed[i] |= n.sha() == broken;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        installed.iter().filter(|x| **x).count(),
        1,
        "nodes that installed the broken release: {installed:?}"
    );
    c.wait_all_on("4.4.5", Duration::from_secs(60));
    let st = status_json(&c.nodes[0]);
    let bad = st["bad"].as_array().unwrap();
    assert!(
        bad.iter().any(|b| b["version"] == "4.4.6"),
        "4.4.6 not marked bad: {st}"
    );
    for (i, n) in c.nodes.iter().enumerate() {
        if !installed[i] {
            assert_eq!(n.sha(), good[i], "{}'s binary changed", n.name);
        }
    }
    eprintln!(
        "fleet status after the halt:\n{}",
        c.nodes[2].fleet_ok("status")
    );
    // A new target is refused while halted; after resume, all three proceed.
    let (ok, _, err) = c.nodes[0].fleet("rollout 4.4.7 --package PydioHome");
    assert!(!ok && err.contains("halt"), "{err}");
    c.nodes[1].fleet_ok("resume");
    let w = Watcher::start(&c);
    c.nodes[1].fleet_ok("rollout 4.4.7 --package PydioHome");
    c.wait_all_on("4.4.7", Duration::from_secs(120));
    assert_rolled(&c, &w.stop(), "4.4.5", "4.4.7", 1);
}

#[test]
fn quorum_loss_stops_every_node_and_a_power_cut_of_the_slot_holder_frees_its_slot() {
    let mut c = Cluster::start(false);

    // Quorum loss: the target is written, then 2 of 3 members stop before any agent acts.
    for n in &c.nodes {
        n.sb.sh("systemctl stop cells-updater-fleet.service");
    }
    c.nodes[0].fleet_ok("rollout 4.4.5 --package PydioHome");
    c.etcd.kill(1);
    c.etcd.kill(2);
    for n in &c.nodes {
        n.sb.sh("systemctl start cells-updater-fleet.service");
    }
    let since = Instant::now();
    let mut said = String::new();
    while since.elapsed() < Duration::from_secs(6) {
        let (ok, _, err) = c.nodes[2].fleet("status");
        assert!(!ok, "status without quorum succeeded");
        said = err;
        let addrs = c.addrs();
        let now: Vec<Option<String>> = c.netns.run(move || addrs.into_iter().map(served).collect());
        assert!(
            now.iter().all(|v| v.as_deref() == Some("4.4.2")),
            "a node moved without quorum: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(said.contains("no quorum"), "{said}");
    for n in &c.nodes {
        assert_eq!(n.prop("CurrentJob"), "o \"/\"", "{} started a job", n.name);
        // The agent's unit is up and says what it waits for; it owns no name, so the
        // daemon's gate grants nothing.
        assert!(
            !n.agent_up(),
            "{}'s agent owns its name without etcd",
            n.name
        );
        assert_eq!(
            n.sb.unit_prop("cells-updater-fleet.service", "ActiveState"),
            "active"
        );
        let status = n.sb.unit_prop("cells-updater-fleet.service", "StatusText");
        assert!(
            status.starts_with("waiting for etcd"),
            "{}: {status}",
            n.name
        );
    }
    // An admin's update on a node fails closed, and nothing changes on disk.
    let before = c.nodes[1].sha();
    let (ok, out, err) = c.nodes[1].sb.try_sh("cells-updater update 4.4.5");
    assert!(
        !ok && format!("{out}{err}").contains("FleetUnavailable"),
        "{out}{err}"
    );
    assert_eq!(c.nodes[1].sha(), before);
    // Members back: the rollout goes on by itself.
    let w = Watcher::start(&c);
    c.etcd.restart(1);
    c.etcd.restart(2);
    c.wait_all_on("4.4.5", Duration::from_secs(120));
    assert_rolled(&c, &w.stop(), "4.4.2", "4.4.5", 1);

    // Power cut of the slot holder between its swap and its health check: only n1's agent
    // runs when the rollout starts, so n1 takes the slot; its daemon stops at the failpoint.
    for n in &c.nodes[1..] {
        n.sb.sh("systemctl stop cells-updater-fleet.service");
    }
    let n1 = &c.nodes[0];
    n1.sb.write(
        "/etc/systemd/system/cells-updater.service.d/90-failpoint.conf",
        b"[Service]\nEnvironment=CELLS_UPDATER_FAILPOINT=apply-after-restart\n\
          Environment=CELLS_UPDATER_FAILPOINT_ACTION=stop\n",
        0o644,
    );
    n1.sb
        .sh("systemctl daemon-reload && systemctl restart cells-updater.service");
    n1.fleet_ok("rollout 4.4.7 --package PydioHome");
    n1.sb.wait_for(
        Duration::from_secs(60),
        "n1's daemon to stop after its restart",
        "journalctl -u cells-updater --no-pager -o cat | grep -q 'failpoint apply-after-restart: SIGSTOP'",
    );
    // The drop-in goes with the cut: what boots next must not stop again.
    n1.sb
        .sh("rm /etc/systemd/system/cells-updater.service.d/90-failpoint.conf");
    let st = status_json(&c.nodes[1]);
    assert_eq!(
        st["slots"][0]["node"], "n1",
        "n1 should hold the slot: {st}"
    );
    for n in &c.nodes[1..] {
        n.sb.sh("systemctl start cells-updater-fleet.service");
    }
    let w = Watcher::start(&c);
    c.nodes[0].sb.power_cut();
    let cut = Instant::now();
    let freed = loop {
        let st = status_json(&c.nodes[1]);
        if !st["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["node"] == "n1")
        {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < TTL + Duration::from_secs(5),
            "n1's slot still held {:?} after the cut: {st}",
            cut.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "power cut: n1's slot free {:.1} s after the cut (TTL {} s)",
        freed.as_secs_f64(),
        TTL.as_secs()
    );
    // Freed by the lease's end, not before it: the last keep-alive was at most a heartbeat
    // (TTL / 3) before the cut.
    assert!(
        freed + TTL / 3 + Duration::from_millis(500) >= TTL,
        "the slot was free {freed:?} after the cut: before its lease could end"
    );
    // The others go on while n1 is off.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = [c.nodes[1].addr, c.nodes[2].addr];
        let s: Vec<Option<String>> = c.netns.run(move || a.into_iter().map(served).collect());
        if s.iter().all(|v| v.as_deref() == Some("4.4.7")) {
            break;
        }
        assert!(Instant::now() < deadline, "n2, n3 did not go on: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let w = w.stop();
    assert!(w.most_down <= 2, "{}", w.most_down); // n1 (off) and one other
                                                  // n1 boots again: its own recovery leaves it consistent, it reports, it rejoins.
    c.nodes[0].sb.power_on();
    let n1 = &c.nodes[0];
    c.wait_all_on("4.4.7", Duration::from_secs(120));
    let caps = n1.sb.sh("getcap /opt/pydio/bin/cells");
    assert!(caps.contains("cap_net_bind_service=ep"), "{caps:?}");
    assert_eq!(n1.sha(), c.release_sha("4.4.7"));
    assert_eq!(
        n1.sb.sh("ls -A /opt/pydio/bin").trim(),
        "cells",
        "a temporary file left"
    );
    let story = n1
        .sb
        .try_sh(
            "journalctl -b -u cells-updater -u cells-updater-fleet -o cat --no-pager \
             | grep -iE 'recover|report|outcome|slot|rollout' | head -n 12",
        )
        .1;
    eprintln!("n1 after its boot:\n{story}");
    assert!(
        story.contains("recovering an interrupted Apply of 4.4.7"),
        "n1's own recovery did not run: {story}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status_json(&c.nodes[1]);
        let me = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == "n1")
            .cloned();
        let slots = st["slots"].as_array().unwrap().len();
        if me.as_ref().is_some_and(|m| m["version"] == "4.4.7") && slots == 0 {
            assert!(st["halt"].is_null(), "{st}");
            // Nothing left to deliver or to recover.
            let state: serde_json::Value =
                serde_json::from_str(&n1.sb.sh("cat /var/lib/cells-updater/state.json")).unwrap();
            if state["fleet_report"].is_null() {
                assert!(
                    !n1.sb
                        .try_sh("test -e /var/lib/cells-updater/journal.json")
                        .0,
                    "the apply journal is left"
                );
                break;
            }
        }
        assert!(Instant::now() < deadline, "n1 did not report: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
