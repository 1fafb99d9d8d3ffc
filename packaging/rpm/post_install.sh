# cells-updater %post ($1: 1 = install, 2 = upgrade)
install -d -m 0755 /etc/cells-updater/keys.d /etc/cells-updater/config.d \
    /etc/systemd/system/cells.service.d
# The fleet agent's user (its unit stays disabled until the admin enables it).
systemd-sysusers /usr/lib/sysusers.d/cells-updater-fleet.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now cells-updater-check.timer || :
        systemctl enable cells-updater-recover.service || :
    else
        systemctl try-restart cells-updater-check.timer cells-updater.service || :
    fi
    systemctl reload dbus.service 2>/dev/null || :
fi
