package standup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/e-mission/upc/harness/report"
)

// Labels the harness puts on what it creates itself; the agents put
// LabelDeployment on the instances and volumes they create for the run.
const (
	// LabelRun carries the run id on the harness's network, router and agents.
	LabelRun = "upc.e2e"
	// LabelRole says what a harness container is: router or agent.
	LabelRole = "upc.role"
	// LabelDeployment is the agents' label naming the deployment an instance
	// or volume belongs to; the harness names its deployment after the run.
	LabelDeployment = "upc.deployment"
)

// Scope names what one run owns: everything labelled with its run id or its
// deployment. Cleaning by label (testcontainers' reaper cannot be pulled
// here) removes exactly that, never another run's or another test's.
type Scope struct {
	Run        string
	Deployment string
}

func (s Scope) selectors() []client.Filters {
	return []client.Filters{
		make(client.Filters).Add("label", LabelRun+"="+s.Run),
		make(client.Filters).Add("label", LabelDeployment+"="+s.Deployment),
	}
}

// Leftovers lists the containers (in any state), networks and volumes that
// still carry the run's labels.
func Leftovers(ctx context.Context, cli *client.Client, s Scope) (report.Leftovers, error) {
	l := report.Leftovers{Checked: true, Containers: []string{}, Networks: []string{}, Volumes: []string{}}
	var errs []error
	for _, f := range s.selectors() {
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("list containers: %w", err))
		}
		for _, c := range cs.Items {
			name := c.ID[:12]
			if len(c.Names) > 0 {
				name = strings.TrimPrefix(c.Names[0], "/")
			}
			l.Containers = appendNew(l.Containers, name+" ("+string(c.State)+")")
		}
		ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("list networks: %w", err))
		}
		for _, n := range ns.Items {
			l.Networks = appendNew(l.Networks, n.Name)
		}
		vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("list volumes: %w", err))
		}
		for _, v := range vs.Items {
			l.Volumes = appendNew(l.Volumes, v.Name)
		}
	}
	if err := errors.Join(errs...); err != nil {
		l.Checked = false
		return l, err
	}
	return l, nil
}

// Cleanup force-removes every container, then network, then volume carrying
// the run's labels, and reports every removal that failed.
func Cleanup(ctx context.Context, cli *client.Client, s Scope) error {
	var errs []error
	for _, f := range s.selectors() {
		cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("list containers: %w", err))
		}
		for _, c := range cs.Items {
			if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID[:12], err))
			}
		}
	}
	for _, f := range s.selectors() {
		ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("list networks: %w", err))
		}
		for _, n := range ns.Items {
			if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove network %s: %w", n.Name, err))
			}
		}
		vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
		if err != nil {
			errs = append(errs, fmt.Errorf("list volumes: %w", err))
		}
		for _, v := range vs.Items {
			if _, err := cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove volume %s: %w", v.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}
