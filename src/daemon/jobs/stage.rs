//! The stage job (Stage, StageFromFd, the first half of Update), and what asking the update
//! server involves: the request, the verdict on every offer, `UpdateAvailable`.

use super::Ctx;
use crate::daemon::job::{JobHandle, Phase};
use crate::daemon::{now_us, Daemon, ManagerIface, MANAGER_PATH};
use crate::error::{Error, Result};
use crate::log;
use crate::policy::{self, Assessed};
use crate::stage::{FdMetadata, Manifest, Progress, Release, StagePhase};
use crate::state::Lifecycle;
use crate::update_server::{self, UpdateRequest};
use crate::version::{CellsVersion, VersionBounds};
use std::sync::Arc;
use std::time::Duration;

/// How many allowed versions `AvailableVersions` (and the state) keeps.
pub(in crate::daemon) const MAX_AVAILABLE: usize = 32;

/// Where a stage job gets its binary.
pub(in crate::daemon) enum StageFrom {
    /// The update server; `None` = the newest allowed version; `true`: past the pin and
    /// the release age (`Force`).
    Server(Option<CellsVersion>, bool),
    /// A descriptor passed by the caller, with its metadata.
    File(std::fs::File, FdMetadata),
}

/// The job's message for a staged release.
pub(in crate::daemon) fn summary(m: &Manifest) -> String {
    format!(
        "staged {} ({} bytes, sha256 {}, signed by key {})",
        m.version,
        m.size,
        crate::trust::encode_checksum(&m.sha256),
        crate::trust::keys_short_id(&m.key_id)
    )
}

impl Daemon {
    /// Asks the update server and judges every offer against `floor` (the caller has just
    /// probed the installed binary; it is not probed twice).
    pub(in crate::daemon) async fn check_now(
        &self,
        bounds: &VersionBounds,
        package: Option<crate::package::Package>,
        channel: Option<crate::package::Channel>,
        force: bool,
    ) -> Result<Vec<Assessed>> {
        let package = match package {
            Some(p) => p,
            None => self.package().await,
        };
        let server = self.effective_server().await;
        let channel = channel.unwrap_or(server.channel);
        let installed = bounds
            .installed
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let mut request = UpdateRequest::new(channel, package, &installed);
        if package == crate::package::Package::Enterprise {
            if let Some(key) = self.license_key().await? {
                request.license_info.insert("Key".into(), key);
            }
        }
        let settings = self.server_settings(&server);
        let resp = update_server::check(&self.runner, &settings, &request).await?;
        let bad = self.store.lock().await.get().bad_versions.clone();
        let ctx = policy::Context {
            package,
            bounds,
            bad: &bad,
            max_binary_size: self.cfg.max_binary_size,
            server_url: &server.url,
            download_hosts: &self.cfg.download_hosts,
            now: jiff::Timestamp::now().as_second(),
            min_age: self.cfg.min_release_age,
            pin: self.pin().await,
            force,
        };
        Ok(resp
            .available_binaries
            .iter()
            .map(|p| policy::assess(p, &ctx))
            .collect())
    }

    /// The update server's settings in force: explicit settings, else Cells' own pydio.json
    /// (read as the Cells user), else the defaults.
    pub(in crate::daemon) async fn effective_server(&self) -> crate::settings::Effective {
        let cells = if self.cfg.follow_cells_config {
            self.cells_settings().await
        } else {
            None
        };
        let e = crate::settings::effective(&self.cfg, cells.as_ref());
        if let Ok(mut cached) = self.effective.lock() {
            *cached = Some(e.clone());
        }
        e
    }

    /// The channel in force, learnt now when it was not yet.
    pub(in crate::daemon) async fn channel_settled(&self) -> crate::package::Channel {
        let known = || self.effective.lock().ok().is_some_and(|e| e.is_some());
        if known() {
            return self.channel();
        }
        let _one = self.settling.lock().await;
        if known() {
            self.channel()
        } else {
            self.effective_server().await.channel
        }
    }

