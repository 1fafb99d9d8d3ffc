package cellsupdater

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// TestAgainstTheDaemon runs against a real cells-updater on a private bus, started by the
// project's tests/go_client.rs with a catalog of 4.4.1 (older), 4.4.5 (good, served slowly)
// and 4.4.6 (exits at start), Cells 4.4.2 installed.
func TestAgainstTheDaemon(t *testing.T) {
	addr := os.Getenv("CELLS_UPDATER_BUS_ADDRESS")
	if addr == "" {
		t.Fatal("CELLS_UPDATER_BUS_ADDRESS is not set: run this through tests/go_client.rs, which starts the daemon")
	}
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	releases, err := c.Check(ctx, nil)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	verdict := map[string]Release{}
	for _, r := range releases {
		verdict[r.Version] = r
	}
	if r := verdict["4.4.5"]; !r.Allowed || r.Label == "" || r.Size == 0 {
		t.Fatalf("4.4.5 should be offered and allowed: %+v", r)
	}
	if r := verdict["4.4.1"]; r.Allowed || r.Reason != "downgrade" {
		t.Fatalf("4.4.1 should be refused as a downgrade: %+v", r)
	}

	// An error at call time, by name.
	if _, err := c.Apply(ctx, nil); !errors.Is(err, ErrNothingStaged) {
		t.Fatalf("Apply with nothing staged: want ErrNothingStaged, got %v", err)
	}

	// A job followed to its end, with progress.
	job, err := c.Update(ctx, "4.4.5", nil)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	var seen []Progress
	res, err := job.Follow(ctx, func(p Progress) { seen = append(seen, p) })
	if err != nil || res.State != "succeeded" {
		t.Fatalf("Update 4.4.5: %+v %v", res, err)
	}
	partial := false
	for _, p := range seen {
		if p.Phase == "downloading" && p.Percent > 0 && p.Percent < 100 {
			partial = true
		}
	}
	if !partial {
		t.Fatalf("no download progress was seen: %+v", seen)
	}
	st, err := c.Status(ctx)
	if err != nil || st.String("InstalledVersion") != "4.4.5" || st.String("PreviousVersion") != "4.4.2" {
		t.Fatalf("status after the update: %v %v", st, err)
	}

	// A job that fails returns its error, by name.
	job, err = c.Update(ctx, "4.4.1", nil)
	if err != nil {
		t.Fatalf("Update 4.4.1: %v", err)
	}
	if _, err := job.Follow(ctx, nil); !errors.Is(err, ErrDowngrade) {
		t.Fatalf("Update 4.4.1: want ErrDowngrade, got %v", err)
	}
	job, err = c.Update(ctx, "4.4.6", nil)
	if err != nil {
		t.Fatalf("Update 4.4.6: %v", err)
	}
	_, err = job.Follow(ctx, nil)
	var e *Error
	if !errors.Is(err, ErrUnitFailed) || !errors.As(err, &e) || e.Message == "" {
		t.Fatalf("Update 4.4.6 (broken): want ErrUnitFailed with a message, got %v", err)
	}

	// Rollback.
	job, err = c.Rollback(ctx)
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if res, err := job.Follow(ctx, nil); err != nil || res.State != "succeeded" {
		t.Fatalf("Rollback: %+v %v", res, err)
	}
	if st, _ := c.Status(ctx); st.String("InstalledVersion") != "4.4.2" {
		t.Fatalf("after the rollback: %v", st)
	}
}
