//! Fleet, part 1, its first piece: the etcd coordination layer (src/fleet) against a real
//! 3-member etcd on loopback (Debian's etcd-server, started by the test). Nodes are
//! `Cluster` connections in this process, each with its own lease; a node "dies" by losing
//! its lease's keep-alives (what a kill -9 does to the etcd side). Rows: slots are exclusive
//! up to max_parallel; a node that asks again gets its own slot; a dead holder's slot frees
//! within TTL + 5 s; a confirm fails once the slot is gone; a failure marks the release bad
//! and halts the cluster in one transaction, and nothing is granted until resume; values
//! another writer left malformed are refused with their key; without quorum every request
//! fails fast with "no quorum", and works again when quorum returns; TLS with client
//! certificates, and a clear error without one.
#![cfg(feature = "fleet")]

mod support;

use cells_updater::fleet::etcd::{Cluster, Slot};
use cells_updater::fleet::{FleetConfig, TargetValue, FORMAT};
use std::time::{Duration, Instant};
use support::etcd::EtcdCluster;

fn config(etcd: &EtcdCluster, ttl: u64) -> FleetConfig {
    FleetConfig {
        endpoints: etcd.endpoints(),
        cluster: "test".into(),
        lease_ttl: Duration::from_secs(ttl),
        timeout: Duration::from_secs(3),
        ..FleetConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn slots_halt_bad_list_and_quorum_on_a_real_etcd() {
    let mut etcd = EtcdCluster::start(false);
    let cfg = config(&etcd, 3);
    rt().block_on(async {
        let mut a = Cluster::connect(&cfg, "n1").await.unwrap();
        let mut b = Cluster::connect(&cfg, "n2").await.unwrap();
        let mut c = Cluster::connect(&cfg, "n3").await.unwrap();
        let (la, lb, lc) = (
            a.lease().await.unwrap(),
            b.lease().await.unwrap(),
            c.lease().await.unwrap(),
        );

        // max_parallel 1: one holder; asking again is granted to the holder only.
        let ga = a.take_slot(&la, "4.4.5", 1).await.unwrap();
        assert_eq!(ga.number(), Some(0));
        assert_eq!(
            a.take_slot(&la, "4.4.5", 1).await.unwrap(),
            ga,
            "the same grant"
        );
        assert_eq!(
            b.take_slot(&lb, "4.4.5", 1).await.unwrap(),
            Slot::Busy(vec!["n1".into()])
        );
        let Slot::Held(0, ga) = ga else {
            panic!("no slot")
        };
        a.confirm_slot(&la, 0, ga).await.unwrap();
        // max_parallel 2: a second holder, not a third.
        assert_eq!(
            b.take_slot(&lb, "4.4.5", 2).await.unwrap().number(),
            Some(1)
        );
        assert!(
            matches!(c.take_slot(&lc, "4.4.5", 2).await.unwrap(), Slot::Busy(h) if h.len() == 2)
        );
        // An etcd writer makes up slot 7 in n3's name while slots 0 and 1 are taken: it is
        // not a grant (only slots below max_parallel count).
        let forged = r#"{"format":1,"node":"n3","version":"4.4.5","since":1}"#;
        let out = etcd.etcdctl(&["put", &c.keys().slot(7), forged]);
        assert!(out.status.success());
        assert!(matches!(
            c.take_slot(&lc, "4.4.5", 2).await.unwrap(),
            Slot::Busy(_)
        ));
        etcd.etcdctl(&["del", &c.keys().slot(7)]);
        a.release_slot(0).await.unwrap();
        b.release_slot(1).await.unwrap();

        // A dead holder (no more keep-alives): its slot frees within TTL + 5 s, and its
        // confirm fails, so it would not swap.
        assert_eq!(
            a.take_slot(&la, "4.4.5", 1).await.unwrap().number(),
            Some(0)
        );
        let dead = la.id;
        drop(la);
        let t0 = Instant::now();
        let freed = loop {
            if let Slot::Held(n, g) = b.take_slot(&lb, "4.4.5", 1).await.unwrap() {
                break (n, t0.elapsed(), g);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3 + 5),
                "the dead holder's slot stayed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!(
            "dead holder (lease {dead:x}, TTL 3 s): slot free after {:?}",
            freed.1
        );
        let la2 = a.lease().await.unwrap();
        let e = a.confirm_slot(&la2, 0, 0).await.unwrap_err();
        assert_eq!(e.name(), "FleetUnavailable");
        assert!(e.message().contains("n2 holds it now"), "{e}");

        // A lease that ran out (revoked here): taking a slot with it fails saying so, which
        // is what the agent looks for to take a new lease.
        let gone = c.lease().await.unwrap();
        let out = etcd.etcdctl(&["lease", "revoke", &format!("{:x}", gone.id)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let e = c.take_slot(&gone, "4.4.5", 2).await.unwrap_err();
        assert!(e.message().contains("lease not found"), "{e}");

        // A failure: bad + halt + slot back in one transaction; nothing is granted while
        // halted, and the release stays refused after the resume until forgotten.
        b.report_bad(
            "4.4.5",
            "UnitFailed: exited at start",
            Some((freed.0, freed.2)),
        )
        .await
        .unwrap();
        let st = c.status().await.unwrap();
        assert!(st.slots.is_empty(), "{st:?}");
        assert_eq!(st.bad.len(), 1);
        assert!(st
            .halt
            .as_ref()
            .unwrap()
            .reason
            .contains("4.4.5 failed on n2"));
        let e = c.take_slot(&lc, "4.4.6", 1).await.unwrap_err();
        assert_eq!(e.name(), "FleetHalted", "{e}");
        assert!(e.message().contains("fleet resume"), "{e}");
        c.resume().await.unwrap();
        let e = c.take_slot(&lc, "4.4.5", 1).await.unwrap_err();
        assert_eq!(e.name(), "NoSuchVersion");
        assert!(
            e.message().contains("marked bad for the cluster test"),
            "{e}"
        );
        let target = TargetValue {
            format: FORMAT,
            version: "4.4.5".into(),
            package: cells_updater::package::Package::Home,
            max_parallel: 1,
            canary_soak: 0,
            now: false,
            by: "uid 0 on n3".into(),
            at: 1,
        };
        assert_eq!(
            c.set_target(&target).await.unwrap_err().name(),
            "NoSuchVersion"
        );
        assert!(c.forget_bad("4.4.5").await.unwrap());
        assert!(!c.forget_bad("4.4.5").await.unwrap());
        c.set_target(&target).await.unwrap();
        assert_eq!(
            c.take_slot(&lc, "4.4.5", 1).await.unwrap().number(),
            Some(0)
        );
        c.release_slot(0).await.unwrap();

        // Garbage another writer left (etcdctl): clear errors naming the key, no slot.
        let keys = c.keys().clone();
        for (key, value) in [
            (keys.halt(), "not json"),
            (keys.bad("4.4.7"), "{\"format\":9}"),
            (keys.target(), "\u{1b}[2J"),
            (keys.node("n9"), "{}"),
        ] {
            let out = etcd.etcdctl(&["put", &key, value]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let e = c.take_slot(&lc, "4.4.6", 1).await.unwrap_err();
        assert_eq!(e.name(), "FleetUnavailable");
        assert!(e.message().contains(&keys.halt()), "{e}");
        let st = c.status().await.unwrap();
        assert_eq!(st.unreadable.len(), 4, "{:?}", st.unreadable);
        assert!(st.halt.is_some(), "an unreadable halt still halts");
        assert!(st.target.is_none() && st.nodes.is_empty());
        assert!(st.unreadable.iter().all(|l| !l.contains('\u{1b}')));
        etcd.etcdctl(&["del", "--prefix", keys.root()]);

        // Quorum lost: every request fails fast and says so; back by itself after.
        assert_eq!(st.members.len(), 3);
        assert!(!st.leader.is_empty());
        etcd.kill(1);
        etcd.kill(2);
        let t0 = Instant::now();
        let e = loop {
            match c.take_slot(&lc, "4.4.8", 1).await {
                Err(e) => break e,
                Ok(s) => {
                    // The leader may take a moment to notice it lost its peers.
                    assert!(
                        t0.elapsed() < Duration::from_secs(5),
                        "granted {s:?} without quorum"
                    );
                    c.release_slot(0).await.ok();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert_eq!(e.name(), "FleetUnavailable");
        // Once the survivor has noticed it lost its peers (an election timeout, 0.5 s here),
        // the refusal names the cause.
        let since = Instant::now();
        let (e, took) = loop {
            let t1 = Instant::now();
            let e = c.take_slot(&lc, "4.4.8", 1).await.unwrap_err();
            let took = t1.elapsed();
            if e.message().contains("no quorum") || since.elapsed() > Duration::from_secs(10) {
                break (e, took);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(e.message().contains("no quorum"), "{e}");
        // Milliseconds when the client's channel meets the live member; at most one request
        // timeout (3 s here) and the per-endpoint probe when it meets a dead one first.
        assert!(
            took < Duration::from_secs(3 + 2),
            "no quorum took {took:?} to show"
        );
        println!("no quorum: refused in {took:?}");
        etcd.restart(1);
        etcd.restart(2);
        etcd.wait_healthy(Duration::from_secs(30));
        let t0 = Instant::now();
        loop {
            match c.take_slot(&lc, "4.4.8", 1).await {
                Ok(Slot::Held(..)) => break,
                other => {
                    assert!(t0.elapsed() < Duration::from_secs(20), "{other:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
}

#[test]
fn tls_with_client_certificates_and_a_clear_error_without_one() {
    let etcd = EtcdCluster::start(true);
    let certs = etcd.certs.as_ref().unwrap();
    let mut cfg = config(&etcd, 5);
    cfg.ca = Some(certs.ca.clone());
    cfg.cert = Some(certs.client_crt.clone());
    cfg.key = Some(certs.client_key.clone());
    rt().block_on(async {
        let mut a = Cluster::connect(&cfg, "n1").await.unwrap();
        let la = a.lease().await.unwrap();
        let Slot::Held(0, g) = a.take_slot(&la, "4.4.5", 1).await.unwrap() else {
            panic!("no slot")
        };
        a.confirm_slot(&la, 0, g).await.unwrap();
        let st = a.status().await.unwrap();
        assert_eq!(st.slots.len(), 1);
        // Without a client certificate: refused at the first request, clearly.
        let mut nocert = cfg.clone();
        nocert.cert = None;
        nocert.key = None;
        let e = match Cluster::connect(&nocert, "n2").await {
            Err(e) => e,
            Ok(_) => panic!("connected without a client certificate"),
        };
        assert_eq!(e.name(), "FleetUnavailable");
        assert!(e.message().contains("etcd did not answer"), "{e}");
        // Half a pair is a configuration error.
        let mut half = cfg.clone();
        half.key = None;
        let e = match Cluster::connect(&half, "n3").await {
            Err(e) => e,
            Ok(_) => panic!("connected with half a key pair"),
        };
        assert!(e.message().contains("cert and key go together"), "{e}");
    });
}

#[test]
fn one_member_down_every_request_still_answers() {
    let mut etcd = EtcdCluster::start(false);
    let cfg = config(&etcd, 3);
    rt().block_on(async {
        // Connected while all three run, then the member it talks to (the first) dies:
        // requests move to another member.
        let mut a = Cluster::connect(&cfg, "n1").await.unwrap();
        let la = a.lease().await.unwrap();
        etcd.kill(0);
        // If it led, the other two elect a leader first (a request in between is rightly
        // told "no leader"); what is tested is that the client leaves the dead member.
        etcd.wait_healthy(Duration::from_secs(10));
        for i in 0..10 {
            let st = a
                .status()
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(st.members.len(), 3);
        }
        let Slot::Held(0, g) = a.take_slot(&la, "4.4.5", 1).await.unwrap() else {
            panic!("no slot")
        };
        a.confirm_slot(&la, 0, g).await.unwrap();
        // New connections while it is down: each finds a live member.
        for i in 0..10 {
            let mut b = Cluster::connect(&cfg, "n2")
                .await
                .unwrap_or_else(|e| panic!("connect {i}: {e}"));
            b.status()
                .await
                .unwrap_or_else(|e| panic!("status {i}: {e}"));
        }
        // The lease outlives the TTL: its keep-alives moved too.
        tokio::time::sleep(Duration::from_secs(5)).await;
        a.confirm_slot(&la, 0, g).await.unwrap();
    });
}

#[test]
fn a_late_release_frees_only_its_own_grant_and_a_halt_stops_the_confirm() {
    let etcd = EtcdCluster::start(false);
    let cfg = config(&etcd, 5);
    rt().block_on(async {
        let mut a = Cluster::connect(&cfg, "n1").await.unwrap();
        let la = a.lease().await.unwrap();
        let Slot::Held(0, first) = a.take_slot(&la, "4.4.5", 1).await.unwrap() else {
            panic!("no slot")
        };
        assert!(a.release_grant(0, first).await.unwrap());
        // The next job on the same node gets the same slot under a new grant; the first
        // job's report arriving late does not free it.
        let Slot::Held(0, second) = a.take_slot(&la, "4.4.5", 1).await.unwrap() else {
            panic!("no slot")
        };
        assert_ne!(first, second);
        assert!(!a.release_grant(0, first).await.unwrap());
        assert_eq!(a.status().await.unwrap().slots.len(), 1, "the late release freed it");
        // A confirm names its grant: the first one's is refused.
        assert!(a.confirm_slot(&la, 0, first).await.is_err());
        // A halt written between the grant and the swap: the confirm says so.
        a.confirm_slot(&la, 0, second).await.unwrap();
        let out = etcd.etcdctl(&[
            "put",
            "/cells-updater/test/halt",
            r#"{"format":1,"reason":"by hand","node":"admin","at":0}"#,
        ]);
        assert!(out.status.success());
        let e = a.confirm_slot(&la, 0, second).await.unwrap_err();
        assert_eq!(e.name(), "FleetHalted", "{e}");
        // A verdict sent twice (a report resent after an admin's resume) halts once.
        a.resume().await.unwrap();
        a.report_bad("4.4.9", "UnitFailed: x", Some((0, second))).await.unwrap();
        a.resume().await.unwrap();
        assert!(a.forget_bad("4.4.9").await.unwrap());
        a.report_bad("4.4.9", "UnitFailed: x", Some((0, second))).await.unwrap();
        let st = a.status().await.unwrap();
        assert!(st.halt.is_none() && st.bad.is_empty(), "the resent verdict halted again");
        let Slot::Held(0, second) = a.take_slot(&la, "4.4.5", 1).await.unwrap() else {
            panic!("no slot")
        };
        a.resume().await.unwrap();
        // Timestamps at the ends of i64 (an etcd writer's) are shown, never overflow.
        for (key, v) in [
            ("halt", r#"{"format":1,"reason":"r","node":"n","at":-9223372036854775808}"#),
            (
                "canary",
                r#"{"format":1,"version":"4.4.5","node":"n9","since":9223372036854775807}"#,
            ),
            (
                "target",
                r#"{"format":1,"version":"4.4.5","package":"PydioHome","max_parallel":1,"canary_soak":18446744073709551615,"now":false,"by":"x","at":9223372036854775807}"#,
            ),
        ] {
            let out = etcd.etcdctl(&["put", &format!("/cells-updater/test/{key}"), v]);
            assert!(out.status.success());
        }
        let st = a.status().await.unwrap();
        assert!(st.halt.is_some() && st.canary.is_some() && st.target.is_some());
        a.resume().await.unwrap();
        assert!(a.release_grant(0, second).await.unwrap());
        let mut b = Cluster::connect(&cfg, "n2").await.unwrap();
        let lb = b.lease().await.unwrap();
        // The canary soaks until the end of time: refused, not a panic.
        assert!(matches!(
            b.take_slot(&lb, "4.4.5", 1).await.unwrap(),
            Slot::Busy(h) if h[0].contains("canary n9")
        ));
    });
}
