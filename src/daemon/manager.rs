//! The Manager object: `/com/pydio/CellsUpdater1`, `com.pydio.CellsUpdater1.Manager`.

use super::auth::Action;
use super::errors::BusError;
use super::jobs::{apply::Options as ApplyOptions, stage::StageFrom, Work};
use super::props::{Learnt, ManagerProps};
use super::Daemon;
use crate::error::{Error, Result};
use crate::policy::Assessed;
use crate::stage::FdMetadata;
use crate::version::CellsVersion;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

pub use crate::contract::{MANAGER_INTERFACE, MANAGER_PATH};

use super::options::{
    apply_options, check_offered_fd, check_options, dict_bool, dict_str, only_keys, option_actions,
    requested_version, Dict,
};

/// The served Manager: it validates, authorizes and translates; the work is in `jobs`.
pub struct ManagerIface {
    pub(super) daemon: Arc<Daemon>,
}

fn ov(v: Value<'_>) -> OwnedValue {
    // Invariant: plain values (strings, numbers, booleans) hold no file descriptors, the only
    // case in which try_from fails.
    OwnedValue::try_from(v).expect("plain values convert")
}

fn release_dict(a: &Assessed) -> HashMap<String, OwnedValue> {
    use crate::contract::release_key as K;
    let p = &a.package;
    let mut d = HashMap::new();
    d.insert(K::VERSION.into(), ov(Value::from(p.version.clone())));
    d.insert(
        K::PACKAGE_NAME.into(),
        ov(Value::from(p.package_name.clone())),
    );
    d.insert(K::LABEL.into(), ov(Value::from(p.label.clone())));
    d.insert(
        K::DESCRIPTION.into(),
        ov(Value::from(p.description.clone())),
    );
    d.insert(K::CHANGE_LOG.into(), ov(Value::from(p.change_log.clone())));
    d.insert(K::RELEASE_DATE.into(), ov(Value::from(p.release_date)));
    d.insert(K::SIZE.into(), ov(Value::from(p.binary_size.max(0) as u64)));
    d.insert(K::ALLOWED.into(), ov(Value::from(a.allowed())));
    d.insert(K::REASON.into(), ov(Value::from(a.reason_str())));
    d.insert(K::IS_PATCH.into(), ov(Value::from(p.is_patch)));
    if let Some(at) = a.eligible_at {
        d.insert(K::ELIGIBLE_AT.into(), ov(Value::from(at)));
    }
    d
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
        self.store.lock().await.get().hold.as_ref()?.version.clone()
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
        if h.version.is_none() {
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
        let (package, channel) = check_options(&options)?;
        let result = s.check(package, channel).await;
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
            &version,
            (Action::Stage, Some(uid)),
            Work::Stage(StageFrom::Server(wanted, force)),
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
        .map_err(|e| Error::Internal(format!("cannot use the file descriptor: {e}")))?;
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
        let meta = FdMetadata::parse(
            &need("Version")?,
            &need("Checksum")?,
            &need("Signature")?,
            super::options::offered_package(&metadata)?,
            match hdr.sender() {
                Some(sender) => format!("{sender}"),
                None => String::new(),
            },
        )?;
        check_offered_fd(&binary, s.cfg.max_binary_size)?;
        let file = std::fs::File::from(binary);
        let label = meta.version.to_string();
        Ok(s.launch(
            &label,
            (Action::Stage, Some(uid)),
            Work::Stage(StageFrom::File(file, meta)),
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
        let Some(staged) = s.store.lock().await.get().staged_version.clone() else {
            return Err(Error::NothingStaged(
                "nothing is staged; run Stage (or Update) first".into(),
            )
            .into());
        };
        s.check_policy(&opts, Some(&staged), &format!("Apply of {staged}"))
            .await?;
        Ok(s.launch(
            &staged.to_string(),
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
        let Some(previous) = s.store.lock().await.get().previous_version.clone() else {
            return Err(super::jobs::rollback::no_previous().into());
        };
        Ok(s.launch(
            &previous.to_string(),
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
            version: pin.clone(),
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
        // An entry is spelled as BadVersions spells one; a bare version names both editions.
        let asked = crate::package::BadRelease::parse(&entry).map_err(|why| {
            Error::InvalidArgument(format!(
                "{shown:?} is neither a version nor a BadVersions entry (PydioHome:V or \
                 PydioEnterprise:V): {why}"
            ))
        })?;
        let (package, want) = (asked.package, asked.version);
        let mut store = s.store.lock().await;
        let before = store.get().bad_versions.clone();
        let mut after: Vec<crate::package::BadRelease> = Vec::new();
        for left in before.iter().filter_map(|b| b.without(package, &want)) {
            if !after.contains(&left) {
                after.push(left);
            }
        }
        let gone: Vec<String> = before
            .iter()
            .filter(|b| !after.contains(b))
            .map(ToString::to_string)
            .collect();
        if gone.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{shown} is not marked bad here (see the BadVersions property, or \
                 `cells-updater status`)"
            ))
            .into());
        }
        store.update(|d| d.bad_versions = after)?;
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
        self.known().await.state
    }
    #[zbus(property)]
    async fn installed_version(&self) -> String {
        self.daemon.props(Learnt::Installed).await.installed_version
    }
    #[zbus(property)]
    async fn package_name(&self) -> String {
        self.known().await.package_name
    }
    #[zbus(property)]
    async fn channel(&self) -> String {
        self.daemon.props(Learnt::Channel).await.channel
    }
    #[zbus(property)]
    async fn unit(&self) -> String {
        self.known().await.unit
    }
    #[zbus(property)]
    async fn binary_path(&self) -> String {
        self.daemon.props(Learnt::Installed).await.binary_path
    }
    #[zbus(property)]
    async fn staged_version(&self) -> String {
        self.known().await.staged_version
    }
    #[zbus(property)]
    async fn previous_version(&self) -> String {
        self.known().await.previous_version
    }
    #[zbus(property)]
    async fn available_versions(&self) -> Vec<String> {
        self.known().await.available_versions
    }
    /// Releases that failed their health check here (`Package:version`): never installed
    /// again here until a host admin forgets the mark (`ForgetBadVersion`).
    #[zbus(property)]
    async fn bad_versions(&self) -> Vec<String> {
        self.known().await.bad_versions
    }
    #[zbus(property)]
    async fn last_check(&self) -> u64 {
        self.known().await.last_check
    }
    #[zbus(property)]
    async fn last_error(&self) -> String {
        self.known().await.last_error
    }
    #[zbus(property)]
    async fn current_job(&self) -> OwnedObjectPath {
        self.known().await.current_job
    }
    #[zbus(property, name = "Hold")]
    async fn hold_reason(&self) -> String {
        self.known().await.hold
    }
    #[zbus(property)]
    async fn hold_version(&self) -> String {
        self.known().await.hold_version
    }
    #[zbus(property)]
    async fn next_window(&self) -> u64 {
        self.known().await.next_window
    }
    #[zbus(property)]
    async fn daemon_version(&self) -> String {
        self.known().await.daemon_version
    }
}

impl ManagerIface {
    /// The property snapshot as known now.
    async fn known(&self) -> ManagerProps {
        self.daemon.props(Learnt::AsKnown).await
    }
}
