# cells-updater %postun ($1: 0 = erase, 1 = upgrade). RPM has no purge: the state in
# /var/lib/cells-updater is kept on erase, a modified config is saved as .rpmsave.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    systemctl reload dbus.service 2>/dev/null || :
fi
