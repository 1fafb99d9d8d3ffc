//! The atomic swap (invariants I1, I2, I4): the new binary is written to a temporary file in
//! the target's own directory, fsynced, given owner root:root, mode 0755 and its file
//! capabilities through the descriptor, hashed again, then renamed over the target; the
//! directory is fsynced after. At every instant the target is the old or the new binary.
//! Previous binaries are kept, with their capabilities, for Rollback.

use crate::error::{Error, Result};
use crate::fcaps::{self, FileCaps};
use crate::stage::sync_dir;
use crate::trust::{self, Sha256Digest};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Suffix of the temporary file next to the target.
pub const TEMP_SUFFIX: &str = ".cells-updater-new";

/// The temporary file used while swapping `target`.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

fn swap_err(e: &std::io::Error, what: &str) -> Error {
    Error::from_io(e, what, |m| {
        Error::SwapFailed(format!("{m}; the installed binary was left as it was"))
    })
}

/// SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<Sha256Digest> {
    Ok(trust::sha256_reader(File::open(path)?)?.0)
}

/// What a binary on disk is: its hash and file capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    /// SHA-256 of the file.
    pub sha256: Sha256Digest,
    /// Its file capabilities.
    pub caps: Option<FileCaps>,
}

/// Reads the hash and capabilities of `path`.
pub fn inspect(path: &Path) -> Result<OnDisk> {
    let f =
        File::open(path).map_err(|e| swap_err(&e, &format!("cannot open {}", path.display())))?;
    let caps = fcaps::get(f.as_fd()).map_err(|e| {
        swap_err(
            &e,
            &format!("cannot read the capabilities of {}", path.display()),
        )
    })?;
    let (sha256, _) = trust::sha256_reader(&f)
        .map_err(|e| swap_err(&e, &format!("cannot read {}", path.display())))?;
    Ok(OnDisk { sha256, caps })
}

/// Puts `source` at `target` atomically with `caps`, owner root:root and mode 0755; the copy
/// must hash to `expected`. `before_rename` runs once the temporary file is complete (a
/// failpoint in tests).
pub fn swap(
    source: &Path,
    expected: &Sha256Digest,
    target: &Path,
    caps: Option<&FileCaps>,
    before_rename: impl FnOnce(),
) -> Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| Error::SwapFailed(format!("{} has no directory", target.display())))?;
    let size = fs::metadata(source)
        .map_err(|e| swap_err(&e, &format!("cannot read {}", source.display())))?
        .len();
    check_space(dir, size)?;
    let tmp = temp_path(target);
    let _ = fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| swap_err(&e, &format!("cannot create {}", tmp.display())))?;
        let mut src = File::open(source)
            .map_err(|e| swap_err(&e, &format!("cannot open {}", source.display())))?;
        copy(&mut src, &mut out)
            .map_err(|e| swap_err(&e, &format!("cannot write {}", tmp.display())))?;
        out.sync_all()
            .map_err(|e| swap_err(&e, "cannot fsync the new binary"))?;
        if nix::unistd::geteuid().is_root() {
            nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(&out),
                Some(nix::unistd::Uid::from_raw(0)),
                Some(nix::unistd::Gid::from_raw(0)),
            )
            .map_err(|e| {
                Error::SwapFailed(format!("cannot make the new binary root-owned: {e}"))
            })?;
        }
        out.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(|e| swap_err(&e, "cannot chmod the new binary"))?;
        // Capabilities go on the inode before it becomes visible (a chown clears them, so last).
        fcaps::set(out.as_fd(), caps)
            .map_err(|e| swap_err(&e, "cannot set the new binary's file capabilities"))?;
        out.sync_all()
            .map_err(|e| swap_err(&e, "cannot fsync the new binary"))?;
        // The copy placed next to the target is hashed again, through a fresh read of that inode.
        let check = File::open(&tmp).map_err(|e| swap_err(&e, "cannot reopen the new binary"))?;
        let (a, b) = (out.metadata(), check.metadata());
        if !matches!((a, b), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev()) {
            return Err(Error::SwapFailed(
                "the temporary file was replaced while it was written".into(),
            ));
        }
        let (got, _) = trust::sha256_reader(check)
            .map_err(|e| swap_err(&e, "cannot re-read the new binary"))?;
        if &got != expected {
            return Err(Error::ChecksumMismatch(format!(
                "the copy next to {} hashes to {}, not {}; nothing was installed",
                target.display(),
                trust::encode_checksum(&got),
                trust::encode_checksum(expected)
            )));
        }
        before_rename();
        fs::rename(&tmp, target)
            .map_err(|e| swap_err(&e, &format!("cannot rename over {}", target.display())))?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        sync_dir(dir);
    }
    result
}

fn copy(src: &mut File, out: &mut File) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn check_space(dir: &Path, size: u64) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        Error::SwapFailed(format!("cannot read free space of {}: {e}", dir.display()))
    })?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < size + (1 << 20) {
        return Err(Error::DiskFull(format!(
            "installing needs {} MiB in {} but only {} MiB are free; free some space",
            (size + (1 << 20)).div_ceil(1 << 20),
            dir.display(),
            free >> 20
        )));
    }
    Ok(())
}

