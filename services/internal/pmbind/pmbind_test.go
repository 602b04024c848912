package pmbind

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/e-mission/upc/internal/access"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/services/pm/pmclient"
)

func status(err error) int {
	var he *httpx.Error
	if errors.As(err, &he) {
		return he.Code
	}
	return 0
}

func TestResolve(t *testing.T) {
	bound := access.Instance{SHA256: "x", PMAddress: "http://pm-a:8080", PMGrant: "upcg_a"}
	shared := access.Instance{SHA256: "x"}
	legacy := access.Instance{Legacy: true}
	for _, c := range []struct {
		in          access.Instance
		addr, grant string
		want        Target
		code        int
	}{
		{bound, "", "", Target{"http://pm-a:8080", "upcg_a"}, 0},
		{bound, "pm-a:8080", "", Target{"http://pm-a:8080", "upcg_a"}, 0},
		{bound, "HTTP://PM-A:8080/", "upcg_other", Target{"http://pm-a:8080", "upcg_a"}, 0}, // the binding's grant, always
		{bound, "http://pm-b:8080", "", Target{}, 403},
		{bound, "http://pm-a:8081", "upcg_b", Target{}, 403},
		{bound, "https://pm-a:8080", "", Target{}, 403},
		{shared, "http://pm-b:8080", "upcg_b", Target{"http://pm-b:8080", "upcg_b"}, 0},
		{shared, "http://pm-b:8080", "", Target{}, 400},
		{shared, "", "upcg_b", Target{}, 400},
		{legacy, "pm-b:8080", "", Target{"pm-b:8080", ""}, 0},
		{legacy, "", "", Target{}, 400},
		// Not a PM's address: refused before anything is dialled.
		{shared, "file:///etc/passwd", "upcg_b", Target{}, 400},
		{legacy, "file:///etc/passwd", "", Target{}, 400},
		{shared, "https://user:pw@pm-b:8080", "upcg_b", Target{}, 400},
		{shared, "https://pm-b:8080/elsewhere?x=1", "upcg_b", Target{}, 400},
		{shared, "https://:8080", "upcg_b", Target{}, 400},
		{shared, "gopher://pm-b:70", "upcg_b", Target{}, 400},
		{shared, "https://pm-b:8080/", "upcg_b", Target{"https://pm-b:8080/", "upcg_b"}, 0},
	} {
		got, err := Resolve(c.in, c.addr, c.grant)
		if status(err) != c.code || got != c.want {
			t.Errorf("%+v %q %q: %+v %v, want %+v and status %d", c.in, c.addr, c.grant, got, err, c.want, c.code)
		}
	}
}

func TestError(t *testing.T) {
	for in, want := range map[int]int{401: 403, 403: 403, 400: 400, 409: 409, 404: 404, 500: 502, 503: 502} {
		err := Error("m", fmt.Errorf("wrapped: %w", &pmclient.StatusError{Code: in}))
		if status(err) != want {
			t.Errorf("PM %d → %d, want %d", in, status(err), want)
		}
		if Refused(&pmclient.StatusError{Code: in}) != (in == 401 || in == 403) {
			t.Errorf("Refused(%d)", in)
		}
	}
	if status(Error("m", errors.New("connection refused"))) != http.StatusBadGateway {
		t.Error("no answer is not 502")
	}
}
