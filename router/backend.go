// Package router is the core of UPC's service router: users, instances, the
// service catalog and placement. It reaches containers or pods only through
// the Backend interface; concrete backends (router/docker, and later
// router/kubernetes) are wired in by cmd/, never imported here.
package router

import (
	"context"
	"errors"
	"time"

	"github.com/e-mission/upc/conf"
)

// ID names one instance. The core makes it; backends carry it in labels.
type ID string

// Spec is everything a backend needs to start one instance.
type Spec struct {
	ID      ID
	Service string // canonical catalog name
	User    string
	// Owner is the router identity launching it, and PM the PM instance a
	// bound service reaches; backends keep both in labels (upc.owner,
	// upc.pm) and report them in List, so they survive a router restart.
	Owner string
	PM    ID
	// Machine is the placement decision when the backend reports machines
	// (see Machines); empty lets the backend choose.
	Machine   string
	Image     string // reference, e.g. upc/pm:v0.1.0
	Digest    string // image ID to run ("sha256:..."); empty runs Image as is
	Port      int    // port the service listens on inside the instance
	Health    string
	Env       map[string]string
	Resources conf.Resources
	Volumes   []conf.Volume
	// TLS: the instance serves HTTPS (its certificate is in Env); backends
	// give its address the https scheme and keep that in a label, so a
	// rebuilt view addresses it the same way.
	TLS bool
}

// State is an instance's lifecycle state as the backend sees it.
type State string

const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	// StateDead covers everything else (created, exited, dead): an instance
	// in it answers nobody and is a leftover to remove.
	StateDead State = "dead"
)

// Instance is what a backend reports about one instance.
type Instance struct {
	ID      ID
	Service string
	User    string
	Owner   string // router identity that launched it ("" : admins only)
	PM      ID     // the PM a bound service reaches
	// Secret is the instance's credential (upcs_...), set only in what
	// Launch returns: the router keeps no copy, the instance only its hash.
	Secret  string
	Machine string
	Address string // http(s)://host:port, reachable from the host and from other instances
	Image   string
	Digest  string // image ID the instance runs
	State   State
	Created time.Time
	// Simulated: the instance's pod is bound to a simulated node (kwok's),
	// which runs no process: nobody can call it, so the core never probes
	// it (no health wait, renewal or idle check). Only a backend told to
	// accept simulated nodes reports it (router/kubernetes,
	// Options.SimulatedNodes); scale tests of the control plane use it.
	Simulated bool
}

// Backend runs instances. Implementations: router/docker (and router/kubernetes).
type Backend interface {
	Launch(ctx context.Context, spec Spec) (Instance, error)
	Pause(ctx context.Context, id ID) error
	Resume(ctx context.Context, id ID) error
	Destroy(ctx context.Context, id ID) error
	// List reports every instance the backend holds that carries UPC's labels.
	List(ctx context.Context) ([]Instance, error)
}

// Clearer is a backend that can remove everything labelled as UPC's at once.
type Clearer interface {
	Clear(ctx context.Context) (removed int, err error)
}

// NetworkSetup is a backend that prepares networks before the first launch.
type NetworkSetup interface {
	SetupNetworks(ctx context.Context) (machines []string, err error)
}

// Machine is one placement target with its configured weight.
type Machine struct {
	Name   string
	Weight float64
	Up     bool
}

// Machines is a backend whose placement the core decides: it reports its
// machines (and which are up) and honours Spec.Machine.
type Machines interface {
	Machines(ctx context.Context) []Machine
}

// UserData is a backend whose per-user data lives on one machine (Docker
// volumes are local to their engine): placement sends a user back there
// while that machine is up, so their PM finds its data.
type UserData interface {
	MachineWithData(ctx context.Context, user string) (machine string, ok bool, err error)
}

// StoredVolume is one of a user's per-user volumes as its backend keeps it:
// a Docker volume on a machine, a Kubernetes claim.
type StoredVolume struct {
	Name    string // the Docker volume's or the claim's name
	Volume  string // the catalog volume it holds ("data")
	Machine string // the machine holding it (Docker); empty on Kubernetes
}

// Storage is a backend that finds a user's per-user volumes again and
// erases them. The volumes outlive instances (Destroy and Clear keep them);
// erasing is the only way they go.
type Storage interface {
	// UserStorage lists user's per-user volumes. A machine that may hold
	// some and does not answer is ErrMachineDown.
	UserStorage(ctx context.Context, user string) ([]StoredVolume, error)
	// EraseUserStorage destroys user's per-user volumes and everything
	// they hold, and reports them. It refuses (ErrConflict) while an
	// instance still mounts one, and (ErrMachineDown) to begin while a
	// machine that may hold one does not answer. wipe is the catalog
	// service whose image may be run to empty a volume the backend cannot
	// remove whole (a hostPath claim's directory on its node): its Image,
	// Digest and Volumes; its ID names anything made for the wiping.
	EraseUserStorage(ctx context.Context, user string, wipe Spec) ([]StoredVolume, error)
}

var (
	// ErrNotFound: no such instance. Backends wrap it; callers use errors.Is.
	ErrNotFound = errors.New("instance not found")
	// ErrUnknownService: the catalog has no such service.
	ErrUnknownService = errors.New("unknown service")
	// ErrNoMachine: every machine is down.
	ErrNoMachine = errors.New("no machine is up")
	// ErrUnhealthy: the instance started but never answered its health path.
	ErrUnhealthy = errors.New("instance never answered")
	// ErrInvalid: a request field is malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrForbidden: the caller may not do this (someone else's or a missing
	// instance, for a caller who is not an admin; a role's limits).
	ErrForbidden = errors.New("forbidden")
	// ErrConflict: the user's data-holding service (their PM) already runs.
	ErrConflict = errors.New("conflict")
	// ErrMachineDown: a machine's agent does not answer. Its instances are
	// unavailable until it does, and a user whose data may be there gets no
	// PM elsewhere (it would start on an empty volume).
	ErrMachineDown = errors.New("machine does not answer")
	// ErrLimit: a per-user limit (live instances, launch rate) is reached;
	// a *LimitError says when to retry, if waiting helps.
	ErrLimit = errors.New("limit reached")
)
