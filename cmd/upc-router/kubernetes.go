package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/e-mission/upc/conf"
	upck8s "github.com/e-mission/upc/router/kubernetes"
)

// newKubernetesBackend builds the client-go backend from cfg.Kubernetes:
// the kubeconfig named there, else $KUBECONFIG, else the pod's own
// ServiceAccount (the router running in the cluster).
func newKubernetesBackend(ctx context.Context, cfg *conf.Config, catalog *conf.Catalog, logger *slog.Logger) (*upck8s.Backend, error) {
	k := cfg.Kubernetes
	var (
		rc  *rest.Config
		err error
	)
	switch path := k.Kubeconfig; {
	case path != "":
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Path(path))
	case os.Getenv("KUBECONFIG") != "":
		rc, err = clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	default:
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	upck8s.TuneClient(rc)
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	hostPath := k.HostPathDir
	return upck8s.New(ctx, cs, upck8s.Options{
		Namespace: k.Namespace, NodeSelector: k.NodeSelector, NodeAddress: k.NodeAddress, NodeAddressType: corev1.NodeAddressType(k.NodeAddressType),
		GracePeriod: k.GracePeriod.D(), ImageByID: k.ImageByID, StorageClass: k.StorageClass, HostPathDir: hostPath,
		WarmPool: k.WarmPool, Catalog: catalog, PMRouterPods: k.PMRouterPods, PMClients: k.PMClients,
		SimulatedNodes: k.SimulatedNodes,
	}, logger.With("backend", "kubernetes"))
}
