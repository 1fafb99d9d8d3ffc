//! Staging: bring one release into `<state>/staged/<version>/` and prove it genuine before it
//! counts as staged (invariants I2, I3, I6, I8, I9).
//!
//! Layout under the staging directory (root-owned, mode 0700, reached through descriptors):
//! - `.work/<version>/binary.part` + `source.json`: a download in progress; kept after a
//!   network interruption so the next attempt resumes with a `Range` request. Only the newest
//!   partial is kept.
//! - `<version>/cells` + `manifest.json`: a staged release. The directory appears by one
//!   rename, after checksum, signature and probe passed, so a manifest is never partial.
//!
//! The bytes come from the network helper (the daemon opens no socket) through a pipe, or
//! from a descriptor a caller passed; either way they are hashed while they are written.

pub use crate::cancel::Cancel;
use crate::dirfd::Dir;
use crate::error::{Error, Result};
use crate::helper::protocol::Frame;
use crate::helper::{Request, Runner};
use crate::net::{FetchMeta, FetchRequest};
use crate::probe;
use crate::trust::{self, Sha256Digest, TrustedKeys};
use crate::update_server::{Offer, ServerSettings};
use crate::version::{CellsVersion, VersionBounds};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod area;
mod release;
mod sink;
pub use area::StagingArea;
use area::{io_fail, PartialOrigin};
pub use release::{FdMetadata, Manifest, Release};
use sink::{copy_file_into, Sink};

/// Name of the staged binary inside its version directory.
pub const BINARY_NAME: &str = "cells";
const PART: &str = "binary.part";
const SOURCE: &str = "source.json";
const MANIFEST: &str = "manifest.json";
const WORK: &str = ".work";
/// Room kept free beyond the binary itself (manifest, journal, filesystem slack).
const SPACE_MARGIN: u64 = 1 << 20;

/// The free space staging a binary of `size` bytes needs in the state directory: the rule
/// the daemon applies before it writes, and the one `doctor` reports against.
pub fn space_needed(size: u64) -> u64 {
    size.saturating_add(SPACE_MARGIN)
}

/// The bytes an unprivileged writer may still use on the filesystem `st` describes (what
/// [`space_needed`] is held against).
pub fn free_bytes(st: &nix::sys::statvfs::Statvfs) -> u64 {
    st.blocks_available().saturating_mul(st.fragment_size())
}
/// Read size for files and the depth of the download→writer queue (bounds memory).
const CHUNK: usize = 256 * 1024;
const QUEUE_DEPTH: usize = 16;

/// Which part of staging is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagePhase {
    /// Bytes are arriving.
    Downloading,
    /// Checksum and signature.
    Verifying,
    /// ELF check and version run.
    Probing,
}

/// A progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The phase.
    pub phase: StagePhase,
    /// Bytes received so far (including a resumed prefix).
    pub done: u64,
    /// Bytes expected.
    pub total: u64,
}

/// Stages releases: download or copy, hash while streaming, verify, probe, commit.
#[derive(Debug, Clone)]
pub struct Stager {
    /// Where staged releases live.
    pub area: StagingArea,
    /// Keys a signature must verify against.
    pub keys: TrustedKeys,
    /// How helpers (network, probe) run.
    pub runner: Runner,
    /// Largest binary accepted, bytes.
    pub max_binary_size: u64,
    /// A download must average at least this many bytes per second…
    pub min_rate: u64,
    /// …and may take at least this long (60 s in production).
    pub min_deadline: Duration,
    /// Over every `rate_window` (after the first), at least this many bytes per second.
    pub window_rate: u64,
    /// The sliding window of `window_rate`.
    pub rate_window: Duration,
}

/// Why a download stopped early, and whether its partial file is worth keeping.
enum Abort {
    /// Network interruption: keep the partial for a resumed attempt.
    Interrupted(Error),
    /// Anything else: drop the partial.
    Fatal(Error),
}

