package standup

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	tclog "github.com/testcontainers/testcontainers-go/log"

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

// AgentTokenPath is where the agents' bearer token is copied in containers.
const AgentTokenPath = "/etc/upc/agent.token"

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

// slogPrinter sends testcontainers' log lines to a slog logger at debug
// level, so the harness's own progress lines stay readable.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)), "from", "testcontainers")
}

// QuietTestcontainers routes testcontainers-go's process-wide log to logger
// at debug level.
func QuietTestcontainers(logger *slog.Logger) { tclog.SetDefault(slogPrinter{logger}) }
