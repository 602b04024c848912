package stack

import (
	"fmt"

	"github.com/pulumi/pulumi-gcp/sdk/v9/go/gcp/artifactregistry"
	"github.com/pulumi/pulumi-gcp/sdk/v9/go/gcp/compute"
	"github.com/pulumi/pulumi-gcp/sdk/v9/go/gcp/container"
	"github.com/pulumi/pulumi-gcp/sdk/v9/go/gcp/organizations"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// nodeTag marks the node pool's instances, the firewall rules' target.
func nodeTag(cluster string) string { return cluster + "-node" }

// deployGKE makes a VPC network, firewall rules opening the node-port range
// and the router's port to the configured source ranges, a GKE cluster with
// one node pool, an Artifact Registry repository holding our images, an
// address reserved for the router's load balancer, and the router running
// our images from the registry.
func deployGKE(ctx *pulumi.Context, cfg Config) (*Outputs, error) {
	g := cfg.GKE
	project := pulumi.String(g.Project)
	network, err := compute.NewNetwork(ctx, "network", &compute.NetworkArgs{
		Name:                  pulumi.String(g.ClusterName),
		Project:               project,
		AutoCreateSubnetworks: pulumi.Bool(false),
	})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	subnet, err := compute.NewSubnetwork(ctx, "subnet", &compute.SubnetworkArgs{
		Name:        pulumi.String(g.ClusterName + "-nodes"),
		Project:     project,
		Region:      pulumi.String(g.Region),
		Network:     network.ID(),
		IpCidrRange: pulumi.String(g.SubnetCIDR),
	})
	if err != nil {
		return nil, fmt.Errorf("subnetwork: %w", err)
	}
	sources := pulumi.ToStringArray(g.SourceRanges)
	tags := pulumi.StringArray{pulumi.String(nodeTag(g.ClusterName))}
	firewall := func(name, desc, ports string) error {
		_, err := compute.NewFirewall(ctx, name, &compute.FirewallArgs{
			Name:         pulumi.String(g.ClusterName + "-" + name),
			Description:  pulumi.String(desc),
			Project:      project,
			Network:      network.Name,
			Direction:    pulumi.String("INGRESS"),
			SourceRanges: sources,
			TargetTags:   tags,
			Allows: compute.FirewallAllowArray{compute.FirewallAllowArgs{
				Protocol: pulumi.String("tcp"),
				Ports:    pulumi.StringArray{pulumi.String(ports)},
			}},
		})
		if err != nil {
			return fmt.Errorf("firewall %s: %w", name, err)
		}
		return nil
	}
	if err := firewall("node-ports", "UPC instances: every Service's node port", fmt.Sprintf("%d-%d", NodePortMin, NodePortMax)); err != nil {
		return nil, err
	}
	if err := firewall("router", "UPC service router", itoa(cfg.RouterPort)); err != nil {
		return nil, err
	}

	cluster, err := container.NewCluster(ctx, "cluster", &container.ClusterArgs{
		Name:       pulumi.String(g.ClusterName),
		Project:    project,
		Location:   pulumi.String(g.Location()),
		Network:    network.Name,
		Subnetwork: subnet.Name,
		// The node pool is a resource of its own, sized from config.
		RemoveDefaultNodePool: pulumi.Bool(true),
		InitialNodeCount:      pulumi.Int(1),
		DeletionProtection:    pulumi.Bool(false),
		ReleaseChannel:        &container.ClusterReleaseChannelArgs{Channel: pulumi.String("REGULAR")},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	pool, err := container.NewNodePool(ctx, "nodes", &container.NodePoolArgs{
		Name:      pulumi.String(g.ClusterName + "-nodes"),
		Project:   project,
		Location:  pulumi.String(g.Location()),
		Cluster:   cluster.Name,
		NodeCount: pulumi.Int(g.NodeCount),
		NodeConfig: &container.NodePoolNodeConfigArgs{
			MachineType: pulumi.String(g.MachineType),
			DiskSizeGb:  pulumi.Int(g.DiskSizeGB),
			DiskType:    pulumi.String("pd-standard"),
			Spot:        pulumi.Bool(g.Spot),
			Tags:        tags,
			// Nodes pull our images from Artifact Registry.
			OauthScopes: pulumi.StringArray{pulumi.String("https://www.googleapis.com/auth/cloud-platform")},
			Labels:      pulumi.StringMap{"upc-node": pulumi.String("true")},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("node pool: %w", err)
	}

	repo, err := artifactregistry.NewRepository(ctx, "images", &artifactregistry.RepositoryArgs{
		RepositoryId: pulumi.String(g.Repository),
		Project:      project,
		Location:     pulumi.String(g.Region),
		Format:       pulumi.String("DOCKER"),
		Description:  pulumi.String("UPC service images"),
	})
	if err != nil {
		return nil, fmt.Errorf("artifact registry: %w", err)
	}
	// Pushing uses the provider's own access token: whoever can run the
	// program can push, with no docker login or credential helper. A
	// preview pushes nothing and asks Google for no token (so it needs no
	// credentials for it): there the token is unknown, like the digests.
	token, err := pushToken(ctx)
	if err != nil {
		return nil, err
	}
	var pushed []pulumi.Resource
	// The cluster runs each image by the digest the push left in the
	// registry (repo@sha256:…), never by a tag that may move.
	digests := pulumi.StringMap{}
	for _, name := range manifestNames(cfg.Manifest) {
		im := cfg.Manifest.Images[name]
		ri, err := NewRegistryImage(ctx, "image-"+name, RegistryImageArgs{
			Source:   im.Ref,
			Target:   g.ImagePath(name, tagOf(im.Ref)),
			Username: pulumi.String("oauth2accesstoken"),
			Password: token,
		}, pulumi.DependsOn([]pulumi.Resource{repo}))
		if err != nil {
			return nil, err
		}
		pushed = append(pushed, ri)
		digests[name] = ri.RepoDigest
	}
	cat, used, err := catalogFor(cfg, func(name, ref string) string { return g.ImagePath(name, tagOf(ref)) })
	if err != nil {
		return nil, err
	}

	kubeconfig := pulumi.ToSecret(pulumi.All(cluster.Name, cluster.Endpoint, cluster.MasterAuth.ClusterCaCertificate()).ApplyT(
		func(v []any) string {
			ca, _ := v[2].(*string)
			return gkeKubeconfig(g.Project, g.Location(), v[0].(string), v[1].(string), deref(ca))
		})).(pulumi.StringOutput)

	// The router's load balancer takes a regional address reserved here:
	// known before the router starts, so that its certificate names it,
	// and kept across updates of the Service.
	routerIP, err := compute.NewAddress(ctx, "router-address", &compute.AddressArgs{
		Name:        pulumi.String(g.ClusterName + "-router"),
		Description: pulumi.String("UPC service router's load balancer"),
		Project:     project,
		Region:      pulumi.String(g.Region),
		AddressType: pulumi.String("EXTERNAL"),
	})
	if err != nil {
		return nil, fmt.Errorf("router address: %w", err)
	}

	r, err := NewRouter(ctx, "upc", RouterArgs{
		Kubeconfig:   kubeconfig,
		AdminToken:   cfg.AdminToken,
		CACert:       cfg.CACert,
		CAKey:        cfg.CAKey,
		Namespace:    cfg.Namespace,
		RouterPort:   cfg.RouterPort,
		Image:        used["router"],
		Catalog:      cat,
		NodeSelector: cfg.NodeSelector,
		NodeAddress:  cfg.NodeAddress,
		// Instances are reached at their node ports from outside the VPC:
		// the router hands out the nodes' external addresses, and only the
		// source ranges may reach the router's balancer or the PMs.
		NodeAddressType:          "ExternalIP",
		PMClients:                g.SourceRanges,
		LoadBalancerSourceRanges: g.SourceRanges,
		Images:                   digests,
		StorageClass:             orDefault(cfg.StorageClass, "standard-rwo"), // GKE's default class
		PullPolicy:               "IfNotPresent",
		URLHost:                  routerIP.Address,
	}, pulumi.DependsOn(append(pushed, pool)))
	if err != nil {
		return nil, err
	}
	ctx.Export("clusterName", cluster.Name)
	ctx.Export("registry", pulumi.String(g.RegistryHost()+"/"+g.Project+"/"+g.Repository))
	return &Outputs{Kubeconfig: kubeconfig, RouterURL: r.URL, Namespace: r.Namespace, AdminToken: r.AdminToken, CACert: r.CACert, Images: used, ImageRefs: digests.ToStringMapOutput()}, nil
}

// pushToken is the gcp provider's access token, unknown in a preview.
func pushToken(ctx *pulumi.Context) (pulumi.StringOutput, error) {
	if ctx.DryRun() {
		return pulumi.UnsafeUnknownOutput(nil).ApplyT(func(any) string { return "" }).(pulumi.StringOutput), nil
	}
	client, err := organizations.GetClientConfig(ctx)
	if err != nil {
		return pulumi.StringOutput{}, fmt.Errorf("gcp client config: %w", err)
	}
	return pulumi.String(client.AccessToken).ToStringOutput(), nil
}

// gkeKubeconfig reaches the cluster's endpoint with the user's gcloud
// credentials through gke-gcloud-auth-plugin, as `gcloud container clusters
// get-credentials` would.
func gkeKubeconfig(project, location, name, endpoint, caData string) string {
	ctxName := fmt.Sprintf("gke_%s_%s_%s", project, location, name)
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    certificate-authority-data: %[2]s
    server: https://%[3]s
contexts:
- name: %[1]s
  context:
    cluster: %[1]s
    user: %[1]s
current-context: %[1]s
users:
- name: %[1]s
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      installHint: Install gke-gcloud-auth-plugin (gcloud components install gke-gcloud-auth-plugin)
      provideClusterInfo: true
`, ctxName, caData, endpoint)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
