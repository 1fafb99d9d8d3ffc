//! Which offered releases are allowed here, and which ones `check --auto` may install. The
//! update server's own filtering is not relied on: every entry is checked.

use crate::config::AutoPolicy;
use crate::package::BadRelease;
use crate::stage::Release;
use crate::update_server::{goarch, Offer, PackageStatus, GOOS};
use crate::version::{CellsVersion, VersionBounds};

/// What is known locally when judging an offer.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The package in use.
    pub package: crate::package::Package,
    /// Versions a release must beat.
    pub bounds: &'a VersionBounds,
    /// Releases marked bad after a failed start (see [`is_bad`]).
    pub bad: &'a [BadRelease],
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

/// Why an offered release may not be staged here. Each has one wire spelling (the `Reason`
/// of an `Available` entry, docs/dbus-api.md) and one error a request for it gets
/// ([`Assessed::refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its version does not parse, or its download URL breaks the download rules.
    Invalid,
    /// Its `Status` is not `Released`.
    NotReleased,
    /// Another package (`PydioEnterprise` offered to a Home check).
    WrongPackage,
    /// Built for another OS.
    WrongOs,
    /// Built for another architecture.
    WrongArch,
    /// Larger than `[policy] max_binary_size`.
    TooLarge,
    /// It failed its health check here before.
    Bad,
    /// Not newer than the installed version, or below the floor.
    Downgrade,
    /// Above the pin set with Hold.
    Held,
    /// Younger than `[policy] min_release_age`.
    TooNew,
}

