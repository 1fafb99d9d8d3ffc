//! The two Cells packages, with the one spelling the update server, the bus and the state
//! file use (`PydioHome`, `PydioEnterprise`).

/// A Cells package (edition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Package {
    /// The Home edition.
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
    }
}
