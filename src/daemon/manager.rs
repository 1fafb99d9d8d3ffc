//! The Manager object: `/com/pydio/CellsUpdater1`, `com.pydio.CellsUpdater1.Manager`.

use super::auth::Action;
use super::errors::BusError;
use super::job::JobKind;
use super::jobs::{apply::Options as ApplyOptions, stage::Source, Work};
use super::Daemon;
use crate::error::{Error, Result};
use crate::policy::Assessed;
use crate::stage::FdMetadata;
use crate::state::Lifecycle;
use crate::version::CellsVersion;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

pub use crate::contract::{MANAGER_INTERFACE, MANAGER_PATH};

/// Options and metadata dictionaries as they arrive.
type Dict = HashMap<String, OwnedValue>;

/// The served Manager: it validates, authorizes and translates; the work is in `jobs`.
pub struct ManagerIface {
    pub(super) daemon: Arc<Daemon>,
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

/// Refuses at once what a `StageFromFd` descriptor cannot be: anything but a regular file
/// (a directory, socket, pipe, FIFO or device, which could also never end), one not open for
/// reading, an empty one, or one larger than `[server] max_binary_size`.
fn check_offered_fd(fd: &std::os::fd::OwnedFd, max: u64) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let bad = |why: String| Err(Error::InvalidArgument(why));
    let st = nix::sys::stat::fstat(fd)
        .map_err(|e| Error::InvalidArgument(format!("cannot inspect the file descriptor: {e}")))?;
    let kind =
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    if kind != nix::sys::stat::SFlag::S_IFREG {
        return bad(
            "the file descriptor is not a regular file (a directory, socket, pipe, FIFO or \
             device); send the binary itself"
                .into(),
        );
    }
    let flags = fcntl(fd, FcntlArg::F_GETFL)
        .map_err(|e| Error::InvalidArgument(format!("cannot inspect the file descriptor: {e}")))?;
    if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_WRONLY {
        return bad("the file descriptor is not open for reading".into());
    }
    if st.st_size <= 0 {
        return bad("the offered file is empty".into());
    }
    if st.st_size as u64 > max {
        return bad(format!(
            "the offered file has {} bytes, more than [server] max_binary_size ({max} bytes)",
            st.st_size
        ));
    }
    Ok(())
}

fn only_keys(d: &Dict, allowed: &[&str]) -> Result<()> {
    match d.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Error::InvalidArgument(format!(
            "unknown option {:?}; this method accepts {}",
            crate::text::one_line(k, 80),
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
    d.insert("Allowed".into(), ov(Value::from(a.allowed())));
    d.insert("Reason".into(), ov(Value::from(a.reason_str())));
    d.insert("IsPatch".into(), ov(Value::from(p.is_patch)));
    if let Some(at) = a.eligible_at {
        d.insert("EligibleAt".into(), ov(Value::from(at)));
    }
    d
}

impl Daemon {
    /// The Manager's properties, in contract order.
    pub(super) async fn manager_props(&self) -> Vec<(&'static str, Value<'static>)> {
        let doc = self.store.lock().await.get().clone();
        let installed = self.installed().unwrap_or_default();
        let package = if doc.package_name.is_empty() {
            self.cfg.package.clone()
        } else {
            doc.package_name.clone()
        };
        vec![
            ("State", Value::from(doc.state.as_str().to_string())),
            ("InstalledVersion", Value::from(installed.version)),
            ("PackageName", Value::from(package)),
            ("Channel", Value::from(self.channel())),
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
            ("BadVersions", Value::from(doc.bad_versions)),
            ("LastCheck", Value::from(doc.last_check)),
            (
                "LastError",
                Value::from(crate::text::no_nul(&doc.last_error)),
            ),
            ("CurrentJob", Value::from(self.current_job())),
            (
                "Hold",
                Value::from(
                    doc.hold
                        .as_ref()
                        .map(|h| h.reason.clone())
                        .unwrap_or_default(),
                ),
            ),
            (
                "HoldVersion",
                Value::from(
                    doc.hold
                        .as_ref()
                        .map(|h| h.version.clone())
                        .unwrap_or_default(),
                ),
            ),
            ("NextWindow", Value::from(self.next_window())),
            (
                "DaemonVersion",
                Value::from(env!("CARGO_PKG_VERSION").to_string()),
            ),
        ]
    }
}

/// The host admin's actions that options need beyond Apply: `Force` passes the admin's
/// policy (a hold, a pin, `min_release_age`: manage-policy); `Restart=false` and
/// `OnFailure=keep` skip the health check or the rollback (override). The Cells application
/// has neither.
fn option_actions(d: &Dict) -> Result<Vec<Action>> {
    let mut out = Vec::new();
    if dict_bool(d, "Force")? == Some(true) {
        out.push(Action::ManagePolicy);
    }
    if dict_bool(d, "Restart")? == Some(false)
        || dict_str(d, "OnFailure")?.as_deref() == Some("keep")
    {
        out.push(Action::Override);
    }
    Ok(out)
}

fn apply_options(
    cfg: &crate::config::Config,
    d: &Dict,
    allow_version: bool,
) -> Result<ApplyOptions> {
    let mut keys = vec!["Restart", "OnFailure", "Force"];
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
        cross_package: None,
        force: dict_bool(d, "Force")?.unwrap_or(false),
    })
}