impl Stager {
    /// Downloads `release` into the staging area and proves it genuine; returns its manifest.
    /// Staging a version that is already staged with the same checksum is a no-op.
    pub async fn stage_release(
        &self,
        server: &ServerSettings,
        release: &Release,
        bounds: &VersionBounds,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<Manifest> {
        bounds.admit(&release.version)?;
        if release.size > self.max_binary_size {
            return Err(Error::DownloadFailed(format!(
                "release {} advertises {} bytes, more than [server] max_binary_size ({} bytes); \
                 raise the limit if this size is expected",
                release.version, release.size, self.max_binary_size
            )));
        }
        self.require_keys()?;
        if let Some(m) =
            self.already_staged(&release.version, &release.checksum, release.package)?
        {
            return Ok(m);
        }
        let name = release.version.to_string();
        self.area.prune_partials(&name)?;
        let source = PartialOrigin {
            url: release.url.to_string(),
            sha256: release.checksum,
            size: release.size,
        };
        let work = Arc::new(self.prepare_work_dir(&name, &source)?);
        let resume_from = work
            .stat_at(PART)
            .ok()
            .flatten()
            .map_or(0, |s| s.st_size as u64);
        let result = self
            .download(server, release, work.clone(), resume_from, progress, cancel)
            .await;
        let (digest, size) = match result {
            Ok(r) => r,
            Err(Abort::Interrupted(e)) => return Err(e),
            Err(Abort::Fatal(e)) => {
                self.discard(&name);
                return Err(e);
            }
        };
        let outcome = self
            .verify_and_commit(
                &work,
                Checked {
                    version: &release.version,
                    package: release.package,
                    expected: &release.checksum,
                    signature: &release.signature,
                    digest,
                    size,
                    source: release.url.to_string(),
                },
                progress,
                cancel,
            )
            .await;
        if outcome.is_err() {
            self.discard(&name);
        }
        outcome
    }

    /// Stages a binary the caller passed as an open file: copied from the descriptor (never
    /// re-opened by path), then the same checks as a download.
    pub async fn stage_from_file(
        &self,
        file: File,
        meta: &FdMetadata,
        default_package: crate::package::Package,
        bounds: &VersionBounds,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<Manifest> {
        let (version, expected) = (meta.version.clone(), meta.checksum);
        let signature = meta.signature.clone();
        let package = meta.package.unwrap_or(default_package);
        bounds.admit(&version)?;
        self.require_keys()?;
        let stat = file
            .metadata()
            .map_err(|e| Error::Internal(format!("cannot inspect the file descriptor: {e}")))?;
        if !stat.is_file() {
            return Err(Error::InvalidArgument(
                "the file descriptor is not a regular file".into(),
            ));
        }
        if stat.len() > self.max_binary_size {
            return Err(Error::InvalidArgument(format!(
                "the offered file has {} bytes, more than [server] max_binary_size ({} bytes)",
                stat.len(),
                self.max_binary_size
            )));
        }
        // No shortcut for an already staged version: the offered bytes are always verified, so
        // a caller is never told that a file it sent passed when it was not read.
        self.area.check_space(stat.len())?;
        let name = version.to_string();
        self.area.prune_partials(&name)?;
        self.discard(&name);
        let work = Arc::new(
            self.area
                .work()?
                .subdir(&name, Some(0o700))
                .map_err(io_fail(format!(
                    "cannot prepare the work directory of {name}"
                )))?,
        );
        let total = stat.len();
        let max = self.max_binary_size;
        let copied = {
            let work = work.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || copy_file_into(file, &work, max, total, &cancel))
                .await
                .map_err(|e| Error::DownloadFailed(format!("copy task failed: {e}")))
                .and_then(|r| r)
        };
        let (digest, size) = match copied {
            Ok(r) => r,
            Err(e) => {
                self.discard(&name);
                return Err(e);
            }
        };
        progress(Progress {
            phase: StagePhase::Downloading,
            done: size,
            total: size,
        });
        let outcome = self
            .verify_and_commit(
                &work,
                Checked {
                    version: &version,
                    package,
                    expected: &expected,
                    signature: &signature,
                    digest,
                    size,
                    source: format!("fd:{}", meta.offered_by),
                },
                progress,
                cancel,
            )
            .await;
        if outcome.is_err() {
            self.discard(&name);
        }
        outcome
    }

    fn require_keys(&self) -> Result<()> {
        if self.keys.is_empty() {
            return Err(Error::NoTrustedKey(
                "no trusted key is configured; put the publisher's public key (PEM) in \
                 [server] keys_dir before staging"
                    .into(),
            ));
        }
        Ok(())
    }

    fn already_staged(
        &self,
        v: &CellsVersion,
        checksum: &Sha256Digest,
        package: crate::package::Package,
    ) -> Result<Option<Manifest>> {
        match self.area.manifest(v) {
            Some(m) if m.sha256 == *checksum && m.package == package => Ok(Some(m)),
            Some(_) => {
                // Same version, other bytes or another edition's record (a StageFromFd that
                // named the other one): the old staging is stale; stage afresh.
                self.area.remove(v)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn discard(&self, name: &str) {
        if let Ok(work) = self.area.work() {
            let _ = work.remove_tree(name);
            work.sync();
        }
    }

    /// Readies the work directory of `name`; a partial download of the same source is kept
    /// for a resumed attempt, anything else is cleared.
    fn prepare_work_dir(&self, name: &str, source: &PartialOrigin) -> Result<Dir> {
        let fail = io_fail(format!("cannot prepare the work directory of {name}"));
        let workroot = self.area.work()?;
        if let Ok(work) = workroot.subdir(name, None) {
            let previous: Option<PartialOrigin> = work
                .read(SOURCE, 1 << 16)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let part_len = work.stat_at(PART).ok().flatten().map(|s| s.st_size as u64);
            if previous.as_ref() == Some(source) && part_len.is_some_and(|l| l < source.size) {
                return Ok(work);
            }
        }
        workroot.remove_tree(name).map_err(&fail)?;
        let work = workroot.subdir(name, Some(0o700)).map_err(&fail)?;
        let json = serde_json::to_vec(source).map_err(|e| Error::DownloadFailed(e.to_string()))?;
        work.write_atomic(SOURCE, &json, 0o600).map_err(&fail)?;
        Ok(work)
    }

    async fn download(
        &self,
        server: &ServerSettings,
        release: &Release,
        work: Arc<Dir>,
        resume_from: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> std::result::Result<(Sha256Digest, u64), Abort> {
        let version = &release.version;
        let fatal = |what: String| {
            Abort::Fatal(Error::DownloadFailed(format!(
                "downloading {version} from {}: {what}",
                release.url
            )))
        };
        self.area
            .check_space(release.size - resume_from)
            .map_err(Abort::Fatal)?;
        let req = FetchRequest {
            url: release.url.to_string(),
            server_url: server.url.clone(),
            download_hosts: server.download_hosts.clone(),
            offset: resume_from,
            size: release.size,
            min_rate: self.min_rate,
            min_deadline_secs: self.min_deadline.as_secs(),
            window_rate: self.window_rate,
            window_secs: self.rate_window.as_secs(),
            read_timeout_secs: server.timeout.as_secs().max(1),
            proxy: server.proxy.clone(),
        };
        let mut fetch = self
            .runner
            .start(Request::Fetch(req))
            .await
            .map_err(Abort::Fatal)?;
        let mut interrupted = false;
        // The first frame says where the bytes start (or the fetch failed at once).
        let offset = loop {
            // Cancel is seen here too, while the server has not even answered yet.
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    return Err(Abort::Fatal(Error::Cancelled(
                        "the job was cancelled before anything was changed".into(),
                    )))
                }
                f = fetch.next() => f,
            };
            match next.map_err(|e| Abort::Interrupted(helper_broke(version, e)))? {
                Frame::Meta(m) => match serde_json::from_value::<FetchMeta>(m) {
                    Ok(FetchMeta::Interrupted(_)) => interrupted = true,
                    Ok(FetchMeta::Start(s)) if s == 0 || s == resume_from => break s,
                    Ok(FetchMeta::Start(_)) => {
                        return Err(fatal("the download started at an unexpected offset".into()))
                    }
                    Err(_) => return Err(fatal("the helper sent metadata it should not".into())),
                },
                Frame::Data(_) => return Err(fatal("bytes arrived before their offset".into())),
                Frame::Result(Err(e)) if interrupted => {
                    return Err(Abort::Interrupted(resumable(e)))
                }
                Frame::Result(Err(e)) => return Err(Abort::Fatal(e)),
                Frame::Result(Ok(_)) => {
                    return Err(fatal("the download ended before it began".into()))
                }
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE_DEPTH);
        // Written buffers come back for the next frames.
        let (used_tx, used_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_DEPTH + 2);
        let writer = {
            let work = work.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<(Sha256Digest, u64)> {
                let mut sink = Sink::open(&work, offset)?;
                while let Some(chunk) = rx.blocking_recv() {
                    sink.write(&chunk)?;
                    // Never waits: a full return channel just drops the buffer.
                    let _ = used_tx.try_send(chunk);
                }
                sink.finish()
            })
        };
        let mut done = offset;
        let mut stop: Option<Abort> = None;
        progress(Progress {
            phase: StagePhase::Downloading,
            done,
            total: release.size,
        });
        loop {
            if let Err(e) = cancel.check() {
                stop = Some(Abort::Fatal(e));
                break;
            }
            while let Ok(buf) = used_rx.try_recv() {
                fetch.give_back(buf);
            }
            // A server that trickles sends a frame rarely: Cancel is seen within 100 ms
            // whatever it does (the helper is stopped; the bytes written so far are kept for a
            // resumed attempt, a frame cut short is simply not written).
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    stop = Some(Abort::Fatal(Error::Cancelled(
                        "the job was cancelled before anything was changed".into(),
                    )));
                    break;
                }
                f = fetch.next() => f,
            };
            match next {
                Ok(Frame::Data(chunk)) => {
                    if done + chunk.len() as u64 > release.size {
                        stop = Some(fatal(format!(
                            "the server sent more than the advertised {} bytes; refusing it",
                            release.size
                        )));
                        break;
                    }
                    done += chunk.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    progress(Progress {
                        phase: StagePhase::Downloading,
                        done,
                        total: release.size,
                    });
                }
                Ok(Frame::Meta(m)) => {
                    if matches!(serde_json::from_value(m), Ok(FetchMeta::Interrupted(_))) {
                        interrupted = true;
                    }
                }
                Ok(Frame::Result(Ok(_))) => break,
                Ok(Frame::Result(Err(e))) => {
                    stop = Some(if interrupted {
                        Abort::Interrupted(resumable(e))
                    } else {
                        Abort::Fatal(e)
                    });
                    break;
                }
                Err(e) => {
                    stop = Some(Abort::Interrupted(resumable(helper_broke(version, e))));
                    break;
                }
            }
        }
        drop(tx);
        drop(fetch);
        let written = writer
            .await
            .map_err(|e| fatal(format!("writer task failed: {e}")))?;
        let (digest, size) = written.map_err(|e| {
            Abort::Fatal(Error::from_io(
                &e,
                &format!("writing {}", work.path().join(PART).display()),
                Error::DownloadFailed,
            ))
        })?;
        if let Some(stop) = stop {
            return Err(stop);
        }
        if size < release.size {
            return Err(Abort::Interrupted(Error::DownloadFailed(format!(
                "downloading {version}: the connection closed after {size} of {} bytes; staging \
                 it again resumes the download",
                release.size
            ))));
        }
        Ok((digest, size))
    }

    async fn verify_and_commit(
        &self,
        work: &Dir,
        c: Checked<'_>,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<Manifest> {
        cancel.check()?;
        progress(Progress {
            phase: StagePhase::Verifying,
            done: c.size,
            total: c.size,
        });
        trust::check_checksum(&c.digest, c.expected)?;
        let key = self.keys.verify(&c.digest, c.signature)?;
        cancel.check()?;
        progress(Progress {
            phase: StagePhase::Probing,
            done: c.size,
            total: c.size,
        });
        let fail = io_fail("preparing the staged binary".into());
        let part = work.open_rw(PART, false).map_err(&fail)?;
        nix::sys::stat::fchmod(
            part.as_fd(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
        .map_err(|e| fail(e.into()))?;
        drop(part);
        work.rename(PART, BINARY_NAME).map_err(&fail)?;
        let file = work.open_file(BINARY_NAME).map_err(&fail)?.file;
        // The bytes that are probed are the bytes that were hashed: same directory, never
        // writable by anyone but root, opened without following links.
        probe::check_version(&self.runner, &file, c.version).await?;
        probe::check_edition(&self.runner, &file, c.package).await?;
        cancel.check()?;
        let manifest = Manifest {
            version: c.version.clone(),
            package: c.package,
            sha256: c.digest,
            size: c.size,
            key_id: key.id.clone(),
            source: c.source,
            staged_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let workroot = self.area.work()?;
        let commit = || -> std::io::Result<()> {
            work.remove(SOURCE)?;
            let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
            work.write_atomic(MANIFEST, &json, 0o600)?;
            let name = c.version.to_string();
            self.area.dir.remove_tree(&name)?;
            workroot.rename_to(&name, &self.area.dir, &name)?;
            self.area.dir.sync();
            Ok(())
        };
        commit().map_err(|e| {
            Error::from_io(&e, "recording the staged release", Error::DownloadFailed)
        })?;
        Ok(manifest)
    }
}

/// The fetch helper's stream broke (it died, ran out of time, or sent something malformed):
/// a download failure, whatever the helper layer called it.
fn helper_broke(version: &CellsVersion, e: Error) -> Error {
    match e {
        Error::InvalidArgument(m) | Error::Internal(m) => {
            Error::DownloadFailed(format!("downloading {version}: {m}"))
        }
        other => other,
    }
}

/// A helper's failure while the partial is kept: say that staging again resumes.
fn resumable(e: Error) -> Error {
    match e {
        Error::DownloadFailed(m) => {
            Error::DownloadFailed(format!("{m}; staging it again resumes the download"))
        }
        other => other,
    }
}

struct Checked<'a> {
    version: &'a CellsVersion,
    package: crate::package::Package,
    expected: &'a Sha256Digest,
    signature: &'a [u8],
    digest: Sha256Digest,
    size: u64,
    source: String,
}
