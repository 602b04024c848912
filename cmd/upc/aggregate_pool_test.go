package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	moby "github.com/moby/moby/client"

	"github.com/e-mission/upc/aggregator"
	"github.com/e-mission/upc/harness/synth"
	"github.com/e-mission/upc/internal/images/imagestest"
	"github.com/e-mission/upc/internal/realdata"
	"github.com/e-mission/upc/router/docker/agent"
)

// TestIntegrationAggregateWarmPool needs the Docker engine: `upc aggregate
// count --local --warm-pool 3` over three synthetic users with the real PM,
// pipeline and count images (and metrics: the catalog pins it), in both
// network modes. Every user answers; the result reports the pool's fill
// apart, all three pooled PMs claimed and none left. The engine's own events say the same independently: the run
// created exactly three PM containers, each a pool container (upc.pool),
// none after the fill (the pool is not refilled during the run). At the end
// the engine holds nothing of the run: no container, volume or network.
func TestIntegrationAggregateWarmPool(t *testing.T) {
	m := imagestest.Require(t, "pm", "pipeline", "count", "metrics")
	manifest := filepath.Join(t.TempDir(), "images.json")
	if err := m.Save(manifest); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	data := t.TempDir()
	sm, err := synth.Generate(ctx, synth.Options{Source: realdata.DirT(t), Days: []string{"shankari_2015-08-23", "sunil_2016-07-20"},
		Users: 3, Seed: 2026, Out: data})
	if err != nil {
		t.Fatal(err)
	}
	u := sm.Users[0]
	lon, lat := u.FirstStart[0], u.FirstStart[1]
	q, _ := json.Marshal(map[string]any{"offset": 100, "alpha": 0.05, "start_ts": u.StartTs, "end_ts": u.EndTs,
		"sel_region": map[string]any{"geometry": map[string]any{"type": "MultiPolygon", "coordinates": []any{
			[][][2]float64{{{lon - 0.005, lat - 0.005}, {lon + 0.005, lat - 0.005}, {lon + 0.005, lat + 0.005}, {lon - 0.005, lat + 0.005}, {lon - 0.005, lat - 0.005}}}}}}})
	qf := filepath.Join(t.TempDir(), "q.json")
	if err := os.WriteFile(qf, q, 0o644); err != nil {
		t.Fatal(err)
	}
	cli, err := agent.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, mode := range []string{"host", "bridge"} {
		t.Run(mode, func(t *testing.T) {
			// The engine's container creations of aggregate runs, as they
			// happen (only this test's run, once it has named its agent).
			ectx, ecancel := context.WithCancel(ctx)
			ev := cli.Events(ectx, moby.EventsListOptions{Filters: make(moby.Filters).Add("type", "container").
				Add("event", "create").Add("event", "destroy").Add("label", "upc.aggregate")})
			var (
				mu        sync.Mutex
				created   []events.Message
				destroyed = map[string]bool{}
				evErr     error
			)
			go func() {
				for {
					select {
					case msg := <-ev.Messages:
						mu.Lock()
						if msg.Action == events.ActionCreate {
							created = append(created, msg)
						} else {
							destroyed[msg.Actor.ID] = true
						}
						mu.Unlock()
					case err := <-ev.Err:
						mu.Lock()
						evErr = err
						mu.Unlock()
						return
					}
				}
			}()
			defer ecancel()
			var out, errOut bytes.Buffer
			cmd := newRootCmd(&out, &errOut)
			cmd.SetArgs([]string{"aggregate", "count", "--local", "--images", manifest, "--data", data, "--query", qf,
				"--network-mode", mode, "--warm-pool", "3", "--parallel", "3", "--experiment-seed", "1", "--out", t.TempDir()})
			err := cmd.ExecuteContext(ctx)
			t.Logf("stderr:\n%s", errOut.String())
			if err != nil {
				t.Fatal(err)
			}
			// The command removed every container it created: once the
			// engine has reported each one's destroy, it has reported
			// all the creations before (events come in order).
			for {
				mu.Lock()
				all := len(created) > 0 && evErr == nil
				for _, e := range created {
					all = all && destroyed[e.Actor.ID]
				}
				stop := evErr
				mu.Unlock()
				if all {
					break
				}
				if stop != nil {
					t.Fatalf("engine events: %v", stop)
				}
				select {
				case <-ctx.Done():
					t.Fatal("the run's containers were not all reported destroyed")
				case <-time.After(50 * time.Millisecond):
				}
			}
			ecancel()
			var res aggregator.Result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("result: %v\n%s", err, out.String())
			}
			if res.NumberParticipants != 3 || res.Failed != 0 {
				t.Errorf("%d of 3 users answered, %d failed: %s", res.NumberParticipants, res.Failed, out.String())
			}
			p := res.PoolFill
			if p == nil || p.Size != 3 || p.Claimed != 3 || p.Left != 0 || p.FillMS <= 0 {
				t.Errorf("pool fill %+v: want size 3, all 3 claimed, none left, a fill time", p)
			}
			mu.Lock()
			defer mu.Unlock()
			agents := map[string]bool{}
			pms, pooled := 0, 0
			for _, e := range created {
				a := e.Actor.Attributes
				agents[a["upc.aggregate"]] = true
				if a[agent.LabelService] == "pm" {
					pms++
					if a[agent.LabelPool] != "" {
						pooled++
					}
				}
			}
			if len(agents) != 1 {
				t.Fatalf("container creations of %d aggregate runs seen (%v): want this run's alone", len(agents), agents)
			}
			if pms != 3 || pooled != 3 {
				t.Errorf("the engine created %d PM containers, %d of them pool containers: want 3 and 3 (every user's PM from the pool, no refill)", pms, pooled)
			}
			for id := range agents {
				f := make(moby.Filters).Add("label", "upc.aggregate="+id)
				cs, err := cli.ContainerList(ctx, moby.ContainerListOptions{All: true, Filters: f})
				if err != nil {
					t.Fatal(err)
				}
				vs, err := cli.VolumeList(ctx, moby.VolumeListOptions{Filters: f})
				if err != nil {
					t.Fatal(err)
				}
				ns, err := cli.NetworkList(ctx, moby.NetworkListOptions{Filters: make(moby.Filters).Add("name", "upc-agg-"+id)})
				if err != nil {
					t.Fatal(err)
				}
				if len(cs.Items) != 0 || len(vs.Items) != 0 || len(ns.Items) != 0 {
					t.Errorf("left on the engine: %d containers, %d volumes, %d networks of run %s", len(cs.Items), len(vs.Items), len(ns.Items), id)
				}
			}
		})
	}
}
