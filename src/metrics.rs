//! Prometheus text-format metrics for node_exporter's textfile collector, rewritten
//! atomically whenever the daemon's state changes (`[daemon] metrics_file`). Label values
//! that come from outside (versions offered by the update server) are made inert and
//! escaped (I10).

use crate::dirfd::{open_chain, Owners};
use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What the metrics say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The installed version, `""` when unknown.
    pub installed_version: String,
    /// `PydioHome` or `PydioEnterprise`.
    pub package: String,
    /// `stable` or `dev`.
    pub channel: String,
    /// The lifecycle state (`idle`, `staged`, …).
    pub state: String,
    /// Last check, µs since the epoch (0 = never).
    pub last_check_us: u64,
    /// Last successful update, µs since the epoch (0 = never).
    pub last_update_us: u64,
    /// Updates that succeeded.
    pub updates_succeeded: u64,
    /// Updates that failed.
    pub updates_failed: u64,
    /// Rollbacks (automatic and requested).
    pub rollbacks: u64,
    /// The newest allowed version from the last check, `""` when none.
    pub available: String,
    /// Whether a hold (or pin) is in force.
    pub held: bool,
}

/// A label value: one inert line, escaped as the text format requires.
fn label(v: &str) -> String {
    crate::text::one_line(v, 100)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn seconds(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e6)
}

/// The text-format document.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "cells_updater_info",
        "gauge",
        "The installed Cells release and cells-updater's version (always 1).",
        &[(
            format!(
                "{{installed_version=\"{}\",package=\"{}\",channel=\"{}\",daemon_version=\"{}\"}}",
                label(&s.installed_version),
                label(&s.package),
                label(&s.channel),
                env!("CARGO_PKG_VERSION")
            ),
            "1".into(),
        )],
    );
    metric(
        "cells_updater_state",
        "gauge",
        "The daemon's lifecycle state (1 for the current one).",
        &[(format!("{{state=\"{}\"}}", label(&s.state)), "1".into())],
    );
    metric(
        "cells_updater_last_check_timestamp_seconds",
        "gauge",
        "When the update server was last asked (0 = never).",
        &[(String::new(), seconds(s.last_check_us))],
    );
    metric(
        "cells_updater_last_update_timestamp_seconds",
        "gauge",
        "When an update last succeeded here (0 = never).",
        &[(String::new(), seconds(s.last_update_us))],
    );
    metric(
        "cells_updater_updates_total",
        "counter",
        "Updates (Apply, Update, UpgradeToEnterprise) that ended, by result.",
        &[
            (
                "{result=\"success\"}".into(),
                s.updates_succeeded.to_string(),
            ),
            ("{result=\"failure\"}".into(), s.updates_failed.to_string()),
        ],
    );
    metric(
        "cells_updater_rollbacks_total",
        "counter",
        "Rollbacks: automatic (a release that did not come up) and requested.",
        &[(String::new(), s.rollbacks.to_string())],
    );
    let available = !s.available.is_empty();
    metric(
        "cells_updater_update_available",
        "gauge",
        "1 when the last check found a newer allowed release (its version in the label).",
        &[(
            format!("{{version=\"{}\"}}", label(&s.available)),
            u8::from(available).to_string(),
        )],
    );
    metric(
        "cells_updater_held",
        "gauge",
        "1 while automatic installs are held or pinned.",
        &[(String::new(), u8::from(s.held).to_string())],
    );
    out
}

/// Writes `text` as `path` (absolute, under the root prefix): a temporary file created
/// exclusively in the directory, mode 0644, renamed over the name. `Ok(false)` when the
/// directory does not exist (no node_exporter here).
pub fn write(path: &Path, text: &str) -> Result<bool> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(Error::InvalidArgument(format!(
            "[daemon] metrics_file {} names no file",
            path.display()
        )));
    };
    if !dir.is_dir() {
        return Ok(false);
    }
    let chain = open_chain(dir, Owners::Any, None, Error::Internal)?;
    let fail = |e: std::io::Error| {
        Error::from_io(
            &e,
            &format!("cannot write {}", path.display()),
            Error::Internal,
        )
    };
    let mut t = chain.dir.temp_for(name, 0o644).map_err(fail)?;
    // The daemon's umask is 0077; node_exporter runs as another user.
    t.file
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(fail)?;
    t.file.write_all(text.as_bytes()).map_err(fail)?;
    t.file.sync_all().map_err(fail)?;
    t.commit(name).map_err(fail)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_in_labels_is_inert_and_escaped() {
        let s = Snapshot {
            installed_version: "4.4.2".into(),
            available: "4.4.3\"} 1\ncells_updater_held 0\n\\".into(),
            state: "idle".into(),
            ..Snapshot::default()
        };
        let text = render(&s);
        // One line per sample: the injected newline and quote did not make a new sample.
        assert_eq!(text.matches("\ncells_updater_held ").count(), 1, "{text}");
        assert!(text.contains("cells_updater_update_available{version=\"4.4.3\\\"} 1 cells_updater_held 0 \\\\\"} 1"), "{text}");
        assert!(text.contains("cells_updater_info{installed_version=\"4.4.2\""));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn written_atomically_readable_by_others_and_never_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("cells-updater.prom");
        assert!(write(&file, "a 1\n").unwrap());
        assert!(write(&file, "a 2\n").unwrap());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
        // No directory: nothing written, no error.
        assert!(!write(&t.path().join("absent/x.prom"), "").unwrap());
        // A link in the directory's path is refused, and its target untouched.
        let target = t.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, t.path().join("link")).unwrap();
        let e = write(&t.path().join("link/m.prom"), "x\n").unwrap_err();
        assert_eq!(e.dbus_name(), "com.pydio.CellsUpdater1.Error.UnsafePath");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }
}
