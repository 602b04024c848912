package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/e-mission/upc/conf"
	"github.com/e-mission/upc/harness/cluster"
	"github.com/e-mission/upc/harness/flow"
	"github.com/e-mission/upc/harness/report"
	"github.com/e-mission/upc/harness/runner"
	"github.com/e-mission/upc/harness/scenario"
	"github.com/e-mission/upc/harness/standup"
	"github.com/e-mission/upc/internal/images"
	upck8s "github.com/e-mission/upc/router/kubernetes"
	"github.com/e-mission/upc/router/routerclient"
)

// kubeDeployment is the router of a kubernetes-mode run: the router image
// on the host network (it reaches the API server on loopback and instances
// at the node address), driving the local cluster's real node with its
// ServiceAccount's rights. Instances are pods in namespace upc.
type kubeDeployment struct {
	RouterURL string
	cli       *client.Client
	id        string
	dir       string
	cs        kubernetes.Interface
	health    *http.Client
	logger    *slog.Logger
	// pvDir is the local cluster's folder of hostPath volumes.
	pvDir string
}

// standUpKubernetes starts the router for a kubernetes-mode run on the
// local cluster (make cluster-up). files are copied into /etc/upc.
func standUpKubernetes(ctx context.Context, cli *client.Client, scope standup.Scope, routerImage, nodes string, files map[string][]byte, pki *runPKI, timeout time.Duration, logger *slog.Logger) (*kubeDeployment, error) {
	state, err := cluster.StateDir()
	if err != nil {
		return nil, err
	}
	kc, err := os.ReadFile(cluster.RouterKubeconfig(state))
	if err != nil {
		return nil, fmt.Errorf("kubernetes mode needs the local cluster (make cluster-up): %w", err)
	}
	admin, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig(state))
	if err != nil {
		return nil, fmt.Errorf("kubernetes mode: %w", err)
	}
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := conf.Default()
	c.UPCMode = conf.ModeKubernetes
	c.ServiceRouterPort = port
	c.Images = standup.ImagesPath
	c.Router.Listen = "127.0.0.1:" + strconv.Itoa(port)
	c.Router.AdminTokenFile = standup.TokenPath
	// Users kept in a writable folder of the run's, so a restarted router
	// (a fault step) still knows them.
	c.Router.UsersFile = "/data/users.json"
	c.Kubernetes = kubeSettings(state, nodes)
	pki.configure(c, false)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("kubernetes deployment config: %w", err)
	}
	cfg, _ := json.MarshalIndent(c, "", "  ")
	dir, err := os.MkdirTemp("", "upc-e2e-k8s-")
	if err != nil {
		return nil, err
	}
	d := &kubeDeployment{RouterURL: fmt.Sprintf("https://127.0.0.1:%d", port), cli: cli, dir: dir, cs: cs, pvDir: c.Kubernetes.HostPathDir,
		health: pki.routerHTTP(time.Second), logger: logger}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		d.Down(context.WithoutCancel(ctx))
		return nil, err
	}
	all := map[string][]byte{standup.ConfigPath: cfg, "/etc/upc/router.kubeconfig": kc}
	maps.Copy(all, pki.files)
	for p, b := range files {
		all[p] = b
	}
	etc := filepath.Join(dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		d.Down(context.WithoutCancel(ctx))
		return nil, err
	}
	for p, b := range all {
		if err := os.WriteFile(filepath.Join(etc, filepath.Base(p)), b, 0o644); err != nil {
			d.Down(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "upc-" + scope.Run + "-router",
		Config: &container.Config{
			Image: routerImage, Cmd: []string{"--config", standup.ConfigPath},
			Labels: map[string]string{standup.LabelRun: scope.Run, standup.LabelDeployment: scope.Deployment, standup.LabelRole: "router"},
		},
		HostConfig: &container.HostConfig{
			NetworkMode: "host",
			Mounts: []mount.Mount{{Type: mount.TypeBind, Source: etc, Target: "/etc/upc", ReadOnly: true},
				{Type: mount.TypeBind, Source: data, Target: "/data"}},
		},
	})
	if err != nil {
		d.Down(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("create router: %w", err)
	}
	d.id = created.ID
	if _, err := cli.ContainerStart(ctx, d.id, client.ContainerStartOptions{}); err != nil {
		d.Down(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("start router: %w", err)
	}
	if err := d.untilAnswers(ctx, "/healthz", timeout); err != nil {
		logs := d.Logs(context.WithoutCancel(ctx))
		d.Down(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("%w; its log:\n%s", err, tail(logs, 2000))
	}
	logger.Info("router up (kubernetes mode)", "url", d.RouterURL)
	return d, nil
}

// kubeSettings is the router's kubernetes section for a run on the local
// cluster (state dir state) placing pods on the nodes tier.
func kubeSettings(state, nodes string) conf.Kubernetes {
	return conf.Kubernetes{
		Kubeconfig: "/etc/upc/router.kubeconfig", Namespace: upck8s.RouterNamespace,
		NodeSelector: map[string]string{cluster.LabelNode: cmpOr(nodes, scenario.NodesReal)}, ImageByID: true,
		HostPathDir: filepath.Join(state, "pv"), GracePeriod: conf.Duration(time.Second),
		// The router and the run's users call PMs from the host, whose
		// address on the node's bridge this is.
		PMClients: []string{cluster.NodeIP + "/32"},
		// kwok's nodes run nothing to answer a health probe: only a
		// scenario on them has the router take a pod's Ready status.
		SimulatedNodes: nodes == scenario.NodesFake,
	}
}

// untilAnswers polls the router's path (the process starting, not a pod)
// until it answers 200 or timeout passes.
func (d *kubeDeployment) untilAnswers(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := d.health.Get(d.RouterURL + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("router did not answer %s%s within %s: %v", d.RouterURL, path, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restartRouter SIGKILLs the router's container and starts it again: a new
// process on the same host port, which must rebuild its view from the
// Services' labels (ready) and know the run's users again (its users
// file).
func (d *kubeDeployment) restartRouter(ctx context.Context) (flow.DeploymentFault, error) {
	if _, err := d.cli.ContainerKill(ctx, d.id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("kill the router: %w", err)
	}
	t0 := time.Now()
	if _, err := d.cli.ContainerStart(ctx, d.id, client.ContainerStartOptions{}); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("start the router again: %w", err)
	}
	if err := d.untilAnswers(ctx, "/readyz", 2*time.Minute); err != nil {
		return flow.DeploymentFault{}, fmt.Errorf("after the restart: %w", err)
	}
	return flow.DeploymentFault{Did: fmt.Sprintf("SIGKILLed the router's container and started it again: ready %.1f s later at %s",
		time.Since(t0).Seconds(), d.RouterURL)}, nil
}

// healthProbe asks an instance's /healthz at its address (https://node:port)
// with hc, the run's instance client (its CA, its TLS).
func healthProbe(hc *http.Client) func(ctx context.Context, address string) error {
	return func(ctx context.Context, address string) error {
		if address == "" {
			return errors.New("its Service has no address")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, address+"/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", resp.Status)
		}
		return nil
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Logs is the router container's log.
func (d *kubeDeployment) Logs(ctx context.Context) []byte {
	if d.id == "" {
		return nil
	}
	rc, err := d.cli.ContainerLogs(ctx, d.id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return nil
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc, 4<<20))
	return b
}

// Down removes the router container and its files; instances left in the
// namespace are reported by leftovers.
func (d *kubeDeployment) Down(ctx context.Context) error {
	var err error
	if d.id != "" {
		_, err = d.cli.ContainerRemove(ctx, d.id, client.ContainerRemoveOptions{Force: true})
	}
	os.RemoveAll(d.dir)
	return err
}

// leftovers lists, then removes, the UPC pods and Services still in the
// router's namespace after the run (the flow deletes what it launches),
// then removes the run's users' claims and volumes: test users' data, which
// Docker mode's clean-up removes with the run's volumes.
func (d *kubeDeployment) leftovers(ctx context.Context, users []scenario.User) (report.Leftovers, error) {
	ids := make([]string, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	defer d.removeClaims(ctx, ids)
	l := report.Leftovers{Checked: true}
	sel := metav1.ListOptions{LabelSelector: upck8s.LabelManaged + "=true," + upck8s.LabelInstance}
	pods, err := d.cs.CoreV1().Pods(upck8s.RouterNamespace).List(ctx, sel)
	if err != nil {
		return l, err
	}
	for _, p := range pods.Items {
		l.Containers = append(l.Containers, "pod/"+p.Name)
	}
	svcs, err := d.cs.CoreV1().Services(upck8s.RouterNamespace).List(ctx, sel)
	if err != nil {
		return l, err
	}
	for _, s := range svcs.Items {
		l.Containers = append(l.Containers, "service/"+s.Name)
		d.cs.CoreV1().Services(upck8s.RouterNamespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
	}
	if len(pods.Items) > 0 {
		d.cs.CoreV1().Pods(upck8s.RouterNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
	}
	return l, nil
}

// kubeRun is what Run has prepared for a kubernetes-mode run.
type kubeRun struct {
	o          Options
	sc         *scenario.Scenario
	cli        *client.Client
	scope      standup.Scope
	manifest   *images.Manifest
	imagesJSON []byte
	token      string
	users      []scenario.User
	rep        *report.Report
	dir        string
	started    time.Time
	progress   io.Writer
	logger     *slog.Logger
}

// runKubernetes is Run's kubernetes mode: the same users, steps, client
// flow and report as docker mode, with the router driving the local
// cluster's real node.
func runKubernetes(ctx context.Context, k kubeRun) (*Result, error) {
	rep, sc := k.rep, k.sc
	fmt.Fprintf(k.progress, "run %s: %d users, parallel %d; starting the router in kubernetes mode on the local cluster\n", rep.Run, len(k.users), sc.Parallel)
	var faults *kubeFaults
	t0 := time.Now()
	upCtx, cancelUp := context.WithTimeout(ctx, time.Duration(sc.Timeouts.Standup))
	// TLS on every hop, with a CA of the run's own.
	pki, err := newRunPKI([]string{"router", "127.0.0.1", "localhost"}, nil)
	if err != nil {
		cancelUp()
		return nil, fmt.Errorf("run CA: %w", err)
	}
	dep, upErr := standUpKubernetes(upCtx, k.cli, k.scope, k.manifest.Images["router"].ID, sc.Deployment.Nodes,
		map[string][]byte{standup.ImagesPath: k.imagesJSON, standup.TokenPath: []byte(k.token + "\n")},
		pki, time.Duration(sc.Timeouts.Standup), k.logger)
	cancelUp()
	rep.StandupMS = ms(time.Since(t0))
	if upErr != nil {
		rep.Error = "stand-up: " + upErr.Error()
		fmt.Fprintf(k.progress, "stand-up failed: %v\n", upErr)
	} else {
		fmt.Fprintf(k.progress, "[%6.1fs] stood up: router %s, kubernetes namespace %s, %s nodes\n", time.Since(k.started).Seconds(), dep.RouterURL, upck8s.RouterNamespace,
			cmpOr(sc.Deployment.Nodes, scenario.NodesReal))
		rep.Deployment.Router = dep.RouterURL
		rep.Deployment.Network = cluster.NetworkName
		rep.Deployment.Gateway = cluster.NodeIP
		rc, err := routerclient.New(dep.RouterURL, routerclient.WithToken(k.token),
			routerclient.WithHTTPClient(pki.routerHTTP(time.Duration(sc.Timeouts.Step))))
		if err != nil {
			rep.Error = "router client: " + err.Error()
		} else {
			// Each simulated user signs in as a router identity of their
			// own, made by the admin: the run exercises access control as
			// a city's users would meet it.
			f := &flow.Flow{SignIn: signIn(rc, dep.RouterURL, pki.routerHTTP(time.Duration(sc.Timeouts.Step)), k.manifest.Digests()),
				HTTP: pki.instanceHTTP(time.Duration(sc.Timeouts.Step))}
			if sc.Has(scenario.Fault) {
				state, _ := cluster.StateDir()
				faults = &kubeFaults{cs: dep.cs, ns: upck8s.RouterNamespace, ctr: nodeCtr(cluster.ContainerdSocket(state)),
					restartRouter: dep.restartRouter,
					kubelet: func(ctx context.Context) (int, func(context.Context) (int, error), error) {
						return cluster.KillKubelet(ctx, state)
					},
					probe: healthProbe(pki.instanceHTTP(time.Duration(sc.Timeouts.Step)))}
				f.Faults = faults
			}
			rep.Deployment.Access = accessOn
			rep.Deployment.TLS = tlsOn
			if steps := sc.UserSteps(); len(steps) > 0 {
				rep.Users = runner.Run(ctx, k.users, steps, f.New, runner.Options{
					Parallel: sc.Parallel, StepTimeout: time.Duration(sc.Timeouts.Step), Progress: k.progress, Start: k.started,
				})
			}
			if len(sc.AggregateSteps()) > 0 {
				rep.Aggregates = k.aggregateRun(dep, pki).runAggregates(ctx)
			}
		}
	}
	t1 := time.Now()
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if dep != nil {
		if err := os.MkdirAll(filepath.Join(k.dir, "logs"), 0o755); err == nil {
			os.WriteFile(filepath.Join(k.dir, "logs", "router.log"), dep.Logs(tctx), 0o644)
		}
		left, err := dep.leftovers(tctx, k.users)
		if err != nil {
			k.logger.Warn("list leftovers", "err", err)
		}
		if err := dep.Down(tctx); err != nil {
			k.logger.Warn("tear-down", "err", err)
		}
		rep.Leftovers = left
	}
	if err := standup.Cleanup(tctx, k.cli, k.scope); err != nil {
		k.logger.Warn("clean-up", "err", err)
	}
	rep.TeardownMS = ms(time.Since(t1))
	if ctx.Err() != nil && rep.Error == "" {
		rep.Error = "interrupted: " + context.Cause(ctx).Error()
	}
	var did map[int]string
	if faults != nil {
		did = faults.Did()
	}
	rep.Faults = EvaluateFaults(sc.Steps, rep.Users, rep.Leftovers, did)
	return conclude(sc, rep, k.started, k.o.ResultsDir, k.dir, nil)
}

// aggregateRun is how a kubernetes-mode run's aggregate steps run: the
// aggregator's container on the host's network, as the router is, calling
// the router on loopback and the instances at the node's address; each
// step's users' claims are removed before and after it (a claim outlives
// the run, and a seeded rerun must find none).
func (k kubeRun) aggregateRun(dep *kubeDeployment, pki *runPKI) *aggregateRun {
	return &aggregateRun{sc: k.sc, scenarioDir: filepath.Dir(k.o.ScenarioPath), users: k.users, scope: k.scope,
		hostNetwork: true, routerURL: dep.RouterURL, image: k.manifest.Images["aggregator"].ID,
		ca: pki.files[caCertPath], token: []byte(k.token + "\n"), imagesJSON: k.imagesJSON,
		progress: k.progress, start: k.started, forget: dep.removeClaims,
		logs: func(name string, b []byte) {
			if os.MkdirAll(filepath.Join(k.dir, "logs"), 0o755) == nil {
				os.WriteFile(filepath.Join(k.dir, "logs", name+".log"), b, 0o644)
			}
		}}
}

// removeClaims deletes the claims (and their volumes) of the users ids,
// found by their user-key label: one listing of the run's namespace, then
// claimRemovers at a time (a thousand users' claims one by one took the
// whole tear-down bound).
func (d *kubeDeployment) removeClaims(ctx context.Context, ids []string) {
	keys := make(map[string]bool, len(ids))
	for _, id := range ids {
		keys[upck8s.UserKey(id)] = true
	}
	claims, err := d.cs.CoreV1().PersistentVolumeClaims(upck8s.RouterNamespace).List(ctx,
		metav1.ListOptions{LabelSelector: upck8s.LabelClaim + "=true"})
	if err != nil {
		return
	}
	sem := make(chan struct{}, claimRemovers)
	var wg sync.WaitGroup
	for _, c := range claims.Items {
		if !keys[c.Labels[upck8s.LabelUserKey]] {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d.removeClaim(ctx, c)
		})
	}
	wg.Wait()
}

// claimRemovers is how many claims removeClaims removes at once.
const claimRemovers = 16

// removeClaim deletes claim c, its volume and the volume's folder.
func (d *kubeDeployment) removeClaim(ctx context.Context, c corev1.PersistentVolumeClaim) {
	d.cs.CoreV1().PersistentVolumeClaims(upck8s.RouterNamespace).Delete(ctx, c.Name, metav1.DeleteOptions{})
	if c.Spec.VolumeName == "" {
		return
	}
	if pv, err := d.cs.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{}); err == nil {
		if dir, ok := hostPathUnder(pv, d.pvDir); ok {
			// The volume's folder too: a test user's next run (the same
			// seed, the same user) must find no data, and the folder
			// outlives its object.
			os.RemoveAll(dir)
		}
	}
	d.cs.CoreV1().PersistentVolumes().Delete(ctx, c.Spec.VolumeName, metav1.DeleteOptions{})
}

// hostPathUnder is pv's hostPath folder when it lies strictly inside root
// (the local cluster's volume folder, on this machine): nothing else is
// ever removed.
func hostPathUnder(pv *corev1.PersistentVolume, root string) (string, bool) {
	if root == "" || pv.Spec.HostPath == nil {
		return "", false
	}
	p := filepath.Clean(pv.Spec.HostPath.Path)
	rel, err := filepath.Rel(filepath.Clean(root), p)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || !filepath.IsAbs(p) {
		return "", false
	}
	return p, true
}
