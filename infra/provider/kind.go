package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"sigs.k8s.io/kind/pkg/apis/config/defaults"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
)

var clusterName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?$`)

// kindCluster is upc:index:KindCluster. Inputs: name, nodeImage, workers.
// Outputs: kubeconfig (to reach the API server from this host), nodeAddress
// (the control-plane node's address on kind's Docker network, where node
// ports answer).
type kindCluster struct{}

func (kindCluster) check(in resource.PropertyMap) []*pulumirpc.CheckFailure {
	var fs []*pulumirpc.CheckFailure
	if n := str(in, "name"); !clusterName.MatchString(n) {
		fs = append(fs, fail("name", "%q is not a kind cluster name (lowercase letters, digits and '-')", n))
	}
	if num(in, "workers") < 0 {
		fs = append(fs, fail("workers", "must not be negative"))
	}
	return fs
}

func (kindCluster) replaceKeys() []resource.PropertyKey {
	return []resource.PropertyKey{"name", "nodeImage", "workers"}
}

func (kindCluster) previewOutputs() []resource.PropertyKey {
	return []resource.PropertyKey{"kubeconfig", "nodeAddress"}
}

func kindProvider() *cluster.Provider { return cluster.NewProvider(cluster.ProviderWithDocker()) }

// nodeImage is the input or kind's default for its version.
func nodeImage(in resource.PropertyMap) string {
	if im := str(in, "nodeImage"); im != "" {
		return im
	}
	return defaults.Image
}

// requireLocalImage fails unless the engine has the node image already:
// kind would otherwise pull it, and a deployment may have no registry to
// pull from (nor should an up reach one unasked).
func requireLocalImage(ctx context.Context, ref string) error {
	d, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("connect to docker: %w", err)
	}
	defer d.Close()
	local := ref
	if i := strings.Index(local, "@"); i >= 0 {
		// A digest-pinned default: the tag may be present without the repo digest.
		if _, err := d.ImageInspect(ctx, local); err == nil {
			return nil
		}
		local = local[:i]
	}
	if _, err := d.ImageInspect(ctx, local); err != nil {
		return fmt.Errorf("kind node image %s is not on the local Docker engine (docker pull it, or docker load a saved copy, then retry): %w", ref, err)
	}
	return nil
}

func (kindCluster) create(ctx context.Context, in resource.PropertyMap) (string, resource.PropertyMap, error) {
	name := str(in, "name")
	image := nodeImage(in)
	if err := requireLocalImage(ctx, image); err != nil {
		return "", nil, err
	}
	cfg := &v1alpha4.Cluster{Name: name, Nodes: []v1alpha4.Node{{Role: v1alpha4.ControlPlaneRole, Image: image}}}
	for range num(in, "workers") {
		cfg.Nodes = append(cfg.Nodes, v1alpha4.Node{Role: v1alpha4.WorkerRole, Image: image})
	}
	v1alpha4.SetDefaultsCluster(cfg)
	kc, cleanup, err := scratchKubeconfig()
	if err != nil {
		return "", nil, err
	}
	defer cleanup()
	p := kindProvider()
	// The kubeconfig goes to a scratch file, not the user's ~/.kube/config:
	// the stack's output is the one copy that matters.
	err = p.Create(name,
		cluster.CreateWithV1Alpha4Config(cfg),
		cluster.CreateWithKubeconfigPath(kc),
		cluster.CreateWithWaitForReady(3*time.Minute),
		cluster.CreateWithDisplayUsage(false),
		cluster.CreateWithDisplaySalutation(false))
	if err != nil {
		return "", nil, fmt.Errorf("create kind cluster %s: %w", name, err)
	}
	out, err := clusterOutputs(p, name)
	if err != nil {
		_ = p.Delete(name, kc) // never leave a cluster the state does not know
		return "", nil, err
	}
	return name, out, nil
}

func clusterOutputs(p *cluster.Provider, name string) (resource.PropertyMap, error) {
	kubeconfig, err := p.KubeConfig(name, false)
	if err != nil {
		return nil, fmt.Errorf("kind kubeconfig of %s: %w", name, err)
	}
	ns, err := p.ListNodes(name)
	if err != nil {
		return nil, fmt.Errorf("kind nodes of %s: %w", name, err)
	}
	cp, err := nodeutils.ControlPlaneNodes(ns)
	if err != nil || len(cp) == 0 {
		return nil, fmt.Errorf("kind control plane of %s: %v", name, err)
	}
	ip, _, err := cp[0].IP()
	if err != nil {
		return nil, fmt.Errorf("kind node address of %s: %w", name, err)
	}
	return resource.PropertyMap{
		"kubeconfig":  resource.MakeSecret(resource.NewStringProperty(kubeconfig)),
		"nodeAddress": resource.NewStringProperty(ip),
	}, nil
}

func (kindCluster) read(_ context.Context, id string, _, _ resource.PropertyMap) (string, resource.PropertyMap, error) {
	p := kindProvider()
	names, err := p.List()
	if err != nil {
		return "", nil, fmt.Errorf("list kind clusters: %w", err)
	}
	if !slices.Contains(names, id) {
		return "", nil, nil
	}
	out, err := clusterOutputs(p, id)
	return id, out, err
}

func (kindCluster) update(context.Context, string, resource.PropertyMap, resource.PropertyMap) (resource.PropertyMap, error) {
	return nil, errors.New("kind clusters are replaced, never updated") // every input is a replace key
}

func (kindCluster) delete(_ context.Context, id string, _, _ resource.PropertyMap) error {
	kc, cleanup, err := scratchKubeconfig()
	if err != nil {
		return err
	}
	defer cleanup()
	if err := kindProvider().Delete(id, kc); err != nil {
		return fmt.Errorf("delete kind cluster %s: %w", id, err)
	}
	return nil
}

func scratchKubeconfig() (string, func(), error) {
	dir, err := os.MkdirTemp("", "upc-kind-")
	if err != nil {
		return "", nil, fmt.Errorf("scratch kubeconfig: %w", err)
	}
	return filepath.Join(dir, "kubeconfig"), func() { os.RemoveAll(dir) }, nil
}

// kindImages is upc:index:KindImages. Inputs: cluster (a kind cluster's
// name), images (references on the local engine). Output: loaded.
type kindImages struct{}

func (kindImages) check(in resource.PropertyMap) []*pulumirpc.CheckFailure {
	var fs []*pulumirpc.CheckFailure
	if v := in["cluster"]; !v.IsComputed() && !v.IsOutput() && !clusterName.MatchString(str(in, "cluster")) {
		fs = append(fs, fail("cluster", "%q is not a kind cluster name", str(in, "cluster")))
	}
	if len(strList(in, "images")) == 0 {
		fs = append(fs, fail("images", "at least one image"))
	}
	return fs
}

func (kindImages) replaceKeys() []resource.PropertyKey { return []resource.PropertyKey{"cluster"} }

func (kindImages) previewOutputs() []resource.PropertyKey { return []resource.PropertyKey{"loaded"} }

func (k kindImages) create(ctx context.Context, in resource.PropertyMap) (string, resource.PropertyMap, error) {
	out, err := k.load(ctx, str(in, "cluster"), strList(in, "images"))
	return str(in, "cluster") + "-images", out, err
}

// load saves the images from the engine once and imports the archive into
// every node's containerd, as `kind load docker-image` does.
func (kindImages) load(ctx context.Context, name string, refs []string) (resource.PropertyMap, error) {
	ns, err := kindProvider().ListInternalNodes(name)
	if err != nil {
		return nil, fmt.Errorf("kind nodes of %s: %w", name, err)
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("kind cluster %s has no nodes", name)
	}
	d, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connect to docker: %w", err)
	}
	defer d.Close()
	f, err := os.CreateTemp("", "upc-images-*.tar")
	if err != nil {
		return nil, fmt.Errorf("image archive: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	rc, err := d.ImageSave(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("save images: %w", err)
	}
	_, err = f.ReadFrom(rc)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("save images: %w", err)
	}
	for _, n := range ns {
		if err := loadInto(n, f.Name()); err != nil {
			return nil, err
		}
	}
	loaded := make([]resource.PropertyValue, len(refs))
	for i, r := range refs {
		loaded[i] = resource.NewStringProperty(r)
	}
	return resource.PropertyMap{"loaded": resource.NewArrayProperty(loaded)}, nil
}

func loadInto(n nodes.Node, archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("open image archive: %w", err)
	}
	defer f.Close()
	if err := nodeutils.LoadImageArchive(n, f); err != nil {
		return fmt.Errorf("load images into node %s: %w", n, err)
	}
	return nil
}

func (kindImages) read(_ context.Context, id string, _, out resource.PropertyMap) (string, resource.PropertyMap, error) {
	return id, out, nil
}

func (k kindImages) update(ctx context.Context, _ string, _, news resource.PropertyMap) (resource.PropertyMap, error) {
	return k.load(ctx, str(news, "cluster"), strList(news, "images"))
}

// delete removes the images from the nodes of a cluster that still exists;
// when the cluster went first, they went with it.
func (kindImages) delete(_ context.Context, _ string, in, _ resource.PropertyMap) error {
	ns, err := kindProvider().ListInternalNodes(str(in, "cluster"))
	if err != nil || len(ns) == 0 {
		return nil
	}
	var errs []error
	for _, n := range ns {
		args := append([]string{"--namespace=k8s.io", "images", "rm"}, qualify(strList(in, "images"))...)
		if err := n.Command("ctr", args...).Run(); err != nil {
			errs = append(errs, fmt.Errorf("remove images from node %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// qualify is how containerd names images a Docker archive carried.
func qualify(refs []string) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		if strings.Count(strings.SplitN(r, "/", 2)[0], ".") == 0 && !strings.HasPrefix(r, "localhost") {
			r = "docker.io/" + r
		}
		out[i] = r
	}
	return out
}
