//! Staging: bring one release into `<state>/staged/<version>/` and prove it genuine before it
//! counts as staged (invariants I2, I3, I6, I8).
//!
//! Layout under the staging directory (root-owned, mode 0700):
//! - `.work/<version>/binary.part` + `source.json`: a download in progress; kept after a
//!   network interruption so the next attempt resumes with a `Range` request.
//! - `<version>/cells` + `manifest.json`: a staged release. The directory appears by one
//!   rename, after checksum, signature and probe passed, so a manifest is never partial.

use crate::error::{Error, Result};
use crate::probe::{self, ProbeSettings};
use crate::trust::{self, Sha256Digest, TrustedKeys};
use crate::update_server::{error_chain, Package};
use crate::version::{CellsVersion, VersionFloor};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Name of the staged binary inside its version directory.
pub const BINARY_NAME: &str = "cells";
/// Room kept free beyond the binary itself (manifest, journal, filesystem slack).
const SPACE_MARGIN: u64 = 1 << 20;
/// Read size for files and the depth of the download→writer queue (bounds memory).
const CHUNK: usize = 256 * 1024;
const QUEUE_DEPTH: usize = 16;

/// A release from the update server, checked for form (not yet for trust).
#[derive(Debug, Clone)]
pub struct Release {
    /// The advertised version.
    pub version: CellsVersion,
    /// `PydioHome` or `PydioEnterprise`.
    pub package: String,
    /// Where the binary is downloaded from.
    pub url: reqwest::Url,
    /// Advertised SHA-256 of the whole binary.
    pub checksum: Sha256Digest,
    /// Signature over that digest.
    pub signature: Vec<u8>,
    /// Advertised size in bytes.
    pub size: u64,
}

impl Release {
    /// Checks the form of a package: a Cells version, an http(s) URL, a 32-byte checksum, a
    /// signature and a size.
    pub fn from_package(p: &Package) -> Result<Release> {
        let version = CellsVersion::parse(&p.version)?;
        let url = reqwest::Url::parse(&p.binary_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Error::ServerError(format!(
                    "release {version} has no usable BinaryURL ({:?})",
                    p.binary_url
                ))
            })?;
        let checksum = trust::decode_checksum(&p.binary_checksum)?;
        let signature = trust::decode_b64("the signature", &p.binary_signature)
            .map_err(|e| Error::SignatureInvalid(e.message()))?;
        if signature.is_empty() {
            return Err(Error::SignatureInvalid(format!(
                "release {version} carries no signature; unsigned binaries are never installed"
            )));
        }
        if p.binary_size <= 0 {
            return Err(Error::ServerError(format!(
                "release {version} advertises no BinarySize; it cannot be downloaded safely"
            )));
        }
        Ok(Release {
            version,
            package: p.package_name.clone(),
            url,
            checksum,
            signature,
            size: p.binary_size as u64,
        })
    }
}

/// What was staged, recorded atomically once every check passed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The version, as the binary itself reported it.
    pub version: String,
    /// Package name.
    pub package: String,
    /// Base64 SHA-256 of the staged binary.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Id of the key whose signature verified.
    pub key_id: String,
    /// The URL or `fd:<caller>` it came from.
    pub source: String,
    /// When it was staged, unix seconds.
    pub staged_at: u64,
}

/// Metadata offered with a binary passed as a file descriptor (`StageFromFd`).
#[derive(Debug, Clone, Default)]
pub struct FdMetadata {
    /// `Version`.
    pub version: String,
    /// `Checksum`, base64 of the raw SHA-256.
    pub checksum: String,
    /// `Signature`, base64.
    pub signature: String,
    /// `PackageName`; empty = the configured package.
    pub package: String,
    /// Who offered it, for the manifest (e.g. `uid 1000`).
    pub offered_by: String,
}

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

/// Shared cancel flag: set by `Job.Cancel()`, checked between chunks.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A fresh, unset flag.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled(
                "staging was cancelled; nothing was staged".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// The staging directory.
