//! File work as root through directory file descriptors (invariant I9).
//!
//! Every directory the daemon acts in is opened from `/` one component at a time with
//! `O_NOFOLLOW | O_DIRECTORY`, and each opened descriptor is checked with `fstat`: a
//! directory, owned by root, not writable by group or others (unless sticky). Files are then
//! reached with `openat` relative to that descriptor, never by path, and never through a
//! symbolic link. Writes are atomic: a temporary file created with `O_EXCL`, fsynced,
//! `renameat` over the target, the directory fsynced.
//!
//! A chain may also be *adoptable*: directories owned by the Cells service user (Pydio's
//! documented layout gives `pydio` its binary directory) are made `root:root`, `go-w` at the
//! first mutating call, through the descriptors that were checked, top-down, so the Cells user
//! cannot swap a component between the check and the change.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Suffix of the temporary files written next to their targets.
pub const TEMP_SUFFIX: &str = ".cells-updater-new";

/// An open directory, with the path it was reached by (for messages only).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Who besides root may own a directory of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Root only (the state directory, unit drop-ins).
    Root,
    /// Root, or this uid (the Cells user), whose directories are adopted before any change.
    Adoptable(u32),
    /// Anyone: only for a directory where root creates a file exclusively and renames it
    /// over its name (the metrics textfile, whose parent Debian gives to `prometheus`). The
    /// walk still never follows a link, and neither step opens an existing file, so the
    /// directory's owner can only make root write that file into a directory of their own.
    Any,
}

/// A checked chain: the last directory open, and the directories still to adopt.
#[derive(Debug)]
pub struct Chain {
    /// The directory the chain leads to.
    pub dir: Dir,
    /// Directories owned by the adoptable uid, top-down, each with its open descriptor.
    pending: Vec<Dir>,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(
            || format!("uid {uid}"),
            |u| format!("{} (uid {uid})", u.name),
        )
}

/// One file name (no `/`, not `.` or `..`, not empty, no NUL).
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single file name"),
        ));
    }
    Ok(())
}

fn unsafe_path(path: &Path, st: &FileStat, why: &str, fix: String) -> Error {
    Error::UnsafePath(format!(
        "{} {why} (owner {}, mode {:04o}): someone other than root could change what \
         cells-updater acts on there, so nothing was changed. Fix: {fix}",
        path.display(),
        user_name(st.st_uid),
        st.st_mode & 0o7777
    ))
}

/// The verdict on one directory of a chain.
enum Verdict {
    Safe,
    Adopt,
}

fn judge(path: &Path, st: &FileStat, owners: Owners) -> Result<Verdict> {
    if matches!(owners, Owners::Any) {
        return Ok(Verdict::Safe);
    }
    let me = nix::unistd::geteuid().as_raw();
    let writable_by_others = st.st_mode & 0o022 != 0 && st.st_mode & 0o1000 == 0;
    if st.st_uid == 0 || st.st_uid == me {
        if writable_by_others {
            return Err(unsafe_path(
                path,
                st,
                "is writable by its group or by everyone",
                format!("chmod go-w {}", path.display()),
            ));
        }
        return Ok(Verdict::Safe);
    }
    match owners {
        Owners::Adoptable(uid) if st.st_uid == uid => Ok(Verdict::Adopt),
        _ => Err(unsafe_path(
            path,
            st,
            "belongs to another user",
            format!("chown root:root {p} && chmod go-w {p}", p = path.display()),
        )),
    }
}

