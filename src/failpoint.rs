//! Named failpoints for crash tests (cargo feature `failpoints`): when the environment
//! variable `CELLS_UPDATER_FAILPOINT` names the point reached, the process kills itself with
//! SIGKILL, exactly as `kill -9` would. Without the feature, [`hit`] does nothing.

/// Every failpoint, in the order an apply reaches them.
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

/// Dies here when the failpoint `name` is armed.
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("CELLS_UPDATER_FAILPOINT").as_deref() == Ok(name) {
        crate::log::log(
            crate::log::Level::Warning,
            &format!("failpoint {name}: SIGKILL"),
            &[("FAILPOINT", name)],
        );
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