#[derive(Debug, Clone)]
pub struct StagingArea {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Source {
    url: String,
    sha256: String,
    size: u64,
}

impl StagingArea {
    /// The staging area of a state directory: `<state>/staged`.
    pub fn new(state_dir: &Path) -> Self {
        StagingArea {
            dir: state_dir.join("staged"),
        }
    }

    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (and `.work`) with mode 0700, owned by this process's user; an
    /// existing one owned by someone else is refused.
    pub fn ensure(&self) -> Result<()> {
        for d in [self.dir.clone(), self.dir.join(".work")] {
            let fail = |e: std::io::Error| {
                Error::from_io(
                    &e,
                    &format!("cannot prepare {}", d.display()),
                    Error::DownloadFailed,
                )
            };
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(fail)?;
            let meta = fs::symlink_metadata(&d).map_err(fail)?;
            if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
                return Err(Error::DownloadFailed(format!(
                    "{} is not a directory owned by this service's user; remove it and retry",
                    d.display()
                )));
            }
            if meta.mode() & 0o777 != 0o700 {
                fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Directory of a staged version.
    pub fn version_dir(&self, v: &CellsVersion) -> PathBuf {
        self.dir.join(v.to_string())
    }

    /// Path of a staged version's binary.
    pub fn binary(&self, v: &CellsVersion) -> PathBuf {
        self.version_dir(v).join(BINARY_NAME)
    }

    fn work_dir(&self, v: &CellsVersion) -> PathBuf {
        self.dir.join(".work").join(v.to_string())
    }

    /// The manifest of a staged version, if it is staged.
    pub fn manifest(&self, v: &CellsVersion) -> Option<Manifest> {
        let text = fs::read(self.version_dir(v).join("manifest.json")).ok()?;
        let m: Manifest = serde_json::from_slice(&text).ok()?;
        let size = fs::metadata(self.binary(v)).ok()?.len();
        (size == m.size).then_some(m)
    }

    /// Every staged version, oldest first.
    pub fn staged(&self) -> Vec<Manifest> {
        let mut out: Vec<(CellsVersion, Manifest)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| CellsVersion::parse(e.file_name().to_str()?).ok())
            .filter_map(|v| self.manifest(&v).map(|m| (v, m)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, m)| m).collect()
    }

    /// Removes a staged version (and any partial download of it).
    pub fn remove(&self, v: &CellsVersion) -> Result<()> {
        for d in [self.version_dir(v), self.work_dir(v)] {
            match fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::DownloadFailed(format!(
                        "cannot remove {}: {e}",
                        d.display()
                    )))
                }
            }
        }
        sync_dir(&self.dir);
        Ok(())
    }

    fn check_space(&self, needed: u64) -> Result<()> {
        let st = nix::sys::statvfs::statvfs(&self.dir).map_err(|e| {
            Error::DownloadFailed(format!(
                "cannot read free space of {}: {e}",
                self.dir.display()
            ))
        })?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < needed + SPACE_MARGIN {
            return Err(Error::DiskFull(format!(
                "staging needs {} MiB in {} but only {} MiB are free; free some space or move \
                 [daemon] state_dir",
                (needed + SPACE_MARGIN).div_ceil(1 << 20),
                self.dir.display(),
                free >> 20
            )));
        }
        Ok(())
    }
}

/// Stages releases: download or copy, hash while streaming, verify, probe, commit.
#[derive(Debug, Clone)]
pub struct Stager {
    /// Where staged releases live.
    pub area: StagingArea,
    /// Keys a signature must verify against.
    pub keys: TrustedKeys,
    /// How the version probe runs.
    pub probe: ProbeSettings,
    /// Largest binary accepted, bytes.
    pub max_binary_size: u64,
}

