//! The Enterprise license file: `<CELLS_WORKING_DIR>/pydio-license` (else
//! `~<User>/.config/pydio/cells/pydio-license`), the key verbatim but trimmed, owned by the
//! Cells user, mode 0600, written atomically. The working directory is the Cells user's, so
//! it is read and written by a helper running as that user, never by root (I9).

use crate::error::{Error, Result};
use crate::helper::request::{
    CellsAccount, CellsDir, LicenseKey, LicensePath, LicenseWrite, ReadLicense,
};
use crate::helper::Runner;
use std::io::Read;
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

/// Where the license lives and whose it is.
#[derive(Debug, Clone)]
pub struct Location {
    /// The Cells working directory.
    pub dir: PathBuf,
    /// The Cells user and group the helper runs as.
    pub user: String,
    /// Its group.
    pub group: String,
}

/// The working directory as the helper is sent it: a path that is not UTF-8 is refused, never
/// mangled into another one (it also becomes the license writer's only writable path).
pub fn utf8_dir(dir: &Path) -> Result<String> {
    dir.to_str().map(str::to_string).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the Cells working directory {} is not UTF-8; set CELLS_WORKING_DIR in the Cells \
             unit to a plain path",
            crate::text::one_line(&dir.to_string_lossy(), 200)
        ))
    })
}

impl Location {
    fn account(&self) -> CellsAccount {
        CellsAccount {
            user: self.user.clone(),
            group: self.group.clone(),
        }
    }

    fn dir_text(&self) -> Result<String> {
        utf8_dir(&self.dir)
    }
}

/// Reads the installed key with the Cells user's rights (a helper running as that user):
/// root never opens a path the Cells user controls. `None` when there is no license file.
pub async fn read(runner: &Runner, at: &Location) -> Result<Option<String>> {
    let dir = CellsDir {
        dir: at.dir_text()?,
    };
    Ok(runner.call(ReadLicense(at.account(), dir)).await?.key)
}

/// Writes `key` (validated) as `<dir>/pydio-license` with the Cells user's rights: the file
/// belongs to that user, mode 0600, written atomically.
pub async fn write(runner: &Runner, at: &Location, key: &str) -> Result<PathBuf> {
    let key = validate(key)?;
    let req = LicenseWrite {
        dir: at.dir_text()?,
        key,
    };
    runner.call((at.account(), req)).await?;
    Ok(at.dir.join(LICENSE_FILE))
}

fn open_own_dir(dir: &str) -> Result<crate::dirfd::Dir> {
    crate::dirfd::Dir::open_own(Path::new(dir)).map_err(|e| {
        Error::InvalidArgument(format!(
            "the Cells working directory {dir} cannot be opened as the Cells user ({e}); start \
             Cells once, or set CELLS_WORKING_DIR in its unit"
        ))
    })
}

/// Helper side (`license-read`, as the Cells user): the key in `<dir>/pydio-license`, which
/// must be that user's and a valid key.
pub fn read_as_user(req: CellsDir) -> Result<LicenseKey> {
    let dir = open_own_dir(&req.dir)?;
    let me = nix::unistd::geteuid().as_raw();
    let name = LICENSE_FILE;
    let opened = match dir.open_file(name) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LicenseKey { key: None }),
        Err(e) => {
            return Err(Error::LicenseRejected(format!(
                "the license file {dir}/{name} cannot be used: {e}; replace it with \
                 `cells-updater license install`",
                dir = req.dir
            )))
        }
    };
    if opened.stat.st_uid != me {
        return Err(Error::LicenseRejected(format!(
            "the license file {}/{name} does not belong to the Cells user; replace it with \
             `cells-updater license install`",
            req.dir
        )));
    }
    let mut bytes = Vec::new();
    opened
        .file
        .take(MAX_KEY as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::LicenseRejected(format!("cannot read the license file: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::LicenseRejected("the license file is not text; install the key again".into())
    })?;
    let key = validate(&text).map_err(|e| Error::LicenseRejected(e.message()))?;
    Ok(LicenseKey { key: Some(key) })
}

/// Helper side (`license-write`, as the Cells user, who may write only that directory):
/// validates the key again and writes it atomically, mode 0600.
pub fn write_as_user(req: LicenseWrite) -> Result<LicensePath> {
    let key = validate(&req.key)?;
    let dir = open_own_dir(&req.dir)?;
    dir.write_atomic(LICENSE_FILE, key.as_bytes(), 0o600)
        .map_err(|e| Error::from_io(&e, "cannot write the license file", Error::InvalidArgument))?;
    Ok(LicensePath {
        path: format!("{}/{LICENSE_FILE}", req.dir.trim_end_matches('/')),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
