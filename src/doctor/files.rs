//! The Cells host's own files: the unit, the binary and its directory chain, its file
//! capability, the working directory and the license, and the free space an update needs.

use super::{finding, Finding, Host, Level, CAP_NET_BIND_SERVICE};
use crate::config::CapabilityPolicy;
use crate::error::Error;
use std::os::fd::AsFd;

impl Host {
    pub(super) fn check_unit(&self) -> Finding {
        match &self.facts {
            Err(e) => finding(
                "unit",
                Level::Fail,
                e.message(),
                "install the Cells service (Pydio's guide: /etc/systemd/system/cells.service), or \
                 set [cells] unit",
            ),
            Ok(f) => {
                let exec = f
                    .exec_path
                    .as_ref()
                    .map_or("no ExecStart".to_string(), |p| p.display().to_string());
                let user = if f.user.is_empty() { "root" } else { &f.user };
                let msg = format!(
                    "{}: {} ({}), runs {exec} as {user}",
                    f.name, f.active_state, f.sub_state
                );
                if f.user.is_empty() && self.cfg.user.is_none() {
                    finding(
                        "unit",
                        Level::Warn,
                        format!("{msg}: Cells runs as root"),
                        "run Cells as its own user (User=pydio), as Pydio's guide does",
                    )
                } else if f.active_state != "active" {
                    finding(
                        "unit",
                        Level::Warn,
                        msg,
                        "systemctl start cells; journalctl -u cells",
                    )
                } else {
                    finding("unit", Level::Ok, msg, "")
                }
            }
        }
    }

