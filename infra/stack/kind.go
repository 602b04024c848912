package stack

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// deployKind makes a kind cluster, loads the manifest's images into its
// nodes and deploys the router; `destroy` deletes the cluster with the rest.
func deployKind(ctx *pulumi.Context, cfg Config) (*Outputs, error) {
	cluster, err := NewKindCluster(ctx, "kind", KindClusterArgs{
		Name:      cfg.Kind.ClusterName,
		NodeImage: cfg.Kind.NodeImage,
		Workers:   cfg.Kind.Workers,
	})
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, n := range manifestNames(cfg.Manifest) {
		refs = append(refs, cfg.Manifest.Images[n].Ref)
	}
	loaded, err := NewKindImages(ctx, "kind-images", cluster.Name, refs)
	if err != nil {
		return nil, err
	}
	cat, used, err := catalogFor(cfg, func(_, ref string) string { return ref })
	if err != nil {
		return nil, err
	}
	// The provider marks it secret in the state too (AdditionalSecretOutputs);
	// this keeps it secret wherever it flows before that.
	kubeconfig := pulumi.ToSecret(cluster.Kubeconfig).(pulumi.StringOutput)
	// kind's nodes are containers on the local engine: node ports answer on
	// the control-plane node's address, which the provider reports.
	host := cluster.NodeAddress
	if cfg.NodeAddress != "" {
		host = pulumi.String(cfg.NodeAddress).ToStringOutput()
	}
	r, err := NewRouter(ctx, "upc", RouterArgs{
		Kubeconfig:   kubeconfig,
		AdminToken:   cfg.AdminToken,
		CACert:       cfg.CACert,
		CAKey:        cfg.CAKey,
		Namespace:    cfg.Namespace,
		RouterPort:   cfg.RouterPort,
		NodePort:     cfg.RouterNodePort,
		Image:        used["router"],
		Catalog:      cat,
		NodeSelector: cfg.NodeSelector,
		NodeAddress:  cfg.NodeAddress,
		StorageClass: orDefault(cfg.StorageClass, "standard"), // kind's local-path provisioner
		// Loaded images keep their tags; nothing may be pulled.
		PullPolicy: "Never",
		URLHost:    host,
	}, pulumi.DependsOn([]pulumi.Resource{loaded}))
	if err != nil {
		return nil, err
	}
	return &Outputs{Kubeconfig: kubeconfig, RouterURL: r.URL, Namespace: r.Namespace, AdminToken: r.AdminToken, CACert: r.CACert, Images: used}, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
