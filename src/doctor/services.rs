//! The services around the daemon, asked over the system bus: the daemon itself, polkit, the
//! check timer, and the package the daemon runs.

use super::{finding, Finding, Host, Level, CHECK_TIMER};
use crate::contract::manager_prop;
use std::time::Duration;

impl Host {
    /// The package in use: the daemon's (after an Enterprise upgrade), else the config's.
    pub(super) async fn package(&self) -> crate::package::Package {
        if let Some(bus) = &self.bus {
            if let Ok(Ok(p)) = tokio::time::timeout(
                Duration::from_secs(10),
                manager_property(bus, manager_prop::PACKAGE_NAME),
            )
            .await
            {
                if let Some(p) = String::try_from(p)
                    .ok()
                    .and_then(|s| crate::package::Package::parse(&s))
                {
                    return p;
                }
            }
        }
        self.cfg.package
    }

    pub(super) async fn check_polkit(&self) -> Finding {
        let Some(bus) = &self.bus else {
            return finding(
                "polkit",
                Level::Warn,
                "the system bus cannot be reached".into(),
                "",
            );
        };
        let present = async {
            let dbus = zbus::fdo::DBusProxy::new(bus).await.ok()?;
            let name = zbus::names::BusName::try_from("org.freedesktop.PolicyKit1").ok()?;
            if dbus.name_has_owner(name.clone()).await.ok()? {
                return Some(true);
            }
            let activatable = dbus.list_activatable_names().await.ok()?;
            Some(activatable.iter().any(|n| n.as_str() == name.as_str()))
        };
        match tokio::time::timeout(Duration::from_secs(10), present).await {
            Ok(Some(true)) => finding(
                "polkit",
                Level::Ok,
                "present: admins granted by its rules may use the daemon".into(),
                "",
            ),
            _ => finding(
                "polkit",
                Level::Warn,
                "polkit is not on the system bus: only root and the Cells user may use the daemon"
                    .into(),
                "install polkitd (Debian) or polkit (RHEL) to grant other admins",
            ),
        }
    }

    pub(super) async fn check_timer(&self) -> Finding {
        let Some(bus) = &self.bus else {
            return finding(
                "timer",
                Level::Warn,
                "the system bus cannot be reached".into(),
                "",
            );
        };
        match crate::systemd::timer_facts(bus, CHECK_TIMER).await {
            Ok(t) if t.load_state != "loaded" => finding(
                "timer",
                Level::Warn,
                format!("{CHECK_TIMER} is {}: no scheduled checks", t.load_state),
                "reinstall cells-updater (the package ships the timer)",
            ),
            Ok(t) if t.unit_file_state != "enabled" || t.active_state != "active" => finding(
                "timer",
                Level::Warn,
                format!(
                    "{CHECK_TIMER} is {} and {}: no scheduled checks",
                    t.unit_file_state, t.active_state
                ),
                "systemctl enable --now cells-updater-check.timer",
            ),
            Ok(t) => finding(
                "timer",
                Level::Ok,
                format!(
                    "{CHECK_TIMER} is enabled; next run {}",
                    crate::schedule::format_us(t.next_elapse_us)
                ),
                "",
            ),
            Err(e) => finding("timer", Level::Warn, e.message(), ""),
        }
    }

    pub(super) async fn check_daemon(&self) -> Finding {
        let Some(bus) = &self.bus else {
            return finding(
                "daemon",
                Level::Fail,
                "the system bus cannot be reached".into(),
                "systemctl status dbus",
            );
        };
        match tokio::time::timeout(
            Duration::from_secs(30),
            manager_property(bus, manager_prop::DAEMON_VERSION),
        )
        .await
        {
            Ok(Ok(v)) => finding(
                "daemon",
                Level::Ok,
                format!(
                    "cells-updater {} answers on the system bus",
                    String::try_from(v).unwrap_or_default()
                ),
                "",
            ),
            Ok(Err(e)) => finding(
                "daemon",
                Level::Fail,
                format!("{} does not answer: {e}", crate::contract::BUS_NAME),
                "systemctl status cells-updater; journalctl -u cells-updater",
            ),
            Err(_) => finding(
                "daemon",
                Level::Fail,
                format!("{} did not answer within 30 s", crate::contract::BUS_NAME),
                "systemctl status cells-updater; journalctl -u cells-updater",
            ),
        }
    }
}

async fn manager_property(
    bus: &zbus::Connection,
    name: &str,
) -> zbus::Result<zbus::zvariant::OwnedValue> {
    let props = zbus::fdo::PropertiesProxy::builder(bus)
        .destination(crate::contract::BUS_NAME)?
        .path(crate::contract::MANAGER_PATH)?
        .build()
        .await?;
    let iface = zbus::names::InterfaceName::try_from(crate::contract::MANAGER_INTERFACE)
        .map_err(zbus::Error::from)?;
    Ok(props.get(iface, name).await?)
}