    /// The channel in force, as last learnt (the configured one until then).
    pub(in crate::daemon) fn channel(&self) -> crate::package::Channel {
        self.effective
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|e| e.channel))
            .unwrap_or(self.cfg.channel)
    }

    /// What Cells' pydio.json says about updates, when it can be read.
    pub(in crate::daemon) async fn cells_settings(
        &self,
    ) -> Option<crate::cells_config::CellsUpdateSettings> {
        let at = self.license_location().await.ok()?;
        match crate::cells_config::read(&self.runner, &at.dir, &at.user, &at.group).await {
            Ok(s) => s,
            Err(e) => {
                log::log(
                    log::Level::Warning,
                    &format!("Cells' pydio.json is not followed: {}", e.message()),
                    &[],
                );
                None
            }
        }
    }

    /// The update server as helpers reach it.
    pub(in crate::daemon) fn server_settings(
        &self,
        e: &crate::settings::Effective,
    ) -> update_server::ServerSettings {
        update_server::ServerSettings {
            url: e.url.clone(),
            ..self.cfg.server_settings()
        }
    }

    /// Records a check's result (at most the newest [`MAX_AVAILABLE`] allowed versions);
    /// returns the allowed versions that are new.
    pub(in crate::daemon) async fn record_check(
        &self,
        assessed: &[Assessed],
    ) -> Result<Vec<String>> {
        // The newest few only: a server listing thousands cannot bloat the state or flood
        // the bus with signals.
        let allowed = policy::newest_allowed(assessed, MAX_AVAILABLE);
        let mut store = self.store.lock().await;
        let before = store.get().available_versions.clone();
        store.update(|d| {
            d.available_versions = allowed.clone();
            d.last_check = now_us();
        })?;
        Ok(allowed
            .into_iter()
            .filter(|v| !before.contains(v))
            .map(|v| v.to_string())
            .collect())
    }

    /// Emits `UpdateAvailable` for each new allowed version.
    pub(in crate::daemon) async fn announce(&self, versions: &[String]) {
        let Ok(conn) = self.conn() else { return };
        let Ok(emitter) = zbus::object_server::SignalEmitter::new(conn, MANAGER_PATH) else {
            return;
        };
        for v in versions {
            let _ = ManagerIface::update_available(&emitter, v).await;
            log::info(&format!("update available: {v}"), &[("VERSION", v)]);
        }
    }
}

/// Picks the release to stage: `wanted`, or the newest allowed.
pub(in crate::daemon) fn choose<'a>(
    assessed: &'a [Assessed],
    wanted: Option<&CellsVersion>,
    server: &str,
) -> Result<&'a Assessed> {
    let Some(v) = wanted else {
        return assessed
            .iter()
            .filter(|a| a.allowed())
            .max_by(|a, b| a.version.cmp(&b.version))
            .ok_or_else(|| {
                Error::NoSuchVersion("no newer version is available; nothing to stage".into())
            });
    };
    let offers: Vec<&Assessed> = assessed
        .iter()
        .filter(|a| a.version.as_ref() == Some(v))
        .collect();
    if let Some(a) = offers.iter().find(|a| a.allowed()) {
        return Ok(a);
    }
    match offers.first() {
        None => Err(Error::NoSuchVersion(format!(
            "{v} is not offered by the update server {server} for this package, channel and \
             architecture; run Check to see what is offered"
        ))),
        Some(a) => Err(a.refusal(v)),
    }
}

/// Forwards staging progress to the job's properties, in order (a phase change is a state
/// change and must not be lost) but sparsely: phase changes and whole-percent steps only, so
/// the queue holds about a hundred events at most; each batch is applied, then the reporter
/// rests 100 ms, so the bus sees a bounded rate of `PropertiesChanged`.
pub(in crate::daemon) struct Reporter {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
    task: tokio::task::JoinHandle<()>,
    sent: Option<(StagePhase, u64)>,
}

fn phase_of(p: StagePhase) -> Phase {
    match p {
        StagePhase::Downloading => Phase::Downloading,
        StagePhase::Verifying => Phase::Verifying,
        StagePhase::Probing => Phase::Probing,
    }
}

