//! A genuine, newer release stages: the request speaks the protocol, the staged directory is
//! root-only, the manifest records what was verified, and staging again is a no-op.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use support::*;

#[tokio::test]
async fn genuine_release_is_staged_with_a_manifest() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    let bytes = fake_cells("4.4.5", "ok");
    let (sum, sig) = sign(&bytes, &k.rsa);
    env.publish_with("4.4.5", bytes.clone(), &sum, &sig, Delivery::Normal, true);

    let m = env.stage("4.4.5").await.expect("stage 4.4.5");

    assert_eq!(m.version.to_string(), "4.4.5");
    assert_eq!(m.package.as_str(), "PydioHome");
    assert_eq!(cells_updater::trust::encode_checksum(&m.sha256), sum);
    assert_eq!(m.size, bytes.len() as u64);
    assert_eq!(m.key_id, env.stager.keys.keys()[0].id);
    assert!(m.source.starts_with("http://127.0.0.1:"), "{}", m.source);
    let dir = env.staged_dir();
    let staged = dir.join("4.4.5/cells");
    assert_eq!(std::fs::read(&staged).unwrap(), bytes);
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    let on_disk: cells_updater::stage::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("4.4.5/manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk, m);
    assert_eq!(
        std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // Nothing is left in the work area.
    assert_eq!(std::fs::read_dir(dir.join(".work")).unwrap().count(), 0);
    assert_eq!(env.stager.area.staged(), vec![m.clone()]);

    // The check request carried exactly the protocol's keys.
    let reqs = env.server.requests();
    let check = reqs
        .iter()
        .find(|r| r.method == "POST")
        .expect("a check request");
    assert_eq!(check.path, "/a/update-server/");
    assert_eq!(
        check.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&check.body).unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["Channel", "CurrentVersion", "GOARCH", "GOOS", "PackageName"]
    );
    assert_eq!(body["GOOS"], "linux");
    assert_eq!(body["CurrentVersion"], "4.4.2");

    // Staging the same version again downloads nothing.
    let gets_before = env
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    let again = env.stage("4.4.5").await.expect("restage is a no-op");
    assert_eq!(again, m);
    let gets_after = env
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(
        gets_before, gets_after,
        "a staged version must not be downloaded again"
    );
}

#[tokio::test]
async fn binary_size_is_read_as_a_number_too() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    let bytes = fake_cells("4.5.0", "ok");
    let (sum, sig) = sign(&bytes, &k.rsa);
    env.publish_with("4.5.0", bytes.clone(), &sum, &sig, Delivery::Normal, false);
    let m = env.stage("4.5.0").await.expect("stage 4.5.0");
    assert_eq!(m.size, bytes.len() as u64);
}

#[tokio::test]
async fn a_version_below_the_committed_floor_is_refused() {
    let k = keys();
    let mut env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    // After a rollback the installed version is 4.4.2, but 4.4.6 once ran here: replaying the
    // genuinely signed 4.4.5 must not work.
    env.bounds.committed = Some(cells_updater::version::CellsVersion::parse("4.4.6").unwrap());
    env.publish("4.4.5", fake_cells("4.4.5", "ok"), &k.rsa);
    let err = env.stage("4.4.5").await.unwrap_err();
    assert_eq!(err.name(), "Downgrade");
    assert!(
        err.message().contains("highest version ever committed"),
        "{err}"
    );
    // The floor itself is allowed (I3, round 3): the release a Rollback left comes back.
    env.publish("4.4.6", fake_cells("4.4.6", "ok"), &k.rsa);
    let m = env.stage("4.4.6").await.expect("4.4.6 equals the floor");
    assert_eq!(m.version.to_string(), "4.4.6");
}
