package standup

import (
	"fmt"
	"io"
	"strings"

	"github.com/e-mission/upc/harness/scenario"
)

// RouterCommand is the router container's command line.
func RouterCommand(d *Deployment) []string {
	return []string{"--config", ConfigPath}
}

// AgentCommand is an agent container's command line. Each agent gets a name
// of the run's own (agents sharing an engine clear only what carries their
// name) and labels everything it creates with the run's deployment, which is
// what Cleanup and Leftovers look for.
func AgentCommand(d *Deployment, a scenario.Agent) []string {
	return []string{"--config", ConfigPath, "--name", AgentName(d.Scope, a.Name),
		"--label", LabelDeployment + "=" + d.Scope.Deployment}
}

// AgentName is the agent's label name: the scenario's name made unique to the run.
func AgentName(s Scope, name string) string {
	suffix := s.Run
	if i := strings.LastIndexByte(suffix, '-'); i >= 0 {
		suffix = suffix[i+1:]
	}
	return "e2e" + strings.ToLower(suffix) + "-" + name
}

// ConfigPath is where the deployment's configuration is copied in containers.
const ConfigPath = "/etc/upc/upc.yaml"

// TokenPath is where the router's bearer token is copied in containers.
const TokenPath = "/etc/upc/router.token"

// ImagesPath is where build/images.json is copied in containers.
const ImagesPath = "/etc/upc/images.json"

func ioReadFull(r io.Reader, b []byte) (int, error) {
	n, err := io.ReadFull(r, b)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("read log: %w", err)
	}
	return n, err
}