/// A kept binary, for Rollback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Backup {
    /// The version it reports.
    pub version: String,
    /// Where it was installed.
    pub path: String,
    /// Base64 SHA-256.
    pub sha256: String,
    /// Its file capabilities (`getcap` style), for messages.
    pub caps: String,
    /// The package it belongs to (`PydioHome` or `PydioEnterprise`); `""` in old records.
    #[serde(default)]
    pub package: String,
}

/// `<state>/backups`: one directory per version with `cells` (capabilities kept) and
/// `backup.json`.
#[derive(Debug, Clone)]
pub struct Backups {
    dir: PathBuf,
}

impl Backups {
    /// The backups of a state directory.
    pub fn new(state_dir: &Path) -> Self {
        Backups {
            dir: state_dir.join("backups"),
        }
    }

    /// Directory of one version's backup.
    pub fn version_dir(&self, version: &str) -> PathBuf {
        self.dir.join(version)
    }

    /// The kept binary of `version`.
    pub fn binary(&self, version: &str) -> PathBuf {
        self.version_dir(version).join("cells")
    }

    /// The record of `version`'s backup, if complete.
    pub fn get(&self, version: &str) -> Option<Backup> {
        let b: Backup =
            serde_json::from_slice(&fs::read(self.version_dir(version).join("backup.json")).ok()?)
                .ok()?;
        let on_disk = inspect(&self.binary(version)).ok()?;
        (trust::encode_checksum(&on_disk.sha256) == b.sha256).then_some(b)
    }

    /// Keeps a copy of the binary at `path` (reporting `version`, of `package`) with its
    /// capabilities.
    pub fn keep(&self, path: &Path, version: &str, package: &str) -> Result<Backup> {
        let current = inspect(path)?;
        if let Some(b) = self.get(version) {
            if b.sha256 == trust::encode_checksum(&current.sha256)
                && b.path == path.display().to_string()
            {
                return Ok(b);
            }
        }
        let vdir = self.version_dir(version);
        let _ = fs::remove_dir_all(&vdir);
        fs::DirBuilder::new()
            .recursive(true)
            .create(&vdir)
            .map_err(|e| swap_err(&e, &format!("cannot create {}", vdir.display())))?;
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700));
        swap(
            path,
            &current.sha256,
            &self.binary(version),
            current.caps.as_ref(),
            || {},
        )?;
        let record = Backup {
            version: version.to_string(),
            path: path.display().to_string(),
            sha256: trust::encode_checksum(&current.sha256),
            caps: current.caps.map_or_else(String::new, |c| c.to_string()),
            package: package.to_string(),
        };
        let json =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::SwapFailed(e.to_string()))?;
        crate::stage::write_synced(&vdir.join("backup.json"), &json)
            .map_err(|e| swap_err(&e, "cannot record the backup"))?;
        sync_dir(&self.dir);
        Ok(record)
    }

    /// Removes backups beyond the newest `keep` (by version), never those in `protect`.
    pub fn prune(&self, keep: usize, protect: &[&str]) {
        let mut versions: Vec<crate::version::CellsVersion> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| crate::version::CellsVersion::parse(e.file_name().to_str()?).ok())
            .collect();
        versions.sort();
        let n = versions.len();
        for v in versions.into_iter().take(n.saturating_sub(keep)) {
            let s = v.to_string();
            if !protect.contains(&s.as_str()) {
                let _ = fs::remove_dir_all(self.version_dir(&s));
            }
        }
        sync_dir(&self.dir);
    }
}

/// Removes temporary files a crashed swap may have left next to `target`.
pub fn clean_temp(target: &Path) -> bool {
    let tmp = temp_path(target);
    let existed = tmp.exists();
    if existed {
        let _ = fs::remove_file(&tmp);
        if let Some(dir) = target.parent() {
            sync_dir(dir);
        }
    }
    existed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_replaces_atomically_and_checks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cells");
        let source = dir.path().join("new");
        fs::write(&target, b"old").unwrap();
        fs::write(&source, b"new binary").unwrap();
        let good = trust::sha256_reader(&b"new binary"[..]).unwrap().0;
        let bad = trust::sha256_reader(&b"other"[..]).unwrap().0;

        let err = swap(&source, &bad, &target, None, || {}).unwrap_err();
        assert_eq!(err.name(), "ChecksumMismatch");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert!(!temp_path(&target).exists());

        let mut saw_temp = false;
        swap(&source, &good, &target, None, || {
            saw_temp = temp_path(&target).exists()
        })
        .unwrap();
        assert!(
            saw_temp,
            "the new bytes sit in the temporary file before the rename"
        );
        assert_eq!(fs::read(&target).unwrap(), b"new binary");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(!temp_path(&target).exists());
    }

    #[test]
    fn temp_file_sits_beside_the_target() {
        assert_eq!(
            temp_path(Path::new("/opt/pydio/bin/cells")),
            Path::new("/opt/pydio/bin/.cells.cells-updater-new")
        );
    }
}
