package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/moby/client"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// registryImage is upc:index:RegistryImage. Inputs: source (an image on the
// local engine), target (registry/path:tag), username and password (a
// secret). Output: repoDigest (target's repository @ the pushed digest).
type registryImage struct{}

func (registryImage) check(in resource.PropertyMap) []*pulumirpc.CheckFailure {
	var fs []*pulumirpc.CheckFailure
	if str(in, "source") == "" {
		fs = append(fs, fail("source", "required"))
	}
	t := str(in, "target")
	if host, _, ok := strings.Cut(t, "/"); !ok || !strings.Contains(host, ".") || !strings.Contains(t, ":") {
		fs = append(fs, fail("target", "%q is not registry.host/path:tag", t))
	}
	return fs
}

// Credentials change every hour (an access token): only what is pushed, and
// where, makes a new image.
func (registryImage) replaceKeys() []resource.PropertyKey {
	return []resource.PropertyKey{"source", "target"}
}

func (registryImage) previewOutputs() []resource.PropertyKey {
	return []resource.PropertyKey{"repoDigest"}
}

func (registryImage) create(ctx context.Context, in resource.PropertyMap) (string, resource.PropertyMap, error) {
	src, target := str(in, "source"), str(in, "target")
	d, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return "", nil, fmt.Errorf("connect to docker: %w", err)
	}
	defer d.Close()
	if _, err := d.ImageTag(ctx, client.ImageTagOptions{Source: src, Target: target}); err != nil {
		return "", nil, fmt.Errorf("tag %s as %s: %w", src, target, err)
	}
	auth, err := json.Marshal(map[string]string{
		"username":      str(in, "username"),
		"password":      str(in, "password"),
		"serveraddress": strings.SplitN(target, "/", 2)[0],
	})
	if err != nil {
		return "", nil, err
	}
	resp, err := d.ImagePush(ctx, target, client.ImagePushOptions{RegistryAuth: base64.URLEncoding.EncodeToString(auth)})
	if err != nil {
		return "", nil, fmt.Errorf("push %s: %w", target, err)
	}
	var digest string
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return "", nil, fmt.Errorf("push %s: %w", target, err)
		}
		if msg.Error != nil {
			return "", nil, fmt.Errorf("push %s: %s", target, msg.Error.Message)
		}
		if msg.Aux != nil {
			var aux struct{ Digest string }
			if json.Unmarshal(*msg.Aux, &aux) == nil && aux.Digest != "" {
				digest = aux.Digest
			}
		}
	}
	if digest == "" {
		return "", nil, fmt.Errorf("push %s: the engine reported no digest", target)
	}
	repo := target[:strings.LastIndex(target, ":")]
	return target, resource.PropertyMap{"repoDigest": resource.NewStringProperty(repo + "@" + digest)}, nil
}

func (registryImage) read(_ context.Context, id string, _, out resource.PropertyMap) (string, resource.PropertyMap, error) {
	return id, out, nil
}

func (registryImage) update(_ context.Context, _ string, olds, _ resource.PropertyMap) (resource.PropertyMap, error) {
	// Only the credentials changed: the pushed image stands.
	return resource.PropertyMap{"repoDigest": olds["repoDigest"]}, nil
}

// delete removes the local tag; the pushed image goes with its repository.
func (registryImage) delete(ctx context.Context, id string, _, _ resource.PropertyMap) error {
	d, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("connect to docker: %w", err)
	}
	defer d.Close()
	if _, err := d.ImageRemove(ctx, id, client.ImageRemoveOptions{}); err != nil && !strings.Contains(err.Error(), "No such image") {
		return errors.Join(fmt.Errorf("untag %s: %w", id, err))
	}
	return nil
}
