//! The atomic swap (invariants I1, I2, I4, I9) and the kept binaries for Rollback.
//!
//! The new binary is copied into a temporary file created exclusively in the target's own
//! directory (opened and checked through [`crate::dirfd`]), fsynced, given owner root:root,
//! mode 0755 and its file capabilities through the descriptor, hashed again through the same
//! descriptor, then renamed over the target; the directory is fsynced after. At every instant
//! the target is the old or the new binary. Everything here blocks: the daemon calls it off
//! its async runtime.

use crate::dirfd::{self, Dir, Owners};
use crate::error::{Error, Result};
use crate::fcaps::{self, FileCaps};
use crate::package::Package;
use crate::trust::{self, Sha256Digest};
use crate::version::CellsVersion;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Read size when hashing and copying.
const CHUNK: usize = 256 * 1024;

fn swap_err(e: &std::io::Error, what: &str) -> Error {
    Error::from_io(e, what, |m| {
        Error::SwapFailed(format!("{m}; the installed binary was left as it was"))
    })
}

/// The directory and file name of the binary a unit runs.
#[derive(Debug)]
pub struct BinaryDir {
    /// The checked directory.
    pub dir: Dir,
    /// The binary's file name in it.
    pub name: String,
    /// Directories made root's by this opening (adoption), top-down.
    pub adopted: Vec<PathBuf>,
    /// Directories that a mutating call would adopt (when opened without adopting).
    pub adoptable: Vec<PathBuf>,
}

/// Opens the directory of `binary` as a checked chain (I9). Directories owned by `cells_uid`
/// are adopted (made root's) when `adopt`; any other unsafe link is `UnsafePath`.
pub fn open_binary_dir(binary: &Path, cells_uid: Option<u32>, adopt: bool) -> Result<BinaryDir> {
    let (parent, name) = match (binary.parent(), binary.file_name().and_then(|n| n.to_str())) {
        (Some(p), Some(n)) => (p, n.to_string()),
        _ => {
            return Err(Error::SwapFailed(format!(
                "{} is not a path to a file",
                binary.display()
            )))
        }
    };
    let owners = cells_uid.map_or(Owners::Root, Owners::Adoptable);
    let mut chain = dirfd::open_chain(parent, owners, None, Error::SwapFailed)?;
    let (adopted, adoptable) = if adopt {
        (chain.adopt(Error::SwapFailed)?, Vec::new())
    } else {
        (Vec::new(), chain.adoptable())
    };
    Ok(BinaryDir {
        dir: chain.dir,
        name,
        adopted,
        adoptable,
    })
}

/// What a binary on disk is, read through one descriptor: its hash, size and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    /// SHA-256 of the contents.
    pub sha256: Sha256Digest,
    /// Size in bytes.
    pub size: u64,
    /// Its file capabilities.
    pub caps: Option<FileCaps>,
}

/// SHA-256 of everything in `f`, read with `pread` from offset 0 (the descriptor's offset is
/// left alone).
pub fn hash_file(f: &File) -> std::io::Result<(Sha256Digest, u64)> {
    hash_prefix(f, u64::MAX, |_| Ok(()))
}

/// SHA-256 of at most `limit` bytes of `f` from offset 0 (a file still growing past `limit` is
/// an error, so a writer cannot keep root reading), each chunk also given to `sink`.
fn hash_prefix(
    f: &File,
    limit: u64,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<(Sha256Digest, u64)> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = match f.read_at(&mut buf, off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if off + n as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("it holds more than {limit} bytes"),
            ));
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        off += n as u64;
    }
    Ok((hasher.finalize().into(), off))
}

/// Hash, size and capabilities of an open file of at most `limit` bytes.
pub fn inspect(f: &File, what: &str, limit: u64) -> Result<OnDisk> {
    let caps = fcaps::get(f.as_fd())
        .map_err(|e| swap_err(&e, &format!("cannot read the capabilities of {what}")))?;
    let (sha256, size) = hash_prefix(f, limit, |_| Ok(()))
        .map_err(|e| swap_err(&e, &format!("cannot read {what}")))?;
    Ok(OnDisk { sha256, size, caps })
}