impl Reason {
    /// Every reason, in the order [`assess`] tries them.
    pub const ALL: &[Reason] = &[
        Reason::Invalid,
        Reason::NotReleased,
        Reason::WrongPackage,
        Reason::WrongOs,
        Reason::WrongArch,
        Reason::TooLarge,
        Reason::Bad,
        Reason::Downgrade,
        Reason::Held,
        Reason::TooNew,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::NotReleased => "not-released",
            Reason::WrongPackage => "wrong package",
            Reason::WrongOs => "wrong os",
            Reason::WrongArch => "wrong arch",
            Reason::TooLarge => "too large",
            Reason::Bad => "bad",
            Reason::Downgrade => "downgrade",
            Reason::Held => "held",
            Reason::TooNew => "too-new",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One offered package with the verdict.
#[derive(Debug, Clone)]
pub struct Assessed {
    /// As the server sent it.
    pub package: Offer,
    /// The parsed version, when it parses.
    pub version: Option<CellsVersion>,
    /// Why it may not be staged; `None` when it may.
    pub reason: Option<Reason>,
    /// For [`Reason::TooNew`]: when it becomes eligible (unix seconds).
    pub eligible_at: Option<i64>,
}

impl Assessed {
    /// True when it may be staged.
    pub fn allowed(&self) -> bool {
        self.reason.is_none()
    }

    /// The reason's wire spelling, `""` when allowed.
    pub fn reason_str(&self) -> &'static str {
        self.reason.map_or("", Reason::as_str)
    }

    /// The error a request for this (refused) release gets, naming the version `v`.
    pub fn refusal(&self, v: &CellsVersion) -> crate::error::Error {
        use crate::error::Error;
        let Some(reason) = self.reason else {
            return Error::Internal(format!("{v} is allowed; nothing refuses it"));
        };
        match reason {
            Reason::Downgrade => Error::Downgrade(format!(
                "{v} is not newer than the installed version, or is older than the floor (the \
                 highest version ever committed here); use Rollback to go back"
            )),
            Reason::WrongArch | Reason::WrongOs => Error::WrongArchitecture(format!(
                "{v} is offered for {}/{} only",
                crate::text::one_line(&self.package.binary_os, 20),
                crate::text::one_line(&self.package.binary_arch, 20)
            )),
            Reason::NotReleased => Error::NoSuchVersion(format!(
                "{v} is offered but not released (its Status is {:?}, not Released); it is never installed",
                self.package.status
            )),
            Reason::Held => Error::NoSuchVersion(format!(
                "{v} is held: above the pin set with Hold; release the hold, or pass Force"
            )),
            Reason::TooNew => Error::NoSuchVersion(format!(
                "{v} is too new: [policy] min_release_age makes it eligible at {}; pass Force to \
                 take it now",
                self.eligible_at
                    .and_then(|t| jiff::Timestamp::from_second(t).ok())
                    .map_or_else(|| "a later date".to_string(), |t| t.to_string())
            )),
            Reason::Bad => Error::NoSuchVersion(format!(
                "{v} failed its health check here before and is marked bad; it is not installed again"
            )),
            Reason::Invalid | Reason::WrongPackage | Reason::TooLarge => Error::NoSuchVersion(
                format!("{v} is offered but not allowed here ({reason})"),
            ),
        }
    }
}

/// Judges one offer.
pub fn assess(p: &Offer, ctx: &Context<'_>) -> Assessed {
    let version = CellsVersion::parse(&p.version).ok();
    // An unknown release date (0: older servers) cannot be judged young.
    let eligible_at = (p.release_date > 0 && !ctx.min_age.is_zero())
        .then(|| p.release_date.saturating_add(ctx.min_age.as_secs() as i64));
    let reason = if version.is_none()
        || Release::from_offer(p, ctx.package, ctx.server_url, ctx.download_hosts).is_err()
    {
        Some(Reason::Invalid)
    } else if p.status != PackageStatus::Released {
        Some(Reason::NotReleased)
    } else if !p.package_name.is_empty()
        && crate::package::Package::parse(&p.package_name) != Some(ctx.package)
    {
        Some(Reason::WrongPackage)
    } else if !p.binary_os.is_empty() && p.binary_os != GOOS {
        Some(Reason::WrongOs)
    } else if !p.binary_arch.is_empty() && p.binary_arch != goarch() {
        Some(Reason::WrongArch)
    } else if p.binary_size as u64 > ctx.max_binary_size {
        Some(Reason::TooLarge)
    } else if version
        .as_ref()
        .is_some_and(|v| is_bad(ctx.bad, ctx.package, v))
    {
        // Before "downgrade": a release that failed here is also below the highest-ever
        // version, and "bad" is what the admin needs to know.
        Some(Reason::Bad)
    } else if version
        .as_ref()
        .is_some_and(|v| ctx.bounds.admit(v).is_err())
    {
        Some(Reason::Downgrade)
    } else if !ctx.force
        && version
            .as_ref()
            .zip(ctx.pin.as_ref())
            .is_some_and(|(v, pin)| v > pin)
    {
        Some(Reason::Held)
    } else if !ctx.force && eligible_at.is_some_and(|at| at > ctx.now) {
        Some(Reason::TooNew)
    } else {
        None
    };
    Assessed {
        package: p.clone(),
        version,
        reason,
        eligible_at: (reason == Some(Reason::TooNew))
            .then_some(eligible_at)
            .flatten(),
    }
}

/// True when `version` of `package` failed its health check here. An entry names the
/// package (`PydioEnterprise:4.4.2`: the Home build of the same version stays usable); an
/// entry without one (older state files) holds for every package.
pub fn is_bad(
    bad: &[BadRelease],
    package: crate::package::Package,
    version: &CellsVersion,
) -> bool {
    bad.iter().any(|b| b.marks(package, version))
}

/// Allowed versions, ascending, without duplicates.
pub fn allowed_versions(list: &[Assessed]) -> Vec<CellsVersion> {
    let mut v: Vec<CellsVersion> = list
        .iter()
        .filter(|a| a.allowed())
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
/// What `check --auto` knows when it decides.
#[derive(Debug, Clone)]
pub struct AutoFacts<'a> {
    /// `[policy] auto`.
    pub policy: AutoPolicy,
    /// The `Hold` reason (`""`: not held) and `HoldVersion` (a pin: auto goes on under it).
    pub hold: &'a str,
    pub hold_version: &'a str,
    pub installed: &'a CellsVersion,
    /// The allowed versions on offer (the fresh check's, or the last check's).
    pub offered: &'a [String],
    /// `StagedVersion` (`""`: none).
    pub staged: &'a str,
    /// Whether now is inside `[policy] windows`.
    pub in_window: bool,
}

/// What `check --auto` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoDecision {
    /// Held without a pin: nothing is installed automatically.
    Held(String),
    /// Nothing the auto policy allows.
    Nothing,
    /// Inside a window: install `target`, from the staging area when it is the staged one.
    Install {
        target: CellsVersion,
        from_staged: bool,
    },
    /// Outside the windows: stage `target` now, apply it in the next window.
    Stage { target: CellsVersion },
    /// Outside the windows with `target` already staged: wait for the next window.
    Wait { target: CellsVersion },
}

