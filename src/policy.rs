//! Which offered releases are allowed here, and which ones `check --auto` may install. The
//! update server's own filtering is not relied on: every entry is checked.

use crate::config::AutoPolicy;
use crate::stage::Release;
use crate::update_server::{goarch, Package, GOOS};
use crate::version::{CellsVersion, VersionFloor};

/// What is known locally when judging an offer.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Package in use.
    pub package: &'a str,
    /// Versions a release must beat.
    pub floor: &'a VersionFloor,
    /// Versions marked bad after a failed start.
    pub bad: &'a [String],
    /// `[server] max_binary_size`.
    pub max_binary_size: u64,
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
    /// Why not: `invalid`, `wrong package`, `wrong os`, `wrong arch`, `too large`,
    /// `downgrade`, `bad`; `""` when allowed.
    pub reason: String,
}

/// Judges one offer.
pub fn assess(p: &Package, ctx: &Context<'_>) -> Assessed {
    let version = CellsVersion::parse(&p.version).ok();
    let reason = if version.is_none() || Release::from_package(p).is_err() {
        "invalid"
    } else if !p.package_name.is_empty() && p.package_name != ctx.package {
        "wrong package"
    } else if !p.binary_os.is_empty() && p.binary_os != GOOS {
        "wrong os"
    } else if !p.binary_arch.is_empty() && p.binary_arch != goarch() {
        "wrong arch"
    } else if p.binary_size as u64 > ctx.max_binary_size {
        "too large"
    } else if version.as_ref().is_some_and(|v| {
        ctx.bad
            .iter()
            .any(|b| CellsVersion::parse(b).is_ok_and(|b| b == *v))
    }) {
        // Before "downgrade": a release that failed here is also below the highest-ever
        // version, and "bad" is what the admin needs to know.
        "bad"
    } else if version
        .as_ref()
        .is_some_and(|v| ctx.floor.admit(v).is_err())
    {
        "downgrade"
    } else {
        ""
    };
    Assessed {
        package: p.clone(),
        version,
        allowed: reason.is_empty(),
        reason: reason.to_string(),
    }
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

    #[test]
    fn every_offer_gets_a_reason() {
        let floor = VersionFloor {
            installed: Some(v("4.4.2")),
            highest: Some(v("4.4.2")),
        };
        let bad = vec!["4.4.7".to_string()];
        let ctx = Context {
            package: "PydioHome",
            floor: &floor,
            bad: &bad,
            max_binary_size: 1000,
        };
        let rows = [
            (pkg("4.4.5"), ""),
            (pkg("4.4.1"), "downgrade"),
            (pkg("4.4.7"), "bad"),
            (pkg("latest"), "invalid"),
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
        ];
        for (p, reason) in rows {
            let a = assess(&p, &ctx);
            assert_eq!(a.reason, reason, "{p:?}");
            assert_eq!(a.allowed, reason.is_empty());
        }
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
