//! Cells version numbers: parsing, ordering (Cells' go-version rules) and the no-downgrade
//! policy (invariant I3).

use crate::error::{Error, Result};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A Cells version: semver with an optional leading `v`. Build metadata is kept for display
/// but ignored when ordering, as go-version does.
#[derive(Debug, Clone, Eq)]
pub struct CellsVersion(semver::Version);

/// The longest version string accepted (Cells' are about 10 characters; a longer one comes
/// from a broken or hostile source and would bloat the state, signals and logs).
pub const MAX_LEN: usize = 64;

impl CellsVersion {
    /// Parses `s`; anything that is not `[v]MAJOR.MINOR.PATCH[-PRE][+BUILD]` is
    /// `InvalidArgument`, with the string quoted.
    pub fn parse(s: &str) -> Result<Self> {
        let body = s.strip_prefix('v').unwrap_or(s);
        let parsed = if s.len() > MAX_LEN {
            None
        } else {
            semver::Version::parse(body).ok()
        };
        parsed.map(CellsVersion).ok_or_else(|| {
            // Quoted with escapes (control characters stay inert, I10), at most 80 characters.
            let shown: String = s.chars().take(80).collect();
            let more = if shown.len() < s.len() { "…" } else { "" };
            Error::InvalidArgument(format!(
                "{shown:?}{more} is not a Cells version; expected a version such as \"4.4.5\" or \"v4.4.5-rc1\" \
                 (at most {MAX_LEN} characters)"
            ))
        })
    }

    /// Major, minor, patch.
    pub fn triple(&self) -> (u64, u64, u64) {
        (self.0.major, self.0.minor, self.0.patch)
    }

    /// True when this version has a pre-release tag (`-rc1`, …).
    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }
}

impl FromStr for CellsVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Persisted as its text (`"4.4.5"`); text that is not a version does not deserialize.
impl serde::Serialize for CellsVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CellsVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CellsVersion::parse(&s).map_err(|e| serde::de::Error::custom(e.message()))
    }
}

impl fmt::Display for CellsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for CellsVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl PartialOrd for CellsVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CellsVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.major, self.0.minor, self.0.patch)
            .cmp(&(other.0.major, other.0.minor, other.0.patch))
            .then_with(|| match (self.0.pre.is_empty(), other.0.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_pre(self.0.pre.as_str(), other.0.pre.as_str()),
            })
    }
}

