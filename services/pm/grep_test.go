package pm_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/services/pm/api"
	"github.com/e-mission/upc/services/pm/pmtest"
	"github.com/e-mission/upc/services/pm/query"
)

func readAll(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// Known values written through the API must not appear in any file of the
// data directory: not the documents' contents, stream names, collection
// names, user id, timestamps (as text or as raw float64 bytes), the ledger,
// nor the key.
func TestNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	p := startPM(t, dir, 1.0)
	ctx := context.Background()
	if err := p.c.Unseal(ctx, secret); err != nil {
		t.Fatal(err)
	}
	const user = "grep-test-user-5d3c1e"
	day := pmtest.LoadDay(t, filepath.Join(pmtest.RealExamplesDir(t), "shankari_2015-aug-27"))
	uploadLikeTheScript(t, p, user, cloneDocs(t, day[:300]))
	if _, err := p.c.Insert(ctx, api.DefaultDatabase, api.Timeseries, day...); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Spend(ctx, api.SpendRequest{PrivacyCost: 0.1, QueryID: "query-7f3a", Service: "metrics-service-name", Question: digest(t, "grep")}); err != nil {
		t.Fatal(err)
	}
	p.stop() // flush and close, as a stopped container leaves its volume

	needles := map[string][]byte{
		"key":             []byte(secret),
		"user id":         []byte(user),
		"collection":      []byte(api.Timeseries),
		"usercache":       []byte(api.Usercache),
		"database":        []byte(api.DefaultDatabase),
		"ledger service":  []byte("metrics-service-name"),
		"ledger query id": []byte("query-7f3a"),
		"timezone":        []byte("America/Los_Angeles"),
		"stream word":     []byte("background"),
		"ObjectId (hex)":  []byte(day[0]["_id"].(string)),
	}
	keys := map[string]bool{}
	for i, d := range day {
		md := d["metadata"].(map[string]any)
		keys[md["key"].(string)] = true
		if i%50 != 0 {
			continue
		}
		data := d["data"].(map[string]any)
		for _, path := range []string{"data.ts", "metadata.write_ts"} {
			v, ok := query.Get(d, path)
			if !ok {
				continue
			}
			n := v.(json.Number)
			f, _ := n.Float64()
			needles[path+" text "+n.String()] = []byte(n.String())
			needles[path+" seconds"] = []byte(n.String()[:10])
			var be, le [8]byte
			binary.BigEndian.PutUint64(be[:], math.Float64bits(f))
			binary.LittleEndian.PutUint64(le[:], math.Float64bits(f))
			needles[path+" float64 BE "+n.String()] = be[:]
			needles[path+" float64 LE "+n.String()] = le[:]
		}
		if ft, ok := data["fmt_time"].(string); ok {
			needles["fmt_time "+ft] = []byte(ft)
		}
	}
	for k := range keys {
		needles["stream "+k] = []byte(k)
	}
	files := readAll(t, dir)
	if len(files) == 0 {
		t.Fatal("no files in the data directory")
	}
	total := 0
	for name, b := range files {
		total += len(b)
		for what, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s holds %s in plaintext", filepath.Base(name), what)
			}
		}
	}
	t.Logf("%d needles absent from %d files (%d bytes)", len(needles), len(files), total)
	if len(needles) < 30 {
		t.Fatalf("only %d needles: the test checks too little", len(needles))
	}
}
