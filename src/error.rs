//! Typed errors. Each variant is one D-Bus error name of the contract
//! (`com.pydio.CellsUpdater1.Error.<Name>`); its text is the message an admin reads.

/// Prefix of every D-Bus error name this service returns.
pub const ERROR_PREFIX: &str = "com.pydio.CellsUpdater1.Error.";

/// Every failure cells-updater reports. The message says what happened and what to do.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    NotAuthorized(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NoSuchVersion(String),
    #[error("{0}")]
    Downgrade(String),
    #[error("{0}")]
    ServerError(String),
    #[error("{0}")]
    DownloadFailed(String),
    #[error("{0}")]
    ChecksumMismatch(String),
    #[error("{0}")]
    SignatureInvalid(String),
    #[error("{0}")]
    NoTrustedKey(String),
    #[error("{0}")]
    WrongArchitecture(String),
    #[error("{0}")]
    VersionMismatch(String),
    #[error("{0}")]
    NothingStaged(String),
    #[error("{0}")]
    DiskFull(String),
    #[error("{0}")]
    SwapFailed(String),
    #[error("{0}")]
    UnitFailed(String),
    #[error("{0}")]
    RollbackFailed(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("{0}")]
    LicenseRejected(String),
}

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The short name, e.g. `ChecksumMismatch`.
    pub fn name(&self) -> &'static str {
        match self {
            Error::NotAuthorized(_) => "NotAuthorized",
            Error::Busy(_) => "Busy",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::NoSuchVersion(_) => "NoSuchVersion",
            Error::Downgrade(_) => "Downgrade",
            Error::ServerError(_) => "ServerError",
            Error::DownloadFailed(_) => "DownloadFailed",
            Error::ChecksumMismatch(_) => "ChecksumMismatch",
            Error::SignatureInvalid(_) => "SignatureInvalid",
            Error::NoTrustedKey(_) => "NoTrustedKey",
            Error::WrongArchitecture(_) => "WrongArchitecture",
            Error::VersionMismatch(_) => "VersionMismatch",
            Error::NothingStaged(_) => "NothingStaged",
            Error::DiskFull(_) => "DiskFull",
            Error::SwapFailed(_) => "SwapFailed",
            Error::UnitFailed(_) => "UnitFailed",
            Error::RollbackFailed(_) => "RollbackFailed",
            Error::Cancelled(_) => "Cancelled",
            Error::LicenseRejected(_) => "LicenseRejected",
        }
    }

    /// The full D-Bus error name, e.g. `com.pydio.CellsUpdater1.Error.ChecksumMismatch`.
    pub fn dbus_name(&self) -> String {
        format!("{ERROR_PREFIX}{}", self.name())
    }

    /// The message alone.
    pub fn message(&self) -> String {
        self.to_string()
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