/// Opens `path` (absolute) as a checked chain. With `create`, missing directories are made
/// (mode `create`, root-owned) as the walk goes; otherwise a missing one is an I/O error
/// turned into an [`Error`] by `io_err`.
pub fn open_chain(
    path: &Path,
    owners: Owners,
    create: Option<u32>,
    io_err: fn(String) -> Error,
) -> Result<Chain> {
    if !path.is_absolute() {
        return Err(io_err(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    let fail = |p: &Path, e: io::Error| io_err(format!("cannot open {}: {e}", p.display()));
    let root_fd = nix::fcntl::open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(Path::new("/"), errno_io(e)))?;
    let mut cur = Dir {
        fd: root_fd,
        path: PathBuf::from("/"),
    };
    let mut pending = Vec::new();
    let st = cur.stat().map_err(|e| fail(Path::new("/"), e))?;
    judge(&cur.path, &st, Owners::Root)?;
    for comp in path.components() {
        let name = match comp {
            Component::RootDir => continue,
            Component::Normal(n) => n
                .to_str()
                .ok_or_else(|| io_err(format!("{} is not valid UTF-8", path.display())))?,
            _ => {
                return Err(io_err(format!(
                    "{} must not contain \".\" or \"..\"",
                    path.display()
                )))
            }
        };
        let next_path = cur.path.join(name);
        let fd = match cur.open_dir_fd(name) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                if !pending.is_empty() {
                    // Never create inside a directory that is not root's yet.
                    return Err(fail(&next_path, e));
                }
                let mode = create.unwrap_or(0o755);
                match mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(fail(&next_path, errno_io(e))),
                }
                cur.sync();
                cur.open_dir_fd(name).map_err(|e| fail(&next_path, e))?
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                let st = fstatat(cur.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| fail(&next_path, errno_io(e)))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
                    return Err(unsafe_path(
                        &next_path,
                        &st,
                        "is a symbolic link",
                        "configure the real directory instead (cells-updater never follows \
                         links in the paths it acts on)"
                            .into(),
                    ));
                }
                return Err(io_err(format!(
                    "{} is not a directory",
                    next_path.display()
                )));
            }
            Err(e) => return Err(fail(&next_path, e)),
        };
        let next = Dir {
            fd,
            path: next_path,
        };
        let st = next.stat().map_err(|e| fail(&next.path, e))?;
        let verdict = judge(&next.path, &st, owners)?;
        let child = Dir {
            fd: next.fd.try_clone().map_err(|e| fail(&next.path, e))?,
            path: next.path.clone(),
        };
        if let Verdict::Adopt = verdict {
            pending.push(next);
        }
        cur = child;
    }
    Ok(Chain { dir: cur, pending })
}

impl Chain {
    /// The directories that adoption would make root's, top-down.
    pub fn adoptable(&self) -> Vec<PathBuf> {
        self.pending.iter().map(|d| d.path.clone()).collect()
    }

    /// Makes every adoptable directory `root:root` and `go-w`, through the descriptors that
    /// were checked, top-down; then walks the path again and requires the same directories.
    /// Returns the adopted paths (empty when there was nothing to do).
    pub fn adopt(&mut self, io_err: fn(String) -> Error) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        for d in &self.pending {
            let fail = |e: Errno| {
                io_err(format!(
                    "cannot make {} root-owned: {}",
                    d.path.display(),
                    errno_io(e)
                ))
            };
            // Owner first: once root owns it, the Cells user can change nothing in it, and
            // root may chmod it without CAP_FOWNER.
            fchown(d.as_fd(), Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).map_err(fail)?;
            let st = fstat(d.as_fd()).map_err(fail)?;
            fchmod(
                d.as_fd(),
                Mode::from_bits_truncate((st.st_mode & 0o7777 & !0o022) as _),
            )
            .map_err(fail)?;
            done.push(d.path.clone());
        }
        if done.is_empty() {
            return Ok(done);
        }
        // Nothing may have been swapped in between: the same inodes, now root's, all the way.
        let again = open_chain(&self.dir.path, Owners::Root, None, io_err)?;
        let (a, b) = (self.dir.stat(), again.dir.stat());
        match (a, b) {
            (Ok(a), Ok(b)) if a.st_ino == b.st_ino && a.st_dev == b.st_dev => {}
            _ => {
                return Err(Error::UnsafePath(format!(
                    "{} changed while cells-updater made it root-owned; nothing was installed. \
                     Check who else writes there, then try again",
                    self.dir.path.display()
                )))
            }
        }
        self.pending.clear();
        Ok(done)
    }
}

/// A file opened through a [`Dir`], with its `fstat` at open time.
#[derive(Debug)]
pub struct Opened {
    /// The open file (read-only).
    pub file: File,
    /// Its status when opened.
    pub stat: FileStat,
}

impl Dir {
    /// The path this directory was reached by (messages only; never used to reopen it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `fstat` of the directory.
    pub fn stat(&self) -> io::Result<FileStat> {
        fstat(self.as_fd()).map_err(errno_io)
    }

