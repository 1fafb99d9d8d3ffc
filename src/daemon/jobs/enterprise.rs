//! UpgradeToEnterprise: the key checked by the update server, the Enterprise build of the
//! installed version (or the `Version` option) staged and verified like any release, the key
//! saved (only then, and as the Cells user), then applied as `cells-enterprise` with the
//! unit's `ExecStart` pointed there. The floor and the bad list hold as for any update, and
//! `Cancel` works until the swap.

use super::stage::{refuse_bad, Reporter};
use super::{apply, Ctx};
use crate::error::{Error, Result};
use crate::policy;
use crate::stage::Release;
use crate::state::Lifecycle;
use crate::update_server::{self, UpdateRequest};
use crate::version::{CellsVersion, VersionBounds};

/// The Enterprise edition.
const ENTERPRISE: crate::package::Package = crate::package::Package::Enterprise;

/// What a cross-package request sends as `CurrentVersion`: the server lists only newer
/// versions, so Cells' own client lowers it to `max(major-1,0).max(minor-1,0).0`.
pub fn lowered(v: &CellsVersion) -> String {
    let (major, minor, _) = v.triple();
    format!("{}.{}.0", major.saturating_sub(1), minor.saturating_sub(1))
}

pub(in crate::daemon) async fn run(
    ctx: &Ctx,
    key: &str,
    version: Option<CellsVersion>,
    mut opts: apply::Options,
) -> Result<String> {
    let d = &ctx.d;
    let bounds = d.bounds().await?;
    let installed = bounds
        .installed
        .clone()
        .ok_or_else(|| Error::UnitFailed("the installed version is unknown".into()))?;
    let want = version.unwrap_or_else(|| installed.clone());
    bounds.admit_cross(&want)?;
    refuse_bad(d, ENTERPRISE, &want).await?;
    ctx.job.update(|j| j.version = want.to_string()).await;
    ctx.set_state(Lifecycle::Downloading).await?;
    let server = d.effective_server().await;
    let mut request = UpdateRequest::new(server.channel, ENTERPRISE, &lowered(&installed));
    request.license_info.insert("Key".into(), key.to_string());
    let settings = d.server_settings(&server);
    let resp = update_server::check_license(&d.runner, &settings, &request).await?;
    ctx.job.cancel.check()?;
    let bad = d.store.lock().await.get().bad_versions.clone();
    // The lowered CurrentVersion makes the server list older releases too: judge against
    // the real installed version (same version allowed: it is another package).
    let any = VersionBounds::default();
    let pctx = policy::Context {
        package: ENTERPRISE,
        bounds: &any,
        bad: &bad,
        max_binary_size: d.cfg.max_binary_size,
        server_url: &server.url,
        download_hosts: &d.cfg.download_hosts,
        now: jiff::Timestamp::now().as_second(),
        // The admin's policy binds the Enterprise build too: the pin and the minimum
        // release age, unless the (admin's) Force goes past them.
        min_age: d.cfg.min_release_age,
        pin: d.pin().await,
        force: opts.force,
    };
    // Of the entries for this version, an allowed one (another may be for another
    // architecture); else the first, whose refusal says why.
    let offered: Vec<_> = resp
        .available_binaries
        .iter()
        .map(|p| policy::assess(p, &pctx))
        .filter(|a| a.version.as_ref().is_some_and(|v| *v >= installed))
        .filter(|a| a.version.as_ref() == Some(&want))
        .collect();
    let offer = offered
        .iter()
        .find(|a| a.allowed())
        .or(offered.first())
        .ok_or_else(|| {
            Error::NoSuchVersion(format!(
                "the update server offers no Enterprise build of {want}"
            ))
        })?;
    // Refused as any release is: each reason with its own error (policy::Assessed::refusal).
    if !offer.allowed() {
        return Err(offer.refusal(&want));
    }
    let release = Release::from_offer(
        &offer.package,
        ENTERPRISE,
        &server.url,
        &d.cfg.download_hosts,
    )?;
    // Whatever the entry's PackageName says: the binary must be the Enterprise edition.
    let mut reporter = Reporter::start(d.clone(), ctx.job.clone());
    let staged = d
        .stager
        .stage_release(
            &settings,
            &release,
            &any,
            &mut |p| reporter.report(p),
            &ctx.job.cancel,
        )
        .await;
    reporter.finish().await;
    let manifest = staged?;
    super::stage::record_staged(d, &manifest).await?;
    ctx.job.cancel.check()?;
    // Verified: now the key may be saved (as the Cells user). Enterprise Cells reads it at
    // start, so before the restart.
    let at = d.license_location().await?;
    crate::license::write(&d.runner, &at, key).await?;
    opts.version = Some(want.clone());
    opts.file_name = Some("cells-enterprise".into());
    opts.cross_package = Some(ENTERPRISE);
    let msg = apply::run(ctx, &opts).await?;
    Ok(format!(
        "Pydio Cells Enterprise {want}: license saved; {msg}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_package_requests_lower_the_current_version() {
        let v = |s| CellsVersion::parse(s).unwrap();
        assert_eq!(lowered(&v("4.4.2")), "3.3.0");
        assert_eq!(lowered(&v("0.0.9")), "0.0.0");
        assert_eq!(lowered(&v("5.0.1")), "4.0.0");
    }
}
