package synth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/e-mission/upc/internal/realdata"
)

// ManifestName is the file Generate writes beside the users' day files.
const ManifestName = "synth.json"

// Options say what Generate makes.
type Options struct {
	// Source is the folder of real days (testdata/real_examples): NAME and
	// NAME.ground_truth.
	Source string
	// Days are the real days used, round robin; empty means every day in
	// Source that has a ground truth.
	Days []string
	// Users is how many users to make (1–100 000).
	Users int
	// Seed makes the users reproducible: the same seed, source and count give
	// byte-identical files.
	Seed uint64
	// Out receives user-NNNN, user-NNNN.ground_truth and synth.json.
	Out string
	// MaxOffset bounds the spatial offset in degrees on each axis (default
	// 0.05, about 5 km).
	MaxOffset float64
}

// User is one synthetic user: which real day it is made of and how it moved.
type User struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Shift  Shift  `json:"shift"`
	// Trips is the ground truth's number of trips (the same as the source's).
	Trips int `json:"trips"`
	// StartTs and EndTs span the user's trips; FirstStart is where the first
	// one starts [lon, lat] (all moved).
	StartTs    float64    `json:"start_ts"`
	EndTs      float64    `json:"end_ts"`
	FirstStart [2]float64 `json:"first_start"`
	// Date is the local date of the first trip (YYYY-MM-DD) and Timezone its zone.
	Date     string `json:"date"`
	Timezone string `json:"timezone"`
}

// Manifest lists what Generate made.
type Manifest struct {
	Seed      uint64  `json:"seed"`
	Source    string  `json:"source"`
	MaxOffset float64 `json:"max_offset"`
	Users     []User  `json:"users"`
}

func (o *Options) validate() error {
	var errs []error
	if o.Source == "" {
		errs = append(errs, errors.New("source: the folder of real days is required"))
	}
	if o.Out == "" {
		errs = append(errs, errors.New("out: the output folder is required"))
	}
	if o.Users < 1 || o.Users > 100000 {
		errs = append(errs, fmt.Errorf("users: %d is not within 1–100000", o.Users))
	}
	if o.MaxOffset == 0 {
		o.MaxOffset = 0.05
	}
	if !(o.MaxOffset > 0 && o.MaxOffset <= 1) {
		errs = append(errs, fmt.Errorf("max offset: %v degrees is not within (0, 1]", o.MaxOffset))
	}
	return errors.Join(errs...)
}

// RealDays lists the days of dir that have a ground truth beside them.
func RealDays(dir string) ([]string, error) {
	all, err := realdata.Days(dir)
	if err != nil {
		return nil, fmt.Errorf("list real days: %w", err)
	}
	var days []string
	for _, day := range all {
		if _, err := realdata.Resolve(filepath.Join(dir, day+realdata.GroundTruthSuffix)); err == nil {
			days = append(days, day)
		}
	}
	if len(days) == 0 {
		return nil, fmt.Errorf("no day with a ground truth in %s", dir)
	}
	return days, nil
}

// Plan draws the users' sources and shifts from the seed, without reading
// any file: user i (from 0) is made of days[i mod len(days)], moved by a
// distinct number of whole weeks (1..Users, a seeded permutation, so no two
// users share a week) and by an offset uniform in ±MaxOffset on each axis.
func Plan(days []string, users int, seed uint64, maxOffset float64) []User {
	rng := rand.New(rand.NewPCG(seed, 0x5e17_d47a))
	weeks := rng.Perm(users)
	out := make([]User, users)
	for i := range out {
		out[i] = User{
			Name:   fmt.Sprintf("user-%04d", i+1),
			Source: days[i%len(days)],
			Shift: Shift{
				Days: 7 * (weeks[i] + 1),
				DLon: round6((rng.Float64()*2 - 1) * maxOffset),
				DLat: round6((rng.Float64()*2 - 1) * maxOffset),
			},
		}
	}
	return out
}

// round6 keeps offsets to 1e-6 degrees (0.1 m) so the manifest reads well.
func round6(f float64) float64 {
	const s = 1e6
	if f < 0 {
		return -float64(int64(-f*s+0.5)) / s
	}
	return float64(int64(f*s+0.5)) / s
}

