package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/router/api"
)

// fakeDigestRouter is a Router whose launches answer the digest runs[service]
// and that records deletes.
type fakeDigestRouter struct {
	runs    map[string]string
	address string

	mu      sync.Mutex
	deleted []string
}

func (f *fakeDigestRouter) Launch(_ context.Context, req api.LaunchRequest) (api.Instance, error) {
	svc := strings.ToLower(req.Service)
	return api.Instance{ID: "0000000000" + svc[:2], Service: svc, User: req.User, Address: f.address,
		Image: "upc/" + svc + ":v1", Digest: f.runs[svc], Secret: "upcs_secret"}, nil
}
func (f *fakeDigestRouter) Pause(context.Context, string) error  { return nil }
func (f *fakeDigestRouter) Resume(context.Context, string) error { return nil }
func (f *fakeDigestRouter) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, id)
	return nil
}
func (f *fakeDigestRouter) List(context.Context, string) ([]api.Instance, error) { return nil, nil }

// TestRequireDigests: a client that requires digests refuses, and deletes,
// an instance whose digest is another or missing, before it sends anything
// to it (the PM never gets the key); a matching digest and a service it
// requires nothing of go through.
func TestRequireDigests(t *testing.T) {
	pinned := "sha256:" + strings.Repeat("a1", 32)
	other := "sha256:" + strings.Repeat("b2", 32)
	var calls int
	var mu sync.Mutex
	pm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(pm.Close)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		runs string
		want string // "" : launched
	}{
		{"the required image", pinned, ""},
		{"another image", other, "pm instance 0000000000pm runs image upc/pm:v1 as " + other + ", not the required " + pinned + ": deleted it"},
		{"no digest reported", "", "runs image upc/pm:v1 as (no digest reported), not the required " + pinned},
	} {
		t.Run(c.name, func(t *testing.T) {
			fr := &fakeDigestRouter{runs: map[string]string{"pm": c.runs, "count": other}, address: pm.URL}
			r := client.RequireDigests(fr, map[string]string{"PM": pinned, "pipeline": pinned})
			if c.want == "" {
				in, err := r.Launch(ctx, api.LaunchRequest{Service: client.PMService, User: "alice"})
				if err != nil || in.Digest != pinned || len(fr.deleted) != 0 {
					t.Fatalf("%+v %v, deleted %v", in, err, fr.deleted)
				}
				// Count is not required anything: whatever it runs goes.
				if _, err := r.Launch(ctx, api.LaunchRequest{Service: client.CountService, User: "alice"}); err != nil {
					t.Fatal(err)
				}
				return
			}
			mu.Lock()
			before := calls
			mu.Unlock()
			cl := &client.Client{Router: r, User: "alice"}
			_, err := cl.LaunchPM(ctx, "alice's key")
			if !errors.Is(err, client.ErrDigest) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("launch pm: %v, want ErrDigest %q", err, c.want)
			}
			if len(fr.deleted) != 1 || fr.deleted[0] != "0000000000pm" {
				t.Errorf("deleted %v, want the refused pm", fr.deleted)
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != before {
				t.Errorf("the client called the refused pm %d times", calls-before)
			}
		})
	}
}

func TestParseDigests(t *testing.T) {
	d := "sha256:" + strings.Repeat("0f", 32)
	got, err := client.ParseDigests([]string{"PM=" + d, "count=" + d})
	if err != nil || len(got) != 2 || got["pm"] != d || got["count"] != d {
		t.Fatalf("%v %v", got, err)
	}
	_, err = client.ParseDigests([]string{"pm", "=" + d, "pm=sha256:abc", "pm=" + strings.ToUpper(d)})
	if err == nil || strings.Count(err.Error(), "is not service=sha256") != 4 {
		t.Fatalf("malformed pairs: %v, want four problems", err)
	}
}