impl Reporter {
    pub(in crate::daemon) fn start(d: Arc<Daemon>, job: Arc<JobHandle>) -> Reporter {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let task = tokio::spawn(async move {
            let mut phase = StagePhase::Downloading;
            let mut closed = false;
            while let Some(first) = rx.recv().await {
                // Whatever arrives within 100 ms of the last report joins this batch; the end
                // of the stream ends the wait at once.
                let until = tokio::time::Instant::now() + Duration::from_millis(100);
                let mut batch = vec![first];
                loop {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(p)) => batch.push(p),
                        Ok(None) => {
                            closed = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let mut last = first;
                for p in &batch {
                    if p.phase != phase {
                        if p.phase == StagePhase::Verifying {
                            let _ = d.store.lock().await.transition(Lifecycle::Verifying);
                        }
                        let data = job.data();
                        log::info(
                            &format!(
                                "job {}: {} {}",
                                job.id,
                                phase_of(p.phase).as_str(),
                                data.version
                            ),
                            &[
                                ("JOB_ID", &job.id.to_string()),
                                ("VERSION", &data.version),
                                ("PHASE", phase_of(p.phase).as_str()),
                            ],
                        );
                    }
                    phase = p.phase;
                    last = *p;
                }
                job.update(|d| {
                    d.phase = phase_of(last.phase);
                    d.bytes_done = last.done;
                    d.bytes_total = last.total;
                    d.percent = last
                        .done
                        .saturating_mul(100)
                        .checked_div(last.total)
                        .unwrap_or(0)
                        .min(100) as u32;
                })
                .await;
                d.publish().await;
                if closed {
                    break;
                }
            }
        });
        Reporter {
            tx: Some(tx),
            task,
            sent: None,
        }
    }

    /// Queues a progress report (dropped unless the phase or the whole percent changed).
    pub(in crate::daemon) fn report(&mut self, p: Progress) {
        let step = (
            p.phase,
            p.done.saturating_mul(100).checked_div(p.total).unwrap_or(0),
        );
        if self.sent != Some(step) {
            self.sent = Some(step);
            if let Some(tx) = &self.tx {
                let _ = tx.send(p);
            }
        }
    }

    /// Waits until every report reached the job.
    pub(in crate::daemon) async fn finish(mut self) {
        self.tx = None;
        let _ = (&mut self.task).await;
    }
}

/// Stages one release (from the server or a descriptor) and keeps it as the only staged one.
pub(in crate::daemon) async fn run(ctx: &Ctx, source: StageFrom) -> Result<Manifest> {
    let d = &ctx.d;
    ctx.set_state(Lifecycle::Downloading).await?;
    let mut reporter = Reporter::start(d.clone(), ctx.job.clone());
    let bounds = d.bounds().await?;
    let cancel = &ctx.job.cancel;
    let result = match source {
        StageFrom::Server(wanted, force) => {
            let assessed = d.check_now(&bounds, None, None, force).await?;
            let new = d.record_check(&assessed).await?;
            d.announce(&new).await;
            let server = d.effective_server().await;
            let chosen = choose(&assessed, wanted.as_ref(), &server.url)?;
            let release = Release::from_offer(
                &chosen.package,
                d.package().await,
                &server.url,
                &d.cfg.download_hosts,
            )?;
            ctx.job
                .update(|j| j.version = release.version.to_string())
                .await;
            d.stager
                .stage_release(
                    &d.server_settings(&server),
                    &release,
                    &bounds,
                    &mut |p| reporter.report(p),
                    cancel,
                )
                .await
        }
        StageFrom::File(file, meta) => {
            let package = d.package().await;
            refuse_bad(d, meta.package.unwrap_or(package), &meta.version).await?;
            d.stager
                .stage_from_file(
                    file,
                    &meta,
                    package,
                    &bounds,
                    &mut |p| reporter.report(p),
                    cancel,
                )
                .await
        }
    };
    reporter.finish().await;
    let manifest = result?;
    record_staged(d, &manifest).await?;
    Ok(manifest)
}

/// Records `manifest` as the one staged release, then removes the others: a crash in between
/// leaves a recorded release and strays that the start-up reconciliation removes, never
/// nothing.
pub(in crate::daemon) async fn record_staged(d: &Daemon, manifest: &Manifest) -> Result<()> {
    {
        let mut store = d.store.lock().await;
        store.update(|s| s.staged_version = Some(manifest.version.clone()))?;
        store.transition(Lifecycle::Staged)?;
    }
    for m in d.stager.area.staged() {
        if m.version != manifest.version {
            let _ = d.stager.area.remove(&m.version);
        }
    }
    d.publish().await;
    Ok(())
}

/// A version that failed its health check here is not staged again.
pub(in crate::daemon) async fn refuse_bad(
    d: &Daemon,
    package: crate::package::Package,
    v: &CellsVersion,
) -> Result<()> {
    let bad = d.store.lock().await.get().bad_versions.clone();
    if policy::is_bad(&bad, package, v) {
        return Err(Error::NoSuchVersion(format!(
            "{package} {v} failed its health check here before and is marked bad; it is not \
             installed again"
        )));
    }
    Ok(())
}
