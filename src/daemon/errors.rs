//! The D-Bus face of [`crate::Error`]: one error name per variant,
//! `com.pydio.CellsUpdater1.Error.<Name>`.

use crate::error::Error;

/// Errors as sent on the bus.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "com.pydio.CellsUpdater1.Error")]
#[allow(missing_docs)]
pub enum BusError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotAuthorized(String),
    Busy(String),
    InvalidArgument(String),
    NoSuchVersion(String),
    Downgrade(String),
    ServerError(String),
    DownloadFailed(String),
    ChecksumMismatch(String),
    SignatureInvalid(String),
    NoTrustedKey(String),
    WrongArchitecture(String),
    VersionMismatch(String),
    NothingStaged(String),
    DiskFull(String),
    SwapFailed(String),
    UnitFailed(String),
    RollbackFailed(String),
    Cancelled(String),
    LicenseRejected(String),
}

impl From<Error> for BusError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotAuthorized(m) => BusError::NotAuthorized(m),
            Error::Busy(m) => BusError::Busy(m),
            Error::InvalidArgument(m) => BusError::InvalidArgument(m),
            Error::NoSuchVersion(m) => BusError::NoSuchVersion(m),
            Error::Downgrade(m) => BusError::Downgrade(m),
            Error::ServerError(m) => BusError::ServerError(m),
            Error::DownloadFailed(m) => BusError::DownloadFailed(m),
            Error::ChecksumMismatch(m) => BusError::ChecksumMismatch(m),
            Error::SignatureInvalid(m) => BusError::SignatureInvalid(m),
            Error::NoTrustedKey(m) => BusError::NoTrustedKey(m),
            Error::WrongArchitecture(m) => BusError::WrongArchitecture(m),
            Error::VersionMismatch(m) => BusError::VersionMismatch(m),
            Error::NothingStaged(m) => BusError::NothingStaged(m),
            Error::DiskFull(m) => BusError::DiskFull(m),
            Error::SwapFailed(m) => BusError::SwapFailed(m),
            Error::UnitFailed(m) => BusError::UnitFailed(m),
            Error::RollbackFailed(m) => BusError::RollbackFailed(m),
            Error::Cancelled(m) => BusError::Cancelled(m),
            Error::LicenseRejected(m) => BusError::LicenseRejected(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn every_library_error_keeps_its_name_on_the_bus() {
        let all = [
            Error::NotAuthorized(String::new()),
            Error::Busy(String::new()),
            Error::InvalidArgument(String::new()),
            Error::NoSuchVersion(String::new()),
            Error::Downgrade(String::new()),
            Error::ServerError(String::new()),
            Error::DownloadFailed(String::new()),
            Error::ChecksumMismatch(String::new()),
            Error::SignatureInvalid(String::new()),
            Error::NoTrustedKey(String::new()),
            Error::WrongArchitecture(String::new()),
            Error::VersionMismatch(String::new()),
            Error::NothingStaged(String::new()),
            Error::DiskFull(String::new()),
            Error::SwapFailed(String::new()),
            Error::UnitFailed(String::new()),
            Error::RollbackFailed(String::new()),
            Error::Cancelled(String::new()),
            Error::LicenseRejected(String::new()),
        ];
        for e in all {
            let want = e.dbus_name();
            assert_eq!(BusError::from(e).name().as_str(), want);
        }
    }
}
