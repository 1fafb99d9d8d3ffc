//! Typed errors. Each variant is one D-Bus error name of the contract
//! (`com.pydio.CellsUpdater1.Error.<Name>`); its text is the message an admin reads.

pub use crate::contract::ERROR_PREFIX;

/// Calls `$m!` with every error name of the contract, in the contract's order. The list is
/// written once; the library enum, the D-Bus enum and the name table are made from it.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_error {
    ($m:ident) => {
        $m!(
            NotAuthorized,
            Busy,
            InvalidArgument,
            NoSuchVersion,
            Downgrade,
            ServerError,
            DownloadFailed,
            ChecksumMismatch,
            SignatureInvalid,
            NoTrustedKey,
            WrongArchitecture,
            VersionMismatch,
            NothingStaged,
            DiskFull,
            SwapFailed,
            UnitFailed,
            RollbackFailed,
            Cancelled,
            LicenseRejected,
            UnsafePath,
            NotCancellable,
            Held,
            FleetHalted,
            FleetUnavailable,
            NoPreviousVersion,
            Internal
        );
    };
}

macro_rules! library_errors {
    ($($name:ident),*) => {
        /// Every failure cells-updater reports. The message says what happened and what to do.
        #[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
        pub enum Error {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                #[error("{0}")]
                $name(String),
            )*
        }

        /// Every short error name, in the contract's order.
        pub const ERROR_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl Error {
            /// The short name, e.g. `ChecksumMismatch`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Error::$name(_) => stringify!($name),)*
                }
            }

            /// The message alone.
            pub fn message(&self) -> String {
                match self {
                    $(Error::$name(m) => m.clone(),)*
                }
            }

            /// The error called `name` (short or full D-Bus name) with `message`; an unknown
            /// name (from a helper process of another version) becomes `Internal`.
            pub fn from_name(name: &str, message: String) -> Error {
                match name.strip_prefix(ERROR_PREFIX).unwrap_or(name) {
                    $(stringify!($name) => Error::$name(message),)*
                    other => Error::Internal(format!("{other}: {message}")),
                }
            }
        }
    };
}
for_each_error!(library_errors);

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The full D-Bus error name, e.g. `com.pydio.CellsUpdater1.Error.ChecksumMismatch`.
    pub fn dbus_name(&self) -> String {
        format!("{ERROR_PREFIX}{}", self.name())
    }

    /// Maps an I/O failure during a step: a full disk becomes `DiskFull`, anything else the
    /// step's own error built by `other`.
    pub fn from_io(err: &std::io::Error, what: &str, other: fn(String) -> Error) -> Error {
        if err.raw_os_error() == Some(libc::ENOSPC) || err.raw_os_error() == Some(libc::EDQUOT) {
            Error::DiskFull(format!(
                "{what}: no space left on the device; free some space and try again"
            ))
        } else {
            other(format!("{what}: {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let e = Error::ChecksumMismatch("x".into());
        assert_eq!(
            e.dbus_name(),
            "com.pydio.CellsUpdater1.Error.ChecksumMismatch"
        );
        assert_eq!(e.message(), "x");
        for name in ERROR_NAMES {
            let e = Error::from_name(name, "m".into());
            assert_eq!(e.name(), *name);
            assert_eq!(
                Error::from_name(&format!("{ERROR_PREFIX}{name}"), "m".into()),
                e
            );
        }
        assert_eq!(Error::from_name("Nope", "m".into()).name(), "Internal");
    }

    #[test]
    fn enospc_becomes_disk_full() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = Error::from_io(&io, "writing /x", Error::DownloadFailed);
        assert_eq!(e.name(), "DiskFull");
        let io = std::io::Error::from_raw_os_error(libc::EIO);
        let e = Error::from_io(&io, "writing /x", Error::DownloadFailed);
        assert_eq!(e.name(), "DownloadFailed");
        assert!(e.message().starts_with("writing /x: "));
    }
}
