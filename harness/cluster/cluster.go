package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Node tiers: simulated (kwok), real (kubelet + containerd + kube-proxy) or both.
const (
	NodesFake = "fake"
	NodesReal = "real"
	NodesBoth = "both"
)

// Fixed addresses of the local cluster. The node network is a Docker
// network the cluster makes (so all pod traffic stays on a Docker bridge).
const (
	APIServer   = "https://127.0.0.1:6443"
	NetworkName = "upc-k8s"
	BridgeName  = "upc-k8s0"
	Subnet      = "172.30.0.0/16"
	NodeIP      = "172.30.0.1" // the bridge's address on the host: the node address
	PodRange    = "172.30.128.1-172.30.255.254"
	ServiceCIDR = "10.96.0.0/16"
	RealNode    = "upc-node"
	// LabelNode is on every node the cluster makes: "real" or "fake".
	LabelNode = "upc.node"
)

// Options say what Up starts.
type Options struct {
	// Cache holds the built binaries (see CacheDir).
	Cache string
	// Dir holds the running cluster's state: certificates, kubeconfigs,
	// data, logs, pid files (see StateDir).
	Dir string
	// Nodes is fake, real or both.
	Nodes string
	// FakeNodes is how many kwok nodes to make; default 4.
	FakeNodes int
	// Images are Docker image references loaded into the real node's
	// containerd (our service images; the pause image is always loaded).
	Images []string
}

// StateDir is $UPC_CLUSTER_DIR when set, else ~/.cache/upc/cluster.
func StateDir() (string, error) {
	if d := os.Getenv("UPC_CLUSTER_DIR"); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find cache dir: %w", err)
	}
	return filepath.Join(home, "upc", "cluster"), nil
}

// Kubeconfig is the admin kubeconfig of the cluster in dir.
func Kubeconfig(dir string) string { return filepath.Join(dir, "kubeconfig") }

// RouterKubeconfig is the kubeconfig of the router's ServiceAccount (RBAC
// limited to what the backend needs) in namespace "upc".
func RouterKubeconfig(dir string) string { return filepath.Join(dir, "router.kubeconfig") }

