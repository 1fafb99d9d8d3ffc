package cellsupdater

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// Job is a running (or recently finished) job: /com/pydio/CellsUpdater1/job/<n>.
type Job struct {
	Path dbus.ObjectPath
	c    *Client
}

// Progress is a job's progress as it changes.
type Progress struct {
	Phase      string
	Percent    uint32
	BytesDone  uint64
	BytesTotal uint64
}

// Result is how a job ended.
type Result struct {
	State   string // succeeded, failed or cancelled
	Message string
}

// Cancel asks the job to stop; after the swap it fails with ErrNotCancellable.
func (j *Job) Cancel(ctx context.Context) error {
	return wrap(j.c.conn.Object(BusName, j.Path).CallWithContext(ctx, JobInterface+".Cancel", 0).Err)
}

func (j *Job) props(ctx context.Context) (map[string]dbus.Variant, error) {
	var p map[string]dbus.Variant
	err := j.c.conn.Object(BusName, j.Path).
		CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, JobInterface).Store(&p)
	return p, wrap(err)
}

func progressOf(p map[string]dbus.Variant, into *Progress) {
	if v, ok := p["Phase"]; ok {
		into.Phase, _ = v.Value().(string)
	}
	if v, ok := p["Percent"]; ok {
		into.Percent, _ = v.Value().(uint32)
	}
	if v, ok := p["BytesDone"]; ok {
		into.BytesDone, _ = v.Value().(uint64)
	}
	if v, ok := p["BytesTotal"]; ok {
		into.BytesTotal, _ = v.Value().(uint64)
	}
}

// Follow waits for the job's end, calling progress (may be nil) as its properties change.
// A job that failed or was cancelled returns its *Error (errors.Is works); the job keeps
// running if ctx ends first.
func (j *Job) Follow(ctx context.Context, progress func(Progress)) (Result, error) {
	conn := j.c.conn
	// Subscribe first, then read: a quick job's end is not missed.
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchObjectPath(j.Path), dbus.WithMatchInterface("org.freedesktop.DBus.Properties"), dbus.WithMatchMember("PropertiesChanged")},
		{dbus.WithMatchObjectPath(ManagerPath), dbus.WithMatchInterface(ManagerInterface), dbus.WithMatchMember("JobFinished")},
	}
	for _, r := range rules {
		if err := conn.AddMatchSignalContext(ctx, r...); err != nil {
			return Result{}, err
		}
		defer conn.RemoveMatchSignal(r...)
	}
	ch := make(chan *dbus.Signal, 64)
	conn.Signal(ch)
	defer conn.RemoveSignal(ch)

	var p Progress
	initial, err := j.props(ctx)
	if err != nil {
		return Result{}, err
	}
	progressOf(initial, &p)
	if progress != nil {
		progress(p)
	}
	end := func(state, errName, message string) (Result, error) {
		r := Result{State: state, Message: message}
		if state != "succeeded" && errName != "" {
			return r, fromName(errName, message)
		}
		if state != "succeeded" {
			return r, fmt.Errorf("job %s %s: %s", j.Path, state, message)
		}
		return r, nil
	}
	if s, _ := initial["State"].Value().(string); s != "" && s != "running" {
		e, _ := initial["Error"].Value().(string)
		m, _ := initial["Message"].Value().(string)
		return end(s, e, m)
	}
	for {
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case sig, ok := <-ch:
			if !ok {
				return Result{}, fmt.Errorf("the bus connection closed while following %s", j.Path)
			}
			switch {
			case sig.Name == ManagerInterface+".JobFinished" && len(sig.Body) == 4:
				if path, _ := sig.Body[0].(dbus.ObjectPath); path == j.Path {
					state, _ := sig.Body[1].(string)
					errName, _ := sig.Body[2].(string)
					message, _ := sig.Body[3].(string)
					return end(state, errName, message)
				}
			case sig.Path == j.Path && sig.Name == "org.freedesktop.DBus.Properties.PropertiesChanged" && len(sig.Body) >= 2:
				if changed, ok := sig.Body[1].(map[string]dbus.Variant); ok {
					progressOf(changed, &p)
					if progress != nil {
						progress(p)
					}
				}
			}
		}
	}
}