/// Pre-releases in go-version's order (what Cells uses): dot-separated parts compared in
/// turn; a part that parses as an int64 is numeric and sorts before any other, numeric parts
/// by value, others as strings. Two points where go-version is not a total order are settled
/// the semver way so that this one is: when one pre-release is a prefix of the other, the
/// shorter sorts first (go-version puts `alpha` after `alpha.beta` but before `alpha.1`,
/// and `alpha.beta` before `alpha.1`: a cycle); and numeric parts of equal value but other
/// spelling (`-01`, `-1`) compare as strings (go-version says each is less than the other).
fn compare_pre(a: &str, b: &str) -> Ordering {
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for (x, y) in pa.iter().zip(pb.iter()) {
        let ord = match (x.parse::<i64>(), y.parse::<i64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j).then_with(|| x.cmp(y)),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// What a candidate is measured against: the installed version, which it must beat, and the
/// floor, the highest version ever committed here, which it may equal but not go below
/// (persisted, so that replaying an old release after a rollback is still refused, while the
/// release a Rollback left can be installed again). A release is committed when it passes its
/// health check; one that fails does not raise the floor.
#[derive(Debug, Clone, Default)]
pub struct VersionBounds {
    /// Version the managed binary reports now.
    pub installed: Option<CellsVersion>,
    /// The floor: the highest version ever committed on this machine (state.json's
    /// `committed`, `highest_installed` in an earlier daemon's file).
    pub committed: Option<CellsVersion>,
}

impl VersionBounds {
    /// `Ok` when `candidate` is newer than the installed version and not older than the
    /// floor (I3), `Downgrade` otherwise.
    pub fn admit(&self, candidate: &CellsVersion) -> Result<()> {
        if let Some(installed) = &self.installed {
            if candidate <= installed {
                return Err(Error::Downgrade(format!(
                    "{candidate} is not newer than the installed version {installed}; \
                     only newer releases are installed (use Rollback to return to the previous version)"
                )));
            }
        }
        if let Some(committed) = &self.committed {
            if candidate < committed {
                return Err(Error::Downgrade(format!(
                    "{candidate} is older than {committed}, the highest version ever committed here \
                     (the floor); an older release is refused even when genuinely signed"
                )));
            }
        }
        Ok(())
    }
}

impl VersionBounds {
    /// The rule for another package's build (Home → Enterprise): the installed version
    /// itself is allowed (the same version, the other edition); anything else must be newer
    /// than the installed version and not below the committed floor.
    pub fn admit_cross(&self, candidate: &CellsVersion) -> Result<()> {
        if self.installed.as_ref() == Some(candidate) {
            return Ok(());
        }
        for (v, what) in [
            (&self.installed, "the installed version"),
            (&self.committed, "the highest version ever committed here"),
        ] {
            if let Some(v) = v {
                if candidate < v {
                    return Err(Error::Downgrade(format!(
                        "{candidate} is older than {v}, {what}; the other edition of the \
                         installed version, or of a newer one, can be installed"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> CellsVersion {
        CellsVersion::parse(s).expect("valid version")
    }

    #[test]
    fn ordering_matches_go_version() {
        assert!(v("4.4.3-rc1") < v("4.4.3"));
        assert!(v("4.4.3") < v("4.4.10"));
        assert!(v("4.4.3-rc2") > v("4.4.3-rc1"));
        // go-version's order: numeric parts (int64, sign included) before others.
        assert!(v("4.4.3-rc.-5") < v("4.4.3-rc.3"));
        assert!(v("4.4.3-rc.10") > v("4.4.3-rc.9"));
        assert!(
            v("4.4.3-rc.99999999999999999999") < v("4.4.3-rc.x"),
            "no int64: compared as a string"
        );
        assert!(
            v("4.4.3-rc.99999999999999999999") > v("4.4.3-rc.5"),
            "a string after a number"
        );
        assert!(
            v("4.4.3-alpha") < v("4.4.3-alpha.beta"),
            "a prefix sorts first"
        );
        assert!(v("4.10.0") > v("4.9.9"));
        assert_eq!(v("v4.4.3"), v("4.4.3"));
        assert_eq!(v("4.4.3+build7"), v("4.4.3"));
        assert_eq!(v("v4.4.3").to_string(), "4.4.3");
    }

    #[test]
    fn rejects_non_versions_with_the_string_quoted() {
        for bad in [
            "",
            "latest",
            "../../etc",
            "4.4",
            "4.4.3/../x",
            " 4.4.3",
            "v",
            "4.4.3\n",
        ] {
            let err = CellsVersion::parse(bad).expect_err(bad);
            assert_eq!(err.name(), "InvalidArgument", "{bad:?}");
            assert!(err.message().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn floor_refuses_same_older_and_below_highest() {
        let bounds = VersionBounds {
            installed: Some(v("4.4.2")),
            committed: Some(v("4.4.4")),
        };
        assert_eq!(bounds.admit(&v("4.4.2")).unwrap_err().name(), "Downgrade");
        assert_eq!(bounds.admit(&v("4.4.1")).unwrap_err().name(), "Downgrade");
        let err = bounds.admit(&v("4.4.3")).unwrap_err();
        assert!(err.message().contains("highest version ever committed"));
        // Equal to the floor is allowed (round 3): the release a Rollback left comes back.
        assert!(bounds.admit(&v("4.4.4")).is_ok());
        assert!(
            bounds.admit(&v("4.4.4-rc1")).is_err(),
            "a pre-release is older"
        );
        assert!(bounds.admit(&v("4.4.5")).is_ok());
        assert!(VersionBounds::default().admit(&v("0.0.1")).is_ok());
        // Another edition: the installed version itself, or the floor and above.
        let rolled_back = VersionBounds {
            installed: Some(v("4.4.5")),
            committed: Some(v("4.4.7")),
        };
        assert!(rolled_back.admit_cross(&v("4.4.5")).is_ok());
        assert!(rolled_back.admit_cross(&v("4.4.7")).is_ok());
        assert!(rolled_back.admit_cross(&v("4.4.8")).is_ok());
        assert_eq!(
            rolled_back.admit_cross(&v("4.4.6")).unwrap_err().name(),
            "Downgrade"
        );
        assert_eq!(
            rolled_back.admit_cross(&v("4.4.4")).unwrap_err().name(),
            "Downgrade"
        );
    }
}