/// Opens `name` in `dir` (a regular file, never through a link) and inspects it; a file of
/// more than `limit` bytes (`[server] max_binary_size`) is refused.
pub fn open_and_inspect(dir: &Dir, name: &str, limit: u64) -> Result<(File, OnDisk)> {
    let what = dir.path().join(name).display().to_string();
    let opened = dir.open_file(name).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            // A link or a special file where the binary should be (I9).
            Error::UnsafePath(format!(
                "{e}; cells-updater never acts through a link: put the Cells binary itself \
                 at {what}; the installed binary was left as it was"
            ))
        } else {
            swap_err(&e, &format!("cannot open {what}"))
        }
    })?;
    if opened.stat.st_size as u64 > limit {
        return Err(Error::SwapFailed(format!(
            "{what} has {} bytes, more than [server] max_binary_size ({limit} bytes); \
             the installed binary was left as it was: check what is installed there",
            opened.stat.st_size
        )));
    }
    let on_disk = inspect(&opened.file, &what, limit)?;
    Ok((opened.file, on_disk))
}

/// Opens the installed binary `name` in `dir` to keep it for Rollback, and checks through
/// the descriptor what is kept: a regular file (never through a link) with one link, owned by
/// root or `cells_uid`, with an ELF header for this machine; its hash and capabilities are
/// read from the same descriptor. Anything else is refused before anything changes.
pub fn open_installed(
    dir: &Dir,
    name: &str,
    limit: u64,
    cells_uid: Option<u32>,
) -> Result<(File, OnDisk)> {
    let what = dir.path().join(name).display().to_string();
    let (file, on_disk) = open_and_inspect(dir, name, limit)?;
    let st = nix::sys::stat::fstat(&file)
        .map_err(|e| Error::SwapFailed(format!("cannot inspect {what}: {e}")))?;
    let refuse = |why: String| {
        Err(Error::UnsafePath(format!(
            "{what} {why}; it is not kept for Rollback, so nothing was installed: put the \
             Cells binary itself there (root-owned, mode 0755, one link)"
        )))
    };
    if st.st_nlink != 1 {
        return refuse(format!(
            "has {} hard links (another name for it could be changed after it was kept)",
            st.st_nlink
        ));
    }
    if st.st_uid != 0 && Some(st.st_uid) != cells_uid {
        return refuse(format!(
            "is owned by uid {}, neither root nor the Cells user",
            st.st_uid
        ));
    }
    crate::probe::check_elf(&file).map_err(|e| {
        Error::SwapFailed(format!(
            "the installed binary {what} cannot be kept for Rollback: {}; nothing was \
             installed",
            e.message()
        ))
    })?;
    Ok((file, on_disk))
}

fn check_space(dir: &Dir, size: u64) -> Result<()> {
    let st = nix::sys::statvfs::fstatvfs(dir.as_fd()).map_err(|e| {
        Error::SwapFailed(format!(
            "cannot read free space of {}: {e}",
            dir.path().display()
        ))
    })?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < size + (1 << 20) {
        return Err(Error::DiskFull(format!(
            "installing needs {} MiB in {} but only {} MiB are free; free some space",
            (size + (1 << 20)).div_ceil(1 << 20),
            dir.path().display(),
            free >> 20
        )));
    }
    Ok(())
}

