//! The Manager object: `/com/pydio/CellsUpdater1`, `com.pydio.CellsUpdater1.Manager`.

use super::apply::ApplyOptions;
use super::auth::Action;
use super::errors::BusError;
use super::job;
use super::{now_us, Shared};
use crate::error::{Error, Result};
use crate::log;
use crate::policy::{self, Assessed};
use crate::stage::{Cancel, FdMetadata, Progress, Release, StagePhase};
use crate::state::Lifecycle;
use crate::update_server::{self, UpdateRequest};
use crate::version::{CellsVersion, VersionFloor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

/// The Manager object path.
pub const MANAGER_PATH: &str = "/com/pydio/CellsUpdater1";
/// The Manager interface name.
pub const MANAGER_INTERFACE: &str = "com.pydio.CellsUpdater1.Manager";

/// Options and metadata dictionaries as they arrive.
type Dict = HashMap<String, OwnedValue>;

/// The served Manager.
pub struct ManagerIface {
    pub(super) shared: Arc<Shared>,
}

fn dict_str(d: &Dict, key: &str) -> Result<Option<String>> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => String::try_from(
            v.try_clone()
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
        )
        .map(Some)
        .map_err(|_| Error::InvalidArgument(format!("option {key} must be a string (s)"))),
    }
}

/// The version argument of Stage and Update: `""` means the newest allowed.
fn requested_version(v: &str) -> Result<Option<CellsVersion>> {
    if v.is_empty() {
        Ok(None)
    } else {
        CellsVersion::parse(v).map(Some)
    }
}

fn dict_bool(d: &Dict, key: &str) -> Result<Option<bool>> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => bool::try_from(v)
            .map(Some)
            .map_err(|_| Error::InvalidArgument(format!("option {key} must be a boolean (b)"))),
    }
}

fn only_keys(d: &Dict, allowed: &[&str]) -> Result<()> {
    match d.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Error::InvalidArgument(format!(
            "unknown option {k:?}; this method accepts {}",
            if allowed.is_empty() {
                "no options".to_string()
            } else {
                allowed.join(", ")
            }
        ))),
        None => Ok(()),
    }
}

fn ov(v: Value<'_>) -> OwnedValue {
    // Invariant: plain values (strings, numbers, booleans) hold no file descriptors, the only
    // case in which try_from fails.
    OwnedValue::try_from(v).expect("plain values convert")
}

fn release_dict(a: &Assessed) -> HashMap<String, OwnedValue> {
    let p = &a.package;
    let mut d = HashMap::new();
    d.insert("Version".into(), ov(Value::from(p.version.clone())));
    d.insert(
        "PackageName".into(),
        ov(Value::from(p.package_name.clone())),
    );
    d.insert("Label".into(), ov(Value::from(p.label.clone())));
    d.insert("Description".into(), ov(Value::from(p.description.clone())));
    d.insert("ChangeLog".into(), ov(Value::from(p.change_log.clone())));
    d.insert("ReleaseDate".into(), ov(Value::from(p.release_date)));
    d.insert("Size".into(), ov(Value::from(p.binary_size.max(0) as u64)));
    d.insert("Allowed".into(), ov(Value::from(a.allowed)));
    d.insert("Reason".into(), ov(Value::from(a.reason.clone())));
    d.insert("IsPatch".into(), ov(Value::from(p.is_patch)));
    d
}

