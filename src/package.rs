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

    /// True when `s` spells a package.
    pub fn is_known(s: &str) -> bool {
        Package::parse(s).is_some()
    }

    /// True when `s` spells the Enterprise package.
    pub fn is_enterprise(s: &str) -> bool {
        Package::parse(s) == Some(Package::Enterprise)
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
        assert!(Package::is_enterprise("PydioEnterprise") && !Package::is_enterprise("PydioHome"));
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
}
