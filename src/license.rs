//! The Enterprise license file: `<CELLS_WORKING_DIR>/pydio-license` (else
//! `~<User>/.config/pydio/cells/pydio-license`), the key verbatim but trimmed, owned by the
//! Cells user, mode 0600, written atomically. The working directory is the Cells user's, so
//! it is read and written by a helper running as that user, never by root (I9).

use crate::error::{Error, Result};
use crate::helper::{Input, Rights, Runner, Task};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a license helper may run.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Reads the installed key with the Cells user's rights (a helper running as that user):
/// root never opens a path the Cells user controls. `None` when there is no license file.
pub async fn read(runner: &Runner, at: &Location) -> Result<Option<String>> {
    let v = runner
        .run(Task {
            command: "license-read",
            args: Vec::new(),
            rights: Rights::CellsUser {
                user: at.user.clone(),
                group: at.group.clone(),
                rw: None,
            },
            input: Input::Json(
                serde_json::json!({ "dir": at.dir })
                    .to_string()
                    .into_bytes(),
            ),
            timeout: HELPER_TIMEOUT,
            env: Vec::new(),
        })
        .await?;
    Ok(v["key"].as_str().map(str::to_string))
}

/// Writes `key` (validated) as `<dir>/pydio-license` with the Cells user's rights: the file
/// belongs to that user, mode 0600, written atomically.
pub async fn write(runner: &Runner, at: &Location, key: &str) -> Result<PathBuf> {
    let key = validate(key)?;
    runner
        .run(Task {
            command: "license-write",
            args: Vec::new(),
            rights: Rights::CellsUser {
                user: at.user.clone(),
                group: at.group.clone(),
                rw: Some(at.dir.clone()),
            },
            input: Input::Json(
                serde_json::json!({ "dir": at.dir, "key": key })
                    .to_string()
                    .into_bytes(),
            ),
            timeout: HELPER_TIMEOUT,
            env: Vec::new(),
        })
        .await?;
    Ok(at.dir.join(LICENSE_FILE))
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
