package router

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/e-mission/upc/conf"
)

// Default per-user limits (conf router.max_instances_per_user,
// router.launch_rate, router.launch_burst).
const (
	DefaultMaxInstancesPerUser = 32
	DefaultLaunchRate          = 2.0 // launches per second, sustained
	DefaultLaunchBurst         = 20
)

// RunningError is ErrConflict for a user's data-holding service that already
// runs: Instance names it.
type RunningError struct {
	Instance ID
	Msg      string
}

func (e *RunningError) Error() string { return e.Msg }
func (e *RunningError) Unwrap() error { return ErrConflict }

// LimitError is ErrLimit with when to retry (0: waiting does not help).
type LimitError struct {
	Msg        string
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return e.Msg }
func (e *LimitError) Unwrap() error { return ErrLimit }

// limits holds the router's per-user limits: each identity's launch rate,
// and the launches in flight per user and data-holding service, so two
// concurrent launches of one user's PM cannot both pass the check.
type limits struct {
	maxPerUser int
	rate       rate.Limit
	burst      int

	mu       sync.Mutex
	buckets  map[string]*rate.Limiter
	inFlight map[string]int // user → launches under way
	holding  map[string]bool
	erasing  map[string]bool // users whose stored data is being erased
}

func newLimits(maxPerUser int, perSecond float64, burst int) *limits {
	if maxPerUser == 0 {
		maxPerUser = DefaultMaxInstancesPerUser
	}
	if perSecond == 0 {
		perSecond = DefaultLaunchRate
	}
	if burst == 0 {
		burst = DefaultLaunchBurst
	}
	return &limits{maxPerUser: maxPerUser, rate: rate.Limit(perSecond), burst: burst,
		buckets: map[string]*rate.Limiter{}, inFlight: map[string]int{}, holding: map[string]bool{}, erasing: map[string]bool{}}
}

// allow takes one launch from identity's bucket, or says when to retry.
func (l *limits) allow(identity string) error {
	l.mu.Lock()
	b, ok := l.buckets[identity]
	if !ok {
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[identity] = b
	}
	l.mu.Unlock()
	r := b.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return &LimitError{Msg: fmt.Sprintf("%q launches faster than %.3g a second (a burst of %d): retry in %s",
			identity, float64(l.rate), l.burst, d.Round(time.Millisecond)), RetryAfter: d}
	}
	return nil
}

// admit checks user's limits for a launch of svc and counts it in flight;
// release undoes that once the launch has ended (its instance, if any, is
// then in the router's view).
func (r *Router) admit(user string, svc conf.Service) (release func(), err error) {
	l := r.lim
	l.mu.Lock()
	defer l.mu.Unlock()
	holds := holdsUserData(svc)
	key := user + "\x00" + svc.Name
	live := 0
	var running ID
	r.mu.RLock()
	for _, in := range r.instances {
		if in.User != user {
			continue
		}
		live++
		if holds && in.Service == svc.Name && in.State != StateDead {
			running = in.ID
		}
	}
	r.mu.RUnlock()
	switch {
	case running != "":
		return nil, &RunningError{Instance: running, Msg: fmt.Sprintf("%s's %s already runs (instance %s): use it, or delete it first", user, svc.Name, running)}
	case holds && l.holding[key]:
		return nil, fmt.Errorf("%w: %s's %s is being launched", ErrConflict, user, svc.Name)
	case holds && l.erasing[user]:
		return nil, fmt.Errorf("%w: %s's stored data is being erased: launch the %s once that is done", ErrConflict, user, svc.Name)
	case live+l.inFlight[user] >= l.maxPerUser:
		return nil, &LimitError{Msg: fmt.Sprintf("user %s has %d live instances, the most one user may have (router.max_instances_per_user): delete some first",
			user, live+l.inFlight[user])}
	}
	l.inFlight[user]++
	if holds {
		l.holding[key] = true
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.inFlight[user]--; l.inFlight[user] <= 0 {
			delete(l.inFlight, user)
		}
		delete(l.holding, key)
	}, nil
}
