// Package flow is what each simulated user does in an e2e run, step by step,
// through the same client code a user's device runs (package client):
// launch a PM through the router, unseal it, upload a real e-mission day,
// download it back and compare it with the day file, run the pipeline and
// compare its trips with the day's ground truth, ask the metrics and count
// services, pause, resume, delete.
package flow

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/harness/lossless"
	"github.com/e-mission/upc/harness/runner"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/router/api"
)

// Flow makes one session per user against one router.
type Flow struct {
	// Router is every user's router client when SignIn is nil.
	Router client.Router
	// SignIn, when set, gives each user a router client of their own
	// (their identity's token), made before their first step needs it.
	SignIn func(ctx context.Context, user string) (client.Router, error)
	// HTTP reaches the instances; nil means http.DefaultClient.
	HTTP *http.Client
	// Faults injects the faults of fault steps (nil: a fault step fails).
	Faults Faults
}

// New is a runner.NewSession.
func (f *Flow) New(u scenario.User) runner.Session {
	return &session{u: u, signIn: f.SignIn, f: f.Faults, c: &client.Client{Router: f.Router, User: u.ID, HTTP: f.HTTP}}
}

type session struct {
	u      scenario.User
	signIn func(ctx context.Context, user string) (client.Router, error)
	c      *client.Client
	// pm is the user's PM once launched; unsealed says it was given the key.
	pm       *api.Instance
	unsealed bool
	// uploaded says the day was uploaded; downloaded is what came back.
	uploaded   bool
	downloaded []client.Entry
	// sections is how many cleaned sections the pipeline step wrote: the
	// metrics step's count answers must add up to at most that, and to more
	// than none.
	sections int
	// f injects faults; faults counts the fault steps taken so far.
	f      Faults
	faults int
}

var errNoPM = errors.New("no PM launched")

func (s *session) Do(ctx context.Context, st scenario.Step) (runner.Outcome, error) {
	if s.c.Router == nil && s.signIn != nil {
		r, err := s.signIn(ctx, s.u.ID)
		if err != nil {
			return runner.Outcome{}, fmt.Errorf("sign in: %w", err)
		}
		s.c.Router = r
	}
	switch st.Do {
	case scenario.Launch:
		inst, err := s.c.Router.Launch(ctx, api.LaunchRequest{Service: client.PMService, User: s.u.ID})
		if err != nil {
			return runner.Outcome{}, fmt.Errorf("launch pm: %w", err)
		}
		s.pm, s.unsealed = &inst, false
		// The owner's credential at the PM, sent only in this answer.
		s.c.PMSecret = inst.Secret
		return runner.Outcome{Placement: Machine(inst.Machine), Note: fmt.Sprintf("%s on %s", inst.Address, Machine(inst.Machine))}, nil
	case scenario.Unseal:
		if s.pm == nil {
			return runner.Outcome{}, errNoPM
		}
		if err := s.c.PM(s.pm.Address).Unseal(ctx, s.u.Key); err != nil {
			return runner.Outcome{}, fmt.Errorf("unseal: %w", err)
		}
		s.unsealed = true
		return runner.Outcome{}, nil
	case scenario.Upload:
		if s.pm == nil {
			return runner.Outcome{}, errNoPM
		}
		entries, err := client.LoadDay(s.u.DayPath)
		if err != nil {
			return runner.Outcome{}, err
		}
		res, err := s.c.Upload(ctx, s.pm.Address, entries)
		o := runner.Outcome{Values: map[string]float64{"entries": float64(res.Entries), "inserted": float64(res.Inserted), "updated": float64(res.Updated)},
			Note: fmt.Sprintf("%d entries: %d new, %d merged", res.Entries, res.Inserted, res.Updated)}
		if err != nil {
			return o, err
		}
		s.uploaded = true
		return o, nil
	case scenario.Download:
		if s.pm == nil {
			return runner.Outcome{}, errNoPM
		}
		docs, err := s.c.Download(ctx, s.pm.Address, client.DownloadOptions{})
		if err != nil {
			return runner.Outcome{}, err
		}
		s.downloaded = docs
		return runner.Outcome{Values: map[string]float64{"documents": float64(len(docs))}, Note: fmt.Sprintf("%d documents", len(docs))}, nil
	case scenario.Compare:
		return s.compare()
	case scenario.Pause:
		if s.pm == nil {
			return runner.Outcome{}, errNoPM
		}
		return runner.Outcome{}, s.c.Pause(ctx, s.pm.ID)
	case scenario.Resume:
		if s.pm == nil {
			return runner.Outcome{}, errNoPM
		}
		if err := s.c.Resume(ctx, s.pm.ID); err != nil {
			return runner.Outcome{}, err
		}
		// Resumed means answering again.
		if err := s.c.PM(s.pm.Address).Healthz(ctx); err != nil {
			return runner.Outcome{}, fmt.Errorf("resumed pm does not answer: %w", err)
		}
		// Only a PM that was unsealed before its pause needs its key again.
		if s.unsealed {
			if err := s.unsealResumed(ctx); err != nil {
				return runner.Outcome{}, err
			}
		}
		return runner.Outcome{}, nil
	case scenario.Pipeline:
		return s.pipeline(ctx)
	case scenario.Metrics:
		return s.metrics(ctx, st)
	case scenario.Count:
		return s.count(ctx)
	case scenario.Fault:
		return s.fault(ctx, st)
	case scenario.Delete:
		if s.pm == nil {
			return runner.Outcome{}, errNoPM
		}
		if err := s.c.Delete(ctx, s.pm.ID); err != nil {
			return runner.Outcome{}, err
		}
		s.pm = nil
		return runner.Outcome{}, nil
	}
	return runner.Outcome{}, fmt.Errorf("step %s: not supported by this harness yet", st.Do)
}

// compare checks the download against the day file, read again apart from
// the upload code (package lossless), so that a mistake in preparing the
// upload cannot hide on both sides of the comparison.
func (s *session) compare() (runner.Outcome, error) {
	if !s.uploaded || s.downloaded == nil {
		return runner.Outcome{}, errors.New("compare: nothing uploaded and downloaded to compare")
	}
	day, err := lossless.ReadDay(s.u.DayPath)
	if err != nil {
		return runner.Outcome{}, fmt.Errorf("compare: %w", err)
	}
	if err := lossless.Check(day, s.downloaded); err != nil {
		return runner.Outcome{}, fmt.Errorf("compare: the download differs from the day file: %w", err)
	}
	return runner.Outcome{Values: map[string]float64{"entries": float64(len(day)), "documents": float64(len(s.downloaded))},
		Note: fmt.Sprintf("%d documents hold the day file's %d entries", len(s.downloaded), len(day))}, nil
}

// Machine is a machine's short name: its configured address without the port.
func Machine(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return addr[:i]
	}
	return addr
}
