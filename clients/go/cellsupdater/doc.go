// Package cellsupdater is a client for cells-updater, the root-owned service that updates
// Pydio Cells on the D-Bus system bus (com.pydio.CellsUpdater1). The Cells server, or any Go
// program, uses it to check for releases, stage, update and roll back, follow a job's
// progress, and tell errors apart by their D-Bus names.
//
// The Cells server runs as the unit's User= (pydio), which cells-updater authorizes for
// check, stage, apply and license without polkit. Cells is restarted by an update: start the
// job, then read InstalledVersion and LastError after Cells comes back.
//
//	c, err := cellsupdater.NewSystem()
//	if err != nil { return err }
//	defer c.Close()
//	releases, err := c.Check(ctx, nil)
//	job, err := c.Update(ctx, "4.4.5", nil)
//	res, err := job.Follow(ctx, func(p cellsupdater.Progress) { log.Printf("%s %d%%", p.Phase, p.Percent) })
//	if errors.Is(err, cellsupdater.ErrUnitFailed) { /* rolled back; the release is marked bad */ }
//
// Every call has a deadline: pass a context with one.
package cellsupdater
