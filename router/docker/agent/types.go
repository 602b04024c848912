// Package agent is UPC's machine agent (the original swarm.py): it drives one
// machine's Docker Engine through the Docker SDK — the network, per-instance
// containers with upc.* labels and a host port Docker allocates, per-user
// volumes, pause, unpause, removal, listing and clearing of only what carries
// UPC's labels. Engine does the work in process; Handler serves it over HTTP
// and Client calls that server, so the router drives local and remote
// machines through the same methods.
package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Labels UPC puts on what it creates. Listing, clearing and a router's
// rebuild after a restart read them back.
const (
	LabelInstance = "upc.instance"
	LabelService  = "upc.service"
	LabelUser     = "upc.user"
	LabelImage    = "upc.image"
	LabelPort     = "upc.port"
	LabelVolume   = "upc.volume"
	LabelNetwork  = "upc.network"
	// LabelOwner is the router identity that launched an instance (only
	// it and admins act on it); LabelPM the PM a bound service reaches.
	LabelOwner = "upc.owner"
	LabelPM    = "upc.pm"
	// LabelAgent names the agent that made a container or volume. An agent
	// lists, clears and adopts only its own, so several agents (or tests
	// beside a real deployment) can share one engine.
	LabelAgent = "upc.agent"
	// LabelScheme is "https" on an instance serving TLS (the router gave it
	// a certificate), so its address keeps the scheme after a restart.
	LabelScheme = "upc.scheme"
	// LabelHostPort is the host port an instance in host network mode
	// listens on, allocated by the agent: its address, and what keeps the
	// port taken after an agent restart, until the container is removed.
	LabelHostPort = "upc.host_port"
)

// LaunchRequest describes one instance to start.
type LaunchRequest struct {
	Instance  string            `json:"instance"`
	Service   string            `json:"service"`
	User      string            `json:"user"`
	Owner     string            `json:"owner,omitempty"` // router identity that launched it
	PM        string            `json:"pm,omitempty"`    // PM instance a bound service reaches
	Image     string            `json:"image"`
	Digest    string            `json:"digest,omitempty"` // the pinned image ID Image must resolve to; the container runs that ID
	Port      int               `json:"port"`
	Env       map[string]string `json:"env,omitempty"`
	CPUMillis int               `json:"cpu_millis,omitempty"`
	MemoryMB  int               `json:"memory_mb,omitempty"`
	Volumes   []Volume          `json:"volumes,omitempty"`
	// Labels are extra labels (tests add upc.test=1).
	Labels map[string]string `json:"labels,omitempty"`
	// TLS: the instance serves HTTPS; its address says so.
	TLS bool `json:"tls,omitempty"`
	// Pool: a warm-pool instance, started before anyone asks for it. It
	// names no user or owner: each per-user volume is a fresh pool volume
	// of its own (PoolVolumeName), and Claim later binds it to one user.
	Pool bool `json:"pool,omitempty"`
}

// Volume is a mount; PerUser volumes are named for the user and outlive the
// container, the others are removed with it.
type Volume struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	PerUser bool   `json:"per_user,omitempty"`
}

// Container is what the agent reports about one instance.
type Container struct {
	Instance    string    `json:"instance"`
	Service     string    `json:"service"`
	User        string    `json:"user"`
	Owner       string    `json:"owner,omitempty"`
	PM          string    `json:"pm,omitempty"`
	Address     string    `json:"address"` // http://advertise:hostport, empty when not published
	Image       string    `json:"image"`
	Digest      string    `json:"digest"` // image ID the container runs
	State       string    `json:"state"`  // Docker's: running, paused, exited, created, dead...
	Created     time.Time `json:"created"`
	ContainerID string    `json:"container_id"`
	// Pool: started for the warm pool; with no User it is not claimed yet.
	Pool bool `json:"pool,omitempty"`
	// poolVolumes are a pool container's pool volumes (catalog volume →
	// Docker volume), as its mounts name them: Claim binds them.
	poolVolumes map[string]string
}

// ContainerList answers GET /v1/containers.
type ContainerList struct {
	Containers []Container `json:"containers"`
}

