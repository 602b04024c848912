// Command pulumi-resource-upc is UPC's own Pulumi provider plugin. It serves
// the resources no served provider covers here:
//
//   - upc:index:KindCluster: a kind cluster, made and deleted with
//     sigs.k8s.io/kind as a library (its Docker node provider);
//   - upc:index:KindImages: images of the local Docker engine loaded into
//     every node of a kind cluster (kind's `load docker-image`);
//   - upc:index:RegistryImage: an image of the local engine tagged and pushed
//     to a registry (Artifact Registry on GKE).
//
// The engine finds it on PATH or installed with `pulumi plugin install
// resource upc VERSION --file pulumi-resource-upc` (make tools does that).
package main

import (
	"fmt"
	"os"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

func main() {
	err := provider.Main("upc", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return newServer(host, Version), nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pulumi-resource-upc:", err)
		os.Exit(1)
	}
}

// Version is the plugin's version, as `make tools` installs it and as the
// program asks for it (stack.ProviderVersion).
const Version = "0.1.0"
