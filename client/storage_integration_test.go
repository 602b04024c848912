package client_test

import (
	"path/filepath"
	"testing"

	"github.com/e-mission/upc/client"
	"github.com/e-mission/upc/client/clienttest"
	"github.com/e-mission/upc/internal/realdata"
)

// TestIntegrationStorageFlowDocker needs the Docker engine: a user's volume
// outlives their PM, is found again and unsealed by the same key (a wrong
// one refused), exported whole, and erased (refused while the PM runs;
// then the engine holds no volume of the user's and no file of it), through
// the real router driving the local engine and the real PM image.
func TestIntegrationStorageFlowDocker(t *testing.T) {
	tr := clienttest.StartRouter(t, "pm")
	day, err := client.LoadDay(filepath.Join(realdata.DirT(t), "shankari_2015-08-23"))
	if err != nil {
		t.Fatal(err)
	}
	clienttest.StorageFlow(t, tr, day, clienttest.DockerLeftovers(t))
}
