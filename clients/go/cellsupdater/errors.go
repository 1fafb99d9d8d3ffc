package cellsupdater

import (
	"errors"
	"strings"

	"github.com/godbus/dbus/v5"
)

// ErrorPrefix is the prefix of every error name cells-updater returns.
const ErrorPrefix = "com.pydio.CellsUpdater1.Error."

// Error is a cells-updater error: its short name (e.g. "Downgrade") and the message, which
// says what happened and what to do. Compare with errors.Is against the Err* values.
type Error struct {
	Name    string
	Message string
}

func (e *Error) Error() string { return ErrorPrefix + e.Name + ": " + e.Message }

// Is matches another *Error by name, so errors.Is(err, ErrBusy) works.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Name == e.Name
}

// The errors of the contract, for errors.Is.
var (
	ErrNotAuthorized     = &Error{Name: "NotAuthorized"}
	ErrBusy              = &Error{Name: "Busy"}
	ErrInvalidArgument   = &Error{Name: "InvalidArgument"}
	ErrNoSuchVersion     = &Error{Name: "NoSuchVersion"}
	ErrDowngrade         = &Error{Name: "Downgrade"}
	ErrServerError       = &Error{Name: "ServerError"}
	ErrDownloadFailed    = &Error{Name: "DownloadFailed"}
	ErrChecksumMismatch  = &Error{Name: "ChecksumMismatch"}
	ErrSignatureInvalid  = &Error{Name: "SignatureInvalid"}
	ErrNoTrustedKey      = &Error{Name: "NoTrustedKey"}
	ErrWrongArchitecture = &Error{Name: "WrongArchitecture"}
	ErrVersionMismatch   = &Error{Name: "VersionMismatch"}
	ErrNothingStaged     = &Error{Name: "NothingStaged"}
	ErrDiskFull          = &Error{Name: "DiskFull"}
	ErrSwapFailed        = &Error{Name: "SwapFailed"}
	ErrUnitFailed        = &Error{Name: "UnitFailed"}
	ErrRollbackFailed    = &Error{Name: "RollbackFailed"}
	ErrCancelled         = &Error{Name: "Cancelled"}
	ErrLicenseRejected   = &Error{Name: "LicenseRejected"}
	ErrUnsafePath        = &Error{Name: "UnsafePath"}
	ErrNotCancellable    = &Error{Name: "NotCancellable"}
	ErrHeld              = &Error{Name: "Held"}
	ErrFleetHalted       = &Error{Name: "FleetHalted"}
	ErrFleetUnavailable  = &Error{Name: "FleetUnavailable"}
	ErrNoPreviousVersion = &Error{Name: "NoPreviousVersion"}
	ErrInternal          = &Error{Name: "Internal"}
)

// fromName makes an *Error from a full or short D-Bus error name.
func fromName(name, message string) error {
	return &Error{Name: strings.TrimPrefix(name, ErrorPrefix), Message: message}
}

// wrap turns a D-Bus error reply of cells-updater into an *Error; other errors pass.
func wrap(err error) error {
	var de dbus.Error
	if errors.As(err, &de) && strings.HasPrefix(de.Name, ErrorPrefix) {
		msg := ""
		if len(de.Body) > 0 {
			if s, ok := de.Body[0].(string); ok {
				msg = s
			}
		}
		return fromName(de.Name, msg)
	}
	return err
}