/// Copies all of `src` to `out` (kernel-side with `copy_file_range` where it can).
fn copy_all(src: &File, out: &File) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut off_in = 0i64;
    loop {
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), out, None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(
                nix::errno::Errno::EXDEV | nix::errno::Errno::ENOSYS | nix::errno::Errno::EINVAL,
            ) if total == 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Fallback: plain reads and writes.
    let mut buf = vec![0u8; CHUNK];
    let mut w = out;
    loop {
        let n = match src.read_at(&mut buf, total) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Puts the contents of `src` at `dir/name` atomically with `caps`, owner root:root and mode
/// 0755; the copy must hash to `expected` (it is hashed again through its own descriptor).
/// `before_rename` runs once the temporary file is complete (a failpoint in tests).
pub fn install(
    src: &File,
    expected: &Sha256Digest,
    dir: &Dir,
    name: &str,
    caps: Option<&FileCaps>,
    before_rename: impl FnOnce(),
) -> Result<()> {
    let target = dir.path().join(name);
    let size = src
        .metadata()
        .map_err(|e| swap_err(&e, "cannot read the new binary"))?
        .len();
    check_space(dir, size)?;
    let temp = dir.temp_for(name, 0o700).map_err(|e| {
        swap_err(
            &e,
            &format!("cannot create a temporary file beside {}", target.display()),
        )
    })?;
    copy_all(src, &temp.file)
        .map_err(|e| swap_err(&e, &format!("cannot write beside {}", target.display())))?;
    temp.file
        .sync_all()
        .map_err(|e| swap_err(&e, "cannot fsync the new binary"))?;
    if nix::unistd::geteuid().is_root() {
        nix::unistd::fchown(
            temp.file.as_fd(),
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(0)),
        )
        .map_err(|e| Error::SwapFailed(format!("cannot make the new binary root-owned: {e}")))?;
    }
    nix::sys::stat::fchmod(
        temp.file.as_fd(),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    )
    .map_err(|e| Error::SwapFailed(format!("cannot chmod the new binary: {e}")))?;
    // Capabilities go on the inode before it becomes visible (a chown clears them, so last).
    fcaps::set(temp.file.as_fd(), caps)
        .map_err(|e| swap_err(&e, "cannot set the new binary's file capabilities"))?;
    temp.file
        .sync_all()
        .map_err(|e| swap_err(&e, "cannot fsync the new binary"))?;
    let (got, _) =
        hash_file(&temp.file).map_err(|e| swap_err(&e, "cannot re-read the new binary"))?;
    if &got != expected {
        return Err(Error::ChecksumMismatch(format!(
            "the copy next to {} hashes to {}, not {}; nothing was installed",
            target.display(),
            trust::encode_checksum(&got),
            trust::encode_checksum(expected)
        )));
    }
    before_rename();
    temp.commit(name)
        .map_err(|e| swap_err(&e, &format!("cannot rename over {}", target.display())))
}

/// Removes the temporary file a crashed swap may have left beside `name`.
pub fn clean_temp(dir: &Dir, name: &str) -> bool {
    dir.remove(&format!(".{name}{}", dirfd::TEMP_SUFFIX))
        .unwrap_or(false)
}

/// A kept binary, for Rollback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Backup {
    /// The version it reports.
    pub version: CellsVersion,
    /// Where it was installed.
    pub path: String,
    /// SHA-256 (base64 in the file).
    #[serde(with = "crate::wire::digest")]
    pub sha256: Sha256Digest,
    /// Its file capabilities (`getcap` style), only for messages: the capabilities a
    /// rollback sets are read from the kept file's own attribute.
    pub caps: String,
    /// The package it belongs to; `None` (`""`) in records of earlier daemons.
    #[serde(default, with = "crate::wire::opt_package")]
    pub package: Option<Package>,
}

/// `<state>/backups`: one directory per version with `cells` (capabilities kept) and
/// `backup.json`.
#[derive(Debug)]
pub struct Backups {
    dir: Dir,
}

const BACKUP_BINARY: &str = "cells";
const BACKUP_RECORD: &str = "backup.json";

impl Backups {
    /// The backups directory of the state directory (made when missing).
    pub fn open(state: &Dir) -> Result<Backups> {
        let dir = state
            .subdir("backups", Some(0o700))
            .map_err(|e| swap_err(&e, "cannot open the backups directory"))?;
        Ok(Backups { dir })
    }

    /// Where the kept binary of `version` lives (for messages).
    pub fn path_of(&self, version: &CellsVersion) -> PathBuf {
        self.dir
            .path()
            .join(version.to_string())
            .join(BACKUP_BINARY)
    }