impl Shared {
    /// The Manager's properties, in contract order.
    pub(super) async fn manager_props(&self) -> Vec<(&'static str, Value<'static>)> {
        let doc = self.store.lock().await.get().clone();
        let installed = self.installed();
        let package = if doc.package_name.is_empty() {
            self.cfg.package.clone()
        } else {
            doc.package_name.clone()
        };
        vec![
            ("State", Value::from(doc.state.as_str().to_string())),
            ("InstalledVersion", Value::from(installed.version)),
            ("PackageName", Value::from(package)),
            ("Channel", Value::from(self.cfg.channel.clone())),
            ("Unit", Value::from(self.cfg.unit.clone())),
            (
                "BinaryPath",
                Value::from(
                    installed
                        .binary
                        .map(|b| b.display().to_string())
                        .unwrap_or_default(),
                ),
            ),
            ("StagedVersion", Value::from(doc.staged_version)),
            ("PreviousVersion", Value::from(doc.previous_version)),
            ("AvailableVersions", Value::from(doc.available_versions)),
            ("LastCheck", Value::from(doc.last_check)),
            ("LastError", Value::from(doc.last_error)),
            ("CurrentJob", Value::from(self.current_job())),
            (
                "DaemonVersion",
                Value::from(env!("CARGO_PKG_VERSION").to_string()),
            ),
        ]
    }

    /// Asks the update server and judges every offer against `floor` (the caller has just
    /// probed the installed binary; it is not probed twice).
    async fn check_now(
        &self,
        floor: &VersionFloor,
        package: Option<String>,
        channel: Option<String>,
    ) -> Result<Vec<Assessed>> {
        let package = match package {
            Some(p) => p,
            None => self.package().await,
        };
        let channel = channel.unwrap_or_else(|| self.cfg.channel.clone());
        let installed = floor
            .installed
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let mut request = UpdateRequest::new(&channel, &package, &installed);
        if package == "PydioEnterprise" {
            if let Some(key) = self.license_key().await {
                request.license_info.insert("Key".into(), key);
            }
        }
        let resp = update_server::check(
            self.http()?,
            &self.cfg.server_url,
            &request,
            self.cfg.timeout,
        )
        .await?;
        let bad = self.store.lock().await.get().bad_versions.clone();
        let ctx = policy::Context {
            package: &package,
            floor,
            bad: &bad,
            max_binary_size: self.cfg.max_binary_size,
        };
        let assessed: Vec<Assessed> = resp
            .available_binaries
            .iter()
            .map(|p| policy::assess(p, &ctx))
            .collect();
        Ok(assessed)
    }

    async fn record_check(&self, assessed: &[Assessed]) -> Result<Vec<String>> {
        let allowed: Vec<String> = policy::allowed_versions(assessed)
            .iter()
            .map(|v| v.to_string())
            .collect();
        let mut store = self.store.lock().await;
        let before = store.get().available_versions.clone();
        store.update(|d| {
            d.available_versions = allowed.clone();
            d.last_check = now_us();
        })?;
        Ok(allowed
            .into_iter()
            .filter(|v| !before.contains(v))
            .collect())
    }