// Up builds (or reuses) the binaries and starts the cluster. It fails if a
// cluster is already up in o.Dir; on failure it tears down what it started.
func Up(ctx context.Context, log *slog.Logger, o Options) (err error) {
	switch o.Nodes {
	case NodesFake, NodesReal, NodesBoth:
	default:
		return fmt.Errorf("cluster up: --nodes %q is not one of fake, real, both", o.Nodes)
	}
	if o.FakeNodes <= 0 {
		o.FakeNodes = 4
	}
	if os.Geteuid() != 0 {
		return errors.New("cluster up: the local cluster runs etcd, a kubelet, containerd and iptables rules: run it as root")
	}
	if running(o.Dir) {
		return fmt.Errorf("cluster up: a cluster is already up in %s (upc cluster down first)", o.Dir)
	}
	start := time.Now()
	need := Binaries
	if o.Nodes == NodesFake {
		need = ControlPlane
	}
	if err := BuildFor(ctx, log, o.Cache, need); err != nil {
		return err
	}
	// A leftover of a run that crashed would make every step below fail.
	if _, statErr := os.Stat(o.Dir); statErr == nil {
		log.Info("removing the leftovers of an earlier cluster", "dir", o.Dir)
		if err := Down(ctx, log, o.Dir); err != nil {
			return err
		}
	}
	c := &run{o: o, log: log, bin: BinDir(o.Cache)}
	defer func() {
		if err != nil {
			log.Error("cluster up failed; tearing down", "err", err, "logs", filepath.Join(o.Dir, "logs"))
			if derr := Down(context.WithoutCancel(ctx), log, o.Dir); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	for _, step := range []struct {
		name string
		f    func(context.Context) error
	}{
		{"certificates", c.certificates},
		{"network", c.network},
		{"etcd", c.etcd},
		{"kube-apiserver", c.apiserver},
		{"controllers", c.controllers},
		{"router access", c.routerAccess},
	} {
		if err := step.f(ctx); err != nil {
			return fmt.Errorf("cluster up: %s: %w", step.name, err)
		}
	}
	if o.Nodes != NodesReal {
		if err := c.kwok(ctx); err != nil {
			return fmt.Errorf("cluster up: kwok nodes: %w", err)
		}
	}
	if o.Nodes != NodesFake {
		if err := c.realNode(ctx); err != nil {
			return fmt.Errorf("cluster up: real node: %w", err)
		}
	}
	log.Info("cluster up", "nodes", o.Nodes, "took", time.Since(start).Round(100*time.Millisecond),
		"kubeconfig", Kubeconfig(o.Dir), "router kubeconfig", RouterKubeconfig(o.Dir))
	return nil
}

// run is one Up in progress.
type run struct {
	o   Options
	log *slog.Logger
	bin string
	pki *pki
	cs  *kubernetes.Clientset
}

func (c *run) path(elem ...string) string {
	return filepath.Join(append([]string{c.o.Dir}, elem...)...)
}

func (c *run) certificates(context.Context) error {
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := writeFile(c.path("bin-dir"), c.bin); err != nil {
		return err
	}
	p, err := newPKI(c.path("pki"))
	if err != nil {
		return err
	}
	c.pki = p
	ids := []identity{
		{file: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP("10.96.0.1")}},
		{file: "admin", cn: "upc-admin", groups: []string{"system:masters"}},
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", groups: []string{"system:masters"}},
		{file: "controller-manager", cn: "system:kube-controller-manager"},
		{file: "scheduler", cn: "system:kube-scheduler"},
		{file: "kwok", cn: "upc-kwok", groups: []string{"system:masters"}},
		{file: "kubelet", cn: "system:node:" + RealNode, groups: []string{"system:nodes"}},
		{file: "kube-proxy", cn: "system:kube-proxy"},
	}
	for _, id := range ids {
		if err := p.issue(id); err != nil {
			return err
		}
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	for _, k := range []struct{ file, id string }{
		{Kubeconfig(c.o.Dir), "admin"}, {c.path("controller-manager.kubeconfig"), "controller-manager"},
		{c.path("scheduler.kubeconfig"), "scheduler"}, {c.path("kwok.kubeconfig"), "kwok"},
		{c.path("kubelet.kubeconfig"), "kubelet"}, {c.path("kube-proxy.kubeconfig"), "kube-proxy"},
	} {
		if err := p.kubeconfig(k.file, APIServer, k.id); err != nil {
			return err
		}
	}
	return nil
}

// network makes the Docker network whose bridge the real node's pods join;
// its gateway (NodeIP) is the node address and the API server's advertised one.
func (c *run) network(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "docker", "network", "inspect", NetworkName).CombinedOutput(); err == nil {
		return fmt.Errorf("docker network %s exists already (another cluster, or a leftover: upc cluster down): %s", NetworkName, firstLine(out))
	}
	out, err := exec.CommandContext(ctx, "docker", "network", "create", "--driver", "bridge",
		"--subnet", Subnet, "--gateway", NodeIP, "--ip-range", "172.30.0.0/17",
		"-o", "com.docker.network.bridge.name="+BridgeName, "--label", "upc.cluster=1", NetworkName).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker network create %s: %w: %s", NetworkName, err, bytes.TrimSpace(out))
	}
	return writeFile(c.path("network"), NetworkName)
}

func (c *run) etcd(ctx context.Context) error {
	if err := c.start("etcd", c.bin+"/etcd", "--name=upc", "--data-dir="+c.path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=upc=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return err
	}
	return c.waitHTTP(ctx, "etcd", "http://127.0.0.1:2379/health", false, 30*time.Second)
}

func (c *run) apiserver(ctx context.Context) error {
	p := c.pki.path
	if err := c.start("kube-apiserver", c.bin+"/kube-apiserver",
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=127.0.0.1", "--secure-port=6443", "--advertise-address="+NodeIP,
		"--client-ca-file="+p("ca.crt"), "--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"), "--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range="+ServiceCIDR, "--allow-privileged=true", "--profiling=false",
		"--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
	); err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "kube-apiserver", APIServer+"/readyz", true, 90*time.Second); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", Kubeconfig(c.o.Dir))
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	c.cs, err = kubernetes.NewForConfig(cfg)
	return err
}

func (c *run) controllers(ctx context.Context) error {
	p := c.pki.path
	if err := c.start("kube-controller-manager", c.bin+"/kube-controller-manager",
		"--kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--leader-elect=false", "--bind-address=127.0.0.1",
		"--service-account-private-key-file="+p("sa.key"), "--root-ca-file="+p("ca.crt"),
		"--cluster-signing-cert-file="+p("ca.crt"), "--cluster-signing-key-file="+p("ca.key"),
		"--use-service-account-credentials=true", "--kube-api-qps=300", "--kube-api-burst=600",
		"--concurrent-endpoint-syncs=10", "--concurrent-service-endpoint-syncs=10",
	); err != nil {
		return err
	}
	schedCfg := `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection: {leaderElect: false}
clientConnection: {kubeconfig: "` + c.path("scheduler.kubeconfig") + `", qps: 300, burst: 600}
`
	if err := writeFile(c.path("scheduler.yaml"), schedCfg); err != nil {
		return err
	}
	if err := c.start("kube-scheduler", c.bin+"/kube-scheduler", "--config="+c.path("scheduler.yaml"), "--bind-address=127.0.0.1",
		"--authentication-kubeconfig="+c.path("scheduler.kubeconfig"), "--authorization-kubeconfig="+c.path("scheduler.kubeconfig")); err != nil {
		return err
	}
	// The cluster is usable once the controllers made the default ServiceAccount.
	return poll(ctx, "default ServiceAccount", 60*time.Second, func() error {
		_, err := c.cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metaGet)
		return err
	})
}

