package standup

import (
	"fmt"
	"io"

	"github.com/e-mission/upc/harness/scenario"
)

// RouterCommand is the router container's command line.
func RouterCommand(d *Deployment) []string {
	return []string{"--config", ConfigPath}
}

// AgentCommand is an agent container's command line.
func AgentCommand(d *Deployment, a scenario.Agent) []string {
	return []string{"--config", ConfigPath, "--advertise", d.Gateway}
}

// ConfigPath is where the deployment's configuration is copied in containers.
const ConfigPath = "/etc/upc/upc.yaml"

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
