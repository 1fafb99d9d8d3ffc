//! Named failpoints for crash tests (cargo feature `failpoints`). When the environment
//! variable `CELLS_UPDATER_FAILPOINT` names the point reached, the process dies there with
//! SIGKILL, exactly as `kill -9` would; with `CELLS_UPDATER_FAILPOINT_ACTION=stop` it freezes
//! itself with SIGSTOP instead (so a test can cut the power at that very step). A failpoint
//! fires once per state directory (a marker file is left there), so the daemon that systemd
//! restarts, or that boots again, recovers instead of dying at the same point. Without the
//! feature, [`hit`] does nothing.

/// Every failpoint of an apply, in the order an apply reaches them.
pub const APPLY_POINTS: &[&str] = &[
    "apply-before-backup",
    "apply-before-swap",
    "apply-before-rename",
    "apply-after-rename",
    "apply-after-state",
    "apply-after-dropin",
    "apply-after-restart",
    "apply-after-health",
];

/// Failpoints of the automatic undo after a failed health check.
pub const UNDO_POINTS: &[&str] = &["undo-after-mark", "undo-after-restore"];

#[cfg(feature = "failpoints")]
static MARK_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Where fired failpoints are remembered (the daemon's state directory).
pub fn set_mark_dir(dir: &std::path::Path) {
    #[cfg(feature = "failpoints")]
    let _ = MARK_DIR.set(dir.to_path_buf());
    #[cfg(not(feature = "failpoints"))]
    let _ = dir;
}

/// Dies (or freezes) here when the failpoint `name` is armed and has not fired yet.
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("CELLS_UPDATER_FAILPOINT").as_deref() == Ok(name) {
        if let Some(dir) = MARK_DIR.get() {
            let mark = dir.join(format!("failpoint-{name}.fired"));
            if mark.exists() || std::fs::write(&mark, b"").is_err() {
                return;
            }
        }
        let stop = std::env::var("CELLS_UPDATER_FAILPOINT_ACTION").as_deref() == Ok("stop");
        crate::log::log(
            crate::log::Level::Warning,
            &format!(
                "failpoint {name}: {}",
                if stop { "SIGSTOP" } else { "SIGKILL" }
            ),
            &[("FAILPOINT", name)],
        );
        let signal = if stop {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGKILL
        };
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
