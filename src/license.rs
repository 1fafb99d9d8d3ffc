//! The Enterprise license file: `<CELLS_WORKING_DIR>/pydio-license` (else
//! `~<User>/.config/pydio/cells/pydio-license`), the key verbatim but trimmed, owned by the
//! Cells user, mode 0600, written atomically.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The file name Cells reads.
pub const LICENSE_FILE: &str = "pydio-license";
/// Largest key accepted.
pub const MAX_KEY: usize = 64 * 1024;

/// Checks a key as pasted: not empty, text (no control characters but line breaks and
/// tabs), at most 64 KiB. Returns it trimmed.
pub fn validate(key: &str) -> Result<String> {
    if key.len() > MAX_KEY {
        return Err(Error::InvalidArgument(format!(
            "the license key has {} bytes, more than {MAX_KEY}; paste the key itself, not a file of other data",
            key.len()
        )));
    }
    let trimmed = key.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument("the license key is empty".into()));
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::InvalidArgument(format!(
            "the license key holds binary data ({:?}); paste the key text as Pydio sent it",
            c
        )));
    }
    Ok(trimmed.to_string())
}

/// Where Cells looks for its working directory: `CELLS_WORKING_DIR` from the unit, else
/// `~user/.config/pydio/cells`.
pub fn working_dir(env_dir: Option<PathBuf>, home: &Path) -> PathBuf {
    env_dir.unwrap_or_else(|| home.join(".config/pydio/cells"))
}

fn io_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}

/// Writes `key` (already validated) as `dir/pydio-license`, owned by `uid:gid`, mode 0600:
/// a temporary file created in the opened directory, fsynced, renamed, directory fsynced.
/// The directory is opened once and used by descriptor, and must belong to root or `uid`.
pub fn write(dir: &Path, key: &str, uid: u32, gid: u32) -> Result<PathBuf> {
    let cdir = CString::new(dir.as_os_str().as_bytes()).map_err(|e| io_err("bad path", e))?;
    // SAFETY: a valid C string; the result is checked.
    let dfd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Err(Error::InvalidArgument(format!(
            "the Cells working directory {} cannot be opened ({}); start Cells once, or set \
             CELLS_WORKING_DIR in its unit",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: dfd is a fresh descriptor we own.
    let dfd = unsafe { OwnedFd::from_raw_fd(dfd) };
    let st = nix::sys::stat::fstat(dfd.as_raw_fd())
        .map_err(|e| io_err("cannot inspect the working directory", e))?;
    if st.st_uid != 0 && st.st_uid != uid {
        return Err(Error::InvalidArgument(format!(
            "{} belongs to uid {}, not to the Cells user (uid {uid}); refusing to write there",
            dir.display(),
            st.st_uid
        )));
    }
    let tmp = CString::new(format!(".{LICENSE_FILE}.cells-updater-new"))
        .map_err(|e| io_err("name", e))?;
    let fin = CString::new(LICENSE_FILE).map_err(|e| io_err("name", e))?;
    // SAFETY: valid descriptor and C strings.
    unsafe { libc::unlinkat(dfd.as_raw_fd(), tmp.as_ptr(), 0) };
    // SAFETY: as above; O_EXCL|O_NOFOLLOW: never through a planted file or link.
    let fd = unsafe {
        libc::openat(
            dfd.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(Error::from_io(
            &std::io::Error::last_os_error(),
            "cannot create the license file",
            Error::InvalidArgument,
        ));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let result = (|| -> Result<()> {
        use std::io::Write;
        nix::unistd::fchown(
            file.as_raw_fd(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| io_err("cannot give the license file to the Cells user", e))?;
        file.write_all(key.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| {
                Error::from_io(&e, "cannot write the license file", Error::InvalidArgument)
            })?;
        // SAFETY: valid descriptor and C strings.
        let r =
            unsafe { libc::renameat(dfd.as_raw_fd(), tmp.as_ptr(), dfd.as_raw_fd(), fin.as_ptr()) };
        if r != 0 {
            return Err(io_err(
                "cannot put the license file in place",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: dfd is open.
        unsafe { libc::fsync(dfd.as_raw_fd()) };
        Ok(())
    })();
    if result.is_err() {
        // SAFETY: valid descriptor and C string.
        unsafe { libc::unlinkat(dfd.as_raw_fd(), tmp.as_ptr(), 0) };
    }
    result.map(|_| dir.join(LICENSE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn bad_keys_are_refused() {
        let rows: &[(&str, &str)] = &[
            ("", "empty"),
            ("   \n\t ", "empty"),
            ("abc\u{0}def", "binary"),
            ("abc\u{1b}[2J", "binary"),
        ];
        for (key, says) in rows {
            let e = validate(key).unwrap_err();
            assert_eq!(e.name(), "InvalidArgument");
            assert!(e.message().contains(says), "{key:?}: {e}");
        }
        let big = "A".repeat(MAX_KEY + 1);
        assert!(validate(&big).unwrap_err().message().contains("more than"));
        assert_eq!(validate("  KEY-123\nline2 \n").unwrap(), "KEY-123\nline2");
    }

    #[test]
    fn written_atomically_with_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let p = write(dir.path(), "KEY", me, gid).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "KEY");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(m.uid(), me);
        write(dir.path(), "KEY2", me, gid).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "KEY2");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        let missing = dir.path().join("nope");
        assert!(write(&missing, "K", me, gid)
            .unwrap_err()
            .message()
            .contains("cannot be opened"));
    }
}
