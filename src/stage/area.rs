//! The staging directory: staged releases, the newest partial download, their removal.

use super::*;

/// The staging directory, held open.
#[derive(Debug, Clone)]
pub struct StagingArea {
    pub(super) dir: Arc<Dir>,
}

/// What a partial download is of (`source.json` beside it): a resumed attempt keeps the
/// bytes only for the same URL, digest and size.
#[derive(Serialize, Deserialize, PartialEq)]
pub(super) struct PartialOrigin {
    pub(super) url: String,
    #[serde(with = "crate::wire::digest")]
    pub(super) sha256: crate::trust::Sha256Digest,
    pub(super) size: u64,
}

pub(super) fn io_fail(what: String) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::from_io(&e, &what, Error::DownloadFailed)
}

impl StagingArea {
    /// The staging area of a state directory: `<state>/staged` (made when missing, 0700).
    pub fn open(state: &Dir) -> Result<Self> {
        let dir = state
            .subdir("staged", Some(0o700))
            .map_err(io_fail("cannot prepare the staging directory".into()))?;
        dir.subdir(WORK, Some(0o700))
            .map_err(io_fail("cannot prepare the staging work directory".into()))?;
        Ok(StagingArea { dir: Arc::new(dir) })
    }

    /// The staging directory's path (messages).
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub(super) fn work(&self) -> Result<Dir> {
        self.dir
            .subdir(WORK, Some(0o700))
            .map_err(io_fail("cannot open the staging work directory".into()))
    }

    /// The manifest of a staged version, if it is staged.
    pub fn manifest(&self, v: &CellsVersion) -> Option<Manifest> {
        let vdir = self.dir.subdir(&v.to_string(), None).ok()?;
        let m: Manifest = serde_json::from_slice(&vdir.read(MANIFEST, 1 << 16).ok()??).ok()?;
        let st = vdir.stat_at(BINARY_NAME).ok()??;
        (st.st_size as u64 == m.size).then_some(m)
    }

    /// Opens a staged version's binary.
    pub fn open_binary(&self, v: &CellsVersion) -> Result<File> {
        let missing = |e: std::io::Error| {
            Error::NothingStaged(format!(
                "the staged files of {v} are missing ({e}); stage it again"
            ))
        };
        let vdir = self.dir.subdir(&v.to_string(), None).map_err(missing)?;
        Ok(vdir.open_file(BINARY_NAME).map_err(missing)?.file)
    }

    /// Every staged version, oldest first.
    pub fn staged(&self) -> Vec<Manifest> {
        let mut out: Vec<(CellsVersion, Manifest)> = self
            .dir
            .entries()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| CellsVersion::parse(e).ok())
            .filter_map(|v| self.manifest(&v).map(|m| (v, m)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, m)| m).collect()
    }

    /// Removes a staged version (and any partial download of it).
    pub fn remove(&self, v: &CellsVersion) -> Result<()> {
        let name = v.to_string();
        let fail = io_fail(format!("cannot remove the staged {name}"));
        // The manifest goes first: a removal cut short never leaves a version that looks
        // staged with half its files.
        if let Ok(vdir) = self.dir.subdir(&name, None) {
            vdir.remove(MANIFEST).map_err(&fail)?;
            vdir.sync();
        }
        self.dir.remove_tree(&name).map_err(&fail)?;
        self.work()?.remove_tree(&name).map_err(&fail)?;
        self.dir.sync();
        Ok(())
    }

    /// Removes everything in the staging area but `keep`'s files and the partial downloads
    /// (what a crash left: a version not recorded as staged, or one half removed); returns
    /// the names removed.
    pub fn remove_all_but(&self, keep: &str) -> Vec<String> {
        let mut removed = Vec::new();
        for e in self.dir.entries().unwrap_or_default() {
            if e != keep && e != WORK && self.dir.remove_tree(&e).is_ok() {
                removed.push(e);
            }
        }
        if !removed.is_empty() {
            self.dir.sync();
        }
        removed
    }

    /// Removes every partial download but the one of `keep`.
    pub(super) fn prune_partials(&self, keep: &str) -> Result<()> {
        let work = self.work()?;
        for e in work.entries().unwrap_or_default() {
            if e != keep {
                let _ = work.remove_tree(&e);
            }
        }
        Ok(())
    }

    pub(super) fn check_space(&self, needed: u64) -> Result<()> {
        let st = nix::sys::statvfs::fstatvfs(self.dir.as_fd()).map_err(|e| {
            Error::DownloadFailed(format!(
                "cannot read free space of {}: {e}",
                self.path().display()
            ))
        })?;
        let free = free_bytes(&st);
        if free < space_needed(needed) {
            return Err(Error::DiskFull(format!(
                "staging needs {} MiB in {} but only {} MiB are free; free some space or move \
                 [daemon] state_dir",
                space_needed(needed).div_ceil(1 << 20),
                self.path().display(),
                free >> 20
            )));
        }
        Ok(())
    }
}
