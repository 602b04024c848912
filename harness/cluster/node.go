package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/e-mission/upc/internal/images"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

var metaGet = metav1.GetOptions{}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// PauseImage is the real node's sandbox image: our own, FROM scratch.
var PauseImage = images.Ref("pause", "v1")

func (c *run) httpClient(withTLS bool) (*http.Client, error) {
	if !withTLS {
		return &http.Client{Timeout: time.Second}, nil
	}
	ca, err := os.ReadFile(c.pki.path("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(c.pki.path("admin.crt"), c.pki.path("admin.key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}, nil
}

// routerAccess applies the router's RBAC and writes a kubeconfig with its
// ServiceAccount's token, so the router runs with only those rights.
func (c *run) routerAccess(ctx context.Context) error {
	if err := upck8s.ApplyRBAC(ctx, c.cs); err != nil {
		return err
	}
	exp := int64(7 * 24 * 3600)
	tok, err := c.cs.CoreV1().ServiceAccounts(upck8s.RouterNamespace).CreateToken(ctx, upck8s.RouterServiceAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("router token: %w", err)
	}
	ca, err := os.ReadFile(c.pki.path("ca.crt"))
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: upc-local
  cluster:
    certificate-authority-data: %s
    server: %s
users:
- name: upc-router
  user:
    token: %s
contexts:
- name: upc-local
  context: {cluster: upc-local, user: upc-router, namespace: %s}
current-context: upc-local
`, b64(ca), APIServer, tok.Status.Token, upck8s.RouterNamespace)
	return os.WriteFile(RouterKubeconfig(c.o.Dir), []byte(cfg), 0o600)
}

func createFakeNode(ctx context.Context, cs kubernetes.Interface, name string) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
		Labels:      map[string]string{LabelNode: "fake", "type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
	}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	// Room for a thousand idle instances per node; kwok keeps what is set.
	// kwok updates the new node's status at the same time: on a conflict,
	// read it again and set the capacity once more.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.Capacity = corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("1000"),
		}
		cur.Status.Allocatable = cur.Status.Capacity
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("set capacity of node %s: %w", name, err)
	}
	return nil
}

// waitNodesReady watches nodes matching selector until n are Ready.
func waitNodesReady(ctx context.Context, cs kubernetes.Interface, selector string, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ready := map[string]bool{}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err
	}
	for _, nd := range list.Items {
		ready[nd.Name] = nodeReady(&nd)
	}
	count := func() int {
		k := 0
		for _, r := range ready {
			if r {
				k++
			}
		}
		return k
	}
	if count() >= n {
		return nil
	}
	w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d Ready nodes (%s): %d within %s", n, selector, count(), timeout)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("node watch closed with %d of %d Ready", count(), n)
			}
			if nd, isNode := ev.Object.(*corev1.Node); isNode {
				ready[nd.Name] = ev.Type != watch.Deleted && nodeReady(nd)
			}
			if count() >= n {
				return nil
			}
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// realNode starts containerd, the kubelet and kube-proxy for node RealNode
// at NodeIP, and loads the pause image and o.Images into its containerd.
func (c *run) realNode(ctx context.Context) error {
	if err := c.cni(); err != nil {
		return err
	}
	if err := c.containerd(ctx); err != nil {
		return err
	}
	if err := c.pauseImage(ctx); err != nil {
		return err
	}
	if err := LoadImages(ctx, c.log, c.o.Dir, append([]string{PauseImage}, c.o.Images...)...); err != nil {
		return err
	}
	if err := c.kubelet(); err != nil {
		return err
	}
	if err := c.kubeProxy(); err != nil {
		return err
	}
	return waitNodesReady(ctx, c.cs, LabelNode+"=real", 1, 90*time.Second)
}

// cni writes the bridge + host-local + portmap chain on the cluster's Docker
// bridge; IPAM state stays in the cluster's folder.
func (c *run) cni() error {
	start, end, _ := strings.Cut(PodRange, "-")
	conf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q, "gateway": %q}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, NetworkName, BridgeName, c.path("cni", "ipam"), Subnet, start, end, NodeIP)
	return writeFile(c.path("cni", "net.d", "10-upc.conflist"), conf)
}

// ContainerdSocket is the real node's containerd socket in the cluster dir.
func ContainerdSocket(dir string) string { return filepath.Join(dir, "containerd", "containerd.sock") }

func (c *run) containerd(ctx context.Context) error {
	d := c.path("containerd")
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), ContainerdSocket(c.o.Dir), filepath.Join(d, "containerd.ttrpc.sock"),
		filepath.Join(d, "opt"), "docker.io/"+PauseImage, filepath.Join(d, "runc"), c.path("cni", "net.d"))
	if err := writeFile(filepath.Join(d, "config.toml"), conf); err != nil {
		return err
	}
	if err := c.start("containerd", "/usr/bin/containerd", "--config", filepath.Join(d, "config.toml")); err != nil {
		return err
	}
	return poll(ctx, "containerd", 30*time.Second, func() error {
		if !c.alive("containerd") {
			return stopPolling(fmt.Errorf("containerd exited: see %s", c.path("logs", "containerd.log")))
		}
		out, err := exec.CommandContext(ctx, "ctr", "-a", ContainerdSocket(c.o.Dir), "version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, firstLine(out))
		}
		return nil
	})
}

// pauseImage builds the sandbox image FROM scratch with the Docker engine:
// a static binary that sleeps until it is signalled.
func (c *run) pauseImage(ctx context.Context) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	out := c.path("pause-build")
	bin, err := images.Compile(ctx, images.CompileOptions{ModuleDir: root, OutDir: out, Version: "v1"}, "./harness/cluster/pause", images.Binary("pause"))
	if err != nil {
		return err
	}
	d, err := images.NewDocker()
	if err != nil {
		return err
	}
	defer d.Close()
	im, err := images.Build(ctx, d, images.BuildOptions{Name: "pause", Binary: bin, Version: "v1", Labels: map[string]string{"upc.cluster": "1"}})
	if err != nil {
		return err
	}
	c.log.Info("pause image built", "ref", im.Ref, "id", im.ID)
	return os.RemoveAll(out)
}

// moduleRoot finds the UPC module (the pause image's source) from the
// working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/e-mission/upc\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find the upc module: no go.mod of github.com/e-mission/upc above the working directory")
		}
		dir = parent
	}
}

// LoadImages copies Docker images into the real node's containerd of the
// cluster in dir (docker save | ctr images import).
func LoadImages(ctx context.Context, log interface{ Info(string, ...any) }, dir string, refs ...string) error {
	if len(refs) == 0 {
		return nil
	}
	start := time.Now()
	save := exec.CommandContext(ctx, "docker", append([]string{"save"}, refs...)...)
	imp := exec.CommandContext(ctx, "ctr", "-a", ContainerdSocket(dir), "-n", "k8s.io", "images", "import", "--no-unpack=false", "-")
	pipe, err := save.StdoutPipe()
	if err != nil {
		return err
	}
	imp.Stdin = pipe
	var saveErr, impOut strings.Builder
	save.Stderr = &saveErr
	imp.Stdout, imp.Stderr = &impOut, &impOut
	if err := save.Start(); err != nil {
		return fmt.Errorf("docker save: %w", err)
	}
	if err := imp.Run(); err != nil {
		save.Process.Kill()
		save.Wait()
		return fmt.Errorf("ctr images import: %w: %s", err, strings.TrimSpace(impOut.String()))
	}
	if err := save.Wait(); err != nil {
		return fmt.Errorf("docker save %s: %w: %s", strings.Join(refs, " "), err, strings.TrimSpace(saveErr.String()))
	}
	log.Info("images loaded into the node's containerd", "images", refs, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// PodPidsLimit caps each pod's processes and threads on the real node, as
// agent.DefaultPidsLimit does each container on Docker: Kubernetes sets it
// per kubelet (podPidsLimit), not per pod.
const PodPidsLimit = 256

func (c *run) kubelet() error {
	p := c.pki.path
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://%[2]s
podLogsDir: %[3]s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[4]s}
authorization:
  mode: Webhook
serializeImagePulls: false
maxPods: 250
podPidsLimit: %[5]d
kubeAPIQPS: 100
kubeAPIBurst: 200
registerNode: true
syncFrequency: 10s
fileCheckFrequency: 10s
`, NodeIP, ContainerdSocket(c.o.Dir), c.path("pod-logs"), p("ca.crt"), PodPidsLimit)
	if err := writeFile(c.path("kubelet.yaml"), conf); err != nil {
		return err
	}
	return c.start("kubelet", c.bin+"/kubelet", "--config="+c.path("kubelet.yaml"),
		"--kubeconfig="+c.path("kubelet.kubeconfig"), "--root-dir="+c.path("kubelet"), "--cert-dir="+c.path("kubelet", "pki"),
		"--hostname-override="+RealNode, "--node-ip="+NodeIP, "--node-labels="+LabelNode+"=real")
}

func (c *run) kubeProxy() error {
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: %q, qps: 50, burst: 100}
hostnameOverride: %s
clusterCIDR: %s
nodePortAddresses: ["%s/32"]
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
iptables: {localhostNodePorts: false, syncPeriod: 30s, minSyncPeriod: 0s}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
oomScoreAdj: 0
`, c.path("kube-proxy.kubeconfig"), RealNode, Subnet, NodeIP)
	if err := writeFile(c.path("kube-proxy.yaml"), conf); err != nil {
		return err
	}
	return c.start("kube-proxy", c.bin+"/kube-proxy", "--config="+c.path("kube-proxy.yaml"))
}