impl Daemon {
    /// Authorizes what the options ask beyond the method's own action (see
    /// [`option_actions`]).
    async fn authorize_options(&self, hdr: &zbus::message::Header<'_>, d: &Dict) -> Result<()> {
        for action in option_actions(d)? {
            self.authorize(hdr, action).await?;
        }
        Ok(())
    }

    /// The hold's pin, if any.
    pub(super) async fn pin(&self) -> Option<CellsVersion> {
        let hold = self.store.lock().await.get().hold.clone()?;
        CellsVersion::parse(&hold.version).ok()
    }

    /// The start of the maintenance window open now, or of the next one (µs since the
    /// epoch); 0 when no window is configured.
    pub(super) fn next_window(&self) -> u64 {
        let now = jiff::Timestamp::now();
        self.schedule
            .next(now)
            .map_or(0, |(start, _)| start.as_microsecond().max(0) as u64)
    }

    /// An explicit Apply or Update while a (full) hold is set: `Held`, unless `Force`, which
    /// the journal records.
    async fn check_hold(&self, force: bool, what: &str) -> Result<()> {
        let hold = self.store.lock().await.get().hold.clone();
        let Some(h) = hold else { return Ok(()) };
        if force {
            crate::log::log(
                crate::log::Level::Warning,
                &format!(
                    "{what} forced past the hold ({})",
                    crate::text::one_line(&h.reason, 200)
                ),
                &[("HOLD", &crate::text::one_line(&h.reason, 200))],
            );
            return Ok(());
        }
        if h.version.is_empty() {
            return Err(Error::Held(format!(
                "updates are held ({}); run `cells-updater unhold` (Release), or pass Force to \
                 go past the hold",
                crate::text::one_line(&h.reason, 200)
            )));
        }
        Ok(())
    }

