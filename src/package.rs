//! The update server's vocabulary, one spelling each as the update server, the bus, the
//! configuration and the state file use it: the two Cells packages (`PydioHome`,
//! `PydioEnterprise`) and the two release channels (`stable`, `dev`).

/// A Cells package (edition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Package {
    /// The Home edition (the default).
    #[default]
    Home,
    /// The Enterprise distribution (a license; its own binary name).
    Enterprise,
}

impl Package {
    /// Both, Home first.
    pub const ALL: [Package; 2] = [Package::Home, Package::Enterprise];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Package::Home => "PydioHome",
            Package::Enterprise => "PydioEnterprise",
        }
    }

    /// The package `s` spells exactly, if any.
    pub fn parse(s: &str) -> Option<Package> {
        Package::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The other edition.
    pub fn other(self) -> Package {
        match self {
            Package::Home => Package::Enterprise,
            Package::Enterprise => Package::Home,
        }
    }
}

impl std::fmt::Display for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Channel {
    /// Releases (the default).
    #[default]
    Stable,
    /// Pre-releases too.
    Dev,
}

impl Channel {
    /// Both, `stable` first.
    pub const ALL: [Channel; 2] = [Channel::Stable, Channel::Dev];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Stable => "stable",
            Channel::Dev => "dev",
        }
    }

    /// The channel `s` spells exactly, if any.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release marked bad here (it failed to come up): never installed again automatically.
/// Spelled `PydioHome:4.4.6` (the `BadVersions` property and `state.json`); a bare `4.4.6`,
/// written by earlier daemons, stands for that version of either package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRelease {
    /// Its package; `None` for an entry of an earlier daemon (either package).
    pub package: Option<Package>,
    /// Its version.
    pub version: crate::version::CellsVersion,
}

impl BadRelease {
    /// `version` of `package`.
    pub fn new(package: Package, version: crate::version::CellsVersion) -> Self {
        BadRelease {
            package: Some(package),
            version,
        }
    }

    /// The entry `s` spells, or why it is not one.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (package, version) = match s.split_once(':') {
            Some((p, v)) => (
                Some(Package::parse(p).ok_or_else(|| {
                    format!(
                        "{:?} is not PydioHome or PydioEnterprise",
                        crate::text::one_line(p, 40)
                    )
                })?),
                v,
            ),
            None => (None, s),
        };
        let version = crate::version::CellsVersion::parse(version).map_err(|e| e.message())?;
        Ok(BadRelease { package, version })
    }

    /// What is left of this entry once `ForgetBadVersion` forgets `version` of `package` (of
    /// both editions when `None`): nothing, the entry itself, or, for an earlier daemon's
    /// bare entry (either edition), the other edition's mark, so that it still binds it.
    pub fn without(
        &self,
        package: Option<Package>,
        version: &crate::version::CellsVersion,
    ) -> Option<BadRelease> {
        if self.version != *version {
            return Some(self.clone());
        }
        match (self.package, package) {
            (_, None) => None,
            (Some(mine), Some(p)) if mine == p => None,
            (Some(_), Some(_)) => Some(self.clone()),
            (None, Some(p)) => Some(BadRelease::new(p.other(), version.clone())),
        }
    }

    /// True when this entry marks `version` of `package`.
    pub fn marks(&self, package: Package, version: &crate::version::CellsVersion) -> bool {
        self.package.is_none_or(|p| p == package) && self.version == *version
    }
}

impl std::fmt::Display for BadRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.package {
            Some(p) => write!(f, "{p}:{}", self.version),
            None => write!(f, "{}", self.version),
        }
    }
}

impl serde::Serialize for BadRelease {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BadRelease {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BadRelease::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Both types travel as their wire spelling, and nothing else deserializes.
macro_rules! wire_spelling {
    ($t:ty, $what:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{:?} is not {}",
                        crate::text::one_line(&s, 40),
                        $what
                    ))
                })
            }
        }
    };
}
wire_spelling!(Package, "PydioHome or PydioEnterprise");
wire_spelling!(Channel, "stable or dev");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_each_and_nothing_else() {
        for p in Package::ALL {
            assert_eq!(Package::parse(p.as_str()), Some(p));
        }
        for s in ["", "pydiohome", "PydioHome ", "Pydio", "PydioEnterprise\n"] {
            assert_eq!(Package::parse(s), None, "{s:?}");
        }
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        for s in ["", "Stable", "beta", "dev ", "nightly"] {
            assert_eq!(Channel::parse(s), None, "{s:?}");
        }
        assert_eq!(Channel::default(), Channel::Stable);
        assert_eq!(serde_json::to_string(&Channel::Dev).unwrap(), "\"dev\"");
        assert_eq!(
            serde_json::from_str::<Package>("\"PydioEnterprise\"").unwrap(),
            Package::Enterprise
        );
        let e = serde_json::from_str::<Channel>("\"beta\"").unwrap_err();
        assert!(
            e.to_string().contains("\"beta\" is not stable or dev"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_release_keeps_its_text_and_marks_what_it_names() {
        let v = |s: &str| crate::version::CellsVersion::parse(s).unwrap();
        let home = BadRelease::parse("PydioHome:4.4.6").unwrap();
        assert_eq!(home, BadRelease::new(Package::Home, v("4.4.6")));
        assert_eq!(home.to_string(), "PydioHome:4.4.6");
        assert!(home.marks(Package::Home, &v("4.4.6")));
        assert!(!home.marks(Package::Enterprise, &v("4.4.6")));
        assert!(!home.marks(Package::Home, &v("4.4.7")));
        // An earlier daemon's bare entry marks either package.
        let bare = BadRelease::parse("4.4.6").unwrap();
        assert_eq!(bare.to_string(), "4.4.6");
        assert!(bare.marks(Package::Enterprise, &v("4.4.6")));
        for (s, says) in [
            ("Evil:4.4.6", "is not PydioHome or PydioEnterprise"),
            ("PydioHome:", "is not a Cells version"),
            ("PydioHome:four", "is not a Cells version"),
            ("", "is not a Cells version"),
        ] {
            let e = BadRelease::parse(s).unwrap_err();
            assert!(e.contains(says), "{s:?}: {e}");
        }
        // Forgetting: a version alone clears both editions and a bare entry; a package, its
        // own; a package and a bare entry leave the other edition's mark.
        let v6 = v("4.4.6");
        assert_eq!(home.without(None, &v6), None);
        assert_eq!(bare.without(None, &v6), None);
        assert_eq!(home.without(Some(Package::Home), &v6), None);
        assert_eq!(
            home.without(Some(Package::Enterprise), &v6),
            Some(home.clone())
        );
        assert_eq!(home.without(None, &v("4.4.7")), Some(home.clone()));
        let left = bare.without(Some(Package::Home), &v6).unwrap();
        assert_eq!(left, BadRelease::new(Package::Enterprise, v6.clone()));
        assert!(!left.marks(Package::Home, &v6) && left.marks(Package::Enterprise, &v6));
        let back: Vec<BadRelease> =
            serde_json::from_str(r#"["PydioEnterprise:4.4.6","4.4.5"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            r#"["PydioEnterprise:4.4.6","4.4.5"]"#
        );
    }
}