/// The `check --auto` decision: the newest offered version the auto policy allows, else the
/// staged one if it fits; then the hold and the windows say what happens to it. Allowed
/// already means newer than the floor, not bad, released, under the pin, old enough.
pub fn auto_decide(f: &AutoFacts<'_>) -> AutoDecision {
    if !f.hold.is_empty() && f.hold_version.is_empty() {
        return AutoDecision::Held(f.hold.to_string());
    }
    let fits = |v: &CellsVersion| auto_allows(f.policy, f.installed, v);
    let offered = f
        .offered
        .iter()
        .filter_map(|v| CellsVersion::parse(v).ok())
        .filter(fits)
        .max();
    let staged = CellsVersion::parse(f.staged).ok().filter(fits);
    let Some(target) = offered.or(staged.clone()) else {
        return AutoDecision::Nothing;
    };
    let from_staged = staged.as_ref() == Some(&target);
    match (f.in_window, from_staged) {
        (true, _) => AutoDecision::Install {
            target,
            from_staged,
        },
        (false, false) => AutoDecision::Stage { target },
        (false, true) => AutoDecision::Wait { target },
    }
}

/// True when `check --auto` may install `candidate` over `installed` under `policy`.
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

    fn pkg(version: &str) -> Offer {
        Offer {
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
                reason: None,
                eligible_at: None,
            })
            .collect();
        let long = format!("9.9.9-{}", "a".repeat(64));
        assert!(CellsVersion::parse(&long).is_err());
        list.push(Assessed {
            package: pkg(&long),
            version: None,
            reason: Some(Reason::Invalid),
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
        let bounds = VersionBounds {
            installed: Some(v("4.4.2")),
            committed: Some(v("4.4.2")),
        };
        let bad = ["PydioHome:4.4.7", "PydioEnterprise:4.4.8"]
            .map(|b| BadRelease::parse(b).unwrap())
            .to_vec();
        let hosts = vec!["example.org".to_string()];
        let ctx = Context {
            package: crate::package::Package::Home,
            bounds: &bounds,
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
                Offer {
                    release_date: 1_800_000_000 - 3600,
                    ..pkg("4.4.5")
                },
                "too-new",
            ),
            (
                Offer {
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
                Offer {
                    status: PackageStatus::Draft,
                    ..pkg("4.4.5")
                },
                "not-released",
            ),
            (
                Offer {
                    status: PackageStatus::Pending,
                    ..pkg("4.4.5")
                },
                "not-released",
            ),
            (
                Offer {
                    binary_url: "file:///etc/shadow".into(),
                    ..pkg("4.4.5")
                },
                "invalid",
            ),
            (
                Offer {
                    package_name: "PydioEnterprise".into(),
                    ..pkg("4.4.5")
                },
                "wrong package",
            ),
            (
                Offer {
                    binary_arch: "s390".into(),
                    ..pkg("4.4.5")
                },
                "wrong arch",
            ),
            (
                Offer {
                    binary_os: "darwin".into(),
                    ..pkg("4.4.5")
                },
                "wrong os",
            ),
            (
                Offer {
                    binary_size: 5000,
                    ..pkg("4.4.5")
                },
                "too large",
            ),
            (
                Offer {
                    binary_checksum: "abc".into(),
                    ..pkg("4.4.5")
                },
                "invalid",
            ),
            // Neither the server's host nor a listed download host (an intranet address).
            (
                Offer {
                    binary_url: "https://10.0.0.7/cells".into(),
                    ..pkg("4.4.5")
                },
                "invalid",
            ),
        ];
        for (p, reason) in rows {
            let a = assess(&p, &ctx);
            assert_eq!(a.reason_str(), reason, "{p:?}");
            assert_eq!(a.allowed(), reason.is_empty());
        }
        let young = Offer {
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
        assert!(assess(&young, &forced).allowed() && assess(&pkg("4.5.1"), &forced).allowed());
    }

    #[test]
    fn each_reason_has_one_spelling_and_one_error() {
        let spellings: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(spellings.len(), Reason::ALL.len());
        for r in Reason::ALL {
            let a = Assessed {
                package: pkg("4.4.5"),
                version: Some(v("4.4.5")),
                reason: Some(*r),
                eligible_at: None,
            };
            let want = match r {
                Reason::Downgrade => "Downgrade",
                Reason::WrongArch | Reason::WrongOs => "WrongArchitecture",
                _ => "NoSuchVersion",
            };
            let e = a.refusal(&v("4.4.5"));
            assert_eq!(e.name(), want, "{r}");
            assert!(e.to_string().contains("4.4.5"), "{r}: {e}");
            assert!(!a.allowed());
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

    #[test]
    fn check_auto_decides_row_by_row() {
        let i = v("4.4.2");
        let s = |l: &[&str]| l.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let base = AutoFacts {
            policy: AutoPolicy::Patch,
            hold: "",
            hold_version: "",
            installed: &i,
            offered: &[],
            staged: "",
            in_window: true,
        };
        let offered = s(&["4.4.3", "4.4.5", "4.5.0", "junk"]);
        let only_minor = s(&["4.5.0"]);
        let rows: Vec<(AutoFacts<'_>, AutoDecision)> = vec![
            (
                AutoFacts {
                    hold: "freeze",
                    offered: &offered,
                    ..base.clone()
                },
                AutoDecision::Held("freeze".into()),
            ),
            // A pin is a hold with a version: auto goes on under it.
            (
                AutoFacts {
                    hold: "pin",
                    hold_version: "4.4.9",
                    offered: &offered,
                    ..base.clone()
                },
                AutoDecision::Install {
                    target: v("4.4.5"),
                    from_staged: false,
                },
            ),
            (base.clone(), AutoDecision::Nothing),
            (
                AutoFacts {
                    offered: &only_minor,
                    ..base.clone()
                },
                AutoDecision::Nothing,
            ),
            (
                AutoFacts {
                    offered: &offered,
                    staged: "4.4.5",
                    ..base.clone()
                },
                AutoDecision::Install {
                    target: v("4.4.5"),
                    from_staged: true,
                },
            ),
            // Nothing offered (not due): the staged release, if the policy allows it.
            (
                AutoFacts {
                    staged: "4.4.3",
                    ..base.clone()
                },
                AutoDecision::Install {
                    target: v("4.4.3"),
                    from_staged: true,
                },
            ),
            (
                AutoFacts {
                    staged: "4.5.0",
                    ..base.clone()
                },
                AutoDecision::Nothing,
            ),
            (
                AutoFacts {
                    offered: &offered,
                    in_window: false,
                    ..base.clone()
                },
                AutoDecision::Stage { target: v("4.4.5") },
            ),
            (
                AutoFacts {
                    offered: &offered,
                    staged: "4.4.5",
                    in_window: false,
                    ..base.clone()
                },
                AutoDecision::Wait { target: v("4.4.5") },
            ),
            (
                AutoFacts {
                    policy: AutoPolicy::None,
                    offered: &offered,
                    ..base.clone()
                },
                AutoDecision::Nothing,
            ),
        ];
        for (facts, want) in rows {
            assert_eq!(auto_decide(&facts), want, "{facts:?}");
        }
    }
}
