//! The Manager's option dictionaries and arguments, checked before anything else happens:
//! unknown keys, wrong types and bad values are `InvalidArgument` naming the option; the
//! options that need a host admin are named here too ([`option_actions`]).

use super::auth::Action;
use super::jobs::apply::Options as ApplyOptions;
use crate::error::{Error, Result};
use crate::version::CellsVersion;
use std::collections::HashMap;
use zbus::zvariant::OwnedValue;

/// Options and metadata dictionaries as they arrive.
pub(super) type Dict = HashMap<String, OwnedValue>;

pub(super) fn dict_str(d: &Dict, key: &str) -> Result<Option<String>> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => String::try_from(v.try_clone().map_err(|e| Error::Internal(e.to_string()))?)
            .map(Some)
            .map_err(|_| Error::InvalidArgument(format!("option {key} must be a string (s)"))),
    }
}

/// The version argument of Stage and Update: `""` means the newest allowed.
pub(super) fn requested_version(v: &str) -> Result<Option<CellsVersion>> {
    if v.is_empty() {
        Ok(None)
    } else {
        CellsVersion::parse(v).map(Some)
    }
}

pub(super) fn dict_bool(d: &Dict, key: &str) -> Result<Option<bool>> {
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
pub(super) fn check_offered_fd(fd: &std::os::fd::OwnedFd, max: u64) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let bad = |why: String| Err(Error::InvalidArgument(why));
    let st = nix::sys::stat::fstat(fd)
        .map_err(|e| Error::Internal(format!("cannot inspect the file descriptor: {e}")))?;
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
        .map_err(|e| Error::Internal(format!("cannot inspect the file descriptor: {e}")))?;
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

pub(super) fn only_keys(d: &Dict, allowed: &[&str]) -> Result<()> {
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

/// The host admin's actions that options need beyond Apply: `Force` passes the admin's
/// policy (a hold, a pin, `min_release_age`: manage-policy); `Restart=false` and
/// `OnFailure=keep` skip the health check or the rollback (override). The Cells application
/// has neither.
pub(super) fn option_actions(d: &Dict) -> Result<Vec<Action>> {
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

pub(super) fn apply_options(
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

/// The `PackageName` option, if given, spelled as the contract spells a package.
pub(super) fn package_option(d: &Dict) -> Result<Option<crate::package::Package>> {
    dict_str(d, "PackageName")?
        .map(|p| package_named(&p))
        .transpose()
}

/// `StageFromFd`'s `PackageName`: as [`package_option`], and an empty one stands for the
/// package in use, as it always has for this method.
pub(super) fn offered_package(d: &Dict) -> Result<Option<crate::package::Package>> {
    dict_str(d, "PackageName")?
        .filter(|p| !p.is_empty())
        .map(|p| package_named(&p))
        .transpose()
}

fn package_named(p: &str) -> Result<crate::package::Package> {
    crate::package::Package::parse(p).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "PackageName {:?} is not PydioHome or PydioEnterprise",
            crate::text::one_line(p, 40)
        ))
    })
}

/// `Check`'s options: `PackageName` and `Channel`, each spelled as the contract spells it.
pub(super) fn check_options(
    d: &Dict,
) -> Result<(
    Option<crate::package::Package>,
    Option<crate::package::Channel>,
)> {
    only_keys(d, &["PackageName", "Channel"])?;
    let package = package_option(d)?;
    let channel = match dict_str(d, "Channel")? {
        None => None,
        Some(c) => Some(crate::package::Channel::parse(&c).ok_or_else(|| {
            Error::InvalidArgument(format!("Channel {c:?} is not stable or dev"))
        })?),
    };
    Ok((package, channel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{Channel, Package};
    use zbus::zvariant::Value;

    fn dict(rows: &[(&str, Value<'_>)]) -> Dict {
        rows.iter()
            .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v.clone()).unwrap()))
            .collect()
    }

    /// `PackageName` (Check's and StageFromFd's) and `Channel`, row by row: each spelling of
    /// the contract, and a clear `InvalidArgument` for anything else.
    #[test]
    fn packages_and_channels_are_spelled_as_the_contract_spells_them() {
        assert_eq!(package_option(&dict(&[])).unwrap(), None);
        let empty = dict(&[("PackageName", Value::from(""))]);
        assert_eq!(offered_package(&empty).unwrap(), None);
        assert_eq!(offered_package(&dict(&[])).unwrap(), None);
        assert!(
            package_option(&empty).is_err(),
            "Check names a package or none"
        );
        let e = offered_package(&dict(&[("PackageName", Value::from("Pydio"))])).unwrap_err();
        assert!(e.message().contains("is not PydioHome"), "{e}");
        for p in Package::ALL {
            let d = dict(&[("PackageName", Value::from(p.as_str()))]);
            assert_eq!(package_option(&d).unwrap(), Some(p));
        }
        let d = dict(&[
            ("PackageName", Value::from("PydioEnterprise")),
            ("Channel", Value::from("dev")),
        ]);
        assert_eq!(
            check_options(&d).unwrap(),
            (Some(Package::Enterprise), Some(Channel::Dev))
        );
        for (key, value, says) in [
            (
                "PackageName",
                Value::from("Pydio"),
                "is not PydioHome or PydioEnterprise",
            ),
            (
                "PackageName",
                Value::from("pydiohome"),
                "is not PydioHome or PydioEnterprise",
            ),
            ("PackageName", Value::from(7u32), "must be a string"),
            ("Channel", Value::from("beta"), "is not stable or dev"),
            ("Other", Value::from("x"), "Other"),
        ] {
            let e = check_options(&dict(&[(key, value)])).unwrap_err();
            assert_eq!(e.name(), "InvalidArgument", "{key}: {e}");
            assert!(e.message().contains(says), "{key}: {e}");
        }
    }
}