    /// The record and the open binary of `version`'s backup, if complete and intact.
    /// A record that does not decode, or names another version, is no backup.
    pub fn get(&self, version: &CellsVersion) -> Option<(Backup, File)> {
        let vdir = self.dir.subdir(&version.to_string(), None).ok()?;
        let record: Backup =
            serde_json::from_slice(&vdir.read(BACKUP_RECORD, 1 << 16).ok()??).ok()?;
        let opened = vdir.open_file(BACKUP_BINARY).ok()?;
        let (sha, _) = hash_file(&opened.file).ok()?;
        (sha == record.sha256 && record.version == *version).then_some((record, opened.file))
    }

    /// Keeps a copy of the open binary `old` (installed at `path`, reporting `version`, of
    /// `package`), exactly as `seen` (its inspection) found it: the copy is the size seen and
    /// must hash to the hash seen, or nothing is kept (a writer changed it in between). Its
    /// capabilities are those seen, limited to what may be preserved.
    pub fn keep(
        &self,
        old: &File,
        seen: &OnDisk,
        version: &CellsVersion,
        path: &Path,
        package: Package,
    ) -> Result<(Backup, OnDisk)> {
        let caps = seen.caps.and_then(|c| c.preservable());
        let vdir = self
            .dir
            .subdir(&version.to_string(), Some(0o700))
            .map_err(|e| swap_err(&e, "cannot create the backup directory"))?;
        check_space(&vdir, seen.size)?;
        let mut temp = vdir
            .temp_for(BACKUP_BINARY, 0o700)
            .map_err(|e| swap_err(&e, "cannot create the backup"))?;
        let copied = hash_prefix(old, seen.size, |chunk| temp.file.write_all(chunk));
        let grown = matches!(&copied, Err(e) if e.kind() == std::io::ErrorKind::InvalidData);
        let (sha256, off) = match copied {
            Ok(done) => done,
            Err(_) if grown => (Sha256Digest::default(), 0),
            Err(e) => return Err(swap_err(&e, "cannot keep a copy of the installed binary")),
        };
        if grown || sha256 != seen.sha256 || off != seen.size {
            return Err(Error::SwapFailed(
                "the installed binary changed while cells-updater kept a copy of it; nothing \
                 was installed: check who else writes the Cells binary, then try again"
                    .into(),
            ));
        }
        nix::sys::stat::fchmod(
            temp.file.as_fd(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
        .map_err(|e| Error::SwapFailed(format!("cannot chmod the backup: {e}")))?;
        fcaps::set(temp.file.as_fd(), caps.as_ref())
            .map_err(|e| swap_err(&e, "cannot keep the backup's capabilities"))?;
        temp.file
            .sync_all()
            .map_err(|e| swap_err(&e, "cannot fsync the backup"))?;
        temp.commit(BACKUP_BINARY)
            .map_err(|e| swap_err(&e, "cannot put the backup in place"))?;
        let record = Backup {
            version: version.clone(),
            path: path.display().to_string(),
            sha256,
            caps: caps.map_or_else(String::new, |c| c.to_string()),
            package: Some(package),
        };
        let json =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::SwapFailed(e.to_string()))?;
        vdir.write_atomic(BACKUP_RECORD, &json, 0o600)
            .map_err(|e| swap_err(&e, "cannot record the backup"))?;
        self.dir.sync();
        Ok((
            record,
            OnDisk {
                sha256,
                size: off,
                caps,
            },
        ))
    }

    /// Removes backups beyond the newest `keep` (by version), never those in `protect`.
    pub fn prune(&self, keep: usize, protect: &[&CellsVersion]) {
        let mut versions: Vec<(CellsVersion, String)> = self
            .dir
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((CellsVersion::parse(&e).ok()?, e)))
            .collect();
        versions.sort();
        let n = versions.len();
        for (v, name) in versions.into_iter().take(n.saturating_sub(keep)) {
            if !protect.contains(&&v) {
                let _ = self.dir.remove_tree(&name);
            }
        }
        self.dir.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn install_replaces_atomically_and_checks_the_hash() {
        let t = tempfile::tempdir().unwrap();
        let dir = dirfd::root_dir(t.path(), None, Error::SwapFailed).unwrap();
        std::fs::write(t.path().join("cells"), b"old").unwrap();
        let src_path = t.path().join("new");
        std::fs::write(&src_path, b"new binary").unwrap();
        let src = File::open(&src_path).unwrap();
        let good = trust::sha256_reader(&b"new binary"[..]).unwrap().0;
        let bad = trust::sha256_reader(&b"other"[..]).unwrap().0;

        let err = install(&src, &bad, &dir, "cells", None, || {}).unwrap_err();
        assert_eq!(err.name(), "ChecksumMismatch");
        assert_eq!(std::fs::read(t.path().join("cells")).unwrap(), b"old");
        assert!(!t.path().join(".cells.cells-updater-new").exists());

        let mut saw_temp = false;
        install(&src, &good, &dir, "cells", None, || {
            saw_temp = t.path().join(".cells.cells-updater-new").exists()
        })
        .unwrap();
        assert!(
            saw_temp,
            "the new bytes sit in the temporary file before the rename"
        );
        assert_eq!(
            std::fs::read(t.path().join("cells")).unwrap(),
            b"new binary"
        );
        let mode = std::fs::metadata(t.path().join("cells"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let mut names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["cells", "new"]);
    }

    #[test]
    fn a_backup_is_what_was_hashed() {
        let t = tempfile::tempdir().unwrap();
        let state = dirfd::root_dir(t.path(), None, Error::SwapFailed).unwrap();
        let old_path = t.path().join("old");
        std::fs::write(&old_path, b"old binary").unwrap();
        let old = File::open(&old_path).unwrap();
        let seen = inspect(&old, "old", 1 << 20).unwrap();
        let backups = Backups::open(&state).unwrap();
        let v442 = CellsVersion::parse("4.4.2").unwrap();
        let (b, on_disk) = backups
            .keep(
                &old,
                &seen,
                &v442,
                Path::new("/opt/pydio/bin/cells"),
                Package::Home,
            )
            .unwrap();
        assert_eq!(b.sha256, on_disk.sha256);
        let (got, mut f) = backups.get(&v442).unwrap();
        assert_eq!(got, b);
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"old binary");
        // The record keeps its text: an earlier daemon's (no package) still reads.
        let record = t.path().join("backups/4.4.2/backup.json");
        let text: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(text["version"], "4.4.2");
        assert_eq!(text["package"], "PydioHome");
        assert_eq!(text["sha256"], trust::encode_checksum(&on_disk.sha256));
        let mut earlier = text.clone();
        earlier.as_object_mut().unwrap().remove("package");
        std::fs::write(&record, serde_json::to_vec(&earlier).unwrap()).unwrap();
        assert_eq!(backups.get(&v442).unwrap().0.package, None);
        // A record that does not decode, or names another version, is no backup.
        for (field, value) in [
            ("version", "4.4.3"),
            ("version", "four"),
            ("sha256", "AAAA"),
        ] {
            let mut bad = text.clone();
            bad[field] = value.into();
            std::fs::write(&record, serde_json::to_vec(&bad).unwrap()).unwrap();
            assert!(backups.get(&v442).is_none(), "{field}: {value}");
        }
        std::fs::write(&record, serde_json::to_vec(&text).unwrap()).unwrap();
        assert!(backups.get(&v442).is_some());
        // A damaged copy is not offered.
        std::fs::write(backups.path_of(&v442), b"tampered").unwrap();
        assert!(backups.get(&v442).is_none());
    }

    /// The Cells user may still hold a write descriptor on its old binary: what it writes
    /// after the inspection is never kept, and a file past the size limit is never read whole.
    #[test]
    fn a_binary_changed_after_inspection_or_too_big_is_not_kept() {
        let t = tempfile::tempdir().unwrap();
        let state = dirfd::root_dir(t.path(), None, Error::SwapFailed).unwrap();
        let bin = tempfile::tempdir().unwrap();
        let bin_dir = dirfd::root_dir(bin.path(), None, Error::SwapFailed).unwrap();
        std::fs::write(bin.path().join("cells"), b"old binary").unwrap();
        let (old, seen) = open_and_inspect(&bin_dir, "cells", 1 << 20).unwrap();
        // Same size, other bytes; then more bytes.
        std::fs::write(bin.path().join("cells"), b"evil binar").unwrap();
        let backups = Backups::open(&state).unwrap();
        let v442 = CellsVersion::parse("4.4.2").unwrap();
        for _ in 0..2 {
            let err = backups
                .keep(
                    &old,
                    &seen,
                    &v442,
                    Path::new("/opt/pydio/bin/cells"),
                    Package::Home,
                )
                .unwrap_err();
            assert_eq!(err.name(), "SwapFailed", "{err}");
            assert!(err.message().contains("changed while"), "{err}");
            assert!(backups.get(&v442).is_none());
            let left: Vec<_> = std::fs::read_dir(backups.path_of(&v442).parent().unwrap())
                .unwrap()
                .collect();
            assert!(left.is_empty(), "a partial copy was left: {left:?}");
            std::fs::write(bin.path().join("cells"), vec![b'x'; 4096]).unwrap();
        }
        let err = open_and_inspect(&bin_dir, "cells", 1024).unwrap_err();
        assert_eq!(err.name(), "SwapFailed");
        assert!(err.message().contains("max_binary_size"), "{err}");
    }

    /// What is kept for Rollback is checked through the descriptor: row by row, each refused
    /// with its error, nothing written anywhere.
    #[test]
    fn only_a_plain_elf_binary_of_root_or_the_cells_user_is_kept() {
        use std::os::unix::fs::MetadataExt;
        let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let listing = |dir: &Path| -> Vec<_> {
            let mut all: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let m = std::fs::symlink_metadata(e.path()).unwrap();
                    (e.file_name(), m.ino(), m.nlink(), m.uid(), m.mtime())
                })
                .collect();
            all.sort();
            all
        };
        let rows: &[(&str, &str, &str)] = &[
            ("a second hard link", "UnsafePath", "2 hard links"),
            ("owned by another uid", "UnsafePath", "owned by uid 4242"),
            ("not an ELF binary", "SwapFailed", "not an ELF"),
            ("a symlink", "UnsafePath", "link"),
        ];
        for (row, error, says) in rows {
            let bin = tempfile::tempdir().unwrap();
            let path = bin.path().join("cells");
            match *row {
                "a second hard link" => {
                    std::fs::write(&path, &elf).unwrap();
                    std::fs::hard_link(&path, bin.path().join("other-name")).unwrap();
                }
                "owned by another uid" => {
                    std::fs::write(&path, &elf).unwrap();
                    std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
                }
                "not an ELF binary" => std::fs::write(&path, b"#!/bin/sh\necho 4.4.2\n").unwrap(),
                _ => {
                    std::fs::write(bin.path().join("real"), &elf).unwrap();
                    std::os::unix::fs::symlink("real", &path).unwrap();
                }
            }
            let before = listing(bin.path());
            let bin_dir = dirfd::root_dir(bin.path(), None, Error::SwapFailed).unwrap();
            let err = open_installed(&bin_dir, "cells", 1 << 30, Some(999)).unwrap_err();
            assert_eq!(err.name(), *error, "{row}: {err}");
            assert!(err.message().contains(says), "{row}: {err}");
            let after = listing(bin.path());
            assert_eq!(before, after, "{row}: something changed");
        }
        // Root's and the Cells user's own binaries are kept.
        for owner in [0, 999] {
            let bin = tempfile::tempdir().unwrap();
            let path = bin.path().join("cells");
            std::fs::write(&path, &elf).unwrap();
            std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
            let bin_dir = dirfd::root_dir(bin.path(), None, Error::SwapFailed).unwrap();
            let (_, seen) = open_installed(&bin_dir, "cells", 1 << 30, Some(999)).unwrap();
            assert_eq!(seen.size, elf.len() as u64);
        }
    }
}
