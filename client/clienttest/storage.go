package clienttest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	userclient "github.com/e-mission/upc/client"
	"github.com/e-mission/upc/internal/httpx"
	"github.com/e-mission/upc/router/api"
	"github.com/e-mission/upc/router/docker/agent"
	"github.com/e-mission/upc/services/pm/pmclient"
)

// Leftovers reads what the engine or cluster itself holds of user's stored
// data (volumes or claims labelled for the user, the files they kept),
// bypassing the router: after an erase it must be nothing.
type Leftovers func(t testing.TB, user string) []string

// StorageFlow carries one user's data through what outlives their
// instances, with the real PM behind r, whatever its backend:
//
//   - launch and unseal with a key, upload day, delete the PM;
//   - relaunch with a wrong key: refused, the PM stays sealed and is
//     deleted, the data is untouched;
//   - relaunch with the key: the same volume or claim, the same data;
//   - export: every entry, in the original's form, which Upload takes again;
//   - erase while the PM runs: 409 naming it, nothing removed;
//   - erase with the PM deleted first: the router lists nothing of the user,
//     and the engine or cluster holds nothing (leftovers);
//   - relaunch: a new, empty volume, which a new key unseals.
func StorageFlow(t *testing.T, r Router, day []userclient.Entry, leftovers Leftovers) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	user := "storage-" + randHex(4)
	rc := r.Client(t, r.AddUser(t, user, api.RoleUser))
	c := &userclient.Client{Router: userclient.NewRouter(rc), User: user, HTTP: r.HTTP()}
	const key = "the key that outlives every instance"

	pm, err := c.LaunchPM(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	entries := cloneEntries(t, day)
	if _, err := c.Upload(ctx, pm.Address, entries); err != nil {
		t.Fatal(err)
	}
	want := userclient.Expected(entries)
	if err := c.Delete(ctx, pm.ID); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stored(ctx)
	if err != nil || len(st.Volumes) != 1 || st.Volumes[0].Volume != "data" {
		t.Fatalf("after delete %s's stored data is %+v %v, want one data volume", user, st, err)
	}
	volume := st.Volumes[0].Name

	if _, err := c.LaunchPM(ctx, "not the key"); err == nil || !strings.Contains(err.Error(), "wrong key") {
		t.Fatalf("relaunch with a wrong key: %v, want the PM's refusal", err)
	}
	if ins, err := rc.List(ctx, user); err != nil || len(ins) != 0 {
		t.Fatalf("after the wrong key the router lists %+v %v, want the sealed PM deleted", ins, err)
	}

	pm, err = c.LaunchPM(ctx, key)
	if err != nil {
		t.Fatalf("relaunch with the key: %v", err)
	}
	if st, err := c.Stored(ctx); err != nil || len(st.Volumes) != 1 || st.Volumes[0].Name != volume {
		t.Fatalf("after the relaunch %s's stored data is %+v %v, want %s again", user, st, err, volume)
	}
	got, err := c.Download(ctx, pm.Address, userclient.DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := userclient.Compare(want, got); err != nil {
		t.Fatalf("the relaunched PM's data differs from the upload: %v", err)
	}

	exp, err := c.ExportAll(ctx, pm.Address)
	if err != nil {
		t.Fatal(err)
	}
	if len(exp.Entries) != len(want) || exp.Collections["Stage_database.Stage_usercache"] != len(want) {
		t.Fatalf("export: %d entries from %v, want %d from the usercache", len(exp.Entries), exp.Collections, len(want))
	}
	again := make([]userclient.Entry, len(exp.Entries))
	for i, raw := range exp.Entries {
		if err := json.Unmarshal(raw, &again[i]); err != nil {
			t.Fatal(err)
		}
		if _, err := userclient.Prepare(again[i], user); err != nil {
			t.Fatalf("exported entry %d does not upload: %v", i, err)
		}
	}
	if err := userclient.Compare(want, userclient.Expected(again)); err != nil {
		t.Fatalf("the export differs from the upload: %v", err)
	}

	var se *httpx.StatusError
	if _, err := c.Erase(ctx, false); !errors.As(err, &se) || se.Code != http.StatusConflict || !strings.Contains(err.Error(), pm.ID) {
		t.Fatalf("erase while the PM runs: %v, want 409 naming %s", err, pm.ID)
	}
	if err := c.PM(pm.Address).Healthz(ctx); err != nil {
		t.Fatalf("the PM after a refused erase: %v", err)
	}
	before := leftovers(t, user)
	if len(before) == 0 {
		t.Fatal("the backend shows nothing of the user's data before the erase: the check would prove nothing")
	}
	t.Logf("before the erase: %q", before)
	erased, err := c.Erase(ctx, true)
	if err != nil || len(erased.Volumes) != 1 || erased.Volumes[0].Name != volume {
		t.Fatalf("erase with the PM deleted first: %+v %v, want %s removed", erased, err, volume)
	}
	if ins, err := rc.List(ctx, user); err != nil || len(ins) != 0 {
		t.Errorf("after the erase the router lists %+v %v", ins, err)
	}
	if st, err := c.Stored(ctx); err != nil || len(st.Volumes) != 0 {
		t.Errorf("after the erase the router finds %+v %v", st, err)
	}
	if left := leftovers(t, user); len(left) > 0 {
		t.Errorf("after the erase the backend still holds %q", left)
	}

	// A new PM starts empty: a new key is accepted, nothing is there.
	pm, err = c.LaunchPM(ctx, "a new key after the erase")
	if err != nil {
		t.Fatalf("launch after the erase with a new key: %v", err)
	}
	if n, err := c.PM(pm.Address).Count(ctx, pmclient.FindRequest{Collection: "Stage_usercache", Filter: map[string]any{}}); err != nil || n != 0 {
		t.Errorf("after the erase the new PM holds %d documents (%v)", n, err)
	}
	if _, err := c.Erase(ctx, true); err != nil {
		t.Errorf("final erase: %v", err)
	}
}

// DockerLeftovers reads the local engine: every volume labelled for the
// user, and the files of any such volume seen before at its mountpoint
// (checked while the test runs on the engine's host).
func DockerLeftovers(t testing.TB) Leftovers {
	cli, err := agent.NewClientFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	seen := map[string]map[string]string{} // user → volume → mountpoint
	return func(t testing.TB, user string) []string {
		t.Helper()
		vs, err := cli.VolumeList(context.Background(), client.VolumeListOptions{Filters: make(client.Filters).
			Add("label", agent.LabelUser+"="+user).Add("label", "upc.test=1")})
		if err != nil {
			t.Fatal(err)
		}
		if seen[user] == nil {
			seen[user] = map[string]string{}
		}
		var out []string
		for _, v := range vs.Items {
			out = append(out, "volume "+v.Name)
			if _, ok := seen[user][v.Name]; !ok {
				seen[user][v.Name] = v.Mountpoint
				if _, err := os.Stat(v.Mountpoint); err != nil {
					t.Logf("the files of volume %s are not checked: its mountpoint is not reachable here (%v)", v.Name, err)
					seen[user][v.Name] = ""
				}
			}
		}
		for name, mp := range seen[user] {
			if _, err := os.Lstat(mp); mp != "" && err == nil {
				out = append(out, "files of volume "+name+" at "+mp)
			}
		}
		slices.Sort(out)
		return out
	}
}

// cloneEntries copies day, which Upload changes in place.
func cloneEntries(t testing.TB, day []userclient.Entry) []userclient.Entry {
	t.Helper()
	b, err := json.Marshal(day)
	if err != nil {
		t.Fatal(err)
	}
	var out []userclient.Entry
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
