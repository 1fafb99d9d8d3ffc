//! File capabilities agree with libcap both ways: what we set, `getcap` reads; what `setcap`
//! sets, we read. Set and read back through the descriptor.

use cells_updater::fcaps::{self, FileCaps, CAP_NET_BIND_SERVICE};
use std::os::fd::AsFd;
use std::process::Command;

fn getcap(p: &std::path::Path) -> String {
    let out = Command::new("getcap")
        .arg(p)
        .output()
        .expect("getcap (libcap2-bin)");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn our_capabilities_are_libcaps_and_back() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "setting file capabilities needs root (.ci/run runs as root)"
    );
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = dir.path().join("bin");
    std::fs::write(&p, b"\x7fELF not really").unwrap();
    let f = std::fs::File::open(&p).unwrap();

    assert_eq!(fcaps::get(f.as_fd()).unwrap(), None);
    fcaps::set(f.as_fd(), Some(&FileCaps::net_bind_service())).unwrap();
    assert_eq!(
        getcap(&p),
        format!("{} cap_net_bind_service=ep", p.display())
    );

    let st = Command::new("setcap")
        .args(["cap_kill,cap_net_bind_service+ep"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    let caps = fcaps::get(f.as_fd()).unwrap().expect("caps set by setcap");
    assert_eq!(caps.permitted, (1 << CAP_NET_BIND_SERVICE) | (1 << 5));
    assert!(caps.effective);
    assert_eq!(caps.to_string(), "cap_kill,cap_net_bind_service=ep");

    let st = Command::new("setcap")
        .args(["cap_net_bind_service=p"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    let caps = fcaps::get(f.as_fd()).unwrap().unwrap();
    assert!(!caps.effective, "=p has no effective bit");

    fcaps::set(f.as_fd(), None).unwrap();
    assert_eq!(getcap(&p), "");
    assert_eq!(fcaps::get(f.as_fd()).unwrap(), None);
}
