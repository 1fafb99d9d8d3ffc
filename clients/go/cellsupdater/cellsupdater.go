package cellsupdater

import (
	"context"

	"github.com/godbus/dbus/v5"
)

// Names on the bus.
const (
	BusName          = "com.pydio.CellsUpdater1"
	ManagerPath      = dbus.ObjectPath("/com/pydio/CellsUpdater1")
	ManagerInterface = "com.pydio.CellsUpdater1.Manager"
	JobInterface     = "com.pydio.CellsUpdater1.Job"
)

// Client talks to cells-updater on one bus connection.
type Client struct {
	conn    *dbus.Conn
	manager dbus.BusObject
	own     bool
}

// New uses an existing connection (the caller closes it).
func New(conn *dbus.Conn) *Client {
	return &Client{conn: conn, manager: conn.Object(BusName, ManagerPath)}
}

// NewSystem connects to the system bus.
func NewSystem() (*Client, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, err
	}
	c := New(conn)
	c.own = true
	return c, nil
}

// Dial connects to the bus at address (tests, or CELLS_UPDATER_BUS_ADDRESS).
func Dial(address string) (*Client, error) {
	conn, err := dbus.Connect(address)
	if err != nil {
		return nil, err
	}
	c := New(conn)
	c.own = true
	return c, nil
}

// Close closes the connection if the client made it.
func (c *Client) Close() error {
	if c.own {
		return c.conn.Close()
	}
	return nil
}

// Options are a method's a{sv} options (e.g. "Channel", "Force", "Restart").
type Options map[string]interface{}

func (o Options) variants() map[string]dbus.Variant {
	out := make(map[string]dbus.Variant, len(o))
	for k, v := range o {
		out[k] = dbus.MakeVariant(v)
	}
	return out
}

// Release is one entry of Check's answer.
type Release struct {
	Version     string
	PackageName string
	Label       string
	Description string
	ChangeLog   string
	ReleaseDate int64
	Size        uint64
	Allowed     bool
	// Reason says why it is not allowed: downgrade, bad, not-released, too-new, held …
	Reason string
}

func str(d map[string]dbus.Variant, k string) string {
	if v, ok := d[k]; ok {
		if s, ok := v.Value().(string); ok {
			return s
		}
	}
	return ""
}

// Check asks the update server now; options: "PackageName", "Channel".
func (c *Client) Check(ctx context.Context, opts Options) ([]Release, error) {
	var raw []map[string]dbus.Variant
	if err := c.manager.CallWithContext(ctx, ManagerInterface+".Check", 0, opts.variants()).Store(&raw); err != nil {
		return nil, wrap(err)
	}
	out := make([]Release, 0, len(raw))
	for _, d := range raw {
		r := Release{
			Version:     str(d, "Version"),
			PackageName: str(d, "PackageName"),
			Label:       str(d, "Label"),
			Description: str(d, "Description"),
			ChangeLog:   str(d, "ChangeLog"),
			Reason:      str(d, "Reason"),
		}
		if v, ok := d["ReleaseDate"].Value().(int64); ok {
			r.ReleaseDate = v
		}
		if v, ok := d["Size"].Value().(uint64); ok {
			r.Size = v
		}
		if v, ok := d["Allowed"].Value().(bool); ok {
			r.Allowed = v
		}
		out = append(out, r)
	}
	return out, nil
}

func (c *Client) job(ctx context.Context, method string, args ...interface{}) (*Job, error) {
	var path dbus.ObjectPath
	if err := c.manager.CallWithContext(ctx, ManagerInterface+"."+method, 0, args...).Store(&path); err != nil {
		return nil, wrap(err)
	}
	return &Job{Path: path, c: c}, nil
}

// Stage downloads, verifies and probes a release ("" = the newest allowed).
func (c *Client) Stage(ctx context.Context, version string, opts Options) (*Job, error) {
	return c.job(ctx, "Stage", version, opts.variants())
}

// Apply swaps the staged release in; options: "Version", "Restart", "OnFailure", "Force".
func (c *Client) Apply(ctx context.Context, opts Options) (*Job, error) {
	return c.job(ctx, "Apply", opts.variants())
}

// Update stages then applies a release ("" = the newest allowed).
func (c *Client) Update(ctx context.Context, version string, opts Options) (*Job, error) {
	return c.job(ctx, "Update", version, opts.variants())
}

// Rollback puts the previous version back.
func (c *Client) Rollback(ctx context.Context) (*Job, error) {
	return c.job(ctx, "Rollback", Options{}.variants())
}

// Status is the Manager's properties.
type Status map[string]interface{}

// String returns a string property ("" when absent).
func (s Status) String(name string) string {
	v, _ := s[name].(string)
	return v
}

// Status reads every Manager property.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var props map[string]dbus.Variant
	err := c.manager.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, ManagerInterface).Store(&props)
	if err != nil {
		return nil, wrap(err)
	}
	out := Status{}
	for k, v := range props {
		out[k] = v.Value()
	}
	return out, nil
}
