package scenario

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/e-mission/upc/harness/synth"
	"github.com/e-mission/upc/internal/realdata"
)

// DataEnv names the environment variable that may point at real_examples.
const DataEnv = realdata.Env

// User is one simulated person: a day of data, a key, an id.
type User struct {
	// Name is stable across runs: "<day>#<n>".
	Name string `json:"name"`
	// ID is the user's id for the router and the PM, unique to the run.
	ID string `json:"id"`
	// Key unseals the user's PM. Derived from the scenario seed, so a run can be
	// reproduced; these are test users, never real people.
	Key string `json:"-"`
	Day string `json:"day"`
	// DayPath and GroundTruthPath are the day's input and its expected trips.
	DayPath         string `json:"day_path"`
	GroundTruthPath string `json:"ground_truth_path"`
	// ExpectedTrips is the number of trips in the ground truth.
	ExpectedTrips int `json:"expected_trips"`
	// Truth is what queries about the day can be checked against.
	Truth Truth `json:"truth"`
}

// Truth summarises a day's ground truth: the local date and span of its
// trips and where the first one started.
type Truth struct {
	// Date is the local date of the first trip, in its time zone.
	Year, Month, Day int
	Timezone         string
	// StartTs and EndTs span the trips (seconds).
	StartTs, EndTs float64
	// FirstStart is the first trip's start [longitude, latitude].
	FirstStart [2]float64
}