// Generate writes o.Users users into o.Out (created if needed) and their
// manifest. It never overwrites a folder that holds other files than its own.
func Generate(ctx context.Context, o Options) (*Manifest, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	days := o.Days
	if len(days) == 0 {
		var err error
		if days, err = RealDays(o.Source); err != nil {
			return nil, err
		}
	}
	raw := map[string][2][]byte{}
	var errs []error
	for _, d := range days {
		if _, ok := raw[d]; ok {
			continue
		}
		day, err := realdata.ReadFile(filepath.Join(o.Source, d))
		if err != nil {
			errs = append(errs, fmt.Errorf("day %s: %w", d, err))
			continue
		}
		gt, err := realdata.ReadFile(filepath.Join(o.Source, d+realdata.GroundTruthSuffix))
		if err != nil {
			errs = append(errs, fmt.Errorf("day %s: %w", d, err))
			continue
		}
		raw[d] = [2][]byte{day, gt}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	if err := prepareOut(o.Out); err != nil {
		return nil, err
	}
	m := &Manifest{Seed: o.Seed, Source: o.Source, MaxOffset: o.MaxOffset, Users: Plan(days, o.Users, o.Seed, o.MaxOffset)}
	jobs := make(chan int)
	errc := make(chan error, len(m.Users))
	var wg sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				u := &m.Users[i]
				if err := writeUser(o.Out, u, raw[u.Source]); err != nil {
					errc <- fmt.Errorf("%s (from %s): %w", u.Name, u.Source, err)
				}
			}
		}()
	}
	for i := range m.Users {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errc)
	for err := range errc {
		errs = append(errs, err)
	}
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, ManifestName), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("synth: write manifest: %w", err)
	}
	return m, nil
}

// prepareOut makes out, refusing a folder with files Generate did not write.
func prepareOut(out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	for _, e := range ents {
		if n := e.Name(); n != ManifestName && !strings.HasPrefix(n, "user-") {
			return fmt.Errorf("synth: %s holds %s, which synth did not write: choose an empty folder", out, n)
		}
	}
	return nil
}

func writeUser(out string, u *User, src [2][]byte) error {
	day, err := decode(src[0])
	if err != nil {
		return fmt.Errorf("day file: %w", err)
	}
	gt, err := decode(src[1])
	if err != nil {
		return fmt.Errorf("ground truth: %w", err)
	}
	if err := Apply(day, u.Shift); err != nil {
		return fmt.Errorf("day file: %w", err)
	}
	if err := Apply(gt, u.Shift); err != nil {
		return fmt.Errorf("ground truth: %w", err)
	}
	if err := summarize(u, gt); err != nil {
		return err
	}
	for name, v := range map[string]any{u.Name: day, u.Name + ".ground_truth": gt} {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func decode(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// summarize fills the user's trips, span and first start from its moved
// ground truth ({"data": [trip FeatureCollection...]}).
func summarize(u *User, gt any) error {
	trips, err := gtTrips(gt)
	if err != nil {
		return err
	}
	u.Trips = len(trips)
	for i, t := range trips {
		p, _ := t["properties"].(map[string]any)
		s, _ := p["start_ts"].(float64)
		e, _ := p["end_ts"].(float64)
		if i == 0 {
			u.StartTs, u.EndTs = s, e
			if loc, ok := p["start_loc"].(map[string]any); ok {
				if c, ok := loc["coordinates"].([]any); ok && len(c) == 2 {
					lon, _ := c[0].(float64)
					lat, _ := c[1].(float64)
					u.FirstStart = [2]float64{lon, lat}
				}
			}
			if ld, ok := p["start_local_dt"].(map[string]any); ok {
				y, _ := ld["year"].(float64)
				mo, _ := ld["month"].(float64)
				d, _ := ld["day"].(float64)
				u.Date = fmt.Sprintf("%04d-%02d-%02d", int(y), int(mo), int(d))
				u.Timezone, _ = ld["timezone"].(string)
			}
		}
		u.StartTs, u.EndTs = min(u.StartTs, s), max(u.EndTs, e)
	}
	return nil
}

func gtTrips(gt any) ([]map[string]any, error) {
	m, ok := gt.(map[string]any)
	if !ok {
		return nil, errors.New("ground truth is not an object")
	}
	data, _ := m["data"].([]any)
	out := make([]map[string]any, 0, len(data))
	for i, t := range data {
		tm, ok := t.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("ground truth trip %d is not an object", i)
		}
		out = append(out, tm)
	}
	return out, nil
}

// LoadManifest reads the manifest Generate wrote in dir.
func LoadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, fmt.Errorf("read synth manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("synth manifest %s: %w", dir, err)
	}
	return &m, nil
}
