package access

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/e-mission/upc/internal/httpx"
)

// LastUse records when an instance last served an authenticated request, so
// that its GET /healthz can say how long it has been idle (Health.IdleSeconds):
// the router, which never sees instances' traffic, pauses and deletes idle
// instances by it (the catalog's idle policy). Health probes are not use.
type LastUse struct {
	now  func() time.Time
	last atomic.Int64 // unix nanoseconds of the last use (the start, before any)
	// busy counts requests in flight: an instance serving one (a pipeline
	// run of minutes) is not idle.
	busy atomic.Int64
}

// NewLastUse starts the count at now(); nil now is time.Now.
func NewLastUse(now func() time.Time) *LastUse {
	if now == nil {
		now = time.Now
	}
	u := &LastUse{now: now}
	u.last.Store(now().UnixNano())
	return u
}

// Touch records a use now.
func (u *LastUse) Touch() { u.last.Store(u.now().UnixNano()) }

// Idle is how long since the last use ended (or the start), never
// negative; 0 while a request is served.
func (u *LastUse) Idle() time.Duration {
	if u.busy.Load() > 0 {
		return 0
	}
	return max(0, u.now().Sub(time.Unix(0, u.last.Load())))
}

// IdleSeconds is Idle in whole seconds, as Health reports it.
func (u *LastUse) IdleSeconds() *int64 {
	s := int64(u.Idle() / time.Second)
	return &s
}

// Health is the /healthz answer of an instance that reports no more than
// that it serves and how long it has been idle.
func (u *LastUse) Health() Health {
	return Health{Status: "ok", IdleSeconds: u.IdleSeconds()}
}

// Track wraps h, an instance's authenticated handler (behind Guard or the
// PM's own check): every request that reaches it, but GET /healthz, is a
// use from its start to its end.
func (u *LastUse) Track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Probes and scrapes are not use: a monitor scraping every few
		// seconds must not keep an instance from going idle.
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			h.ServeHTTP(w, r)
			return
		}
		u.busy.Add(1)
		u.Touch()
		defer func() {
			u.Touch()
			u.busy.Add(-1)
		}()
		h.ServeHTTP(w, r)
	})
}

// Healthz answers GET /healthz with u.Health(), as much of it as the
// caller may see (Health.ForCaller).
func (u *LastUse) Healthz(w http.ResponseWriter, r *http.Request) {
	_ = httpx.WriteJSON(w, http.StatusOK, u.Health().ForCaller(r))
}
