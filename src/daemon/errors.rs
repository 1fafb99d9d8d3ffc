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
                    $(Error::$name(m) => BusError::$name(m),)*
                }
            }
        }
    };
}
crate::for_each_error!(bus_errors);

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
    }
}