// NetworkInfo answers POST /v1/network.
type NetworkInfo struct {
	Network string `json:"network"`
	ID      string `json:"id"`
	Gateway string `json:"gateway"`
}

// UserVolume is one of a user's per-user volumes on a machine.
type UserVolume struct {
	Name   string `json:"name"`   // the Docker volume
	Volume string `json:"volume"` // the catalog volume it holds (its upc.volume label)
	// Bound is, for the claim of a warm-pool instance's volume, the pool
	// volume that holds the data (see Claim); erasing removes both.
	Bound string `json:"bound,omitempty"`
}

// UnmarshalJSON also reads a bare name, as agents before UserVolume
// answered GET /v1/volumes.
func (v *UserVolume) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &v.Name)
	}
	type plain UserVolume
	return json.Unmarshal(b, (*plain)(v))
}

// VolumeList answers GET /v1/volumes?user= (the user's volumes) and
// DELETE /v1/volumes?user= (the volumes removed).
type VolumeList struct {
	Volumes []UserVolume `json:"volumes"`
}

// ClearResult answers POST /v1/clear.
type ClearResult struct {
	Removed int `json:"removed"`
}

var (
	// ErrNotFound: no container carries that instance label.
	ErrNotFound = errors.New("no such instance")
	// ErrInvalid: the request is malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: a volume to remove is still mounted by a container.
	ErrConflict = errors.New("conflict")
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	volRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	// agentRE: agent names go into volume names and labels.
	agentRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// Validate reports every problem with r at once.
func (r LaunchRequest) Validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"instance", r.Instance}, {"service", r.Service}, {"user", r.User}} {
		if f.name == "user" && r.Pool {
			if f.v != "" || r.Owner != "" || r.PM != "" {
				errs = append(errs, errors.New("pool: a warm-pool instance names no user, owner or pm (a claim binds them)"))
			}
			continue
		}
		if !nameRE.MatchString(f.v) {
			errs = append(errs, fmt.Errorf("%s: %q must be 1-63 letters, digits, '_', '.' or '-'", f.name, f.v))
		}
	}
	for _, f := range []struct{ name, v string }{{"owner", r.Owner}, {"pm", r.PM}} {
		if f.v != "" && !nameRE.MatchString(f.v) {
			errs = append(errs, fmt.Errorf("%s: %q must be 1-63 letters, digits, '_', '.' or '-'", f.name, f.v))
		}
	}
	if r.Image == "" && r.Digest == "" {
		errs = append(errs, errors.New("image: required"))
	}
	if r.Port < 1 || r.Port > 65535 {
		errs = append(errs, fmt.Errorf("port: %d is not a port (1-65535)", r.Port))
	}
	if r.CPUMillis < 0 || r.MemoryMB < 0 {
		errs = append(errs, errors.New("cpu_millis, memory_mb: must not be negative"))
	}
	for i, v := range r.Volumes {
		if !volRE.MatchString(v.Name) {
			errs = append(errs, fmt.Errorf("volumes[%d].name: %q must be lowercase letters, digits and dashes", i, v.Name))
		}
		if len(v.Path) == 0 || v.Path[0] != '/' {
			errs = append(errs, fmt.Errorf("volumes[%d].path: %q must be absolute", i, v.Path))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// VolumeName is the Docker volume holding user's per-user volume vol on the
// agent named agentName: readable, then 16 bytes (32 hex digits) of SHA-256
// of the three names, so that no two (agent, user, volume) share a name
// ("alice-pm"'s "data" and "alice"'s "pm-data" join up the same, their
// hashes do not). At most 4+63+1+63+1+63+1+32 = 228 characters.
func VolumeName(agentName, user, vol string) string {
	sum := sha256.Sum256([]byte(agentName + "\x00" + user + "\x00" + vol))
	return LegacyVolumeName(agentName, user, vol) + "-" + hex.EncodeToString(sum[:16])
}

// LegacyVolumeName is the name agents gave volumes before VolumeName had
// its hash. Such volumes are still found (by their labels) and used, so an
// upgrade orphans no one's data.
func LegacyVolumeName(agentName, user, vol string) string {
	return "upc-" + agentName + "-" + user + "-" + vol
}