// Locate finds the folder of real days: the scenario's own dir (relative to
// the scenario file's folder), else $UPC_REAL_EXAMPLES, else the first
// testdata/real_examples found walking up from the scenario file's folder or
// from start (usually the working directory): the repository's own copy.
func Locate(dir, scenarioDir, start string) (string, error) {
	if dir != "" {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(scenarioDir, dir)
		}
		if !isDir(dir) {
			return "", fmt.Errorf("population.real_days.dir: %s is not a folder", dir)
		}
		return dir, nil
	}
	if env := os.Getenv(DataEnv); env != "" {
		if !isDir(env) {
			return "", fmt.Errorf("$%s: %s is not a folder", DataEnv, env)
		}
		return env, nil
	}
	var tried []string
	for _, from := range []string{scenarioDir, start} {
		d, err := filepath.Abs(from)
		if err != nil {
			continue
		}
		for {
			if p := filepath.Join(d, realdata.RepoDir); isDir(p) {
				return p, nil
			}
			tried = append(tried, d)
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return "", fmt.Errorf("no %s folder found above %s or %s; set $%s or population.real_days.dir", realdata.RepoDir, scenarioDir, start, DataEnv)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// Users lists the scenario's users with their day files, checking every file
// exists and every ground truth parses (all problems at once). run makes ids
// unique to this run, so runs never share a user's volumes.
func (s *Scenario) Users(dataDir, run string) ([]User, error) {
	r := s.Population.RealDays
	if r == nil {
		return nil, errors.New("population: synthetic users must be generated first (Synthesize)")
	}
	return DayUsers(s.Seed, dataDir, run, r.Days, r.UsersPerDay)
}

// Synthesize writes the scenario's synthetic users, made from the real days
// in dataDir, into out, and returns them.
func (s *Scenario) Synthesize(ctx context.Context, dataDir, out, run string) ([]User, error) {
	syn := s.Population.Synthetic
	if syn == nil {
		return nil, errors.New("population: no synthetic users to generate")
	}
	m, err := synth.Generate(ctx, synth.Options{Source: dataDir, Days: syn.Days, Users: syn.Users, Seed: syn.Seed, Out: out, MaxOffset: syn.MaxOffset})
	if err != nil {
		return nil, err
	}
	names := make([]string, len(m.Users))
	for i, u := range m.Users {
		names[i] = u.Name
	}
	return DayUsers(s.Seed, out, run, names, 1)
}

// NeedsDays reports whether any step reads a user's day file or ground
// truth: steps that only launch, unseal, pause, resume or delete a PM read
// neither.
func (s *Scenario) NeedsDays() bool {
	return slices.ContainsFunc(s.Steps, func(st Step) bool {
		return !slices.Contains([]string{Launch, Unseal, Pause, Resume, Delete}, st.Do)
	})
}

// PlanSynthetic lists the scenario's synthetic users as Synthesize does (the
// same names, ids and keys), without writing their day files, which
// NeedsDays says no step reads: a thousand users' days cost a minute of CPU
// and most of a gigabyte. Their DayPath and GroundTruthPath are empty.
func (s *Scenario) PlanSynthetic(dataDir, run string) ([]User, error) {
	syn := s.Population.Synthetic
	if syn == nil {
		return nil, errors.New("population: no synthetic users to plan")
	}
	days := syn.Days
	if len(days) == 0 {
		var err error
		if days, err = synth.RealDays(dataDir); err != nil {
			return nil, err
		}
	}
	plan := synth.Plan(days, syn.Users, syn.Seed, 0)
	users := make([]User, len(plan))
	for i, p := range plan {
		name := p.Name + "#1" // as DayUsers names the one user of each made day
		users[i] = User{Name: name, ID: userID(s.Seed, run, name), Key: derive(s.Seed, "key", name), Day: p.Name}
	}
	return users, nil
}

// DayUsers makes perDay users of each day file in dataDir.
func DayUsers(seed int64, dataDir, run string, days []string, perDay int) ([]User, error) {
	var users []User
	var errs []error
	for _, day := range days {
		dp, err := realdata.Resolve(filepath.Join(dataDir, day))
		if err != nil {
			errs = append(errs, fmt.Errorf("day %s: %w", day, err))
			continue
		}
		gp, err := realdata.Resolve(filepath.Join(dataDir, day+realdata.GroundTruthSuffix))
		if err != nil {
			errs = append(errs, fmt.Errorf("day %s: %w", day, err))
			continue
		}
		truth, trips, err := readTruth(gp)
		if err != nil {
			errs = append(errs, fmt.Errorf("day %s: %w", day, err))
			continue
		}
		for i := 1; i <= perDay; i++ {
			name := fmt.Sprintf("%s#%d", day, i)
			users = append(users, User{
				Name:            name,
				ID:              userID(seed, run, name),
				Key:             derive(seed, "key", name),
				Day:             day,
				DayPath:         dp,
				GroundTruthPath: gp,
				ExpectedTrips:   trips,
				Truth:           truth,
			})
		}
	}
	return users, errors.Join(errs...)
}

// readTruth reads a ground truth file: {"data": [trip...]} (data may be
// null), each trip a GeoJSON FeatureCollection whose properties carry the
// trip's start and end.
func readTruth(path string) (Truth, int, error) {
	b, err := realdata.ReadFile(path)
	if err != nil {
		return Truth{}, 0, fmt.Errorf("read ground truth: %w", err)
	}
	var gt struct {
		Data []struct {
			Properties struct {
				StartTs      float64 `json:"start_ts"`
				EndTs        float64 `json:"end_ts"`
				StartLocalDt struct {
					Year, Month, Day int
					Timezone         string
				} `json:"start_local_dt"`
				StartLoc struct {
					Coordinates []float64 `json:"coordinates"`
				} `json:"start_loc"`
			} `json:"properties"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &gt); err != nil {
		return Truth{}, 0, fmt.Errorf("ground truth %s: %w", path, err)
	}
	var t Truth
	for i, trip := range gt.Data {
		p := trip.Properties
		if i == 0 {
			t.Year, t.Month, t.Day, t.Timezone = p.StartLocalDt.Year, p.StartLocalDt.Month, p.StartLocalDt.Day, p.StartLocalDt.Timezone
			t.StartTs = p.StartTs
			if len(p.StartLoc.Coordinates) == 2 {
				t.FirstStart = [2]float64{p.StartLoc.Coordinates[0], p.StartLoc.Coordinates[1]}
			}
		}
		t.StartTs = min(t.StartTs, p.StartTs)
		t.EndTs = max(t.EndTs, p.EndTs)
	}
	return t, len(gt.Data), nil
}

// derive is a reproducible 256-bit value (hex) for the seed and the parts.
func derive(seed int64, parts ...string) string {
	h := sha256.New()
	binary.Write(h, binary.BigEndian, seed)
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// userID is a UUID-shaped id (e-mission's user ids are UUIDs), v4 bits set.
func userID(seed int64, run, name string) string {
	b, _ := hex.DecodeString(derive(seed, "user", run, name))
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