    /// The binary's directory chain and the file; returns the open binary and its size.
    pub(super) fn check_binary(
        &self,
        binary: &std::path::Path,
        cells_uid: Option<u32>,
        out: &mut Vec<Finding>,
    ) -> Option<(std::fs::File, u64)> {
        let dir = match crate::install::open_binary_dir(binary, cells_uid, false) {
            Ok(d) => d,
            Err(e) => {
                let fix = if matches!(e, Error::UnsafePath(_)) {
                    "apply the chown/chmod the message gives"
                } else {
                    "check [cells] binary and the unit's ExecStart"
                };
                out.push(finding("binary-dir", Level::Fail, e.message(), fix));
                return None;
            }
        };
        out.push(if dir.adoptable.is_empty() {
            finding(
                "binary-dir",
                Level::Ok,
                format!(
                    "{}: every directory is root's and not writable by others",
                    dir.dir.path().display()
                ),
                "",
            )
        } else {
            finding(
                "binary-dir",
                Level::Ok,
                format!(
                    "{} belong to the Cells user: the first update adopts them (root-owned, mode \
                     0755), so Cells can no longer replace its own binary",
                    dir.adoptable
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "",
            )
        });
        match crate::install::open_and_inspect(&dir.dir, &dir.name, self.cfg.max_binary_size) {
            Ok((file, on_disk)) => {
                out.push(finding(
                    "binary",
                    Level::Ok,
                    format!(
                        "{}: {:.1} MiB, sha256 {}",
                        binary.display(),
                        on_disk.size as f64 / 1048576.0,
                        &crate::trust::hex(&on_disk.sha256)[..16]
                    ),
                    "",
                ));
                Some((file, on_disk.size))
            }
            Err(e) => {
                out.push(finding(
                    "binary",
                    Level::Fail,
                    e.message(),
                    "reinstall Cells (Pydio's guide), or fix [cells] binary",
                ));
                None
            }
        }
    }

    pub(super) fn check_capability(&self, file: &std::fs::File) -> Finding {
        let caps = crate::fcaps::get(file.as_fd());
        let ambient = self
            .facts()
            .is_some_and(|f| f.ambient_capabilities & CAP_NET_BIND_SERVICE != 0);
        match caps {
            Err(e) => finding(
                "capability",
                Level::Fail,
                format!("cannot read the binary's file capabilities: {e}"),
                "",
            ),
            // What the daemon carries to the next binary (fcaps::FileCaps::preservable).
            Ok(Some(c))
                if c.preservable()
                    .is_some_and(|p| p.permitted & CAP_NET_BIND_SERVICE != 0) =>
            {
                finding(
                "capability",
                Level::Ok,
                format!(
                    "the binary has {c}{}",
                    match self.cfg.capabilities {
                        CapabilityPolicy::Never => "; [policy] capabilities = never drops it at the next update",
                        _ => "; updates keep it",
                    }
                ),
                "",
                )
            }
            Ok(Some(c)) if c.permitted & CAP_NET_BIND_SERVICE != 0 && !ambient => finding(
                "capability",
                Level::Fail,
                format!(
                    "the binary has {c}, which holds in a user namespace only (a v3 root id): \
                     Cells cannot bind ports below 1024, and updates do not carry it over"
                ),
                "setcap 'cap_net_bind_service=+ep' <binary> as the host's root, or \
                 AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit",
            ),
            _ if ambient => finding(
                "capability",
                Level::Ok,
                "the unit grants CAP_NET_BIND_SERVICE with AmbientCapabilities=; the binary needs no file capability".into(),
                "",
            ),
            _ if self.cfg.capabilities == CapabilityPolicy::Never => finding(
                "capability",
                Level::Ok,
                "no file capability, as [policy] capabilities = never asks".into(),
                "",
            ),
            _ => finding(
                "capability",
                Level::Fail,
                "the binary has no cap_net_bind_service and the unit grants none: Cells cannot \
                 bind ports below 1024 (443)"
                    .into(),
                "setcap 'cap_net_bind_service=+ep' <binary> once (updates keep it), or \
                 AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit, or [policy] capabilities \
                 = always",
            ),
        }
    }

    pub(super) async fn check_working_dir(&self) -> Vec<Finding> {
        let at = match crate::host::working_dir(&self.cfg, self.facts()) {
            Ok(at) => at,
            Err(e) => {
                return vec![finding(
                    "working-dir",
                    Level::Fail,
                    e.message(),
                    "set User= in the unit, or [cells] user",
                )]
            }
        };
        let mut out = Vec::new();
        // A report only: lstat, nothing is opened or followed.
        match std::fs::symlink_metadata(&at.dir) {
            Err(_) => out.push(finding(
                "working-dir",
                Level::Warn,
                format!("{} does not exist yet", at.dir.display()),
                "start Cells once (it creates it), or set CELLS_WORKING_DIR in the unit",
            )),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(m.uid()))
                    .ok()
                    .flatten()
                    .map_or(m.uid().to_string(), |u| u.name);
                if m.file_type().is_symlink() || !m.is_dir() {
                    out.push(finding(
                        "working-dir",
                        Level::Fail,
                        format!("{} is not a directory (a link or a file)", at.dir.display()),
                        "point CELLS_WORKING_DIR at the real directory",
                    ));
                } else if owner != at.user {
                    out.push(finding(
                        "working-dir",
                        Level::Warn,
                        format!(
                            "{} belongs to {owner}, not to {}: the license is written as {}",
                            at.dir.display(),
                            at.user,
                            at.user
                        ),
                        "chown the working directory to the Cells user",
                    ));
                } else {
                    out.push(finding(
                        "working-dir",
                        Level::Ok,
                        format!("{} (the Cells user's, {})", at.dir.display(), at.user),
                        "",
                    ));
                }
            }
        }
        let enterprise = self.package().await == crate::package::Package::Enterprise;
        out.push(match crate::license::read(&self.runner, &at).await {
            Ok(Some(k)) => finding(
                "license",
                Level::Ok,
                format!(
                    "{} bytes in {}/{}",
                    k.len(),
                    at.dir.display(),
                    crate::license::LICENSE_FILE
                ),
                "",
            ),
            Ok(None) if enterprise => finding(
                "license",
                Level::Fail,
                "Cells Enterprise is configured, but there is no license file".into(),
                "cells-updater license install --file KEYFILE",
            ),
            Ok(None) => finding(
                "license",
                Level::Ok,
                "none (Cells Home needs none)".into(),
                "",
            ),
            Err(e) => finding(
                "license",
                Level::Fail,
                e.message(),
                "cells-updater license install --file KEYFILE replaces it",
            ),
        });
        out
    }

    pub(super) fn check_disk(&self, binary_size: u64) -> Finding {
        // The daemon's own rule, for a release the size of the installed binary.
        let need = crate::stage::space_needed(binary_size);
        // The state directory, or its nearest existing parent before the first run.
        let mut dir = self.cfg.state_dir();
        while !dir.exists() {
            match dir.parent() {
                Some(p) => dir = p.to_path_buf(),
                None => break,
            }
        }
        match nix::sys::statvfs::statvfs(&dir) {
            Err(e) => finding(
                "disk",
                Level::Warn,
                format!("cannot tell the free space of {}: {e}", dir.display()),
                "",
            ),
            Ok(st) => {
                let free = crate::stage::free_bytes(&st);
                let msg = format!(
                    "{:.0} MiB free in {} (an update needs {:.0} MiB)",
                    free as f64 / 1048576.0,
                    dir.display(),
                    need as f64 / 1048576.0
                );
                if free < need {
                    finding(
                        "disk",
                        Level::Fail,
                        msg,
                        "free space in the state directory",
                    )
                } else {
                    finding("disk", Level::Ok, msg, "")
                }
            }
        }
    }
}