/// Why a download stopped early, and whether its partial file is worth keeping.
enum Stop {
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
        http: &reqwest::Client,
        release: &Release,
        floor: &VersionFloor,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<Manifest> {
        floor.admit(&release.version)?;
        if release.size > self.max_binary_size {
            return Err(Error::DownloadFailed(format!(
                "release {} advertises {} bytes, more than [server] max_binary_size ({} bytes); \
                 raise the limit if this size is expected",
                release.version, release.size, self.max_binary_size
            )));
        }
        self.require_keys()?;
        if let Some(m) = self.already_staged(&release.version, &release.checksum)? {
            return Ok(m);
        }
        self.area.ensure()?;
        let work = self.area.work_dir(&release.version);
        let source = Source {
            url: release.url.to_string(),
            sha256: trust::encode_checksum(&release.checksum),
            size: release.size,
        };
        let resume_from = prepare_work_dir(&work, &source)?;
        let result = self
            .download(http, release, &work, resume_from, progress, cancel)
            .await;
        let (digest, size) = match result {
            Ok(r) => r,
            Err(Stop::Interrupted(e)) => return Err(e),
            Err(Stop::Fatal(e)) => {
                discard(&work);
                return Err(e);
            }
        };
        let outcome = self
            .verify_and_commit(
                &work,
                Checked {
                    version: &release.version,
                    package: &release.package,
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
            discard(&work);
        }
        outcome
    }

    /// Stages a binary the caller passed as an open file: copied from the descriptor (never
    /// re-opened by path), then the same checks as a download.
    pub async fn stage_from_file(
        &self,
        file: File,
        meta: &FdMetadata,
        default_package: &str,
        floor: &VersionFloor,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> Result<Manifest> {
        let version = CellsVersion::parse(&meta.version)?;
        let expected = trust::decode_checksum(&meta.checksum)?;
        let signature = trust::decode_b64("the signature", &meta.signature)?;
        let package = if meta.package.is_empty() {
            default_package.to_string()
        } else {
            meta.package.clone()
        };
        if !matches!(package.as_str(), "PydioHome" | "PydioEnterprise") {
            return Err(Error::InvalidArgument(format!(
                "PackageName {package:?} is not PydioHome or PydioEnterprise"
            )));
        }
        floor.admit(&version)?;
        self.require_keys()?;
        let stat = file.metadata().map_err(|e| {
            Error::InvalidArgument(format!("cannot inspect the file descriptor: {e}"))
        })?;
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
        self.area.ensure()?;
        self.area.check_space(stat.len())?;
        let work = self.area.work_dir(&version);
        discard(&work);
        let total = stat.len();
        let max = self.max_binary_size;
        let copy = {
            let work = work.clone();
            let cancel = cancel.clone();
            tokio::task::spawn_blocking(move || copy_file_into(file, &work, max, total, &cancel))
        };
        let copied = copy
            .await
            .map_err(|e| Error::DownloadFailed(format!("copy task failed: {e}")))
            .and_then(|r| r);
        let (digest, size) = match copied {
            Ok(r) => r,
            Err(e) => {
                discard(&work);
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
                    package: &package,
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
            discard(&work);
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
    ) -> Result<Option<Manifest>> {
        match self.area.manifest(v) {
            Some(m) if m.sha256 == trust::encode_checksum(checksum) => Ok(Some(m)),
            Some(_) => {
                // Same version, other bytes: the old staging is stale; stage afresh.
                self.area.remove(v)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn download(
        &self,
        http: &reqwest::Client,
        release: &Release,
        work: &Path,
        resume_from: u64,
        progress: &mut (dyn FnMut(Progress) + Send),
        cancel: &Cancel,
    ) -> std::result::Result<(Sha256Digest, u64), Stop> {
        let version = &release.version;
        let interrupted = |what: String| {
            Stop::Interrupted(Error::DownloadFailed(format!(
                "downloading {version} from {}: {what}; staging it again resumes the download",
                release.url
            )))
        };
        let fatal = |what: String| {
            Stop::Fatal(Error::DownloadFailed(format!(
                "downloading {version} from {}: {what}",
                release.url
            )))
        };
        let mut req = http.get(release.url.clone());
        if resume_from > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={resume_from}-"));
        }
        let mut resp = req.send().await.map_err(|e| interrupted(error_chain(&e)))?;
        let status = resp.status();
        let offset = match status {
            reqwest::StatusCode::OK => 0,
            reqwest::StatusCode::PARTIAL_CONTENT if resume_from > 0 => {
                match content_range_start(&resp) {
                    Some(start) if start == resume_from => resume_from,
                    _ => return Err(fatal("the server answered an unexpected range".into())),
                }
            }
            s if s.is_server_error() => {
                return Err(interrupted(format!("the server answered HTTP {s}")))
            }
            s => return Err(fatal(format!("the server answered HTTP {s}"))),
        };
        if let Some(len) = resp.content_length() {
            if offset + len > release.size {
                return Err(fatal(format!(
                    "the server announces {} bytes but {} were advertised; refusing it",
                    offset + len,
                    release.size
                )));
            }
        }
        self.area
            .check_space(release.size - offset)
            .map_err(Stop::Fatal)?;
        let part = work.join("binary.part");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE_DEPTH);
        let writer = {
            let part = part.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<(Sha256Digest, u64)> {
                let mut sink = Sink::open(&part, offset)?;
                while let Some(chunk) = rx.blocking_recv() {
                    sink.write(&chunk)?;
                }
                sink.finish()
            })
        };
        let mut done = offset;
        let mut stop: Option<Stop> = None;
        progress(Progress {
            phase: StagePhase::Downloading,
            done,
            total: release.size,
        });
        loop {
            if let Err(e) = cancel.check() {
                stop = Some(Stop::Fatal(e));
                break;
            }
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    stop = Some(interrupted(format!(
                        "the transfer broke after {done} of {} bytes ({})",
                        release.size,
                        error_chain(&e)
                    )));
                    break;
                }
            };
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
        drop(tx);
        let written = writer
            .await
            .map_err(|e| fatal(format!("writer task failed: {e}")))?;
        let (digest, size) = written.map_err(|e| {
            Stop::Fatal(Error::from_io(
                &e,
                &format!("writing {}", part.display()),
                Error::DownloadFailed,
            ))
        })?;
        if let Some(stop) = stop {
            return Err(stop);
        }
        if size < release.size {
            return Err(interrupted(format!(
                "the connection closed after {size} of {} bytes",
                release.size
            )));
        }
        Ok((digest, size))
    }

    async fn verify_and_commit(
        &self,
        work: &Path,
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
        let part = work.join("binary.part");
        let staged = work.join(BINARY_NAME);
        fs::set_permissions(&part, fs::Permissions::from_mode(0o755))
            .and_then(|_| fs::rename(&part, &staged))
            .map_err(|e| {
                Error::from_io(&e, "preparing the staged binary", Error::DownloadFailed)
            })?;
        let file = File::open(&staged)
            .map_err(|e| Error::DownloadFailed(format!("cannot open {}: {e}", staged.display())))?;
        probe::check_version(&file, c.version, &self.probe).await?;
        cancel.check()?;
        let manifest = Manifest {
            version: c.version.to_string(),
            package: c.package.to_string(),
            sha256: trust::encode_checksum(&c.digest),
            size: c.size,
            key_id: key.id.clone(),
            source: c.source,
            staged_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let commit = || -> std::io::Result<()> {
            let _ = fs::remove_file(work.join("source.json"));
            let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
            write_synced(&work.join("manifest.json"), &json)?;
            sync_dir(work);
            let target = self.area.version_dir(c.version);
            match fs::remove_dir_all(&target) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            fs::rename(work, &target)?;
            sync_dir(&self.area.dir.join(".work"));
            sync_dir(&self.area.dir);
            Ok(())
        };
        commit().map_err(|e| {
            Error::from_io(&e, "recording the staged release", Error::DownloadFailed)
        })?;
        Ok(manifest)
    }
}

struct Checked<'a> {
    version: &'a CellsVersion,
    package: &'a str,
    expected: &'a Sha256Digest,
    signature: &'a [u8],
    digest: Sha256Digest,
    size: u64,
    source: String,
}

/// Hashing writer: bytes are hashed as they are written, never held.
struct Sink {
    file: File,
    hasher: Sha256,
    written: u64,
}

impl Sink {
    /// Opens `path` for appending at `offset`; the existing prefix is hashed again (a partial
    /// is never trusted), anything past `offset` is cut.
    fn open(path: &Path, offset: u64) -> std::io::Result<Sink> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(offset == 0)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let mut hasher = Sha256::new();
        if offset > 0 {
            file.set_len(offset)?;
            hash_prefix(&mut file, &mut hasher, offset)?;
        }
        Ok(Sink {
            file,
            hasher,
            written: offset,
        })
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn finish(self) -> std::io::Result<(Sha256Digest, u64)> {
        self.file.sync_all()?;
        Ok((self.hasher.finalize().into(), self.written))
    }
}

fn hash_prefix(file: &mut File, hasher: &mut Sha256, len: u64) -> std::io::Result<()> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "partial download shrank",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

fn copy_file_into(
    mut file: File,
    work: &Path,
    max: u64,
    expected: u64,
    cancel: &Cancel,
) -> Result<(Sha256Digest, u64)> {
    let io =
        |e: std::io::Error| Error::from_io(&e, "copying the offered file", Error::DownloadFailed);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(work)
        .map_err(io)?;
    let mut sink = Sink::open(&work.join("binary.part"), 0).map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        cancel.check()?;
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if sink.written + n as u64 > max {
            return Err(Error::InvalidArgument(format!(
                "the offered file is larger than [server] max_binary_size ({max} bytes)"
            )));
        }
        sink.write(&buf[..n]).map_err(io)?;
    }
    if sink.written != expected {
        return Err(Error::InvalidArgument(format!(
            "the offered file changed size while it was read ({} bytes, expected {expected})",
            sink.written
        )));
    }
    sink.finish().map_err(io)
}

/// Readies the work directory; returns the offset to resume from (0 = fresh start).
fn prepare_work_dir(work: &Path, source: &Source) -> Result<u64> {
    let meta_path = work.join("source.json");
    let part = work.join("binary.part");
    let previous: Option<Source> = fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let part_len = fs::symlink_metadata(&part)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    if let (Some(prev), Some(len)) = (previous, part_len) {
        if prev == *source && len < source.size {
            return Ok(len);
        }
    }
    discard(work);
    let fail = |e: std::io::Error| {
        Error::from_io(
            &e,
            &format!("preparing {}", work.display()),
            Error::DownloadFailed,
        )
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(work)
        .map_err(fail)?;
    let json = serde_json::to_vec(source).map_err(|e| Error::DownloadFailed(e.to_string()))?;
    write_synced(&meta_path, &json).map_err(fail)?;
    Ok(0)
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = v.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

fn discard(work: &Path) {
    let _ = fs::remove_dir_all(work);
    if let Some(parent) = work.parent() {
        sync_dir(parent);
    }
}

/// Writes `bytes` to `path` through a temporary file: write, fsync, rename, fsync the dir.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// fsyncs a directory so renames in it are durable. Best effort: a failure here cannot undo
/// the rename, and the next write's fsync covers it.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
