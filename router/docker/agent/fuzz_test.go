package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"testing"
)

// Docker's own rules for what the agent names after a request.
var (
	dockerName   = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
	dockerVolume = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
)

// FuzzLaunchRequest: any body the router may send the agent decodes (as the
// agent's handler does) and is refused with ErrInvalid, or is a request whose
// container and volume names Docker accepts and whose catalog check answers
// without touching the engine (image IDs come from a table here: a unit-test
// stand-in for the engine, whose launches the Docker tests make for real).
func FuzzLaunchRequest(f *testing.F) {
	for _, s := range []string{
		`{"instance":"i-0123456789ab","service":"pm","user":"alice","owner":"alice","image":"upc/pm:v1","digest":"sha256:aa","port":8080,"cpu_millis":500,"memory_mb":256,"volumes":[{"name":"data","path":"/data","per_user":true}],"env":{"UPC_PM_DATA":"/data"},"tls":true}`,
		`{"instance":"i-1","service":"count","user":"bob","pm":"i-0123456789ab","image":"upc/count:v1","port":8080}`,
		`{"instance":"../x","service":"pm","user":"a b","image":"","port":0,"volumes":[{"name":"Data","path":"rel"}]}`,
		`{"instance":"i","service":"s","user":"u","image":"i","port":1,"labels":{"upc.owner":"mallory"}}`,
	} {
		f.Add([]byte(s))
	}
	images := catalog{{Ref: "upc/pm:v1", Digest: "sha256:aa"}, {Ref: "upc/count:v1"}}
	ids := map[string]string{"upc/pm:v1": "sha256:aa", "upc/count:v1": "sha256:bb"}
	imageID := func(_ context.Context, ref string) (string, error) {
		if id, ok := ids[ref]; ok {
			return id, nil
		}
		return "", ErrNotFound
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req LaunchRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		if err := req.Validate(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%s: refused without ErrInvalid: %v", body, err)
			}
			return
		}
		if name := "upc-" + req.Service + "-" + req.Instance; !dockerName.MatchString(name) {
			t.Fatalf("%s: container name %q is not one Docker accepts", body, name)
		}
		for _, v := range req.Volumes {
			if n := VolumeName("agent-1", req.User, v.Name); !dockerVolume.MatchString(n) {
				t.Fatalf("%s: volume name %q is not one Docker accepts", body, n)
			}
		}
		if err := images.check(context.Background(), req, imageID); err != nil && !errors.Is(err, ErrForbidden) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: catalog check failed without a refusal: %v", body, err)
		}
	})
}
