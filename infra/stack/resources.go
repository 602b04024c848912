package stack

import (
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Resource types served by our provider plugin, pulumi-resource-upc
// (infra/provider).
const (
	TypeKindCluster   = "upc:index:KindCluster"
	TypeKindImages    = "upc:index:KindImages"
	TypeRegistryImage = "upc:index:RegistryImage"
)

// KindCluster is a kind cluster: created with sigs.k8s.io/kind as a library,
// deleted by `destroy`.
type KindCluster struct {
	pulumi.CustomResourceState

	Name        pulumi.StringOutput `pulumi:"name"`
	Kubeconfig  pulumi.StringOutput `pulumi:"kubeconfig"`
	NodeAddress pulumi.StringOutput `pulumi:"nodeAddress"`
}

// KindClusterArgs are its inputs.
type KindClusterArgs struct {
	Name      string
	NodeImage string
	Workers   int
}

// NewKindCluster registers a kind cluster.
func NewKindCluster(ctx *pulumi.Context, name string, a KindClusterArgs, opts ...pulumi.ResourceOption) (*KindCluster, error) {
	var r KindCluster
	in := pulumi.Map{
		"name":    pulumi.String(a.Name),
		"workers": pulumi.Int(a.Workers),
	}
	if a.NodeImage != "" {
		in["nodeImage"] = pulumi.String(a.NodeImage)
	}
	opts = append(opts, pulumi.AdditionalSecretOutputs([]string{"kubeconfig"}))
	if err := ctx.RegisterResource(TypeKindCluster, name, in, &r, opts...); err != nil {
		return nil, fmt.Errorf("kind cluster: %w", err)
	}
	return &r, nil
}

// KindImages are images of the local Docker engine loaded into every node
// of a kind cluster (kind's `load docker-image`).
type KindImages struct {
	pulumi.CustomResourceState

	Loaded pulumi.StringArrayOutput `pulumi:"loaded"`
}

// NewKindImages loads refs into cluster's nodes.
func NewKindImages(ctx *pulumi.Context, name string, cluster pulumi.StringInput, refs []string, opts ...pulumi.ResourceOption) (*KindImages, error) {
	var r KindImages
	in := pulumi.Map{"cluster": cluster, "images": pulumi.ToStringArray(refs)}
	if err := ctx.RegisterResource(TypeKindImages, name, in, &r, opts...); err != nil {
		return nil, fmt.Errorf("kind images: %w", err)
	}
	return &r, nil
}

// RegistryImage is an image of the local Docker engine tagged and pushed to
// a registry.
type RegistryImage struct {
	pulumi.CustomResourceState

	Target     pulumi.StringOutput `pulumi:"target"`
	RepoDigest pulumi.StringOutput `pulumi:"repoDigest"`
}

// RegistryImageArgs are its inputs; Password is kept secret.
type RegistryImageArgs struct {
	Source   string
	Target   string
	Username pulumi.StringInput
	Password pulumi.StringInput
}

// NewRegistryImage pushes a.Source to a.Target.
func NewRegistryImage(ctx *pulumi.Context, name string, a RegistryImageArgs, opts ...pulumi.ResourceOption) (*RegistryImage, error) {
	var r RegistryImage
	in := pulumi.Map{
		"source":   pulumi.String(a.Source),
		"target":   pulumi.String(a.Target),
		"username": a.Username,
		"password": pulumi.ToSecret(a.Password),
	}
	if err := ctx.RegisterResource(TypeRegistryImage, name, in, &r, opts...); err != nil {
		return nil, fmt.Errorf("registry image: %w", err)
	}
	return &r, nil
}
