# cells-updater %preun ($1: 0 = erase, 1 = upgrade)
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now cells-updater-check.timer || :
    systemctl disable cells-updater-recover.service || :
    systemctl stop cells-updater-check.service cells-updater.service || :
fi
