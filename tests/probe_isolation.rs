//! The version probe runs the staged binary as the unprivileged probe user, with an empty
//! environment, no network (a fresh network namespace holds only `lo`) and only descriptors
//! 0-2, through the probe helper as the daemon runs it without systemd.

mod support;

use cells_updater::probe::check_version;
use cells_updater::version::CellsVersion;
use std::io::Write;
use support::*;

#[tokio::test]
async fn probe_is_unprivileged_with_empty_env_and_no_network() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test checks the drop from root (.ci/run runs as root)"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("cells");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&fake_cells("0.0.0", "introspect")).unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The directory is root-only, as the staging area is: the probe reaches the binary only
    // through the descriptor.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let file = std::fs::File::open(&path).unwrap();

    // A descriptor this process holds open (as the daemon holds received ones) must not
    // reach the probed binary.
    let _held = std::fs::File::open("/dev/null").unwrap();
    let expected = format!("{}.0.1-fds.3", nobody.uid);
    check_version(
        &fork_runner(),
        &file,
        &CellsVersion::parse(&expected).unwrap(),
    )
    .await
    .expect("probe reports uid nobody, no environment, one interface (lo), descriptors 0-2");

    // Only meaningful if the host has more than `lo`: then the namespace is what hides them.
    let host_ifs = nix::net::if_::if_nameindex().unwrap().iter().count();
    assert!(
        host_ifs > 1,
        "host has only lo: the network check above proves nothing here"
    );
}
