package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
)

// ErrForbidden: the request is well formed but the agent will not do it (an
// image outside its catalog, another user's volume).
var ErrForbidden = errors.New("forbidden")

// Image is one image an agent may run: a catalog service's image reference
// and, when the catalog pins one, its image ID ("sha256:...").
type Image struct {
	Ref    string
	Digest string
}

// HandlerOptions secure a Handler. The zero value refuses every call but
// GET /healthz and every launch: an agent serves nothing without them.
type HandlerOptions struct {
	// Token is the bearer token shared with the router (agent.token_file).
	// Every call but GET /healthz must carry "Authorization: Bearer
	// <Token>": none answers 401, another 403, both logged with the caller's
	// address. Only its hash is kept.
	Token string
	// Images are the only images a launch may run: the catalog's. A launch
	// naming another reference, or a digest other than the one its reference
	// is pinned to (or, unpinned, resolves to on this machine), answers 403,
	// as does (Engine.Launch) a pinned reference that now resolves to
	// another image on this machine.
	Images []Image
}

// requireToken wraps h so every request but GET /healthz and GET /readyz
// bears the token whose hash is sum (empty: every such request is
// refused), but for GET /metrics with a monitor's client certificate.
func requireToken(sum string, logger *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if access.Open(r) || access.Monitor(r) {
			h.ServeHTTP(w, r)
			return
		}
		tok, ok := access.Bearer(r)
		var err error
		switch {
		case !ok:
			err = httpx.Errorf(http.StatusUnauthorized, "this agent answers only its router: send Authorization: Bearer <agent token> (agent.token_file)")
		case sum == "" || !access.Match(tok, sum):
			err = httpx.Errorf(http.StatusForbidden, "wrong agent token")
		}
		if err != nil {
			logger.Warn("refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error())
			httpx.Handle(logger, func(http.ResponseWriter, *http.Request) error { return err }).ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// catalog is the set of images a Handler launches.
type catalog []Image

// check reports whether req runs an image of c: its Image is a catalog
// reference and its Digest, if any, the one that reference is pinned to; an
// unpinned reference accepts only the digest it resolves to on this machine
// (imageID). A request naming a digest alone must name a pinned one.
func (c catalog) check(ctx context.Context, req LaunchRequest, imageID func(context.Context, string) (string, error)) error {
	if req.Image == "" {
		for _, im := range c {
			if im.Digest != "" && im.Digest == req.Digest {
				return nil
			}
		}
		return fmt.Errorf("%w: image %s is not in this agent's catalog", ErrForbidden, req.Digest)
	}
	known, unpinned := false, false
	for _, im := range c {
		if im.Ref != req.Image {
			continue
		}
		known = true
		if req.Digest == "" || req.Digest == im.Digest {
			return nil
		}
		unpinned = unpinned || im.Digest == ""
	}
	if !known {
		return fmt.Errorf("%w: image %q is not in this agent's catalog", ErrForbidden, req.Image)
	}
	if unpinned {
		if id, err := imageID(ctx, req.Image); err == nil && id == req.Digest {
			return nil
		}
	}
	return fmt.Errorf("%w: digest %s is not the catalog's image %s", ErrForbidden, req.Digest, req.Image)
}

// resolveImage is the image ID a launch runs: what req.Image resolves to on
// this machine now, which must be req.Digest when the request pins one. A
// tag moved to another image since the pin was taken (an image swapped under
// the catalog's reference) is refused, not run, and neither is the pinned
// image run in its place: whoever moved the tag must hear of it. The
// container is created from the ID checked here, so the tag moving again
// between the check and the create changes nothing. A request naming a
// digest alone runs that digest (the agent's catalog admits only pinned ones).
func (e *Engine) resolveImage(ctx context.Context, req LaunchRequest) (string, error) {
	if req.Image == "" {
		return req.Digest, nil
	}
	id, err := e.imageID(ctx, req.Image)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("image %s is not on this machine (run make images): %w", req.Image, err)
		}
		return "", err
	}
	if req.Digest != "" && id != req.Digest {
		e.logger.Warn("refused a swapped image: its reference resolves to another image than the pinned one",
			"image", req.Image, "resolves_to", id, "pinned", req.Digest, "instance", req.Instance, "service", req.Service, "user", req.User)
		return "", fmt.Errorf("%w: image %s now resolves to %s, not the pinned %s: refusing to run it "+
			"(the tag was moved to another image; rebuild with make images and restart with the new manifest, or tag the pinned image again)",
			ErrForbidden, req.Image, id, req.Digest)
	}
	return id, nil
}

// imageID is the ID of the local image ref ("sha256:...").
func (e *Engine) imageID(ctx context.Context, ref string) (string, error) {
	res, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return res.ID, nil
}

// describe summarises a launch request for a refusal's log line.
func describe(req LaunchRequest) []any {
	vols := make([]string, 0, len(req.Volumes))
	for _, v := range req.Volumes {
		vols = append(vols, v.Name)
	}
	return []any{"instance", req.Instance, "service", req.Service, "user", req.User,
		"image", req.Image, "digest", req.Digest, "volumes", strings.Join(vols, ",")}
}

// ownVolume checks that the volume named source, as Docker returned it
// (created or, when it existed, as it was), is user's volume vol made by this
// agent. Volume names join agent, user and volume with dashes, which all
// three may contain (user "alice-pm" and volume "data" name alice's
// "pm-data"); the labels are what tell them apart, so a launch never mounts
// another user's data.
func (e *Engine) ownVolume(labels map[string]string, user, vol, source string) error {
	if labels[LabelUser] != user || labels[LabelVolume] != vol || labels[LabelAgent] != e.opts.Name {
		e.logger.Warn("refused a volume of another user", "volume", source, "user", user,
			"volume_user", labels[LabelUser], "volume_name", labels[LabelVolume], "volume_agent", labels[LabelAgent])
		return fmt.Errorf("%w: volume %s is not user %s's volume %s on agent %s", ErrForbidden, source, user, vol, e.opts.Name)
	}
	return nil
}