    /// A second descriptor for the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    fn open_dir_fd(&self, name: &str) -> io::Result<OwnedFd> {
        check_name(name)?;
        openat(
            self.as_fd(),
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)
    }

    /// The subdirectory `name`, made with `mode` when missing (`create`), which must belong to
    /// this process's user and not be writable by others.
    pub fn subdir(&self, name: &str, create: Option<u32>) -> io::Result<Dir> {
        let fd = match self.open_dir_fd(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                let mode = create.unwrap_or(0o700);
                match mkdirat(self.as_fd(), name, Mode::from_bits_truncate(mode as _)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno_io(e)),
                }
                self.sync();
                self.open_dir_fd(name)?
            }
            other => other?,
        };
        let dir = Dir {
            fd,
            path: self.path.join(name),
        };
        let st = dir.stat()?;
        if st.st_uid != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to {}, not to this service",
                    dir.path.display(),
                    user_name(st.st_uid)
                ),
            ));
        }
        if let Some(mode) = create {
            if st.st_mode & 0o777 != mode {
                fchmod(dir.as_fd(), Mode::from_bits_truncate(mode as _)).map_err(errno_io)?;
            }
        }
        Ok(dir)
    }

    /// `fstatat` without following a link; `None` when absent.
    pub fn stat_at(&self, name: &str) -> io::Result<Option<FileStat>> {
        check_name(name)?;
        match fstatat(self.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// Opens the regular file `name` read-only, never through a link, never blocking on a
    /// FIFO or device; anything but a regular file is refused.
    pub fn open_file(&self, name: &str) -> io::Result<Opened> {
        check_name(name)?;
        let fd = openat(
            self.as_fd(),
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a symbolic link", self.path.join(name).display()),
            ),
            e => errno_io(e),
        })?;
        let stat = fstat(fd.as_fd()).map_err(errno_io)?;
        if !is_regular(&stat) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.path.join(name).display()),
            ));
        }
        Ok(Opened {
            file: File::from(fd),
            stat,
        })
    }

    /// Opens `name` read-write (created with mode 0600 when `create`), never through a link;
    /// anything but a regular file is refused.
    pub fn open_rw(&self, name: &str, create: bool) -> io::Result<File> {
        check_name(name)?;
        let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        if create {
            flags |= OFlag::O_CREAT;
        }
        let fd =
            openat(self.as_fd(), name, flags, Mode::from_bits_truncate(0o600)).map_err(errno_io)?;
        if !is_regular(&fstat(fd.as_fd()).map_err(errno_io)?) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.path.join(name).display()),
            ));
        }
        Ok(File::from(fd))
    }

    /// Reads the regular file `name` whole, refusing more than `max` bytes; `None` when absent.
    pub fn read(&self, name: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
        let opened = match self.open_file(name) {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        opened.file.take(max + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is larger than {max} bytes",
                    self.path.join(name).display()
                ),
            ));
        }
        Ok(Some(bytes))
    }

    /// Creates the temporary file that will become `name` (exclusively, read-write, mode
    /// `mode`, never through a link). A stale one from a crash is removed first.
    pub fn temp_for(&self, name: &str, mode: u32) -> io::Result<TempFile<'_>> {
        check_name(name)?;
        let temp = format!(".{name}{TEMP_SUFFIX}");
        let open = || {
            openat(
                self.as_fd(),
                temp.as_str(),
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode as _),
            )
        };
        let fd = match open() {
            Err(Errno::EEXIST) => {
                self.remove(&temp)?;
                open().map_err(errno_io)?
            }
            other => other.map_err(errno_io)?,
        };
        Ok(TempFile {
            dir: self,
            name: temp,
            file: File::from(fd),
            done: false,
        })
    }

    /// Writes `bytes` as `name` atomically (temporary file, fsync, rename, fsync dir).
    pub fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        let mut t = self.temp_for(name, mode)?;
        t.file.write_all(bytes)?;
        t.file.sync_all()?;
        t.commit(name)
    }

    /// Removes the file (or link) `name`; true when it existed.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        check_name(name)?;
        match unlinkat(self.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// Removes `name` and, if it is a directory, everything under it, without following
    /// links. Absent is fine.
    pub fn remove_tree(&self, name: &str) -> io::Result<()> {
        match self.stat_at(name)? {
            None => return Ok(()),
            Some(st) if !is_dir(&st) => {
                self.remove(name)?;
                return Ok(());
            }
            Some(_) => {}
        }
        let sub = self.subdir(name, None)?;
        for entry in sub.entries()? {
            sub.remove_tree(&entry)?;
        }
        match unlinkat(self.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// Renames `from` to `to` inside this directory (replacing `to`), then fsyncs it.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        renameat(self.as_fd(), from, self.as_fd(), to).map_err(errno_io)?;
        self.sync();
        Ok(())
    }

    /// Moves `from` in this directory to `to` in `dir` (replacing it), then fsyncs both.
    pub fn rename_to(&self, from: &str, dir: &Dir, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        renameat(self.as_fd(), from, dir.as_fd(), to).map_err(errno_io)?;
        self.sync();
        dir.sync();
        Ok(())
    }

    /// Opens a directory with this process's own rights, following links: for a helper that
    /// runs as the Cells user in that user's own directories (where links are its business).
    pub fn open_own(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The names in this directory (not `.` and `..`), sorted.
    pub fn entries(&self) -> io::Result<Vec<String>> {
        let mut d = nix::dir::Dir::openat(
            self.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(errno_io)?;
            if let Ok(name) = e.file_name().to_str() {
                if name != "." && name != ".." {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// fsyncs the directory so renames in it are durable. Best effort: a failure here cannot
    /// undo the rename, and the next write's fsync covers it.
    pub fn sync(&self) {
        let _ = nix::unistd::fsync(self.as_fd());
    }
}

/// A temporary file beside its target; removed on drop unless committed.
pub struct TempFile<'a> {
    dir: &'a Dir,
    name: String,
    /// The open file, for writing.
    pub file: File,
    done: bool,
}

impl TempFile<'_> {
    /// Its name in the directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames it over `target` and fsyncs the directory.
    pub fn commit(mut self, target: &str) -> io::Result<()> {
        self.dir.rename(&self.name, target)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// Opens (making it when missing, mode 0700) a directory that only root may change: the
/// state directory and what lies under it.
pub fn root_dir(path: &Path, create: Option<u32>, io_err: fn(String) -> Error) -> Result<Dir> {
    Ok(open_chain(path, Owners::Root, create, io_err)?.dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn atomic_write_read_and_remove_through_the_descriptor() {
        let t = scratch();
        let d = root_dir(t.path(), None, Error::SwapFailed).unwrap();
        d.write_atomic("state.json", b"{}", 0o600).unwrap();
        assert_eq!(d.read("state.json", 10).unwrap().unwrap(), b"{}");
        assert!(d.read("absent", 10).unwrap().is_none());
        assert!(d.read("state.json", 1).is_err(), "size cap");
        assert_eq!(d.entries().unwrap(), ["state.json"], "no temporary left");
        let sub = d.subdir("staged", Some(0o700)).unwrap();
        sub.write_atomic("x", b"1", 0o600).unwrap();
        d.remove_tree("staged").unwrap();
        assert_eq!(d.entries().unwrap(), ["state.json"]);
        for bad in ["", ".", "..", "a/b"] {
            assert!(d.write_atomic(bad, b"", 0o600).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn links_fifos_and_foreign_owners_are_refused() {
        let t = scratch();
        let d = root_dir(t.path(), None, Error::SwapFailed).unwrap();
        std::fs::write(t.path().join("secret"), b"s").unwrap();
        symlink(t.path().join("secret"), t.path().join("link")).unwrap();
        let e = d.open_file("link").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        nix::unistd::mkfifo(&t.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = d.open_file("fifo").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // A symlinked directory in the chain.
        std::fs::create_dir(t.path().join("real")).unwrap();
        symlink(t.path().join("real"), t.path().join("dirlink")).unwrap();
        let e = root_dir(&t.path().join("dirlink"), None, Error::SwapFailed).unwrap_err();
        assert_eq!(e.name(), "UnsafePath");
        assert!(e.message().contains("symbolic link"), "{e}");
        // World-writable without the sticky bit.
        std::fs::set_permissions(
            t.path().join("real"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let e = root_dir(&t.path().join("real"), None, Error::SwapFailed).unwrap_err();
        assert_eq!(e.name(), "UnsafePath");
        assert!(e.message().contains("chmod go-w"), "{e}");
        std::fs::set_permissions(
            t.path().join("real"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        root_dir(&t.path().join("real"), None, Error::SwapFailed).unwrap();
    }

    #[test]
    fn a_cells_user_directory_is_adopted_only_when_asked() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown needs root; .ci/run runs the tests as root
        }
        let t = scratch();
        let bin = t.path().join("opt/pydio/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let pydio = 4242;
        for p in [t.path().join("opt/pydio"), bin.clone()] {
            nix::unistd::chown(&p, Some(Uid::from_raw(pydio)), Some(Gid::from_raw(pydio))).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
        }
        // Root-only: refused, naming the owner and the fix.
        let e = open_chain(&bin, Owners::Root, None, Error::SwapFailed).unwrap_err();
        assert_eq!(e.name(), "UnsafePath");
        assert!(e.message().contains("chown root:root"), "{e}");
        // Another user's directory is never adopted.
        let e = open_chain(&bin, Owners::Adoptable(4243), None, Error::SwapFailed).unwrap_err();
        assert_eq!(e.name(), "UnsafePath");
        // The Cells user's: checked, then adopted top-down.
        let mut chain =
            open_chain(&bin, Owners::Adoptable(pydio), None, Error::SwapFailed).unwrap();
        assert_eq!(chain.adoptable(), [t.path().join("opt/pydio"), bin.clone()]);
        let meta = std::fs::metadata(&bin).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            pydio,
            "nothing before adopt"
        );
        assert_eq!(chain.adopt(Error::SwapFailed).unwrap().len(), 2);
        for p in [t.path().join("opt/pydio"), bin.clone()] {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&m), 0);
            assert_eq!(std::os::unix::fs::MetadataExt::mode(&m) & 0o777, 0o755);
        }
        open_chain(&bin, Owners::Root, None, Error::SwapFailed).unwrap();
    }
}