    async fn stage_work(
        self: Arc<Self>,
        path: &OwnedObjectPath,
        source: StageSource,
        cancel: &Cancel,
    ) -> Result<String> {
        self.store.lock().await.transition(Lifecycle::Downloading)?;
        self.publish().await;
        let conn = self.conn()?.clone();
        let iface = conn
            .object_server()
            .interface::<_, job::Job>(path)
            .await
            .map_err(|e| Error::Busy(format!("job object vanished: {e}")))?;
        // Progress flows in order (phase changes are state transitions and must not be lost)
        // but sparsely: only phase changes and whole-percent steps are sent, so the queue holds
        // about a hundred events at most. The reporter applies each batch and rests 100 ms, so
        // the bus sees a bounded rate of PropertiesChanged however fast bytes arrive.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let reporter = {
            let iface = iface.clone();
            let shared = self.clone();
            tokio::spawn(async move {
                let mut phase = StagePhase::Downloading;
                while let Some(first) = rx.recv().await {
                    let mut last = first;
                    let mut batch = vec![first];
                    while let Ok(p) = rx.try_recv() {
                        batch.push(p);
                    }
                    let phase_name = |p: StagePhase| match p {
                        StagePhase::Downloading => "downloading",
                        StagePhase::Verifying => "verifying",
                        StagePhase::Probing => "probing",
                    };
                    for p in &batch {
                        if p.phase != phase {
                            if p.phase == StagePhase::Verifying {
                                let _ = shared.store.lock().await.transition(Lifecycle::Verifying);
                            }
                            let (id, version) = {
                                let j = iface.get().await;
                                (j.data.id.to_string(), j.data.version.clone())
                            };
                            log::info(
                                &format!("job {id}: {} {version}", phase_name(p.phase)),
                                &[
                                    ("JOB_ID", &id),
                                    ("VERSION", &version),
                                    ("PHASE", phase_name(p.phase)),
                                ],
                            );
                        }
                        phase = p.phase;
                        last = *p;
                    }
                    let name = phase_name(last.phase);
                    job::update(&iface, |d| {
                        d.phase = name.into();
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
                    shared.publish().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut sent: Option<(StagePhase, u64)> = None;
        let mut progress = move |p: Progress| {
            let step = (
                p.phase,
                p.done.saturating_mul(100).checked_div(p.total).unwrap_or(0),
            );
            if sent != Some(step) {
                sent = Some(step);
                let _ = tx.send(p);
            }
        };
        let floor = self.floor().await?;
        let manifest = match source {
            StageSource::Server(wanted) => {
                let assessed = self.check_now(&floor, None, None).await?;
                let new = self.record_check(&assessed).await?;
                self.announce(&new).await;
                let chosen = choose(&assessed, wanted.as_ref(), &self.cfg.server_url)?;
                let release = Release::from_package(&chosen.package)?;
                job::update(&iface, |d| d.version = release.version.to_string()).await;
                self.stager
                    .stage_release(self.http()?, &release, &floor, &mut progress, cancel)
                    .await?
            }
            StageSource::File(file, meta) => {
                let package = self.package().await;
                self.stager
                    .stage_from_file(file, &meta, &package, &floor, &mut progress, cancel)
                    .await?
            }
        };
        drop(progress);
        let _ = reporter.await;
        // Only one release stays staged: the one just verified.
        let staged = CellsVersion::parse(&manifest.version)?;
        for m in self.stager.area.staged() {
            if let Ok(v) = CellsVersion::parse(&m.version) {
                if v != staged {
                    let _ = self.stager.area.remove(&v);
                }
            }
        }
        self.store
            .lock()
            .await
            .update(|d| d.staged_version = manifest.version.clone())?;
        Ok(format!(
            "staged {} ({} bytes, sha256 {}, signed by key {})",
            manifest.version,
            manifest.size,
            manifest.sha256,
            crate::trust::keys_short_id(&manifest.key_id)
        ))
    }

    async fn announce(&self, versions: &[String]) {
        let Ok(conn) = self.conn() else { return };
        let Ok(iface) = conn
            .object_server()
            .interface::<_, ManagerIface>(MANAGER_PATH)
            .await
        else {
            return;
        };
        for v in versions {
            let _ = ManagerIface::update_available(iface.signal_emitter(), v).await;
            log::info(&format!("update available: {v}"), &[("VERSION", v)]);
        }
    }
}

/// Where a stage job gets its binary.
enum StageSource {
    /// The update server; `None` = the newest allowed version.
    Server(Option<CellsVersion>),
    /// A descriptor passed by the caller, with its metadata.
    File(std::fs::File, FdMetadata),
}

fn choose<'a>(
    assessed: &'a [Assessed],
    wanted: Option<&CellsVersion>,
    server: &str,
) -> Result<&'a Assessed> {
    match wanted {
        Some(v) => {
            let offers: Vec<&Assessed> = assessed
                .iter()
                .filter(|a| a.version.as_ref() == Some(v))
                .collect();
            if let Some(a) = offers.iter().find(|a| a.allowed) {
                return Ok(a);
            }
            match offers.first() {
                None => Err(Error::NoSuchVersion(format!(
                    "{v} is not offered by the update server {server} for this package, channel \
                     and architecture; run Check to see what is offered"
                ))),
                Some(a) if a.reason == "downgrade" => Err(Error::Downgrade(format!(
                    "{v} is not newer than the installed or highest-ever version; use Rollback to go back"
                ))),
                Some(a) if a.reason == "wrong arch" || a.reason == "wrong os" => Err(Error::WrongArchitecture(format!(
                    "{v} is offered for {}/{} only",
                    a.package.binary_os, a.package.binary_arch
                ))),
                Some(a) => Err(Error::NoSuchVersion(format!(
                    "{v} is offered but not allowed here ({})",
                    a.reason
                ))),
            }
        }
        None => assessed
            .iter()
            .filter(|a| a.allowed)
            .max_by(|a, b| a.version.cmp(&b.version))
            .ok_or_else(|| {
                Error::NoSuchVersion("no newer version is available; nothing to stage".into())
            }),
    }
}

fn apply_options(
    cfg: &crate::config::Config,
    d: &Dict,
    allow_version: bool,
) -> Result<ApplyOptions> {
    let mut keys = vec!["Restart", "OnFailure"];
    if allow_version {
        keys.push("Version");
    }
    only_keys(d, &keys)?;
    let on_failure = match dict_str(d, "OnFailure")?.as_deref() {
        None => cfg.on_failure,
        Some("rollback") => crate::config::OnFailure::Rollback,
        Some("keep") => crate::config::OnFailure::Keep,
        Some(other) => {
            return Err(Error::InvalidArgument(format!(
                "OnFailure {other:?} is not rollback or keep"
            )))
        }
    };
    Ok(ApplyOptions {
        version: dict_str(d, "Version")?
            .map(|v| CellsVersion::parse(&v))
            .transpose()?,
        restart: dict_bool(d, "Restart")?.unwrap_or(true),
        on_failure,
        file_name: None,
        allow_same_version: false,
    })
}

/// What a mutating job does.
enum Work {
    Stage(StageSource),
    Apply(ApplyOptions),
    Update(Option<CellsVersion>, ApplyOptions),
    Rollback,
    Enterprise(String, Option<CellsVersion>, ApplyOptions),
}

impl Shared {
    /// Creates a job of `kind` (the single mutating-job slot) and runs `work` in it; returns
    /// the job's path at once.
    async fn launch(
        self: &Arc<Self>,
        kind: &str,
        label: &str,
        action: Action,
        work: Work,
    ) -> Result<OwnedObjectPath> {
        let (path, cancel) = self.begin_job(kind, label, action).await?;
        tokio::spawn(self.clone().run_job(path.clone(), work, cancel));
        Ok(path)
    }

    /// Runs a job to its end and records it.
    async fn run_job(self: Arc<Self>, path: OwnedObjectPath, work: Work, cancel: Cancel) {
        let iface = match self.conn() {
            Ok(c) => c.object_server().interface::<_, job::Job>(&path).await.ok(),
            Err(_) => None,
        };
        // A Stage job comes to rest in `staged`; the others say where they end themselves.
        let success = matches!(work, Work::Stage(_)).then_some(Lifecycle::Staged);
        let outcome = match iface {
            None => Err(Error::Busy("job object vanished".into())),
            Some(iface) => match work {
                Work::Stage(source) => self.clone().stage_work(&path, source, &cancel).await,
                Work::Apply(o) => self.apply_work(&iface, &o).await,
                Work::Rollback => self.rollback_work(&iface).await,
                Work::Enterprise(key, v, o) => self.enterprise_work(&iface, &key, v, o).await,
                Work::Update(v, o) => {
                    let staged = self
                        .clone()
                        .stage_work(&path, StageSource::Server(v), &cancel)
                        .await;
                    match staged {
                        Ok(_) => {
                            let _ = self.store.lock().await.transition(Lifecycle::Staged);
                            self.apply_work(&iface, &o).await
                        }
                        Err(e) => Err(e),
                    }
                }
            },
        };
        self.conclude(&path, outcome, success).await;
    }
}

#[zbus::interface(name = "com.pydio.CellsUpdater1.Manager")]
impl ManagerIface {
    /// Asks the update server now.
    async fn check(
        &self,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<Vec<HashMap<String, OwnedValue>>, BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::Check).await?;
        only_keys(&options, &["PackageName", "Channel"])?;
        let package = dict_str(&options, "PackageName")?;
        let channel = dict_str(&options, "Channel")?;
        if let Some(p) = &package {
            if !matches!(p.as_str(), "PydioHome" | "PydioEnterprise") {
                return Err(Error::InvalidArgument(format!(
                    "PackageName {p:?} is not PydioHome or PydioEnterprise"
                ))
                .into());
            }
        }
        if let Some(c) = &channel {
            if !matches!(c.as_str(), "stable" | "dev") {
                return Err(
                    Error::InvalidArgument(format!("Channel {c:?} is not stable or dev")).into(),
                );
            }
        }
        // A check does not disturb a running job; it only moves the state when at rest.
        let moved = {
            let mut store = s.store.lock().await;
            let idle = s.jobs.lock().map(|j| j.running.is_none()).unwrap_or(false);
            idle && store.get().state.is_resting() && store.transition(Lifecycle::Checking).is_ok()
        };
        s.publish().await;
        let result = match s.floor().await {
            Ok(floor) => s.check_now(&floor, package, channel).await,
            Err(e) => Err(e),
        };
        let new = match &result {
            Ok(a) => s.record_check(a).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        {
            let mut store = s.store.lock().await;
            if let Err(e) = &result {
                let msg = e.message();
                let _ = store.update(|d| d.last_error = msg);
            }
            if moved {
                let rest = store.resting();
                let _ = store.transition(rest);
            }
        }
        s.publish().await;
        s.announce(&new).await;
        Ok(result?.iter().map(release_dict).collect())
    }

    /// Downloads, verifies and probes one release into the staging area.
    async fn stage(
        &self,
        version: String,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::Stage).await?;
        only_keys(&options, &[])?;
        let wanted = requested_version(&version)?;
        Ok(s.launch(
            "stage",
            &version,
            Action::Stage,
            Work::Stage(StageSource::Server(wanted)),
        )
        .await?)
    }

    /// The same as Stage, for a binary the caller passes as a file descriptor.
    async fn stage_from_fd(
        &self,
        binary: zbus::zvariant::OwnedFd,
        metadata: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::Stage).await?;
        only_keys(
            &metadata,
            &["Version", "Checksum", "Signature", "PackageName"],
        )?;
        let need = |k: &str| -> Result<String> {
            dict_str(&metadata, k)?
                .ok_or_else(|| Error::InvalidArgument(format!("metadata {k} is required")))
        };
        let meta = FdMetadata {
            version: need("Version")?,
            checksum: need("Checksum")?,
            signature: need("Signature")?,
            package: dict_str(&metadata, "PackageName")?.unwrap_or_default(),
            offered_by: match hdr.sender() {
                Some(sender) => format!("{sender}"),
                None => String::new(),
            },
        };
        CellsVersion::parse(&meta.version)?;
        crate::trust::decode_checksum(&meta.checksum)?;
        crate::trust::decode_b64("Signature", &meta.signature)?;
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(binary));
        let label = meta.version.clone();
        Ok(s.launch(
            "stage",
            &label,
            Action::Stage,
            Work::Stage(StageSource::File(file, meta)),
        )
        .await?)
    }

