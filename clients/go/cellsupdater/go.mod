module github.com/pydio/cells-updater/clients/go/cellsupdater

go 1.19

require github.com/godbus/dbus/v5 v5.1.0
