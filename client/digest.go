package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/e-mission/upc/router/api"
)

// ErrDigest matches (errors.Is) a launch refused because the instance does
// not run the image the client requires.
var ErrDigest = errors.New("the instance does not run the required image")

// RequireDigests wraps r so that a launch of a service named in digests
// (catalog names, case ignored: "pm", "pipeline", ...; values "sha256:...")
// must answer exactly that digest: an instance reporting another, or none, is
// deleted before anything is sent to it (a PM never gets the key) and the
// launch fails with ErrDigest. The digests are the ones the deployment
// promised, from its image manifest (build/images.json) or given one by one.
// Services not named are not checked.
func RequireDigests(r Router, digests map[string]string) Router {
	want := make(map[string]string, len(digests))
	for name, d := range digests {
		want[strings.ToLower(name)] = d
	}
	return digestRouter{Router: r, want: want}
}

type digestRouter struct {
	Router
	want map[string]string
}

func (d digestRouter) Launch(ctx context.Context, req api.LaunchRequest) (api.Instance, error) {
	inst, err := d.Router.Launch(ctx, req)
	if err != nil {
		return inst, err
	}
	want, ok := d.want[strings.ToLower(inst.Service)]
	if !ok {
		want, ok = d.want[strings.ToLower(req.Service)]
	}
	if !ok || inst.Digest == want {
		return inst, nil
	}
	err = fmt.Errorf("%w: %s instance %s runs image %s as %s, not the required %s: deleted it",
		ErrDigest, cmp.Or(inst.Service, req.Service), inst.ID, inst.Image, cmp.Or(inst.Digest, "(no digest reported)"), want)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if derr := d.Router.Delete(dctx, inst.ID); derr != nil {
		err = errors.Join(err, fmt.Errorf("delete instance %s: %w", inst.ID, derr))
	}
	return api.Instance{}, err
}

// ParseDigests reads "service=sha256:<64 hex>" pairs (upc client
// --require-digest), reporting every malformed one at once.
func ParseDigests(pairs []string) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	for _, p := range pairs {
		name, d, ok := strings.Cut(p, "=")
		if !ok || name == "" || !isDigest(d) {
			errs = append(errs, fmt.Errorf("%q is not service=sha256:<64 hex digits>", p))
			continue
		}
		out[strings.ToLower(name)] = d
	}
	return out, errors.Join(errs...)
}

func isDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
