//! Which offered releases are allowed here, and which ones `check --auto` may install. The
//! update server's own filtering is not relied on: every entry is checked.

use crate::config::AutoPolicy;
use crate::stage::Release;
use crate::update_server::{goarch, Package, PackageStatus, GOOS};
use crate::version::{CellsVersion, VersionFloor};

/// What is known locally when judging an offer.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Package in use.
    pub package: &'a str,
    /// Versions a release must beat.
    pub floor: &'a VersionFloor,
    /// Releases marked bad after a failed start (see [`is_bad`]).
    pub bad: &'a [String],
    /// `[server] max_binary_size`.
    pub max_binary_size: u64,
    /// The configured server URL (the download rules are relative to it).
    pub server_url: &'a str,
    /// `[server] download_hosts`.
    pub download_hosts: &'a [String],
    /// Now, unix seconds (for the release age).
    pub now: i64,
    /// `[policy] min_release_age`.
    pub min_age: std::time::Duration,
    /// The hold's pin: releases above it are held.
    pub pin: Option<CellsVersion>,
    /// `Force`: the admin goes past the pin and the release age.
    pub force: bool,
}

/// One offered package with the verdict.
#[derive(Debug, Clone)]
pub struct Assessed {
    /// As the server sent it.
    pub package: Package,
    /// The parsed version, when it parses.
    pub version: Option<CellsVersion>,
    /// True when it may be staged.
    pub allowed: bool,
    /// Why not: `invalid`, `not-released`, `wrong package`, `wrong os`, `wrong arch`,
    /// `too large`, `bad`, `downgrade`, `held` (above the pin), `too-new`; `""` when allowed.
    pub reason: String,
    /// For `too-new`: when it becomes eligible (unix seconds).
    pub eligible_at: Option<i64>,
}

/// Judges one offer.
pub fn assess(p: &Package, ctx: &Context<'_>) -> Assessed {
    let version = CellsVersion::parse(&p.version).ok();
    // An unknown release date (0: older servers) cannot be judged young.
    let eligible_at = (p.release_date > 0 && !ctx.min_age.is_zero())
        .then(|| p.release_date.saturating_add(ctx.min_age.as_secs() as i64));
    let reason = if version.is_none()
        || Release::from_package(p, ctx.server_url, ctx.download_hosts).is_err()
    {
        "invalid"
    } else if p.status != PackageStatus::Released {
        "not-released"
    } else if !p.package_name.is_empty() && p.package_name != ctx.package {
        "wrong package"
    } else if !p.binary_os.is_empty() && p.binary_os != GOOS {
        "wrong os"
    } else if !p.binary_arch.is_empty() && p.binary_arch != goarch() {
        "wrong arch"
    } else if p.binary_size as u64 > ctx.max_binary_size {
        "too large"
    } else if version
        .as_ref()
        .is_some_and(|v| is_bad(ctx.bad, ctx.package, v))
    {
        // Before "downgrade": a release that failed here is also below the highest-ever
        // version, and "bad" is what the admin needs to know.
        "bad"
    } else if version
        .as_ref()
        .is_some_and(|v| ctx.floor.admit(v).is_err())
    {
        "downgrade"
    } else if !ctx.force
        && version
            .as_ref()
            .zip(ctx.pin.as_ref())
            .is_some_and(|(v, pin)| v > pin)
    {
        "held"
    } else if !ctx.force && eligible_at.is_some_and(|at| at > ctx.now) {
        "too-new"
    } else {
        ""
    };
    Assessed {
        package: p.clone(),
        version,
        allowed: reason.is_empty(),
        reason: reason.to_string(),
        eligible_at: (reason == "too-new").then_some(eligible_at).flatten(),
    }
}

/// The bad-list entry of `version` of `package`: `PydioHome:4.4.6`.
pub fn bad_entry(package: &str, version: &str) -> String {
    format!("{package}:{version}")
}

/// True when `version` of `package` failed its health check here. An entry names the
/// package (`PydioEnterprise:4.4.2`: the Home build of the same version stays usable); an
/// entry without one (older state files) holds for every package.
pub fn is_bad(bad: &[String], package: &str, version: &CellsVersion) -> bool {
    bad.iter().any(|b| {
        let (pkg, v) = b.split_once(':').unwrap_or((package, b));
        pkg == package && CellsVersion::parse(v).is_ok_and(|b| b == *version)
    })
}

