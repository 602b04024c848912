// Command infra is UPC's Pulumi program for `pulumi up` (Pulumi.yaml at the
// repository's root names this folder, the root of the infra module). The
// same program runs inline, with no language host, through `upc infra
// up|preview|destroy --stack NAME` (cmd/upc-infra).
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/e-mission/upc/infra/stack"
)

func main() { pulumi.Run(stack.Run) }