    /// The admin's policy for an install of `version` (when known): a full hold is `Held`, a
    /// version above the pin `NoSuchVersion`, unless `Force` (the admin's) goes past them.
    /// Checked when the call arrives and again right before the swap (a hold set meanwhile
    /// stops the job).
    pub(super) async fn check_policy(
        &self,
        opts: &ApplyOptions,
        version: Option<&CellsVersion>,
        what: &str,
    ) -> Result<()> {
        self.check_hold(opts.force, what).await?;
        if let (Some(pin), Some(v)) = (self.pin().await, version) {
            if *v > pin && !opts.force {
                return Err(Error::NoSuchVersion(format!(
                    "{v} is held above the pin {pin}; pass Force to install it anyway"
                )));
            }
        }
        Ok(())
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
        let s = &self.daemon;
        s.authorize(&hdr, Action::Check).await?;
        only_keys(&options, &["PackageName", "Channel"])?;
        let package = dict_str(&options, "PackageName")?;
        let channel = dict_str(&options, "Channel")?;
        if let Some(p) = &package {
            if !crate::package::Package::is_known(p) {
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
            let idle = s.running_job().is_none();
            idle && store.get().state.is_resting() && store.transition(Lifecycle::Checking).is_ok()
        };
        s.publish().await;
        // One question to the server at a time: a call that arrives while another asks waits
        // for it and shares its answer (same options), so a flood of Checks costs one helper
        // run at a time, not one each.
        let arrived = std::time::Instant::now();
        let asked = (package.clone(), channel.clone());
        let result = {
            let mut last = s.last_check.lock().await;
            match &*last {
                Some(a) if a.asked == asked && a.at >= arrived => a.result.clone(),
                _ => {
                    let result = match s.floor().await {
                        Ok(floor) => s.check_now(&floor, package, channel, false).await,
                        Err(e) => Err(e),
                    };
                    *last = Some(super::CheckAnswer {
                        asked: asked.clone(),
                        at: std::time::Instant::now(),
                        result: result.clone(),
                    });
                    result
                }
            }
        };
        // Only an answer for this host's own package and channel is recorded: a Check for
        // another one (any caller may ask) must not stand in for the timer's next check, nor
        // fill AvailableVersions with releases the timer would then fail to install.
        let own_package = match &asked.0 {
            None => true,
            Some(p) => *p == s.package().await,
        };
        let own_channel = match &asked.1 {
            None => true,
            Some(c) => *c == s.channel_settled().await,
        };
        let own = own_package && own_channel;
        let new = match &result {
            Ok(a) if own => s.record_check(a).await.unwrap_or_default(),
            _ => Vec::new(),
        };
        {
            let mut store = s.store.lock().await;
            if let Err(e) = &result {
                let msg = e.message();
                let _ = store.update(|d| d.last_error = msg);
            }
            // Back to rest only if no job took over while the server was asked.
            if moved && store.get().state == Lifecycle::Checking {
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
        let s = &self.daemon;
        let uid = s.authorize(&hdr, Action::Stage).await?;
        only_keys(&options, &["Force"])?;
        let wanted = requested_version(&version)?;
        let force = dict_bool(&options, "Force")?.unwrap_or(false);
        s.authorize_options(&hdr, &options).await?;
        Ok(s.launch(
            JobKind::Stage,
            &version,
            (Action::Stage, Some(uid)),
            Work::Stage(Source::Server(wanted, force)),
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
        // Close-on-exec at once: no child may inherit a descriptor a caller sent (zbus
        // receives them without it), whoever the caller is.
        let binary = std::os::fd::OwnedFd::from(binary);
        nix::fcntl::fcntl(
            &binary,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| Error::InvalidArgument(format!("cannot use the file descriptor: {e}")))?;
        let s = &self.daemon;
        let uid = s.authorize(&hdr, Action::Stage).await?;
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
        check_offered_fd(&binary, s.cfg.max_binary_size)?;
        let file = std::fs::File::from(binary);
        let label = meta.version.clone();
        Ok(s.launch(
            JobKind::Stage,
            &label,
            (Action::Stage, Some(uid)),
            Work::Stage(Source::File(file, meta)),
        )
        .await?)
    }

    /// Swaps the staged binary in, restarts, health-checks, rolls back on failure.
    async fn apply(
        &self,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.daemon;
        let uid = s.authorize(&hdr, Action::Apply).await?;
        let opts = apply_options(&s.cfg, &options, true)?;
        s.authorize_options(&hdr, &options).await?;
        let staged = s.store.lock().await.get().staged_version.clone();
        if staged.is_empty() {
            return Err(Error::NothingStaged(
                "nothing is staged; run Stage (or Update) first".into(),
            )
            .into());
        }
        s.check_policy(
            &opts,
            CellsVersion::parse(&staged).ok().as_ref(),
            &format!("Apply of {staged}"),
        )
        .await?;
        Ok(s.launch(
            JobKind::Apply,
            &staged,
            (Action::Apply, Some(uid)),
            Work::Apply(opts),
        )
        .await?)
    }

    /// Stage then Apply in one job (what the timer uses).
    async fn update(
        &self,
        version: String,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.daemon;
        let uid = s.authorize(&hdr, Action::Apply).await?;
        let opts = apply_options(&s.cfg, &options, false)?;
        s.authorize_options(&hdr, &options).await?;
        let wanted = requested_version(&version)?;
        s.check_hold(opts.force, &format!("Update to {version:?}"))
            .await?;
        Ok(s.launch(
            JobKind::Update,
            &version,
            (Action::Apply, Some(uid)),
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
        let s = &self.daemon;
        // Going back to an older (maybe vulnerable) release is a host admin's decision.
        let uid = s.authorize(&hdr, Action::Override).await?;
        only_keys(&options, &[])?;
        let previous = s.store.lock().await.get().previous_version.clone();
        if previous.is_empty() {
            return Err(super::jobs::rollback::no_previous().into());
        }
        Ok(s.launch(
            JobKind::Rollback,
            &previous,
            (Action::Override, Some(uid)),
            Work::Rollback,
        )
        .await?)
    }

    /// Writes the Enterprise key to `<CELLS_WORKING_DIR>/pydio-license`, owned by the Cells user.
    async fn install_license(
        &self,
        key: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), BusError> {
        let s = &self.daemon;
        s.authorize(&hdr, Action::License).await?;
        let key = crate::license::validate(&key)?;
        let at = s.license_location().await?;
        let path = crate::license::write(&s.runner, &at, &key).await?;
        crate::log::info(&format!("license installed at {}", path.display()), &[]);
        Ok(())
    }

    /// Checks the license, saves it, installs the Enterprise binary and fixes the unit.
    async fn upgrade_to_enterprise(
        &self,
        license: String,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<OwnedObjectPath, BusError> {
        let s = &self.daemon;
        let uid = s.authorize(&hdr, Action::Apply).await?;
        let key = crate::license::validate(&license)?;
        let opts = apply_options(&s.cfg, &options, true)?;
        s.authorize_options(&hdr, &options).await?;
        let version = opts.version.clone();
        let label = version.as_ref().map(|v| v.to_string()).unwrap_or_default();
        s.check_policy(
            &opts,
            version.as_ref(),
            &format!("Enterprise upgrade to {label:?}"),
        )
        .await?;
        Ok(s.launch(
            JobKind::Enterprise,
            &label,
            (Action::Apply, Some(uid)),
            Work::Enterprise(key, version, opts),
        )
        .await?)
    }

    /// Holds automatic installs (apt's `hold`); with option `Version`, pins them at or below
    /// it. An explicit Update or Apply while held needs `Force`. Persisted.
    async fn hold(
        &self,
        reason: String,
        options: Dict,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), BusError> {
        let s = &self.daemon;
        s.authorize(&hdr, Action::ManagePolicy).await?;
        only_keys(&options, &["Version"])?;
        let reason = crate::text::no_nul(reason.trim());
        if reason.chars().count() > 1024 {
            return Err(Error::InvalidArgument(
                "the hold's reason is longer than 1024 characters".into(),
            )
            .into());
        }
        let pin = dict_str(&options, "Version")?
            .map(|v| CellsVersion::parse(&v))
            .transpose()?;
        let record = crate::state::HoldRecord {
            reason: if reason.is_empty() {
                "held by an admin".into()
            } else {
                reason
            },
            version: pin.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            since: super::now_us(),
        };
        crate::log::info(
            &match &pin {
                Some(v) => format!(
                    "automatic installs pinned at or below {v}: {}",
                    crate::text::one_line(&record.reason, 200)
                ),
                None => format!(
                    "updates held: {}",
                    crate::text::one_line(&record.reason, 200)
                ),
            },
            &[("HOLD", &crate::text::one_line(&record.reason, 200))],
        );
        s.store.lock().await.update(|d| d.hold = Some(record))?;
        s.publish().await;
        Ok(())
    }

    /// Releases the hold (and the pin).
    async fn release(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), BusError> {
        let s = &self.daemon;
        s.authorize(&hdr, Action::ManagePolicy).await?;
        let had = s.store.lock().await.get().hold.is_some();
        if had {
            s.store.lock().await.update(|d| d.hold = None)?;
            crate::log::info("hold released", &[]);
            s.publish().await;
        }
        Ok(())
    }

    /// Clears this host's mark on a release that failed its health check here, so it may be
    /// installed again: `entry` is an entry of `BadVersions` (`PydioHome:4.4.6`), or a version
    /// (cleared for both editions, compared as versions). A host admin's action
    /// (manage-policy): the Cells user, whose own update may have failed, cannot lift it.
    async fn forget_bad_version(
        &self,
        entry: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), BusError> {
        let s = &self.daemon;
        let uid = s.authorize(&hdr, Action::ManagePolicy).await?;
        let shown = crate::text::one_line(&entry, 120);
        let (package, version) = match entry.split_once(':') {
            Some((p, v)) if crate::package::Package::is_known(p) => (Some(p), v),
            Some(_) => {
                return Err(Error::InvalidArgument(format!(
                    "{shown:?} is neither a version nor a BadVersions entry (PydioHome:V or \
                     PydioEnterprise:V)"
                ))
                .into())
            }
            None => (None, entry.as_str()),
        };
        let want = CellsVersion::parse(version)?;
        let matches = |listed: &String| {
            listed.split_once(':').is_some_and(|(p, v)| {
                package.is_none_or(|want_p| want_p == p)
                    && CellsVersion::parse(v).is_ok_and(|v| v == want)
            })
        };
        let mut store = s.store.lock().await;
        let gone: Vec<String> = store
            .get()
            .bad_versions
            .iter()
            .filter(|b| matches(b))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{shown} is not marked bad here (see the BadVersions property, or \
                 `cells-updater status`)"
            ))
            .into());
        }
        store.update(|d| d.bad_versions.retain(|b| !matches(b)))?;
        drop(store);
        crate::log::info(
            &format!(
                "uid {uid} cleared the bad mark of {}: it may be installed again",
                gone.join(", ")
            ),
            &[("VERSION", &want.to_string())],
        );
        s.publish().await;
        Ok(())
    }

    /// Jobs still held (running and recently finished).
    async fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.daemon.held_jobs()
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
        self.daemon.store.lock().await.get().state.as_str().into()
    }
    #[zbus(property)]
    async fn installed_version(&self) -> String {
        self.daemon.installed_settled().await.version
    }
    #[zbus(property)]
    async fn package_name(&self) -> String {
        self.daemon.package().await
    }
    #[zbus(property)]
    async fn channel(&self) -> String {
        self.daemon.channel_settled().await
    }
    #[zbus(property)]
    async fn unit(&self) -> String {
        self.daemon.cfg.unit.clone()
    }
    #[zbus(property)]
    async fn binary_path(&self) -> String {
        self.daemon
            .installed_settled()
            .await
            .binary
            .map(|b| b.display().to_string())
            .unwrap_or_default()
    }
    #[zbus(property)]
    async fn staged_version(&self) -> String {
        self.daemon.store.lock().await.get().staged_version.clone()
    }
    #[zbus(property)]
    async fn previous_version(&self) -> String {
        self.daemon
            .store
            .lock()
            .await
            .get()
            .previous_version
            .clone()
    }
    #[zbus(property)]
    async fn available_versions(&self) -> Vec<String> {
        self.daemon
            .store
            .lock()
            .await
            .get()
            .available_versions
            .clone()
    }
    /// Releases that failed their health check here (`Package:version`): never installed
    /// again here until a host admin forgets the mark (`ForgetBadVersion`).
    #[zbus(property)]
    async fn bad_versions(&self) -> Vec<String> {
        self.daemon.store.lock().await.get().bad_versions.clone()
    }
    #[zbus(property)]
    async fn last_check(&self) -> u64 {
        self.daemon.store.lock().await.get().last_check
    }
    #[zbus(property)]
    async fn last_error(&self) -> String {
        crate::text::no_nul(&self.daemon.store.lock().await.get().last_error)
    }
    #[zbus(property)]
    async fn current_job(&self) -> OwnedObjectPath {
        self.daemon.current_job()
    }
    #[zbus(property, name = "Hold")]
    async fn hold_reason(&self) -> String {
        self.daemon
            .store
            .lock()
            .await
            .get()
            .hold
            .as_ref()
            .map(|h| h.reason.clone())
            .unwrap_or_default()
    }
    #[zbus(property)]
    async fn hold_version(&self) -> String {
        self.daemon
            .store
            .lock()
            .await
            .get()
            .hold
            .as_ref()
            .map(|h| h.version.clone())
            .unwrap_or_default()
    }
    #[zbus(property)]
    async fn next_window(&self) -> u64 {
        self.daemon.next_window()
    }
    #[zbus(property)]
    async fn daemon_version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }
}