/// Allowed versions, ascending, without duplicates.
pub fn allowed_versions(list: &[Assessed]) -> Vec<CellsVersion> {
    let mut v: Vec<CellsVersion> = list
        .iter()
        .filter(|a| a.allowed)
        .filter_map(|a| a.version.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The newest `max` of [`allowed_versions`], ascending: what a check records and announces, so
/// that a server listing thousands of releases cannot bloat the state or flood the bus.
pub fn newest_allowed(list: &[Assessed], max: usize) -> Vec<CellsVersion> {
    let mut v = allowed_versions(list);
    v.drain(..v.len().saturating_sub(max));
    v
}

/// True when `policy` lets the timer install `candidate` over `installed` unattended.
pub fn auto_allows(policy: AutoPolicy, installed: &CellsVersion, candidate: &CellsVersion) -> bool {
    let (ia, ib, _) = installed.triple();
    let (ca, cb, _) = candidate.triple();
    if candidate <= installed || candidate.is_prerelease() {
        return false;
    }
    match policy {
        AutoPolicy::None => false,
        AutoPolicy::Patch => ia == ca && ib == cb,
        AutoPolicy::Minor => ia == ca,
        AutoPolicy::All => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> CellsVersion {
        CellsVersion::parse(s).unwrap()
    }

    fn pkg(version: &str) -> Package {
        Package {
            package_name: "PydioHome".into(),
            version: version.into(),
            binary_url: "https://example.org/cells".into(),
            binary_checksum: crate::trust::encode_checksum(&[7; 32]),
            binary_signature: "c2ln".into(),
            binary_size: 100,
            binary_os: "linux".into(),
            binary_arch: goarch().into(),
            ..Default::default()
        }
    }

    /// A hostile server lists 5,000 releases (and one 70-character version): what is kept is
    /// the newest 32, and the long one is not a version at all.
    #[test]
    fn a_huge_listing_keeps_only_the_newest() {
        let mut list: Vec<Assessed> = (0..5000)
            .map(|i| Assessed {
                package: pkg(&format!("5.{}.{}", i / 100, i % 100)),
                version: Some(v(&format!("5.{}.{}", i / 100, i % 100))),
                allowed: true,
                reason: String::new(),
                eligible_at: None,
            })
            .collect();
        let long = format!("9.9.9-{}", "a".repeat(64));
        assert!(CellsVersion::parse(&long).is_err());
        list.push(Assessed {
            package: pkg(&long),
            version: None,
            allowed: false,
            reason: "invalid".into(),
            eligible_at: None,
        });
        let kept = newest_allowed(&list, 32);
        assert_eq!(kept.len(), 32);
        assert_eq!(kept[0], v("5.49.68"));
        assert_eq!(kept[31], v("5.49.99"));
        assert_eq!(newest_allowed(&list[..3], 32).len(), 3);
    }

    #[test]
    fn every_offer_gets_a_reason() {
        let floor = VersionFloor {
            installed: Some(v("4.4.2")),
            committed: Some(v("4.4.2")),
        };
        let bad = vec![
            "PydioHome:4.4.7".to_string(),
            "PydioEnterprise:4.4.8".to_string(),
        ];
        let hosts = vec!["example.org".to_string()];
        let ctx = Context {
            package: "PydioHome",
            floor: &floor,
            bad: &bad,
            max_binary_size: 1000,
            server_url: "https://updatecells.pydio.com/",
            download_hosts: &hosts,
            now: 1_800_000_000,
            min_age: std::time::Duration::from_secs(3 * 86_400),
            pin: Some(v("4.5.0")),
            force: false,
        };
        let rows = [
            (pkg("4.4.5"), ""),
            (pkg("4.5.1"), "held"),
            (
                Package {
                    release_date: 1_800_000_000 - 3600,
                    ..pkg("4.4.5")
                },
                "too-new",
            ),
            (
                Package {
                    release_date: 1_800_000_000 - 4 * 86_400,
                    ..pkg("4.4.5")
                },
                "",
            ),
            (pkg("4.4.1"), "downgrade"),
            (pkg("4.4.7"), "bad"),
            (pkg("4.4.8"), ""),
            (pkg("latest"), "invalid"),
            (
                Package {
                    status: PackageStatus::Draft,
                    ..pkg("4.4.5")
                },
                "not-released",
            ),
            (
                Package {
                    status: PackageStatus::Pending,
                    ..pkg("4.4.5")
                },
                "not-released",
            ),
            (
                Package {
                    binary_url: "file:///etc/shadow".into(),
                    ..pkg("4.4.5")
                },
                "invalid",
            ),
            (
                Package {
                    package_name: "PydioEnterprise".into(),
                    ..pkg("4.4.5")
                },
                "wrong package",
            ),
            (
                Package {
                    binary_arch: "s390".into(),
                    ..pkg("4.4.5")
                },
                "wrong arch",
            ),
            (
                Package {
                    binary_os: "darwin".into(),
                    ..pkg("4.4.5")
                },
                "wrong os",
            ),
            (
                Package {
                    binary_size: 5000,
                    ..pkg("4.4.5")
                },
                "too large",
            ),
            (
                Package {
                    binary_checksum: "abc".into(),
                    ..pkg("4.4.5")
                },
                "invalid",
            ),
            // Neither the server's host nor a listed download host (an intranet address).
            (
                Package {
                    binary_url: "https://10.0.0.7/cells".into(),
                    ..pkg("4.4.5")
                },
                "invalid",
            ),
        ];
        for (p, reason) in rows {
            let a = assess(&p, &ctx);
            assert_eq!(a.reason, reason, "{p:?}");
            assert_eq!(a.allowed, reason.is_empty());
        }
        let young = Package {
            release_date: 1_800_000_000 - 3600,
            ..pkg("4.4.5")
        };
        assert_eq!(
            assess(&young, &ctx).eligible_at,
            Some(1_800_000_000 - 3600 + 3 * 86_400),
            "says when it becomes eligible"
        );
        let forced = Context {
            force: true,
            ..ctx.clone()
        };
        assert!(assess(&young, &forced).allowed && assess(&pkg("4.5.1"), &forced).allowed);
    }

    #[test]
    fn auto_policy() {
        let i = v("4.4.2");
        assert!(!auto_allows(AutoPolicy::None, &i, &v("4.4.3")));
        assert!(auto_allows(AutoPolicy::Patch, &i, &v("4.4.3")));
        assert!(!auto_allows(AutoPolicy::Patch, &i, &v("4.5.0")));
        assert!(auto_allows(AutoPolicy::Minor, &i, &v("4.5.0")));
        assert!(!auto_allows(AutoPolicy::Minor, &i, &v("5.0.0")));
        assert!(auto_allows(AutoPolicy::All, &i, &v("5.0.0")));
        assert!(!auto_allows(AutoPolicy::All, &i, &v("5.0.0-rc1")));
        assert!(!auto_allows(AutoPolicy::All, &i, &v("4.4.2")));
    }
}
