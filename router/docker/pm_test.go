package docker_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/internal/certs"
	"github.com/e-mission/upc/internal/certs/certstest"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/router"
	"github.com/e-mission/upc/router/docker"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/router/routertest"
)

// TestPMThroughRouterDocker launches the real PM image from the built-in
// catalog, pinned by the image manifest, through the router: it answers
// over TLS with the certificate the router issued it (and refuses plain
// HTTP and clients of another CA), reports the pinned digest, stops
// answering while paused, comes back from a resume with a renewed
// certificate, and its per-user volume outlives the instance.
func TestPMThroughRouterDocker(t *testing.T) {
	ctx := context.Background()
	m := imagestest.Require(t, "pm")
	cat, err := conf.DefaultCatalog()
	if err != nil {
		t.Fatal(err)
	}
	m.Pin(cat)
	d := newDeployment(t)
	b := backend(t, docker.Machine{Name: "local", Weight: 1, Driver: d.engine(t, "pm")})
	ca, foreign := certstest.New(t), certstest.New(t)
	r, err := router.New(router.Options{Backend: b, Catalog: cat, CA: ca.CA})
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.Launch(ctx, "PM", "quinn")
	if err != nil {
		t.Fatal(err)
	}
	if in.Service != "pm" || in.Digest != m.Images["pm"].ID || in.Image != m.Images["pm"].Ref {
		t.Fatalf("launched %+v, want pm running %s", in, m.Images["pm"].ID)
	}
	if !strings.HasPrefix(in.Address, "https://") {
		t.Fatalf("address %s: want https", in.Address)
	}
	hc := ca.Client(2 * time.Second)
	health := func(c *http.Client, url string) (*x509.Certificate, error) {
		resp, err := c.Get(url + "/healthz")
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("status %s", resp.Status)
		}
		if resp.TLS == nil {
			return nil, errors.New("answered without TLS")
		}
		return resp.TLS.PeerCertificates[0], nil
	}
	first, err := health(hc, in.Address)
	if err != nil {
		t.Fatalf("pm health over TLS: %v", err)
	}
	if first.DNSNames[0] != certs.InstanceName(string(in.ID)) {
		t.Errorf("pm certificate names %v, want %s", first.DNSNames, certs.InstanceName(string(in.ID)))
	}
	if code, body, err := routertest.Get("http://"+strings.TrimPrefix(in.Address, "https://"), "/healthz"); err != nil || code != 400 {
		t.Errorf("plain HTTP to the pm: %d %q %v, want 400", code, body, err)
	}
	if _, err := health(foreign.Client(2*time.Second), in.Address); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("a client of another CA: %v, want unknown authority", err)
	}
	if err := r.Pause(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := health(hc, in.Address); err == nil {
		t.Fatal("paused pm answered")
	}
	if err := r.Resume(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	var renewed *x509.Certificate
	// A new connection: the one from before the pause survived it.
	routertest.Eventually(t, "resumed pm answers", func() error { renewed, err = health(ca.Client(2*time.Second), in.Address); return err })
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the resumed pm serves the certificate it had before the pause: not renewed")
	}
	// A running instance is renewed in place, as the router does every
	// quarter of a certificate's lifetime.
	if n, failed := r.RenewAll(ctx); n != 1 || failed != 0 {
		t.Errorf("RenewAll: %d renewed, %d failed; want 1, 0", n, failed)
	}
	third, err := health(ca.Client(2*time.Second), in.Address)
	if err != nil || third.SerialNumber.Cmp(renewed.SerialNumber) == 0 {
		t.Errorf("after RenewAll: %v; serial unchanged: %v", err, err == nil && third.SerialNumber.Cmp(renewed.SerialNumber) == 0)
	}
	if err := r.Delete(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	vol := agent.VolumeName(d.prefix+"-pm", "quinn", "data")
	if _, err := cli.VolumeInspect(ctx, vol, client.VolumeInspectOptions{}); err != nil {
		t.Fatalf("the user's volume %s did not outlive the pm: %v", vol, err)
	}
}