    /// Swaps the staged binary in, restarts, health-checks, rolls back on failure.
    async fn apply(
        &self,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::Apply).await?;
        let opts = apply_options(&s.cfg, &options, true)?;
        let staged = s.store.lock().await.get().staged_version.clone();
        if staged.is_empty() {
            return Err(Error::NothingStaged(
                "nothing is staged; run Stage (or Update) first".into(),
            )
            .into());
        }
        Ok(s.launch("apply", &staged, Action::Apply, Work::Apply(opts))
            .await?)
    }

    /// Stage then Apply in one job (what the timer uses).
    async fn update(
        &self,
        version: String,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::Apply).await?;
        let opts = apply_options(&s.cfg, &options, false)?;
        let wanted = requested_version(&version)?;
        Ok(s.launch(
            "update",
            &version,
            Action::Apply,
            Work::Update(wanted, opts),
        )
        .await?)
    }

    /// Puts the previous binary back and restarts.
    async fn rollback(
        &self,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::Apply).await?;
        only_keys(&options, &[])?;
        let previous = s.store.lock().await.get().previous_version.clone();
        if previous.is_empty() {
            return Err(Error::NothingStaged(
                "there is no previous version to roll back to".into(),
            )
            .into());
        }
        Ok(
            s.launch("rollback", &previous, Action::Apply, Work::Rollback)
                .await?,
        )
    }

    /// Writes the Enterprise key to `<CELLS_WORKING_DIR>/pydio-license`, owned by the Cells user.
    async fn install_license(
        &self,
        key: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::License).await?;
        crate::license::validate(&key)?;
        s.install_license_now(&key).await?;
        Ok(())
    }

    /// Checks the license, saves it, installs the Enterprise binary and fixes the unit.
    async fn upgrade_to_enterprise(
        &self,
        license: String,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.shared;
        s.authorize(&hdr, Action::Apply).await?;
        let key = crate::license::validate(&license)?;
        let opts = apply_options(&s.cfg, &options, true)?;
        let version = opts.version.clone();
        let label = version.as_ref().map(|v| v.to_string()).unwrap_or_default();
        Ok(s.launch(
            "enterprise",
            &label,
            Action::Apply,
            Work::Enterprise(key, version, opts),
        )
        .await?)
    }

    /// Jobs still held (running and recently finished).
    async fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.shared.touch();
        self.shared.held_jobs()
    }

    /// `JobFinished(o job, s state, s error, s message)`.
    #[zbus(signal)]
    pub async fn job_finished(
        emitter: &SignalEmitter<'_>,
        job: ObjectPath<'_>,
        state: &str,
        error: &str,
        message: &str,
    ) -> zbus::Result<()>;

    /// `UpdateAvailable(s version)`.
    #[zbus(signal)]
    pub async fn update_available(emitter: &SignalEmitter<'_>, version: &str) -> zbus::Result<()>;

    #[zbus(property)]
    async fn state(&self) -> String {
        self.shared.store.lock().await.get().state.as_str().into()
    }
    #[zbus(property)]
    async fn installed_version(&self) -> String {
        self.shared.installed_settled().await.version
    }
    #[zbus(property)]
    async fn package_name(&self) -> String {
        self.shared.package().await
    }
    #[zbus(property)]
    async fn channel(&self) -> String {
        self.shared.cfg.channel.clone()
    }
    #[zbus(property)]
    async fn unit(&self) -> String {
        self.shared.cfg.unit.clone()
    }
    #[zbus(property)]
    async fn binary_path(&self) -> String {
        self.shared
            .installed_settled()
            .await
            .binary
            .map(|b| b.display().to_string())
            .unwrap_or_default()
    }
    #[zbus(property)]
    async fn staged_version(&self) -> String {
        self.shared.store.lock().await.get().staged_version.clone()
    }
    #[zbus(property)]
    async fn previous_version(&self) -> String {
        self.shared
            .store
            .lock()
            .await
            .get()
            .previous_version
            .clone()
    }
    #[zbus(property)]
    async fn available_versions(&self) -> Vec<String> {
        self.shared
            .store
            .lock()
            .await
            .get()
            .available_versions
            .clone()
    }
    #[zbus(property)]
    async fn last_check(&self) -> u64 {
        self.shared.store.lock().await.get().last_check
    }
    #[zbus(property)]
    async fn last_error(&self) -> String {
        self.shared.store.lock().await.get().last_error.clone()
    }
    #[zbus(property)]
    async fn current_job(&self) -> OwnedObjectPath {
        self.shared.current_job()
    }
    #[zbus(property)]
    async fn daemon_version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }
}