func (c *run) kwok(ctx context.Context) error {
	if err := c.start("kwok", c.bin+"/kwok", "--kubeconfig="+c.path("kwok.kubeconfig"),
		"--config="+filepath.Join(c.o.Cache, "kwok-stages.yaml"),
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.0/16", "--node-ip=10.243.0.1", "--node-lease-duration-seconds=40",
		"--server-address=127.0.0.1:10247",
	); err != nil {
		return err
	}
	for i := range c.o.FakeNodes {
		if err := createFakeNode(ctx, c.cs, fmt.Sprintf("upc-kwok-%d", i)); err != nil {
			return err
		}
	}
	return waitNodesReady(ctx, c.cs, LabelNode+"=fake", c.o.FakeNodes, 60*time.Second)
}

// start runs a cluster process detached from the CLI (it outlives `upc
// cluster up`), logging to logs/<name>.log, its pid in pids/<name>.pid.
func (c *run) start(name, bin string, args ...string) error {
	pid, err := startDetached(c.o.Dir, name, append([]string{bin}, args...))
	if err != nil {
		return err
	}
	c.log.Info("started", "process", name, "pid", pid, "log", c.path("logs", name+".log"))
	return nil
}

// startDetached starts argv as the cluster process name of the cluster in
// dir, in a session of its own, appending to its log and writing its pid
// file. A goroutine reaps it should it die while this process runs.
func startDetached(dir, name string, argv []string) (int, error) {
	logf, err := os.OpenFile(filepath.Join(dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	if err := writeFile(filepath.Join(dir, "pids", pidOrder(name)+".pid"), strconv.Itoa(cmd.Process.Pid)); err != nil {
		return 0, err
	}
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// pidOrder prefixes pid files so Down stops processes in reverse start order.
func pidOrder(name string) string {
	order := map[string]string{"etcd": "0", "kube-apiserver": "1", "kube-controller-manager": "2", "kube-scheduler": "3",
		"kwok": "4", "containerd": "5", "kubelet": "6", "kube-proxy": "7"}
	return order[name] + "-" + name
}

// waitHTTP polls a process's health URL while it starts; it fails at once
// when the process exits (its log says why).
func (c *run) waitHTTP(ctx context.Context, name, url string, tls bool, timeout time.Duration) error {
	hc, err := c.httpClient(tls)
	if err != nil {
		return err
	}
	return poll(ctx, name+" ready", timeout, func() error {
		if !c.alive(name) {
			return stopPolling(fmt.Errorf("%s exited: see %s", name, c.path("logs", name+".log")))
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

func (c *run) alive(name string) bool {
	pid, err := readPid(c.path("pids", pidOrder(name)+".pid"))
	return err == nil && syscall.Kill(pid, 0) == nil && !zombie(pid)
}

// running reports whether any process of a cluster in dir is alive.
func running(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	for _, f := range files {
		if pid, err := readPid(f); err == nil && ours(pid, dir) {
			return true
		}
	}
	return false
}

func readPid(f string) (int, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

// ours reports whether pid is alive and one of this cluster's processes
// (its command line names the state or cache folder), so a recycled pid is
// never signalled.
func ours(pid int, dir string) bool {
	if syscall.Kill(pid, 0) != nil || zombie(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(dir))
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

type stopErr struct{ error }

func stopPolling(err error) error { return stopErr{err} }

// poll retries f every 100 ms until it succeeds, returns stopPolling, or
// timeout passes. Used only while processes start, never for pods (those
// are watched).
func poll(ctx context.Context, what string, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		last = f()
		if last == nil {
			return nil
		}
		if se, ok := last.(stopErr); ok {
			return fmt.Errorf("wait for %s: %w", what, se.error)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: not within %s: %w", what, timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Running reports whether a cluster is up in dir.
func Running(dir string) bool { return running(dir) }

// HasRealNode reports whether the cluster in dir runs a real node.
func HasRealNode(dir string) bool {
	pid, err := readPid(filepath.Join(dir, "pids", pidOrder("kubelet")+".pid"))
	return err == nil && ours(pid, dir)
}
