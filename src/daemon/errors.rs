//! The D-Bus face of [`crate::Error`]: one error name per variant,
//! `com.pydio.CellsUpdater1.Error.<Name>`, made from the same list.

use crate::error::Error;

macro_rules! bus_errors {
    ($($name:ident),*) => {
        /// Errors as sent on the bus.
        #[derive(Debug, zbus::DBusError)]
        #[zbus(prefix = "com.pydio.CellsUpdater1.Error")]
        #[allow(missing_docs)]
        pub enum BusError {
            #[zbus(error)]
            ZBus(zbus::Error),
            $($name(String),)*
        }

        impl From<Error> for BusError {
            fn from(e: Error) -> Self {
                match e {
                    $(Error::$name(m) => BusError::$name(bounded(m)),)*
                }
            }
        }
    };
}
crate::for_each_error!(bus_errors);

/// Longest error message sent: a message quotes what it refuses, and a caller's 1 MiB
/// string is not sent back to it (nor to the journal).
pub const MAX_MESSAGE: usize = 2048;

fn bounded(mut m: String) -> String {
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn every_library_error_keeps_its_name_on_the_bus() {
        for name in crate::error::ERROR_NAMES {
            let e = Error::from_name(name, String::new());
            let want = e.dbus_name();
            assert_eq!(BusError::from(e).name().as_str(), want);
        }
        let long = BusError::from(Error::InvalidArgument("é".repeat(5000)));
        assert!(matches!(long, BusError::InvalidArgument(m) if m.len() <= MAX_MESSAGE + 3));
    }
}
