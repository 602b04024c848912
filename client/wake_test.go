package client_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/router/api"
)

// wakeRouter lists fixed instances and records resumes.
type wakeRouter struct {
	client.Router // the calls Wake must not make panic
	ins           []api.Instance
	resumed       []string
}

func (w *wakeRouter) List(context.Context, string) ([]api.Instance, error) { return w.ins, nil }
func (w *wakeRouter) Resume(_ context.Context, id string) error {
	w.resumed = append(w.resumed, id)
	return nil
}

// TestWake: a device about to call its PM resumes it if the router lists it
// paused (its idle policy paused it), and leaves a running one alone.
func TestWake(t *testing.T) {
	ctx := context.Background()
	r := &wakeRouter{ins: []api.Instance{
		{ID: "aaaaaaaaaaaa", Service: "pm", Address: "https://h:1", State: client.StatePaused, Hint: "paused: ..."},
		{ID: "bbbbbbbbbbbb", Service: "count", Address: "https://h:2", State: client.StateRunning},
	}}
	c := &client.Client{Router: r, User: "alice"}
	in, err := c.Wake(ctx, "https://h:1/")
	if err != nil || in.ID != "aaaaaaaaaaaa" || in.State != client.StateRunning || in.Hint != "" {
		t.Fatalf("wake the paused pm: %+v, %v", in, err)
	}
	if in, err := c.Wake(ctx, "https://h:2"); err != nil || in.ID != "bbbbbbbbbbbb" {
		t.Fatalf("wake a running instance: %+v, %v", in, err)
	}
	if !slices.Equal(r.resumed, []string{"aaaaaaaaaaaa"}) {
		t.Errorf("resumed %v, want only the paused pm", r.resumed)
	}
	if _, err := c.Wake(ctx, "https://h:3"); !errors.Is(err, client.ErrNoInstance) {
		t.Errorf("an address the router does not list: %v, want ErrNoInstance", err)
	}
	r.resumed = nil
	if pm, err := c.FindPM(ctx); err != nil || pm.ID != "aaaaaaaaaaaa" || !slices.Equal(r.resumed, []string{"aaaaaaaaaaaa"}) {
		t.Errorf("FindPM of a paused pm: %+v, %v; resumed %v", pm, err, r.resumed)
	}
}
